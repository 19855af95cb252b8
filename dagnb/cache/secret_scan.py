"""What the cache keeps of the secrets in force: none. A value's pickle is searched for
them as it is written (a step's result, a cached call's), and a cached function run
inside a step that declares secrets learns them here, from the layers above, which know
the step (the cache does not): its key's descriptions are masked with them, and a result
holding one is not stored. A call outside any step's context (a thread a step started,
even one that outlives its run; the notebook's own) keeps out every secret a run of the
process was given: the process keeps knowing them, in memory only, until it ends or
:func:`forget_secrets` (``%dagger reset``). Later runs are not concerned: they mask
and refuse their own graph's secrets only."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dagnb.model.masking import MIN_LINE, Masker, SecretFinder, environ_secrets
from dagnb.model.results import json_text

__all__ = ["SecretsInForce", "by_distinct_names", "forget_secrets", "known_secrets",
           "outside_steps", "pickle_holds", "remember_secrets", "secrets_in_force",
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


def outside_steps() -> bool:
    """Whether no step's context is here: the secrets in force are those the process
    remembers (:func:`remember_secrets`)."""
    source = _source
    return source is None or source() is None


def secrets_in_force() -> SecretsInForce | None:
    """The secrets in force here: a step's that runs in this context; else every secret
    a run of this process was given (a thread of a step's pool, which has not its
    context; a thread a step left running after its run ended; the notebook's own call
    during or after a run), or None while no run had any. Asked on a miss only: a hit
    stores nothing."""
    source = _source
    found = None if source is None else source()
    return found if found is not None else _with_environment(_of_known)


_with_env: tuple[object, object, SecretsInForce | None] = (None, None, None)


def _with_environment(known: SecretsInForce | None) -> SecretsInForce | None:
    """``known`` and the variables of the environment named as secrets beyond doubt
    (``API_TOKEN``, ``DB_PASSWORD``: :func:`environ_secrets`), as a run masks them and
    keeps them out of its steps' entries: a plain ``Memory`` call outside any run
    printed such a value in its verbose line and stored a result holding it. Made
    again only when either changed (most environments hold none: ``known`` as it is)."""
    global _with_env
    environ = environ_secrets()
    if not environ:
        return known
    seen_environ, seen_known, made = _with_env
    if seen_environ is environ and seen_known is known:
        return made
    merged = {**environ, **_by_label}
    made = SecretsInForce(Masker(list(merged.values()), words_below=MIN_LINE),
                          SecretFinder(merged))
    _with_env = (environ, known, made)
    return made


# Every secret a run of this process was given, value -> name, the latest last: kept
# in memory only (the process had the values anyway), as a thread or a later run may
# still hold one. The oldest go past _KNOWN_LIMIT values (a token rotated at each run):
# each costs a miss about 1.3 us more (its forms searched), and a run's masks more to
# build (1.4 ms a run for 16 values).
_known: dict[str, str] = {}
_KNOWN_LIMIT = 32
_by_label: dict[str, str] = {}  # theirs, by a name of their own each
_of_known: SecretsInForce | None = None  # theirs, as one (None: none yet)
_known_lock = threading.Lock()


def remember_secrets(secrets: Mapping[str, str]) -> None:
    """From now on, until the process ends or :func:`forget_secrets`, keep these
    secrets (name -> value) out of any ``dagnb.Memory`` cache a call anywhere in the
    process writes."""
    given = {value: name for name, value in secrets.items() if value}
    with _known_lock:
        changed = any(_known.get(value) != name for value, name in given.items())
        for value, name in given.items():  # (the latest last, the oldest first to go)
            _known.pop(value, None)
            _known[value] = name
        for oldest in list(_known)[:max(0, len(_known) - max(_KNOWN_LIMIT, len(given)))]:
            del _known[oldest]
            changed = True
        if changed:  # (a run again with the same secrets: nothing to build again)
            _combine()


def known_secrets() -> Mapping[str, str]:
    """The secrets runs of this process were given, by name (a value rotated between two
    runs is there twice, the older under ``NAME'``)."""
    return _by_label


def forget_secrets() -> None:
    """Forget every secret runs of this process were given: a ``dagnb.Memory`` call
    outside a run then stores what holds one (``%dagger reset`` calls this; so does
    each test, for the next)."""
    global _of_known, _by_label
    with _known_lock:
        _known.clear()
        _by_label, _of_known = {}, None


def _combine() -> None:
    """Make the known secrets one :class:`SecretsInForce`."""
    global _of_known, _by_label
    # (the latest value of a name keeps it)
    merged = by_distinct_names((name, value) for value, name in reversed(_known.items()))
    _by_label = merged
    _of_known = SecretsInForce(Masker(list(merged.values()), words_below=MIN_LINE),
                               SecretFinder(merged))


def by_distinct_names(secrets: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``(name, value)`` pairs by name, none lost: a name that an earlier pair gave
    another value (a secret rotated since an earlier run) is told apart, ``NAME (an
    earlier value)``, ``NAME (an earlier value 2)``... (what a warning names)."""
    merged: dict[str, str] = {}
    for name, value in secrets:
        label, count = name, 1
        while merged.get(label, value) != value:
            label = f"{name} (an earlier value{'' if count == 1 else f' {count}'})"
            count += 1
        merged[label] = value
    return merged


def pickle_holds(value: Any, finder: SecretFinder) -> str | None:
    """The name of a secret in the value's pickle or in its JSON text (what a result of
    numbers is stored as: pickle writes an int in binary, ``result.json`` in digits), or
    None (a value that does not pickle holds none: it cannot be stored either). Searched
    as pickle writes it: never the whole pickle in memory (a 100 MB array's would cost
    150 MB more), a MiB at a time."""
    scan = _Scan(finder)
    try:
        pickle.Pickler(scan, protocol=5).dump(value)
    except _Found:
        return scan.found
    except Exception:
        return None
    return _json_holds(value, finder)


# what may hold a number that pickle writes in binary and a store as JSON text (a str's
# or bytes' pickle holds its text already: not encoded again)
_WITH_NUMBERS = (int, float, list, dict)


def _json_holds(value: Any, finder: SecretFinder) -> str | None:
    """The name of a secret in the JSON text a step's ``result.json`` or a cache entry's
    inline result would hold (a PIN returned as an int, or a float in a dict), or None."""
    if type(value) is bool or not isinstance(value, _WITH_NUMBERS):
        return None
    text = json_text(value)
    return None if text is None else finder.find(text.encode())


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
