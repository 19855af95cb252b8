"""Upstream outputs stay as their steps made them while steps downstream read them.

``$DAGNB_IN/<up>`` is read-only by the step contract. On this machine it links to
``up``'s cache entry, and a file written into the entry would be handed to every later
reader, kept under ``up``'s key and served by the next run. The entry's files keep
their write permissions (taken off, a copy made with ``cp`` or ``shutil.copy`` is
read-only too, and appending to it fails; root is not stopped by them anyway):
the contract is kept by looking. The output files of an upstream cache entry (those
its manifest lists, and the folders holding them) are looked at when a first step
downstream starts, and again after each step downstream ran: one ``stat`` each,
compared by size, modification time, inode and mode (``chmod -x`` changes none of the
others, and a tool that lost its exec bit fails every later reader). A change fails
the step in one line naming the file, and sets the entry aside as damaged (recomputed,
never served); a step that would read it later in the run fails saying so.

A small result is a pack record, not a folder: a step that reads it as files (a
command, a Python step elsewhere than in this process, or one in this process given the
folder of an upstream with no result, or asking ``dagnb.current().inputs`` for it) gets
a folder made from the record under ``.unpacked``, shared by every reader. It is looked
at the same way, for those steps only (a Python step given the result as a value costs
nothing, until it asks for the folder), and first checked against the record when the
run's first such step starts, or asks (:mod:`dagnb.cache.unpacked`). A change fails the
step alike, and the folder is made again from the record, which is whole: nothing is set
aside, and the steps that read it next get the record's content. A folder made again
or removed meanwhile by someone else (another process's reader, a clear) is not a write.

What this cannot see: a write of the same size within the file system's clock tick
of the one it replaces (a few milliseconds), a change made before the first step
downstream started (a hit checks sizes and small files' contents when the entry is
first read in a process; an unpacked folder is made again, not served, if it differs
from its record then), and changes to an upstream step's result in memory (a Python
object a step changes in place).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Container, Mapping
from typing import Any

from dagnb.cache.entry import PackedEntry
from dagnb.cache.unpacked import first_difference
from dagnb.errors import StepFailed

__all__ = ["InputGuard"]

_Stamp = tuple[int, int, int, int]  # size, mtime in ns, inode, mode
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

    def restamp(self) -> None:
        """Take what is there now as first seen (a folder made anew)."""
        self.stamps = [_stamp(path) for path in self.full]

    def _shown(self, path: str) -> str:
        """``$DAGNB_IN/<name>/...`` of ``path``; for a folder, the name in it that is
        not in the entry (a file added), if one is."""
        depth = path.count("/") + 1
        known = {p.split("/")[depth] for p in self.paths if p.startswith(f"{path}/")}
        if known:  # a folder
            added = sorted(set(_listing(f"{self.root}/{path}")) - known)
            path = f"{path}/{added[0]}" if added else path
        return f"$DAGNB_IN/{self.name}" + path[len("out"):]


class _UnpackedFolder(_Watched):
    """A packed entry's folder, checked against its record as first seen in the run."""

    __slots__ = ("files", "identity")

    def __init__(self, name: str, entry: PackedEntry) -> None:
        entry.checked_path()  # (made again here if it is not as the record says)
        self.files = entry.out_files()
        super().__init__(name, entry, {f"out/{file}": len(data)
                                       for file, data in self.files.items()})
        self.identity = _inode(self.root)

    def first_change(self) -> str | None:
        change = super().first_change()
        if change is None:
            return None
        found = first_difference(f"{self.root}/out", self.files)  # names an added file
        return change if found is None else self._shown(found)

    def replaced(self) -> bool:
        """Whether its folder is gone (the entry removed: a clear) or another one (made
        again by a reader elsewhere, that found it written into); then it is taken as
        first seen, checked against the record first if it is there."""
        if _inode(self.root) == self.identity:
            return False
        if os.path.isdir(self.root):
            with contextlib.suppress(OSError):  # (a full disk: checked when next used)
                self.entry.checked_path()
        self.restamp()
        self.identity = _inode(self.root)
        return True

    def make_again(self) -> None:
        with contextlib.suppress(OSError):  # (a full disk: made when next used)
            self.entry.unpack_again()
        self.restamp()
        self.identity = _inode(self.root)


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
        # (step, upstream) -> why: the step read it while another step wrote into it
        self._tainted: dict[tuple[str, str], str] = {}
        # a step's own thread may ask for its folders (watch) as the loop starts another
        # step (start): an entry first seen by both would be watched twice, apart, and
        # one made again from its record under the other, whose step's write went unsaid
        self._seeing = threading.Lock()

    def start(self, step: str, upstream: Mapping[str, Any],
              takes: Callable[[], Container[str]] | None = None) -> list[_Watched]:
        """Before ``step`` runs with ``upstream`` (name -> its cache entry, or None):
        what to look at after it (each first seen now, if not yet). ``takes``: for a
        Python step run in this process, what gives the upstream steps it takes as
        arguments (a packed entry's result as a value, its folder if it has none);
        None: a step reading every input as files. StepFailed if one was set aside as
        damaged earlier in the run."""
        watched = []
        for name, entry in upstream.items():
            if isinstance(entry, PackedEntry) and takes is not None and (
                    entry.inline is not None or name not in takes()):
                continue  # its folder is not read (nothing looked at), unless asked for
            found = self._seen(name, entry)
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

    def watch(self, step: str, upstream: Mapping[str, PackedEntry],
              watched: list[_Watched]) -> None:
        """``step``, a Python step run in this process, asks for the folders of packed
        entries ``upstream`` (``dagnb.current().inputs``), which :meth:`start` left out:
        they are looked at after it too (each first seen now, if not yet), added to
        ``watched``, the list ``start`` gave. (A packed entry is never set aside.)"""
        names = {item.name for item in watched}
        for name, entry in upstream.items():
            found = None if name in names else self._seen(name, entry)
            if found is not None:
                watched.append(found)
                self._readers.setdefault(name, []).append(step)

    def _seen(self, name: str, entry: Any) -> _Watched | None:
        """What is looked at of ``name``'s entry, first seen now if not yet."""
        found = self._watched.get(name, _UNSEEN)
        if found is not _UNSEEN:  # (most: seen by a step before, no lock taken)
            return found
        with self._seeing:
            found = self._watched.get(name, _UNSEEN)
            if found is _UNSEEN:
                found = _watch(name, entry)
                if found is not None or not isinstance(entry, PackedEntry):
                    self._watched[name] = found  # (a folder not made: tried again)
        return found

    def end(self, step: str, watched: list[_Watched], out: str = "$DAGNB_OUT") -> str | None:
        """After ``step`` ran: the one line saying which input it changed (each such
        entry set aside) and to write to ``out`` instead, or None when it changed none."""
        problems = []
        for item in watched:
            readers = self._readers[item.name]
            readers.remove(step)
            tainted = self._tainted.pop((step, item.name), None)
            if tainted is not None:  # found by a step reading it at the same time
                problems.append(f"step {step!r} ran while its input $DAGNB_IN/{item.name} "
                                f"was changed ({tainted}); run again")
                continue
            change = item.first_change()
            if change is None or (isinstance(item, _UnpackedFolder) and item.replaced()):
                continue
            change = self._mask(change)
            why = f"{change} written into by step " + " or ".join(map(repr, [step, *readers]))
            if isinstance(item, _UnpackedFolder):  # its record is whole: the folder is made anew
                item.make_again()
            # (not set aside: the entry itself was removed meanwhile, by a clear or an
            # eviction, which its readers hear of from the cache)
            elif self._set_aside(item.name, item.entry, why):
                self._damaged[item.name] = why
            else:
                continue
            self._tainted.update(((other, item.name), why) for other in readers)
            others = ", ".join(map(repr, readers))
            who = f" (or {others}, reading it at the same time)" if others else ""
            problems.append(f"step {step!r}{who} wrote into its input {change}; write to "
                            f"{out} instead")
        return problems[0] if problems else None


_UNSEEN: Any = object()


def _watch(name: str, entry: Any) -> _Watched | None:
    """The files of a folder entry with output files, or a packed entry's folder (made
    now); None for any other input (a step's outputs that were not stored), or a
    folder that cannot be made."""
    if isinstance(entry, PackedEntry):
        try:
            return _UnpackedFolder(name, entry)
        except OSError:  # (a full disk: the step fails making its $DAGNB_IN, saying so)
            return None
    # a folder entry's metadata lists its files, even one holding a pack record's head
    # (its result file: a long log, displays)
    meta = None if entry is None else entry.meta
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
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_mode


def _inode(path: str) -> int | None:
    found = _stamp(path)
    return None if found is None else found[2]


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
