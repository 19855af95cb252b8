"""A workflow's ``python:`` step whose function imports a project module the process has
not imported yet (``import rates`` in its body, ``rates.py`` beside the workflow) keys it
by its file, since importing it to key would run it; run, the step imports it, and from
then on it counts by the members the code reaches. A second ``graph.run()`` in the same
process missed and ran the step again for nothing (the notebook's cells had the fix,
:mod:`dagnb.fingerprint.first_imports`); now it is served from the cache, while a change
to the module's data still runs it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dagnb

# (names of their own: the process keeps what a test imports)
RATES = "RATE = 2\n\ndef times(x):\n    return x * RATE\n"
STEPS = "def total():\n    import wf_local_rates\n    return wf_local_rates.times(1)\n"
WORKFLOW = "name: wf\nsteps:\n  total:\n    python: wf_local_steps.py:total\n"


@pytest.fixture
def folder(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (workdir / "wf_local_rates.py").write_text(RATES)
    (workdir / "wf_local_steps.py").write_text(STEPS)
    (workdir / "wf.yml").write_text(WORKFLOW)
    monkeypatch.syspath_prepend(str(workdir))
    yield workdir
    for name in [name for name in sys.modules if name.startswith("wf_local_")]:
        del sys.modules[name]


def _run(graph: dagnb.Graph) -> tuple[str, int]:
    run = graph.run(executor="local")
    return run.states()["total"], run.result("total")


def test_a_second_run_in_the_process_of_a_step_first_importing_a_local_module_is_cached(
        folder: Path):
    graph = dagnb.load(folder / "wf.yml")
    assert "wf_local_rates" not in sys.modules
    assert _run(graph) == ("succeeded", 2)
    assert _run(graph) == ("cached", 2)  # (was succeeded: keyed by the file first)
    assert _run(dagnb.load(folder / "wf.yml")) == ("cached", 2)
    sys.modules["wf_local_rates"].RATE = 5
    assert _run(graph) == ("succeeded", 5)  # (its data changed: never stale)
    assert _run(graph) == ("cached", 5)


def test_a_function_of_a_plain_cell_run_twice_by_graph_run_is_cached_the_second_time(
        folder: Path):
    """A kernel's cell, defining the function and calling ``graph.run()`` (no magic):
    its namespace has no file, as here."""
    cell: dict[str, object] = {"__name__": "__main__"}
    exec(STEPS, cell)  # (the cell's text)
    graph = dagnb.Graph("cell", [dagnb.Step("total", func=cell["total"])])
    assert _run(graph) == ("succeeded", 2)
    assert _run(graph) == ("cached", 2)
