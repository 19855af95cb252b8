"""One daemon thread per kind of housekeeping (writing hit counts, pruning old runs).

Started on first use and kept: starting a thread at the end of every run cost a short
run more than everything else it does there. A forked child starts its own (it has none
of its parent's threads, and a lock one of them held would never be let go).
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from dagnb.cache.forks import renew_in_child

__all__ = ["Background"]

T = TypeVar("T")


class Background(Generic[T]):
    """Hands each item given to :meth:`ask` to ``handle``, in order, in one daemon thread
    named ``name``. An exception ends the thread (the next :meth:`ask` starts another);
    ``handle`` decides what to warn of or swallow.

    ``settle``: seconds the thread, idle until an item came, lets pass before it starts
    (unless :meth:`wait` is waiting). The thread that asked is about to hand a result to
    another (a run's loop thread to its caller): a busy thread holding the GIL then
    would keep that one waiting for the interpreter's switch interval (5 ms, measured
    on a cached re-run of 1,000 steps: 45 ms became 50 in three runs of five).
    """

    def __init__(self, name: str, handle: Callable[[T], None], settle: float = 0.0) -> None:
        self._name, self._handle, self._settle = name, handle, settle
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._queue: collections.deque[T] = collections.deque()
        self._busy = 0  # items taken from the queue, not handled yet
        self._hurry = 0  # callers of wait(): no settling meanwhile
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def ask(self, item: T) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, daemon=True,
                                                name=self._name)
                self._thread.start()

    def _serve(self) -> None:
        idle = True  # (started, or woken by an item: its asker is about to move on)
        while True:
            with self._cond:
                while not self._queue:
                    idle = True
                    self._cond.wait()
                if idle and self._settle and not self._hurry:
                    self._cond.wait(self._settle)  # (wait() cuts it short)
                idle = False
                item = self._queue.popleft()
                self._busy += 1
            try:
                self._handle(item)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def wait(self) -> None:
        """Until every item handed over so far is handled (here, if the thread ended)."""
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                while self._queue or self._busy:
                    if self._thread is None or not self._thread.is_alive():
                        while self._queue:
                            self._handle(self._queue.popleft())
                        return
                    self._cond.wait(0.1)
            finally:
                self._hurry -= 1


_LIVE: weakref.WeakSet[Background] = weakref.WeakSet()
renew_in_child(_LIVE, Background._reset)
