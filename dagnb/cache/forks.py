"""What a forked child must renew: a lock that another thread of the parent held at the
fork is held for good in the child (no thread there lets it go), and what that thread
was doing is left half done.

The cache's long-lived objects (stores, pack writers, pack indexes, housekeeping
threads) each keep a weak set of their live instances and say here how one is renewed.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["ForkSafeCount", "ForkSafeLock", "WeakRefs", "renew_in_child"]

T = TypeVar("T")


def renew_in_child(objects: Iterable[T], renew: Callable[[T], None]) -> None:
    """After every ``os.fork()``, in the child, call ``renew(obj)`` for each object still
    in ``objects`` (nothing where there is no fork)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: [renew(obj) for obj in list(objects)])


class WeakRefs(set):  # type: ignore[type-arg]
    """The live objects of a kind, held weakly, as a ``weakref.WeakSet`` holds them but
    added with no Python call (``WeakSet.add`` is Python code: it cost a fresh process's
    first ``Memory()`` 5k instructions for its store and as much for its pack index):
    ``refs.add(weakref.ref(obj, refs.discard))``, a reference that removes itself once
    ``obj`` is gone. Iterating yields the objects still alive."""

    def __iter__(self) -> Iterator[Any]:
        for ref in list(super().__iter__()):  # (a copy: one may die meanwhile)
            obj = ref()
            if obj is not None:
                yield obj


class ForkSafeLock:
    """A lock (``with`` it) that a forked child has anew, unlocked: for an object whose
    lock is all it must renew. ``with it.lock`` takes the lock itself, with no Python
    call (read at each use: a child's is another)."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        _LOCKS.add(self)

    def __enter__(self) -> ForkSafeLock:
        self.lock.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.lock.release()

    def _renew(self) -> None:
        self.lock = threading.Lock()


_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()
renew_in_child(_LOCKS, ForkSafeLock._renew)


class ForkSafeCount:
    """Numbers that no other in this process repeats, nor a forked child's: ``next(it.count)``
    counts from a random start of ``bits`` bits, a child's from another. What tells apart
    a process's tokens and run ids with no ``getrandom`` each (read ``count`` at each use:
    a child's is another)."""

    __slots__ = ("__weakref__", "bits", "count")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._renew()
        _COUNTS.add(self)

    def _renew(self) -> None:
        start = int.from_bytes(os.urandom((self.bits + 7) // 8), "big") >> (-self.bits % 8)
        self.count = itertools.count(start)


_COUNTS: weakref.WeakSet[ForkSafeCount] = weakref.WeakSet()
renew_in_child(_COUNTS, ForkSafeCount._renew)
