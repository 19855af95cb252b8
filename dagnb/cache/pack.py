"""Packs: small cache entries as records appended to a few files, read into one index.

A folder per entry costs a first run several ``mkdir``, ``open`` and ``rename`` calls per
step, and a fresh process an ``open`` and a parse per hit. An entry with no output files
and a small record (:data:`RECORD_LIMIT`: metadata, logs and an inline result) is instead
one record appended with one ``write()`` to ``<cache>/.packs/<name>.pack``::

    magic "DGPK" | length u32 of the rest | xxh3_64 of the rest u64 |
    rest: stamp u64 (ns) | kind u8 (1 entry, 0 tombstone) | step length u16 |
          key length u16 | step | key | body |
    the record's whole length u32 | "KPGD"

The body of an entry is its metadata as two JSON lines: the head (what a hit reads:
times, exit code, output digest, the inline result) and the rest (components,
descriptions, captured lines), parsed only when asked for. A tombstone has none.

One writer appends to a pack at a time: it holds the pack's ``flock`` while it writes
there, and a store that needs a pack adopts one nobody holds (if it ends with a whole
record, is its to write, and is still in the folder once locked) or starts a new one,
so there are about as many packs as processes that wrote at the same time. On a file
system with no ``flock`` an entry gets a folder instead. Readers take no lock and map
packs into memory (or read them, where a file system cannot map): a pack is only ever
appended to, unlinked or replaced by a rename, never cut short.

:class:`PackIndex` (one per cache folder and process) reads every pack once, then only
what packs grew by: ``(step, key)`` -> the newest record of that key; a tombstone hides
what came before it. Newest: in one pack the later one; across packs the larger stamp
(ties to the larger pack name). A record that replaces or removes one known to its
writer is stamped past it (``max(now, known + 1)``), so a clock stepped back or skewed
across the hosts of a shared folder never lets a removed entry win.

Each pack has a keys file, ``<name>.pack.keys`` (see :class:`PackWriter`): an entry per
record, appended after it, with the xxh3_128 of its step and key, its offset and length,
and a chain digest. A fresh process reads the keys files rather than the packs, finds
the keys it is asked for there (``rfind``, then a dict after :data:`SEARCH_KEYS` keys)
and reads only those records (one ``pread`` each, from the pack opened when its keys
file was read), checked as any record is; what a keys file does not cover (records
written since, or after a crash) is walked. The record a keys file gives a key is that
pack's last of it, and takes the place of another pack's by the same rule as a walk. A
keys file is believed only whole: of its pack (its head names it), its last entry's
chain holding over everything before it, covering no more than the pack holds; a record
it points to that is not the key's makes the index walk the packs instead.

A pack of :data:`~dagnb.cache.sealed.SEAL_FROM` records or more also gets a sealed
index, ``<name>.pack.idx`` (:mod:`dagnb.cache.sealed`), when its writer lets go of it
(at a run's end, at exit, or when its store is garbage-collected) and it grew by a
quarter since it was last sealed, and when compaction writes it: a fresh process then
finds a key in two or three small reads, not by reading the whole keys file (at 20,000
entries a first hit went from 1 ms to 0.14 ms).
It is used while the pack holds what it covers (and at most 64 KiB more, walked) and the
record it names last is there; each bucket of it is checked against its digest when
read. A process that ends with ``os._exit`` (a ``multiprocessing`` fork worker) seals
nothing: the next process to write there and let go of the pack does.

Seeing another process's changes: a miss reads what the packs gained (a few ms apart at
most); a hit reads nothing but one ``fstat`` of the ``generation`` file, which a removal,
a replacement, a clear, a compaction and a new pack grow by a byte, and the packs are
read again when it changed (a hit found through a keys file too). The folder is listed
again only then: while the generation holds, no pack came or went. A reading that meets
a pack vanishing (a compaction) starts over, and a compaction keeps the tombstones that
hide entries of other old packs, so a reader that lists the packs halfway through its
removals still sees every removal.

Durability: records are not fsync'ed (a compaction's new pack and its keys file are,
before the packs they replace are removed). A record is used only if its magic, its length, its
end and its digest hold, so a torn or changed record is never served: it is a miss. A
power loss can cost the last records written (they are then misses, and run again); a
record whose digest does not hold is skipped and reading goes on after it; one whose
framing is lost ends what is read of that pack. Damage is reported once, as a
:class:`~dagnb.cache.store.DamagedEntryWarning`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import operator
import os
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator

import xxhash

from dagnb.cache.backend import folder_identity
from dagnb.cache.forks import ForkSafeLock, renew_in_child
from dagnb.cache.sealed import (
    SEALED,
    SealedIndex,
    is_seal_temporary,
    may_be_sealed,
    sealed_entries,
    should_seal,
    write_sealed,
)
from dagnb.config import context

__all__ = [
    "ENTRY",
    "RECORD_LIMIT",
    "TOMBSTONE",
    "PackIndex",
    "PackWriter",
    "Record",
    "compact",
    "decode",
    "encode",
    "index_of",
]

MAGIC = b"DGPK"
_HEAD = struct.Struct("<4sIQ")  # magic, length of the rest, xxh3_64 of the rest
_FIXED = struct.Struct("<QBHH")  # stamp (ns), kind, step length, key length
_FRAME = struct.Struct("<4sIQQBHH")  # _HEAD and _FIXED together: what a walk reads
_NAMES = struct.Struct("<HH")  # the step and key lengths, searched for with the names
_NAMES_AT = _HEAD.size + 9  # where they are in a record (after the stamp and kind)
WALK_AFTER = 2  # a fresh process searches packs for keys until it searched them this
#                 many times over, then walks them (a walk costs about that much)
_TAIL = struct.Struct("<I4s")  # the record's whole length, and "KPGD": read backwards
END = b"KPGD"
ENTRY, TOMBSTONE = 1, 0
_DAMAGED = 255  # the kind the index gives a record found damaged: a miss
COMPACT_FROM = 256 * 1024  # packs smaller than this in all are not worth rewriting
RECORD_LIMIT = 64 * 1024  # an entry whose record would be larger keeps a folder
PACKS = ".packs"  # the folder of the packs, in the cache folder
GENERATION = "generation"  # a file of the packs folder that grows by a byte whenever a
#                            record others may serve is removed or replaced (see get())
_RELIST = 5  # a refresh that meets packs vanishing (a compaction) starts over this often
SUFFIX = ".pack"
KEYS = ".keys"  # a pack's keys file: <name>.pack.keys
_KEYS_HEAD = struct.Struct("<4sIQ")  # "DGKY", the entry size, xxh3_64 of the pack's name
_KEY = struct.Struct("<16sQIQ")  # xxh3_128 of the names, offset, length, chain
_CHAIN_AT = _KEY.size - 8
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


_REFRESHING = object()  # PackIndex.generation while a refresh is under way

_Slot = tuple[bytes, int, int, int, str]  # a record found, not checked yet: data, offset,
#                                           stamp, kind, pack


class PackIndex:
    """The newest record of every key in the packs of one cache folder.

    Shared by the stores of that folder in this process (:func:`index_of`), so that a
    removal through one is seen by the others at once. A removal by another process is
    seen at this process's next lookup (a hit costs one ``fstat``: :meth:`get`).

    Reading a pack only walks its records' headers (about half a microsecond each); a
    record's end and digest are checked, and its body cut out, the first time it is
    asked for. A fresh process asks for a few keys before it asks for many: until
    searching (``bytes.rfind`` of a key's names) has cost about what a walk costs
    (:data:`WALK_AFTER`), the packs it read are searched for each key asked for.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.records: dict[tuple[str, str], Record | _Slot] = {}
        self.sizes: dict[str, int] = {}  # pack name -> bytes read (whole records)
        self.loaded = False
        self.problems: list[tuple[str, str]] = []  # (pack, why), each reported once
        self._seen_problems: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        _INDEXES.add(self)
        self.refreshed = 0.0  # time.monotonic() of the last refresh
        self.own: set[str] = set()  # packs a writer of this process holds
        self._blobs: dict[str, bytes] = {}  # packs read whole, searched, not walked yet
        self._searched = 0  # bytes searched since they were read
        self._generation_path = f"{folder}/{GENERATION}"
        self._generation_file = -1  # kept open: an fstat costs half what a stat does
        # as seen by the last refresh (_REFRESHING: none whole, or one under way)
        self.generation: os.stat_result | object | None = None
        self._keyed: dict[str, _Keys] = {}  # packs found through their keys files
        self._resolved: set[tuple[str, str]] = set()  # keys looked up in those already
        self._keys_searched = 0  # searches of the keys files
        self._trust_keys = True  # (False while reading again after one lied)
        self._read_at_generation = False  # the last refresh saw the generation hold
        self._listed: list[str] = []  # the packs the folder held at the last listing,
        self._listed_at: os.stat_result | None = None  # the generation then
        self.settled = False  # folder has no symlink in it (see settle_folder)

    def settle_folder(self, real: str) -> None:
        """Use ``real``, the folder without symlinks, from now on (once a second
        spelling of it shares this index: a symlink removed or pointed elsewhere then
        moves neither)."""
        with self._lock:
            self.folder, self._generation_path = real, f"{real}/{GENERATION}"
            self.settled = True

    def _generation_now(self) -> os.stat_result | None:
        """The generation file's status now (its size grows at every bump; replaced or
        removed, it is opened again); None when there is none."""
        if self._generation_file >= 0:
            found = os.fstat(self._generation_file)
            if found.st_nlink:
                return found
            os.close(self._generation_file)
            self._generation_file = -1
        try:
            self._generation_file = os.open(
                self._generation_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        return os.fstat(self._generation_file)

    def __del__(self, close: Callable[[int], None] = os.close) -> None:
        # (``close`` bound now: at exit the module's globals may be gone already)
        if self._generation_file >= 0:
            try:  # noqa: SIM105
                close(self._generation_file)
            except OSError:
                pass
            self._generation_file = -1

    def get(self, step: str, key: str) -> Record | None:
        """The live record of ``step/key`` (a dictionary lookup once loaded), or None.

        A record about to be served costs one ``stat`` of the generation file: when
        another process removed or replaced something since the packs were read, they
        are read again first (what they gained: a tombstone, a newer record)."""
        # read just now by this call, the generation the same all along: no fstat again
        fresh = not self.loaded and self.refresh()
        record = self._lookup(step, key)
        if record is None or fresh:
            return record
        seen = self._generation_file  # (the usual case inline: one fstat)
        now = os.fstat(seen) if seen >= 0 else self._generation_now()
        if now != self.generation or (now is not None and not now.st_nlink):
            self.refresh()
            record = self._lookup(step, key)
        return record

    def _lookup(self, step: str, key: str) -> Record | None:
        """The live record of ``step/key`` as read so far, or None."""
        if not self.loaded:
            self.refresh()
        found = self._known(step, key)
        if found is None:
            return None
        if type(found) is tuple:
            found = self._check((step, key), found)
            if found is None:
                return None
        return found if found.kind == ENTRY else None  # type: ignore[union-attr]

    def _check(self, where: tuple[str, str], slot: _Slot) -> Record | None:
        """The record of a slot, once its end and digest hold; None (a problem reported,
        the key a miss) when they do not."""
        data, offset, stamp, _, pack = slot
        record = _whole_record(data, offset, pack)
        with self._lock:
            if self.records.get(where) is not slot:  # replaced meanwhile: ask again
                return self._lookup(*where)
            if record is not None and (record.step, record.key) != where:
                self._distrust()  # a keys file that lies: the packs say which
                return self._lookup(*where)
            if record is None:
                self._problem(pack, f"a record of {where[0]}/{where[1][:12]} is damaged")
                self.records[where] = Record(where[0], where[1], _DAMAGED, stamp, b"", pack)
                return None
            self.records[where] = record
        return record

    def _resolve(
        self, where: tuple[str, str], known: Record | _Slot | None
    ) -> Record | _Slot | None:
        """The newest record of ``where``: ``known`` (read past what the keys files
        cover) or the last one of a pack a keys file points to, the winner by
        :func:`_wins` as a walk would choose. It is checked at once: one that is damaged
        or not the key's makes the index walk the packs (:meth:`_distrust`), so a keys
        file never changes what is served."""
        with self._lock:
            if where in self._resolved:
                return self.records.get(where)
            needle = _needle(*where)
            digest = xxhash.xxh3_128_digest(needle)
            best = known
            for name, keys in self._keyed.items():
                try:
                    found = keys.offset(digest)
                except (OSError, ValueError) as exc:  # a damaged sealed index: the packs
                    self._problem(f"{name}{SEALED}", str(exc))  # are read whole instead
                    self._distrust()
                    return self.records.get(where)
                if found is None:
                    continue
                try:
                    data = keys.read(*found)
                except (OSError, OverflowError):  # (an offset past what pread takes)
                    data = b""
                if len(data) < _FRAME.size:  # a keys file that lies: walk the packs
                    self._distrust()
                    return self.records.get(where)
                stamp = _FRAME.unpack_from(data)[3]
                if best is not None and (_pack_of(best) == name or not _wins(best, stamp, name)):
                    continue  # (one of this pack known already: read past its keys file)
                record = _record_of(data, where, needle, name)  # checked now: at hand
                if record is None:
                    self._distrust()  # damaged, or a keys file that lies: walk the packs
                    return self.records.get(where)
                best = record
            if best is not None and best is not known:
                self.records[where] = best
            self._resolved.add(where)
            self._keys_searched += 1
            if self._keys_searched == SEARCH_KEYS:
                self._index_keys()
            return best

    def _distrust(self) -> None:
        """Forget what was read and read the packs again without their keys files (one
        pointed at a record that is damaged or not the key's): the packs say which."""
        self._trust_keys = False
        try:
            self.reset()
            self.refresh()
        finally:
            self._trust_keys = True

    def _index_keys(self) -> None:
        """Make dicts of the keys files: searching them (:data:`SEARCH_KEYS` times) cost
        about what making them costs."""
        for keys in self._keyed.values():
            keys.index()

    def _search(self, step: str, key: str, known: Record | _Slot | None) -> Record | _Slot | None:
        """The newest record of ``step/key``, ``known`` or one found by searching the packs
        not walked yet; they are walked once the searches cost about as much."""
        with self._lock:
            step_bytes, key_bytes = step.encode(), key.encode()
            needle = _NAMES.pack(len(step_bytes), len(key_bytes)) + step_bytes + key_bytes
            best = known
            for name, blob in self._blobs.items():
                found = _last_record(blob, needle, name)
                if found is not None and _wins(best, found.stamp, name):
                    best = found
            if best is not None and best is not known:
                self.add(best)  # type: ignore[arg-type]
            total = sum(len(blob) for blob in self._blobs.values())
            self._searched += total
            if self._searched > WALK_AFTER * total:
                self._walk_blobs()
            return best

    def _walk_blobs(self) -> None:
        """Walk the packs that were only searched so far (or looked up in their keys
        files): every record is then in :attr:`records`."""
        keyed, self._keyed = self._keyed, {}
        self._resolved.clear()
        for name, keys in keyed.items():  # from the start: a record past what the keys
            try:                          # file covers is later than those it covers
                problem = self._scan(keys.data(), name, self.sizes.get(name, keys.covered))[1]
            except (OSError, ValueError):  # unreadable: nothing from it
                continue
            if problem is not None:
                self._problem(name, problem)
        blobs, self._blobs = self._blobs, {}
        for name, blob in blobs.items():
            known = self.sizes.get(name, 0)
            self._take(name, 0, blob)
            if known > len(blob) and self.sizes[name] == len(blob):  # a writer here added
                self.sizes[name] = known

    def refresh(self) -> bool:
        """Read what the packs gained since the last read; start over if one vanished.
        Whether the generation held all along (nothing removed or replaced meanwhile).

        A compaction replaces packs while this reads them: a pack that vanishes midway
        means starting over, else records a removed pack's tombstones hid would be
        served. A listing can miss only packs renamed in or removed while it ran; a
        compaction bumps the generation between the two, so a listing that missed both
        (the new pack, an old one) is followed by a changed generation, and the folder
        is listed again: the new pack read then holds the tombstones of the old ones.
        Rounds that meet packs vanishing end with nothing read (then the next lookup
        reads again): a miss, never an entry a removed tombstone hid.

        The generation a round began with is published when the refresh ends; until
        then :attr:`generation` matches no file, so a hit in another thread meanwhile
        reads again (waiting for this one) rather than trust what is half read."""
        with self._lock:
            if self._only_own_since():
                self.refreshed = time.monotonic()
                return True
            self.loaded, self.generation = False, _REFRESHING
            generation = None
            for _ in range(_RELIST):
                self._read_at_generation = False
                generation = self._generation_now()
                names = self._listing(generation)
                if any(name not in names for name in self.sizes):
                    self.reset()
                before = sum(self.sizes.values())
                if not all([self._read(name) for name in names
                            if name not in self.own or name not in self.sizes]):
                    self.reset()  # one vanished while read: a compaction, read anew
                    continue
                if sum(self.sizes.values()) == before or self._listing_held(names, generation):
                    self.loaded = True  # nothing taken in, or no change since
                    break
                self._listed_at = None  # packs came or went meanwhile: list again
            self.generation = generation if self.loaded else _REFRESHING
            self.refreshed = time.monotonic()
            return self.loaded and self._read_at_generation

    def _only_own_since(self) -> bool:
        """Whether the packs read are all this process's and the generation is what
        the last whole refresh saw: then no other process wrote here since (one that
        makes a pack bumps the generation), and there is nothing to read (one
        ``fstat``: a first run's look under each key's lock)."""
        return (self.loaded and type(self.generation) is os.stat_result
                and self.own.issuperset(self.sizes)
                and self._generation_now() == self.generation)

    def _listing_held(self, names: list[str], generation: os.stat_result | None) -> bool:
        """Whether a listing taken after ``generation`` was read still holds: the
        generation is the same (one ``fstat``), or a listing now names the same packs
        (a writer's bump, or no generation file). Not merely none gone: a listing that
        missed a compaction's new pack and an old one it removed sees the new one now."""
        self._read_at_generation = (
            generation is not None and self._generation_now() == generation)
        return self._read_at_generation or set(names) == set(self._names())

    def _listing(self, generation: os.stat_result | None) -> list[str]:
        """The packs of the folder: those of the last listing while the generation is
        what it was before that listing (a writer bumps it once it made a pack; a
        compaction, before it removes packs), else listed now. A pack removed some
        other way is found gone when read, and the folder listed again."""
        if generation is not None and generation == self._listed_at:
            return self._listed
        names = self._names()
        self._listed, self._listed_at = names, generation
        return names

    def _names(self) -> list[str]:
        """The packs of the folder now."""
        try:
            return [n for n in os.listdir(self.folder) if n.endswith(SUFFIX)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def bump(self) -> None:
        """Tell the other processes that a record they may serve was removed or
        replaced: the generation file grows by a byte (replaced whole if it is not ours
        to append to)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            descriptor = os.open(self._generation_path, flags, 0o666)
        except PermissionError:
            temporary = f"{self._generation_path}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with open(temporary, "wb") as handle:
                handle.write(b"." * (os.stat(self._generation_path).st_size + 1))
            os.replace(temporary, self._generation_path)
            return
        try:
            os.write(descriptor, b".")
        finally:
            os.close(descriptor)

    def touch(self) -> None:
        """Make the generation file if there is none (readers then fstat it)."""
        if self._generation_file < 0 and not os.path.exists(self._generation_path):
            with contextlib.suppress(OSError):
                os.close(os.open(self._generation_path, os.O_WRONLY | os.O_CREAT, 0o666))

    def next_stamp(self, step: str, key: str) -> tuple[int, bool]:
        """The stamp of a record about to be written for ``step/key``: later than the
        one it replaces whatever the clock says (stepped back, skewed), and whether it
        replaces a live one (then the others must be told: :meth:`bump`)."""
        stamp = time.time_ns()
        known = self._known(step, key)
        if known is None:
            return stamp, False
        return max(stamp, _stamp_of(known) + 1), _kind_of(known) == ENTRY

    def _known(self, step: str, key: str) -> Record | _Slot | None:
        """The newest record of ``step/key`` known so far, through the index, then the
        keys files and the packs searched by key (not checked yet)."""
        found = self.records.get((step, key))
        if self._keyed and (step, key) not in self._resolved:
            found = self._resolve((step, key), found)
        if self._blobs:
            found = self._search(step, key, found)
        return found

    def reset(self) -> None:
        """Forget everything read (the packs were removed or rewritten)."""
        with self._lock:
            self.records.clear()
            self.sizes.clear()
            self._blobs.clear()
            self._searched = 0
            self._keyed.clear()
            self._resolved.clear()
            self._keys_searched = 0
            self._listed_at = None  # (list again)
            self.loaded = False

    def _read(self, name: str) -> bool:
        """Take in what pack ``name`` gained; False if it vanished (a compaction)."""
        done = self.sizes.get(name, 0)
        path = f"{self.folder}/{name}"
        try:
            size = os.stat(path).st_size
            if size <= done:  # most packs did not grow: one stat
                return True
            if name in self._blobs:  # it grew: walk what was read, then read on
                self._walk_blobs()
                done = self.sizes.get(name, 0)
            fresh = done == 0 and (self._keyed or not self.records)
            keys = _keys_of(path, name, size) if fresh and self._trust_keys else None
            if keys is not None:
                keys.open()  # a fresh process: keys looked up in its keys file, and the
                #              pack as it is now (a compaction may remove it later)
                self._keyed[name] = keys
                if self._keys_searched >= SEARCH_KEYS:  # the others have dicts already
                    keys.index()
                self._resolved.clear()  # keys looked up already: in this pack too
                self.sizes[name] = keys.covered
                if size > keys.covered:  # (written since, or after a crash): walked
                    self._take(name, keys.covered, keys.tail(size))
                return True
            data = _mapped(path) if done == 0 else _tail(path, done)
        except FileNotFoundError:
            return False
        except (OSError, ValueError):  # unreadable: nothing from it
            return True
        if fresh:  # a fresh process, a pack with no keys file: searched for a few keys
            self._blobs[name] = data
            self.sizes[name] = len(data)
            if not _ends_whole(data) and not _held(path):
                self._problem(name, "its last record is torn")
            return True
        self._take(name, done, data)
        return True

    def _take(self, name: str, done: int, data: bytes) -> None:
        """Walk ``data``, read from byte ``done`` of pack ``name``."""
        path = f"{self.folder}/{name}"
        used, problem = self._scan(data, name)
        self.sizes[name] = done + used
        if problem is None and used < len(data) and not _held(path):
            problem = "its last record is torn"  # nobody is writing there: for good
        if problem is not None:
            self._problem(name, problem)

    def _scan(self, data: bytes, pack: str, end: int | None = None) -> tuple[int, str | None]:
        """Take in the records of ``data`` (up to byte ``end``) by their headers; the
        bytes they take, and why the walk stopped early (None: at the end, or at a
        record still written)."""
        unpack, records = _FRAME.unpack_from, self.records
        offset, end, frame = 0, len(data) if end is None else min(end, len(data)), _FRAME.size
        while offset + frame <= end:
            magic, length, _, stamp, kind, step_length, key_length = unpack(data, offset)
            after = offset + _HEAD.size + length + _TAIL.size
            if magic != MAGIC:
                return offset, f"no record starts at byte {offset}"
            if after > end:
                break
            names = offset + frame
            middle = names + step_length
            try:
                where = (data[names:middle].decode(), data[middle:middle + key_length].decode())
            except UnicodeDecodeError:
                where = ("", "")  # a damaged record: a miss whatever was asked
            if _wins(records.get(where), stamp, pack):
                records[where] = (data, offset, stamp, kind, pack)
            offset = after
        return offset, None

    def _problem(self, name: str, problem: str) -> None:
        if (name, problem) not in self._seen_problems:
            self._seen_problems.add((name, problem))
            self.problems.append((name, problem))

    def settle(self, name: str) -> int:
        """Read pack ``name`` to its end (its writer holds it now); the bytes of its
        whole records."""
        with self._lock:
            self._read(name)
            self._walk_blobs()  # (its own records then never meet a search of it)
            return self.sizes.get(name, 0)

    def add(self, record: Record) -> None:
        """Keep ``record`` if it is the newest of its key."""
        where = (record.step, record.key)
        if _wins(self.records.get(where), record.stamp, record.pack):
            self.records[where] = record

    def grew(self, name: str, before: int, data: bytes, record: Record) -> None:
        """A writer of this process appended ``data`` at ``before`` in pack ``name``:
        take it in without reading it back (unless something else came first)."""
        with self._lock:
            if self.sizes.get(name, 0) == before:
                self.sizes[name] = before + len(data)
                self.add(record)
            else:
                self.refresh()
                self._read(name)

    def live(self, step: str | None = None) -> list[Record]:
        """Every live record (of one step), after reading what the packs gained."""
        with self._lock:
            self.refresh()
            self._walk_blobs()
        found = []
        for where in list(self.records):
            if step is None or where[0] == step:
                record = self._lookup(*where)
                if record is not None:
                    found.append(record)
        return found

    def take_problems(self) -> list[tuple[str, str]]:
        """The damage found since the last call (each reported once)."""
        with self._lock:
            found, self.problems = self.problems, []
        return found


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


class _Keys:
    """A pack's keys file, read whole (see :class:`PackWriter`): where each record of
    the pack's first ``covered`` bytes starts, by the xxh3_128 of its step and key.

    Looking a key up costs a ``bytes.rfind`` over the file (about 1.5 µs for 500
    records), and a dict lookup once :meth:`index` made one. The records it points to
    are checked (framing, digest, step and key) before they are used.
    """

    __slots__ = ("blob", "covered", "descriptor", "found", "mapped", "path")

    def __init__(self, blob: bytes, covered: int, path: str) -> None:
        self.blob, self.covered, self.path = blob, covered, path
        self.found: dict[bytes, int] | None = None  # digest -> where its entry starts
        self.mapped: mmap.mmap | bytes | None = None  # the pack, once asked for (data())
        self.descriptor: int | None = None

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
            self.descriptor = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def read(self, offset: int, length: int) -> bytes:
        """The ``length`` bytes of the pack at ``offset`` (no more than the file covers):
        one ``pread`` for the first few keys; once a process looked up enough to make a
        dict of the keys (:meth:`index`), a slice of the pack mapped (mapping costs some
        20 ``pread``: it pays only for many). The pack was opened when its keys file was
        taken in (:meth:`open`)."""
        if self.found is not None:
            return self.data()[offset:max(offset, min(offset + length, self.covered))]
        return os.pread(self.descriptor, max(0, min(length, self.covered - offset)), offset)  # type: ignore[arg-type]

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

    __slots__ = ("lookups", "sealed")

    def __init__(self, sealed: SealedIndex, covered: int, path: str) -> None:
        super().__init__(b"", covered, path)
        self.sealed = sealed
        self.lookups = 0

    def offset(self, digest: bytes) -> tuple[int, int] | None:
        """As :meth:`_Keys.offset`; ValueError (or OSError) when the index is damaged.
        Lookups read the key's bucket; the :data:`SEARCH_KEYS`-th of them (or, for a
        large index, the one that makes one per :data:`_DICT_AFTER` entries) reads the
        index whole and makes a dict of it, as of a keys file."""
        if self.found is None:
            self.lookups += 1
            if self.lookups < max(SEARCH_KEYS, self.sealed.count // _DICT_AFTER):
                found = self.sealed.find(digest)
                return None if found is None else _KEY.unpack_from(found)[1:3]  # type: ignore[return-value]
            self._make_dict()
        return super().offset(digest)

    def index(self) -> None:
        """Nothing: searching the index costs little, the dict waits (see offset)."""

    def _make_dict(self) -> None:
        """A dict of the index's entries, read whole (checked against its digest: a
        damaged index raises ValueError, and the caller walks the packs)."""
        self.sealed.load()
        self.blob, start = self.sealed.page, self.sealed.entries_start
        digests = map(_FIRST, _DIGEST.iter_unpack(memoryview(self.blob)[start:]))
        self.found = dict(zip(digests, range(start, len(self.blob), _KEY.size), strict=True))


def _keys_of(path: str, name: str, size: int) -> _Keys | None:
    """Where pack ``name`` (``size`` bytes now) says its keys are: its sealed index if
    it covers those bytes (but a short tail, walked) and the record it names last is
    there, else its keys file (None: neither can be trusted)."""
    sealed = (SealedIndex.open(path, _name_digest(name), size, _KEY.size)
              if may_be_sealed(size, _FRAME.size + _TAIL.size) else None)
    if sealed is not None:
        keys = _SealedKeys(sealed, sealed.covered, path)
        at, head = sealed.last
        try:
            keys.open()
            if at <= sealed.covered - len(head) and keys.read(at, len(head)) == head:
                return keys
        except OSError:
            pass
        sealed.close()
    return _read_keys(path, name, size)


def _name_digest(pack: str) -> int:
    """What a keys file's head and a sealed index's say of the pack they are of."""
    return xxhash.xxh3_64_intdigest(pack.encode())


def _keys_head(pack: str) -> bytes:
    """The start of a keys file: it names the pack it is of (the pack's file name)."""
    return _KEYS_HEAD.pack(b"DGKY", _KEY.size, _name_digest(pack))


def _read_keys(path: str, name: str, size: int) -> _Keys | None:
    """The keys file of pack ``name`` (``size`` bytes now), or None if there is none or
    it cannot be trusted: not of this pack, its last whole entry's chain (the xxh3_64 of
    everything before it) does not hold, or it covers more than the pack holds. A torn
    last entry is left out."""
    try:
        blob = _read_whole(path + KEYS)
    except OSError:
        return None
    head = _KEYS_HEAD.size
    if len(blob) < head or blob[:head] != _keys_head(name):
        return None
    whole = head + (len(blob) - head) // _KEY.size * _KEY.size
    if whole < len(blob):
        blob = blob[:whole]
    covered = 0
    if whole > head:
        _, offset, length, chain = _KEY.unpack_from(blob, whole - _KEY.size)
        if xxhash.xxh3_64_intdigest(memoryview(blob)[:whole - 8]) != chain:
            return None
        covered = offset + length
    if covered > size:
        return None
    return _Keys(blob, covered, path)


_READ_AT_ONCE = 1 << 16  # a keys file of up to ~1,800 records is read with one read()


def _read_whole(path: str) -> bytes:
    """A file's bytes, with no file object: a small one with one ``read`` and no
    ``fstat`` (a fresh process's first hit reads one; a read that returns less than it
    asked for ended the file), a large one in one more ``read`` of the size it has."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        chunks = [os.read(descriptor, _READ_AT_ONCE)]
        if len(chunks[0]) == _READ_AT_ONCE:
            rest = os.fstat(descriptor).st_size - _READ_AT_ONCE
            while rest > 0 and (chunk := os.read(descriptor, rest)):
                chunks.append(chunk)
                rest -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _key_entry(hasher: xxhash.xxh3_64, needle: bytes, offset: int, length: int) -> bytes:
    """The keys file's entry of a record; ``hasher`` has hashed the file so far."""
    start = _KEY.pack(xxhash.xxh3_128_digest(needle), offset, length, 0)[:_CHAIN_AT]
    hasher.update(start)
    chain = hasher.intdigest().to_bytes(8, "little")
    hasher.update(chain)
    return start + chain


def _ends_whole(blob: bytes) -> bool:
    """Whether ``blob`` ends with a whole record (read backwards from its end)."""
    if len(blob) < _FRAME.size + _TAIL.size:
        return not blob
    size, end = _TAIL.unpack_from(blob, len(blob) - _TAIL.size)
    start = len(blob) - size
    return end == END and start >= 0 and _whole_record(blob, start, "") is not None


def _last_record(blob: bytes, needle: bytes, pack: str) -> Record | None:
    """The last whole record of ``blob`` whose step and key are ``needle``'s, or None."""
    end = len(blob)
    while (at := blob.rfind(needle, 0, end)) >= 0:
        start = at - _NAMES_AT
        if start >= 0 and blob[start:start + 4] == MAGIC:
            record = _whole_record(blob, start, pack)
            if record is not None:
                return record
        end = at + len(needle) - 1
    return None


def _record_of(data: bytes, where: tuple[str, str], needle: bytes, pack: str) -> Record | None:
    """The record at the start of ``data`` if its framing, end and digest hold and it is
    of ``where`` (its names are ``needle``), else None: :func:`_whole_record` for a key
    known, with no names decoded."""
    if len(data) < _FRAME.size:
        return None
    magic, length, digest = _HEAD.unpack_from(data)
    after = _HEAD.size + length + _TAIL.size
    if magic != MAGIC or length < _FIXED.size or after > len(data):
        return None
    if _TAIL.unpack_from(data, after - _TAIL.size) != (after, END):
        return None
    rest = data[_HEAD.size:after - _TAIL.size]
    names_at = _NAMES_AT - _HEAD.size
    names_end = names_at + len(needle)
    if xxhash.xxh3_64_intdigest(rest) != digest or rest[names_at:names_end] != needle:
        return None
    stamp, kind = _FIXED.unpack_from(rest)[:2]
    return Record(where[0], where[1], kind, stamp, rest[names_end:], pack)


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


def compact(index: PackIndex) -> bool:
    """Rewrite the packs of ``index``'s folder as one pack of their live records, when
    removed and replaced records take most of their bytes; whether it did.

    Only packs that no writer holds can be rewritten, so it is all or nothing: with
    another process writing there, nothing is done (a later clear compacts). Records
    keep their stamps, so a reader that meets the old and the new pack at once keeps
    the same newest record of each key; a tombstone that hides an entry of another old
    pack is kept too (until the next compaction), so a reader that meets the new pack
    and only that old pack (the tombstone's already removed) does not serve it.
    """
    with index._lock:
        index.refresh()
        if sum(index.sizes.values()) < COMPACT_FROM:
            return False
        held = _hold_all(index.folder, list(index.sizes))
        if held is None:
            return False
        try:
            for name in held:  # what was written there before they were held
                index._read(name)
            index._walk_blobs()
            total = sum(index.sizes.get(name, 0) for name in held)
            live = [r for r in (index._lookup(*where) for where in list(index.records))
                    if r is not None and r.pack in held]
            if sum(len(r.body) + 64 for r in live) * 2 > total:
                return False
            _write_pack(index.folder, live + _hiding(index, held))
            index.bump()  # before the old packs go: see refresh
            for name in held:
                os.unlink(f"{index.folder}/{name}")
                for suffix in (KEYS, SEALED):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{index.folder}/{name}{suffix}")
            index.bump()
        finally:
            for descriptor in held.values():
                os.close(descriptor)
        index.reset()
    return True


def _hiding(index: PackIndex, held: dict[str, int]) -> list[Record]:
    """The tombstones of packs ``held`` that hide an entry of another of them."""
    entries: dict[tuple[str, str], set[str]] = {}
    for name in held:
        for record in decode(_tail(f"{index.folder}/{name}", 0), name)[0]:
            if record.kind == ENTRY:
                entries.setdefault((record.step, record.key), set()).add(name)
    kept = []
    for where, known in index.records.items():
        pack = _pack_of(known)
        if _kind_of(known) == TOMBSTONE and pack in held and entries.get(where, set()) - {pack}:
            kept.append(Record(where[0], where[1], TOMBSTONE, _stamp_of(known), b"", pack))
    return kept


def _hold_all(folder: str, names: list[str]) -> dict[str, int] | None:
    """The ``flock`` of every pack named, or None (and none held) if one is taken."""
    held: dict[str, int] = {}
    for name in names:
        try:
            descriptor = os.open(f"{folder}/{name}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            descriptor = -1
        if descriptor >= 0:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(descriptor)
                descriptor = -1
        if descriptor < 0:
            for other in held.values():
                os.close(other)
            return None
        held[name] = descriptor
    return held


def _write_pack(folder: str, records: list[Record]) -> None:
    """A new pack of ``records`` (stamps kept), and its keys file, each put in place
    whole with a rename (the keys file first)."""
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    head = _keys_head(f"{name}{SUFFIX}")
    hasher = xxhash.xxh3_64(head)
    chunks, keys, offset = [], [head], 0
    for r in records:
        chunk = encode(r.step, r.key, r.kind, r.body, r.stamp)
        keys.append(_key_entry(hasher, _record_needle(chunk), offset, len(chunk)))
        chunks.append(chunk)
        offset += len(chunk)
    keys_blob = b"".join(keys)
    for suffix, data in ((f"{SUFFIX}{KEYS}", keys_blob), (SUFFIX, b"".join(chunks))):
        with open(f"{folder}/{name}.tmp", "wb") as handle:
            handle.write(data)
            os.fsync(handle.fileno())  # before the packs it replaces go: a power loss
            #                            then costs nothing that was in them
        os.rename(f"{folder}/{name}.tmp", f"{folder}/{name}{suffix}")
    if should_seal(len(records), 0):
        _seal(f"{folder}/{name}{SUFFIX}", keys_blob, offset)


def _seal(path: str, keys_blob: bytes, covered: int) -> None:
    """Write the sealed index of pack ``path`` (``covered`` bytes) from its whole keys
    file; a failure leaves the pack without one (readers read its keys file). An index
    put in place after the pack was removed (a clear meanwhile) is removed."""
    last_at = _KEY.unpack_from(keys_blob, len(keys_blob) - _KEY.size)[1]
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
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


def _mapped(path: str) -> mmap.mmap:
    """A whole pack, mapped rather than read: a fresh process searching a large pack for
    one key touches it once, with no copy. Packs are only ever appended to, unlinked or
    replaced by a rename, never cut short by dagnb, so the mapping stays valid."""
    with open(path, "rb") as handle:
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError:  # a file system that cannot map (some FUSE and 9p mounts)
            return handle.read()


def _tail(path: str, done: int) -> bytes:
    """What a pack gained past byte ``done``."""
    with open(path, "rb") as handle:
        handle.seek(done)
        return handle.read()


def _still_named(descriptor: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    opened = os.fstat(descriptor)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return opened.st_nlink > 0 and (opened.st_ino, opened.st_dev) == (named.st_ino, named.st_dev)


def _held(path: str) -> bool:
    """Whether a writer holds the pack (its last record may be half written)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


class _LiveIndexes:
    """The pack indexes of one dagnb context, by folder identity (or spelling), held
    weakly: an index lives as long as a store of its folder does, then its kept-open
    generation file is closed with it (a process that used hundreds of cache folders,
    a test suite's, kept a descriptor open for each)."""

    def __init__(self) -> None:
        self.lock = ForkSafeLock()
        self.indexes: weakref.WeakValueDictionary[str, PackIndex] = (
            weakref.WeakValueDictionary())


def index_of(folder: str, identity: tuple[int, int] | None = None) -> PackIndex:
    """The process-wide index of the packs in ``folder`` (one per dagnb context: a test's
    fresh context reads the packs anew, as a new process would), whatever the spelling
    of the cache folder: found by the folder's ``identity`` (device and inode, taken
    here when not given), or by its spelling while there is no such folder (then the
    index made meanwhile is the one found once the folder is made). The stores of the
    folder share it while one of them lives (see :class:`_LiveIndexes`)."""
    identity = identity or folder_identity(os.path.dirname(folder))
    live = context().get("cache.packs", _LiveIndexes)
    spelled = f"spelled:{folder}"
    with live.lock:
        if identity is None:
            index = live.indexes.get(spelled)
            if index is None:
                index = live.indexes[spelled] = PackIndex(folder)
            return index
        name = f"identity:{identity}"
        index = live.indexes.get(name)
        if index is None:
            index = live.indexes.get(spelled)
        if index is None or (index.folder != folder and folder_identity(
                os.path.dirname(index.folder)) != identity):
            index = PackIndex(folder)  # none, or its folder is gone and its inode reused
        live.indexes[name] = index
    if index.folder != folder and not index.settled:  # two spellings of one folder: the
        real_root = os.path.realpath(os.path.dirname(folder))  # one no symlink can move
        index.settle_folder(os.path.join(real_root, os.path.basename(folder)))
    return index


class PackWriter:
    """Appends records to a pack this writer holds (see the module docstring), and an
    entry per record to the pack's keys file (``<name>.pack.keys``)::

        "DGKY" | entry size u32 | xxh3_64 of the pack's name u64 |
        entries: xxh3_128 of the record's step and key | offset u64 | length u32 |
                 chain u64: xxh3_64 of the file before it

    so that a fresh process finds a key's record by searching a file some 20 times
    smaller than the pack. The entry is written after the record: the file covers a
    whole first part of the pack, and a reader walks what comes after it. A writer
    only adopts a pack its keys file covers whole; if the file cannot be written to,
    the writer stops writing it (readers walk the rest of the pack).
    """

    def __init__(self, index: PackIndex) -> None:
        self.index = index
        self._descriptor: int | None = None
        self._name = ""
        self._lock = threading.Lock()
        self._keys: int | None = None  # the keys file's descriptor
        self._hasher = xxhash.xxh3_64()  # of the keys file so far
        self._covered = 0  # the bytes of the pack the keys file covers
        self._entries = 0  # in the keys file
        self._sealed = 0  # of them, those its sealed index was made of
        self._pid = os.getpid()  # of the process that took the pack (a forked child's
        #                          copy of this writer neither seals nor writes there)
        _WRITERS.add(self)

    def append(self, record_bytes: bytes, record: Record) -> None:
        """Write one record with one ``write()``; the index takes it in."""
        with self._lock:
            descriptor = self._open()
            before = os.lseek(descriptor, 0, os.SEEK_END)
            try:
                written = os.write(descriptor, record_bytes)
            except OSError:
                self._release()  # what it wrote may be torn: never appended to again
                raise
            if written != len(record_bytes):  # a full disk: this pack ends torn
                self._release()
                raise OSError(f"pack {self._name!r}: only {written} of "
                              f"{len(record_bytes)} bytes written")
            record.pack = self._name
            self.index.grew(self._name, before, record_bytes, record)
            self._add_key(record_bytes, before)

    def _add_key(self, record_bytes: bytes, before: int) -> None:
        """The keys file's entry of the record just written at ``before``."""
        if self._keys is None:
            return
        if before != self._covered:  # the file would skip records: it ends here
            self._close_keys()
            return
        entry = _key_entry(self._hasher, _record_needle(record_bytes), before, len(record_bytes))
        try:
            written = os.write(self._keys, entry)
        except OSError:
            written = -1
        if written != len(entry):  # (a torn last entry is left out by readers)
            self._close_keys()
            return
        self._covered = before + len(record_bytes)
        self._entries += 1

    def _close_keys(self) -> None:
        if self._keys is not None:
            with contextlib.suppress(OSError):
                os.close(self._keys)
            self._keys = None

    def _open(self) -> int:
        """The descriptor of the pack held, opened (or adopted) on first use, and again
        if the pack was removed meanwhile (``dagnb cache clear``)."""
        if self._descriptor is not None:
            if os.getpid() == self._pid and os.fstat(self._descriptor).st_nlink > 0:
                return self._descriptor
            self._release()  # removed meanwhile, or a forked child's: a pack of its own
        os.makedirs(self.index.folder, exist_ok=True)
        self.index.touch()
        self.index.refresh()
        for name in sorted(self.index.sizes):
            descriptor = self._hold(name)
            if descriptor is None:
                continue
            # what the last holder wrote is read first; a pack ending torn (a crash) is
            # left as it is: a record after the torn one would never be read; nor is
            # one whose keys file does not cover it whole
            size = os.fstat(descriptor).st_size
            if self.index.settle(name) == size and self._adopt_keys(name, size):
                return self._held_now(descriptor, name)
            os.close(descriptor)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        descriptor = self._hold(name, create=True)
        if descriptor is None:  # a new file nobody else holds: this file system has no flock
            with contextlib.suppress(OSError):
                os.unlink(f"{self.index.folder}/{name}")
            raise OSError(errno.ENOLCK, f"cannot lock a new pack in {self.index.folder!r}; "
                          "this entry gets a folder")
        self._new_keys(name)
        self.index.bump()  # a pack more: the other processes list the folder again
        return self._held_now(descriptor, name)

    def _held_now(self, descriptor: int, name: str) -> int:
        self._descriptor, self._name, self._pid = descriptor, name, os.getpid()
        self.index.own.add(name)
        return descriptor

    def _new_keys(self, name: str) -> None:
        """Start the keys file of a new pack (none, if it cannot be made)."""
        self._close_keys()
        path = f"{self.index.folder}/{name}{KEYS}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        head = _keys_head(name)
        try:
            self._keys = os.open(path, flags, 0o666)
            if os.write(self._keys, head) != len(head):
                self._close_keys()
        except OSError:
            self._close_keys()
            return
        self._hasher = xxhash.xxh3_64(head)
        self._covered, self._entries, self._sealed = 0, 0, 0

    def _adopt_keys(self, name: str, size: int) -> bool:
        """Whether the keys file of pack ``name`` covers its ``size`` bytes whole (then
        this writer appends to it)."""
        self._close_keys()
        path = f"{self.index.folder}/{name}"
        keys = _read_keys(path, name, size)
        if keys is None or keys.covered != size:
            return False
        try:
            flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            descriptor = os.open(path + KEYS, flags)
        except OSError:
            return False
        if os.fstat(descriptor).st_size != len(keys.blob):  # a torn entry at its end
            os.close(descriptor)
            return False
        self._keys, self._hasher, self._covered = descriptor, xxhash.xxh3_64(keys.blob), size
        self._entries = (len(keys.blob) - _KEYS_HEAD.size) // _KEY.size
        self._sealed = sealed_entries(path, _name_digest(name))
        return True

    def _hold(self, name: str, create: bool = False) -> int | None:
        """The pack opened for appending with its ``flock`` taken, or None if it is
        held, gone, or not ours to write (another user's)."""
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        path = f"{self.index.folder}/{name}"
        try:
            descriptor = os.open(path, flags, 0o666)
        except OSError:
            if create:
                raise
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _still_named(descriptor, path):  # compacted away before the lock
                raise FileNotFoundError(path)
        except OSError:
            os.close(descriptor)
            return None
        return descriptor

    def close(self, seal: bool = True) -> None:
        """Let go of the pack (another writer may adopt it), sealed first if it grew
        enough since it last was (:func:`~dagnb.cache.sealed.should_seal`) unless
        ``seal`` is False (a compaction is about to rewrite it)."""
        if os.getpid() != self._pid:  # a forked child's copy (its lock may have been
            self._release()           # held by another thread at the fork): let go only
            return
        with self._lock:
            if seal:
                self._seal()
            self._release()

    def _seal(self) -> None:
        """Write the pack's sealed index if its keys file covers it whole and it grew
        enough; this process's own writer only (a forked child's copy is not)."""
        if (self._keys is None or self._descriptor is None
                or not should_seal(self._entries, self._sealed)
                or not os.access(self.index.folder, os.W_OK)):  # (no index can be put
            return                                              # there: sort nothing)
        path = f"{self.index.folder}/{self._name}"
        try:
            size = os.fstat(self._descriptor).st_size
            keys = _read_keys(path, self._name, size) if size == self._covered else None
        except OSError:
            return
        if keys is not None and keys.covered == size:
            _seal(path, keys.blob, size)
            self._sealed = self._entries

    def _release(self) -> None:
        """Let go of the pack and its keys file."""
        self._close_keys()
        if self._descriptor is not None:
            self.index.own.discard(self._name)
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None

    def __del__(self) -> None:
        # A store dropped without close() (a Memory gone out of scope): sealed here, or
        # its pack never would be. Unreachable: no other thread holds the lock.
        try:
            if os.getpid() == self._pid:
                self._seal()
        except Exception:  # (at interpreter exit, modules may be half torn down)
            pass
        self._release()


def _renew_writer(writer: PackWriter) -> None:
    """In a forked child (see :mod:`dagnb.cache.forks`): a new lock (its copy of the
    parent's pack is let go of at its next use, see :meth:`PackWriter._open`)."""
    writer._lock = threading.Lock()


def _renew_index(index: PackIndex) -> None:
    """In a forked child: a new lock, and what a thread of the parent half read (a walk
    of the packs, a refresh) and the packs it held as its own are forgotten: the packs
    are read again when next asked."""
    index._lock = threading.RLock()
    index.own.clear()
    index.reset()


_WRITERS: weakref.WeakSet[PackWriter] = weakref.WeakSet()
_INDEXES: weakref.WeakSet[PackIndex] = weakref.WeakSet()
renew_in_child(_WRITERS, _renew_writer)
renew_in_child(_INDEXES, _renew_index)


def iter_pack_files(folder: str) -> Iterator[str]:
    """The paths of the packs in ``folder``, of their keys files and sealed indexes, and
    of sealed indexes being written."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if name.endswith((SUFFIX, f"{SUFFIX}{KEYS}", f"{SUFFIX}{SEALED}")) or (
                is_seal_temporary(name)):
            yield f"{folder}/{name}"
