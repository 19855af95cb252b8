"""Compaction (:func:`compact`): the packs of a folder rewritten as one pack of their
live records, when removed and replaced records take most of their bytes."""

from __future__ import annotations

import contextlib
import fcntl
import os
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
