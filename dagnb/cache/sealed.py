"""A pack's sealed index: the last keys-file entry of each key, sorted, found in two reads.

A fresh process's first hit used to read a pack's whole keys file (36 bytes a record: a
32 KB read for 900 entries, most of that first hit's cost). A sealed index,
``<name>.pack.idx``, is written whole (a temporary file, then a rename) from a keys
file whose chain holds, by compaction and by a writer letting go of a pack that grew
by :data:`SEAL_FROM` entries and a quarter since it was sealed::

    "DGIX" | version u16 | bits u16 | xxh3_64 of the pack's name u64 |
    covered u64 | count u32 | entries u32 (of the keys file it was made of)
    fanout: 2**bits u32, entry i: how many entries' digests start with a number
            (their first ``bits`` bits) of at most i
    entries: count x the keys file's entry (xxh3_128 of the record's step and key,
             offset u64, length u32, chain u64), one per key, the last of each,
             sorted by digest

A reader uses it only while the pack holds exactly ``covered`` bytes (a pack written to
since is looked up in its keys file, as before), reads its head and fanout with one
``pread``, then the few entries of the key's bucket with another. What it points to is
checked as a keys file's entry is (framing, digest, step and key), so damage can cost a
lookup (a miss, or the packs walked) but never serves a record that is not the key's;
the index is never torn (it is renamed into place whole) and covers what its keys file
covered when its chain held.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import struct
import uuid
from collections.abc import Callable

__all__ = [
    "SEALED", "SEAL_FROM", "SealedIndex", "sealed_entries", "should_seal", "write_sealed",
]

SEALED = ".idx"  # a pack's sealed index: <name>.pack.idx
SEAL_FROM = 256  # a keys file of fewer entries (9 KB) costs a fresh process little to read
_HEAD = struct.Struct("<4sHHQQII")
_MAGIC, _VERSION = b"DGIX", 1
_FANOUT = struct.Struct("<I")
_PAIR = struct.Struct("<II")
_PAGE = 4096  # the first read: the head, and the whole fanout of an index of up to ~4,000
#               entries (bits <= 9)
_FIRST = operator.itemgetter(0)


def should_seal(entries: int, sealed: int) -> bool:
    """Whether a pack whose keys file has ``entries`` entries, and whose sealed index
    covers ``sealed`` of them, is worth sealing again: a writer letting go of it pays a
    sort of every entry, so only after it grew by a quarter (each entry then costs a
    constant share of the seals, however often the pack is let go of)."""
    return entries - sealed >= max(SEAL_FROM, sealed // 4)


def _bits(count: int) -> int:
    """Fanout bits for ``count`` entries: about 4 entries a bucket (a read of ~150 bytes)."""
    return max(4, min(24, (max(count, 1) // 4).bit_length()))


def write_sealed(
    path: str, name_digest: int, blob: bytes | memoryview, head_size: int,
    entry: struct.Struct, covered: int,
) -> None:
    """Seal pack ``path``: ``blob`` is its whole keys file (chain checked by the caller),
    of ``head_size`` bytes of head then entries of ``entry``, covering ``covered`` bytes
    of the pack. Put in place with a rename; a failure leaves no index (nor a stale
    temporary file, where it can be removed)."""
    rows = list(entry.iter_unpack(memoryview(blob)[head_size:]))
    last = sorted(dict(zip(map(_FIRST, rows), rows, strict=True)).values())  # one per key
    bits = _bits(len(last))
    shift, counts = 128 - bits, [0] * (1 << bits)
    for digest in map(_FIRST, last):
        counts[int.from_bytes(digest, "big") >> shift] += 1
    fanout = struct.pack(f"<{1 << bits}I", *itertools.accumulate(counts))
    data = b"".join([
        _HEAD.pack(_MAGIC, _VERSION, bits, name_digest, covered, len(last), len(rows)),
        fanout,
        b"".join(itertools.starmap(entry.pack, last)),
    ])
    temporary = f"{path}{SEALED}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.rename(temporary, path + SEALED)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def sealed_entries(path: str, name_digest: int) -> int:
    """How many keys-file entries the sealed index of pack ``path`` was made of (0: none,
    or not this pack's): a writer seals again once the pack grew enough past them."""
    try:
        with open(path + SEALED, "rb") as handle:
            page = handle.read(_HEAD.size)
    except OSError:
        return 0
    if len(page) < _HEAD.size:
        return 0
    magic, version, _, digest, _, _, entries = _HEAD.unpack(page)
    return entries if (magic, version, digest) == (_MAGIC, _VERSION, name_digest) else 0


class SealedIndex:
    """A pack's sealed index, open (see the module docstring)."""

    __slots__ = ("bits", "count", "descriptor", "entry_size", "page")

    def __init__(self, descriptor: int, page: bytes, bits: int, count: int, entry_size: int):
        self.descriptor, self.page, self.bits, self.count = descriptor, page, bits, count
        self.entry_size = entry_size

    @classmethod
    def open(cls, path: str, name_digest: int, size: int, entry_size: int) -> SealedIndex | None:
        """The sealed index of pack ``path`` if there is one for its ``size`` bytes now
        and its head holds (of this pack, whole as far as one read shows); else None."""
        try:
            descriptor = os.open(path + SEALED, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            page = os.pread(descriptor, _PAGE, 0)
            found = _checked_head(page, name_digest, size, entry_size)
        except OSError:
            found = None
        if found is None:
            os.close(descriptor)
            return None
        return cls(descriptor, page, *found, entry_size)

    def find(self, digest: bytes) -> bytes | None:
        """The entry of ``digest`` (its keys file's bytes), or None; ValueError when the
        index turns out damaged (a bucket out of bounds, or cut short)."""
        bucket = int.from_bytes(digest[:4], "big") >> (32 - self.bits)
        start, end = self._bounds(bucket)
        if not 0 <= start <= end <= self.count:
            raise ValueError("a sealed index's fanout is out of bounds")
        size = self.entry_size
        first = _HEAD.size + _FANOUT.size * (1 << self.bits) + start * size
        data = os.pread(self.descriptor, (end - start) * size, first)
        if len(data) != (end - start) * size:
            raise ValueError("a sealed index is cut short")
        for at in range(0, len(data), size):
            if data[at:at + 16] == digest:
                return data[at:at + size]
        return None

    def entries(self) -> tuple[bytes, int]:
        """The whole index, and where its entries start; ValueError when it is cut short
        (or longer than its head says)."""
        start = _HEAD.size + _FANOUT.size * (1 << self.bits)
        total = start + self.count * self.entry_size
        data = os.pread(self.descriptor, total + 1, 0)
        if len(data) != total:
            raise ValueError("a sealed index is not as long as its head says")
        return data, start

    def _bounds(self, bucket: int) -> tuple[int, int]:
        """Where bucket ``bucket``'s entries start and end (entry numbers)."""
        at = _HEAD.size + _FANOUT.size * (bucket - 1)
        if bucket == 0:
            return 0, _FANOUT.unpack_from(self.page, _HEAD.size)[0]
        if at + _PAIR.size <= len(self.page):
            return _PAIR.unpack_from(self.page, at)  # type: ignore[return-value]
        pair = os.pread(self.descriptor, _PAIR.size, at)
        if len(pair) != _PAIR.size:
            raise ValueError("a sealed index is cut short")
        return _PAIR.unpack(pair)  # type: ignore[return-value]

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


def _checked_head(
    page: bytes, name_digest: int, size: int, entry_size: int
) -> tuple[int, int] | None:
    """``(bits, count)`` of an index whose first page is ``page``, if it is of this pack
    (its name), covers the pack's ``size`` bytes exactly and is as long as its head says
    (when the page holds all of it); else None."""
    if len(page) < _HEAD.size:
        return None
    magic, version, bits, digest, covered, count, _ = _HEAD.unpack_from(page)
    if (magic, version, digest, covered) != (_MAGIC, _VERSION, name_digest, size):
        return None
    if not 1 <= bits <= 24:
        return None
    total = _HEAD.size + _FANOUT.size * (1 << bits) + count * entry_size
    if len(page) < _PAGE and len(page) != total:
        return None
    return bits, count
