"""Upstream outputs stay as their steps made them while steps downstream read them.

``$DAGNB_IN/<up>`` is read-only by the step contract. On this machine it links to
``up``'s cache entry, and a file written into the entry would be handed to every later
reader, kept under ``up``'s key and served by the next run. The entry's files keep
their write permissions (taken off, a copy made with ``cp`` or ``shutil.copy`` is
read-only too, and appending to it fails; root is not stopped by them anyway):
the contract is kept by looking. The output files of an upstream cache entry (those
its manifest lists, and the folders holding them) are looked at when a first step
downstream starts, and again after each step downstream ran: one ``stat`` each,
compared by size, modification time and inode. A change fails the step in one line
naming the file, and sets the entry aside as damaged (recomputed, never served); a
step that would read it later in the run fails saying so.

What this cannot see: a write of the same size within the file system's clock tick
of the one it replaces (a few milliseconds), a change made before the first step
downstream started (a hit checks sizes and small files' contents when the entry is
first read in a process), and changes to an upstream step's result in memory (a
Python object a step changes in place).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from dagnb.cache.entry import PackedEntry
from dagnb.errors import StepFailed

__all__ = ["InputGuard"]

_Stamp = tuple[int, int, int]  # size, mtime in ns, inode
# (upstream name, its entry, the problem) -> whether it was set aside (False: removed)
_SetAside = Callable[[str, Any, str], bool]


class _Watched:
    """One upstream entry's output files and folders, as first seen in the run."""

    __slots__ = ("entry", "full", "name", "paths", "root", "stamps")

    def __init__(self, name: str, entry: Any, files: Mapping[str, int]) -> None:
        self.name, self.entry, self.root = name, entry, str(entry.path)
        folders = {"out"}
        for relative in files:
            parts = relative.split("/")[:-1]
            folders.update("/".join(parts[:i]) for i in range(2, len(parts) + 1))
        self.paths = [*sorted(files), *sorted(folders)]
        self.full = [f"{self.root}/{path}" for path in self.paths]
        self.stamps: list[_Stamp | None] = [_stamp(path) for path in self.full]

    def first_change(self) -> str | None:
        """The first file (or folder) that is not as first seen, as a path under
        ``$DAGNB_IN/<name>``; None when all are."""
        for index, before in enumerate(self.stamps):
            if _stamp(self.full[index]) != before:
                return self._shown(self.paths[index])
        return None

    def _shown(self, path: str) -> str:
        """``$DAGNB_IN/<name>/...`` of ``path``; for a folder, the name in it that is
        not in the entry (a file added), if one is."""
        depth = path.count("/") + 1
        known = {p.split("/")[depth] for p in self.paths if p.startswith(f"{path}/")}
        if known:  # a folder
            added = sorted(set(_listing(f"{self.root}/{path}")) - known)
            path = f"{path}/{added[0]}" if added else path
        return f"$DAGNB_IN/{self.name}" + path[len("out"):]


class InputGuard:
    """Watches, for one run, the upstream cache entries its steps read as ``$DAGNB_IN``.

    ``set_aside(upstream, entry, problem)`` moves a changed entry aside as damaged.
    """

    def __init__(self, set_aside: _SetAside, mask: Callable[[str], str]) -> None:
        """``mask``: the run's, for the paths its lines name (a file a step named), so
        that the lines, masked already, keep dagnb's words (a secret ``1``...)."""
        self._set_aside = set_aside
        self._mask = mask
        self._watched: dict[str, _Watched | None] = {}  # upstream -> its files, or None
        self._readers: dict[str, list[str]] = {}  # upstream -> the steps reading it now
        self._damaged: dict[str, str] = {}  # upstream set aside -> why, in a few words

    def start(self, step: str, upstream: Mapping[str, Any]) -> list[_Watched]:
        """Before ``step`` runs with ``upstream`` (name -> its cache entry, or None):
        what to look at after it (each first seen now, if not yet). StepFailed if one
        was set aside as damaged earlier in the run."""
        watched = []
        for name, entry in upstream.items():
            found = self._watched.get(name, _UNSEEN)
            if found is _UNSEEN:
                found = self._watched[name] = _watch(name, entry)
            if found is not None:
                watched.append(found)
        for item in watched:
            if item.name in self._damaged:
                raise StepFailed(f"step {step!r} cannot run: its input $DAGNB_IN/{item.name} "
                                 f"is set aside as damaged ({self._damaged[item.name]}); run "
                                 "again to make it anew", step=step, masked=True)
        for item in watched:
            self._readers.setdefault(item.name, []).append(step)
        return watched

    def end(self, step: str, watched: list[_Watched]) -> str | None:
        """After ``step`` ran: the one line saying which input it changed (each such
        entry set aside), or None when it changed none."""
        problems = []
        for item in watched:
            readers = self._readers[item.name]
            readers.remove(step)
            if item.name in self._damaged:  # found by a step reading it at the same time
                problems.append(f"step {step!r} ran while its input $DAGNB_IN/{item.name} "
                                f"was changed ({self._damaged[item.name]}); run again")
                continue
            change = item.first_change()
            if change is None:
                continue
            change = self._mask(change)
            why = f"{change} written into by step " + " or ".join(map(repr, [step, *readers]))
            # (not set aside: the entry itself was removed meanwhile, by a clear or an
            # eviction, which its readers hear of from the cache)
            if self._set_aside(item.name, item.entry, why):
                self._damaged[item.name] = why
                others = ", ".join(map(repr, readers))
                who = f" (or {others}, reading it at the same time)" if others else ""
                problems.append(f"step {step!r}{who} wrote into its input {change}; write to "
                                "$DAGNB_OUT instead")
        return problems[0] if problems else None


_UNSEEN: Any = object()


def _watch(name: str, entry: Any) -> _Watched | None:
    """The files of a folder entry with output files; None for any other input (a
    packed entry, or a step's outputs that were not stored)."""
    # a folder entry's metadata lists its files, even one holding a pack record's head
    # (its result file: a long log, displays); a pack record lists none, and its rest is
    # not parsed to find that out
    meta = None if entry is None or isinstance(entry, PackedEntry) else entry.meta
    files = meta.get("files") if meta is not None else None
    if not isinstance(files, dict):
        return None
    outputs = {path: size for path, size in files.items() if path.startswith("out/")}
    return _Watched(name, entry, outputs) if outputs else None


def _stamp(path: str) -> _Stamp | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
