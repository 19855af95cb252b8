"""Where cache entries live: a small backend interface and the local filesystem one.

Modeled on joblib's ``StoreBackendBase``: the backend knows files and directories
(read, write atomically, publish, move aside, list), the :class:`~dagnb.cache.Store`
on top knows entries, keys, TTLs and statistics. Every method the store calls is
declared on :class:`StoreBackend`; backends are registered by name.

Layout of the local backend::

    <root>/<step>/<key>/meta.json    the entry's metadata (written once)
    <root>/<step>/<key>/access.json  hits and last use (rewritten on flush)
    <root>/<step>/<key>/out/         the step's output files, result.json / result.pkl
    <root>/<step>/<key>/logs.jsonl   captured log lines
    <root>/<step>/.tmp-*             entries being written (renamed into place)
    <root>/.damaged/                 entries found damaged, moved aside
    <root>/.locks/<step>/<key>.lock  per-key inter-process locks
    <root>/.scratch/                 fresh output directories on the store's filesystem
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import filelock

from dagnb.errors import CacheError

__all__ = ["LocalBackend", "Stamp", "StoreBackend", "get_backend", "register_backend"]

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode) of meta.json: changes when rewritten

_TEMP_PREFIXES = (".tmp-", ".old-", ".trash-")


class StoreBackend(abc.ABC):
    """The operations a :class:`~dagnb.cache.Store` needs from where entries live."""

    name: ClassVar[str]
    root: Path

    @abc.abstractmethod
    def entry_dir(self, step: str, key: str) -> Path:
        """The directory of one entry (it may not exist)."""

    @abc.abstractmethod
    def entry_exists(self, step: str, key: str) -> bool:
        """Whether the entry directory exists, whole or damaged."""

    @abc.abstractmethod
    def stat_meta(self, step: str, key: str) -> Stamp | None:
        """The stamp of the entry's meta.json, or None when there is none (one stat)."""

    @abc.abstractmethod
    def read_meta(self, step: str, key: str) -> tuple[bytes, Stamp] | None:
        """The bytes of meta.json and their stamp, or None when it is missing."""

    @abc.abstractmethod
    def has_out(self, step: str, key: str) -> bool:
        """Whether the entry's ``out/`` directory exists."""

    @abc.abstractmethod
    def append_access(self, records: list[dict[str, Any]]) -> None:
        """Record uses of entries ({"step", "key", "hits", "last_used"}), all at once."""

    @abc.abstractmethod
    def read_access(self) -> dict[tuple[str, str], tuple[int, float]]:
        """(step, key) -> (hits, last_used), summed over every recorded use."""

    @abc.abstractmethod
    def build_dir(self, step: str) -> Path:
        """A fresh directory in which a new entry of ``step`` is assembled."""

    @abc.abstractmethod
    def scratch_dir(self, step: str) -> Path:
        """A fresh empty directory on the store's filesystem, for a step's outputs."""

    @abc.abstractmethod
    def publish(self, step: str, key: str, build: Path) -> None:
        """Move a finished build directory into place atomically, replacing any entry."""

    @abc.abstractmethod
    def remove(self, step: str, key: str) -> bool:
        """Remove an entry so no reader sees it half-deleted; False if it was not there."""

    @abc.abstractmethod
    def quarantine(self, step: str, key: str) -> Path | None:
        """Move a damaged entry under ``.damaged/``; where it went, or None if it vanished."""

    @abc.abstractmethod
    def steps(self) -> list[str]:
        """Names of the steps that have a directory."""

    @abc.abstractmethod
    def keys(self, step: str) -> list[str]:
        """Keys of the entries of ``step`` (not the temporary directories)."""

    @abc.abstractmethod
    def lock_path(self, step: str, key: str) -> Path:
        """The lock file of one key."""

    @abc.abstractmethod
    def remove_temporaries(self, older_than: float) -> int:
        """Delete leftover build/scratch directories older than ``older_than`` seconds."""

    @abc.abstractmethod
    def clear_damaged(self) -> None:
        """Delete the entries moved aside as damaged."""


_BACKENDS: dict[str, type[StoreBackend]] = {}


def register_backend(name: str, backend: type[StoreBackend]) -> None:
    """Make ``backend`` available as ``Store(backend=name)``."""
    if not (isinstance(backend, type) and issubclass(backend, StoreBackend)):
        raise CacheError(f"backend {backend!r} must be a StoreBackend subclass")
    _BACKENDS[name] = backend


def get_backend(name: str) -> type[StoreBackend]:
    """The backend class registered as ``name``."""
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise CacheError(f"cache backend {name!r} is not registered; use one of {known}") from None


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalBackend(StoreBackend):
    """Entries as directories on a local (or network) filesystem."""

    name = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self._root_text = str(self.root)
        self._access_memo: tuple[int, dict[tuple[str, str], tuple[int, float]]] | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cache directory {self._root_text!r} cannot be created: {exc}"
            raise CacheError(message) from exc

    def entry_dir(self, step: str, key: str) -> Path:
        return self.root / step / key

    def entry_exists(self, step: str, key: str) -> bool:
        return os.path.isdir(f"{self._root_text}/{step}/{key}")

    def stat_meta(self, step: str, key: str) -> Stamp | None:
        # String paths: this is the cache-hit path, Path objects cost microseconds.
        try:
            return _stamp(os.stat(f"{self._root_text}/{step}/{key}/meta.json"))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_meta(self, step: str, key: str) -> tuple[bytes, Stamp] | None:
        try:
            with open(f"{self._root_text}/{step}/{key}/meta.json", "rb") as handle:
                return handle.read(), _stamp(os.fstat(handle.fileno()))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def has_out(self, step: str, key: str) -> bool:
        return os.path.isdir(f"{self._root_text}/{step}/{key}/out")

    # Uses are a journal, one small file per flush, rather than a file per entry: a
    # fully cached re-run of 10,000 steps then writes one file, not 10,000.
    def append_access(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        folder = self.root / ".access"
        folder.mkdir(parents=True, exist_ok=True)
        _write_journal(folder, f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}", records)
        if len(_journal_files(folder)) > _JOURNAL_COMPACT_AT:
            lock = filelock.FileLock(str(folder / ".compact.lock"), timeout=0)
            with contextlib.suppress(filelock.Timeout), lock:  # one compacts, others go on
                self._compact(folder)

    def read_access(self) -> dict[tuple[str, str], tuple[int, float]]:
        folder = self.root / ".access"
        try:
            stamp = folder.stat().st_mtime_ns  # a new or compacted file changes it
        except OSError:
            return {}
        if self._access_memo is None or self._access_memo[0] != stamp:
            self._access_memo = (stamp, _sum_journals(_journal_files(folder)))
        return self._access_memo[1]

    def _compact(self, folder: Path) -> None:
        """Fold the journal into one file; uses of removed entries are dropped."""
        files = _journal_files(folder)
        live = [
            {"step": step, "key": key, "hits": hits, "last_used": last_used}
            for (step, key), (hits, last_used) in _sum_journals(files).items()
            if self.entry_dir(step, key).is_dir()
        ]
        _write_journal(folder, f"{time.time_ns()}-{os.getpid()}-compact", live)
        for path in files:  # only what was read: a concurrent writer's file stays
            with contextlib.suppress(OSError):
                path.unlink()

    def build_dir(self, step: str) -> Path:
        path = self.root / step / f".tmp-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def scratch_dir(self, step: str) -> Path:
        path = self.root / ".scratch" / f".tmp-{step}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def publish(self, step: str, key: str, build: Path) -> None:
        target = self.entry_dir(step, key)
        aside: list[Path] = []
        for _attempt in range(5):  # another process may publish the same key meanwhile
            try:
                os.rename(build, target)
                break
            except OSError:
                if not target.exists():
                    raise
            # Refresh: move the old entry aside, rename the new one in, then delete.
            old = target.parent / f".old-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, old)
                aside.append(old)
        else:
            raise CacheError(f"entry {str(target)!r} could not be replaced")
        _fsync_dir(target.parent)
        for old in aside:
            shutil.rmtree(old, ignore_errors=True)

    def remove(self, step: str, key: str) -> bool:
        target = self.entry_dir(step, key)
        trash = target.parent / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(target, trash)  # readers see the entry whole or not at all
        except (FileNotFoundError, NotADirectoryError):
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def quarantine(self, step: str, key: str) -> Path | None:
        damaged = self.root / ".damaged"
        damaged.mkdir(exist_ok=True)
        destination = damaged / f"{step}--{key}--{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.entry_dir(step, key), destination)
        except OSError:
            return None
        return destination

    def steps(self) -> list[str]:
        return sorted(_visible(self.root))

    def keys(self, step: str) -> list[str]:
        return sorted(_visible(self.root / step))

    def lock_path(self, step: str, key: str) -> Path:
        return self.root / ".locks" / step / f"{key}.lock"

    def remove_temporaries(self, older_than: float) -> int:
        deadline = time.time() - older_than
        candidates = [self.root / ".scratch"] + [self.root / s for s in self.steps()]
        removed = 0
        for folder in candidates:
            for path in _children(folder):
                if path.name.startswith(_TEMP_PREFIXES) and _mtime(path) < deadline:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        return removed

    def clear_damaged(self) -> None:
        shutil.rmtree(self.root / ".damaged", ignore_errors=True)


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _visible(folder: Path) -> list[str]:
    return [p.name for p in _children(folder) if not p.name.startswith(".") and p.is_dir()]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


register_backend("local", LocalBackend)


_JOURNAL_COMPACT_AT = 64


def _write_journal(folder: Path, name: str, records: list[dict[str, Any]]) -> None:
    """One journal file, written whole under a temporary name, then renamed."""
    temp = folder / f".{name}.tmp"
    temp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(temp, folder / f"{name}.jsonl")


def _journal_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".jsonl")
    except OSError:
        return []


def _sum_journals(files: list[Path]) -> dict[tuple[str, str], tuple[int, float]]:
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:  # compacted away meanwhile
            continue
        for line in lines:
            try:
                record = json.loads(line)
                where = (str(record["step"]), str(record["key"]))
                hits, last = int(record["hits"]), float(record["last_used"])
            except (ValueError, KeyError, TypeError):  # a damaged line counts for nothing
                continue
            before = totals.get(where, (0, 0.0))
            totals[where] = (before[0] + hits, max(before[1], last))
    return totals

