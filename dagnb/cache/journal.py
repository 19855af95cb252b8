"""Uses of cache entries (hits and last use), kept as a journal on any store backend.

A hit writes nothing: the store counts hits in memory and :meth:`AccessJournal.append`
writes them all at once, as one small folder per flush under ``.access``, so a fully
cached re-run of 10,000 steps writes a file or a few, not 10,000. A store that lives
long (a notebook's ``Memory``) flushes on a hit when its last flush is
:data:`FLUSH_EVERY` seconds old, so another process's ``reduce_size`` sees its uses;
what it used again since is not written yet, so ``reduce_size`` takes an entry another
live process wrote a use of for one used up to FLUSH_EVERY after that process's last
write (:meth:`AccessJournal.used_lately_by_others`). Past
:data:`COMPACT_AT` folders, one process folds them into one while the others go on.
Journal folders never change once written, so their sums are remembered for as long as
the list of folders is the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring_ascii
from pathlib import Path

from dagnb.cache.backend import StoreBackend

__all__ = ["COMPACT_AT", "FLUSH_EVERY", "AccessJournal", "Totals", "Uses"]

COMPACT_AT = 64
# at most one small write per 10 s of hits
FLUSH_EVERY = 10.0
FOLDER = ".access"
_FILE = "journal.jsonl"

Totals = dict[tuple[str, str], tuple[int, float]]  # (step, key) -> (hits, last_used)


class Uses(Totals):
    """The totals of the journal, and what tells the uses of an entry from those of
    the entries of its key before it (removed, replaced by a ``--refresh``, cleared and
    run again): a use is of the entry saved last before it, so an entry counts the
    uses written after its creation only (a new entry of a key hit 3 times had 3)."""

    def __init__(self) -> None:
        super().__init__()
        # (step, key) -> (last_used, hits) of each record, for keys written more than
        # once (those written once need no more than their total)
        self.each: dict[tuple[str, str], list[tuple[float, int]]] = {}

    def add(self, where: tuple[str, str], hits: int, last_used: float) -> None:
        before = self.get(where)
        if before is None:
            self[where] = (hits, last_used)
            return
        records = self.each.get(where)
        if records is None:
            records = self.each[where] = [(before[1], before[0])]
        records.append((last_used, hits))
        self[where] = (before[0] + hits, max(before[1], last_used))

    def since(self, where: tuple[str, str], created: float) -> tuple[int, float]:
        """(hits, last_used) of the uses of ``where`` written after ``created``."""
        hits, last_used = self.get(where, (0, 0.0))
        if last_used < created:  # (none after it: all of earlier entries, or none)
            return 0, 0.0
        records = self.each.get(where)
        if records is None:
            return hits, last_used
        return sum(count for used, count in records if used >= created), last_used


class AccessJournal:
    """The journal of entry uses of one backend.

    Parameters
    ----------
    backend
        Where the journal folders are written.
    new_folder
        Returns a fresh, empty local folder to assemble a journal folder in (raising
        OSError rather than make again a cache folder removed meanwhile).
    exists
        Whether an entry is still there (compaction drops the uses of removed ones);
        the backend's ``exists`` when None.
    created
        When the entry there now was saved, None when there is none: compaction keeps
        the uses since then only (those of the entries it replaced would count as its
        own once folded in); when None, ``exists`` says which to keep, whole.
    """

    def __init__(
        self,
        backend: StoreBackend,
        new_folder: Callable[[], Path],
        exists: Callable[[str, str], bool] | None = None,
        created: Callable[[str, str], float | None] | None = None,
    ) -> None:
        self.backend = backend
        self._new_folder = new_folder
        self._exists = backend.exists if exists is None else exists
        self._created = created
        self._memo: tuple[tuple[str, ...], Uses] | None = None

    def append(self, uses: Totals, *, compact: bool = True) -> None:
        """Record uses of entries (hits and last use of each (step, key)), all at once;
        then fold the journal if it grew long, unless ``compact`` is False."""
        if not uses:
            return
        self._write(f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}", uses)
        if compact and len(self.backend.names(FOLDER)) > COMPACT_AT:
            lock = self.backend.lock(FOLDER, "compact", timeout=0)
            with contextlib.suppress(TimeoutError), lock:  # one compacts, others go on
                self._compact()

    def totals(self) -> Uses:
        """(step, key) -> (hits, last_used), summed over every recorded use (and what
        :meth:`Uses.since` needs to count those of the entry there now only)."""
        names = tuple(self.backend.names(FOLDER))
        if self._memo is None or self._memo[0] != names:
            self._memo = (names, self._sum(names))
        return self._memo[1]

    def used_lately_by_others(self, now: float) -> dict[tuple[str, str], float]:
        """(step, key) -> when another process still running may have used it last: of
        the entries it wrote a use of, each may have been used again, unwritten, until
        FLUSH_EVERY s after its last write (its next hit after that writes them all),
        and not after ``now``. (A folder's pid is this machine's; a compacted folder's
        writers are unknown, its uses counted as written. An entry such a process used
        first after its last write is not known here.)"""
        last_write: dict[int, float] = {}
        used: dict[int, set[tuple[str, str]]] = {}
        for name in self.backend.names(FOLDER):
            writer = _live_other_writer(name)
            if writer is not None:
                pid, written = writer
                last_write[pid] = max(last_write.get(pid, written), written)
                used.setdefault(pid, set()).update(where for where, _, _ in self._records(name))
        found: dict[tuple[str, str], float] = {}
        for pid, wheres in used.items():
            until = min(now, last_write[pid] + FLUSH_EVERY)
            for where in wheres:
                found[where] = max(found.get(where, until), until)
        return found

    def _compact(self) -> None:
        """Fold the journal into one folder; uses of removed entries are dropped, and
        those of the entries a key held before the one there now."""
        names = self.backend.names(FOLDER)
        uses = self._sum(names)
        if self._created is None:
            live = {where: use for where, use in uses.items() if self._exists(*where)}
        else:
            live = {}
            for where in uses:
                created = self._created(*where)
                use = None if created is None else uses.since(where, created)
                if use is not None and use[0] > 0:
                    live[where] = use
        self._write(f"{time.time_ns()}-{os.getpid()}-compact", live)
        for name in names:  # only what was read: a concurrent writer's folder stays
            self.backend.remove(FOLDER, name)

    def _write(self, name: str, uses: Totals) -> None:
        folder = self._new_folder()
        try:
            text = "".join([_line(step, key, hits, last_used)
                            for (step, key), (hits, last_used) in uses.items()])
            (folder / _FILE).write_text(text, encoding="utf-8")
            self.backend.add(FOLDER, name, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # (moved in, it is no longer there)
            raise

    def _sum(self, names: Iterable[str]) -> Uses:
        totals = Uses()
        for name in names:
            for where, hits, last in self._records(name):
                totals.add(where, hits, last)
        return totals

    def _records(self, name: str) -> list[tuple[tuple[str, str], int, float]]:
        item = self.backend.read(FOLDER, name)
        try:
            lines = (item.path / _FILE).read_text(encoding="utf-8").splitlines() if item else []
        except OSError:  # compacted away meanwhile
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
                where = (str(record["step"]), str(record["key"]))
                records.append((where, int(record["hits"]), float(record["last_used"])))
            except (ValueError, KeyError, TypeError):  # a damaged line counts for nothing
                continue
        return records


def _line(step: str, key: str, hits: int, last_used: float) -> str:
    """``json.dumps`` of the use's record and a newline, the same text in about a quarter
    of the time: a cached re-run of 1,000 steps writes 1,000 of them as it ends."""
    if last_used - last_used != 0.0:  # NaN or infinite (never a clock's): as json writes it
        record = {"step": step, "key": key, "hits": hits, "last_used": last_used}
        return f"{json.dumps(record)}\n"
    return (f'{{"step": {_quoted(step)}, "key": {_quoted(key)}, "hits": {hits}, '
            f'"last_used": {last_used!r}}}\n')


def _live_other_writer(name: str) -> tuple[int, float] | None:
    """The pid and write time (s) of journal folder ``name`` (``<time_ns>-<pid>-<tag>``)
    if another process still running wrote it; None for this process's (its store holds
    its later uses), an ended one's (it wrote them as it ended, or was killed: it uses
    nothing now) and a compaction's."""
    time_text, _, rest = name.partition("-")
    pid_text, _, tag = rest.partition("-")
    if tag == "compact" or not (pid_text.isdigit() and time_text.isdigit()):
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # (another user's process: running)
        pass
    return pid, int(time_text) / 1e9


_quoted = encode_basestring_ascii  # (json.dumps' own escaping of a string)
