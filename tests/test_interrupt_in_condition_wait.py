"""A Ctrl-C that lands inside ``threading.Condition.wait``, after the wait let go of the
future's lock and before its ``try`` (CPython's race), left the lock let go: the ``with``
around the wait then raised ``RuntimeError: cannot release un-acquired lock`` in the
KeyboardInterrupt's place, and ``dagnb run`` exited 1 with a traceback, not 130 (met once
in CI, tests/test_interrupt.py). The wait for a run raises the KeyboardInterrupt itself,
and the future can be waited for again."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dagnb.executors import loop


class _Stop(KeyboardInterrupt):
    """A KeyboardInterrupt of its own kind (as the CLI's SIGTERM is): kept as it is."""


def _interrupted_after_release(future: loop.TaskFuture, error: KeyboardInterrupt) -> None:
    """Make the next wait on ``future`` meet the race: its lock let go, then the signal."""
    condition = future._condition
    release_save = condition._release_save

    def released_then_interrupted():  # type: ignore[no-untyped-def]
        release_save()
        condition._release_save = release_save  # (once)
        raise error

    condition._release_save = released_then_interrupted


def test_a_ctrl_c_in_the_wait_s_race_is_raised_as_itself_and_the_future_waits_again() -> None:
    started = threading.Event()

    async def long() -> str:
        started.set()
        await asyncio.sleep(0.5)
        return "done"

    future = loop.TaskFuture(loop.get_loop(), long()).start()
    assert started.wait(10)
    error = _Stop("stop")
    _interrupted_after_release(future, error)
    with pytest.raises(RuntimeError, match="un-acquired lock"):  # (the race, as met)
        future.result()
    _interrupted_after_release(future, error)
    with pytest.raises(_Stop) as raised:
        loop._result(future)
    assert raised.value is error
    assert loop._result(future, 10) == "done"  # the lock is whole again


def test_run_sync_meeting_the_race_raises_keyboard_interrupt_and_cancels_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    start = loop.TaskFuture.start
    futures: list[loop.TaskFuture] = []

    def start_then_race(self: loop.TaskFuture) -> loop.TaskFuture:
        futures.append(self)
        _interrupted_after_release(self, KeyboardInterrupt())
        return start(self)

    monkeypatch.setattr(loop.TaskFuture, "start", start_then_race)
    with pytest.raises(KeyboardInterrupt):
        loop.run_sync(asyncio.sleep(30), grace=5)
    assert futures[0].done() and futures[0].cancelled()  # (cleanup waited for, not left)
    monkeypatch.setattr(loop.TaskFuture, "start", start)
    assert loop.run_sync(asyncio.sleep(0, "again")) == "again"


def test_a_background_run_s_wait_meeting_the_race_raises_keyboard_interrupt(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """``run.wait()`` (a notebook's wait for a --background run) waits on an Event, whose
    Condition meets the same race."""
    import time

    import dagnb
    from dagnb.runtime.prepare import start_background

    graph = dagnb.Graph("bg", [dagnb.Step("nap", func=lambda: time.sleep(0.3))])
    run = start_background(graph, cache_directory=str(tmp_path), executor="local")
    release_save = threading.Condition._release_save

    def released_then_interrupted(self):  # type: ignore[no-untyped-def]
        release_save(self)
        monkeypatch.setattr(threading.Condition, "_release_save", release_save)  # (once)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Condition, "_release_save", released_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.wait(10)
    assert run.wait(10).ok  # (waited for again, to its end)
