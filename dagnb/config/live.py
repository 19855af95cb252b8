"""The process's live objects, in one place that tests can replace whole.

Each layer keeps what lives for the whole process (the settings, the default store, the
executors, the circuit breakers, the engine connection, the notebook session) in the
current :class:`Context` under a name of its own, made on first use by the factory it
passes, rather than in a module global. A test (or an embedding application) that wants
a clean slate swaps the whole context with :func:`use_context`; nothing needs a private
reset helper. ``dagnb.testing.isolated()`` is the fixture-sized form of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["Context", "context", "made", "use_context"]

T = TypeVar("T")


class Context:
    """Named process-wide objects, each made once by the factory of its first ``get``."""

    __slots__ = ("_lock", "_objects")

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}
        self._lock = threading.RLock()

    def get(self, name: str, factory: Callable[[], T]) -> T:
        """The object named ``name``, made by ``factory()`` if there is none yet."""
        found = self._objects.get(name, _NONE)
        if found is not _NONE:
            return found
        with self._lock:  # (no KeyError raised: a fresh process makes a few of them)
            if name not in self._objects:
                self._objects[name] = factory()
            return self._objects[name]

    def peek(self, name: str) -> Any | None:
        """The object named ``name`` if it was made, else None (makes nothing)."""
        return self._objects.get(name)

    def set(self, name: str, value: Any) -> None:
        """Replace (or put) the object named ``name``."""
        with self._lock:
            self._objects[name] = value

    def pop(self, name: str) -> Any | None:
        """Forget the object named ``name``; it, or None."""
        with self._lock:
            return self._objects.pop(name, None)

    def names(self) -> list[str]:
        """The names of the objects made so far."""
        return sorted(self._objects)


_NONE = object()  # (None may be an object's value)
_current = Context()


def context() -> Context:
    """The context in force for this process."""
    return _current


def made(name: str, factory: Callable[[], T]) -> T:
    """``context().get(name, factory)`` in one call, with none when it is made (a fresh
    process's first ``Memory()`` asks twice)."""
    found = _current._objects.get(name)
    return found if found is not None else _current.get(name, factory)


@contextmanager
def use_context(new: Context | None = None) -> Iterator[Context]:
    """Make ``new`` (or a fresh :class:`Context`) current inside the block, then restore."""
    global _current
    previous, _current = _current, new if new is not None else Context()
    try:
        yield _current
    finally:
        _current = previous
