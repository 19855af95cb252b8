"""JSON text of the small values dagnb encodes at every step (a cache record's head and
rest, a step's params, a small result), the very text ``json`` writes, for less.

``JSONEncoder.encode`` makes a C encoder at each call (its Python code, a closure, the
C object: some 7,000 instructions, as much as encoding a small dict); :func:`encoder`
makes it once. Made without ``markers`` (the set of containers being encoded, which an
encoding that fails midway leaves stale, so it cannot be shared between calls), a
value that holds itself makes the C encoder recurse until ``RecursionError``: such a
value is then encoded again by ``JSONEncoder``, which raises its usual ``ValueError``.
The text is the same byte for byte (the tests compare them): digests made of it, and
the readers of what it writes, do not change.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

try:
    from _json import make_encoder as _c_make_encoder
except ImportError:  # (another Python, without the C accelerator)
    _c_make_encoder = None

__all__ = ["compact_text_object", "encoder", "object_text", "scalar_text"]

_SCALAR_TEXTS = {None: "null", True: "true", False: "false"}  # (asked of None or a bool)


def encoder(*, sort_keys: bool = False, separators: tuple[str, str] = (", ", ": "),
            ensure_ascii: bool = True, allow_nan: bool = True) -> Callable[[Any], str]:
    """``json.JSONEncoder(**options).encode``, with its C encoder made once."""
    stdlib = json.JSONEncoder(sort_keys=sort_keys, separators=separators,
                              ensure_ascii=ensure_ascii, allow_nan=allow_nan)
    if _c_make_encoder is None:
        return stdlib.encode
    item_separator, key_separator = separators
    escape = encode_basestring_ascii if ensure_ascii else encode_basestring
    chunks = _c_make_encoder(None, stdlib.default, escape, None, key_separator,
                             item_separator, sort_keys, False, allow_nan)

    def encode(value: Any) -> str:
        try:
            return "".join(chunks(value, 0))
        except RecursionError:  # a value that holds itself, or nested very deep
            return stdlib.encode(value)

    return encode


def scalar_text(value: Any) -> str | None:
    """The JSON of an int (not a subclass), None or a bool, as the encoder writes it,
    made without it (a call of the encoder costs some 5,000 instructions); None for any
    other value."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if value is None or kind is bool:
        return _SCALAR_TEXTS[value]
    return None


_COMPACT = encoder(separators=(",", ":"))
_KEPT = 4096  # items remembered by compact_text_object; past that it starts over


class _NotText(Exception):
    """A name or value that is not a str: the whole dict goes to the encoder."""


class _Items(dict[tuple[str, str], str]):
    """``"name":"value"`` by ``(name, value)``, both str (never confused with 1, True:
    equal to them as keys, not as JSON)."""

    __slots__ = ()

    def __missing__(self, item: tuple[Any, Any]) -> str:
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise _NotText
        if len(self) >= _KEPT:
            self.clear()
        text = self[item] = f"{encode_basestring_ascii(name)}:{encode_basestring_ascii(value)}"
        return text


_ITEM = _Items().__getitem__


def compact_text_object(mapping: dict[str, str]) -> str:
    """``json.dumps(mapping, separators=(",", ":"))`` of a dict of str to str, its items
    remembered: a cache key's component names, digests and descriptions recur from step
    to step, and a hit costs a hash of two str whose hashes are kept, where escaping them
    scans each twice (a third of the instructions, for a key's components)."""
    try:
        return "{" + ",".join(map(_ITEM, mapping.items())) + "}"
    except (_NotText, TypeError):  # (TypeError: a value that cannot be hashed)
        return _COMPACT(mapping)


# text json writes as it is (ensure_ascii): printable ASCII but the quote and backslash
_AS_IS = re.compile(r'[ !#-\[\]-~]*')
FLAT_FROM = 1_000  # items from which a flat dict's text is joined, not encoded


def object_text(mapping: Mapping[str, Any]) -> str:
    """``json.dumps(mapping, separators=(",", ":"))``, the same bytes, each value of
    ``FLAT_FROM`` items or more that is flat (:func:`_flat_text`) joined in one go: the
    C encoder's cost per item grows with the container (its list of chunks), from 0.3 µs
    at 1,000 items to 1.3 µs at 100,000 in a run's record of its steps' states."""
    if type(mapping) is not dict or not any(_big(value) for value in mapping.values()) \
            or not all(type(name) is str for name in mapping):  # (json's keys: its words)
        return _COMPACT(mapping)
    items = (f"{_COMPACT(name)}:{(_big(value) and _flat_text(value)) or _COMPACT(value)}"
             for name, value in mapping.items())
    return "{" + ",".join(items) + "}"


def _big(value: Any) -> bool:
    return type(value) in (dict, list) and len(value) >= FLAT_FROM


def _flat_text(value: dict[Any, Any] | list[Any]) -> str | None:
    """The compact JSON of a list of str, or of a dict of str to str or to float, whose
    str need no escaping (step names, digests, states); None for any other."""
    if type(value) is list:
        return '["' + '","'.join(value) + '"]' if _as_is(value) else None
    names = list(value)
    values = list(value.values())
    if not _as_is(names):
        return None
    if _as_is(values):
        return "{" + ",".join([f'"{n}":"{v}"' for n, v in zip(names, values, strict=True)]) + "}"
    if set(map(type, values)) == {float} and all(map(math.isfinite, values)):  # (NaN: not)
        return "{" + ",".join([f'"{n}":{v!r}' for n, v in zip(names, values, strict=True)]) + "}"
    return None


def _as_is(texts: list[Any]) -> bool:
    """Whether every one of ``texts`` is a str (not a subclass, whose ``__str__`` a
    format would call) that json writes as it is."""
    return set(map(type, texts)) == {str} and _AS_IS.fullmatch("".join(texts)) is not None
