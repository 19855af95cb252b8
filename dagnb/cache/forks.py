"""What a forked child must renew: a lock that another thread of the parent held at the
fork is held for good in the child (no thread there lets it go), and what that thread
was doing is left half done.

The cache's long-lived objects (stores, pack writers, pack indexes, housekeeping
threads) each keep a weak set of their live instances and say here how one is renewed.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["renew_in_child"]

T = TypeVar("T")


def renew_in_child(objects: weakref.WeakSet[T], renew: Callable[[T], None]) -> None:
    """After every ``os.fork()``, in the child, call ``renew(obj)`` for each object still
    in ``objects`` (nothing where there is no fork)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: [renew(obj) for obj in list(objects)])
