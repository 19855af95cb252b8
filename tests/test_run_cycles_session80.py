"""A run is freed as it is let go of, whatever its steps did: reference cycles kept the
Run, and with it every step's result, alive until a full pass of the collector (rare
while runs go on: a notebook re-running a cell that fails held each run's DataFrames).

Each cycle ran through the run's scheduler: the flush of a log file that printed, kept
by the run (its cache off, or its step failed); tenacity's state of its last turn (a
step that failed once); an interrupt's traceback and the cancelled task (a step past its
timeout); a failed async step's task in the frame that awaited it; the run's own tasks,
cancelled (``fail_fast``, the run's timeout); the error of a step that needs a cached
one, kept in a local; and, in a notebook, the magic's frames in a failed cell's error,
which IPython keeps in a cycle of its own.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagnb import Graph, Step

RUNS = 4


class Result:
    """A step's result, weakly referenced: alive as long as its run is."""


def result() -> Result:
    return Result()


def boom() -> None:
    raise ValueError("no")


def sleepy() -> None:
    for _ in range(2_000):  # (short sleeps: the interrupt lands between two)
        time.sleep(0.001)


async def async_boom() -> None:
    await asyncio.sleep(0)
    raise ValueError("async no")


SCENARIOS: dict[str, tuple[Callable[[], list[Step]], dict[str, Any]]] = {
    "a printing command, cache off": (
        lambda: [Step("made", func=result), Step("say", run="echo hi")], {"cache": False}),
    "a failed Python step": (
        lambda: [Step("made", func=result), Step("boom", func=boom)], {"cache": False}),
    "a Python step past its timeout": (
        lambda: [Step("made", func=result), Step("slow", func=sleepy, timeout=0.05)],
        {"cache": False}),
    "a failed async step": (
        lambda: [Step("made", func=result), Step("boom", func=async_boom)], {"cache": False}),
    "a failure with fail_fast": (
        lambda: [Step("made", func=result), Step("boom", func=boom, needs=["made"])],
        {"cache": False, "fail_fast": True}),
    "the run's timeout": (
        lambda: [Step("made", func=result), Step("slow", run="sleep 2")],
        {"cache": False, "timeout": 0.3}),
    "a failed step that needs a cached one": (
        lambda: [Step("made", func=result), Step("boom", func=boom, needs=["made"])], {}),
}


def alive_after(seconds: float, refs: list[weakref.ref[Any]]) -> list[weakref.ref[Any]]:
    """The references still alive, looked at again for up to ``seconds`` (a thread of
    dagnb's, the log flusher, lets go of a file a moment after the run ends)."""
    deadline = time.monotonic() + seconds
    alive = [ref for ref in refs if ref() is not None]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [ref for ref in refs if ref() is not None]
    return alive


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_run_is_freed_by_reference_counting_whatever_its_steps_did(
        tmp_path: Path, collector_off: None, scenario: str) -> None:
    steps, options = SCENARIOS[scenario]
    graph = Graph("cycles", steps())
    cache = tmp_path / "cache"
    runs, results = [], []
    for _ in range(RUNS):
        run = graph.run(cache_directory=cache, executor="local", **options)
        assert run.states()["made"] in ("succeeded", "cached"), run.states()
        # (every scenario but the printing command's ends with a step not ok)
        assert run.ok == scenario.startswith("a printing command"), run.states()
        runs.append(weakref.ref(run))
        made = run.result("made") if run.states()["made"] == "succeeded" else None
        if made is not None:
            results.append(weakref.ref(made))
        del run, made
    # (the last run is the graph's last_run, and its result with it)
    alive = alive_after(2.0, runs[:-1] + results[:-1])
    assert not alive, f"{len(alive)} runs or results let go of are still alive"


@pytest.mark.parametrize("cache", ["--no-cache", ""], ids=["cache-off", "cache-on"])
def test_a_failed_cell_frees_its_run_by_reference_counting(
        shell: Any, collector_off: None, cache: str) -> None:
    """A ``%%dagger`` cell whose step fails raises RunFailed; IPython keeps the cell's
    error in a cycle (its ExecutionResult, in a frame of the traceback), which held the
    magic's frames, and so the run, till a full pass."""
    from dagnb.notebook.session import get_session

    runs = []
    for _ in range(RUNS):
        outcome = shell.run_cell(f"%%dagger boom --python {cache}\nraise ValueError('no')")
        assert type(outcome.error_in_exec).__name__ == "RunFailed", outcome.error_in_exec
        run = get_session().last_run
        runs.append(weakref.ref(run))
        del run, outcome
    alive = alive_after(2.0, runs[:-1])
    assert not alive, f"{len(alive)} of {RUNS - 1} runs of failed cells are still alive"



class OnRetry:
    """An ``on_retry`` callback, weakly referenced: the scheduler's (a bound method of
    it, and so the run) in a graph's run."""

    def __call__(self, number: int, error: BaseException, delay: float) -> None:
        pass


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_retry_that_failed_once_lets_go_of_what_it_was_given(
        collector_off: None, kind: str) -> None:
    """tenacity's retrying object, built once an attempt failed, kept the actions of its
    last turn (its own methods) in its own state: a cycle holding all it was given (the
    attempt, ``on_retry``) till a full pass."""
    from dagnb.retry.policy import run_with_retries, run_with_retries_sync

    failures = [ConnectionError("transient")]

    def attempt(number: int) -> int:
        if failures:
            raise failures.pop()
        return number

    async def attempt_async(number: int) -> int:
        return attempt(number)

    async def no_wait(seconds: float) -> None:
        pass

    on_retry = OnRetry()
    held = weakref.ref(on_retry)
    policy = {"max_retries": 2, "jitter": False}
    if kind == "sync":
        done = run_with_retries_sync(policy, attempt, on_retry=on_retry, sleep=lambda s: None)
    else:
        done = asyncio.run(run_with_retries(policy, attempt_async, on_retry=on_retry,
                                            sleep=no_wait))
    assert done == 2  # (the second attempt: tenacity's object was made)
    del on_retry
    assert held() is None, "the retry's on_retry is still alive"


def _named_paths_step(n: int) -> Callable[[], int]:
    def train() -> int:  # (a closure a cell makes anew; names a path and prints env)
        if n < 0:
            print(dict(__import__("os").environ), Path("data/input.csv").read_text())
        return n
    return train


@pytest.mark.filterwarnings("ignore:.*prints its whole environment")
def test_the_memos_of_unmounted_reads_forget_steps_as_they_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memos of what each step names unmounted held their steps weakly, but kept an
    entry per dead step (a weak reference, its paths) until 4,096 of them filled the
    memo, which was then emptied, live steps' entries too: each entry now goes with its
    step."""
    from dagnb.runtime import unmounted

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.csv").write_text("a\n")  # (named, unmounted: noted)
    memos = {"looked": unmounted._LOOKED, "noted": unmounted._NOTED,
             "names": unmounted._NAMES, "prints": unmounted._PRINTS_ENVIRONMENT}

    def runs(count: int) -> None:
        for n in range(count):
            graph = Graph("g", [Step("train", func=_named_paths_step(n)),
                                Step("show", run="env; cat data/input.csv")])
            assert graph.run(cache_directory=tmp_path / "cache", executor="local").ok

    runs(2)  # (the memos' entries of anything else this process ran before)
    before = {name: len(memo) for name, memo in memos.items()}
    runs(20)
    grown = {name: len(memo) - before[name] for name, memo in memos.items()}
    assert all(count <= 2 for count in grown.values()), grown  # (the last graph's steps)
