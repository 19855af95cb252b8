"""The two JSON lines of a packed entry's record (:mod:`dagnb.cache.pack_records`),
head and rest, written in a fixed layout rather than by encoding their dicts: the same
text byte for byte (the tests compare them), so every reader (a hit, ``dagnb cache
verify``, explain) is unchanged; a head of another shape is encoded as a dict.

Encoding the head's dict escaped its sixteen names at every step, and the rest's
components and descriptions their every text: a first run with the cache on spent
more there than on anything else per step."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any

from dagnb.model.jsontext import compact_text_object, encoder

__all__ = ["head_at_a_glance", "head_bytes", "rest_bytes"]

_COMPACT = encoder(separators=(",", ":"))
_HEAD = ('{"format":%d,"step":%s,"key":%s,"created":%s,"expires":%s,"duration_s":%s,'
         '"exit_code":%d,"output_digest":%s,"size_bytes":%d,"hits":%d,"last_used":%s,'
         '"has_result":%s,"log_lines":%d,"packed":true')
_FIELDS = 14  # the names of _HEAD; "inline" and "provenance" follow when present
_BOOLEANS = {True: "true", False: "false"}


def head_bytes(head: dict[str, Any]) -> bytes:
    """The compact JSON of a packed entry's head as ``Store`` makes it (its times as
    :func:`_number` writes them)."""
    inline, provenance = head.get("inline"), head.get("provenance")
    extras = (inline is not None) + (provenance is not None)
    if (len(head) != _FIELDS + extras or type(head["exit_code"]) is not int
            or type(head["has_result"]) is not bool or head.get("packed") is not True):
        return _COMPACT(head).encode()  # another shape: encoded as it is
    created = _number(head["created"])
    last_used = head["last_used"]
    text = _HEAD % (
        head["format"], _quoted(head["step"]), _quoted(head["key"]), created,
        _number(head["expires"]), _number(head["duration_s"]), head["exit_code"],
        _quoted(head["output_digest"]), head["size_bytes"], head["hits"],
        created if last_used is head["created"] else _number(last_used),
        _BOOLEANS[head["has_result"]], head["log_lines"],
    )
    if inline is not None:
        text += f',"inline":{_COMPACT(inline)}'
    if provenance is not None:
        text += f',"provenance":{_COMPACT(provenance)}'
    return f"{text}}}".encode()


_START = b'{"format":1,"step":'  # (STORE_FORMAT 1: another format is parsed whole)
_EXPIRES, _AFTER_EXPIRES = b',"expires":', b',"duration_s":'
_PACKED, _INLINE, _PROVENANCE = b',"packed":true', ',"inline":', ',"provenance":'
_SCAN = json.JSONDecoder().scan_once  # the C scanner: one value from an offset


def head_at_a_glance(raw: bytes) -> tuple[float | None, Any] | None:
    """``(expires, inline)`` of a head in :func:`head_bytes`' layout, read without
    parsing the rest of it (a hit needs no more; parsing all sixteen fields cost a hit
    in a fresh process a quarter of its time); None for a head of another layout.

    Names are found with ``bytes.find``: ``,"expires":`` cannot occur inside a JSON
    string (its quote would end the string), so the first one found is the field."""
    if not raw.startswith(_START) or not raw.isascii():  # (ASCII: offsets are the text's)
        return None
    start = raw.find(_EXPIRES) + len(_EXPIRES)
    end = raw.find(_AFTER_EXPIRES, start)
    after = raw.find(_PACKED, end) + len(_PACKED)
    if start == len(_EXPIRES) - 1 or end < 0 or after == len(_PACKED) - 1:
        return None
    value = raw[start:end]
    try:
        expires = None if value == b"null" else float(value)
    except ValueError:
        return None
    text = raw.decode("ascii")
    inline, stop = None, after
    if text.startswith(_INLINE, after):
        try:
            inline, stop = _SCAN(text, after + len(_INLINE))
        except (ValueError, StopIteration):
            return None
        if type(inline) is not dict:
            return None
    return (expires, inline) if text[stop:] == "}" or text.startswith(_PROVENANCE, stop) else None


def _number(value: Any) -> str:
    """A time or a duration (or None) as JSON: a finite float with 17 significant
    digits, which give it back exactly, and cost half what its shortest form (the
    encoder's) does to find; anything else as the encoder writes it."""
    if type(value) is float:
        text = float.__format__(value, ".17g")
        if "." in text or "e" in text:  # a float when read (not inf, nan)
            return text
        if text[-1].isdigit():  # 2.0: "2", read as an int
            return f"{text}.0"
    return "null" if value is None else _COMPACT(value)


def rest_bytes(components: dict[str, str], describe: dict[str, str],
               logs_text: str | None) -> bytes:
    """The compact JSON of a packed entry's rest: its key's components and descriptions,
    no files, and the captured lines (``logs_text``, their JSON) if any."""
    logs = "" if logs_text is None else f',"packed_logs":{logs_text}'
    return (f'{{"components":{compact_text_object(components)},'
            f'"describe":{compact_text_object(describe)},"files":{{}},"digests":{{}}{logs}}}'
            ).encode()
