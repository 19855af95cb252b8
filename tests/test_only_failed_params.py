"""``graph.run(only_failed=True)`` after ``set_params``: a step's state counts only
among the runs given the same params, as ``dagnb run --only-failed`` counts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.workflows.params import set_params

pytestmark = pytest.mark.usefixtures("workdir")

_LOAD = 'printf %s "$DAGNB_PARAM_CITY" > "$DAGNB_OUT/city"'
_REPORT = 'test -f fixed && echo "$(cat "$DAGNB_IN/load/city") $DAGNB_PARAM_CITY" >> seen'
_SUMMARY = 'echo "$DAGNB_PARAM_CITY" >> summaries'


def _in_python(folder: Path) -> Graph:
    city = {"city": "London"}
    return Graph("cities", [
        Step("load", run=_LOAD, params=city),
        Step("report", run=_REPORT, needs=["load"], params=city),
        Step("summary", run=_SUMMARY, needs=["load"], params=city),
        Step("other", run="echo other"),
    ], base_dir=folder)


_EVERY_STEP = {"load": "succeeded", "report": "succeeded", "summary": "succeeded",
               "other": "cached"}  # (other has no city: its entry is the first run's)


def test_a_graph_built_in_python_runs_in_a_new_process_what_ran_with_other_params_only(
    workdir: Path,
) -> None:
    """As a new process would (a new graph, given no params): the steps that only runs
    given city=Paris had have not run with the graph's own London, so they run."""
    graph = _in_python(workdir)
    set_params(graph, {"city": "Paris"}, "the test")
    assert graph.run(executor="local").failed == ["report"]
    (workdir / "fixed").write_text("")
    again = _in_python(workdir).run(only_failed=True, executor="local")
    assert again.states() == _EVERY_STEP
    assert (workdir / "seen").read_text() == "London London\n"
