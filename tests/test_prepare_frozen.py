"""A big graph is prepared with the heap frozen, as it is run: building it leaves a
full collection due, which the preparation's own allocations would set off, walking
the graph's objects (97 ms of a 100,000-step run's cached re-run)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.errors import ConfigError
from dagnb.runtime import prepare


def noop() -> None:
    return None


def graph_of(steps: int) -> Graph:
    return Graph("big", [Step(f"s{i}", func=noop) for i in range(steps)])


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, tuple[int, int, int]]]:
    """What the heap was like as each preparation selected its steps: frozen, and the
    thresholds."""
    seen: list[tuple[bool, tuple[int, int, int]]] = []
    real = prepare.selection_of

    def looking(*args: object, **kwargs: object) -> object:
        seen.append((gc.get_freeze_count() > 0, gc.get_threshold()))
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare, "selection_of", looking)
    return seen


def test_a_big_graph_is_prepared_with_the_heap_frozen_a_small_one_not(
        tmp_path: Path, looks: list[tuple[bool, tuple[int, int, int]]]) -> None:
    before = gc.get_threshold()
    for steps in (prepare.PREPARE_FROZEN_FROM, prepare.PREPARE_FROZEN_FROM - 1):
        assert graph_of(steps).run(cache=False, cache_directory=tmp_path,
                                   executor="local").ok
    assert looks == [(True, before), (False, before)]  # (thresholds: the loop thread's)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_a_big_graph_refused_as_it_is_prepared_leaves_the_heap_thawed(
        tmp_path: Path, looks: list[tuple[bool, tuple[int, int, int]]]) -> None:
    with pytest.raises(ConfigError, match="max_concurrency=0"):
        graph_of(prepare.PREPARE_FROZEN_FROM).run(max_concurrency=0, cache=False,
                                                  cache_directory=tmp_path)
    assert looks[0][0]  # (refused after the selection, frozen then)
    assert gc.get_freeze_count() == 0


@contextlib.contextmanager
def full_pass_due() -> Iterator[None]:
    """Thresholds that make a full pass due after two gen-1 passes, and more new
    long-lived objects than a quarter of the heap: the next allocations set one off."""
    before = gc.get_threshold()
    gc.collect()
    gc.disable()  # (made young: promoted, and so counted, only once collection is back)
    debt = [[] for _ in range(len(gc.get_objects()))]
    gc.set_threshold(200, 1, 1)  # (a preparation of 1,000 steps: 2,400 objects)
    gc.enable()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        del debt


def test_a_full_pass_due_as_a_big_graph_is_prepared_walks_none_of_its_steps(
        tmp_path: Path) -> None:
    graph = graph_of(prepare.PREPARE_FROZEN_FROM)
    walked: list[int] = []  # the graph's steps among what each full pass walks

    def note(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            walked.append(sum(type(thing) is Step for thing in gc.get_objects(2)))

    try:
        with full_pass_due():
            gc.callbacks.append(note)
            try:
                run, _scheduler = prepare.prepare(graph, cache=False,
                                                  cache_directory=tmp_path, executor="local")
            finally:
                gc.callbacks.remove(note)
        assert walked in ([], [0])  # (frozen: a pass due, if it runs, walks what is new)
        assert run.order == [step.name for step in graph]
    finally:
        gc.unfreeze()  # (the run, never run, would have thawed it as it ended)
