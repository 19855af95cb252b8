"""``graph.run(only_failed=True)`` after ``set_params`` in the same process: a step's
state counts only among the runs given the same params, as ``dagnb run --only-failed``
counts it (a step that failed with city=Paris has not failed with London, and one done
with London is not done with Paris)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dagnb import Graph, Step, load
from dagnb.workflows.params import set_params

pytestmark = pytest.mark.usefixtures("workdir")

_LOAD = 'printf %s "$DAGNB_PARAM_CITY" > "$DAGNB_OUT/city"'
_REPORT = 'test -f fixed && echo "$(cat "$DAGNB_IN/load/city") $DAGNB_PARAM_CITY" >> seen'
_SUMMARY = 'echo "$DAGNB_PARAM_CITY" >> summaries'
_WORKFLOW = f"""\
steps:
  load: {{run: '{_LOAD}', params: {{city: London}}}}
  report: {{run: '{_REPORT.replace("'", "''")}', needs: [load], params: {{city: London}}}}
  summary: {{run: '{_SUMMARY}', needs: [load], params: {{city: London}}}}
  other: {{run: 'echo other'}}
"""


def _from_file(folder: Path) -> Graph:
    (folder / "wf.yml").write_text(_WORKFLOW)
    return load(folder / "wf.yml")


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


@pytest.mark.parametrize("build", [_from_file, _in_python], ids=["yaml", "python"])
def test_a_step_that_failed_with_other_params_is_not_retried_alone(
    workdir: Path, build: Callable[[Path], Graph]
) -> None:
    """report failed with Paris; given London, which no run had, every step runs, not
    report alone as if London were a retry of Paris' failure (and summary, done with
    Paris only, left out); back to Paris, only what failed with Paris runs."""
    graph = build(workdir)
    set_params(graph, {"city": "Paris"}, "the test")
    first = graph.run(executor="local")
    assert (first.failed, first.given_params) == (["report"], {"city": "Paris"})
    (workdir / "fixed").write_text("")
    set_params(graph, {"city": "London"}, "the test")
    assert graph.run(only_failed=True, executor="local").states() == _EVERY_STEP
    assert (workdir / "summaries").read_text() == "Paris\nLondon\n"
    set_params(graph, {"city": "Paris"}, "the test")
    paris = graph.run(only_failed=True, executor="local")
    assert paris.states() == {"load": "cached", "report": "succeeded"}
    assert (workdir / "seen").read_text() == "London London\nParis Paris\n"
    assert graph.run(only_failed=True, executor="local").order == []  # (Paris: all done)


@pytest.mark.parametrize("build", [_from_file, _in_python], ids=["yaml", "python"])
def test_steps_done_with_other_params_are_not_done_with_these(
    workdir: Path, build: Callable[[Path], Graph]
) -> None:
    """Every step succeeded with London: given Paris, they run (nothing to re-run would
    say Paris succeeded, which never ran)."""
    (workdir / "fixed").write_text("")
    graph = build(workdir)
    assert graph.run(executor="local").ok
    set_params(graph, {"city": "Paris"}, "the test")
    paris = graph.run(only_failed=True, executor="local")
    assert paris.states() == _EVERY_STEP
    assert (workdir / "seen").read_text() == "London London\nParis Paris\n"


@pytest.mark.parametrize("build", [_from_file, _in_python], ids=["yaml", "python"])
@pytest.mark.parametrize("new_graph", [False, True], ids=["same-graph", "new-graph"])
def test_params_given_the_steps_own_values_are_a_run_given_none(
    workdir: Path, build: Callable[[Path], Graph], new_graph: bool
) -> None:
    """report failed in a run given no params (London, the steps' own): given
    city=London, in this process or a new one, only report runs again, not every step
    as if London were another configuration."""
    graph = build(workdir)
    assert graph.run(executor="local").failed == ["report"]
    (workdir / "fixed").write_text("")
    again = build(workdir) if new_graph else graph
    set_params(again, {"city": "London"}, "the test")
    retried = again.run(only_failed=True, executor="local")
    assert retried.states() == {"load": "cached", "report": "succeeded"}
    assert (workdir / "summaries").read_text() == "London\n"


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


def test_select_only_failed_after_set_params_picks_every_step(workdir: Path) -> None:
    """``graph.select(only_failed=True)`` (no cache folder to read the history from):
    with params set since the last run, no step has run with them: every step."""
    graph = _in_python(workdir)
    set_params(graph, {"city": "Paris"}, "the test")
    assert graph.run(executor="local").failed == ["report"]
    assert graph.select(only_failed=True) == ["load", "report"]
    set_params(graph, {"city": "Rome"}, "the test")
    assert graph.select(only_failed=True) == graph.order()


def test_a_read_only_run_after_set_params_runs_every_step(workdir: Path) -> None:
    """A read-only run records nothing in the cache folder's history: given London, no
    recorded run is found, yet Paris's run in this process had the steps: they run (it
    ran nothing, as if London were done)."""
    graph = _in_python(workdir)
    set_params(graph, {"city": "Paris"}, "the test")
    paris = graph.run(executor="local", cache_mode="read-only")
    assert paris.failed == ["report"]
    (workdir / "fixed").write_text("")
    set_params(graph, {"city": "London"}, "the test")
    london = graph.run(only_failed=True, executor="local", cache_mode="read-only")
    assert set(london.order) == {"load", "report", "summary", "other"}
    assert (workdir / "seen").read_text() == "London London\n"


def test_a_list_changed_in_place_and_set_again_is_other_params(workdir: Path) -> None:
    """A notebook appends to the list it gave and sets it again: the last run kept a
    reference to the caller's list, not a copy, so it seemed given the new one too, and
    only_failed ran report alone, though summary never ran with Berlin."""
    def load_cities(cities: list[str]) -> list[str]:
        return list(cities)

    def report(load: list[str], cities: list[str]) -> int:
        if not (workdir / "fixed").exists():
            raise RuntimeError("report is broken")
        return len(cities)

    def summary(load: list[str], cities: list[str]) -> int:
        with open(workdir / "summaries", "a") as summaries:
            summaries.write(",".join(cities) + "\n")
        return 1

    given = {"cities": ["London"]}
    graph = Graph("cities", [Step("load", func=load_cities, params=given),
                             Step("report", func=report, needs=["load"], params=given),
                             Step("summary", func=summary, needs=["load"], params=given)])
    cities = ["Paris"]
    set_params(graph, {"cities": cities}, "the notebook")
    assert graph.run(executor="local").failed == ["report"]
    (workdir / "fixed").write_text("")
    cities.append("Berlin")
    set_params(graph, {"cities": cities}, "the notebook")
    assert graph.last_run is not None
    assert graph.last_run.given_params == {"cities": ["Paris"]}
    again = graph.run(only_failed=True, executor="local")
    assert again.states() == {"load": "succeeded", "report": "succeeded", "summary": "succeeded"}
    assert (workdir / "summaries").read_text().splitlines() == ["Paris", "Paris,Berlin"]
