"""The housekeeping thread: one per kind, started on first use, safe across fork."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from dagnb.cache.background import Background
from dagnb.testing import wait_until


def test_items_are_handled_in_order_by_one_thread_started_on_first_use():
    seen, threads = [], set()

    def handle(item: int) -> None:
        seen.append(item)
        threads.add(threading.current_thread().name)

    worker = Background("test-worker", handle)
    assert not any(t.name == "test-worker" for t in threading.enumerate())
    for item in range(50):
        worker.ask(item)
    worker.wait()
    assert seen == list(range(50)) and threads == {"test-worker"}


def test_wait_returns_only_once_the_item_being_handled_is_done():
    started, release, done = threading.Event(), threading.Event(), []

    def handle(item: str) -> None:
        started.set()
        release.wait(5)
        done.append(item)

    worker = Background("test-slow", handle)
    worker.ask("a")
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    worker.wait()
    assert done == ["a"]


def test_a_settling_thread_starts_an_item_only_after_the_asker_moved_on():
    """The hit counts' writer lets the run's caller take its result first: an idle
    thread waits ``settle`` seconds before its first item."""
    times = []
    worker = Background("test-settle", lambda item: times.append(time.monotonic()), settle=0.3)
    asked = time.monotonic()
    worker.ask("a")
    assert wait_until(lambda: times, timeout=5)
    assert times[0] - asked >= 0.29


def test_wait_cuts_the_settling_short():
    done = []
    worker = Background("test-hurry", done.append, settle=30)
    began = time.monotonic()
    worker.ask("a")
    worker.wait()
    assert done == ["a"] and time.monotonic() - began < 5


def test_a_failing_item_ends_the_thread_and_the_next_one_starts_another(monkeypatch):
    seen, failures = [], []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))

    def handle(item: str) -> None:
        if item == "bad":
            raise RuntimeError("bad item")
        seen.append(item)

    worker = Background("test-failing", handle)
    worker.ask("bad")
    worker.wait()
    assert wait_until(lambda: failures and not worker._thread.is_alive(), timeout=5)
    assert str(failures[0]) == "bad item"
    worker.ask("good")
    worker.wait()
    assert seen == ["good"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="uses fork")
def test_a_forked_child_starts_its_own_thread_even_if_the_lock_was_held_at_fork():
    seen = []
    worker = Background("test-fork", seen.append)
    worker.ask("parent")
    worker.wait()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holds the lock at fork: the child's copy of it
        with worker._cond:  # is never let go (that thread is not in the child)
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    pid = os.fork()
    if pid:
        release.set()
        holder.join()
    if pid == 0:  # the child: asks, waits, and reports by its exit code
        worker.ask("child")
        worker.wait()
        os._exit(0 if seen == ["parent", "child"] else 1)
    status = []

    def exited() -> bool:
        found, code = os.waitpid(pid, os.WNOHANG)
        if found:
            status.append(os.waitstatus_to_exitcode(code))
        return bool(found)

    if not wait_until(exited, timeout=10):  # stuck on the lock held at fork
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert status == [0]
