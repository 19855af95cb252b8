"""The example workflow on a real Dagger engine.

Run with ``pytest -m dagger_live`` on a machine with the dagger CLI and a container
runtime (or inside ``dagger run``). A plain ``pytest`` run skips it, saying so, even where
an engine is available: pulling images and starting an engine is not for every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.executors.dagger import connection
from dagnb.model.graph import Graph

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "example_workflow.yml"


def _asked_for(request: pytest.FixtureRequest) -> bool:
    """True when the run selects by marker expression naming dagger_live (-m dagger_live)."""
    expression = request.config.getoption("markexpr") or ""
    return "dagger_live" in expression and "not dagger_live" not in expression


@pytest.mark.dagger_live
@pytest.mark.timeout(900)  # a cold engine pulls its image and python:3.12-slim
def test_example_workflow_on_a_real_engine(request, tmp_path, monkeypatch):
    if not _asked_for(request):
        pytest.skip("needs a real Dagger engine; run it with: pytest -m dagger_live")
    found = connection.detect()
    if not found.available:
        pytest.skip(f"no Dagger engine here: {found.reason}")
    monkeypatch.chdir(tmp_path)

    graph = Graph.from_yaml(WORKFLOW)
    run = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert run.ok, run.status()[["step", "state", "exit_code", "error"]]
    assert set(run.states().values()) == {"succeeded"}
    assert set(run.status()["executor"]) == {"dagger"}
    report = (run.outputs("report") / "report.md").read_text()
    assert report.startswith("# Report\ntotal:")
    local = graph.run(executor="local", cache=False, cache_directory=tmp_path / "local")
    assert (local.outputs("report") / "report.md").read_text() == report

    again = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert set(again.states().values()) == {"cached"}
