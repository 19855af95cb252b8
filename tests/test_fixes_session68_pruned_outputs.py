"""A step not stored in the cache (``cache=False``) keeps its outputs in its run's
folder only: once a prune of old runs' folders removed that folder, ``run.outputs``
says so in one line instead of handing out a path that is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import Graph, Run, Step
from dagnb.errors import StepNotFoundError
from dagnb.runtime import history


def _uncached_run() -> Run:
    graph = Graph("uncached", [Step("make", run="echo data > $DAGNB_OUT/f", cache=False)])
    run = graph.run(executor="local")
    assert run.ok
    return run


def test_outputs_of_an_uncached_step_whose_run_folder_was_pruned_say_so(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It returned <cache>/.runs/<run>/make/out, which no longer existed."""
    monkeypatch.setattr(history, "_draw", lambda: 0.0)  # every run prunes
    monkeypatch.setattr(history, "KEEP_RUNS_BYTES", 1)  # of the finished: the newest alone
    first = _uncached_run()
    assert (first.outputs("make") / "f").read_text() == "data\n"  # (its folder is there)
    _uncached_run()
    _uncached_run()  # its prune takes the first run's folder
    assert not (workdir / ".dagnb_cache" / ".runs" / first.id).exists()
    with pytest.raises(StepNotFoundError, match=(
            rf"^step 'make' has no outputs any more: they were in run {first.id}'s folder, "
            r"not in the cache, and that folder was pruned \(.*\); to keep a step's "
            r"outputs, let it be cached, or read them before the next runs$")):
        first.outputs("make")


def test_outputs_of_a_step_that_wrote_nothing_in_a_run_that_made_no_folder_are_as_before(
        workdir: Path) -> None:
    """A run of silent in-process Python steps makes no folder: nothing was pruned."""
    run = Graph("quiet", [Step("nothing", func=lambda: 1, cache=False)]).run(executor="local")
    assert run.ok and not (workdir / ".dagnb_cache" / ".runs" / run.id).exists()
    assert run.outputs("nothing").name == "out"
