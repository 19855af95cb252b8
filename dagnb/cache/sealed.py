"""A pack's sealed index: the last keys-file entry of each key, sorted, found in two reads.

A fresh process's first hit used to read a pack's whole keys file (36 bytes a record: a
32 KB read for 900 entries, 720 KB for 20,000). A sealed index, ``<name>.pack.idx``, is
written from a keys file whose chain holds, by compaction and by a writer letting go of
a pack that grew by :data:`SEAL_FROM` entries and a quarter since it was sealed
(:func:`should_seal`)::

    "DGIX" | version u16 | bits u16 | xxh3_64 of the pack's name u64 | covered u64 |
    count u32 | entries u32 (of the keys file it was made of) |
    last u64 | last head 16 bytes (where the pack's last record starts, and its first
    16 bytes: magic, length, digest) | xxh3_64 of everything after the head u64 |
    xxh3_64 of the head before this u64
    fanout: 2**bits x (u32: how many entries' digests start with a number, their first
            ``bits`` bits, of at most i | u64: xxh3_64 of bucket i's entries, seeded i)
    entries: count x the keys file's entry (xxh3_128 of the record's step and key,
             offset u64, length u32, chain u64), one per key, the last of each,
             sorted by digest

A reader uses it while the pack holds its ``covered`` bytes, and at most
:data:`TAIL_WALK` bytes more (records written since: walked, as past a keys file), and
the record at ``last`` starts with the bytes the head names (a pack cut short by a power
loss and grown back is not the pack it was made of). It reads the head (checked against
its digest) and the fanout with one ``pread`` (two past 335 buckets, about 1,000
entries), then the key's bucket with another, checked against its digest: damage
anywhere in the index is found (the caller then reads the packs whole), not taken for a
key the pack does not hold, which would let another pack's older record win. A small
index (:data:`_READ_WHOLE_UP_TO`) is read whole at its second lookup, checked against the
head's digest of everything after it, and searched in place from then on (no read a
lookup); a large one when the caller makes a dict of it. What an entry points to is then
checked as a keys file's entry is (framing, digest, step and key). The file is synced
before it is renamed into place.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import struct
import uuid
from collections.abc import Callable

import xxhash

__all__ = [
    "SEALED", "SEAL_FROM", "SealedIndex", "is_seal_temporary", "may_be_sealed",
    "sealed_entries", "should_seal", "write_sealed",
]

READ_ONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)  # how packs and their indexes are opened
SEALED = ".idx"  # a pack's sealed index: <name>.pack.idx
SEAL_FROM = 256  # a keys file of fewer entries (9 KB) costs a fresh process little to read
_HEAD = struct.Struct("<4sHHQQIIQ16sQQ")
_MAGIC, _VERSION = b"DGIX", 3
_MAGIC_VERSION = (_MAGIC, _VERSION)  # a head's first two fields
_HEAD_SIZE = _HEAD.size
_HEAD_END = _HEAD_SIZE - 8  # what the head's own digest is of
_LAST_HEAD = 16  # the bytes of the pack's last record a head keeps (its "16s")
TAIL_WALK = 64 * 1024  # a pack grown by more since it was sealed: its keys file is read
_BUCKET = struct.Struct("<IQ")  # entries up to and in this bucket, digest of its entries
_BUCKET_SIZE = _BUCKET.size
_PAIR = struct.Struct("<IQIQ")  # the bucket before, and this one
_PAIRS_AT = _HEAD.size - _BUCKET.size  # bucket i's pair starts at _PAIRS_AT + i * _BUCKET_SIZE
_PAGE = 4096  # the first read: the head, and the whole fanout up to 335 buckets (bits <= 8:
#               fewer than 1,024 entries); a larger index reads a bucket's bounds apart
_BUCKET_MOST = 4096  # entries a bucket can hold (2 to 4 on average): more is damage, not a
#                      read of that many
_FIRST = operator.itemgetter(0)
_READ_WHOLE_UP_TO = 64 * 1024  # an index of up to ~1,700 entries is read whole after
_BUCKET_READS = 1  #             this many lookups by bucket (each a pread and a digest):
#   the read costs a fresh process ~20 us (its new memory), then each lookup ~1.5 us less.
#   Measured on 900 entries, the 49 distinct hits after a first: ~5% faster than never
#   reading it whole, ~2% than after 8 bucket reads; a first hit still reads its bucket.


def should_seal(entries: int, sealed: int) -> bool:
    """Whether a pack whose keys file has ``entries`` entries, and whose sealed index
    was made of ``sealed`` of them, is worth sealing again: a writer letting go of it
    pays a sort of every entry, so only after it grew by a quarter (each entry then
    costs a constant share of the seals, however often the pack is let go of)."""
    return entries - sealed >= max(SEAL_FROM, sealed // 4)


def may_be_sealed(size: int, smallest_record: int) -> bool:
    """Whether a pack of ``size`` bytes may hold enough records to have been sealed (a
    smaller one is not looked for an index: a failed ``open`` costs a first hit 4 us)."""
    return size >= SEAL_FROM * smallest_record


def _bits(count: int) -> int:
    """Fanout bits for ``count`` entries: 2 to 4 entries a bucket (a read of ~100 bytes)."""
    return max(4, min(24, (max(count, 1) // 4).bit_length()))


def is_seal_temporary(name: str) -> bool:
    """Whether file ``name`` of a packs folder is a sealed index being written (or left
    by a crash while it was)."""
    return f"{SEALED}." in name and name.endswith(".tmp")


def write_sealed(
    path: str, name_digest: int, blob: bytes | memoryview, head_size: int,
    entry: struct.Struct, covered: int, last_head: bytes,
) -> None:
    """Seal pack ``path``: ``blob`` is its whole keys file (chain checked by the caller),
    of ``head_size`` bytes of head then entries of ``entry``, covering ``covered`` bytes
    of the pack, whose last record starts with ``last_head``. Synced, then put in place
    with a rename (an index there before stays if this fails: it no longer matches)."""
    rows = list(entry.iter_unpack(memoryview(blob)[head_size:]))
    last = sorted(dict(zip(map(_FIRST, rows), rows, strict=True)).values())  # one per key
    bits = _bits(len(last))
    body = b"".join([_fanout(last, bits, entry), *itertools.starmap(entry.pack, last)])
    fields = _HEAD.pack(_MAGIC, _VERSION, bits, name_digest, covered, len(last), len(rows),
                        rows[-1][1], last_head, xxhash.xxh3_64_intdigest(body), 0)[:-8]
    head = fields + xxhash.xxh3_64_intdigest(fields).to_bytes(8, "little")
    temporary = f"{path}{SEALED}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(head + body)
            os.fsync(handle.fileno())  # (a power loss then leaves it whole or absent)
        os.rename(temporary, path + SEALED)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _fanout(last: list[tuple], bits: int, entry: struct.Struct) -> bytes:
    """The fanout of the sorted ``last`` entries: each bucket's end and digest."""
    shift, buckets = 128 - bits, [[] for _ in range(1 << bits)]
    for row in last:
        buckets[int.from_bytes(row[0], "big") >> shift].append(row)
    out, end = [], 0
    for number, rows in enumerate(buckets):
        end += len(rows)
        data = b"".join(itertools.starmap(entry.pack, rows))
        out.append(_BUCKET.pack(end, xxhash.xxh3_64_intdigest(data, seed=number)))
    return b"".join(out)


def sealed_entries(path: str, name_digest: int) -> int:
    """How many keys-file entries the sealed index of pack ``path`` was made of (0: none,
    not this pack's, or damaged anywhere: read whole and checked, as a writer adopting
    the pack reads its keys file whole): a writer seals again once the pack grew enough
    past them, and at once when the index is damaged."""
    try:
        with open(path + SEALED, "rb") as handle:
            data = handle.read()
    except OSError:
        return 0
    if len(data) < _HEAD.size or not _head_digest_holds(data):
        return 0
    magic, version, _, digest, _, _, entries, *_ = _HEAD.unpack_from(data)
    if (magic, version, digest) != (_MAGIC, _VERSION, name_digest):
        return 0
    return entries if _body_digest_holds(data) else 0


def _body_digest_holds(data: bytes) -> bool:
    """Whether a whole index ``data`` (its head read already) matches the digest its
    head gives of everything after it."""
    return xxhash.xxh3_64_intdigest(memoryview(data)[_HEAD.size:]) == _HEAD.unpack_from(data)[-2]


def _head_digest_holds(page: bytes) -> bool:
    """Whether the head at the start of ``page`` matches its own digest."""
    end = _HEAD.size - 8
    return xxhash.xxh3_64_intdigest(page[:end]) == int.from_bytes(page[end:_HEAD.size], "little")


class SealedIndex:
    """A pack's sealed index, open (see the module docstring)."""

    __slots__ = ("bits", "count", "covered", "descriptor", "entries_start", "entry_size",
                 "page", "reads", "shift", "whole")

    def __init__(self, descriptor: int, page: bytes, entry_size: int,
                 fields: tuple | None = None) -> None:
        if fields is None:  # (open() passes its head, unpacked and checked once)
            fields = _HEAD.unpack_from(page)
        self.descriptor, self.page, self.entry_size = descriptor, page, entry_size
        self.whole = False  # page holds the whole index, checked (see load)
        bits = self.bits = fields[2]
        self.covered, self.count = fields[4], fields[5]
        # where the entries start, after the head and the fanout (each find needs it)
        self.entries_start = _HEAD_SIZE + _BUCKET_SIZE * (1 << bits)
        self.shift = 32 - bits  # a digest's first 4 bytes, shifted by it: its bucket
        self.reads = _BUCKET_READS  # lookups by bucket left before a small index is read
        #                             whole (see find)

    @classmethod
    def open(cls, path: str, name_digest: int, size: int, entry_size: int,
             pack: int | None = None) -> SealedIndex | None:
        """The sealed index of pack ``path`` (``size`` bytes now) if its head holds (its
        digest; of this pack; as long as it says where one read shows it whole), it
        covers all of the pack but at most :data:`TAIL_WALK` bytes and, given the pack
        open as descriptor ``pack``, the record it names last is there (one ``pread``);
        else None. The caller walks what it does not cover. (The head is unpacked once
        and checked here, inline: a fresh process's first hit passes here once a pack.)"""
        try:
            descriptor = os.open(path + SEALED, READ_ONLY)
        except OSError:
            return None
        try:
            page = os.pread(descriptor, _PAGE, 0)
            if len(page) >= _HEAD_SIZE:
                fields = _HEAD.unpack_from(page)
                _, _, bits, digest, covered, count, _, last, head, _, head_digest = fields
                # as long as it says, when the page holds all of it (a u16 of bits: no
                # shift too large to make)
                total = _HEAD_SIZE + _BUCKET_SIZE * (1 << bits) + count * entry_size
                if (fields[:2] == _MAGIC_VERSION and digest == name_digest and 1 <= bits <= 24
                        and covered <= size <= covered + TAIL_WALK
                        and xxhash.xxh3_64_intdigest(page[:_HEAD_END]) == head_digest
                        and len(page) == (total if total < _PAGE else _PAGE)
                        and (pack is None or (last <= covered - _LAST_HEAD
                                              and os.pread(pack, _LAST_HEAD, last) == head))):
                    return cls(descriptor, page, entry_size, fields)
        except OSError:
            pass
        os.close(descriptor)
        return None

    def find(self, digest: bytes) -> bytes | None:
        """The entry of ``digest`` (its keys file's bytes), or None; ValueError when the
        index turns out damaged (its bucket's digest, its bounds, or the whole index's
        digest when it is read whole, do not hold). The first lookups read the key's
        bucket; a small index is then read whole (:attr:`reads`), a large one when the
        caller makes a dict of it."""
        bucket = int.from_bytes(digest[:4], "big") >> self.shift
        if self.whole:  # (checked whole: the bucket is searched in place, no bounds
            page = self.page  # checked: a search starts among the entries, and aligned
            if bucket:  #       entries of the digest are the key's, wherever they are)
                start, _, end, _ = _PAIR.unpack_from(page, _PAIRS_AT + _BUCKET_SIZE * bucket)
            else:
                start, end = 0, _BUCKET.unpack_from(page, _HEAD_SIZE)[0]
            size, base = self.entry_size, self.entries_start
            end = base + end * size
            at = page.find(digest, base + start * size, end)
            while at >= 0:  # (a digest met across two entries is not one)
                if (at - base) % size == 0:
                    return page[at:at + size]
                at = page.find(digest, at + 1, end)
            return None
        if not self.reads:  # (a large index is read whole when the caller makes a dict
            #                   of it, well before ``count`` more lookups)
            if self.entries_start + self.count * self.entry_size <= _READ_WHOLE_UP_TO:
                self.load()
                return self.find(digest)
            self.reads = self.count
        self.reads -= 1
        at = _PAIRS_AT + _BUCKET_SIZE * bucket
        if bucket and at + _PAIR.size <= len(self.page):  # (the usual case inline: the
            start, _, end, check = _PAIR.unpack_from(self.page, at)  # bounds in the page)
        else:
            start, end, check = self._bounds(bucket)
        if not (0 <= start <= end <= self.count and end - start <= _BUCKET_MOST):  # (no min():
            #                                      a builtin call costs a fresh process's hit 1k)
            raise ValueError("a sealed index's fanout is out of bounds")
        size = self.entry_size
        data = os.pread(self.descriptor, (end - start) * size, self.entries_start + start * size)
        if (len(data) != (end - start) * size
                or xxhash.xxh3_64_intdigest(data, seed=bucket) != check):
            raise ValueError("a bucket of a sealed index does not match its digest")
        at = data.find(digest)  # (a search in C: a bucket's 2 to 4 entries are not looped
        while at >= 0:  #           over; a digest met across two entries is not one)
            if at % size == 0:
                return data[at:at + size]
            at = data.find(digest, at + 1)
        return None

    def _bounds(self, bucket: int) -> tuple[int, int, int]:
        """Where bucket ``bucket``'s entries start and end (entry numbers), and the
        digest of its entries."""
        if bucket == 0:
            end, check = _BUCKET.unpack_from(self.page, _HEAD.size)
            return 0, end, check
        at = _HEAD.size + _BUCKET.size * (bucket - 1)
        if at + _PAIR.size <= len(self.page):
            start, _, end, check = _PAIR.unpack_from(self.page, at)
            return start, end, check
        pair = os.pread(self.descriptor, _PAIR.size, at)
        if len(pair) != _PAIR.size:
            raise ValueError("a sealed index is cut short")
        start, _, end, check = _PAIR.unpack(pair)
        return start, end, check

    def load(self) -> None:
        """Read the whole index (one ``pread``, checked against its digest) into
        :attr:`page`, and look keys up there from now on, with no more reads.
        ValueError when the digest does not hold (or the index is not as long as its
        head says)."""
        if self.whole:
            return
        total = self.entries_start + self.count * self.entry_size
        data = os.pread(self.descriptor, total + 1, 0)
        if len(data) != total or not _body_digest_holds(data):
            raise ValueError("a sealed index does not match its digest")
        self.page, self.whole = data, True
        self.close()

    def close(self) -> None:
        if self.descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(self.descriptor)
            self.descriptor = -1

    def __del__(self, close: Callable[[int], None] = os.close) -> None:
        # (``close`` bound now: at exit the module's globals may be gone already)
        if self.descriptor >= 0:
            try:  # noqa: SIM105
                close(self.descriptor)
            except OSError:
                pass
            self.descriptor = -1
