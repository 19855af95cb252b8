"""dagnb's loop is woken through an eventfd (Linux), and a run hands its task to the
loop only once its Ctrl-C marking is in place."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

import pytest

import dagnb
from dagnb.executors import loop
from dagnb.executors.wakeup import EventfdLoop, new_loop

linux_only = pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux's")


@pytest.fixture
def own_loop():
    """A loop of the module's making on a thread of its own, closed afterwards."""
    made = []

    def start(factory=new_loop):
        made_loop = factory()
        thread = threading.Thread(target=made_loop.run_forever, daemon=True)
        thread.start()
        made.append((made_loop, thread))
        return made_loop

    yield start
    for made_loop, thread in made:
        if not made_loop.is_closed():
            made_loop.call_soon_threadsafe(made_loop.stop)
            thread.join(5)
            made_loop.close()


@linux_only
def test_dagnb_loop_is_woken_through_an_eventfd():
    assert type(loop.get_loop()) is EventfdLoop
    assert loop.get_loop()._ssock is None  # (no socket pair made)
    assert loop.run_sync(asyncio.sleep(0, "woken")) == "woken"


@linux_only
def test_calls_from_other_threads_each_wake_the_sleeping_loop(own_loop):
    made = own_loop()
    answers = []

    def caller(n):
        for i in range(200):
            done = threading.Event()
            made.call_soon_threadsafe(lambda i=i, done=done: (answers.append((n, i)), done.set()))
            assert done.wait(5), "the loop slept through a call from another thread"

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == [(n, i) for n in range(4) for i in range(200)]


@linux_only
def test_a_wake_after_the_loop_closed_writes_nowhere(own_loop):
    """A late call_soon_threadsafe from another thread, once the loop closed, must not
    write to whatever file took the eventfd's number meanwhile."""
    made = own_loop()
    number = made._wakeup.fileno()
    made.call_soon_threadsafe(made.stop)
    while made.is_running():
        pass
    made.close()
    opened = set()
    try:
        while True:  # a pipe whose ends are not that number...
            read_end, write_end = os.pipe()
            opened |= {read_end, write_end}
            if number not in (read_end, write_end):
                break
        os.dup2(write_end, number)  # ...and the number made to name its write end
        opened.add(number)
        made._write_to_self()
        os.set_blocking(read_end, False)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 8)
    finally:
        for descriptor in opened:
            os.close(descriptor)


@linux_only
def test_the_loop_refuses_signal_handlers_as_asyncio_does_off_the_main_thread():
    async def add():
        asyncio.get_running_loop().add_signal_handler(2, print)

    with pytest.raises(RuntimeError, match="main thread"):
        loop.run_sync(add())


def test_a_loop_policy_the_user_chose_makes_the_loop(monkeypatch):
    class ChosenLoop(asyncio.SelectorEventLoop):
        pass

    class ChosenPolicy(asyncio.DefaultEventLoopPolicy):
        _loop_factory = ChosenLoop

    monkeypatch.setattr(asyncio.events, "_event_loop_policy", ChosenPolicy())
    made = new_loop()
    try:
        assert type(made) is ChosenLoop
    finally:
        made.close()


@linux_only
def test_no_eventfd_left_means_asyncio_own_loop(monkeypatch):
    def refused(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "eventfd", refused)
    made = new_loop()
    try:
        assert type(made) is asyncio.SelectorEventLoop
    finally:
        made.close()


def test_a_ctrl_c_before_the_task_is_handed_over_closes_it_unrun(monkeypatch):
    ran = []

    async def body():
        ran.append(True)

    def interrupted_before_handing(future):
        raise KeyboardInterrupt

    handed = loop.TaskFuture.start
    monkeypatch.setattr(loop.TaskFuture, "start", interrupted_before_handing)
    coro = body()
    with pytest.raises(KeyboardInterrupt):
        loop.run_sync(coro, grace=5)
    monkeypatch.setattr(loop.TaskFuture, "start", handed)
    assert ran == []
    assert coro.cr_frame is None  # closed: no "coroutine was never awaited" later
    graph = dagnb.Graph("after", [dagnb.Step("a", func=lambda: 1)])
    assert graph.run(cache=False, executor="local").states() == {"a": "succeeded"}


def test_the_task_is_handed_over_with_the_marking_in_place(monkeypatch):
    """The loop thread, woken by the hand-over, finds the caller's marking (and the
    caller about to wait): nothing of the caller's is left to run before the wait."""
    seen = []
    handed = loop.TaskFuture.start

    def seeing(future):
        seen.append(loop._waited is future)
        return handed(future)

    monkeypatch.setattr(loop.TaskFuture, "start", seeing)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a worker's may
    try:  #                                        be ignored: then nothing is marked)
        assert loop.run_sync(asyncio.sleep(0, 5)) == 5
    finally:
        signal.signal(signal.SIGINT, before)
    assert seen == [True]


def test_run_sync_is_unchanged_for_its_callers():
    async def fails():
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        loop.run_sync(fails())
    assert loop.run_sync(asyncio.sleep(0, sys.maxsize)) == sys.maxsize
