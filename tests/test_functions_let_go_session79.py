"""What a notebook defines again and again is let go: the memos a run keeps per step
function (is it a coroutine, its signature, the paths its code names...) held each
function strongly, up to 4,096 of them, and with each its closure and defaults: a
cell re-run with new data kept every old frame its function closed over alive."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from dagnb import Graph, Memory, Step


class _Data:
    """Stands for a large frame a step's function closes over."""


def _step_over(data: _Data) -> Callable[[int], int]:  # (a closure, as a notebook's)
    def train(x: int) -> int:
        if x < 0:  # (never: a path and the whole environment named, as the runs note)
            print(dict(os.environ), Path("data/input.csv").read_text())
        return x + len(repr(data))
    return train


def _run_and_drop(tmp: Path, **options: object) -> weakref.ref[_Data]:
    data = _Data()
    func = _step_over(data)
    graph = Graph("g", [Step("train", func=func, params={"x": 1}),
                        Step("show", run="echo $DAGNB_IN/train", needs=["train"])])
    assert graph.run(cache_directory=tmp / "cache", executor="local", **options).ok
    return weakref.ref(data)


@pytest.mark.filterwarnings("ignore:.*reads its whole environment")
def test_a_function_run_as_a_step_is_let_go_with_what_it_closes_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.csv").write_text("a\n")  # (named, unmounted: noted)
    gone = [_run_and_drop(tmp_path) for _ in range(3)]
    gone.append(_run_and_drop(tmp_path, cache=False))
    gc.collect()
    assert [ref() for ref in gone] == [None] * 4


def test_a_function_a_memory_cached_is_let_go_too(tmp_path: Path) -> None:
    data = _Data()
    cached = Memory(tmp_path / "memory").cache(_step_over(data))
    assert cached(2) == cached(2)
    held = weakref.ref(data)
    del data, cached
    gc.collect()
    assert held() is None
