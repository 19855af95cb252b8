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

from ..errors import CacheError

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
    def read_access(self, step: str, key: str) -> dict[str, Any]:
        """The entry's access record ({"hits", "last_used"}), {} when there is none."""

    @abc.abstractmethod
    def write_access(self, step: str, key: str, record: dict[str, Any]) -> None:
        """Replace the entry's access record atomically (no-op if the entry is gone)."""

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

    def read_access(self, step: str, key: str) -> dict[str, Any]:
        try:
            record = json.loads((self.entry_dir(step, key) / "access.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def write_access(self, step: str, key: str, record: dict[str, Any]) -> None:
        entry = self.entry_dir(step, key)
        temp = entry / f".access.{uuid.uuid4().hex}"
        try:
            temp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temp, entry / "access.json")
        except OSError:  # the entry was removed meanwhile: nothing to record
            with contextlib.suppress(OSError):
                temp.unlink()

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
