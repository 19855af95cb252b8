"""Steps that share an asyncio task (the scheduler runs ready inline steps in the task
that released them) still keep their context variables to themselves, and lines printed
from two threads of one step all reach its log."""

from __future__ import annotations

import contextvars
import threading
import time
import types
import warnings
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.runtime import logfile
from dagnb.runtime.logfile import LogFile

pytestmark = pytest.mark.usefixtures("workdir")

MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("mark", default=None)
seen: dict[str, object] = {}


def _run(graph: Graph) -> dagnb.Run:
    return graph.run(cache=False, executor="local")


def _set_mark() -> int:
    MARK.set("set by a")
    return 1


def _read_mark() -> int:
    seen["b"] = MARK.get()
    return 1


@pytest.mark.parametrize("shape", ["roots", "siblings"])
def test_a_context_variable_set_by_one_step_does_not_reach_another(shape: str) -> None:
    seen.clear()
    needs = ("root",) if shape == "siblings" else ()
    steps = [Step("a", func=_set_mark, needs=needs), Step("b", func=_read_mark, needs=needs)]
    if needs:
        steps.insert(0, Step("root", func=lambda: 1))
    assert _run(Graph("marks", steps)).ok
    assert seen["b"] is None


def _strict_numpy() -> int:
    import numpy as np

    np.seterr(all="raise")  # numpy 2 keeps its error state in a context variable
    return 1


def _divide_by_zero() -> float:
    import numpy as np

    with warnings.catch_warnings():  # numpy's default: a warning, not an error
        warnings.simplefilter("ignore")
        return float(np.float64(1.0) / np.float64(0.0))


def test_numpy_error_state_of_one_step_does_not_fail_another() -> None:
    run = _run(Graph("numpy", [Step("a", func=_strict_numpy), Step("b", func=_divide_by_zero)]))
    assert run.states() == {"a": "succeeded", "b": "succeeded"}, run.status()["error"].tolist()


def test_first_lines_from_two_threads_at_once_are_all_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_lock() -> threading.Lock:  # widens the window a lock made lazily would have
        time.sleep(0.01)
        return threading.Lock()

    monkeypatch.setattr(logfile, "threading", types.SimpleNamespace(Lock=slow_lock))
    log = LogFile(tmp_path / "l.jsonl", make_folder=lambda: time.sleep(0.01))
    barrier = threading.Barrier(2)

    def write(n: int) -> None:
        barrier.wait()
        for k in range(20):
            log.write_line(0.0, 1, "stdout", f"t{n}-{k}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 40
