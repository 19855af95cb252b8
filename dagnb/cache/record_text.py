"""The two JSON lines of a packed entry's record (:mod:`dagnb.cache.pack_records`),
head and rest, written in a fixed layout rather than by encoding their dicts: the same
text byte for byte (the tests compare them), so every reader (a hit, ``dagnb cache
verify``, explain) is unchanged; a head of another shape is encoded as a dict.

Encoding the head's dict escaped its sixteen names at every step, and the rest's
components and descriptions their every text: a first run with the cache on spent
more there than on anything else per step."""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any

from dagnb.cache.backend import is_entry_name
from dagnb.model.jsontext import compact_text_object, encoder

__all__ = ["head_at_a_glance", "head_bytes", "head_read_whole", "packed_head_bytes",
           "rest_bytes"]

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
    return packed_head_bytes(head)


def packed_head_bytes(head: dict[str, Any], inline_text: str | None = None) -> bytes:
    """:func:`head_bytes` of a head of the shape ``Store`` makes, not checked again (a
    first run writes one per step); ``inline_text``: the compact JSON of its inline
    result, when the caller has it."""
    created, expires = _number(head["created"]), head["expires"]
    last_used = head["last_used"]
    text = _HEAD % (
        head["format"], _quoted(head["step"]), _quoted(head["key"]), created,
        "null" if expires is None else _number(expires), _number(head["duration_s"]),
        head["exit_code"], _quoted(head["output_digest"]), head["size_bytes"], head["hits"],
        created if last_used is head["created"] else _number(last_used),
        _BOOLEANS[head["has_result"]], head["log_lines"],
    )
    inline, provenance = head.get("inline"), head.get("provenance")
    if inline is not None:
        text += f',"inline":{_COMPACT(inline) if inline_text is None else inline_text}'
    if provenance is not None:
        text += f',"provenance":{_COMPACT(provenance)}'
    return f"{text}}}".encode()


_EXPIRES, _DURATION = ',"expires":', ',"duration_s":'
_DIGEST, _PACKED = ',"output_digest":', ',"packed":true'
_INLINE, _PROVENANCE = ',"inline":', ',"provenance":'
# their lengths, as constants: a len() call each cost a fresh process's hit a builtin call
_EXPIRES_LEN, _DIGEST_LEN, _PACKED_LEN = len(_EXPIRES), len(_DIGEST), len(_PACKED)
_INLINE_LEN, _PROVENANCE_LEN = len(_INLINE), len(_PROVENANCE)
_NUMBERS = (int, float)  # (what JSON numbers parse to; not bool)
_EXPIRIES = (int, float, type(None))  # (an expiry: a number or null)
_INLINES = (dict, type(None))  # (an inline result: a mapping, or null as a parse reads it)
_MAPPINGS = (dict,)
_SCAN = json.JSONDecoder().scan_once  # the C scanner: one value from an offset
_STARTS: dict[str, str] = {}  # step -> how its heads start, up to its key
_FORMAT_START = '{"format":1,"step":'  # how every head of this layout starts
# A name head_at_a_glance does not find (find: -1) leaves its offset inside that start,
# where what it checks next never holds (a quote after the digest's name, a comma
# starting the inline result's or the provenance's name, the end): no test for -1.
assert _FORMAT_START[_DIGEST_LEN - 1] != '"' and _FORMAT_START[_PACKED_LEN - 1] != ","


def _start_of(step: str) -> str:
    """How the heads of ``step`` start (remembered: a process hits few steps)."""
    if len(_STARTS) >= 1024:  # (a bound, for a process that names many)
        _STARTS.clear()
    starts = _STARTS[step] = f'{_FORMAT_START}{_quoted(step)},"key":'
    return starts


def head_at_a_glance(raw: bytes, step: str, key: str) -> tuple[float | None, Any] | None:
    """``(expires, inline)`` of the head of ``step/key`` in :func:`head_bytes`' layout,
    read without making the dict of its sixteen fields (a quarter of a hit's time in a
    fresh process); None for a head of another layout, or one that does not hold.

    What a parse checks is checked, but for the values between the expiry and the
    output digest, and between that and the inline result (a run reads them: it parses
    the head whole): its format, step and key, its times and output digest as numbers
    and text, its inline result and provenance as mappings, nothing after them (a name
    given twice, which no dagnb writes, is read by its first). Names are found with
    ``str.find``: ``,"output_digest":`` cannot occur inside a JSON string (its quote
    would end the string). Every hit of a fresh process passes here: each check is
    made once, with as few calls as it takes."""
    starts = _STARTS.get(step)
    if starts is None:
        starts = _start_of(step)
    keyed = f'{starts}{_quoted(key)},"created":'  # (its start, up to its first time)
    try:
        text = raw.decode("ascii")  # (ASCII: offsets are the text's; else a ValueError)
        if not text.startswith(keyed):
            return None
        created, at = _SCAN(text, len(keyed))
        if type(created) not in _NUMBERS or not text.startswith(_EXPIRES, at):
            return None
        expires, at = _SCAN(text, at + _EXPIRES_LEN)
        if type(expires) not in _EXPIRIES or not text.startswith(_DURATION, at):
            return None
        at = text.find(_DIGEST, at) + _DIGEST_LEN  # (not found: see _FORMAT_START)
        if not text.startswith('"', at):  # (text)
            return None
        tail = _tail(text, text.find(_PACKED, at) + _PACKED_LEN)
    except (ValueError, StopIteration):
        return None
    return None if tail is None else (expires, tail[0])


def _tail(text: str, at: int, inlines: tuple[type, ...] = _INLINES) -> tuple[Any, Any] | None:
    """``(inline, provenance)`` of a head whose fields up to ``"packed":true`` end at
    ``at`` (each None when absent), the inline result of one of ``inlines``, the
    provenance a mapping, nothing after them; else None. Raises ValueError or
    StopIteration for a value that is not JSON."""
    inline = provenance = None
    if text.startswith(_INLINE, at):
        inline, at = _SCAN(text, at + _INLINE_LEN)
        if type(inline) not in inlines:
            return None
    if text.startswith(_PROVENANCE, at):
        provenance, at = _SCAN(text, at + _PROVENANCE_LEN)
        if type(provenance) is not dict:
            return None
    return (inline, provenance) if text[at:] == "}" else None


# head_bytes' layout up to "packed":true, as the parse would accept it (what
# entry._parse_meta checks): names a cache folder holds (which JSON writes unescaped),
# times as floats, counts >= 0, an exit code, the output digest as text without escapes
_NAME = is_entry_name.__self__.pattern  # type: ignore[attr-defined]
_FLOAT = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
_COUNT = r"(?:0|[1-9][0-9]*)"
_WHOLE_LAYOUT = re.compile(
    rf'\{{"format":1,"step":"({_NAME})","key":"({_NAME})","created":({_FLOAT}),'
    rf'"expires":(?:null|({_FLOAT})),"duration_s":({_FLOAT}),"exit_code":(-?{_COUNT}),'
    rf'"output_digest":"([^"\\\x00-\x1f]*)","size_bytes":({_COUNT}),"hits":({_COUNT}),'
    rf'"last_used":({_FLOAT}),"has_result":(?:(true)|false),"log_lines":({_COUNT}),'
    r'"packed":true').match


def head_read_whole(raw: bytes, step: str, key: str) -> dict[str, Any] | None:
    """The head of ``step/key`` as parsing and checking it gives it, read from
    :func:`head_bytes`' layout by one pattern rather than the JSON decoder (which made
    a quarter of a cold re-run's hit: a dict of sixteen names, then each field's type
    checked); None for a head of another layout or whose values the pattern does not
    take (an int time, an infinity, an escape), for the parse to read and judge."""
    try:
        text = raw.decode("ascii")
        match = _WHOLE_LAYOUT(text)
        if match is None:
            return None
        tail = _tail(text, match.end(), _MAPPINGS)  # (an inline null: damage, to the parse)
    except (ValueError, StopIteration):
        return None
    if tail is None or match[1] != step or match[2] != key:
        return None
    return _whole_head(match.groups(), tail)


def _whole_head(fields: tuple[Any, ...], tail: tuple[Any, Any]) -> dict[str, Any]:
    """The head's dict from the pattern's groups, each value of the type JSON reads."""
    (step, key, created, expires, duration, code, digest, size, hits, used, has_result,
     lines) = fields
    created_at = float(created)  # (its last use: the same text in most heads, no parse)
    head = {"format": 1, "step": step, "key": key, "created": created_at,
            "expires": None if expires is None else float(expires),
            "duration_s": float(duration), "exit_code": int(code), "output_digest": digest,
            "size_bytes": int(size), "hits": int(hits),
            "last_used": created_at if used == created else float(used),
            "has_result": has_result is not None, "log_lines": int(lines), "packed": True}
    inline, provenance = tail
    if inline is not None:
        head["inline"] = inline
    if provenance is not None:
        head["provenance"] = provenance
    return head


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
