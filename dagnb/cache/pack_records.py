"""The records of a pack (:mod:`dagnb.cache.pack`): their format, their encoding and
decoding, and finding and checking one in a pack's bytes. A record::

    magic "DGPK" | length u32 of the rest | xxh3_64 of the rest u64 |
    rest: stamp u64 (ns) | kind u8 (1 entry, 0 tombstone) | step length u16 |
          key length u16 | step | key | body |
    the record's whole length u32 | "KPGD"

The body of an entry is its metadata as two JSON lines: the head (what a hit reads:
times, exit code, output digest, the inline result) and the rest (components,
descriptions, captured lines), parsed only when asked for. A ``Memory`` hit reads only
the head's expiry and inline result, at a glance
(:func:`~dagnb.cache.record_text.head_at_a_glance`). A tombstone has none.
"""

from __future__ import annotations

import struct
import time

import xxhash

MAGIC = b"DGPK"
_HEAD = struct.Struct("<4sIQ")  # magic, length of the rest, xxh3_64 of the rest
_FIXED = struct.Struct("<QBHH")  # stamp (ns), kind, step length, key length
_FRAME = struct.Struct("<4sIQQBHH")  # _HEAD and _FIXED together: what a walk reads
_NAMES = struct.Struct("<HH")  # the step and key lengths, searched for with the names
_NAMES_AT = _HEAD.size + 9  # where they are in a record (after the stamp and kind)
_TAIL = struct.Struct("<I4s")  # the record's whole length, and "KPGD": read backwards
END = b"KPGD"
ENTRY, TOMBSTONE = 1, 0
_DAMAGED = 255  # the kind the index gives a record found damaged: a miss
RECORD_LIMIT = 64 * 1024  # an entry whose record would be larger keeps a folder
SUFFIX = ".pack"  # a pack's file name: <name>.pack


class Record:
    """One record of a pack, as the index keeps it (the body parsed when asked for)."""

    __slots__ = ("body", "key", "kind", "pack", "stamp", "step")

    def __init__(self, step: str, key: str, kind: int, stamp: int, body: bytes, pack: str) -> None:
        self.step, self.key, self.kind, self.stamp, self.body, self.pack = (
            step, key, kind, stamp, body, pack)

    def __repr__(self) -> str:
        return f"Record({self.step!r}, {self.key[:12]!r}, kind={self.kind}, pack={self.pack!r})"


def encode(step: str, key: str, kind: int, body: bytes, stamp: int | None = None) -> bytes:
    """One record's bytes, header included."""
    step_bytes, key_bytes = step.encode(), key.encode()
    stamp = time.time_ns() if stamp is None else stamp
    rest = b"".join([
        _FIXED.pack(stamp, kind, len(step_bytes), len(key_bytes)), step_bytes, key_bytes, body,
    ])
    head = _HEAD.pack(MAGIC, len(rest), xxhash.xxh3_64_intdigest(rest))
    return b"".join([head, rest, _TAIL.pack(_HEAD.size + len(rest) + _TAIL.size, END)])


def decode(data: bytes, pack: str) -> tuple[list[Record], int, list[str], bool]:
    """The whole records at the start of ``data``: ``(records, bytes read, problems,
    torn)``. A record that does not match its digest is skipped (a problem) and reading
    goes on after it; one whose framing is lost ends the reading (a problem). ``torn``:
    the data ends inside a record (being written, or torn by a power loss)."""
    records: list[Record] = []
    problems: list[str] = []
    offset, end = 0, len(data)
    head, fixed = _HEAD.size, _FIXED.size
    while offset < end:
        if end - offset < head:
            return records, offset, problems, True
        magic, length, digest = _HEAD.unpack_from(data, offset)
        start = offset + head
        if magic != MAGIC or length < fixed:
            problems.append(f"no record starts at byte {offset}")
            return records, offset, problems, False
        after = start + length + _TAIL.size
        if after > end:
            return records, offset, problems, True
        if _TAIL.unpack_from(data, start + length) != (after - offset, END):
            problems.append(f"the record at byte {offset} has no end")
            return records, offset, problems, False
        rest = data[start:start + length]
        record = None
        if xxhash.xxh3_64_intdigest(rest) == digest:
            record = _record(rest, pack)
        if record is None:
            problems.append(f"the record at byte {offset} does not match its digest")
        else:
            records.append(record)
        offset = after
    return records, offset, problems, False


def _record(rest: bytes, pack: str) -> Record | None:
    stamp, kind, step_length, key_length = _FIXED.unpack_from(rest)
    fixed = _FIXED.size
    names = fixed + step_length + key_length
    try:
        step = rest[fixed:fixed + step_length].decode()
        key = rest[fixed + step_length:names].decode()
    except UnicodeDecodeError:
        return None
    return Record(step, key, kind, stamp, rest[names:], pack)


_Slot = tuple[bytes, int, int, int, str]  # a record found, not checked yet: data, offset,
#                                           stamp, kind, pack


def _stamp_of(known: Record | _Slot) -> int:
    return known[2] if type(known) is tuple else known.stamp  # type: ignore[union-attr,index]


def _kind_of(known: Record | _Slot) -> int:
    return known[3] if type(known) is tuple else known.kind  # type: ignore[union-attr,index]


def _pack_of(known: Record | _Slot) -> str:
    return known[4] if type(known) is tuple else known.pack  # type: ignore[union-attr,index]


def _wins(known: Record | _Slot | None, stamp: int, pack: str) -> bool:
    """Whether a record of ``pack`` met after ``known`` (of the same key) takes its
    place: in one pack the later one (packs are appended to); across packs the newer
    stamp, a tie to the larger pack name, so that every process and every way of
    reading picks the same."""
    if known is None:
        return True
    known_pack = _pack_of(known)
    if known_pack == pack:
        return True
    known_stamp = _stamp_of(known)
    return known_stamp < stamp or (known_stamp == stamp and known_pack < pack)


def _needle(step: str, key: str) -> bytes:
    """What a record holds of its step and key, lengths first: searched for in a pack,
    and hashed for its keys file."""
    step_bytes, key_bytes = step.encode(), key.encode()
    return _NAMES.pack(len(step_bytes), len(key_bytes)) + step_bytes + key_bytes


def _record_needle(record_bytes: bytes | memoryview, offset: int = 0) -> bytes:
    """The needle of the (whole, checked) record at ``offset``."""
    step_length, key_length = _NAMES.unpack_from(record_bytes, offset + _NAMES_AT)
    start = offset + _NAMES_AT
    return bytes(record_bytes[start:start + _NAMES.size + step_length + key_length])


def _ends_whole(blob: bytes) -> bool:
    """Whether ``blob`` ends with a whole record (read backwards from its end)."""
    if len(blob) < _FRAME.size + _TAIL.size:
        return not blob
    size, end = _TAIL.unpack_from(blob, len(blob) - _TAIL.size)
    start = len(blob) - size
    return end == END and start >= 0 and _whole_record(blob, start, "") is not None


def _last_record(blob: bytes, needle: bytes, pack: str) -> Record | None:
    """The last record of ``blob`` whose step and key are ``needle``'s, or None: of kind
    :data:`_DAMAGED` when it ends inside ``blob`` but does not hold (as a walk finds it);
    one still written, or torn, at the end is passed over (the one before counts)."""
    end = len(blob)
    while (at := blob.rfind(needle, 0, end)) >= 0:
        start = at - _NAMES_AT
        if start >= 0 and blob[start:start + 4] == MAGIC:
            record = _whole_record(blob, start, pack)
            if record is not None:
                return record
            if _ends_within(blob, start):
                stamp = _FRAME.unpack_from(blob, start)[3]
                step_length = _NAMES.unpack_from(needle)[0]
                step = needle[_NAMES.size:_NAMES.size + step_length].decode()
                key = needle[_NAMES.size + step_length:].decode()
                return Record(step, key, _DAMAGED, stamp, b"", pack)
        end = at + len(needle) - 1
    return None


def _ends_within(blob: bytes, start: int) -> bool:
    """Whether the record at ``start`` says it ends inside ``blob`` (not torn there)."""
    length = _HEAD.unpack_from(blob, start)[1]
    return start + _HEAD.size + length + _TAIL.size <= len(blob)


def _torn_key(data: bytes, offset: int) -> tuple[str, str] | None:
    """The step and key of the torn record at ``offset`` (the end of ``data``), or None
    when it was cut before its names."""
    if offset + _FRAME.size > len(data) or data[offset:offset + 4] != MAGIC:
        return None
    step_length, key_length = _FRAME.unpack_from(data, offset)[5:]
    names = offset + _FRAME.size
    if names + step_length + key_length > len(data):
        return None
    try:
        return (bytes(data[names:names + step_length]).decode(),
                bytes(data[names + step_length:names + step_length + key_length]).decode())
    except UnicodeDecodeError:
        return None


_HEAD_SIZE, _TAIL_SIZE = _HEAD.size, _TAIL.size  # (as constants: _record_of reads them)


def _record_of(data: bytes, where: tuple[str, str], needle: bytes, pack: str) -> Record | None:
    """The record at the start of ``data`` if its framing, end and digest hold and it is
    of ``where`` (its names are ``needle``), else None: :func:`_whole_record` for a key
    known, with no names decoded. (Every hit of a fresh process checks one: its frame is
    read in one unpack, its bounds checked by the unpacks themselves, its names compared
    in place, which also holds it to at least its fixed part.)"""
    try:
        magic, length, digest, stamp, kind, _, _ = _FRAME.unpack_from(data)
        end = _HEAD_SIZE + length  # (where its tail starts)
        tail = _TAIL.unpack_from(data, end)  # (past the data: struct.error)
    except struct.error:
        return None
    if (magic != MAGIC or tail != (end + _TAIL_SIZE, END)
            or not data.startswith(needle, _NAMES_AT, end)
            or xxhash.xxh3_64_intdigest(data[_HEAD_SIZE:end]) != digest):
        return None
    return Record(where[0], where[1], kind, stamp, data[_NAMES_AT + len(needle):end], pack)


def _whole_record(data: bytes, offset: int, pack: str) -> Record | None:
    """The record at ``offset`` of ``data`` if its framing, end and digest hold, else
    None (whatever bytes are there)."""
    if offset < 0 or offset + _FRAME.size > len(data):
        return None
    magic, length, digest = _HEAD.unpack_from(data, offset)
    after = offset + _HEAD.size + length + _TAIL.size
    if magic != MAGIC or length < _FIXED.size or after > len(data):
        return None
    if _TAIL.unpack_from(data, after - _TAIL.size) != (after - offset, END):
        return None
    rest = data[offset + _HEAD.size:after - _TAIL.size]
    if xxhash.xxh3_64_intdigest(rest) != digest:
        return None
    return _record(rest, pack)


def _tail(path: str, done: int) -> bytes:
    """What a pack gained past byte ``done``."""
    with open(path, "rb") as handle:
        handle.seek(done)
        return handle.read()
