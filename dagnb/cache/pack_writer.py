"""Appending to a pack: a :class:`PackWriter` holds one pack (its ``flock``) and
writes records there, and an entry per record to the pack's keys file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import uuid
import weakref
from typing import TYPE_CHECKING

import xxhash

from dagnb.cache.forks import renew_in_child
from dagnb.cache.pack_keys import (
    KEYS,
    _key_entry,
    _keys_head,
    _name_digest,
    _read_keys,
    _seal,
    chained_keys,
)
from dagnb.cache.pack_records import SUFFIX, Record, _record_needle
from dagnb.cache.sealed import sealed_entries, should_seal

if TYPE_CHECKING:
    from dagnb.cache.pack import PackIndex


def _still_named(descriptor: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    opened = os.fstat(descriptor)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return opened.st_nlink > 0 and (opened.st_ino, opened.st_dev) == (named.st_ino, named.st_dev)


class PackWriter:
    """Appends records to a pack this writer holds (see :mod:`dagnb.cache.pack`), and an
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
        # of them, those its sealed index was made of (None: not read yet; an adopted
        # pack's index is read whole only when it is let go of, not at the first save)
        self._sealed: int | None = 0
        self._pid = os.getpid()  # of the process that took the pack (a forked child's
        #                          copy of this writer neither seals nor writes there)
        _WRITERS.add(self)

    def append(self, record_bytes: bytes, record: Record) -> None:
        """Write one record with one ``write()``; the index takes it in."""
        with self._lock:
            descriptor = self._open()
            # (the end as the file says, not as this writer last left it: a flock that
            # locks within one host only, as some network mounts give, lets another host
            # append meanwhile, and a remembered end would write over its records)
            before = os.lseek(descriptor, 0, os.SEEK_END)
            try:
                written = os.write(descriptor, record_bytes)
            except OSError:
                self._give_up(before)  # what it wrote may be torn: never appended to again
                raise
            if written != len(record_bytes):  # a full disk: this pack ends torn
                self._give_up(before)
                raise OSError(errno.ENOSPC, f"pack {self._name!r}: only {written} of "
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
        self._held_now(descriptor, name)
        try:
            self._new_keys(name)
            self.index.bump()  # a pack more: the other processes list the folder again
        except OSError:  # (a full disk)
            self._give_up(0)
            raise
        return descriptor

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
        chained = chained_keys(f"{self.index.folder}/{name}", name, size)
        if chained is None:
            return False
        self._keys, self._hasher, self._entries = chained
        self._covered = size
        self._sealed = None  # (read when it is let go of: see _seal)
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
                or not should_seal(self._entries, self._sealed_entries())
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

    def _sealed_entries(self) -> int:
        """How many entries the held pack's sealed index was made of (read once, and
        only for a pack with enough entries to have one: see :func:`should_seal`)."""
        if self._sealed is None:
            if not should_seal(self._entries, 0):  # (fewer than one seal needs: none)
                return 0
            path = f"{self.index.folder}/{self._name}"
            self._sealed = sealed_entries(path, _name_digest(self._name))
        return self._sealed

    def _give_up(self, before: int) -> None:
        """Let go of the pack after a write into it failed (a full disk), and remove it
        if it held no record (``before``: its size then): a save that fails on a full
        disk would otherwise leave an empty pack and keys file behind, one more at each
        such save, as a pack whose keys file could not be written is never adopted."""
        if before == 0:  # (it is held: nobody else wrote there meanwhile)
            for path in (f"{self.index.folder}/{self._name}",
                         f"{self.index.folder}/{self._name}{KEYS}"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        else:  # its end may be torn now: said by the failed save, not again as damage
            self.index.torn_here.add(self._name)
        self._release()

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


_WRITERS: weakref.WeakSet[PackWriter] = weakref.WeakSet()
renew_in_child(_WRITERS, _renew_writer)
