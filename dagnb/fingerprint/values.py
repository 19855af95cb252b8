"""Digests of values by content: plain values in one piece, numpy and pandas objects
through their buffers, anything else through a pickle stream written into the hasher
(functions held by a value by their code, sets in digest order)."""

from __future__ import annotations

import pickle
import struct
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import xxhash

from dagnb.errors import FingerprintError
from dagnb.fingerprint import hashers
from dagnb.fingerprint.hashers import new_hasher
from dagnb.fingerprint.names import _MAIN_NAMES, _MP_MAIN, _MP_MAIN_BYTES, main_spelled


class _CodeDigests:
    """How a function or class met inside a value is hashed: by its code, which
    :mod:`dagnb.fingerprint.code` hashes (and it hashes the values its code reads with
    this module, so it hands its two digests over when imported: :func:`use`)."""

    function: Callable[[Any], str]
    cls: Callable[[type], str]
    user_class: Callable[[type], str | None]  # None: a library's or Python's class
    of_user: Callable[[str], bool]  # whether a module (by name) is the user's code


_digests = _CodeDigests()


def use(function: Callable[[Any], str], cls: Callable[[type], str],
        user_class: Callable[[type], str | None], of_user: Callable[[str], bool]) -> None:
    """Hash the functions and classes met inside values with these (code's digests)."""
    _digests.function, _digests.cls, _digests.user_class = function, cls, user_class
    _digests.of_user = of_user


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
        The value (or something inside it) cannot be pickled, or nests too deep to walk.
    """
    kind = type(obj)
    if kind is int:  # (_plain_bytes' commonest cases inline: every Memory hit hashes
        data = b"i%d;" % obj  # its arguments here)
    elif kind is str and len(obj) <= _PLAIN_LONGEST:
        data = obj.encode("utf-8", "surrogatepass")
        data = b"s%d:%s" % (len(data), data)
    else:
        data = _plain_bytes(obj, 0)
    if data is not None:
        if hashers._ALGORITHM == "xxh3_128":
            return xxhash.xxh3_128_hexdigest(data)
        h = new_hasher()
        h.update(data)
        return h.hexdigest()
    try:
        h = _fed(obj)
    except RecursionError:
        raise FingerprintError(
            f"a {type(obj).__qualname__} value nests too deep to fingerprint (hundreds of "
            "levels); pass a flatter value, or its file") from None
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
    items = list(obj.items())  # (at once: another thread may change it as it is read)
    for key, item in items:
        data = _plain_bytes(item, depth + 1)
        if data is None:
            return None
        pairs.append((_digest_bytes(key), data))
    pairs.sort(key=_first)
    return b"d%d:%s" % (len(items), b"".join([key + data for key, data in pairs]))


def _first(pair: tuple[Any, Any]) -> Any:
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
    items = list(obj.items())  # (at once: a global another thread changes as it is read)
    h.update(b"d%d:" % len(items))
    with _Guard(h, obj, active) as fresh:
        if fresh:
            # Ordered by key digest: insertion order and hash seeds must not matter.
            for key_digest, value in sorted(
                ((_digest_bytes(k), v) for k, v in items), key=lambda kv: kv[0]
            ):
                h.update(key_digest)
                _feed(h, value, active)


def _feed_set(h: Any, obj: set | frozenset, active: set[int]) -> None:
    items = tuple(obj)  # (at once, as a dict's)
    h.update(b"%s%d:" % (b"S" if type(obj) is set else b"Z", len(items)))
    for digest in sorted(_digest_bytes(item) for item in items):
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
    if id(obj) in functions_under_way():  # (a value its own code reads holds it: a
        h.update(b"recursive:" + obj.__qualname__.encode())  # dispatch table)
        return
    h.update(_digests.function(obj).encode())


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
            if type(obj) not in (np.ndarray, np.memmap):  # (a memmap: its content)
                _feed_subclass(h, obj, np)
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
            _feed_metadata(h, obj)
            return True
        if isinstance(obj, pd.Index):
            _feed_index(h, obj, pd)
            return True
    return False


def _feed_ndarray(h: Any, arr: Any, np: Any) -> None:
    h.update(b"nd%s%s" % (arr.dtype.str.encode(), repr(arr.shape).encode()))
    if not arr.flags.c_contiguous:
        h.update(_layout(arr))
    if arr.dtype.hasobject:
        _feed_objects(h, arr)
        return
    if arr.dtype.names:  # structured: the field layout matters, not only the bytes
        h.update(repr(arr.dtype.descr).encode())
    # A byte view works for every non-object dtype (datetime64 has no buffer format).
    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _layout(arr: Any) -> bytes:
    """The order in which an array's axes lie in memory, when it is not C's (the data
    is hashed in C order): ``ravel(order="K")``, ``copy(order="K")`` and ``empty_like``
    follow it, so a Fortran-ordered array is not its C-ordered copy (joblib keys them
    apart too). Axes of length 1 and broadcast ones (stride 0) have no order; an array
    whose other axes are in C order (a slice ``a[::2]``) keeps its key."""
    shape, strides = arr.shape, arr.strides
    axes = [axis for axis in range(arr.ndim) if shape[axis] > 1 and strides[axis] != 0]
    in_memory = sorted(axes, key=lambda axis: -abs(strides[axis]))  # (stable: ties in C order)
    return b"" if in_memory == axes else b"axes%s" % repr(in_memory).encode()


def _feed_subclass(h: Any, arr: Any, np: Any) -> None:
    """What an ndarray subclass adds to its data: its class (np.matrix and np.recarray
    hold the same bytes as an array), and a masked array's mask and fill value."""
    kind = type(arr)
    h.update(b"sub%s.%s" % (kind.__module__.encode(), kind.__qualname__.encode()))
    if isinstance(arr, np.ma.MaskedArray):
        _feed_ndarray(h, np.ma.getmaskarray(arr), np)
        _feed(h, arr.fill_value, set())


def _feed_column(h: Any, series: Any) -> None:
    h.update(b"col" + str(series.dtype).encode())
    values = series.to_numpy()
    # strings, categoricals, tz-aware columns; and a nullable column holding NA, whose
    # numpy form is float (where 2**53 + 1 is 2**53) or, before pandas 3, objects
    if values.dtype.hasobject or (hasattr(series.dtype, "numpy_dtype")
                                  and values.dtype != series.dtype.numpy_dtype):
        _feed_objects(h, series.array)  # (a categorical's pickle holds its categories)
    else:
        _feed_categories(h, series.dtype)
        _feed_ndarray(h, values, sys.modules["numpy"])


def _feed_categories(h: Any, dtype: Any) -> None:
    """A categorical's categories (by content) and ``ordered``, which its values as
    numpy gives them leave out: two with the same values and other categories (a
    groupby, ``cat.codes``, ``min`` tell them apart) must not share a key."""
    pd = sys.modules["pandas"]
    if isinstance(dtype, pd.CategoricalDtype):
        h.update(b"categories%s" % (b"ordered" if dtype.ordered else b""))
        _feed_index(h, dtype.categories, pd)


def _feed_dataframe(h: Any, frame: Any, pd: Any) -> None:
    h.update(b"pdf%d" % frame.shape[1])
    _feed_index(h, frame.columns, pd)
    _feed_index(h, frame.index, pd)
    for position in range(frame.shape[1]):
        _feed_column(h, frame.iloc[:, position])
    _feed_metadata(h, frame)


def _feed_metadata(h: Any, obj: Any) -> None:
    """What a frame or series carries besides its data, when it carries any (so that
    the digests of those that do not stay as they were): ``attrs``, and the flag that
    refuses duplicate labels."""
    if obj.attrs:
        h.update(b"attrs")
        _feed(h, obj.attrs, set())
    if not obj.flags.allows_duplicate_labels:
        h.update(b"noduplicates")


def _feed_index(h: Any, index: Any, pd: Any) -> None:
    h.update(b"idx" + type(index).__name__.encode())
    _feed(h, list(index.names), set())
    freq = getattr(index, "freq", None)  # (a DatetimeIndex's: asfreq, shift use it)
    if freq is not None:
        h.update(b"freq" + str(freq).encode())
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
    a function of the user's code held by the value (the script's, a notebook's, a
    project module's: ``partial(features.scale, 2)``), or one pickle cannot find by its
    name (a closure, a lambda, one a decorator's wrapper now holds the name of), counts
    by its code, as one passed itself does (a library's, and those that reduce values,
    by name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _texts_met(self)

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is not types.FunctionType:
            if kind in _PLAIN_SETS or kind is dict or not isinstance(obj, _ORDER_FREE):
                return NotImplemented
            if isinstance(obj, dict):  # (a defaultdict: its items in key order)
                if isinstance(obj, OrderedDict) or self.texts is None:
                    return NotImplemented
                return _dict_reduced(obj)
            return _set_subclass_reduced(obj)
        if (obj.__module__ not in _MAIN_NAMES and _importable(obj)
                and not _digests.of_user(obj.__module__)):
            return NotImplemented
        under_way = functions_under_way()
        if id(obj) in under_way:  # (a value its own code reads holds it)
            return NotImplemented
        under_way.add(id(obj))
        try:
            return _function_of_code, (_digests.function(obj),)
        finally:
            under_way.discard(id(obj))

    def persistent_id(self, obj: Any) -> Any:
        # Called for every object (reducer_override skips exact sets): a set becomes its
        # sorted member digests, so hash seeds do not change the stream.
        kind = type(obj)
        if kind is str:  # (inline, not a call: texts are most of what a value pickles)
            texts = self.texts
            if texts is None:
                return None
            first = texts.get(obj)
            if first is None:
                texts[obj] = len(texts)
            return first  # (see _texts_met)
        if kind is dict:  # (in key order, as a dict argument counts, and as joblib's)
            return None if self.texts is None else self._dict_in_order(obj)
        if kind in _PLAIN_SETS:
            return (kind.__name__, _digest_bytes(obj))
        if isinstance(obj, type):
            # A class pickle cannot look up (one made by exec or in a function, as a
            # notebook's can be), or one of the user's code (an argument built from
            # the project's Featurizer): by name and by its code and values, so that
            # its instances still hash by content, two classes of one name apart, and
            # an edit of the class's code counts. Others by name (pickle's way).
            contents = self.__dict__.setdefault("contents", {})  # (once per pickle)
            if id(obj) not in contents:
                contents[id(obj)] = _class_content(
                    obj, _digests.cls if not _importable(obj) else _digests.user_class)
            if contents[id(obj)] is not None:
                return ("class", main_spelled(obj.__module__), obj.__qualname__,
                        contents[id(obj)])
        return None

    def _dict_in_order(self, obj: dict[Any, Any]) -> Any:
        """A dict as its items in key order: built by iterating a set, its insertion
        order changes with the hash seed, so an object holding it (a dataclass's dict,
        a Counter) missed the cache in every new process. A dict met again is written
        as a reference to the first, as pickle's memo (which never sees it) would: a
        cycle through it ends there."""
        met = self.dicts
        found = met.get(id(obj))
        if found is not None:
            return ("dict-again", found[0])
        met[id(obj)] = (len(met), obj)  # (kept: a dict made by a reduce, gone, would
        return ("dict", tuple(_items_in_order(obj)))  # hand its id to another)


def _texts_met(pickler: Any) -> None:
    """Start a pickler's own memos. ``texts``: a text met again, as the same object or
    an equal one, is pickled as its first's number (an int: no call here for it), one
    met first as ever. Pickle's memo writes a reference for the same object only, so
    equal values hashed apart as their equal texts were one object or two (a literal's
    and json's). ``dicts``: see :meth:`_HashingPickler._dict_in_order`. Neither (texts
    None) for a value too deep for them (:func:`_fed`); no ``texts`` in pickle's fast
    mode (no memo: each text is written whole, as an object column's are)."""
    as_inserted = getattr(_UNDER_WAY, "as_inserted", False)
    pickler.texts = None if as_inserted else {}
    pickler.dicts = {}


_PLAIN_SETS = (set, frozenset)
_ORDER_FREE = (set, frozenset, dict)


def _items_in_order(obj: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """A dict's items by key: texts sorted as such (the usual case, fast), any other
    keys by their digests (they may not compare, or not in a total order)."""
    if set(map(type, obj)) == _TEXT_ONLY:
        return sorted(obj.items(), key=_first)
    return sorted(obj.items(), key=lambda item: _digest_bytes(item[0]))


_TEXT_ONLY = {str}


def _dict_reduced(obj: dict[Any, Any]) -> tuple[Any, ...]:
    """A dict subclass's reduction with its items in key order (pickle's own follows
    insertion order: see :meth:`_HashingPickler._dict_in_order`)."""
    reduced = obj.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
    if not isinstance(reduced, tuple) or len(reduced) < 5 or reduced[4] is None:
        return reduced
    return (*reduced[:4], iter(_items_in_order(obj)), *reduced[5:])


def _set_subclass_reduced(obj: set[Any] | frozenset[Any]) -> tuple[Any, ...]:
    """A set subclass's reduction with its members as their sorted digests, not in
    iteration order (pickle's own), which hash seeds change from process to process:
    ``class Tags(frozenset)`` of strings missed the cache in every new process. Its
    class and its state (attributes) still count."""
    reduced = obj.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
    state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
    return _set_of_members, (type(obj), _digest_bytes(frozenset(obj))), state


def _set_of_members(kind: type, members: bytes) -> None:
    """What a set subclass inside a hashed value is pickled as (never unpickled)."""
    raise TypeError("a fingerprint is not a pickle to load")


def _function_of_code(digest: str) -> None:
    """What a function inside a hashed value is pickled as (never unpickled)."""
    raise TypeError("a fingerprint is not a pickle to load")


# Pickled by name into the digests of values that hold functions: the name it had when
# fingerprint was one module, so that those keys did not change when it became a package
# (dagnb.fingerprint exports it under that name).
_function_of_code.__module__ = "dagnb.fingerprint"


_T = TypeVar("_T")
_UNDER_WAY = threading.local()  # this thread's classes whose content is being hashed (a
#                                 value of one may hold the class itself)


def functions_under_way() -> set[int]:
    """The ids of the functions whose code this thread is hashing (or checking): a value
    their code reads that holds one of them counts it as ``recursive``."""
    return _UNDER_WAY.__dict__.setdefault("functions", set())  # type: ignore[no-any-return]


def _classes_under_way() -> set[int]:
    return _UNDER_WAY.__dict__.setdefault("classes", set())  # type: ignore[no-any-return]


def while_class_under_way(cls: type, work: Callable[[], _T]) -> _T:
    """``work()`` with ``cls`` counted as being hashed (if it is not already): an
    instance of it inside the data its methods read counts as ``recursive`` there, as
    in the class's own values, wherever that data's digests are asked for."""
    under_way = _classes_under_way()
    if id(cls) in under_way:
        return work()
    under_way.add(id(cls))
    try:
        return work()
    finally:
        under_way.discard(id(cls))


def _class_content(cls: type, digest: Callable[[type], str | None]) -> str | None:
    """What a class holds: its code (its functions with their closures and globals, its
    bases and nested classes) and its values, by ``digest`` (None: by name)."""
    under_way = _classes_under_way()
    if id(cls) in under_way:
        return "recursive"
    under_way.add(id(cls))
    try:
        return digest(cls)  # (a method's class's walk, kept)
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
    _dict_in_order = _HashingPickler._dict_in_order

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _texts_met(self)

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


def _feed_objects(h: Any, obj: Any) -> None:
    """An array or column of Python objects, by its pickle without a memo: with one, an
    object met again is written as a reference to the first, so equal arrays hashed
    apart when their equal strings were one object (``read_csv`` shares them) or
    several. Fed as a digest, so that a cyclic value, which only a memo can pickle,
    falls back on the pickle with one."""
    digest = new_hasher()
    try:
        _feed_pickle(digest, obj, fast=True)
    except FingerprintError as exc:
        if not isinstance(exc.__cause__, (ValueError, RecursionError)):
            raise
        _feed_pickle(h, obj)  # ("fast mode: can't pickle cyclic objects")
        return
    h.update(b"objects" + digest.digest())


def _feed_pickle(h: Any, obj: Any, *, fast: bool = False) -> None:
    h.update(b"pkl" + type(obj).__qualname__.encode())
    try:
        if getattr(sys.modules.get(_MP_MAIN), "__name__", None) == _MP_MAIN:
            # (any process that imports multiprocessing has an __mp_main__: its
            # __main__ under a 2nd name)
            _pickle_in_worker(h, obj, fast)
        else:
            _pickle_into(h.update, obj, fast=fast)
    except FingerprintError:
        raise
    except Exception as exc:
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        # (no name here: the layer that knows the argument's name says how to leave it out)
        raise FingerprintError(
            f"cannot fingerprint a value of type {kind!r} ({exc}); leave it out of the key "
            "or pass plain data (text, numbers, lists, dicts) instead"
        ) from exc


def _pickle_into(feed: Callable[[Any], Any], obj: Any,
                 pickler: type[pickle.Pickler] = _HashingPickler, *, fast: bool = False) -> None:
    """Feed the pickle of ``obj``, then the length and digest of each big contiguous
    buffer it hands over (hashed in place, no copy): after the stream, not within it,
    so that where the pickler cuts its stream does not count, and with their lengths,
    so that two buffers of one value are never read as two others. ``fast``: without a
    memo (pickle's ``fast`` mode: no back-references; a cycle raises ValueError)."""
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

    writer = pickler(types.SimpleNamespace(write=feed), protocol=5,
                     buffer_callback=out_of_band)
    writer.fast = fast
    if fast:  # (no memo, no reference to a text met before: each is written whole)
        writer.texts = None
    writer.dump(obj)
    if buffers:
        feed(b"buffers:%d" % len(buffers))
        for buffer in buffers:
            feed(buffer)


def _pickle_in_worker(h: Any, obj: Any, fast: bool) -> None:
    """In a process that imports the script as ``__mp_main__`` (a spawn or forkserver
    worker): pickled as anywhere, unless the pickle names that module; then again by
    :class:`_MainSpelledPickler`, unless the value is too deep for it (a miss, then)."""
    pieces: list[bytes] = []
    _pickle_into(pieces.append, obj, fast=fast)
    if any(_MP_MAIN_BYTES in piece for piece in pieces):
        spelled: list[bytes] = []
        try:
            _pickle_into(spelled.append, obj, _MainSpelledPickler, fast=fast)
            pieces = spelled
        except RecursionError:  # (the Python pickler takes several frames a level)
            pass
    for piece in pieces:
        h.update(piece)


def _digest_bytes(obj: Any) -> bytes:
    if type(obj) is str and hashers._ALGORITHM == "xxh3_128":  # dict keys: the common case, fast
        data = obj.encode("utf-8", "surrogatepass")
        return xxhash.xxh3_128_digest(b"s%d:%s" % (len(data), data))
    return _fed(obj).digest()


def _fed(obj: Any) -> Any:
    """A hasher fed ``obj``. Dicts reached through pickle go in key order, which takes
    the pickler more levels of its own a level of the value: a value deep enough for
    that to reach Python's recursion limit (hundreds of levels), and only such a one,
    goes again with them in insertion order, as before, rather than fail."""
    h = new_hasher()
    try:
        _feed(h, obj, set())
        return h
    except (RecursionError, FingerprintError) as exc:
        if getattr(_UNDER_WAY, "as_inserted", False) or not (
                isinstance(exc, RecursionError) or isinstance(exc.__cause__, RecursionError)):
            raise
    _UNDER_WAY.as_inserted = True
    try:
        h = new_hasher()
        _feed(h, obj, set())
        return h
    finally:
        _UNDER_WAY.as_inserted = False


def _soft_digest(obj: Any) -> str | None:
    """value_digest for values that hash; None for those that do not."""
    try:
        return value_digest(obj)
    except FingerprintError:
        return None


