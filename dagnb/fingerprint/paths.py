"""Digests of files and directory trees, with a stat cache keyed on (path, size,
mtime_ns, inode, ctime_ns): an unchanged tree costs one ``stat`` per file."""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dagnb.config import context
from dagnb.errors import FingerprintError
from dagnb.fingerprint import hashers
from dagnb.fingerprint.hashers import new_hasher

CHUNK_SIZE = 1 << 20
MAX_DEPTH = 256  # folders nested deeper are refused by the directory walk
# A file modified within this window of being hashed may change again without its
# mtime moving (coarse filesystem clocks, 2 s on FAT/some NFS): such entries are re-hashed.
RACY_WINDOW_NS = 2_000_000_000
_EXECUTABLE = 0o111  # any of a file's x bits (path_digest's ``modes``)
_STAT_CACHE_VERSION = 2  # its entries: size, mtime_ns, inode, ctime_ns, hashed at, digest


class _StatCache:
    """(path, size, mtime_ns, inode, ctime_ns) -> content digest, in memory and in a JSON
    file. The ctime because no tool can set it back: ``tar x`` or ``cp -p`` of another
    file of the same size, mtime put back, may even reuse the inode.

    A JSON file read once per process and rewritten whole (to a temporary name, then
    renamed) when something changed: lookups are then plain dict hits, and a concurrent
    writer can only lose entries (each is re-validated by its stat signature), never
    corrupt them. sqlite would cost a query per file for the same result.
    """

    def __init__(self) -> None:
        self.entries: dict[str, list[Any]] = {}
        self.file: Path | None = None
        self.loaded = False
        self.dirty = False

    def configure(self, file: Path | None) -> None:
        if file != self.file:
            self.flush()
            self.file, self.loaded = file, False

    def clear_memory(self) -> None:
        self.entries, self.dirty, self.loaded = {}, False, False

    def get(self, path: str, st: os.stat_result) -> str | None:
        if not self.loaded:
            self._load()
        entry = self.entries.get(path)
        if entry is None or entry[:4] != [st.st_size, st.st_mtime_ns, st.st_ino,
                                          st.st_ctime_ns]:
            return None
        if st.st_mtime_ns + RACY_WINDOW_NS >= entry[4]:
            return None  # modified close to when it was hashed: its mtime cannot be trusted
        return entry[5]

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        self.entries[path] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns,
                              time.time_ns(), digest]
        self.dirty = True

    def _load(self) -> None:
        self.loaded = True
        if self.file is None:
            return
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # best effort: a missing or damaged file is an empty cache
        if (isinstance(data, dict) and data.get("algorithm") == hashers._ALGORITHM
                and data.get("version") == _STAT_CACHE_VERSION):  # (1: no ctime, not read)
            self.entries = {**data.get("entries", {}), **self.entries}

    def flush(self) -> None:
        if not self.dirty or self.file is None:
            return
        self.dirty = False
        payload = {"version": _STAT_CACHE_VERSION, "algorithm": hashers._ALGORITHM,
                   "entries": self.entries}
        temp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
            os.replace(temp, self.file)
        except OSError:
            temp.unlink(missing_ok=True)  # best effort: the cache only saves time


def _stat_cache() -> _StatCache:
    """The stat cache of the current context (a fresh context starts in memory only)."""
    return context().get("stat_cache", _StatCache)


def configure_stat_cache(file: str | os.PathLike[str] | None) -> None:
    """Persist the current context's stat cache in ``file`` (``<cache>/stat-cache.json``).

    ``None`` keeps it in memory only. The file is read on first use and written after
    each :func:`path_digest` that hashed something, and at exit.
    """
    _stat_cache().configure(None if file is None else Path(file).absolute())


def flush_stat_cache() -> None:
    """Write the stat cache file now if it changed."""
    _stat_cache().flush()


atexit.register(flush_stat_cache)


def _hash_file(path: str) -> str:
    """Digest of a file's bytes, read in chunks of at most 1 MiB into one reused buffer.

    The buffer is no larger than the file and one byte (the read that finds the end):
    a zeroed MiB per small file (a step's result, a metadata file) cost more than
    reading and hashing it. A file that grows meanwhile is still read whole.
    """
    h = new_hasher()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(min(CHUNK_SIZE, os.fstat(handle.fileno()).st_size + 1))
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            h.update(view[:count])
    return h.hexdigest()


def _file_digest(path: str, st: os.stat_result, use_cache: bool) -> str:
    if use_cache:
        digest = _stat_cache().get(path, st)
        if digest is not None:
            return digest
    digest = _hash_file(path)
    if use_cache:
        _stat_cache().put(path, st, digest)
    return digest


def path_digest(path: str | os.PathLike[str], *, use_stat_cache: bool = True,
                skip: Callable[[str], bool] | None = None, modes: bool = False,
                file_digests: dict[str, str] | None = None) -> str:
    """Hex digest of a file's content, or of a directory tree.

    A directory's digest covers every relative name (files, subdirectories, empty ones
    too) with each file's content digest, in sorted order. Symlinks are followed, and
    each folder (by device and inode) is walked once: a symlink loop or many links to
    one folder cost nothing more. Trees deeper than ``MAX_DEPTH`` are refused.

    Parameters
    ----------
    path
        A file or a directory.
    use_stat_cache
        Reuse a file's digest while its (path, size, mtime_ns, inode) is unchanged.
    skip
        Leaves out of a directory's digest each path (relative, ``a/b.txt``; a folder's
        with a ``/`` after it) for which it is true, and a folder's whole tree.
    modes
        Counts whether each file is executable, as git does (a mounted script that lost
        its exec bit fails where it ran): a file with none of its x bits digests as
        without ``modes``, so turning it on changes no digest of files that have none.
    file_digests
        Filled, for a directory, with each file's content digest by its relative name
        (``a/b.txt``), as :func:`directory_digest` fills it (not whether it is executable).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    FingerprintError
        The tree is more than ``MAX_DEPTH`` folders deep.
    """
    absolute = os.path.abspath(os.fspath(path))
    st = os.stat(absolute)
    if not os.path.isdir(absolute):
        digest = _file_digest(absolute, st, use_stat_cache)
        if modes and st.st_mode & _EXECUTABLE:
            digest = hashers.text_digest(f"x:{digest}")
    else:
        h = new_hasher()
        try:
            _feed_directory(h, absolute, "", use_stat_cache, {(st.st_dev, st.st_ino): ""},
                            skip=skip, modes=modes, digests=file_digests)
        except _TooDeep:
            raise _depth_error(absolute) from None
        digest = h.hexdigest()
    if use_stat_cache:
        flush_stat_cache()
    return digest


def directory_digest(path: str | os.PathLike[str], *, use_stat_cache: bool = True,
                     extra: Mapping[str, str] | None = None,
                     file_digests: dict[str, str] | None = None) -> str:
    """:func:`path_digest` of a directory (a step's output digest).

    ``extra`` (file name -> content digest) counts files as if written at the folder's
    top, in place of any of those names: the digest it will have once they are (a
    result not saved yet); with ``extra``, a folder not made counts as an empty one.
    ``file_digests`` is filled with each file's digest as counted (its
    :func:`path_digest`) by its name in the walk (``a/b.txt``), so that a caller who
    wants some files' digests too reads none of them again; a file counted through a
    link only (its folder walked first by that link's name) is there by that name.
    """
    root = os.path.abspath(os.fspath(path))
    if not extra and not os.path.isdir(root):
        raise NotADirectoryError(f"{os.fspath(path)!r} is not a directory")
    return _digest_with(root, extra or None, use_stat_cache, file_digests)


class _Written:
    """A file counted in a folder's digest before it is written: its name and digest."""

    __slots__ = ("digest", "name")

    def __init__(self, name: str, digest: str) -> None:
        self.name, self.digest = name, digest

    def is_dir(self) -> bool:
        return False

    def is_file(self) -> bool:
        return True


def _digest_with(root: str, extra: Mapping[str, str] | None, use_cache: bool,
                 digests: dict[str, str] | None) -> str:
    h = new_hasher()
    seen: dict[tuple[int, int], str] = {}
    if os.path.isdir(root):
        st = os.stat(root)
        seen[(st.st_dev, st.st_ino)] = ""
    try:
        _feed_directory(h, root, "", use_cache, seen, extra=extra, digests=digests)
    except _TooDeep:
        raise _depth_error(root) from None
    if use_cache:
        flush_stat_cache()
    return h.hexdigest()


def check_tree(path: str | os.PathLike[str]) -> None:
    """Walk a folder as :func:`path_digest` would, reading no file: raise what it would
    raise past ``MAX_DEPTH`` (for ``dagnb validate``, before any step runs)."""
    absolute = os.path.abspath(os.fspath(path))
    if not os.path.isdir(absolute):
        return
    st = os.stat(absolute)
    try:
        _feed_directory(_NoHash(), absolute, "", False, {(st.st_dev, st.st_ino): ""},
                        read=False)
    except _TooDeep:
        raise _depth_error(absolute) from None


def _depth_error(folder: str) -> FingerprintError:
    return FingerprintError(f"folder {folder!r} nests more than {MAX_DEPTH} levels deep; "
                            f"dagnb walks at most {MAX_DEPTH} (use a shallower folder)")


class _NoHash:
    """A hasher that keeps nothing (a walk that only checks the tree's shape)."""

    def update(self, data: bytes) -> None:
        pass


class _TooDeep(Exception):
    """Raised by the walk past ``MAX_DEPTH``; :func:`path_digest` names the root."""


def _feed_directory(
    h: Any, root: str, rel: str, use_cache: bool, seen: dict[tuple[int, int], str],
    *, read: bool = True, skip: Callable[[str], bool] | None = None,
    extra: Mapping[str, str] | None = None, digests: dict[str, str] | None = None,
    modes: bool = False,
) -> None:
    """Feed one folder's tree (each file's digest into ``digests`` too, by its name).
    A folder reached again through a symlink (a loop, or two links to one folder: a
    "DAG" that would double the work per level) is fed once, then only as a link to
    where it was first seen; trees deeper than ``MAX_DEPTH`` are refused."""
    if rel.count("/") >= MAX_DEPTH:
        raise _TooDeep
    h.update(b"D%d:%s" % (len(rel), os.fsencode(rel)))
    entries: list[Any] = []
    if extra is None or os.path.isdir(root):
        with os.scandir(root) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    if extra:  # (the top of directory_digest's folder only)
        entries = sorted([*(e for e in entries if e.name not in extra),
                          *(_Written(name, digest) for name, digest in extra.items())],
                         key=lambda entry: entry.name)
    for entry in entries:
        name = f"{rel}/{entry.name}" if rel else entry.name
        if skip is not None and skip(f"{name}/" if entry.is_dir() else name):
            continue
        raw = os.fsencode(name)
        if entry.is_dir():
            st = entry.stat()
            first = seen.setdefault((st.st_dev, st.st_ino), name)
            if first != name:  # seen before: a symlink loop or a second link
                h.update(b"L%d:%s>%s" % (len(raw), raw, os.fsencode(first)))
                continue
            _feed_directory(h, entry.path, name, use_cache, seen, read=read, skip=skip,
                            digests=digests, modes=modes)
        elif entry.is_file() and read:
            digest = (entry.digest if type(entry) is _Written
                      else _file_digest(entry.path, entry.stat(), use_cache))
            h.update(b"F%d:%s%s" % (len(raw), raw, digest.encode()))
            if modes and entry.stat().st_mode & _EXECUTABLE:
                h.update(b"x")  # (after a fixed-length digest, before the next "F", "D"...)
            if digests is not None:
                digests[name] = digest
        else:  # a broken symlink, a socket: its name still counts
            h.update(b"X%d:%s" % (len(raw), raw))
            if read and entry.is_symlink():  # and where a broken link points (latest -> v2)
                target = os.fsencode(os.readlink(entry.path))
                h.update(b">%d:%s" % (len(target), target))
