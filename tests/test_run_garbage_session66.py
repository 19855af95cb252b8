"""Runs back to back in one process (a kernel's life) leave no garbage that only the
collector's full passes would free: a run's objects go as it is let go of, and cyclic
garbage a step makes is collected by the backstop of ``_heap_frozen``, though runs
leave Python's own full passes no time between them."""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.runtime import prepare

RUNS = 30


def value(n: int) -> int:
    return n + 1


def total(value: int) -> int:
    return value * 2


def small_graph() -> Graph:
    return Graph("garbage", [
        Step("value", func=value, params={"n": 1}),
        Step("total", func=total, needs=["value"]),
        Step("shell", run="echo done", needs=["total"]),
    ])


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("refresh", [False, True], ids=["cached", "steps-run-again"])
def test_runs_back_to_back_are_freed_by_reference_counting(
        tmp_path: Path, collector_off: None, refresh: bool) -> None:
    """Each Run (and all it holds) goes once the graph's next run replaces it as its
    last: no cycle (the Run and the future it follows, the scheduler and its guard of
    inputs) keeps it for a full pass, and the count of tracked objects stays flat."""
    graph, cache = small_graph(), tmp_path / "cache"
    for _ in range(3):  # (warm: the process's memos, the loop, the cache's files)
        assert graph.run(cache_directory=cache, refresh=refresh).ok
    before = len(gc.get_objects())
    runs = []
    for _ in range(RUNS):
        run = graph.run(cache_directory=cache, refresh=refresh)
        assert run.ok
        runs.append(weakref.ref(run))
        del run
    alive = [ref for ref in runs[:-1] if ref() is not None]  # (the last: graph.last_run)
    assert not alive, f"{len(alive)} of {RUNS - 1} runs let go of are still alive"
    # (a few dozen may come and go: a process reaped; a run let go of held 100 or more)
    grown = _settled_growth(before + len(runs), 3 * RUNS)  # (the weakrefs are tracked too)
    assert grown < 3 * RUNS, f"{grown} tracked objects more after {RUNS} runs"


def _settled_growth(before: int, bound: int, seconds: float = 3.0) -> int:
    """The tracked objects more than ``before``, looked at again for up to ``seconds``
    while above ``bound``: what a loaded machine's slow moment holds for a while (a
    process being reaped, its pipes read to their end) is let go of then; what a run
    left behind never is."""
    deadline = time.monotonic() + seconds
    grown = len(gc.get_objects()) - before
    while grown >= bound and time.monotonic() < deadline:
        time.sleep(0.1)
        grown = len(gc.get_objects()) - before
    return grown


KNOTS_ALIVE: weakref.WeakSet[Knot] = weakref.WeakSet()


class Knot:
    """An object in a cycle of its own: only a full pass of the collector frees it."""

    def __init__(self) -> None:
        self.me = self
        KNOTS_ALIVE.add(self)


KNOTS = 10_000  # made by each run


def tied_knots() -> list[Knot]:
    """Its result is cyclic garbage once the next run replaces this one as the graph's
    last: by then among the oldest objects, which only full passes look at."""
    return [Knot() for _ in range(KNOTS)]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_cyclic_garbage_of_runs_back_to_back_is_collected(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs that leave cyclic garbage among the oldest objects, back to back: Python's
    own full passes do not run while a run is live, and hardly between them; without
    the backstop the garbage piled up for the kernel's life."""
    for name in ("HEAP_LOOKS_EVERY", "_LOOK_SPACING", "_next_look"):
        monkeypatch.setattr(prepare, name, 0.0, raising=False)  # (a look every run)
    graph = Graph("knots", [Step("knots", func=tied_knots)])
    gc.collect()
    most = 0
    for _ in range(RUNS):
        assert graph.run(cache=False).ok
        most = max(most, len(KNOTS_ALIVE))
    assert most < RUNS * KNOTS // 2, f"{most} knots alive of {RUNS * KNOTS} made"


def test_a_slow_look_at_the_heap_spaces_the_next_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the frozen heap walks every object (75 ns an object measured on the
    2-core machine): the next look waits ``_LOOK_SPACING`` times what the last took, so
    looks take 0.3% of the time however slow the walk, not 2.5% of back-to-back runs."""
    counted = []

    def slow_count() -> int:
        counted.append(1)
        time.sleep(0.01)
        return 1_000

    monkeypatch.setattr(prepare, "_next_look", prepare._next_look)  # (put back after)
    monkeypatch.setattr(prepare.gc, "get_freeze_count", slow_count)
    monkeypatch.setattr(prepare, "_full_passes_seen", gc.get_stats()[2]["collections"])
    monkeypatch.setattr(prepare, "_heap_after_full_pass", 1_000)
    prepare._collect_if_grown()
    assert counted == [1]
    wait = prepare._next_look - time.monotonic()
    assert wait >= 0.01 * prepare._LOOK_SPACING * 0.9 > 3 * prepare.HEAP_LOOKS_EVERY, wait
    monkeypatch.setattr(prepare.gc, "get_freeze_count", lambda: 1_000)  # a quick one
    prepare._collect_if_grown()
    assert prepare._next_look - time.monotonic() <= prepare.HEAP_LOOKS_EVERY
