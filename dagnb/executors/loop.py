"""The one long-lived event loop that every run in this process uses.

A Dagger connection belongs to the loop that opened it, and a notebook kernel already
runs a loop of its own. So dagnb runs all of its async work on one background thread's
loop: synchronous callers (magics, the CLI, scripts) submit to it and wait, async
callers (``await graph.arun()``) submit to it and await, and a run started in the
background keeps going while the kernel stays free. We chose this over nest-asyncio,
which patches the kernel's loop in place and is no longer maintained.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["TaskFuture", "get_loop", "in_loop_thread", "run_async", "run_sync", "submit"]

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use (a daemon thread)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="dagnb-loop", daemon=True)
            _thread.start()
        return _loop


def in_loop_thread() -> bool:
    """True when called from the background loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread


class TaskFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A thread-safe future for a task on the loop whose ``cancel()`` cancels the task
    and completes only once the task has finished cleaning up (killed its processes).
    ``asyncio.run_coroutine_threadsafe``'s future is marked cancelled at once instead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        super().__init__()
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(self._finish)
        if self._cancel_requested:
            self._task.cancel()

    def _finish(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            super().cancel()
            self.set_running_or_notify_cancel()
        elif task.exception() is not None:
            self.set_exception(task.exception())
        else:
            self.set_result(task.result())

    def cancel(self) -> bool:
        if self.done():
            return False
        self._loop.call_soon_threadsafe(self._cancel_task)
        return True

    def _cancel_task(self) -> None:
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()


def submit(coro: Coroutine[Any, Any, T]) -> TaskFuture:
    """Schedule ``coro`` on the background loop; returns a thread-safe future."""
    return TaskFuture(get_loop(), coro)


def run_sync(coro: Coroutine[Any, Any, T], *, grace: float = 3.0) -> T:
    """Run ``coro`` on the background loop and wait for it.

    Ctrl-C (or a kernel interrupt) cancels the coroutine, waits up to ``grace``
    seconds for it to clean up (kill its processes), then re-raises KeyboardInterrupt.
    """
    if in_loop_thread():
        coro.close()
        raise RuntimeError("run_sync() called from dagnb's own loop; use 'await' there instead")
    future = submit(coro)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        # the cancellation itself, or what cleanup raised: the interrupt is what matters
        with contextlib.suppress(BaseException):
            future.result(timeout=grace)
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the background loop from any loop (or directly when on it)."""
    if in_loop_thread():
        return await coro
    future = submit(coro)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise
