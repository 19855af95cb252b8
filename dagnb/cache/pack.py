"""Packs: small cache entries as records appended to a few files, read into one index.

A folder per entry costs a first run several ``mkdir``, ``open`` and ``rename`` calls per
step, and a fresh process an ``open`` and a parse per hit. An entry with no output files
and a small record (:data:`RECORD_LIMIT`: metadata, logs and an inline result) is instead
one record appended with one ``write()`` to ``<cache>/.packs/<name>.pack`` (its format:
:mod:`dagnb.cache.pack_records`).

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

Each pack has a keys file, ``<name>.pack.keys`` (see
:class:`~dagnb.cache.pack_writer.PackWriter`): an entry per record, appended after it,
with the xxh3_128 of its step and key, its offset and length, and a chain digest. A
fresh process reads the keys files rather than the packs, finds the keys it is asked for
there (``rfind``, then a dict after :data:`SEARCH_KEYS` keys) and reads only those
records (one ``pread`` each, from the pack opened when its keys file was read), checked
as any record is; what a keys file does not cover (records written since, or after a
crash) is walked. The record a keys file gives a key is that pack's last of it, and
takes the place of another pack's by the same rule as a walk. A keys file is believed
only whole: of its pack (its head names it), its last entry's chain holding over
everything before it, covering no more than the pack holds; a record it points to that
is not the key's makes the index walk the packs instead.

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
:class:`~dagnb.cache.store.DamagedEntryWarning` (a searched pack's damaged record too);
a torn last record is not, once its key has another record (a rebuilt entry, a
tombstone): it lost nothing then; nor in the process whose write tore it (a full disk:
that save said it stored nothing). ``dagnb cache verify`` sets a damaged record aside
with a tombstone of its key, so it is a plain miss from then on.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import itertools
import mmap
import operator
import os
import sys
import time
import uuid
import weakref
from _weakref import _remove_dead_weakref  # (as WeakValueDictionary uses it)
from collections.abc import Callable, Iterator
from typing import NamedTuple

import xxhash

from dagnb.cache.backend import folder_identity
from dagnb.cache.forks import ForkSafeLock, WeakRefs, renew_in_child
from dagnb.cache.pack_keys import (
    _KEY_SIZE,
    KEYS,
    READ_ONLY,
    SEARCH_KEYS,
    _Keys,
    _opened_with_keys,
)
from dagnb.cache.pack_records import (
    _DAMAGED,
    _FRAME,
    _HEAD,
    _NAMES,
    _TAIL,
    ENTRY,
    MAGIC,
    RECORD_LIMIT,
    SUFFIX,
    TOMBSTONE,
    Record,
    _ends_whole,
    _kind_of,
    _last_record,
    _pack_of,
    _record_of,
    _Slot,
    _stamp_of,
    _tail,
    _torn_key,
    _whole_record,
    _wins,
    decode,
    encode,
)
from dagnb.cache.sealed import SEALED, is_seal_temporary
from dagnb.config import made

__all__ = [
    "ENTRY",
    "RECORD_LIMIT",
    "TOMBSTONE",
    "PackIndex",
    "Problem",
    "Record",
    "decode",
    "encode",
    "index_of",
]

WALK_AFTER = 2  # a fresh process searches packs for keys until it searched them this
#                 many times over, then walks them (a walk costs about that much)
PACKS = ".packs"  # the folder of the packs, in the cache folder
GENERATION = "generation"  # a file of the packs folder that grows by a byte whenever a
#                            record others may serve is removed or replaced (see get())
_IS_PACK = operator.methodcaller("endswith", SUFFIX)  # a pack's file name
_RELIST = 5  # a refresh that meets packs vanishing (a compaction) starts over this often


_REFRESHING = object()  # PackIndex.generation while a refresh is under way


class Problem(NamedTuple):
    """Damage found in a pack (or its sealed index), and the key it cost, if known."""

    pack: str
    why: str
    where: tuple[str, str] | None = None


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

    # What a fresh index starts from, as class attributes (each is replaced, never
    # changed in place): a fresh process makes one per cache folder on its first hit.
    loaded = False
    refreshed = 0.0  # time.monotonic() of the last refresh
    _searched = 0  # bytes searched since the packs in _blobs were read
    _generation_file = -1  # kept open: an fstat costs half what a stat does
    # as seen by the last refresh (_REFRESHING: none whole, or one under way)
    generation: os.stat_result | object | None = None
    _keys_searched = 0  # searches of the keys files
    _walk_after = sys.maxsize  # the searches after which the packs are walked (_index_keys)
    _trust_keys = True  # (False while reading again after one lied)
    _read_at_generation = False  # the last refresh saw the generation hold
    _listed_at: os.stat_result | None = None  # the generation at the last listing
    _listing: frozenset[str] = frozenset()  # the files of the last listing (sealed indexes)
    settled = False  # folder has no symlink in it (see settle_folder)
    # step -> its keys in records (in their order there), of the first _by_step_count
    # keys of records (see _keys_of; at 0, a new dict is made before any is added)
    _by_step: dict[str, dict[str, None]] = {}  # noqa: RUF012 (never changed: replaced)
    _by_step_count = 0

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.records: dict[tuple[str, str], Record | _Slot] = {}
        self.sizes: dict[str, int] = {}  # pack name -> bytes read (whole records)
        self.problems: list[Problem] = []  # each reported once
        self._torn: dict[str, tuple[str, str] | None] = {}  # pack -> its torn record's key
        self._seen_problems: set[tuple[str, str]] = set()
        self._lock = _thread.RLock()  # (threading.RLock, without its Python call)
        _INDEXES.add(weakref.ref(self, _INDEXES.discard))  # (gone with the index)
        self.own: set[str] = set()  # packs a writer of this process holds
        # packs a writer of this process left torn at their end, a write failing there (a
        # full disk): that save said so, and the torn record is not reported again here
        self.torn_here: set[str] = set()
        self._blobs: dict[str, bytes] = {}  # packs read whole, searched, not walked yet
        self._generation_path = f"{folder}/{GENERATION}"
        self._keyed: dict[str, _Keys] = {}  # packs found through their keys files
        self._resolved: set[tuple[str, str]] = set()  # keys looked up in those already
        self._listed: list[str] = []  # the packs the folder held at the last listing

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
                self._generation_path, READ_ONLY)
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
        if not self.loaded:
            # read just now by this call, the generation the same all along: no fstat again
            fresh = self.refresh()
            record = self._lookup(step, key)
            if record is None or fresh:
                return record
        else:  # (_lookup's work, inline: every hit passes here)
            where = (step, key)
            record = self.records.get(where)
            if self._keyed and where not in self._resolved:
                record = self._resolve(where, record)
            if self._blobs:
                record = self._search(step, key, record)
            if type(record) is tuple:
                record = self._check(where, record)
            if record is None or record.kind != ENTRY:
                return None
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
        where = (step, key)  # (_known's work inline; get() has this inline too)
        found = self.records.get(where)
        if self._keyed and where not in self._resolved:
            found = self._resolve(where, found)
        if self._blobs:
            found = self._search(step, key, found)
        if found is None:
            return None
        if type(found) is tuple:
            found = self._check(where, found)
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
                self._problem(pack, f"a record of {where[0]}/{where[1][:12]} is damaged", where)
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
            step, key = where[0].encode(), where[1].encode()  # (_needle, inline)
            needle = _NAMES.pack(len(step), len(key)) + step + key
            digest = xxhash.xxh3_128_digest(needle)
            best = known
            for name, keys in self._keyed.items():
                try:
                    data = keys.bytes_of(digest)
                except (OSError, ValueError) as exc:  # a damaged sealed index: the packs
                    self._problem(f"{name}{SEALED}", str(exc))  # are read whole instead
                    self._distrust()
                    return self.records.get(where)
                if data is None:
                    continue
                if best is not None:  # (most keys have no other record: no check then)
                    if len(data) < _FRAME.size:  # a keys file that lies: walk the packs
                        self._distrust()
                        return self.records.get(where)
                    if _pack_of(best) == name or not _wins(
                            best, _FRAME.unpack_from(data)[3], name):  # (its stamp: only then)
                        continue  # (one of this pack known already: read past its keys file)
                record = _record_of(data, where, needle, name)  # checked now: at hand
                if record is None:  # (one shorter than a frame too)
                    self._distrust()  # damaged, or a keys file that lies: walk the packs
                    return self.records.get(where)
                best = record
            if best is not None and best is not known:
                self.records[where] = best
            self._resolved.add(where)
            self._keys_searched += 1
            if self._keys_searched == SEARCH_KEYS:
                self._index_keys()
            elif self._keys_searched > self._walk_after:
                self._walk_blobs()  # (see _index_keys)
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
        about what making them costs. Once they were searched for more keys than they
        hold, the packs are walked: a key looked up then costs a dict lookup, not a
        search of each keys file (a walk costs about what that many searches cost; a
        process that saves and looks up many keys, a notebook's, then pays neither)."""
        entries = 0
        for keys in self._keyed.values():
            keys.index()
            entries += keys.entries()
        self._walk_after = max(entries, SEARCH_KEYS)

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
                if _kind_of(best) == _DAMAGED:  # (reported as a walk's lookup would)
                    self._problem(_pack_of(best), f"a record of {step}/{key[:12]} is damaged",
                                  (step, key))
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
            self._walk_blob(name, blob)

    def _walk_blob(self, name: str, blob: bytes) -> None:
        """Walk pack ``name``, read whole as ``blob`` and only searched so far."""
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
            if self.loaded and self._only_own_since():  # (a fresh index: no call)
                self.refreshed = time.monotonic()
                return True
            self.loaded, self.generation = False, _REFRESHING
            generation = None
            for _ in range(_RELIST):
                self._read_at_generation = False
                generation = self._generation_now()
                # the packs of the last listing while the generation is what it was before
                # that listing (a writer bumps it once it made a pack; a compaction, before
                # it removes packs), else listed now; a pack removed some other way is found
                # gone when read, and the folder listed again
                if generation is not None and generation == self._listed_at:
                    names = self._listed
                else:
                    names = self._listed = self._names()
                    self._listed_at = generation
                sizes = self.sizes
                before = 0
                if sizes:  # (a fresh one has read none: no generator made for it)
                    if not set(names).issuperset(sizes):
                        self.reset()
                    before = sum(sizes.values())
                if not self._read_all(names):
                    self.reset()  # one vanished while read: a compaction, read anew
                    continue
                if sum(sizes.values()) == before:
                    self.loaded = True  # nothing taken in
                    break
                # the listing still holds if the generation is the same (one fstat), or a
                # listing now names the same packs (a writer's bump, or no generation file).
                # Not merely none gone: a listing that missed a compaction's new pack and an
                # old one it removed sees the new one now.
                seen = self._generation_file  # (the usual case inline: one fstat)
                self._read_at_generation = generation is not None and (
                    os.fstat(seen) if seen >= 0 else self._generation_now()) == generation
                if self._read_at_generation or set(names) == set(self._names()):
                    self.loaded = True  # no change since
                    break
                self._listed_at = None  # packs came or went meanwhile: list again
            self.generation = generation if self.loaded else _REFRESHING
            self.refreshed = time.monotonic()
            return self.loaded and self._read_at_generation

    def _read_all(self, names: list[str]) -> bool:
        """Take in what packs ``names`` gained (each, even after one vanished; but the
        packs a writer of this process holds, read already); False if one vanished."""
        whole = True
        own, sizes = self.own, self.sizes
        for name in names:  # (a loop, not a comprehension: no function made and called)
            if (name not in own or name not in sizes) and not self._read(name):
                whole = False
        return whole

    def _only_own_since(self) -> bool:
        """Whether the packs read are all this process's and the generation is what
        the last whole refresh saw: then no other process wrote here since (one that
        makes a pack bumps the generation), and there is nothing to read (one
        ``fstat``: a first run's look under each key's lock)."""
        return (self.loaded and type(self.generation) is os.stat_result
                and self.own.issuperset(self.sizes)
                and self._generation_now() == self.generation)

    def others_may_have_written(self) -> bool:
        """Whether a :meth:`refresh` may find anything new: False once the packs read
        are all this process's and the generation is what the last refresh saw (one
        ``fstat``, see :meth:`_only_own_since`)."""
        return not self._only_own_since()

    def _names(self) -> list[str]:
        """The packs of the folder now; the whole listing is kept in :attr:`_listing`
        (a pack read fresh looks for no sealed index the listing had none of: the
        failed ``open`` took 17 µs of a fresh process's first hit of 260. One sealed
        since is read through its keys file, as before it was sealed.)"""
        try:
            listing = os.listdir(self.folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        self._listing = frozenset(listing)  # (no Python loop)
        return list(filter(_IS_PACK, listing))

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
        keys files and the packs searched by key (not checked yet). (:meth:`_lookup`
        does the same inline.)"""
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
            self._by_step, self._by_step_count = {}, 0
            self.sizes.clear()
            self._blobs.clear()
            self._searched = 0
            self._keyed.clear()
            self._resolved.clear()
            self._keys_searched = 0
            self._walk_after = sys.maxsize
            self._torn.clear()
            self._listed_at = None  # (list again)
            self.loaded = False

    def _read(self, name: str) -> bool:
        """Take in what pack ``name`` gained; False if it vanished (a compaction)."""
        done = self.sizes.get(name, 0)
        path = f"{self.folder}/{name}"
        # (a pack searched has its size: one of _blobs is never fresh)
        fresh = done == 0 and (self._keyed or not self.records)
        try:
            if fresh and self._trust_keys:  # a fresh process: keys looked up in its keys
                # file, and the pack opened as it is now (a compaction may remove it later)
                size, keys = _opened_with_keys(path, name, f"{name}{SEALED}" in self._listing)
            else:
                size, keys = os.stat(path).st_size, None
            if size <= done:  # most packs did not grow: one stat
                return True
            if name in self._blobs:  # it grew: walk what was read, then read on
                self._walk_blobs()
                done = self.sizes.get(name, 0)
            if keys is not None:
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
        if fresh and (_ends_whole(data) or _held(path)):  # a fresh process, a pack with
            self._blobs[name] = data  # no keys file: searched for a few keys (a torn one,
            self.sizes[name] = len(data)  # rare, is walked: its torn record's key known)
            return True
        self._take(name, done, data)
        return True

    def _take(self, name: str, done: int, data: bytes) -> None:
        """Walk ``data``, read from byte ``done`` of pack ``name``."""
        path = f"{self.folder}/{name}"
        used, problem = self._scan(data, name)
        self.sizes[name] = done + used
        if problem is None and used < len(data) and not _held(path):
            self._torn[name] = _torn_key(data, used)  # nobody is writing there: for good
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

    def _problem(self, name: str, problem: str, where: tuple[str, str] | None = None) -> None:
        if (name, problem) not in self._seen_problems:
            self._seen_problems.add((name, problem))
            self.problems.append(Problem(name, problem, where))

    def _torn_problems(self) -> None:
        """Report the torn last records that nothing replaced since: a torn record of a
        key with another record (a rebuilt entry, a tombstone) lost nothing; one cut
        before its names may have cost any entry, and is reported as such."""
        torn, self._torn = self._torn, {}
        for name, where in torn.items():
            if name in self.torn_here:
                continue
            if where is None:
                self._problem(name, "its last record is torn, cut before it names its entry")
            elif self._known(*where) is None:
                self._problem(name, f"its last record, of {where[0]}/{where[1][:12]}, is torn",
                              where)

    def settle(self, name: str) -> int:
        """Read pack ``name`` to its end (its writer holds it now); the bytes of its
        whole records. Only this pack is walked, and only if it was searched (its own
        records then never meet a search of it): one found through its keys file is
        looked up there as before, what this process appends read past that file, as
        another writer's records are. (Walking every pack cost a fresh process's first
        miss 50 ms in a cache of 20,000 entries.)"""
        with self._lock:
            self._read(name)
            blob = self._blobs.pop(name, None)
            if blob is not None:
                self._walk_blob(name, blob)
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
            keys = list(self.records) if step is None else self._keys_of(step)
        found = []
        for where in keys:
            record = self._lookup(*where)
            if record is not None:
                found.append(record)
        return found

    def _keys_of(self, step: str) -> list[tuple[str, str]]:
        """The keys of ``step`` in :attr:`records`, in their order there, in the time its
        own keys take (a plan asks for each step's: a loop over every key made it
        quadratic). Keys leave :attr:`records` only all at once (:meth:`reset`, which
        empties this index too), so those it gained since are the last ones of it:
        taken from its end, nothing done where a record is added (a walk, a hit)."""
        records, by_step = self.records, self._by_step
        gained = len(records) - self._by_step_count
        if gained:
            if not self._by_step_count:  # a fresh index: its own dict (not the class's)
                by_step = self._by_step = {}
            for where in reversed(list(itertools.islice(reversed(records), gained))):
                keys = by_step.get(where[0])
                if keys is None:
                    keys = by_step[where[0]] = {}
                keys[where[1]] = None
            self._by_step_count = len(records)
        return [(step, key) for key in by_step.get(step, ())]

    @property
    def may_have_problems(self) -> bool:
        """Whether :meth:`take_problems` may find damage (asked with no lock: a miss's
        look asks, and most find none)."""
        return bool(self.problems or self._torn)

    def take_problems(self) -> list[Problem]:
        """The damage found since the last call (each reported once)."""
        with self._lock:
            self._torn_problems()
            found, self.problems = self.problems, []
        return found


def _mapped(path: str) -> mmap.mmap:
    """A whole pack, mapped rather than read: a fresh process searching a large pack for
    one key touches it once, with no copy. Packs are only ever appended to, unlinked or
    replaced by a rename, never cut short by dagnb, so the mapping stays valid."""
    with open(path, "rb") as handle:
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError:  # a file system that cannot map (some FUSE and 9p mounts)
            return handle.read()


def _held(path: str) -> bool:
    """Whether a writer holds the pack (its last record may be half written)."""
    try:
        descriptor = os.open(path, READ_ONLY)
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
    a test suite's, kept a descriptor open for each). Plain weak references in a dict:
    a ``WeakValueDictionary``'s Python methods cost a fresh process's first hit more."""

    def __init__(self) -> None:
        self.lock = ForkSafeLock()
        # ("identity", (device, inode)) or ("spelled", folder) -> its index (tuples: a
        # fresh process's first Memory() formatted the identity's ints into a name)
        self.indexes: dict[tuple[str, object], weakref.ref[PackIndex]] = {}

    def get(self, name: tuple[str, object]) -> PackIndex | None:
        found = self.indexes.get(name)
        return None if found is None else found()

    def put(self, name: tuple[str, object], index: PackIndex) -> None:
        indexes = self.indexes
        # (gone with the index: removed only while it is still the dead reference; the
        # function bound now: at exit the module's globals may be gone when it is called)
        indexes[name] = weakref.ref(
            index, lambda _, remove=_remove_dead_weakref: remove(indexes, name))


def index_of(folder: str, identity: tuple[int, int] | None = None) -> PackIndex:
    """The process-wide index of the packs in ``folder`` (one per dagnb context: a test's
    fresh context reads the packs anew, as a new process would), whatever the spelling
    of the cache folder: found by the folder's ``identity`` (device and inode, taken
    here when not given), or by its spelling while there is no such folder (then the
    index made meanwhile is the one found once the folder is made). The stores of the
    folder share it while one of them lives (see :class:`_LiveIndexes`)."""
    identity = identity or folder_identity(os.path.dirname(folder))
    live = made("cache.packs", _LiveIndexes)
    spelled, indexes = ("spelled", folder), live.indexes
    with live.lock.lock:  # (the indexes' weak references read in place: a fresh
        if identity is None:  # process's first Memory() makes no call it can spare)
            index = live.get(spelled)
            if index is None:
                index = PackIndex(folder)
                live.put(spelled, index)
            return index
        name = ("identity", identity)
        known = (found := indexes.get(name)) and found()
        index = known if known is not None else (found := indexes.get(spelled)) and found()
        if index is None or (index.folder != folder and folder_identity(
                os.path.dirname(index.folder)) != identity):
            index = PackIndex(folder)  # none, or its folder is gone and its inode reused
        if known is not index:
            live.put(name, index)
    if index.folder != folder and not index.settled:  # two spellings of one folder: the
        real_root = os.path.realpath(os.path.dirname(folder))  # one no symlink can move
        index.settle_folder(os.path.join(real_root, os.path.basename(folder)))
    return index


def _renew_index(index: PackIndex) -> None:
    """In a forked child: a new lock, and what a thread of the parent half read (a walk
    of the packs, a refresh) and the packs it held as its own are forgotten: the packs
    are read again when next asked."""
    index._lock = _thread.RLock()
    index.own.clear()
    index.reset()


_INDEXES = WeakRefs()  # the pack indexes alive (see PackIndex.__init__)
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


def sealed_packs(folder: str) -> frozenset[str]:
    """The names of the packs in ``folder`` that have a sealed index (one listing)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return frozenset()
    return frozenset(name[:-len(SEALED)] for name in names if name.endswith(SEALED))


def record_length(record: Record) -> int:
    """The bytes of ``record`` in its pack, as :func:`encode` wrote them (from its
    lengths: nothing read or encoded)."""
    names = len(record.step.encode()) + len(record.key.encode())
    return _FRAME.size + names + len(record.body) + _TAIL.size


def record_disk_bytes(record: Record, sealed: frozenset[str]) -> int:
    """What ``record`` takes on disk: its bytes in its pack, and its entry in the pack's
    keys file and, for a pack in ``sealed``, in its sealed index."""
    return record_length(record) + (2 if record.pack in sealed else 1) * _KEY_SIZE
