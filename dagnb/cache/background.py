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
    ``handle`` decides what to warn of or swallow."""

    def __init__(self, name: str, handle: Callable[[T], None]) -> None:
        self._name, self._handle = name, handle
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._queue: collections.deque[T] = collections.deque()
        self._busy = 0  # items taken from the queue, not handled yet
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
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
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
            while self._queue or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    while self._queue:
                        self._handle(self._queue.popleft())
                    return
                self._cond.wait(0.1)


_LIVE: weakref.WeakSet[Background] = weakref.WeakSet()
renew_in_child(_LIVE, Background._reset)
