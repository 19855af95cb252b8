"""What a :class:`~dagnb.cache.store.Store` does to its entries as a whole: list them,
count their uses, show them as DataFrames, clear them, evict the least recently used
and compact the packs after removals. (A part of the Store class, kept apart from the
lookup and save paths it shares no code with.)"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Set
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from dagnb.cache.entry import Entry, PackedEntry
from dagnb.cache.entry_files import _children, _mtime
from dagnb.cache.eviction import _items_to_delete, checked_limits
from dagnb.cache.journal import Uses
from dagnb.cache.pack import (
    iter_pack_files,
    record_disk_bytes,
    record_length,
    sealed_packs,
)
from dagnb.cache.pack_compact import compact, dead_leftovers
from dagnb.errors import CacheError
from dagnb.model.step import parse_duration

if TYPE_CHECKING:
    from pathlib import Path

    from dagnb.cache.backend import StoreBackend
    from dagnb.cache.journal import AccessJournal
    from dagnb.cache.pack import PackIndex, Record
    from dagnb.cache.pack_writer import PackWriter

_TEMP_MAX_AGE = 3600.0  # leftover build directories older than this are someone's crash
_TEMP_PREFIXES = (".tmp-", ".old-", ".trash-")
DAMAGED = ".damaged"  # entries found damaged, moved aside for a post-mortem


def damaged_name(step: str, key: str, tag: str) -> str:
    """The name under :data:`DAMAGED` of entry ``step/key`` set aside (``tag``: apart
    from another copy of it set aside before)."""
    return f"{step}--{key}--{tag}"


def set_aside_as_damaged(root: Path, step: str, key: str) -> bool:
    """Whether an entry of ``step/key`` of the cache at ``root`` was set aside as damaged."""
    prefix = damaged_name(step, key, "")
    try:
        return any(name.startswith(prefix) for name in os.listdir(os.path.join(root, DAMAGED)))
    except OSError:  # (none set aside there)
        return False
UNPACKED = ".unpacked"  # folders of packed entries, made when a caller needs one
RUN_USES = ".uses"  # in a run's folder: the entries it hands to its steps, a line each
STORED_MARK = "+"  # a .uses line of its own, "+STEP": the run stored that step's entry
RUNS_STARTED = "started.jsonl"  # in .runs: a line as each run starts, with its pid
# an entry's folder name, in its step's: a key's hex digest (xxh3_128's or blake3's)
ENTRY_KEY = re.compile(r"[0-9a-f]{32}(?:[0-9a-f]{32})?")

# the hits a store's journal holds, and those it counted and has not written yet
_Counts = tuple[Uses, dict[tuple[str, str], list[float]]]


class Outside(NamedTuple):
    """What a cache folder holds beyond its entries (:meth:`Housekeeping.outside_entries`)."""

    dead_pack_bytes: int  # removed and replaced records in the packs, until compacted
    run_folders: int  # in .runs: the last runs' working folders
    damaged: int  # entries set aside under .damaged (by verify, or a hit that found them so)
    damaged_bytes: int
    leftover_bytes: int  # what a killed compaction left in .packs


class Housekeeping:
    """The Store's methods over all its entries (a mixin of :class:`Store`)."""

    backend: StoreBackend
    clock: Callable[[], float]
    _packs: PackIndex | None
    _writer: PackWriter | None
    _entries: dict[tuple[str, str], Entry]
    _session_hits: dict[str, int]
    _session_misses: dict[str, int]
    # the entries the last reduce_size kept over its limits because live runs use them
    # (none counted that others were removed in place of): what `dagnb cache prune` says
    spared_for_live_runs = 0
    damaged_removed = 0  # the damaged entries set aside that the last reduce_size deleted

    if TYPE_CHECKING:  # (the Store's own)
        @property
        def location(self) -> Path: ...
        def _packed(self, record: Record) -> Entry | None: ...
        def _current(self, step_name: str, key: str) -> Entry | None: ...
        def _counts(self) -> _Counts: ...
        def _writable(self, action: str, step_name: str | None = None) -> None: ...
        def remove(self, step_name: str, key: str) -> bool: ...
        @property
        def _journal(self) -> AccessJournal: ...

    def iter_entries(self, step: str | None = None) -> Iterator[Entry]:
        """Every readable entry (expired ones included), of one step or all."""
        if step is not None and not isinstance(step, str):
            raise CacheError(f"step {step!r} is not a step's name; give its name, "
                             "or None for every step")
        seen: set[tuple[str, str]] = set()
        if self._packs is not None:
            for record in self._packs.live(step):
                entry = self._packed(record)
                if entry is not None:
                    seen.add((record.step, record.key))
                    yield entry
        for step_name in [step] if step is not None else self.backend.names():
            for key in self.backend.names(step_name):
                if (step_name, key) in seen:
                    continue
                entry = self._current(step_name, key)
                if entry is not None:
                    yield entry

    def step_names(self) -> set[str]:
        """The names of the steps with entries, packed or in folders (a folder of the
        cache's top that holds no entry may be among them)."""
        names = set(self.backend.names())
        if self._packs is not None:
            names.update(record.step for record in self._packs.live())
        return names

    def usage(self, entry: Entry) -> tuple[int, float]:
        """(hits, last_used) of an entry: persisted plus counted in this process."""
        return self._usage(entry, self._counts())

    def _usage(self, entry: Entry, counts: _Counts) -> tuple[int, float]:
        totals, unwritten = counts
        where, created = (entry.step, entry.key), entry.created
        # (the uses of the entries its key held before it are not its own)
        hits, last_used = totals.since(where, created)
        last_used = max(last_used, entry.meta.get("last_used", 0.0))
        pending = unwritten.get(where)
        if pending is not None and pending[1] >= created:
            hits, last_used = hits + int(pending[0]), max(last_used, pending[1])
        return hits, last_used

    def newest(self, step_name: str, *, include_expired: bool = False) -> Entry | None:
        """The most recently saved entry of ``step_name``, or None."""
        now = self.clock()
        candidates = [
            e for e in self.iter_entries(step_name) if include_expired or not e.expired(now)
        ]
        return max(candidates, key=lambda e: e.created, default=None)

    def entry_rows(self, step: str | None = None, *, on_disk: bool = False
                   ) -> list[dict[str, Any]]:
        """The rows of :meth:`entries` in its order, times as epoch seconds (None: none),
        without pandas (``dagnb cache list`` needs no DataFrame); ``on_disk``: each with
        ``disk_bytes`` too, what it takes on disk (:meth:`disk_bytes`, what ``stats``
        and ``reduce_size`` count; ``size_bytes`` is its files' alone)."""
        return _entry_rows(self, step, on_disk=on_disk)

    def entries(self, step: str | None = None) -> Any:
        """A pandas DataFrame with one row per entry: step, key, created, last_used,
        expires, hits, size_bytes, duration_s, exit_code and path (the entry's folder; for
        a packed entry the pack file holding its record, listing makes no folder)."""
        return _entries_frame(self, step)

    def stats(self) -> Any:
        """A pandas DataFrame per step: entries, hits, misses, hit_rate, bytes (what its
        entries take on disk: :meth:`disk_bytes`)."""
        return _stats_frame(self)

    def stats_by_step(self) -> dict[str, dict[str, int]]:
        """What :meth:`stats` is made of, without pandas: per step (unsorted), its
        entries, hits, misses, bytes and session_hits (``hit_rate`` left at 0)."""
        return _stats_rows(self)

    def disk_bytes(self, entries: Iterable[Entry]) -> list[int]:
        """What each entry takes on disk, what ``reduce_size``'s ``bytes_limit`` counts:
        a folder entry's files and folders (its outputs, logs and ``meta.json``); a
        packed entry's record (with its keys-file and sealed-index entries) and its
        folder under ``.unpacked``, if made. Sizes as the record or ``stat`` gives them
        (no file is read), as ``du --apparent-size`` counts them (not the file system's
        blocks)."""
        return list(map(self._disk_counter(), entries))

    def _disk_counter(self) -> Callable[[Entry], int]:
        sealed = frozenset() if self._packs is None else sealed_packs(self._packs.folder)
        return _DiskBytes(f"{self.location}/{UNPACKED}", sealed)

    def outside_entries(self) -> Outside:
        """What the cache folder holds beyond its entries: the bytes of removed and
        replaced records in the packs (freed when they are compacted), the number of
        run folders in ``.runs`` (the last runs' working folders, kept for ``dagnb
        history``; not measured: one holds a folder per step), the damaged entries set
        aside under ``.damaged`` and their bytes (never served: a prune frees them), and
        the bytes a killed compaction left in ``.packs`` (a prune frees them)."""
        damaged = [f"{self.location}/{DAMAGED}/{name}" for name in self.backend.names(DAMAGED)]
        return Outside(
            self._dead_pack_bytes(), len(list(_run_folders(f"{self.location}/.runs"))),
            len(damaged), sum(_tree_bytes(path, with_folders=True) for path in damaged),
            sum(_file_bytes(path) for path in self._compaction_leftovers()))

    def _dead_pack_bytes(self) -> int:
        """The bytes of the packs' records that are not live (removed or replaced
        entries, tombstones): what a compaction gives back."""
        if self._packs is None:
            return 0
        live = sum(map(record_length, self._packs.live()))  # (reads what they gained)
        return max(0, sum(self._packs.sizes.values()) - live)

    def clear(self, step: str | None = None, older_than: float | str | None = None,
              workflows: Collection[str | None] | None = None) -> int:
        """Remove entries (of one step; created more than ``older_than`` ago; saved by
        runs of the ``workflows`` named, None for those of none); how many.

        ``older_than`` is seconds or a duration such as ``"1d"``. Clearing everything
        also deletes damaged entries moved aside; any clear, temporary folders a crash
        left over an hour ago, the folders of records no longer there and what a killed
        compaction left in ``.packs`` (as a prune).
        """
        self._writable("clear entries")
        seconds = parse_duration(older_than, what="older_than")
        deadline = None if seconds is None else self.clock() - seconds
        doomed = [e for e in self.iter_entries(step) if (deadline is None or e.created < deadline)
                  and (workflows is None or e.workflow in workflows)]
        if step is None and seconds is None and workflows is None:  # the packs go whole
            removed = sum(isinstance(e, PackedEntry) for e in doomed)
            self._remove_packs()
            removed += sum(self.remove(e.step, e.key) for e in doomed
                           if not isinstance(e, PackedEntry))
            self._remove_damaged()
            self._remove_temporaries(_TEMP_MAX_AGE)
        else:
            removed = sum(self.remove(e.step, e.key) for e in doomed)
            self._compact()
            self._remove_temporaries(_TEMP_MAX_AGE, self._read_by_live_runs())
        return removed

    def _compact(self, force: bool = False) -> None:
        """After removals: rewrite the packs if removed records take most of them
        (``force``: any of them)."""
        if self._packs is None:
            return
        if self._writer is not None:
            self._writer.close(seal=False)  # (its pack may be rewritten: not sealed)
        if compact(self._packs, force=force):
            self._entries.clear()

    def _remove_packs(self) -> None:
        """Clearing everything: the packs go whole (writers notice and start new ones)."""
        if self._packs is None:
            return
        for path in iter_pack_files(self._packs.folder):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if os.path.isdir(self._packs.folder):
            self._packs.bump()  # other processes' indexes: they read the packs again
        self._packs.reset()
        self._entries.clear()
        shutil.rmtree(self.location / UNPACKED, ignore_errors=True)

    def _remove_temporaries(self, older_than: float,
                            kept: Set[tuple[str, str]] = frozenset()) -> int:
        """Delete folders left in ``.scratch`` and ``.unpacked/<step>`` by a crash more
        than ``older_than`` s ago, the folders under ``.unpacked`` of records no longer
        live (replaced, or removed by what did not remove their folder) but for those of
        the entries ``kept`` (read by a live run), and the files a killed compaction
        left in ``.packs``."""
        deadline = time.time() - older_than
        removed = 0
        unpacked = [folder for step in _children(self.location / UNPACKED)
                    for folder in _children(step)]
        for path in [*_children(self.location / ".scratch"), *unpacked]:
            if path.name.startswith(_TEMP_PREFIXES) and _mtime(path) < deadline:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        for path in self._unneeded(unpacked, kept):
            shutil.rmtree(path, ignore_errors=True)
        for path in self._compaction_leftovers():
            with contextlib.suppress(OSError):
                os.unlink(path)
        return removed

    def _compaction_leftovers(self) -> list[str]:
        """What a compaction killed as it wrote its pack left in ``.packs`` (see
        :func:`~dagnb.cache.pack_compact.dead_leftovers`): no entry counts it."""
        return [] if self._packs is None else dead_leftovers(self._packs.folder)

    def _unneeded(self, folders: list[Path], kept: Set[tuple[str, str]]) -> list[Path]:
        """The folders ``<step>/<key>-<stamp>`` of ``folders`` (listed before this reads
        the packs: a record is written before its folder is made) whose record is not the
        live one of its key; none when the packs could not be read whole (a compaction
        meanwhile: every key would look gone)."""
        if self._packs is None:
            return []
        self._packs.refresh()
        if not self._packs.loaded:
            return []
        unneeded = []
        for path in folders:
            key, dash, stamp = path.name.partition("-")
            where = (path.parent.name, key)
            if not dash or path.name.startswith(".") or where in kept:
                continue
            record = self._packs.get(*where)
            if record is None or str(record.stamp) != stamp:
                unneeded.append(path)
        return unneeded

    def reduce_size(
        self,
        bytes_limit: int | str | None = None,
        items_limit: int | None = None,
        age_limit: timedelta | float | str | None = None,
    ) -> int:
        """Evict least recently used entries, with ``joblib.Memory.reduce_size`` semantics.

        Parameters
        ----------
        bytes_limit
            Keep at most this many bytes: an int or a string such as ``"10M"``, ``"1G"``;
            bytes on disk (:meth:`disk_bytes`). The packs are compacted when the bytes
            of removed records would keep the folder over it.
        items_limit
            Keep at most this many entries.
        age_limit
            Remove entries not used for this long (timedelta, seconds or ``"7d"``).

        Returns
        -------
        int
            The number of entries removed.

        Folders a killed process left half-assembled in ``.scratch`` or ``.unpacked``
        over an hour ago go too, the folders under ``.unpacked`` of records no longer
        there, what a killed compaction left in ``.packs`` and the damaged entries set
        aside under ``.damaged`` (not counted: they were no entries; those last in
        :attr:`damaged_removed`).
        """
        limits = checked_limits(bytes_limit, items_limit, age_limit)
        self._writable("evict entries")
        in_use = self._read_by_live_runs()
        spared: list[Entry] = []
        now = self.clock()
        items = self._usage_items(now)
        doomed = _items_to_delete(items, *limits, now, kept=in_use, passed_over=spared)
        in_use = self._read_by_live_runs()  # (and those a run took up meanwhile)
        spared += [e for e in doomed if (e.step, e.key) in in_use]
        self.spared_for_live_runs = len(spared)
        gone = [e for e in doomed if (e.step, e.key) not in in_use]
        removed = sum(self.remove(e.step, e.key) for e in gone)
        # a size limit is one of the disk the cache takes: the removed records' bytes
        # are given back now, not at a later compaction, when they keep it over
        self._compact(force=limits[0] is not None
                      and _kept_bytes(items, gone) + self._dead_pack_bytes() > limits[0])
        # what a killed save, unpack or compaction left half-made, the folders of records
        # gone, the damaged entries set aside (never served): no entry counts them,
        # nothing else frees them
        self._remove_temporaries(_TEMP_MAX_AGE, in_use)
        self.damaged_removed = self._remove_damaged()
        return removed

    def _remove_damaged(self) -> int:
        """Delete the damaged entries set aside under ``.damaged``; how many."""
        return sum(self.backend.remove(DAMAGED, name) for name in self.backend.names(DAMAGED))

    def _usage_items(self, now: float) -> list[tuple[Entry, float, int]]:
        """(entry, last used, bytes on disk) of every entry; one another live process used may
        have been used again since it wrote its uses (at most every FLUSH_EVERY s): as
        late as :meth:`~dagnb.cache.journal.AccessJournal.used_lately_by_others` says (a
        short age_limit took its hot entry for unused)."""
        items, counts, disk_bytes = [], self._counts(), self._disk_counter()
        lately = self._journal.used_lately_by_others(now)
        for entry in self.iter_entries():
            _, last_used = self._usage(entry, counts)
            credit = lately.get((entry.step, entry.key))
            if credit is not None and credit > last_used:
                last_used = credit
            items.append((entry, last_used, disk_bytes(entry)))
        return items

    def _read_by_live_runs(self) -> set[tuple[str, str]]:
        """The entries a run going on now (another process's too) hands to its steps:
        those its leased folder under ``.runs`` lists in ``.uses`` (restored or stored,
        for steps that may not have started yet), and those its ``$DAGNB_IN`` links
        point at. A run writes its hits when it ends, so eviction would take them for
        unused and pull the files out from under a step about to read them."""
        root = os.path.realpath(self.location)
        used: set[tuple[str, str]] = set()
        for run in _live_run_folders(os.path.join(root, ".runs")):
            used.update(_uses_of(run, root))
        return used

    def _live_user_of(self, step_name: str, key: str) -> str | None:
        """Who among the live runs (any process's) hands entry ``step/key`` to its steps,
        as ``pid N`` (``run <id>`` where its start was not noted); None: no live run.
        Read only before an entry is replaced or removed for its age (rare): a hit or a
        first save never reads the runs."""
        return live_user_of(self.location, step_name, key)


def live_user_of(location: str | os.PathLike[str], step_name: str, key: str) -> str | None:
    """:meth:`Housekeeping._live_user_of` of the cache folder ``location`` (a store URL's
    local tier too: a pull, or a lookup's download, replaces an entry there)."""
    root = os.path.realpath(location)
    runs = os.path.join(root, ".runs")
    for run in _live_run_folders(runs):
        if (step_name, key) in _uses_of(run, root):
            pid = _pid_of(runs, os.path.basename(run))
            return f"run {os.path.basename(run)}" if pid is None else f"pid {pid}"
    return None


def _uses_of(run: str, root: str) -> set[tuple[str, str]]:
    """The entries one live run folder lists in ``.uses`` or links as ``$DAGNB_IN``."""
    used = set(_listed_uses(run))
    for link in _input_links(run):
        found = _entry_of(os.path.realpath(link), root)
        if found is not None:
            used.add(found)
    return used


def _pid_of(runs: str, run_id: str) -> int | None:
    """The process of run ``run_id``, from the line it wrote as it started (the newest
    first); None where there is none."""
    try:
        with open(f"{runs}/{RUNS_STARTED}", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if f'"{run_id}"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("run") == run_id:
                pid = record.get("pid")
                return pid if isinstance(pid, int) else None
    return None



def _live_run_folders(runs: str) -> Iterator[str]:
    """The run folders a live run holds the lease of (a flock on the folder itself)."""
    for folder in list(_run_folders(runs)):
        if _leased(folder):
            yield folder


def _kept_bytes(items: list[tuple[Entry, float, int]], gone: list[Entry]) -> int:
    """The bytes on disk of the entries of ``items`` not ``gone``."""
    removed = {(entry.step, entry.key) for entry in gone}
    return sum(size for entry, _, size in items if (entry.step, entry.key) not in removed)


def _run_folders(runs: str) -> Iterator[str]:
    """The run folders in ``runs``."""
    try:
        yield from [entry.path for entry in os.scandir(runs) if entry.is_dir()]
    except OSError:
        return


class _DiskBytes:
    """What an entry takes on disk (see :meth:`Housekeeping.disk_bytes`), given the
    cache's ``.unpacked`` folder and the packs with a sealed index; the folders made
    there are listed once a step (most packed entries have none)."""

    def __init__(self, unpacked: str, sealed: frozenset[str]) -> None:
        self.unpacked, self.sealed = unpacked, sealed
        self.made: dict[str, frozenset[str]] = {}  # step -> its folders in .unpacked

    def __call__(self, entry: Entry) -> int:
        if isinstance(entry, PackedEntry):
            record = entry.version
            return record_disk_bytes(record, self.sealed) + self._unpacked_bytes(
                entry.step, f"{entry.key}-{record.stamp}")
        # its files and its folders' own entries (a folder entry of a shell step's one
        # small output is three folders: 12K of what du counts, for 20 bytes of output)
        return _tree_bytes(str(entry.path), with_folders=True)

    def _unpacked_bytes(self, step: str, name: str) -> int:
        made = self.made.get(step)
        if made is None:
            try:
                made = frozenset(os.listdir(f"{self.unpacked}/{step}"))
            except OSError:
                made = frozenset()
            self.made[step] = made
        folder = f"{self.unpacked}/{step}/{name}"
        return _tree_bytes(folder, with_folders=True) if name in made else 0


def _tree_bytes(folder: str, *, with_folders: bool = False) -> int:
    """The bytes of the files under ``folder`` (0: none there), links not followed;
    ``with_folders``: and of the folders themselves, ``folder`` too, as ``du
    --apparent-size`` counts them."""
    total = 0
    try:
        if with_folders:
            total += os.stat(folder).st_size
        with os.scandir(folder) as found:
            for item in found:
                if item.is_dir(follow_symlinks=False):
                    total += _tree_bytes(item.path, with_folders=with_folders)
                else:
                    with contextlib.suppress(OSError):
                        total += item.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total


def _file_bytes(path: str) -> int:
    """The size of file ``path`` (0: gone)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _leased(folder: str) -> bool:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return False  # (gone meanwhile)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # held: a run is live there
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


def _listed_uses(run: str) -> Iterator[tuple[str, str]]:
    """The (step, key) lines of a run folder's ``.uses``."""
    try:
        with open(f"{run}/{RUN_USES}", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return
    for line in lines:
        step, tab, key = line.partition("\t")
        if tab:
            yield step, key


def _input_links(run: str) -> Iterator[str]:
    """The ``<step>/in/<upstream>`` links of a run folder."""
    with contextlib.suppress(OSError), os.scandir(run) as steps:
        for step in steps:
            with contextlib.suppress(OSError), os.scandir(f"{step.path}/in") as links:
                yield from (link.path for link in links if link.is_symlink())


def _entry_of(target: str, root: str) -> tuple[str, str] | None:
    """(step, key) of the entry a link target is in: ``<step>/<key>/out`` or, for a
    packed entry, ``.unpacked/<step>/<key>-<stamp>/out``."""
    if not target.startswith(root + os.sep):
        return None
    parts = target[len(root) + 1:].split(os.sep)
    if parts[0] == UNPACKED and len(parts) >= 3:
        return parts[1], parts[2].split("-", 1)[0]
    return (parts[0], parts[1]) if len(parts) >= 2 else None


_ENTRY_COLUMNS = [
    "step", "key", "created", "last_used", "expires", "hits", "size_bytes", "duration_s",
    "exit_code", "path",
]
_ENTRY_DTYPES = {"step": "str", "key": "str", "hits": "int64", "size_bytes": "int64",
                 "duration_s": "float64", "exit_code": "Int64", "path": "str"}
_STATS_COLUMNS = ["entries", "hits", "misses", "hit_rate", "bytes", "session_hits"]


def _entries_frame(store: Housekeeping, step: str | None) -> Any:
    import pandas as pd

    frame = pd.DataFrame(_entry_rows(store, step), columns=_ENTRY_COLUMNS)
    for column in ("created", "last_used", "expires"):
        frame[column] = local_times(frame[column])
    # (no entries: the same dtypes, so frame.hits.mean() and the like work on any answer)
    return frame.astype(_ENTRY_DTYPES)


def _entry_rows(store: Housekeeping, step: str | None, *, on_disk: bool = False
                ) -> list[dict[str, Any]]:
    """A dict per entry (the columns of :meth:`Housekeeping.entries`, and ``disk_bytes``
    when ``on_disk``), by step then created (a stable sort: entries created at the same
    time keep the order read)."""
    rows, counts = [], store._counts()
    disk_bytes = store._disk_counter() if on_disk else None
    for entry in store.iter_entries(step):
        hits, last_used = store._usage(entry, counts)
        meta = entry.meta
        rows.append({
            "step": entry.step, "key": entry.key[:12], "created": meta["created"],
            "last_used": last_used, "expires": meta["expires"], "hits": hits,
            "size_bytes": int(meta.get("size_bytes", 0)),
            "duration_s": float(meta.get("duration_s", 0.0)),
            "exit_code": meta.get("exit_code"), "path": _where(store, entry),
            "workflow": entry.workflow,  # (not a column of entries(): its columns are set)
        })
        if disk_bytes is not None:
            rows[-1]["disk_bytes"] = disk_bytes(entry)
    rows.sort(key=lambda row: (row["step"], row["created"]))
    return rows


def _where(store: Housekeeping, entry: Entry) -> str:
    """Where an entry lives: its folder, or the pack file holding a packed one's record
    (its ``path`` would make a folder of two files under ``.unpacked`` for each row)."""
    if isinstance(entry, PackedEntry) and store._packs is not None:
        return f"{store._packs.folder}/{entry.version.pack}"
    return str(entry.path)


def local_times(seconds: Any) -> Any:
    """Epoch seconds (None or NaN where missing) as timezone-aware datetimes in the
    machine's zone, to the microsecond: every frame's times compare with each other
    and read as the clock on the wall."""
    import pandas as pd

    # (whole microseconds made here: pandas 2.3's own rounding of float seconds, on
    # CI's oldest Python, overflowed on what it read as the missing ones' values)
    micros = [None if value is None or value != value else round(float(value) * 1e6)
              for value in seconds]
    utc = pd.to_datetime(pd.Series(micros, dtype="Int64"), unit="us", utc=True)
    return utc.dt.as_unit("us").dt.tz_convert(local_zone())


def local_zone() -> Any:
    """The machine's time zone as it is now (``TZ``, else ``/etc/localtime``), with its
    whole history of offsets, as the standard library's ``zoneinfo`` reads it: pandas
    converts to it in one pass (60,000 times in 1-4 ms, pandas 2 and 3). dateutil's
    ``gettz`` zones are not used: pandas 2 cannot read dateutil 3's (every time came
    out naive, a traceback printed for each frame), nor any pandas a POSIX rule's.
    Where zoneinfo has no zone (such a rule in ``TZ``, no zone files), dateutil's
    ``tzlocal()``, which pandas converts one value at a time (``dagnb cache list`` of
    20,000 entries: 2.6 s, against 1.8). Kept while ``TZ`` and ``/etc/localtime``
    stay as they were (finding it took each frame 50 µs)."""
    tz = os.environ.get("TZ")
    key = (tz, None if tz else _localtime_stamp())
    found = _ZONES.get(key)
    if found is None:
        if len(_ZONES) >= 16:  # (a test, a notebook changing TZ over and over)
            _ZONES.clear()
        found = _ZONES[key] = _zoneinfo_zone(tz) or _tzlocal()
    return found


_ZONES: dict[tuple[str | None, tuple[int, int] | None], Any] = {}


def _tzlocal() -> Any:
    from dateutil.tz import tzlocal

    return tzlocal()


def _localtime_stamp() -> tuple[int, int] | None:
    """What tells ``/etc/localtime`` changed (the link, not its target: a new zone is a
    new link); None where there is none."""
    try:
        found = os.lstat(_LOCALTIME)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def _zoneinfo_zone(tz: str | None) -> Any:
    """``TZ``'s zone (a name, as ``Europe/Paris`` or ``:Europe/Paris``, or a zone file's
    path; UTC where it is set empty, as the C library reads it), else, where it is
    unset, ``/etc/localtime``'s; None where zoneinfo has no such zone (a POSIX rule,
    ``EST5EDT,M3.2.0,M11.1.0``)."""
    import zoneinfo

    name = (tz or "").removeprefix(":")
    try:
        if tz is not None and not name:
            return zoneinfo.ZoneInfo("UTC")
        if name and not os.path.isabs(name):
            return zoneinfo.ZoneInfo(name)
        return _zone_of_file(name or _LOCALTIME)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_of_file(path: str) -> Any:
    """The zone of a zone file: by the name its path (a link's target) gives under a
    ``zoneinfo`` folder, else read from it, named as the file."""
    import zoneinfo

    _, marker, key = os.path.realpath(path).partition("/zoneinfo/")
    if marker and key:
        with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
            return zoneinfo.ZoneInfo(key)
    with open(path, "rb") as handle:
        return zoneinfo.ZoneInfo.from_file(handle, key=os.path.basename(path))


_LOCALTIME = "/etc/localtime"


def _stats_rows(store: Housekeeping) -> dict[str, dict[str, int]]:
    """:func:`_stats_frame`'s rows, by step."""
    table: dict[str, dict[str, int]] = {}
    counts, disk_bytes = store._counts(), store._disk_counter()
    for entry in store.iter_entries():
        row = table.setdefault(entry.step, dict.fromkeys(_STATS_COLUMNS, 0))
        row["entries"] += 1
        row["hits"] += store._usage(entry, counts)[0]
        row["bytes"] += disk_bytes(entry)
    for step in set(store._session_hits) | set(store._session_misses):
        row = table.setdefault(step, dict.fromkeys(_STATS_COLUMNS, 0))
        row["misses"] = store._session_misses.get(step, 0)
        row["session_hits"] = store._session_hits.get(step, 0)
    return table


def _stats_frame(store: Housekeeping) -> Any:
    """Per step: entries and bytes on disk, hits recorded on them (all processes), and
    this store's misses; ``hit_rate`` is hits / (hits + misses)."""
    import pandas as pd

    table = _stats_rows(store)
    frame = pd.DataFrame.from_dict(table, orient="index", columns=_STATS_COLUMNS)
    lookups = frame["hits"] + frame["misses"]
    frame["hit_rate"] = (frame["hits"] / lookups.where(lookups > 0)).astype("float64")
    # (no steps: an index of names still, not a RangeIndex, so .loc[name] and joins
    # on the step behave alike on any answer)
    frame.index = pd.Index(frame.index, dtype="str", name="step")
    return frame.astype({c: "int64" for c in _STATS_COLUMNS if c != "hit_rate"}).sort_index()
