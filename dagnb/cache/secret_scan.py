"""What the cache keeps of the secrets in force: none. A value's pickle is searched for
them as it is written (a step's result, a cached call's), and a cached function run
inside a step that declares secrets learns them here, from the layers above, which know
the step (the cache does not): its key's descriptions are masked with them, and a result
holding one is not stored."""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dagnb.model.masking import MIN_LINE, Masker, SecretFinder

__all__ = ["SecretsInForce", "pickle_holds", "running_with", "secrets_in_force",
           "set_secrets_source"]

_CHUNK = 1 << 20


class SecretsInForce:
    """The secrets of the run a step belongs to, as a cached call inside it needs them:
    ``mask`` for its key's descriptions, ``finder`` for its result."""

    __slots__ = ("finder", "mask")

    def __init__(self, mask: Callable[[str], str], finder: SecretFinder) -> None:
        self.mask, self.finder = mask, finder


# what says which secrets are in force where it is called (a step's context), or None
_source: Callable[[], SecretsInForce | None] | None = None


def set_secrets_source(source: Callable[[], SecretsInForce | None]) -> None:
    """Have ``source()`` say which secrets are in force where a cached call misses."""
    global _source
    _source = source


def secrets_in_force() -> SecretsInForce | None:
    """The secrets in force here: a step's that runs in this context; else those of the
    runs going on in this process (a thread of a step's pool, which has not its
    context; the notebook's own call during a background run), or None. Asked on a
    miss only: a hit stores nothing."""
    source = _source
    found = None if source is None else source()
    return found if found is not None else _of_running


_running: dict[int, Mapping[str, str]] = {}  # a run going on -> its secrets, by name
_of_running: SecretsInForce | None = None  # theirs, as one
_running_lock = threading.Lock()


@contextlib.contextmanager
def running_with(secrets: Mapping[str, str]) -> Iterator[None]:
    """While a run with these secrets (name -> value) goes on, a cached call anywhere in
    the process keeps them out of the cache."""
    token = object()
    with _running_lock:
        _running[id(token)] = secrets
        _combine()
    try:
        yield
    finally:
        with _running_lock:
            del _running[id(token)]
            _combine()


def _combine() -> None:
    """Make the secrets of the runs going on one :class:`SecretsInForce` (None for none)."""
    global _of_running
    merged: dict[str, str] = {}
    for secrets in _running.values():
        for name, value in secrets.items():
            label = name
            while merged.get(label, value) != value:  # (a value rotated between two runs)
                label += "'"
            merged[label] = value
    _of_running = SecretsInForce(Masker(list(merged.values()), words_below=MIN_LINE),
                                 SecretFinder(merged)) if merged else None


def pickle_holds(value: Any, finder: SecretFinder) -> str | None:
    """The name of a secret in the value's pickle, or None (a value that does not pickle
    holds none: it cannot be stored either). Searched as pickle writes it: never the
    whole pickle in memory (a 100 MB array's would cost 150 MB more), a MiB at a time."""
    scan = _Scan(finder)
    try:
        pickle.Pickler(scan, protocol=5).dump(value)
    except _Found:
        pass
    except Exception:
        return None
    return scan.found


class _Found(Exception):
    """A secret is found: the rest of the pickle need not be written."""


class _Scan:
    """A file pickle writes to, which searches each piece as it comes and keeps only
    its last bytes, so that a value cut by two pieces is found (pickle writes frames of
    64 KiB, and a large buffer, a numpy array's data, whole and without copying it)."""

    __slots__ = ("finder", "found", "tail")

    def __init__(self, finder: SecretFinder) -> None:
        self.finder, self.found, self.tail = finder, None, b""

    def write(self, data: Any) -> None:
        view = data.raw() if isinstance(data, pickle.PickleBuffer) else memoryview(data)
        with view:
            for at in range(0, view.nbytes, _CHUNK):
                piece = self.tail + view[at:at + _CHUNK]
                self.found = self.finder.find(piece)
                if self.found is not None:
                    raise _Found
                self.tail = piece[1 - self.finder.longest:]
