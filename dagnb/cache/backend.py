"""Where cache entries live: a six-method backend interface and the local filesystem one.

Modeled on joblib's ``StoreBackendBase``: a backend keeps *folders* addressed by a step
name and a key, and can read one, write one whole (atomically), tell whether one exists,
list them, remove one and lock one; nothing more. The :class:`~dagnb.cache.Store` on
top knows entries, TTLs, damaged entries, the journal of hits and statistics, written
once for every backend, so an object-storage backend (with a local folder to stage and
read through) implements the same six methods. Names starting with a dot
(``.damaged``, ``.access``) hold the store's own folders and are never listed as steps.
Backends are registered by name.

Layout of the local backend::

    <root>/<step>/<key>/meta.json         the entry's metadata (written once)
    <root>/<step>/<key>/out/              the step's output files, result.json / result.pkl
    <root>/<step>/<key>/logs.jsonl        captured log lines (none for a silent step)
    <root>/.access/<name>/journal.jsonl   uses of entries, one folder per flush
    <root>/.damaged/<step>--<key>--<id>/  entries found damaged, moved aside
    <root>/.packs/<name>.pack             small entries, as records (dagnb.cache.pack)
    <root>/.packs/<name>.pack.keys        where each record of that pack is, by key
    <root>/.packs/<name>.pack.idx         the same, one per key, sorted (dagnb.cache.sealed)
    <root>/.unpacked/<step>/<key>-<stamp>/ folders of packed entries, made when asked for
    <root>/.locks/keys.lock               per-key inter-process locks: a byte each (Linux)
    <root>/.locks/<step>/<key>.lock       per-key inter-process locks elsewhere
    <root>/.scratch/                      folders being assembled, fresh output folders,
                                          and replaced or removed entries being deleted
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import errno
import fcntl
import functools
import os
import platform
import re
import shutil
import stat
import struct
import sys
import time
import uuid
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import filelock
import xxhash

from dagnb.errors import CacheError

__all__ = [
    "Item",
    "KeyRangeLock",
    "LocalBackend",
    "Lock",
    "Stamp",
    "StoreBackend",
    "backend_names",
    "get_backend",
    "make_folder",
    "register_backend",
]

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode) of meta.json: changes when rewritten


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
    """One folder as a backend read it.

    Attributes
    ----------
    path
        A local folder holding the item's files (for a remote backend, its local copy).
    meta
        The bytes of the folder's ``meta.json``, or None when it has none.
    version
        Equal for two reads of an unchanged folder, different once it was rewritten.
    """

    path: Path
    meta: bytes | None
    version: Hashable


class Lock(Protocol):
    """An inter-process lock of one key (``filelock.FileLock`` is one)."""

    @property
    def is_locked(self) -> bool:
        """Whether someone holds it."""

    def acquire(self) -> Any:
        """Wait for the lock; raise a ``TimeoutError`` past the lock's timeout."""

    def release(self) -> None:
        """Let the next waiter in."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: object) -> None: ...


class StoreBackend(abc.ABC):
    """The operations a :class:`~dagnb.cache.Store` needs from where entries live.

    Attributes
    ----------
    name
        The name the backend is registered under.
    root
        A local folder the store stages new folders in (``<root>/.scratch``): for the
        local backend the cache itself, for a remote one its local tier.
    """

    name: ClassVar[str]
    root: Path

    @abc.abstractmethod
    def read(self, step: str, key: str) -> Item | None:
        """The folder ``step/key``, or None when there is none."""

    @abc.abstractmethod
    def write(self, step: str, key: str, folder: Path, *, refresh: bool = False) -> None:
        """Put the finished local ``folder`` in place as ``step/key``, replacing any
        folder there, so that a reader sees the old one or the new one, whole. The
        ``folder`` is consumed (moved or deleted). ``refresh``: the step ran again on
        purpose, so a copy shared with other machines is replaced too (a shared store
        otherwise keeps the first writer's entry of a key)."""

    def glance(self, step: str, key: str) -> Item | None:
        """The folder ``step/key`` as :meth:`read` gives it, fetching nothing: a backend
        that keeps entries elsewhere (a store URL) gives one it does not hold locally by
        its metadata alone, in an Item whose ``path`` is not there (``plan`` and
        ``explain`` read the cache and write nothing). Default: :meth:`read`."""
        return self.read(step, key)

    def unreached(self) -> str | None:
        """Why entries may be where this process could not read them just now (a store
        resting after a failed or refused request, said with its URL), so a miss may not
        be one; else None."""
        return None

    def add(self, step: str, key: str, folder: Path) -> None:
        """Put the finished local ``folder`` in place as the new name ``step/key`` of a
        store that is there: housekeeping (the hit counts' journal) written after a
        run, which must not make again a cache folder removed meanwhile."""
        self.write(step, key, folder)

    @abc.abstractmethod
    def exists(self, step: str, key: str) -> bool:
        """Whether the folder ``step/key`` is there (whole or damaged)."""

    @abc.abstractmethod
    def names(self, step: str | None = None) -> list[str]:
        """The sorted steps, or the keys of ``step``; never a name starting with a dot."""

    @abc.abstractmethod
    def remove(self, step: str, key: str) -> bool:
        """Remove ``step/key`` so no reader sees it half-deleted; False if it was not there."""

    @abc.abstractmethod
    def lock(self, step: str, key: str, timeout: float = -1) -> Lock:
        """The inter-process lock of ``step/key`` (``timeout`` in seconds, -1 for none)."""


_BACKENDS: dict[str, type[StoreBackend]] = {}


def register_backend(name: str, backend: type[StoreBackend]) -> None:
    """Make ``backend`` available as ``Store(backend=name)``."""
    if not (isinstance(backend, type) and issubclass(backend, StoreBackend)):
        raise CacheError(f"backend {backend!r} must be a StoreBackend subclass")
    _BACKENDS[name] = backend


def backend_names() -> frozenset[str]:
    """The names backends are registered under (``"local"``, and any a plugin added)."""
    return frozenset(_BACKENDS)


def get_backend(name: str) -> type[StoreBackend]:
    """The backend class registered as ``name``."""
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        where = "/path/to/folder" if name == "file" else "bucket/cache"
        store = (f"; a store is named by its location's URL instead, such as "
                 f"Memory('{name}://{where}')" if name in _STORE_WORDS else "")
        raise CacheError(f"cache backend {name!r} is not registered; use one of {known}"
                         f"{store}") from None


# backend names a user may give meaning a store, which its location's scheme names
_STORE_WORDS = frozenset({"s3", "gs", "gcs", "az", "abfs", "adl", "file", "ftp", "sftp"})


# A step's or a cached function's name, or a key: what a cache folder holds, nothing a
# path reads otherwise ('..', '.git'). A name from outside (a store's listing, a pack
# record written by hand) that is not one was made into a path outside the cache folder.
is_entry_name = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.\-]*").fullmatch


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _stamp_or_none(path: str) -> Stamp | None:
    try:
        return _stamp(os.stat(path))
    except OSError:
        return None


def make_folder(path: Path) -> Path:
    """``mkdir -p path``, moving aside a *file* found where a folder of the cache must be
    (``.runs``, ``.access``, ``.damaged``, a step's folder): renamed to
    ``<name>.not-a-folder-<id>`` next to it, kept for whoever put it there, so the cache
    repairs itself instead of failing on every run."""
    for _attempt in range(3):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in (path, *path.parents) if p.is_file()), None)
            if blocker is None:
                continue  # a folder appeared meanwhile: try again
            with contextlib.suppress(FileNotFoundError):
                os.rename(blocker, blocker.with_name(
                    f"{blocker.name}.not-a-folder-{uuid.uuid4().hex[:8]}"))
    path.mkdir(parents=True, exist_ok=True)  # the error of the last try, if it fails
    return path


def _remove_if_empty(folder: str) -> None:
    """Remove a step's folder its last entry left empty; one another process saved an
    entry in meanwhile stays (a write that finds it gone makes it again), as does one
    gone already."""
    try:
        os.rmdir(folder)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise


def folder_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of folder ``path``: the same for every spelling of it (a
    symlink, a relative path), with one ``stat`` where ``realpath`` takes one per part
    of the path. None when there is no such folder."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None


_ACCESS_AS_EFFECTIVE = os.access in os.supports_effective_ids


def surely_absent(path: str) -> bool:
    """Whether nothing is at ``path`` as this process's effective user sees it (access
    as the real user may not search where the effective one can), told without raising
    an exception; False where it cannot be told that way."""
    return _ACCESS_AS_EFFECTIVE and not os.access(path, os.F_OK, effective_ids=True)


def _absolute(root: str | os.PathLike[str]) -> str:
    """``str(Path(root).expanduser().absolute())``, without a Path when ``root`` is an
    absolute path that a Path would not change (what ``Memory(location)`` gets). A
    relative one is the pinned folder's, where one is (a notebook's: see
    :func:`dagnb.cache.location.pin_relative_folder`), so that after a ``%cd`` a
    ``Memory()`` still shares its steps' cache."""
    text = os.fspath(root)
    if type(text) is str and _AS_PATH_SPELLS_IT(text):
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        from dagnb.cache.location import pinned_folder  # (config: not on the path above)

        pinned = pinned_folder()
        path = path if pinned is None else pinned / path
    return str(path.absolute())


# An absolute POSIX path as pathlib spells it: no empty or "." part, no trailing "/" (one
# C call: a fresh process's first Memory() pays for each instruction of checking it)
_AS_PATH_SPELLS_IT = re.compile(r"(?:/(?!\.(?:/|\Z))[^/]+)+").fullmatch


class LocalBackend(StoreBackend):
    """Entries as directories on a local (or network) filesystem.

    A read of an unchanged entry costs one ``stat``: the item read last is kept while
    the (mtime, size, inode) stamp of its ``meta.json`` is the same.
    """

    name = "local"

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self._root_text = (root if type(root) is str and _AS_PATH_SPELLS_IT(root)
                           else _absolute(root))
        self._read: dict[tuple[str, str], Item] = {}
        self.identity = folder_identity(self._root_text)  # (None: no folder yet)
        if not create or self.identity is not None:  # read-only: a missing folder is
            return                                    # an empty cache
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cache directory {self._root_text!r} cannot be created: {exc}"
            raise CacheError(message) from exc
        self.identity = folder_identity(self._root_text)

    @functools.cached_property
    def root(self) -> Path:  # type: ignore[override]
        """The cache folder (a Path made when first asked for: a fresh process's first
        hit on a packed entry needs none)."""
        return Path(self._root_text)

    def read(self, step: str, key: str) -> Item | None:
        # String paths: this is the cache-hit path, Path objects cost microseconds.
        folder = f"{self._root_text}/{step}/{key}"
        known = self._read.get((step, key))
        if known is not None:  # read before: unchanged if its stamp is (one stat)
            try:
                stamp = _stamp(os.stat(f"{folder}/meta.json"))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                # PermissionError: a folder whose mode was changed, damaged to us
                return self._without_meta(step, key, folder)
            if known.version == stamp:
                return known
        if surely_absent(folder):  # a miss told without an exception (a first run's)
            return None
        try:  # a first read opens the file without a stat first: a cold re-run's path
            with open(f"{folder}/meta.json", "rb") as handle:
                item = Item(Path(folder), handle.read(), _stamp(os.fstat(handle.fileno())))
        except (FileNotFoundError, NotADirectoryError):
            return self._without_meta(step, key, folder)
        except OSError:  # a folder named meta.json, one we may not read or enter: damaged
            return self._without_meta(step, key, folder, _stamp_or_none(f"{folder}/meta.json"))
        self._read[(step, key)] = item
        return item

    def _without_meta(
        self, step: str, key: str, folder: str, version: Hashable = None
    ) -> Item | None:
        self._read.pop((step, key), None)
        return Item(Path(folder), None, version) if os.path.isdir(folder) else None

    def add(self, step: str, key: str, folder: Path) -> None:
        # relative to the folder's descriptor: in a folder removed meanwhile, both fail
        root = os.open(self._root_text, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        try:
            try:
                os.mkdir(step, dir_fd=root)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(step, dir_fd=root).st_mode):
                    make_folder(self.root / step)  # a file in the way: moved aside
            os.rename(folder, f"{step}/{key}", dst_dir_fd=root)
        finally:
            os.close(root)

    def write(self, step: str, key: str, folder: Path, *, refresh: bool = False,
              kept_for: Callable[[], str | None] | None = None) -> str | None:
        """:meth:`StoreBackend.write`; ``kept_for``, asked only when a folder is there
        to replace: who reads it now (a live run's ``pid N``), or None. When someone
        does, the folder there is kept and ``folder`` left as it is: that answer is
        returned (None: ``folder`` was put in place)."""
        target = self.root / step / key
        make_folder(target.parent)
        aside: list[Path] = []
        for _attempt in range(5):  # another process may write the same key meanwhile
            try:
                os.rename(folder, target)
                break
            except OSError:
                if not target.parent.is_dir():  # emptied and removed by a remove meanwhile
                    make_folder(target.parent)
                    continue
                if not target.exists():
                    raise
            # (a reader's $DAGNB_IN names the key's folder: replaced, it would read
            # two versions, or none between the renames below)
            reader = None if kept_for is None else kept_for()
            if reader is not None:
                return reader
            kept_for = None  # (asked once: the same key)
            # Replace: move the old folder aside, rename the new one in, then delete.
            old = self._scratch(".old-")
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, old)
                aside.append(old)
        else:
            raise CacheError(f"entry {str(target)!r} could not be replaced")
        self._read.pop((step, key), None)
        for old in aside:
            shutil.rmtree(old, ignore_errors=True)
        return None

    def exists(self, step: str, key: str) -> bool:
        folder = f"{self._root_text}/{step}/{key}"  # (most saves find none: no exception)
        return not surely_absent(folder) and os.path.isdir(folder)

    def names(self, step: str | None = None) -> list[str]:
        folder = self.root if step is None else self.root / step
        try:
            children = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(c.name for c in children if not c.name.startswith(".") and c.is_dir())

    def remove(self, step: str, key: str) -> bool:
        trash = self._scratch(".trash-")
        try:
            os.rename(self.root / step / key, trash)  # readers see it whole or not at all
        except (FileNotFoundError, NotADirectoryError):
            return False
        self._read.pop((step, key), None)
        shutil.rmtree(trash, ignore_errors=True)
        if not step.startswith("."):  # (a step's, not .access or .damaged)
            _remove_if_empty(f"{self._root_text}/{step}")
        return True

    def lock(self, step: str, key: str, timeout: float = -1) -> Lock:
        if _RANGE_LOCKS:  # one file for the cache, made once: a miss creates no file
            return KeyRangeLock(f"{self._root_text}/.locks/keys.lock", f"{step}/{key}", timeout)
        path = self.root / ".locks" / step / f"{key}.lock"
        make_folder(path.parent)
        # preserve_lock_file: unlinking on release races with a waiter holding the old inode.
        return filelock.FileLock(
            str(path), timeout=timeout, thread_local=False, preserve_lock_file=True
        )

    def _scratch(self, prefix: str) -> Path:
        """A fresh name under ``.scratch`` (same filesystem: a rename moves it there)."""
        scratch = make_folder(self.root / ".scratch")
        return scratch / f"{prefix}{uuid.uuid4().hex}"


# Open-file-description byte-range locks (Linux): owned by an open file like flock's, so
# released when the holder dies and exclusive between threads, but one byte per key.
_RANGE_LOCKS = (
    sys.platform == "linux" and hasattr(fcntl, "F_OFD_SETLKW")
    and platform.machine() in ("x86_64", "aarch64")  # struct flock as packed below
)
_FLOCK = struct.Struct("hhqqi4x")  # l_type, l_whence, l_start, l_len, l_pid (0 for OFD)
_POLL_S = 0.01
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | _CLOEXEC


class KeyRangeLock:
    """The inter-process lock of one key: one byte of its step's lock file, locked with
    an OFD lock (``F_OFD_SETLKW``).

    Behaves as the ``filelock.FileLock`` it replaces: reentrant, not tied to a thread,
    ``filelock.Timeout`` past ``timeout`` seconds (-1 waits for ever), let go by the
    system when its process dies. Unlike a lock file per key, a miss creates no file.
    Where the lock file cannot be opened for writing (a read-only mount, a folder of
    another user), the lock is taken holding nothing: such a process stores nothing for
    others to wait for, and its step or call must still run (its save then warns).
    """

    __slots__ = ("_count", "_descriptor", "_offset", "path", "timeout")

    def __init__(self, path: str, key: str, timeout: float = -1) -> None:
        self.path, self.timeout = path, timeout
        self._offset = xxhash.xxh3_64_intdigest(key.encode()) >> 1  # a byte per key
        self._descriptor: int | None = None
        self._count = 0

    @property
    def is_locked(self) -> bool:
        return self._count > 0

    def acquire(self) -> KeyRangeLock:
        if self._count == 0:
            self._descriptor = self._lock()
        self._count += 1
        return self

    def acquire_now(self) -> bool:
        """Take the lock if nobody holds it, without waiting; whether it was taken.
        (:meth:`_open`, :meth:`_try` and :meth:`_request` written out: a first run
        takes a lock per step, most of them free.)"""
        if self._count == 0:
            try:
                descriptor = os.open(self.path, _LOCK_FLAGS, 0o666)
            except OSError:  # (no file yet, or one it may not write: _open sorts them)
                descriptor = self._open()
            if descriptor is None:  # (the cache cannot be written: nothing to hold)
                self._count += 1
                return True
            try:
                fcntl.fcntl(descriptor, fcntl.F_OFD_SETLK, _FLOCK.pack(
                    fcntl.F_WRLCK, os.SEEK_SET, self._offset, 1, 0))
            except (BlockingIOError, PermissionError):
                os.close(descriptor)
                return False
            except BaseException:  # (ENOLCK, an interrupt): not leaked
                os.close(descriptor)
                raise
            self._descriptor = descriptor
        self._count += 1
        return True

    def release(self) -> None:
        if self._count == 0:
            return
        self._count -= 1
        if self._count == 0 and self._descriptor is not None:
            descriptor = self._descriptor
            try:
                os.close(descriptor)  # closing the description lets go of its lock
            finally:  # even if interrupted: __del__ must not close a reused number
                self._descriptor = None

    def _lock(self) -> int | None:
        descriptor = self._open()
        if descriptor is None:
            return None
        try:
            if self.timeout < 0:
                fcntl.fcntl(descriptor, fcntl.F_OFD_SETLKW, self._request())
                return descriptor
            deadline = time.monotonic() + self.timeout
            while not self._try(descriptor):
                if time.monotonic() >= deadline:
                    raise filelock.Timeout(self.path)
                time.sleep(_POLL_S)
            return descriptor
        except BaseException:
            os.close(descriptor)
            raise

    def _try(self, descriptor: int) -> bool:
        try:
            fcntl.fcntl(descriptor, fcntl.F_OFD_SETLK, self._request())
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _request(self) -> bytes:
        return _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, self._offset, 1, 0)

    def _open(self) -> int | None:
        """The lock file opened for writing (made if need be); None where this process
        may not write it."""
        try:
            try:
                return os.open(self.path, _LOCK_FLAGS, 0o666)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                return os.open(self.path, _LOCK_FLAGS, 0o666)
        except OSError as exc:
            if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
                return None
            raise

    def __enter__(self) -> KeyRangeLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)

    def __repr__(self) -> str:
        return f"KeyRangeLock({self.path!r}, offset={self._offset})"


register_backend("local", LocalBackend)
