"""A step's Python result as a file in its output directory.

JSON when the value survives a JSON round trip with its exact types (so a downstream step
in any language can read it), pickle protocol 5 otherwise. Executors write results with
:func:`save_result`; the cache and the runner read them back with :func:`load_result`.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from dagnb.model import moved_modules
from dagnb.model.jsontext import encoder

__all__ = [
    "NO_RESULT",
    "PUBLISHED_AS",
    "RESULT_FILES",
    "decode_inline",
    "encode_inline",
    "json_text",
    "load_result",
    "own_result",
    "save_result",
]

RESULT_FILES = ("result.json", "result.pkl")
_STRICT = encoder(allow_nan=False)


class _NoResult:
    """Marker for a step that produced no Python result."""

    _instance: _NoResult | None = None

    def __new__(cls) -> _NoResult:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_RESULT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NO_RESULT"


NO_RESULT: Any = _NoResult()

# The attribute a --python cell's function carries: the notebook variables its result is
# published under (its --outputs), set by dagnb.notebook.cells. Here, below the runner,
# which fails such a step that ends with no result (sys.exit(0) before its return).
PUBLISHED_AS = "_dagnb_outputs"


def _json_exact(value: Any) -> bool:
    """True when JSON gives back this value with the same types (no tuples, int keys, NaN)."""
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json_exact(item) for item in value)
    if kind is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False


def _has_float(value: Any) -> bool:
    """Whether a value that JSON gives back exactly holds a float somewhere."""
    kind = type(value)
    if kind is float:
        return True
    if kind is list:
        return any(_has_float(item) for item in value)
    if kind is dict:
        return any(_has_float(item) for item in value.values())
    return False


def save_result(out_dir: Path, value: Any, *,
                pickler: Callable[[BinaryIO], pickle.Pickler] | None = None) -> Path:
    """Write ``value`` into ``out_dir`` as ``result.json`` or ``result.pkl``.

    Parameters
    ----------
    out_dir
        The step's output directory (``$DAGNB_OUT``); it must exist.
    value
        Any picklable value.
    pickler
        Given the open ``result.pkl``, the pickler (protocol 5) to dump the value with:
        the cache's looks at what goes by (sets, which pickle in an order hash seeds
        change; the user classes the value holds). Not called for a value written as
        JSON, or saved already.

    Returns
    -------
    Path
        The file written.
    """
    out_dir = Path(out_dir)
    if _already_saved(out_dir, value):  # (a step's own file, its result: kept as written)
        return out_dir / _found_result_file(out_dir)  # type: ignore[operator]
    text = json_text(value)
    if text is not None:
        path = out_dir / RESULT_FILES[0]
        path.write_text(text, encoding="utf-8")
        return path
    path = out_dir / RESULT_FILES[1]
    try:
        with open(path, "wb") as handle:
            (pickle.Pickler(handle, protocol=5) if pickler is None else pickler(handle)).dump(value)
    except BaseException:
        # (a value that does not pickle: no partial file a downstream step would read
        # as the result, failing with "Ran out of input" instead of "No such file")
        path.unlink(missing_ok=True)
        raise
    return path


def _found_result_file(out_dir: Path | str) -> str | None:
    """The name of the result file ``out_dir`` holds already, or None."""
    folder = os.fspath(out_dir)
    return next((name for name in RESULT_FILES if os.path.exists(f"{folder}/{name}")), None)


def _already_saved(out_dir: Path, value: Any) -> bool:
    """Whether ``out_dir`` holds a result file whose value is ``value`` (a step that
    returned None with its own result.json: that file is its result, see own_result)."""
    if _found_result_file(out_dir) is None:  # (every save but that one)
        return False
    try:
        return bool(load_result(out_dir) == value)
    except Exception:  # unreadable, or no plain answer to == (an array): written anew
        return False


def own_result(step: str, out_dir: Path | str, value: Any) -> Any:
    """The result of a Python step that ended with ``value``, ``out_dir`` being where
    it could write: ``value``, or the value of the result.json (or result.pkl) it wrote
    itself when it returned None (that file is its output, left as written, and a cache
    hit reads it back: a fresh run gives the same). Raises ValueError for a step that
    wrote such a file and returned a value: one of the two would be lost."""
    name = _found_result_file(out_dir)
    if name is None:
        return value
    if value is not None:
        raise ValueError(f"step {step!r} wrote {name}, the name dagnb keeps its returned value "
                     "under; name the file otherwise (metrics.json), or return None to "
                     "make that file the step's result")
    try:
        return load_result(out_dir)
    except Exception as exc:  # (not JSON, a pickle of a class gone...)
        raise ValueError(f"step {step!r} returned None and wrote {name}, which dagnb reads "
                         f"as its result, and it does not load ({exc}); name the file "
                         "otherwise (metrics.json)") from exc


def json_text(value: Any) -> str | None:
    """The text :func:`save_result` writes as ``result.json``; None: it pickles ``value``."""
    if _shallow_json_exact(value):
        text = _STRICT(value)
        # The structural check already guarantees this; the comparison guards float repr.
        if json.loads(text) == value:
            return text
    return None


def load_result(out_dir: Path | str) -> Any:
    """The value saved in ``out_dir``, or ``NO_RESULT`` when there is none."""
    # Text paths and bytes: this is every cache hit's path, Path objects cost microseconds.
    folder = os.fspath(out_dir)
    try:
        with open(f"{folder}/{RESULT_FILES[0]}", "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        pass
    try:
        with open(f"{folder}/{RESULT_FILES[1]}", "rb") as handle:
            return moved_modules.load(handle)
    except FileNotFoundError:
        return NO_RESULT


class _TooBig(Exception):
    """Raised by `_Bounded` once more than its limit was written."""


class _Bounded(io.RawIOBase):
    """A bytes sink that gives up past ``limit`` bytes, so sizing a large value's pickle
    stops at its first frame instead of pickling it whole."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size = limit, [], 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        # (protocol 5 writes a large buffer as a PickleBuffer, which has no len())
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        self.size += size
        if self.size > self.limit:
            raise _TooBig
        self.parts.append(bytes(data))
        return size


_SHORT_INT = 10**18  # an int closer to 0 takes at most 19 characters as JSON
_SHORT_TEXT = 19


def _short_scalar(value: Any) -> bool:
    """None, a bool, or an int of at most 18 digits (not a subclass: an IntEnum comes
    back as an int): JSON of at most :data:`_SHORT_TEXT` characters that gives it back."""
    kind = type(value)
    return value is None or kind is bool or (kind is int and -_SHORT_INT < value < _SHORT_INT)


def encode_inline(value: Any, limit: int) -> dict[str, Any] | None:
    """``value`` as a few JSON fields, if it takes at most ``limit`` bytes: ``{"json": v}``
    when JSON gives it back exactly, else ``{"pickle": base64}``; None when larger (or not
    picklable). A cache entry keeps so small a result in its metadata, not in a file."""
    if limit >= _SHORT_TEXT and _short_scalar(value):  # (most Python steps' results)
        return {"json": value}  # nothing to encode to check, nor to copy
    if isinstance(value, (str, bytes, list, dict)) and len(value) > limit:
        return None  # too big for sure: not worth encoding to find out
    if _shallow_json_exact(value):
        text = _STRICT(value)
        # only a float's text may not give it back: no need to read the others back
        if len(text) <= limit and (not _has_float(value) or json.loads(text) == value):
            return {"json": _copied(value)}  # (not the caller's: it may change it)
    sink = _Bounded(limit * 3 // 4)  # base64 takes 4 characters per 3 bytes
    try:
        pickle.Pickler(sink, protocol=5).dump(value)
    except Exception:  # too big, or not picklable: the caller writes a file (and says why)
        return None
    return {"pickle": base64.b64encode(b"".join(sink.parts)).decode("ascii")}


def _shallow_json_exact(value: Any) -> bool:
    """:func:`_json_exact`, False for a value nested too deep to walk (then it is
    pickled, or stored as a file, or said to be unstorable: never a crash of the save)."""
    try:
        return _json_exact(value)
    except RecursionError:
        return False


def decode_inline(fields: Any) -> Any:
    """The value :func:`encode_inline` described: a new one at each call (a list or dict
    is copied, not the one the entry's metadata holds, which a caller could change)."""
    if "json" in fields:
        value = fields["json"]
        return _copied(value) if type(value) in _CONTAINERS else value
    return moved_modules.loads(base64.b64decode(fields["pickle"]))


_CONTAINERS = (list, dict)  # what _copied makes anew


def _copied(value: Any) -> Any:
    """A JSON value with its lists and dicts new (its numbers and strings shared)."""
    if type(value) is list:
        return [_copied(item) for item in value]
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    return value
