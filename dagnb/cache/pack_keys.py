"""Where a pack's records are, by key: its keys file (searched, then made a dict of)
and its sealed index (:mod:`dagnb.cache.sealed`), as
:class:`~dagnb.cache.pack.PackIndex` reads them and a writer makes them."""

from __future__ import annotations

import mmap
import operator
import os
import struct
from collections.abc import Callable

import xxhash

from dagnb.cache.pack_records import _FRAME, _HEAD, _TAIL
from dagnb.cache.sealed import READ_ONLY, SEAL_FROM, SEALED, SealedIndex, write_sealed

KEYS = ".keys"  # a pack's keys file: <name>.pack.keys
_KEYS_HEAD = struct.Struct("<4sIQ")  # "DGKY", the entry size, xxh3_64 of the pack's name
_KEY = struct.Struct("<16sQIQ")  # xxh3_128 of the names, offset, length, chain
_KEY_SIZE, _KEYS_HEAD_SIZE = _KEY.size, _KEYS_HEAD.size
_CHAIN_AT = _KEY.size - 8
_KEYS_HEAD_SIZE, _KEY_SIZE = _KEYS_HEAD.size, _KEY.size  # (as constants: every hit reads them)
_DIGEST = struct.Struct(f"<16s{_KEY.size - 16}x")  # an entry's digest alone
_FIRST = operator.itemgetter(0)
_DICT_AFTER = 16  # a sealed index makes a dict after SEARCH_KEYS lookups, or one per
#                  this many of its entries if more: a dict costs 0.075 us an entry warm
#                  and twice that in a fresh process (112 us at 900 entries, 1.5 ms at
#                  20,000), a lookup in two reads 2 us more than in a dict, so it waits
#                  until the reads have cost about what the dict costs
SEARCH_KEYS = 8  # a fresh process finds keys in keys files with rfind this many times,
#                  then makes dicts of them (costs 28 to 58 searches of 100 to 10,000
#                  keys, then each lookup is 15 times cheaper: a process that looked up 8
#                  keys looks up more; 32 made 49 distinct hits a tenth slower)


class _Keys:
    """A pack's keys file, read whole (see :class:`~dagnb.cache.pack_writer.PackWriter`):
    where each record of the pack's first ``covered`` bytes starts, by the xxh3_128 of
    its step and key.

    Looking a key up costs a ``bytes.rfind`` over the file (about 1.5 µs for 500
    records), and a dict lookup once :meth:`index` made one. The records it points to
    are checked (framing, digest, step and key) before they are used.
    """

    __slots__ = ("blob", "covered", "descriptor", "found", "mapped", "path")

    def __init__(self, blob: bytes, covered: int, path: str,
                 descriptor: int | None = None) -> None:
        self.blob, self.covered, self.path = blob, covered, path
        self.found: dict[bytes, int] | None = None  # digest -> where its entry starts
        self.mapped: mmap.mmap | bytes | None = None  # the pack, once asked for (data())
        self.descriptor = descriptor  # the pack's, open (see open())

    def offset(self, digest: bytes) -> tuple[int, int] | None:
        """Where the last record whose names hash to ``digest`` starts, and its
        length; or None."""
        if self.found is not None:
            at = self.found.get(digest)
            return None if at is None else _KEY.unpack_from(self.blob, at)[1:3]  # type: ignore[return-value]
        blob, start, size = self.blob, _KEYS_HEAD.size, _KEY.size
        end = len(blob)
        while (at := blob.rfind(digest, start, end)) >= 0:
            if (at - start) % size == 0:
                return _KEY.unpack_from(blob, at)[1:3]  # type: ignore[return-value]
            end = at + len(digest) - 1
        return None

    def bytes_of(self, digest: bytes) -> bytes | None:
        """The bytes :meth:`read` gives of the record :meth:`offset` names for
        ``digest`` (b"" when they cannot be read), or None when it names none.
        Once the dict is made, its work is done here (no offset, read or data call, no
        min or max: every hit of a fresh process's run passes here)."""
        found = self.found
        if found is None:  # (offset's and read's work inline: no call, as below)
            blob, end = self.blob, len(self.blob)
            while (at := blob.rfind(digest, _KEYS_HEAD_SIZE, end)) >= 0:
                if (at - _KEYS_HEAD_SIZE) % _KEY_SIZE == 0:
                    break
                end = at + len(digest) - 1
            else:
                return None
            offset, length = _KEY.unpack_from(blob, at)[1:3]
            room = self.covered - offset  # (min and max only when needed, as in read)
            if not 0 <= length <= room:
                length = max(0, min(length, room))
            try:
                return os.pread(self.descriptor, length, offset)  # type: ignore[arg-type]
            except (OSError, OverflowError):  # (an offset past what pread takes)
                return b""
        at = found.get(digest)
        if at is None:
            return None
        offset, length = _KEY.unpack_from(self.blob, at)[1:3]
        end, covered = offset + length, self.covered
        if end > covered:  # (read's bounds: no more than the file covers)
            end = covered if covered > offset else offset
        try:
            mapped = self.mapped
            return (self.data() if mapped is None else mapped)[offset:end]
        except (OSError, OverflowError):
            return b""

    def entries(self) -> int:
        """How many entries the file holds (what a walk of the pack takes in)."""
        return (len(self.blob) - _KEYS_HEAD_SIZE) // _KEY_SIZE

    def index(self) -> None:
        """Make a dict of the file (the last record of a key wins, as with rfind), with
        no Python loop: a fresh process makes it once, before any loop is specialized."""
        if self.found is None:
            digests = map(_FIRST, _DIGEST.iter_unpack(memoryview(self.blob)[_KEYS_HEAD.size:]))
            starts = range(_KEYS_HEAD.size, len(self.blob), _KEY.size)
            self.found = dict(zip(digests, starts, strict=True))

    def open(self) -> None:
        """Open the pack now, as its keys file is read: what is read of it later is of
        this file even if a compaction removes it meanwhile (as a mapping would be)."""
        if self.descriptor is None:
            self.descriptor = os.open(self.path, READ_ONLY)

    def read(self, offset: int, length: int) -> bytes:
        """The ``length`` bytes of the pack at ``offset`` (no more than the file covers):
        one ``pread`` for the first few keys; once a process looked up enough to make a
        dict of the keys (:meth:`index`), a slice of the pack mapped (mapping costs some
        20 ``pread``: it pays only for many). The pack was opened when its keys file was
        taken in (:meth:`open`)."""
        if self.found is not None:
            return self.data()[offset:max(offset, min(offset + length, self.covered))]
        room = self.covered - offset  # (min and max only when needed: each builtin call
        if not 0 <= length <= room:  #   costs a fresh process's hit about 1k instructions)
            length = max(0, min(length, room))
        return os.pread(self.descriptor, length, offset)  # type: ignore[arg-type]

    def tail(self, size: int) -> bytes:
        """The pack's bytes past what the keys file covers, up to byte ``size``."""
        self.open()
        return os.pread(self.descriptor, size - self.covered, self.covered)  # type: ignore[arg-type]

    def data(self) -> mmap.mmap | bytes:
        """The pack, mapped on first use (read, where the file system cannot map)."""
        if self.mapped is None:
            self.open()
            try:
                self.mapped = mmap.mmap(self.descriptor, 0, access=mmap.ACCESS_READ)  # type: ignore[arg-type]
            except (OSError, ValueError):  # a file system that cannot map (some FUSE and 9p
                # mounts), or an empty pack: read once (only ever appended to: it holds)
                self.mapped = os.pread(self.descriptor, os.fstat(self.descriptor).st_size, 0)  # type: ignore[arg-type]
        return self.mapped

    def __del__(self, close: Callable[[int], None] = os.close) -> None:
        # (``close`` bound now: at exit the module's globals may be gone already)
        if self.descriptor is not None:
            try:  # noqa: SIM105
                close(self.descriptor)
            except OSError:
                pass
            self.descriptor = None


class _SealedKeys(_Keys):
    """A pack found through its sealed index (:mod:`dagnb.cache.sealed`): a key's entry
    in two small reads rather than the whole keys file read."""

    __slots__ = ("sealed", "searches")

    def __init__(self, sealed: SealedIndex, covered: int, path: str, descriptor: int) -> None:
        # (_Keys.__init__'s fields set here: a fresh process's first hit makes one)
        self.blob, self.covered, self.path, self.sealed = b"", covered, path, sealed
        self.descriptor = descriptor  # the pack's, open
        self.found = self.mapped = None
        # lookups left before the one that makes the dict (counted down: each hit of a
        # fresh process passes here)
        many = sealed.count // _DICT_AFTER  # (max(), inline: a builtin call costs more)
        self.searches = (many if many > SEARCH_KEYS else SEARCH_KEYS) - 1

    def offset(self, digest: bytes) -> tuple[int, int] | None:
        """As :meth:`_Keys.offset`; ValueError (or OSError) when the index is damaged.
        Lookups read the key's bucket; the :data:`SEARCH_KEYS`-th of them (or, for a
        large index, the one that makes one per :data:`_DICT_AFTER` entries) reads the
        index whole and makes a dict of it, as of a keys file."""
        if self.found is None:
            if self.searches > 0:
                self.searches -= 1
                found = self.sealed.find(digest)
                return None if found is None else _KEY.unpack_from(found)[1:3]  # type: ignore[return-value]
            self._make_dict()
        return super().offset(digest)

    def bytes_of(self, digest: bytes) -> bytes | None:
        """As :meth:`_Keys.bytes_of`; while the index is searched, found and read here
        (offset's and read's work inline: a fresh process's first hit passes here)."""
        if self.found is not None or self.searches <= 0:
            if self.found is None:  # (the lookup that makes the dict: see offset)
                self._make_dict()
            return _Keys.bytes_of(self, digest)  # (not super(): one object less a hit)
        self.searches -= 1
        entry = self.sealed.find(digest)
        if entry is None:
            return None
        offset, length = _KEY.unpack(entry)[1:3]
        room = self.covered - offset
        if not 0 <= length <= room:
            length = max(0, min(length, room))
        try:
            return os.pread(self.descriptor, length, offset)  # type: ignore[arg-type]
        except (OSError, OverflowError):
            return b""

    def entries(self) -> int:
        return self.sealed.count  # (its blob is empty until the dict is made)

    def index(self) -> None:
        """Nothing: searching the index costs little, the dict waits (see offset)."""

    def _make_dict(self) -> None:
        """A dict of the index's entries, read whole (checked against its digest: a
        damaged index raises ValueError, and the caller walks the packs)."""
        self.sealed.load()
        self.blob, start = self.sealed.page, self.sealed.entries_start
        digests = map(_FIRST, _DIGEST.iter_unpack(memoryview(self.blob)[start:]))
        self.found = dict(zip(digests, range(start, len(self.blob), _KEY.size), strict=True))


def _opened_with_keys(path: str, name: str, may_be_sealed: bool = True,
                      ) -> tuple[int, _Keys | None]:
    """Pack ``name`` opened (its size by ``lseek``: its path walked once, not twice, and
    no stat result made: a fresh process's first hit passes here) and where it says its
    keys are, which then own the descriptor: its sealed index (looked for if it
    ``may_be_sealed``) if it covers those bytes (but a short tail, walked) and the
    record it names last is there (see :meth:`SealedIndex.open`), else its keys file
    (:func:`_read_keys`); ``(size, None)`` when neither can be trusted (the pack closed
    again). (Reads of it are ``pread``: the offset left at its end moves none of them.)"""
    descriptor = os.open(path, READ_ONLY)
    keys = None
    try:
        try:
            size = os.lseek(descriptor, 0, os.SEEK_END)
        except OSError:  # (a file one cannot seek in, on some odd mount: its fstat)
            size = os.fstat(descriptor).st_size
        if may_be_sealed and size >= _SEALED_FROM:  # (_name_digest, inline)
            sealed = SealedIndex.open(path, xxhash.xxh3_64_intdigest(name.encode()), size,
                                      _KEY_SIZE, descriptor)
            if sealed is not None:
                keys = _SealedKeys(sealed, sealed.covered, path, descriptor)
        if keys is None and size:
            keys = _read_keys(path, name, size, descriptor)
    finally:
        if keys is None:
            os.close(descriptor)
    return size, keys


_SEALED_FROM = SEAL_FROM * (_FRAME.size + _TAIL.size)  # bytes: may_be_sealed's bound


def _name_digest(pack: str) -> int:
    """What a keys file's head and a sealed index's say of the pack they are of."""
    return xxhash.xxh3_64_intdigest(pack.encode())


def _keys_head(pack: str) -> bytes:
    """The start of a keys file: it names the pack it is of (the pack's file name)."""
    return _KEYS_HEAD.pack(b"DGKY", _KEY.size, _name_digest(pack))


def _read_keys(path: str, name: str, size: int, pack: int | None = None) -> _Keys | None:
    """The keys file of pack ``name`` (``size`` bytes now, open as descriptor ``pack``
    if given, which the keys returned then own), or None if there is none or it cannot
    be trusted: not of this pack, its last whole entry's chain (the xxh3_64 of
    everything before it) does not hold, or it covers more than the pack holds. A torn
    last entry is left out."""
    try:
        blob = _read_whole(path + KEYS)
    except OSError:
        return None
    # (_keys_head, inline; a shorter blob's start is shorter than a head)
    if blob[:_KEYS_HEAD_SIZE] != _KEYS_HEAD.pack(
            b"DGKY", _KEY_SIZE, xxhash.xxh3_64_intdigest(name.encode())):
        return None
    whole = len(blob) - (len(blob) - _KEYS_HEAD_SIZE) % _KEY_SIZE
    if whole < len(blob):
        blob = blob[:whole]
    covered = 0
    if whole > _KEYS_HEAD_SIZE:
        _, offset, length, chain = _KEY.unpack_from(blob, whole - _KEY_SIZE)
        if xxhash.xxh3_64_intdigest(memoryview(blob)[:whole - 8]) != chain:
            return None
        covered = offset + length
    if covered > size:
        return None
    return _Keys(blob, covered, path, pack)


_READ_AT_ONCE = 1 << 16  # a keys file of up to ~1,800 records is read with one read()


def chained_keys(path: str, name: str, size: int) -> tuple[int, xxhash.xxh3_64, int] | None:
    """What a writer adopting pack ``path`` (named ``name``, ``size`` bytes) appends to
    its keys file with: the file opened for appending, the hasher of all it holds (its
    chain goes on from there) and how many entries it holds; None unless it is this
    pack's, has no torn entry, covers the pack exactly and its last chain holds. Read in
    chunks as it is hashed: read whole, a large one (20,000 entries, 720 KB) cost a
    fresh process's first save 1 ms in copies."""
    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path + KEYS, flags)
    except OSError:
        return None
    try:
        found = _hashed_whole(descriptor, name, size)
    except (OSError, struct.error):  # (a file cut short as it is read)
        found = None
    if found is None:
        os.close(descriptor)
        return None
    return (descriptor, *found)


def _hashed_whole(descriptor: int, name: str, size: int) -> tuple[xxhash.xxh3_64, int] | None:
    """:func:`chained_keys`' checks and hash of the keys file open as ``descriptor``."""
    total = os.fstat(descriptor).st_size
    entries, torn = divmod(total - _KEYS_HEAD_SIZE, _KEY_SIZE)
    if entries < 0 or torn or os.pread(descriptor, _KEYS_HEAD_SIZE, 0) != _keys_head(name):
        return None
    if entries == 0:  # (a head alone covers an empty pack)
        return (xxhash.xxh3_64(_keys_head(name)), 0) if size == 0 else None
    _, offset, length, chain = _KEY.unpack(os.pread(descriptor, _KEY_SIZE, total - _KEY_SIZE))
    if offset + length != size:  # (told before anything is hashed)
        return None
    hasher, at, end = xxhash.xxh3_64(), 0, total - 8  # (all but the last chain)
    while at < end:
        chunk = os.pread(descriptor, min(end - at, _READ_AT_ONCE), at)
        if not chunk:
            return None
        hasher.update(chunk)
        at += len(chunk)
    if hasher.intdigest() != chain:
        return None
    hasher.update(chain.to_bytes(8, "little"))
    return hasher, entries


def _read_whole(path: str) -> bytes:
    """A file's bytes, with no file object: a small one with one ``read`` and no
    ``fstat`` (a fresh process's first hit reads one; a read that returns less than it
    asked for ended the file), a large one in one more ``read`` of the size it has."""
    descriptor = os.open(path, READ_ONLY)
    try:
        data = os.read(descriptor, _READ_AT_ONCE)
        return data if len(data) < _READ_AT_ONCE else _read_rest(descriptor, data)
    finally:
        os.close(descriptor)


def _read_rest(descriptor: int, start: bytes) -> bytes:
    """The rest of a file whose first ``start`` bytes were read, up to the size it has."""
    chunks = [start]
    rest = os.fstat(descriptor).st_size - len(start)
    while rest > 0 and (chunk := os.read(descriptor, rest)):
        chunks.append(chunk)
        rest -= len(chunk)
    return b"".join(chunks)


def _key_entry(hasher: xxhash.xxh3_64, needle: bytes, offset: int, length: int) -> bytes:
    """The keys file's entry of a record; ``hasher`` has hashed the file so far."""
    start = _KEY.pack(xxhash.xxh3_128_digest(needle), offset, length, 0)[:_CHAIN_AT]
    hasher.update(start)
    chain = hasher.intdigest().to_bytes(8, "little")
    hasher.update(chain)
    return start + chain


def _seal(path: str, keys_blob: bytes, covered: int) -> None:
    """Write the sealed index of pack ``path`` (``covered`` bytes) from its whole keys
    file; a failure leaves the pack without one (readers read its keys file). An index
    put in place after the pack was removed (a clear meanwhile) is removed."""
    last_at = _KEY.unpack_from(keys_blob, len(keys_blob) - _KEY.size)[1]
    try:
        descriptor = os.open(path, READ_ONLY)
        try:
            last_head = os.pread(descriptor, _HEAD.size, last_at)
        finally:
            os.close(descriptor)
        write_sealed(path, _name_digest(os.path.basename(path)), keys_blob, _KEYS_HEAD.size,
                     _KEY, covered, last_head)
        if not os.path.exists(path):
            os.unlink(path + SEALED)
    except OSError:
        pass
