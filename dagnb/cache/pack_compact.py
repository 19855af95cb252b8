"""Compaction (:func:`compact`): the packs of a folder rewritten as one pack of their
live records, when removed and replaced records take most of their bytes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
import uuid
from typing import TYPE_CHECKING

import xxhash

from dagnb.cache.pack import record_length
from dagnb.cache.pack_keys import KEYS, _key_entry, _keys_head, _seal
from dagnb.cache.pack_records import (
    ENTRY,
    SUFFIX,
    TOMBSTONE,
    Record,
    _kind_of,
    _pack_of,
    _record_needle,
    _stamp_of,
    _tail,
    decode,
    encode,
)
from dagnb.cache.sealed import SEALED, should_seal

if TYPE_CHECKING:
    from dagnb.cache.pack import PackIndex


COMPACT_FROM = 256 * 1024  # packs smaller than this in all are not worth rewriting


def compact(index: PackIndex, *, force: bool = False) -> bool:
    """Rewrite the packs of ``index``'s folder as one pack of their live records, when
    removed and replaced records take most of their bytes (``force``: when they take
    any: a prune to a size needs their bytes back now); whether it did.

    Only packs that no writer holds can be rewritten, so it is all or nothing: with
    another process writing there, nothing is done (a later clear compacts). Records
    keep their stamps, so a reader that meets the old and the new pack at once keeps
    the same newest record of each key; a tombstone that hides an entry of another old
    pack is kept too (until the next compaction), so a reader that meets the new pack
    and only that old pack (the tombstone's already removed) does not serve it.
    """
    with index._lock:
        index.refresh()
        if not force and sum(index.sizes.values()) < COMPACT_FROM:
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
            if (sum(map(record_length, live)) >= total if force
                    else sum(len(r.body) + 64 for r in live) * 2 > total):
                return False  # (forced: nothing removed or replaced to free)
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
    whole with a rename (the keys file first). Each file is written as ``<name>.tmp``
    under its ``flock``, the keys file's held until the pack is in place: what an
    interrupted one leaves (a Ctrl-C's is removed here, a kill's is not) is known
    from a live one's by that lock (:func:`dead_leftovers`)."""
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
    temporary, held = f"{folder}/{name}{_TEMPORARY}", []
    try:
        for suffix, data in ((f"{SUFFIX}{KEYS}", keys_blob), (SUFFIX, b"".join(chunks))):
            handle = open(temporary, "xb")  # noqa: SIM115 (open until the pack is in place)
            held.append(handle)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # before the packs it replaces go: a power loss
            #                            then costs nothing that was in them
            os.rename(temporary, f"{folder}/{name}{suffix}")
    except BaseException:  # (a Ctrl-C too: a pack-sized file left that nothing frees)
        for path in (temporary, f"{folder}/{name}{SUFFIX}{KEYS}"):
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    finally:
        for handle in held:
            handle.close()
    if should_seal(len(records), 0):
        _seal(f"{folder}/{name}{SUFFIX}", keys_blob, offset)


_TEMPORARY = ".tmp"  # a compaction's file being written: <pid>-<12 hex>.tmp
_NAME = re.compile(r"(\d+)-[0-9a-f]{12}")  # a compaction's (and a writer's) pack name
_STALE_S = 3600.0  # a leftover whose writer's pid is alive still goes past this age


def dead_leftovers(folder: str) -> list[str]:
    """The files of ``folder`` that a compaction killed as it wrote its new pack left:
    its ``<name>.tmp`` and a ``<name>.pack.keys`` with no ``<name>.pack`` (nor would one
    come: their writer holds no lock on them, and its process, named by its pid, ended
    or they are over an hour old). None of them is a pack a reader reads; each is the
    size of the live records (a pack-sized file that no prune, clear or stats saw)."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name.endswith(_TEMPORARY):
            stem = name[:-len(_TEMPORARY)]
        elif name.endswith(f"{SUFFIX}{KEYS}") and name[:-len(KEYS)] not in names:
            stem = name[:-len(SUFFIX + KEYS)]
        else:
            continue
        named = _NAME.fullmatch(stem)
        if named is not None and _dead(f"{folder}/{name}", int(named.group(1))):
            found.append(f"{folder}/{name}")
    return found


def _dead(path: str, pid: int) -> bool:
    """Whether nothing writes ``path`` now: no process holds its lock, and the one
    that made it (``pid``) ended, or it is over an hour old (a pid used again)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False  # (gone meanwhile: put in place, or removed)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        age = time.time() - os.fstat(descriptor).st_mtime
    except OSError:
        return False  # held: a compaction writes it now
    finally:
        os.close(descriptor)
    return age > _STALE_S or not _running(pid)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (not ours to signal: running)
        return True
    return True
