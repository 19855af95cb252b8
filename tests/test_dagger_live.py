"""The example workflow on a real Dagger engine; skipped where there is none.

Run with ``pytest -m dagger_live`` on a machine with the dagger CLI and a container
runtime (or inside ``dagger run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import engine

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "example_workflow.yml"


@pytest.mark.dagger_live
def test_example_workflow_on_a_real_engine(tmp_path):
    found = engine.detect()
    if not found.available:
        pytest.skip(found.reason)
    if not WORKFLOW.exists():
        pytest.skip(f"{WORKFLOW} is not in the repository yet")
    from dagnb.graph import Graph

    graph = Graph.from_yaml(WORKFLOW)
    run = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert run.ok, run.summary()
    assert set(run.states().values()) == {"succeeded"}
