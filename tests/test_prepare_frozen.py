"""A big graph is prepared with the heap frozen, as it is run: building it leaves a
full collection due, which the preparation's own allocations would set off, over the
graph's objects (97 ms of a 100,000-step run's cached re-run)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.errors import ConfigError
from dagnb.runtime import prepare

FULL_PASS_NEVER = 1 << 30  # the gen-2 threshold while the heap is frozen


def noop() -> None:
    return None


def graph_of(steps: int) -> Graph:
    return Graph("big", [Step(f"s{i}", func=noop) for i in range(steps)])


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """What the heap was like as each preparation selected its steps: frozen, and the
    gen-2 threshold."""
    seen: list[tuple[bool, int]] = []
    real = prepare.selection_of

    def looking(*args: object, **kwargs: object) -> object:
        seen.append((gc.get_freeze_count() > 0, gc.get_threshold()[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare, "selection_of", looking)
    return seen


def test_a_big_graph_is_prepared_with_the_heap_frozen_a_small_one_not(
        tmp_path: Path, looks: list[tuple[bool, int]]) -> None:
    before = gc.get_threshold()
    for steps in (prepare.PREPARE_FROZEN_FROM, prepare.PREPARE_FROZEN_FROM - 1):
        assert graph_of(steps).run(cache=False, cache_directory=tmp_path,
                                   executor="local").ok
    assert looks == [(True, FULL_PASS_NEVER), (False, before[2])]
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_a_big_graph_refused_as_it_is_prepared_leaves_the_heap_as_it_was(
        tmp_path: Path, looks: list[tuple[bool, int]]) -> None:
    before = gc.get_threshold()
    with pytest.raises(ConfigError, match="max_concurrency=0"):
        graph_of(prepare.PREPARE_FROZEN_FROM).run(max_concurrency=0, cache=False,
                                                  cache_directory=tmp_path)
    assert looks == [(True, FULL_PASS_NEVER)]  # (refused after the selection)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


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


def test_a_full_pass_due_does_not_run_as_a_big_graph_is_prepared(
        tmp_path: Path) -> None:
    graph = graph_of(prepare.PREPARE_FROZEN_FROM)
    full_passes: list[float] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full_passes.append(1)

    with full_pass_due():
        gc.callbacks.append(note)
        try:
            run, _scheduler = prepare.prepare(graph, cache=False, cache_directory=tmp_path,
                                              executor="local")
        finally:
            gc.callbacks.remove(note)
    assert full_passes == []
    assert run.order == [step.name for step in graph]
