"""Content digests of values, code, files and directories.

Every digest is a hex string from one hasher family, xxh3_128 by default (fast,
non-cryptographic, 128 bits) or blake3 when a cryptographic hash is wanted
(:func:`set_hash_algorithm`). Digests are stable across processes and
``PYTHONHASHSEED`` values: dicts and sets are fed in the order of their members'
digests, never in hash order.

- :func:`value_digest` hashes a value by content: scalars and containers directly (with
  a type tag, so ``1``, ``1.0``, ``"1"`` and ``True`` differ), numpy and pandas objects
  through their buffers, anything else through a pickle stream written into the hasher.
- :func:`code_digest` hashes what a function does: its normalized AST, plus the code of
  the module-level helpers and the values of the constants it reads, transitively.
  ``code_digest(func, values=False)`` leaves the data out (names only) and
  :func:`global_values` hands over the data itself, read afresh at each call: a step's
  key hashes those values each time, so a notebook variable mutated in place counts.
- :func:`path_digest` hashes a file or a directory tree; a stat cache keyed on
  (path, size, mtime_ns, inode) makes an unchanged tree cost one ``stat`` per file.
"""

from __future__ import annotations

import ast
import atexit
import dis
import functools
import inspect
import json
import os
import pickle
import struct
import sys
import textwrap
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import xxhash

from dagnb.config import context
from dagnb.errors import FingerprintError

__all__ = [
    "adopt_sources",
    "code_digest",
    "code_source_parts",
    "code_with_values",
    "configure_stat_cache",
    "directory_digest",
    "flush_stat_cache",
    "get_hash_algorithm",
    "global_values",
    "loaded_globals",
    "main_spelled",
    "missing_globals",
    "new_hasher",
    "path_digest",
    "set_hash_algorithm",
    "signature_of",
    "source_table",
    "text_digest",
    "value_digest",
]

_ALGORITHM = "xxh3_128"
CHUNK_SIZE = 1 << 20
MAX_DEPTH = 256  # folders nested deeper are refused by the directory walk
# A file modified within this window of being hashed may change again without its
# mtime moving (coarse filesystem clocks, 2 s on FAT/some NFS): such entries are re-hashed.
RACY_WINDOW_NS = 2_000_000_000
counters = {"files_hashed": 0, "bytes_hashed": 0}  # read by tests and the benchmark


# --------------------------------------------------------------------------- hashers


def set_hash_algorithm(name: str) -> None:
    """Use ``"xxh3_128"`` (default) or ``"blake3"`` (cryptographic) for every digest."""
    global _ALGORITHM
    if name not in ("xxh3_128", "blake3"):
        raise FingerprintError(f"hash algorithm {name!r} is unknown; use 'xxh3_128' or 'blake3'")
    if name == "blake3":
        import blake3  # noqa: F401  (fail now, not at the first digest)
    _ALGORITHM = name
    _CODE_CACHE.clear()
    _stat_cache().clear_memory()


def get_hash_algorithm() -> str:
    """The name of the algorithm in use."""
    return _ALGORITHM


def new_hasher() -> Any:
    """A fresh hasher object (``update``, ``digest``, ``hexdigest``) of the current algorithm."""
    if _ALGORITHM == "xxh3_128":
        return xxhash.xxh3_128()
    import blake3

    return blake3.blake3()


def text_digest(text: str) -> str:
    """Hex digest of a string's UTF-8 bytes (one call, no type tag): for key components."""
    data = text.encode("utf-8", "surrogatepass")
    if _ALGORITHM == "xxh3_128":
        return xxhash.xxh3_128_hexdigest(data)
    h = new_hasher()
    h.update(data)
    return h.hexdigest()


def _digest_bytes(obj: Any) -> bytes:
    if type(obj) is str and _ALGORITHM == "xxh3_128":  # dict keys: the common case, fast
        data = obj.encode("utf-8", "surrogatepass")
        return xxhash.xxh3_128_digest(b"s%d:%s" % (len(data), data))
    h = new_hasher()
    _feed(h, obj, set())
    return h.digest()


# --------------------------------------------------------------------------- values


def value_digest(obj: Any) -> str:
    """Hex digest of a value's content.

    Small plain values (str, bytes, int, float, bool, None, and tuples and lists of them)
    are encoded in one ``bytes`` and hashed in one call: the same bytes the hasher would
    be fed piece by piece, so the same digest, at a fraction of the cost.

    Parameters
    ----------
    obj
        Any picklable value; numpy arrays and pandas objects are hashed through their
        buffers (dtype, shape, index and column names included).

    Raises
    ------
    FingerprintError
        The value (or something inside it) cannot be pickled.
    """
    data = _plain_bytes(obj, 0)
    if data is not None:
        if _ALGORITHM == "xxh3_128":
            return xxhash.xxh3_128_hexdigest(data)
        h = new_hasher()
        h.update(data)
        return h.hexdigest()
    h = new_hasher()
    _feed(h, obj, set())
    return h.hexdigest()


_DOUBLE = struct.Struct("<d")
# The fast path's limits: longer texts are hashed in place (no copy), deeper or longer
# sequences (a list that contains itself too) go through _feed, which stops cycles.
_PLAIN_LONGEST, _PLAIN_ITEMS, _PLAIN_DEPTH = 4096, 64, 8
_PLAIN_CONSTANTS = {None: b"N", True: b"T", False: b"F"}


def _plain_bytes(obj: Any, depth: int) -> bytes | None:
    """What ``_feed`` would feed for a small plain value, in one piece; None otherwise."""
    kind = type(obj)
    if kind is int:
        return b"i%d;" % obj
    if kind is str:
        if len(obj) > _PLAIN_LONGEST:
            return None
        data = obj.encode("utf-8", "surrogatepass")
        return b"s%d:%s" % (len(data), data)
    if kind is float:
        return b"fnan" if obj != obj else b"f" + _DOUBLE.pack(obj)
    if kind is bool or obj is None:
        return _PLAIN_CONSTANTS[obj]
    if kind is tuple or kind is list:
        return _plain_sequence(obj, depth)
    if kind is dict:
        return _plain_dict(obj, depth)
    if kind is bytes and len(obj) <= _PLAIN_LONGEST:
        return b"y%d:%s" % (len(obj), obj)
    return None


def _plain_sequence(obj: list | tuple, depth: int) -> bytes | None:
    if depth >= _PLAIN_DEPTH or len(obj) > _PLAIN_ITEMS:
        return None
    parts = [b"%s%d:" % (b"l" if type(obj) is list else b"t", len(obj))]
    for item in obj:
        data = _plain_bytes(item, depth + 1)
        if data is None:
            return None
        parts.append(data)
    return b"".join(parts)


def _plain_dict(obj: dict, depth: int) -> bytes | None:
    """As ``_feed_dict``: each key's digest then its value, in the order of key digests."""
    if depth >= _PLAIN_DEPTH or len(obj) > _PLAIN_ITEMS:
        return None
    pairs = []
    for key, item in obj.items():
        data = _plain_bytes(item, depth + 1)
        if data is None:
            return None
        pairs.append((_digest_bytes(key), data))
    pairs.sort(key=_first)
    return b"d%d:%s" % (len(obj), b"".join([key + data for key, data in pairs]))


def _first(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


def _feed_str(h: Any, obj: str, active: set[int]) -> None:
    data = obj.encode("utf-8", "surrogatepass")
    h.update(b"s%d:" % len(data))
    h.update(data)


def _feed_bytes(h: Any, obj: bytes, active: set[int]) -> None:
    h.update(b"y%d:" % len(obj))
    h.update(obj)


def _feed_int(h: Any, obj: int, active: set[int]) -> None:
    h.update(b"i%d;" % obj)


def _feed_float(h: Any, obj: float, active: set[int]) -> None:
    h.update(b"fnan" if obj != obj else b"f" + _DOUBLE.pack(obj))


def _feed_sequence(h: Any, obj: list | tuple, active: set[int]) -> None:
    h.update(b"%s%d:" % (b"l" if type(obj) is list else b"t", len(obj)))
    with _Guard(h, obj, active) as fresh:
        if fresh:
            for item in obj:
                _feed(h, item, active)


def _feed_dict(h: Any, obj: dict, active: set[int]) -> None:
    h.update(b"d%d:" % len(obj))
    with _Guard(h, obj, active) as fresh:
        if fresh:
            # Ordered by key digest: insertion order and hash seeds must not matter.
            for key_digest, value in sorted(
                ((_digest_bytes(k), v) for k, v in obj.items()), key=lambda kv: kv[0]
            ):
                h.update(key_digest)
                _feed(h, value, active)


def _feed_set(h: Any, obj: set | frozenset, active: set[int]) -> None:
    h.update(b"%s%d:" % (b"S" if type(obj) is set else b"Z", len(obj)))
    for digest in sorted(_digest_bytes(item) for item in obj):
        h.update(digest)


class _Guard:
    """Context manager marking a container as being hashed, so a cycle ends the recursion."""

    __slots__ = ("active", "h", "ident")

    def __init__(self, h: Any, obj: object, active: set[int]) -> None:
        self.h, self.ident, self.active = h, id(obj), active

    def __enter__(self) -> bool:
        if self.ident in self.active:
            self.h.update(b"<cycle>")
            return False
        self.active.add(self.ident)
        return True

    def __exit__(self, *exc: object) -> None:
        self.active.discard(self.ident)


def _feed_function(h: Any, obj: Callable[..., Any], active: set[int]) -> None:
    h.update(b"fn")
    h.update(code_digest(obj).encode())


_DISPATCH: dict[type, Callable[[Any, Any, set[int]], None]] = {
    str: _feed_str,
    bytes: _feed_bytes,
    int: _feed_int,
    float: _feed_float,
    list: _feed_sequence,
    tuple: _feed_sequence,
    dict: _feed_dict,
    set: _feed_set,
    frozenset: _feed_set,
    types.FunctionType: _feed_function,
}
_CONSTANTS = {None: b"N", True: b"T", False: b"F"}


def _feed(h: Any, obj: Any, active: set[int]) -> None:
    try:
        feed = _DISPATCH.get(type(obj))
    except TypeError:  # (a class whose metaclass has __eq__ and no __hash__)
        feed = None
    if feed is not None:
        feed(h, obj, active)
    elif obj is None or obj is True or obj is False:
        h.update(_CONSTANTS[obj])
    elif not _feed_array_like(h, obj):
        _feed_pickle(h, obj)


def _feed_array_like(h: Any, obj: Any) -> bool:
    """Hash numpy and pandas objects through their buffers; False for anything else."""
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            _feed_ndarray(h, obj, np)
            return True
        if isinstance(obj, np.generic):
            h.update(b"npg" + obj.dtype.str.encode())
            _feed_ndarray(h, np.asarray(obj), np)
            return True
    pd = sys.modules.get("pandas")
    if pd is not None:
        if isinstance(obj, pd.DataFrame):
            _feed_dataframe(h, obj, pd)
            return True
        if isinstance(obj, pd.Series):
            h.update(b"pds")
            _feed(h, obj.name, set())
            _feed_index(h, obj.index, pd)
            _feed_column(h, obj)
            return True
        if isinstance(obj, pd.Index):
            _feed_index(h, obj, pd)
            return True
    return False


def _feed_ndarray(h: Any, arr: Any, np: Any) -> None:
    h.update(b"nd%s%s" % (arr.dtype.str.encode(), repr(arr.shape).encode()))
    if arr.dtype.hasobject:
        _feed_pickle(h, arr)
        return
    if arr.dtype.names:  # structured: the field layout matters, not only the bytes
        h.update(repr(arr.dtype.descr).encode())
    # A byte view works for every non-object dtype (datetime64 has no buffer format).
    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _feed_column(h: Any, series: Any) -> None:
    h.update(b"col" + str(series.dtype).encode())
    values = series.to_numpy()
    if values.dtype.hasobject:  # strings, categoricals, tz-aware and nullable columns
        _feed_pickle(h, series.array)
    else:
        _feed_ndarray(h, values, sys.modules["numpy"])


def _feed_dataframe(h: Any, frame: Any, pd: Any) -> None:
    h.update(b"pdf%d" % frame.shape[1])
    _feed_index(h, frame.columns, pd)
    _feed_index(h, frame.index, pd)
    for position in range(frame.shape[1]):
        _feed_column(h, frame.iloc[:, position])


def _feed_index(h: Any, index: Any, pd: Any) -> None:
    h.update(b"idx" + type(index).__name__.encode())
    _feed(h, list(index.names), set())
    if isinstance(index, pd.RangeIndex):
        h.update(b"%d:%d:%d" % (index.start, index.stop, index.step))
    elif isinstance(index, pd.MultiIndex):
        for level, codes in zip(index.levels, index.codes, strict=True):
            _feed_index(h, level, pd)
            _feed_ndarray(h, codes, sys.modules["numpy"])
    else:
        _feed_column(h, pd.Series(index, copy=False))


class _HashingPickler(pickle.Pickler):
    """Pickles into a hasher; sets go in digest order; big buffers are hashed in place;
    a function of the script or notebook held by the value, or one pickle cannot find by
    its name (a closure, a lambda, one a decorator's wrapper now holds the name of),
    counts by its code, as one passed itself does (a library's, and those that reduce
    values, by name)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not types.FunctionType or (
                obj.__module__ not in _MAIN_NAMES and _importable(obj)):
            return NotImplemented
        under_way: set[int] = _UNDER_WAY.__dict__.setdefault("functions", set())
        if id(obj) in under_way:  # (a value its own code reads holds it)
            return NotImplemented
        under_way.add(id(obj))
        try:
            return _function_of_code, (code_digest(obj),)
        finally:
            under_way.discard(id(obj))

    def persistent_id(self, obj: Any) -> Any:
        # Called for every object (reducer_override skips exact sets): a set becomes its
        # sorted member digests, so hash seeds do not change the stream.
        if type(obj) in (set, frozenset):
            return (type(obj).__name__, _digest_bytes(obj))
        if isinstance(obj, type) and not _importable(obj):
            # A class pickle cannot look up (one made by exec or in a function, as a
            # notebook's can be): by name and by what it holds, so that its instances
            # still hash by content, and two classes of one name apart.
            contents = self.__dict__.setdefault("contents", {})  # (once per pickle)
            if id(obj) not in contents:
                contents[id(obj)] = _class_content(obj)
            return ("class", main_spelled(obj.__module__), obj.__qualname__, contents[id(obj)])
        return None


def _function_of_code(digest: str) -> None:
    """What a function inside a hashed value is pickled as (never unpickled)."""
    raise TypeError("a fingerprint is not a pickle to load")


_UNDER_WAY = threading.local()  # this thread's classes whose content is being hashed (a
#                                 value of one may hold the class itself)


def _class_content(cls: type) -> str:
    """What a class holds: its code (its functions with their closures and globals, its
    bases and nested classes) and its values."""
    under_way: set[int] = _UNDER_WAY.__dict__.setdefault("classes", set())
    if id(cls) in under_way:
        return "recursive"
    under_way.add(id(cls))
    try:
        record = _class_record(cls, anyway=True)  # (a method's class's walk, kept)
        assert record is not None
        return record.digest
    finally:
        under_way.discard(id(cls))


class _MainSpelledPickler(pickle._Pickler):  # type: ignore[misc]  # (the Python one)
    """:class:`_HashingPickler` for a value that names the script's module in a
    ``multiprocessing`` worker started by spawn or forkserver: it writes ``__main__``
    where pickle would write ``__mp_main__``, so that the value hashes as in the script.
    The pure-Python pickler, whose ``save_global`` can be told: only for such values (its
    frames of a pickle over 64 KiB are cut elsewhere than the C pickler's)."""

    persistent_id = _HashingPickler.persistent_id
    reducer_override = _HashingPickler.reducer_override

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if getattr(obj, "__module__", None) != _MP_MAIN:
            super().save_global(obj, name)
            return
        self.save("__main__")  # what pickle writes for a global from protocol 4 on
        self.save(name or obj.__qualname__)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    def _save_function(self, obj: Any) -> None:
        self.save_global(obj)

    # (pickle's own table calls its save_global for functions, not this one)
    dispatch: ClassVar[dict[type, Any]] = {
        **pickle._Pickler.dispatch,  # type: ignore[attr-defined]
        types.FunctionType: _save_function}


def _importable(cls: Any) -> bool:
    """Whether pickle finds ``cls`` (a class or function) again by its module and
    qualified name."""
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is cls


def _feed_pickle(h: Any, obj: Any) -> None:
    h.update(b"pkl" + type(obj).__qualname__.encode())
    try:
        if getattr(sys.modules.get(_MP_MAIN), "__name__", None) == _MP_MAIN:
            _pickle_in_worker(h, obj)  # (any process that imports multiprocessing has
            #                            an __mp_main__: its __main__ under a 2nd name)
        else:
            _pickle_into(h.update, obj)
    except FingerprintError:
        raise
    except Exception as exc:
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise FingerprintError(
            f"cannot fingerprint a value of type {kind!r} ({exc}); leave it out of the key "
            "(for Memory: @memory.cache(ignore=['name'])) or pass it as a JSON param"
        ) from exc


def _pickle_into(feed: Callable[[Any], Any], obj: Any,
                 pickler: type[pickle.Pickler] = _HashingPickler) -> None:
    """Feed the pickle of ``obj``, then the length and digest of each big contiguous
    buffer it hands over (hashed in place, no copy): after the stream, not within it,
    so that where the pickler cuts its stream does not count, and with their lengths,
    so that two buffers of one value are never read as two others."""
    buffers: list[bytes] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool | None:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: let pickle copy it in-band
            return True
        digest = new_hasher()
        digest.update(raw)
        buffers.append(b"%d:%s" % (raw.nbytes, digest.digest()))
        return None

    pickler(types.SimpleNamespace(write=feed), protocol=5,
            buffer_callback=out_of_band).dump(obj)
    if buffers:
        feed(b"buffers:%d" % len(buffers))
        for buffer in buffers:
            feed(buffer)


def _pickle_in_worker(h: Any, obj: Any) -> None:
    """In a process that imports the script as ``__mp_main__`` (a spawn or forkserver
    worker): pickled as anywhere, unless the pickle names that module; then again by
    :class:`_MainSpelledPickler`, unless the value is too deep for it (a miss, then)."""
    pieces: list[bytes] = []
    _pickle_into(pieces.append, obj)
    if any(_MP_MAIN_BYTES in piece for piece in pieces):
        spelled: list[bytes] = []
        try:
            _pickle_into(spelled.append, obj, _MainSpelledPickler)
            pieces = spelled
        except RecursionError:  # (the Python pickler takes several frames a level)
            pass
    for piece in pieces:
        h.update(piece)


# --------------------------------------------------------------------------- code

_IMMUTABLE_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range)
_MISSING = object()


class _CodeRecord:
    """A function's digest plus what it was computed from, to notice a stale entry."""

    __slots__ = ("algorithm", "cells", "code_only", "deps", "digest", "functions", "parts",
                 "shapes", "sources", "table", "variables")

    def __init__(self, digest: str, walker: _CodeWalker) -> None:
        self.digest, self.algorithm = digest, _ALGORITHM
        self.code_only = walker.h_code.hexdigest()
        self.deps, self.cells, self.parts = walker.deps, walker.cells, walker.parts
        self.variables = walker.variables
        # The function itself is not kept: the record is the value of a weak-keyed cache.
        self.functions = [(None, *state) for _, *state in walker.functions[:1]]
        self.functions += walker.functions[1:]
        # the sources hashed, as they were then (the function itself as None)
        first = walker.functions[0][0] if walker.functions else None  # (a class's walk
        self.sources = [(None if obj is first else obj, source)  # may have none)
                        for obj, source in walker.sources]
        self.table: dict[str, tuple[str, str]] | None = None  # (see source_table)
        self.shapes = walker.shapes

    def still_valid(self, func: types.FunctionType) -> bool:
        if self.algorithm != _ALGORITHM:
            return False
        # The function and every helper walked: same code, same defaults (by identity).
        for walked, code, defaults, kwdefaults in self.functions:
            walked = func if walked is None else walked
            if (walked.__code__ is not code or walked.__defaults__ is not defaults
                    or walked.__kwdefaults__ is not kwdefaults):
                return False
        for namespace, name, obj in self.deps:
            if namespace.get(name, _MISSING) is not obj:
                return False
        for members, count in self.shapes:  # a class given a member (one that shadows a
            if len(members) != count:  #       base's) or rid of one
                return False
        # Most functions have no closure: no generator made for them (this runs per key).
        return not self.cells or all(_cell_value(cell) is obj for cell, obj in self.cells)


class _Records:
    """Function -> its :class:`_CodeRecord`, by identity, forgotten with the function.

    A ``WeakKeyDictionary`` makes a weak reference on every lookup, which was a good part
    of a cached step's key; here a lookup is a dict hit on ``id(func)`` and one check
    that the weak reference stored still points at that very function.
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[int, tuple[weakref.ref[Any], _CodeRecord]] = {}

    def get(self, func: types.FunctionType) -> _CodeRecord | None:
        entry = self.entries.get(id(func))
        if entry is not None and entry[0]() is func:
            return entry[1]
        return None

    def put(self, func: types.FunctionType, record: _CodeRecord) -> None:
        entries, ident = self.entries, id(func)

        def forget(ref: weakref.ref[Any]) -> None:
            if entries.get(ident, (None,))[0] is ref:
                del entries[ident]

        entries[ident] = (weakref.ref(func, forget), record)

    def clear(self) -> None:
        self.entries.clear()

    def __getitem__(self, func: types.FunctionType) -> _CodeRecord:
        record = self.get(func)
        if record is None:
            raise KeyError(func)
        return record


_CODE_CACHE = _Records()


def code_digest(func: Callable[..., Any], *, values: bool = True) -> str:
    """Hex digest of what ``func`` does.

    The digest covers the function's normalized AST (comments, docstrings, decorators and
    formatting do not count), then transitively the code of the module-level functions
    and classes it refers to by global name, the values of the constants it reads
    (numbers, strings, tuples, arrays and frames, and lists/dicts/sets under UPPER_CASE
    names; other objects by type), its closure variables and its defaults.
    Modules count by name, builtins and objects from other modules by qualified name.
    Without source (a function built by ``exec``), its bytecode and constants count.

    The result is cached per function object and re-checked on each call by identity:
    a global rebound to another object (a notebook cell run again), a helper redefined,
    a name defined later or a replaced ``__code__`` computes it again. An UPPER_CASE
    container mutated in place keeps its identity and is not re-hashed in this process.

    A bound method's object, and a callable object itself, count by content (what the
    code works on: ``Scaler(3).apply`` is not ``Scaler(2).apply``).

    With ``values=False`` the data the function reads from globals (whatever its case
    or type: anything but modules, functions and classes) and the object of a method
    count by name only; the caller hashes :func:`global_values` itself, at the time it
    needs the digest.
    """
    if type(func) is types.FunctionType:  # the common case: no unwrapping to do
        record = _record(func)
        return record.digest if values else record.code_only
    target, extra = _unwrap(func)
    bound = _bound_object(func)
    if bound is not _MISSING:  # the class's code (its attributes, the methods `self.`
        #                        reaches) and, with values, the object's state
        parts = [extra or "", "class", _class_digest(bound if isinstance(bound, type)
                                                     else type(bound))]
        extra = _combine([*parts, "self", _object_digest(bound)] if values else parts)
    if extra is not None:
        inner = (code_digest(target, values=values) if target is not func
                 else _combine(["callable", _reference(target)]))  # (a C method: d.get)
        return _combine([inner, extra])
    if not isinstance(target, types.FunctionType):
        return _combine(["callable", _reference(target)])
    record = _record(target)
    return record.digest if values else record.code_only


def global_values(func: Callable[..., Any]) -> dict[str, Any]:
    """The data ``func`` and its module-level helpers read from globals, name -> value now.

    Every global name the code loads counts, whatever its case or type, except
    modules, functions and classes (those count in :func:`code_digest` by their code or
    name). The values are looked up at each call, so a dict mutated in place or a name
    rebound is seen; hash them with :func:`value_digest`.
    """
    target, _ = _unwrap(func)
    found = (dict(_values_now(_record(target).variables))
             if isinstance(target, types.FunctionType) else {})
    bound = _bound_object(func)
    if bound is not _MISSING:
        found["self"] = bound
        record = _class_record(bound if isinstance(bound, type) else type(bound))
        if record is not None and record.variables:  # (globals its other methods read)
            found = {**_values_now(record.variables), **found}
    return found


def _bound_object(func: Any) -> Any:
    """The object a method is bound to, or a callable object itself (what its code works
    on); ``_MISSING`` for anything else."""
    if isinstance(func, types.MethodType):
        return func.__self__
    if isinstance(func, types.BuiltinMethodType) and not isinstance(
            func.__self__, (types.ModuleType, type(None))):
        return func.__self__  # (a C method of an object: d.get, an array's sum)
    if isinstance(func, partial):
        return _bound_object(func.func)
    if isinstance(inspect.getattr_static(type(func), "__call__", None), types.FunctionType):
        return func  # (a plain function's type has a C __call__)
    return _MISSING


_CLASS_RECORDS: dict[int, tuple[weakref.ref[type], Any, _CodeRecord]] = {}  # by id():
_CLASS_RECORDS_LIMIT = 1024  # a metaclass's __eq__ may say two classes are one, its
#                              __hash__ be missing; a record holds its class: bounded


@functools.lru_cache(maxsize=1)
def _libraries() -> tuple[str, ...]:
    """Where Python's own modules and installed packages are (their classes: by name)."""
    import sysconfig

    return tuple(os.path.realpath(sysconfig.get_paths()[name]) + os.sep
                 for name in ("stdlib", "purelib", "platlib"))


def _class_digest(cls: type) -> str:
    """A class of the user's code by its code and values (walked once while they hold);
    one of a library or of Python by name."""
    record = _class_record(cls)
    return _reference(cls) if record is None else record.digest


def _class_record(cls: type, anyway: bool = False) -> _CodeRecord | None:
    """The walk of a class of the user's code, made again when it no longer holds; None
    for a class of a library or of Python (unless ``anyway``: one pickle cannot find)."""
    module = sys.modules.get(cls.__module__) if type(cls.__module__) is str else None
    if not anyway and cls.__module__ not in _MAIN_NAMES and _in_libraries(
            getattr(module, "__file__", None)):
        return None
    found = _CLASS_RECORDS.get(id(cls))
    if found is None or found[0]() is not cls or not found[2].still_valid(found[1]):
        walker = _CodeWalker()
        try:
            walker.add_class(cls)
        except RecursionError:
            raise FingerprintError(
                f"the code class {cls.__qualname__} refers to goes too deep to fingerprint "
                "(classes and helpers referring on, hundreds of levels)") from None
        first = walker.functions[0][0] if walker.functions else None
        if len(_CLASS_RECORDS) >= _CLASS_RECORDS_LIMIT:
            _CLASS_RECORDS.clear()
        found = _CLASS_RECORDS[id(cls)] = (weakref.ref(cls), first,
                                           _CodeRecord(walker.h.hexdigest(), walker))
    return found[2]


@functools.lru_cache(maxsize=4096)
def _in_libraries(file: str | None) -> bool:
    """Whether a module's file is Python's or an installed package's (or it has none)."""
    return not file or os.path.realpath(file).startswith(_libraries())


def _object_digest(obj: Any) -> str:
    try:
        return value_digest(obj)
    except FingerprintError as exc:
        raise FingerprintError(
            f"cannot fingerprint the {type(obj).__qualname__} object whose method is "
            f"called ({exc.__cause__ or exc}); cache a function of the values it uses, or "
            "give the class a __reduce__ that returns them"
        ) from None


def code_with_values(func: Callable[..., Any]) -> tuple[str, Mapping[str, Any]]:
    """``(code_digest(func, values=False), global_values(func))``, checking once whether
    the cached record of ``func`` still holds (a step's key needs both)."""
    if type(func) is types.FunctionType:
        record = _record(func)
        return record.code_only, _values_now(record.variables) if record.variables else _NONE
    return code_digest(func, values=False), global_values(func)


_NONE: Mapping[str, Any] = types.MappingProxyType({})  # shared: most functions read no data


# Signatures by function, with the objects they were made of (Memory's binding).
_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], inspect.Signature]] = (
    weakref.WeakKeyDictionary()
)


def signature_of(func: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(func)``, made once per plain function while its code and
    defaults stay the same objects (each ``Memory(...).cache(func)`` asks again)."""
    if (type(func) is not types.FunctionType or "__wrapped__" in func.__dict__
            or "__signature__" in func.__dict__):
        return inspect.signature(func)
    made_of = (func.__code__, func.__defaults__, func.__kwdefaults__)
    found = _SIGNATURES.get(func)
    if found is None or any(a is not b for a, b in zip(found[0], made_of, strict=True)):
        found = _SIGNATURES[func] = (made_of, inspect.signature(func))
    return found[1]


def _values_now(variables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    found = {}
    for name, namespace in variables.items():
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:
            found[name] = value
    return found


def missing_globals(func: Callable[..., Any]) -> list[str]:
    """Global names ``func``'s own code loads that are not defined now (nor builtins):
    a notebook cell that defines them has not run yet."""
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return []
    known = target.__globals__
    builtins_ = known.get("__builtins__", __builtins__)
    builtin_names = builtins_ if isinstance(builtins_, dict) else vars(builtins_)
    return sorted(name for name in loaded_globals(target.__code__)
                  if name not in known and name not in builtin_names)


def _record(target: types.FunctionType) -> _CodeRecord:
    record = _CODE_CACHE.get(target)
    if record is None or not record.still_valid(target):
        record = _compute_record(target)
        _CODE_CACHE.put(target, record)
    return record


def code_source_parts(func: Callable[..., Any]) -> dict[str, str]:
    """The normalized source of ``func`` and of what it depends on, label -> text.

    Labels are ``"def <qualname>"`` for functions, ``"class <name>"`` and
    ``"const <name>"``; ``explain`` diffs these texts to show what changed.
    """
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return {"callable": _reference(target)}
    code_digest(target)
    return dict(_CODE_CACHE[target].parts)


def _unwrap(func: Any) -> tuple[Any, str | None]:
    """The plain function behind partials, methods and callable objects."""
    if isinstance(func, partial):
        bound = _soft_digest((func.args, func.keywords))
        return func.func, _combine(["partial", bound or "unhashable-args"])
    if isinstance(func, types.MethodType):
        return func.__func__, None
    if isinstance(func, (types.FunctionType, types.BuiltinFunctionType, type)):
        return func, None
    call = inspect.getattr_static(type(func), "__call__", None)
    if isinstance(call, types.FunctionType):
        return call, _combine(["instance", _reference(type(func))])
    return func, None


def _combine(parts: list[str]) -> str:
    h = new_hasher()
    for part in parts:
        h.update(b"%d:" % len(part))
        h.update(part.encode())
    return h.hexdigest()


def _reference(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{main_spelled(module)}.{name}"


_MP_MAIN = "__mp_main__"
_MAIN_NAMES = frozenset({"__main__", _MP_MAIN})
_MP_MAIN_BYTES = _MP_MAIN.encode()


def main_spelled(module: str) -> str:
    """A module's name as keys and cache folders spell it: the main script is
    ``__main__`` in every process, though a ``multiprocessing`` worker started by spawn
    or forkserver imports it as ``__mp_main__``."""
    return "__main__" if module == _MP_MAIN else module


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a name not assigned yet)
        return _MISSING


def _soft_digest(obj: Any) -> str | None:
    """value_digest for values that hash; None for those that do not."""
    try:
        return value_digest(obj)
    except FingerprintError:
        return None


def _compute_record(func: types.FunctionType) -> _CodeRecord:
    walker = _CodeWalker()
    try:
        walker.add_function(func, f"def {func.__qualname__}")
    except RecursionError:
        raise FingerprintError(
            f"the code {func.__qualname__} refers to goes too deep to fingerprint (helpers "
            "calling helpers, hundreds of levels); leave the deepest out of its globals"
        ) from None
    return _CodeRecord(walker.h.hexdigest(), walker)


class _CodeWalker:
    """Feeds a function and, transitively, its helpers and constants into one hasher."""

    def __init__(self) -> None:
        self.h = new_hasher()
        self.h_code = new_hasher()  # the same, with global data by name only
        self.variables: dict[str, dict[str, Any]] = {}  # global data read: name -> globals
        self.seen: set[int] = set()
        self.deps: list[tuple[dict[str, Any], str, Any]] = []
        self.cells: list[tuple[Any, Any]] = []
        self.parts: dict[str, str] = {}
        self.functions: list[tuple[types.FunctionType | None, Any, Any, Any]] = []
        self.sources: list[tuple[Any, tuple[str, str]]] = []  # (function or class, source)
        self.shapes: list[tuple[Any, int]] = []  # (a class's __dict__, how many it held)

    def feed(self, *texts: str, into: tuple[Any, ...] | None = None) -> None:
        for h in into or (self.h, self.h_code):
            for text in texts:
                data = text.encode("utf-8", "surrogatepass")
                h.update(b"%d:" % len(data))
                h.update(data)

    def add_function(self, func: types.FunctionType, label: str) -> None:
        if id(func.__code__) in self.seen:  # recursion, mutual recursion
            self.feed("recursive", func.__qualname__)
            return
        self.seen.add(id(func.__code__))
        self.functions.append((func, func.__code__, func.__defaults__, func.__kwdefaults__))
        normalized = _normalized_source(func)
        if normalized is None:
            self.feed("bytecode", _bytecode_digest(func.__code__, func.__doc__))
            self.parts[label] = f"<no source for {func.__qualname__}; bytecode hashed>"
        else:
            self.sources.append((func, normalized))
            self.feed("ast", normalized[0])
            self.parts[label] = normalized[1]
        if "__wrapped__" in func.__dict__ and not func.__code__.co_filename.startswith(_OWN):
            self._add_wrapper(func, label)  # (its source, found above, is the wrapped's)
        self._add_references(func)

    def _add_references(self, func: types.FunctionType) -> None:
        """What a function's code refers to: its defaults, closure and globals."""
        self.feed("defaults", _soft_digest((func.__defaults__, func.__kwdefaults__)) or "?")
        self._add_closure(func)
        loaded = loaded_globals(func.__code__)
        for name in _global_names(func.__code__):
            obj = func.__globals__.get(name, _MISSING)
            if obj is _MISSING:
                # Remembered so that defining it later (a notebook cell) is noticed.
                self.deps.append((func.__globals__, name, _MISSING))
            else:
                self.add_global(name, obj, func, read=name in loaded)

    def _add_wrapper(self, func: types.FunctionType, label: str) -> None:
        """The code of a decorator's wrapper (``functools.wraps``): what it does counts
        as the function it wraps does (dagnb's own, a cached function's, by name)."""
        own = _source_of_code(func.__code__)
        if own is None:
            self.feed("wrapper", _bytecode_digest(func.__code__, None))
        else:
            self.feed("wrapper", own[0])
            self.parts[f"wrapper of {label}"] = own[1]

    def _add_closure(self, func: types.FunctionType) -> None:
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=True):
            obj = _cell_value(cell)
            self.cells.append((cell, obj))
            if obj is not _MISSING:
                self.add_object(name, obj, func)

    def add_global(self, name: str, obj: Any, owner: types.FunctionType, *,
                   read: bool = False) -> None:
        self.deps.append((owner.__globals__, name, obj))
        if name == "__name__" and obj == _MP_MAIN and not read:  # (reads x.__name__: an
            obj = "__main__"  #                       attribute, not the module's name)
        if read and not _is_code(obj):
            self.variables.setdefault(name, owner.__globals__)
            self.feed("var", name, into=(self.h_code,))
            self.add_object(name, obj, owner, into=(self.h,))
        else:
            self.add_object(name, obj, owner)

    def add_object(self, name: str, obj: Any, owner: types.FunctionType, *,
                   into: tuple[Any, ...] | None = None) -> None:
        if into is not None:  # data read from globals: its value goes to ``h`` only
            self.feed("name", name, into=into)
            self._add_data(name, obj, into)
            return
        self.feed("name", name)
        if isinstance(obj, types.ModuleType):
            self.feed("module", obj.__name__)
        elif isinstance(obj, types.FunctionType) and obj.__module__ == owner.__module__:
            self.add_function(obj, f"def {obj.__qualname__}")
        elif isinstance(obj, type) and obj.__module__ == owner.__module__:
            self.add_class(obj)
        else:
            self._add_data(name, obj, None)

    def _add_data(self, name: str, obj: Any, into: tuple[Any, ...] | None) -> None:
        if _is_constant(name, obj):
            digest = _soft_digest(obj)
            self.feed("const", digest or _reference(obj), into=into)
            self.parts[f"const {name}"] = _short_repr(obj)
        else:  # builtins, library functions and classes, other objects: by name
            self.feed("ref", _reference(obj), into=into)

    def add_class(self, cls: type) -> None:
        if id(cls) in self.seen:
            self.feed("recursive", cls.__qualname__)
            return
        self.seen.add(id(cls))
        normalized = _normalized_source(cls)
        if normalized is not None:
            self.sources.append((cls, normalized))
            self.feed("class", normalized[0])
            self.parts[f"class {cls.__qualname__}"] = normalized[1]
            for function in _class_functions(cls):  # (the helpers its methods call)
                if id(function.__code__) not in self.seen:
                    self.seen.add(id(function.__code__))
                    self.functions.append((function, function.__code__,
                                           function.__defaults__, function.__kwdefaults__))
                    self._add_references(function)
        else:  # no source (a notebook's class): its functions' code instead
            self.feed("class", _reference(cls))
            for function in _class_functions(cls):
                self.add_function(function, f"def {function.__qualname__}")
        for base in cls.__bases__:  # (a base of the module: by its code; others by name)
            if base.__module__ == cls.__module__:
                self.add_class(base)
            else:
                self.feed("base", _reference(base))
        for name, value in _class_members(cls):
            held = _held_code(value)
            if isinstance(held, type) and held.__module__ == cls.__module__:
                self.add_class(held)  # a class of its own
            elif held is not None and not isinstance(held, types.FunctionType):
                self.feed("holds", name, _member_digest(held))  # staticmethod(math.floor),
                #                                                 staticmethod(partial(...))
        # and its values as they are, whatever its source says (computed as the class
        # was made, or a notebook's class attribute edited and its cell run again)
        for name, value in _data_members(cls):
            self.feed("attr", name, _member_digest(value))
        members = cls.__dict__  # (a member set again or replaced: walked again)
        self.deps.extend((members, name, value) for name, value in _class_members(cls))
        self.shapes.append((members, len(members)))


def _is_constant(name: str, obj: Any) -> bool:
    """Whether a referenced value counts by content.

    Immutable values and arrays/frames always do. A list, dict or set counts only under
    an UPPER_CASE name (PEP 8's constants, ``CONFIG = {...}``): a lower-case one is
    usually state the function updates (``calls.append(x)``), which must not change
    the key on every call.
    """
    if isinstance(obj, _IMMUTABLE_TYPES):
        return True
    if isinstance(obj, (list, dict, set)):
        return name.isupper()
    return type(obj).__module__.startswith(("numpy", "pandas"))


def _is_code(obj: Any) -> bool:
    """Modules, functions and classes: what counts by code or name, not by content."""
    return isinstance(obj, (types.ModuleType, type)) or inspect.isroutine(obj)


def _short_repr(obj: Any, limit: int = 300) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _global_names(code: types.CodeType) -> list[str]:
    """Names the code (and its nested code) may load from globals, in a stable order.

    ``co_names`` also holds attribute names; a global that happens to share one is then
    counted too, which can only make the key more specific.
    """
    names: dict[str, None] = {}
    for nested in _code_objects(code):
        names.update(dict.fromkeys(nested.co_names))
    return list(names)


_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})


def loaded_globals(code: types.CodeType) -> set[str]:
    """The names the code (and its nested code) loads as globals: not attribute names."""
    return {
        instruction.argval
        for nested in _code_objects(code)
        for instruction in dis.get_instructions(nested)
        if instruction.opname in _GLOBAL_LOADS
    }


def _bytecode_digest(code: types.CodeType, doc: str | None) -> str:
    h = new_hasher()
    for nested in _code_objects(code):
        h.update(nested.co_code)
        h.update(repr((nested.co_names, nested.co_varnames, nested.co_freevars)).encode())
        h.update(repr((nested.co_flags, nested.co_argcount, nested.co_posonlyargcount,
                       nested.co_kwonlyargcount)).encode())  # (f(a) is not f(*a))
        for index, const in enumerate(nested.co_consts):
            is_doc = index == 0 and doc is not None and const == doc
            if is_doc or isinstance(const, types.CodeType):
                continue  # nested code is walked itself; docstrings do not count
            h.update(_digest_bytes(const))
    return h.hexdigest()


def _normalized_source(obj: Any) -> tuple[str, str] | None:
    """(AST dump, normalized source) of a function or class, or None without source
    (the one another process sent first: :func:`adopt_sources`)."""
    if _ADOPTED:
        adopted = _ADOPTED.get(_code_key(obj))
        if adopted is not None:
            return adopted
    try:
        lines, start = inspect.getsourcelines(obj)
    except (OSError, TypeError):
        return None
    if isinstance(obj, type) and not _lines_are_of(obj, start, start + len(lines)):
        return None
    node = _definition_node(textwrap.dedent("".join(lines)), obj)
    if node is None:
        return None
    _strip_docstrings(node)
    return ast.dump(node, annotate_fields=False, include_attributes=False), ast.unparse(node)


_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep  # dagnb's code


def _source_of_code(code: types.CodeType) -> tuple[str, str] | None:
    """(AST dump, normalized source) of the function a code object is, found by its
    own lines (not by the name a wrapper took from the function it wraps)."""
    try:
        lines, _ = inspect.getsourcelines(code)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                node.name == code.co_name):
            node.decorator_list = []
            _strip_docstrings(node)
            return (ast.dump(node, annotate_fields=False, include_attributes=False),
                    ast.unparse(node))
    return None


def _lines_are_of(cls: type, start: int, end: int) -> bool:
    """Whether the lines found for ``cls`` are its own: before Python 3.13, ``inspect``
    gives a class redefined under one name in a file its first definition. Its own hold
    its methods (3.13 says where it starts)."""
    first = getattr(cls, "__firstlineno__", None)
    if type(first) is int:
        return first == start
    try:
        file = inspect.getsourcefile(cls)
    except TypeError:
        return False
    return all(start <= f.__code__.co_firstlineno < end for f in _class_functions(cls)
               if f.__code__.co_filename == file)  # (not a dataclass's made __init__)


# -- sources sent along ---------------------------------------------------------------
# cloudpickle sends a function defined in __main__ or a notebook by value, without its
# file (it even names it "<dynamic-code>"): there its code would be hashed as bytecode,
# and its key would differ from the one it has here.

_ADOPTED: dict[str, tuple[str, str]] = {}  # code key -> (AST dump, normalized source)
_ADOPTED_LIMIT = 4096


def source_table(func: Callable[..., Any]) -> dict[str, tuple[str, str]]:
    """What another process needs to hash ``func``'s code as this one does where the
    source is not to be found: the normalized source of the function and of each
    helper and class its digest walked, by :func:`_code_key` (exact bytecode)."""
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return {}
    code_digest(target)
    record = _CODE_CACHE[target]
    if record.table is None:  # (the sources hashed then: the file may have changed since)
        record.table = {_code_key(target if obj is None else obj): source
                        for obj, source in record.sources}
    return record.table


def adopt_sources(table: Mapping[str, tuple[str, str]]) -> None:
    """Hash code as the process that sent ``table`` (a :func:`source_table`) did: its
    sources, rather than none, or the file as it is now (it may have been edited)."""
    if len(_ADOPTED) + len(table) > _ADOPTED_LIMIT:
        _ADOPTED.clear()
    _ADOPTED.update(table)


def _code_key(obj: Any) -> str:
    """A function's qualified name and exact code; a class's name and its members' (the
    code of its functions, the digest of its other values): the same in any process of
    the same Python, and nothing else."""
    if isinstance(obj, types.FunctionType):
        return f"def {obj.__qualname__} {_bytecode_digest(obj.__code__, obj.__doc__)}"
    h = new_hasher()
    for function in _class_functions(obj):
        code = _bytecode_digest(function.__code__, function.__doc__)
        h.update(f"{function.__qualname__}={code};".encode())
    for name, value in _data_members(obj):
        h.update(f"{name}={_member_digest(value)};".encode())
    return f"class {obj.__qualname__} {h.hexdigest()}"


_IMPLICIT = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__"})
_CODE_MEMBERS = (types.FunctionType, staticmethod, classmethod, property, type)


def _data_members(cls: type) -> list[tuple[str, Any]]:
    """A class's own values: not its functions, not its docstring, not the ``__dunder__``
    ones Python and libraries set (a pydantic model's schema holds an ``id()``: it would
    make every process's key another)."""
    return [(name, value) for name, value in _class_members(cls)
            if not isinstance(value, _CODE_MEMBERS)
            and not (name.startswith("__") and name.endswith("__"))]


def _member_digest(value: Any) -> str:
    """A class's value by content; one that cannot be hashed by its type's name."""
    try:
        digest = _soft_digest(value)
    except RecursionError:  # (nested deeper than pickle goes)
        digest = None
    return digest if digest is not None else "a " + _reference(type(value))


def _class_functions(cls: type) -> Iterator[types.FunctionType]:
    """The functions a class defines: methods, static and class methods, properties',
    cached properties' and those of cached methods (``lru_cache``)."""
    for _, value in _class_members(cls):
        if isinstance(value, property):  # (its functions, or what an lru_cache wraps)
            found: tuple[Any, ...] = tuple(_held_code(f) for f in (
                value.fget, value.fset, value.fdel) if f is not None)
        else:
            found = (_held_code(value),)
        yield from (f for f in found if isinstance(f, types.FunctionType))


def _held_code(value: Any) -> Any:
    """The function or class a class member is or wraps; None for data."""
    if isinstance(value, (types.FunctionType, type)):
        return value
    if isinstance(value, (staticmethod, classmethod)):
        inner = value.__func__
        return _held_code(inner) or inner  # (staticmethod(lru_cache(f)): f)
    if isinstance(value, functools.cached_property):
        return value.func
    if callable(value) and isinstance(inspect.getattr_static(value, "__wrapped__", None),
                                      types.FunctionType):
        return inspect.getattr_static(value, "__wrapped__")  # (an lru_cache method)
    return None


def _class_members(cls: type) -> list[tuple[str, Any]]:
    """A class's own members by name, what Python adds to every class left out."""
    return sorted((name, value) for name, value in vars(cls).items() if name not in _IMPLICIT)


def _definition_node(source: str, obj: Any) -> ast.AST | None:
    if getattr(obj, "__name__", "") == "<lambda>":
        return _lambda_node(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if isinstance(node, kinds) and node.name == obj.__name__:
            node.decorator_list = []  # @memory.cache(...) is not the function's work
            return node
    return None


def _lambda_node(source: str) -> ast.AST | None:
    """The lambda in a source line; the line may be a fragment such as ``f=lambda: 1,``."""
    if source.count("lambda") != 1:
        return None  # which lambda is ours is ambiguous: the bytecode decides
    text = source[source.index("lambda") :].rstrip()
    while text:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            text = text[:-1].rstrip()
            continue
        return next((n for n in ast.walk(tree) if isinstance(n, ast.Lambda)), None)
    return None


def _strip_docstrings(root: ast.AST) -> None:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in ast.walk(root):
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]


# --------------------------------------------------------------------------- paths


class _StatCache:
    """(path, size, mtime_ns, inode) -> content digest, in memory and in a JSON file.

    A JSON file read once per process and rewritten whole (to a temporary name, then
    renamed) when something changed: lookups are then plain dict hits, and a concurrent
    writer can only lose entries (each is re-validated by its stat signature), never
    corrupt them. sqlite would cost a query per file for the same result.
    """

    def __init__(self) -> None:
        self.entries: dict[str, list[Any]] = {}
        self.file: Path | None = None
        self.loaded = False
        self.dirty = False

    def configure(self, file: Path | None) -> None:
        if file != self.file:
            self.flush()
            self.file, self.loaded = file, False

    def clear_memory(self) -> None:
        self.entries, self.dirty, self.loaded = {}, False, False

    def get(self, path: str, st: os.stat_result) -> str | None:
        if not self.loaded:
            self._load()
        entry = self.entries.get(path)
        if entry is None or entry[:3] != [st.st_size, st.st_mtime_ns, st.st_ino]:
            return None
        if st.st_mtime_ns + RACY_WINDOW_NS >= entry[3]:
            return None  # modified close to when it was hashed: its mtime cannot be trusted
        return entry[4]

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        self.entries[path] = [st.st_size, st.st_mtime_ns, st.st_ino, time.time_ns(), digest]
        self.dirty = True

    def _load(self) -> None:
        self.loaded = True
        if self.file is None:
            return
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # best effort: a missing or damaged file is an empty cache
        if isinstance(data, dict) and data.get("algorithm") == _ALGORITHM:
            self.entries = {**data.get("entries", {}), **self.entries}

    def flush(self) -> None:
        if not self.dirty or self.file is None:
            return
        self.dirty = False
        payload = {"version": 1, "algorithm": _ALGORITHM, "entries": self.entries}
        temp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
            os.replace(temp, self.file)
        except OSError:
            temp.unlink(missing_ok=True)  # best effort: the cache only saves time


def _stat_cache() -> _StatCache:
    """The stat cache of the current context (a fresh context starts in memory only)."""
    return context().get("stat_cache", _StatCache)


def configure_stat_cache(file: str | os.PathLike[str] | None) -> None:
    """Persist the current context's stat cache in ``file`` (``<cache>/stat-cache.json``).

    ``None`` keeps it in memory only. The file is read on first use and written after
    each :func:`path_digest` that hashed something, and at exit.
    """
    _stat_cache().configure(None if file is None else Path(file).absolute())


def flush_stat_cache() -> None:
    """Write the stat cache file now if it changed."""
    _stat_cache().flush()


atexit.register(flush_stat_cache)


def _hash_file(path: str) -> str:
    """Digest of a file's bytes, read in chunks of at most 1 MiB into one reused buffer.

    The buffer is no larger than the file and one byte (the read that finds the end):
    a zeroed MiB per small file (a step's result, a metadata file) cost more than
    reading and hashing it. A file that grows meanwhile is still read whole.
    """
    h = new_hasher()
    total = 0
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(min(CHUNK_SIZE, os.fstat(handle.fileno()).st_size + 1))
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            h.update(view[:count])
            total += count
    counters["files_hashed"] += 1
    counters["bytes_hashed"] += total
    return h.hexdigest()


def _file_digest(path: str, st: os.stat_result, use_cache: bool) -> str:
    if use_cache:
        digest = _stat_cache().get(path, st)
        if digest is not None:
            return digest
    digest = _hash_file(path)
    if use_cache:
        _stat_cache().put(path, st, digest)
    return digest


def path_digest(path: str | os.PathLike[str], *, use_stat_cache: bool = True) -> str:
    """Hex digest of a file's content, or of a directory tree.

    A directory's digest covers every relative name (files, subdirectories, empty ones
    too) with each file's content digest, in sorted order. Symlinks are followed, and
    each folder (by device and inode) is walked once: a symlink loop or many links to
    one folder cost nothing more. Trees deeper than ``MAX_DEPTH`` are refused.

    Parameters
    ----------
    path
        A file or a directory.
    use_stat_cache
        Reuse a file's digest while its (path, size, mtime_ns, inode) is unchanged.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FingerprintError
        The tree is more than ``MAX_DEPTH`` folders deep.
    """
    absolute = os.path.abspath(os.fspath(path))
    st = os.stat(absolute)
    if not os.path.isdir(absolute):
        digest = _file_digest(absolute, st, use_stat_cache)
    else:
        h = new_hasher()
        try:
            _feed_directory(h, absolute, "", use_stat_cache, {(st.st_dev, st.st_ino): ""})
        except _TooDeep:
            raise _depth_error(absolute) from None
        digest = h.hexdigest()
    if use_stat_cache:
        flush_stat_cache()
    return digest


def directory_digest(path: str | os.PathLike[str], *, use_stat_cache: bool = True) -> str:
    """:func:`path_digest` of a directory (a step's output digest)."""
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{os.fspath(path)!r} is not a directory")
    return path_digest(path, use_stat_cache=use_stat_cache)


def check_tree(path: str | os.PathLike[str]) -> None:
    """Walk a folder as :func:`path_digest` would, reading no file: raise what it would
    raise past ``MAX_DEPTH`` (for ``dagnb validate``, before any step runs)."""
    absolute = os.path.abspath(os.fspath(path))
    if not os.path.isdir(absolute):
        return
    st = os.stat(absolute)
    try:
        _feed_directory(_NoHash(), absolute, "", False, {(st.st_dev, st.st_ino): ""},
                        read=False)
    except _TooDeep:
        raise _depth_error(absolute) from None


def _depth_error(folder: str) -> FingerprintError:
    return FingerprintError(f"folder {folder!r} nests more than {MAX_DEPTH} levels deep; "
                            f"dagnb walks at most {MAX_DEPTH} (use a shallower folder)")


class _NoHash:
    """A hasher that keeps nothing (a walk that only checks the tree's shape)."""

    def update(self, data: bytes) -> None:
        pass


class _TooDeep(Exception):
    """Raised by the walk past ``MAX_DEPTH``; :func:`path_digest` names the root."""


def _feed_directory(
    h: Any, root: str, rel: str, use_cache: bool, seen: dict[tuple[int, int], str],
    *, read: bool = True,
) -> None:
    """Feed one folder's tree. A folder reached again through a symlink (a loop, or two
    links to one folder: a "DAG" that would double the work per level) is fed once,
    then only as a link to where it was first seen; trees deeper than ``MAX_DEPTH`` are
    refused."""
    if rel.count("/") >= MAX_DEPTH:
        raise _TooDeep
    h.update(b"D%d:%s" % (len(rel), os.fsencode(rel)))
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        name = f"{rel}/{entry.name}" if rel else entry.name
        raw = os.fsencode(name)
        if entry.is_dir():
            st = entry.stat()
            first = seen.setdefault((st.st_dev, st.st_ino), name)
            if first != name:  # seen before: a symlink loop or a second link
                h.update(b"L%d:%s>%s" % (len(raw), raw, os.fsencode(first)))
                continue
            _feed_directory(h, entry.path, name, use_cache, seen, read=read)
        elif entry.is_file() and read:
            digest = _file_digest(entry.path, entry.stat(), use_cache)
            h.update(b"F%d:%s%s" % (len(raw), raw, digest.encode()))
        else:  # a broken symlink, a socket: its name still counts
            h.update(b"X%d:%s" % (len(raw), raw))
