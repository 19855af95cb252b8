"""Packs: small cache entries as records appended to a few files, read into one index.

A folder per entry costs a first run several ``mkdir``, ``open`` and ``rename`` calls per
step, and a fresh process an ``open`` and a parse per hit. An entry with no output files
and a small record (:data:`RECORD_LIMIT`: metadata, logs and an inline result) is instead
one record appended with one ``write()`` to ``<cache>/.packs/<name>.pack``::

    magic "DGPK" | length u32 | xxh3_64 of the rest u64 |
    stamp u64 (ns) | kind u8 (1 entry, 0 tombstone) | step length u16 | key length u16 |
    step | key | body (JSON: {"meta": ..., "logs": [...]}; empty for a tombstone)

One writer appends to a pack at a time: it holds the pack's ``flock`` while it writes
there, and a store that needs a pack adopts one nobody holds (cut back to its last whole
record) or starts a new one, so there are about as many packs as processes that wrote
at the same time. Readers take no lock.

:class:`PackIndex` (one per cache folder and process) reads every pack once, then only
what packs grew by: ``(step, key)`` -> the newest record (by stamp) of that key; a
tombstone hides what came before it. A record is used only if its magic, its length
and its digest hold: a torn or changed record is never served. Reading a pack stops at
its first record that does not hold (a power loss tears the last records: those are
misses; a record changed in the middle ends what is read of that pack and is reported
once). Nothing is fsync'ed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator

import xxhash

from dagnb.config import context

__all__ = [
    "ENTRY",
    "RECORD_LIMIT",
    "TOMBSTONE",
    "PackIndex",
    "PackWriter",
    "Record",
    "decode",
    "encode",
    "index_of",
]

MAGIC = b"DGPK"
_HEAD = struct.Struct("<4sIQ")  # magic, length of the rest, xxh3_64 of the rest
_FIXED = struct.Struct("<QBHH")  # stamp (ns), kind, step length, key length
ENTRY, TOMBSTONE = 1, 0
RECORD_LIMIT = 64 * 1024  # an entry whose record would be larger keeps a folder
PACKS = ".packs"  # the folder of the packs, in the cache folder
SUFFIX = ".pack"


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
    return _HEAD.pack(MAGIC, len(rest), xxhash.xxh3_64_intdigest(rest)) + rest


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
        if start + length > end:
            return records, offset, problems, True
        rest = data[start:start + length]
        record = None
        if xxhash.xxh3_64_intdigest(rest) == digest:
            record = _record(rest, pack)
        if record is None:
            problems.append(f"the record at byte {offset} does not match its digest")
        else:
            records.append(record)
        offset = start + length
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


class PackIndex:
    """The newest record of every key in the packs of one cache folder.

    Shared by the stores of that folder in this process (:func:`index_of`), so that a
    removal through one is seen by the others at once. A removal by another process is
    seen at this process's next miss (a hit reads nothing).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.records: dict[tuple[str, str], Record] = {}
        self.sizes: dict[str, int] = {}  # pack name -> bytes read (whole records)
        self.loaded = False
        self.problems: list[tuple[str, str]] = []  # (pack, why), each reported once
        self._seen_problems: set[tuple[str, str]] = set()
        self._lock = threading.RLock()

    def get(self, step: str, key: str) -> Record | None:
        """The live record of ``step/key`` (a dictionary lookup once loaded), or None."""
        if not self.loaded:
            self.refresh()
        record = self.records.get((step, key))
        return record if record is not None and record.kind == ENTRY else None

    def refresh(self) -> None:
        """Read what the packs gained since the last read; start over if one vanished."""
        with self._lock:
            try:
                names = [n for n in os.listdir(self.folder) if n.endswith(SUFFIX)]
            except (FileNotFoundError, NotADirectoryError):
                names = []
            if any(name not in names for name in self.sizes):
                self.reset()
            for name in names:
                self._read(name)
            self.loaded = True

    def reset(self) -> None:
        """Forget everything read (the packs were removed or rewritten)."""
        with self._lock:
            self.records.clear()
            self.sizes.clear()
            self.loaded = False

    def _read(self, name: str) -> None:
        done = self.sizes.get(name, 0)
        path = f"{self.folder}/{name}"
        try:
            if os.stat(path).st_size <= done:  # most packs did not grow: one stat
                return
            with open(path, "rb") as handle:
                handle.seek(done)
                data = handle.read()
        except OSError:  # removed meanwhile, or unreadable: nothing from it
            return
        records, used, problems, torn = decode(data, name)
        self.sizes[name] = done + used
        for record in records:
            self.add(record)
        if torn and not _held(path):  # nobody is writing there: torn for good
            problems.append(f"its last record, at byte {done + used}, is torn")
        for problem in problems:
            if (name, problem) not in self._seen_problems:
                self._seen_problems.add((name, problem))
                self.problems.append((name, problem))

    def settle(self, name: str) -> int:
        """Read pack ``name`` to its end (its writer holds it now); the bytes of its
        whole records."""
        with self._lock:
            self._read(name)
            return self.sizes.get(name, 0)

    def add(self, record: Record) -> None:
        """Keep ``record`` if it is the newest of its key."""
        where = (record.step, record.key)
        known = self.records.get(where)
        if known is None or record.stamp >= known.stamp:
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

    def live(self, step: str | None = None) -> list[Record]:
        """Every live record (of one step), after reading what the packs gained."""
        self.refresh()
        return [
            r for r in list(self.records.values())
            if r.kind == ENTRY and (step is None or r.step == step)
        ]

    def take_problems(self) -> list[tuple[str, str]]:
        """The damage found since the last call (each reported once)."""
        with self._lock:
            found, self.problems = self.problems, []
        return found


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


def index_of(folder: str) -> PackIndex:
    """The process-wide index of the packs in ``folder`` (one per dagnb context: a test's
    fresh context reads the packs anew, as a new process would)."""
    return context().get(f"cache.packs:{folder}", lambda: PackIndex(folder))


class PackWriter:
    """Appends records to a pack this writer holds (see the module docstring)."""

    def __init__(self, index: PackIndex) -> None:
        self.index = index
        self._descriptor: int | None = None
        self._name = ""
        self._lock = threading.Lock()

    def append(self, record_bytes: bytes, record: Record) -> None:
        """Write one record with one ``write()``; the index takes it in."""
        with self._lock:
            descriptor = self._open()
            before = os.lseek(descriptor, 0, os.SEEK_END)
            written = os.write(descriptor, record_bytes)
            if written != len(record_bytes):  # a full disk: cut the torn record off
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, before)
                raise OSError(f"pack {self._name!r}: only {written} of "
                              f"{len(record_bytes)} bytes written")
            record.pack = self._name
            self.index.grew(self._name, before, record_bytes, record)

    def _open(self) -> int:
        """The descriptor of the pack held, opened (or adopted) on first use, and again
        if the pack was removed meanwhile (``dagnb cache clear``)."""
        if self._descriptor is not None:
            if os.fstat(self._descriptor).st_nlink > 0:
                return self._descriptor
            self.close()
        os.makedirs(self.index.folder, exist_ok=True)
        self.index.refresh()
        for name in sorted(self.index.sizes):
            descriptor = self._hold(name)
            if descriptor is not None:
                # what the last holder wrote is read first; a torn tail is cut off, as
                # it would hide every record after it
                os.ftruncate(descriptor, self.index.settle(name))
                self._descriptor, self._name = descriptor, name
                return descriptor
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        descriptor = self._hold(name, create=True)
        assert descriptor is not None  # a new file: nobody else holds it
        self._descriptor, self._name = descriptor, name
        return descriptor

    def _hold(self, name: str, create: bool = False) -> int | None:
        """The pack opened for appending with its ``flock`` taken, or None if held."""
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        try:
            descriptor = os.open(f"{self.index.folder}/{name}", flags, 0o666)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            return None
        return descriptor

    def close(self) -> None:
        """Let go of the pack (another writer may adopt it)."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None

    def __del__(self) -> None:
        self.close()


def iter_pack_files(folder: str) -> Iterator[str]:
    """The paths of the packs in ``folder``."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if name.endswith(SUFFIX):
            yield f"{folder}/{name}"
