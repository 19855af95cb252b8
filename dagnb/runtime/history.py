"""The run history on disk: one folder per run under ``<cache>/.runs/``.

A run's folder holds its steps' working directories (``<step>/out``, ``<step>/in``,
``params.json``) and, once the run ends, ``run.json``: the graph's name, when it ended
and each step's final state. ``dagnb run --only-failed`` reads the newest record of a
workflow from here, so it works in a new process.

The folder is made only when something needs it (a step that executes, or the record at
the end), so a fully cached run's start costs no disk work. While a run is live it holds
a lock on its folder (POSIX ``flock``, let go by the system if the process dies);
pruning, which keeps the newest ``KEEP_RUNS`` folders, skips any folder whose lock is
held, so a long run's outputs are never deleted under it.

Pruning is off the hot path: about one run in ``PRUNE_SLACK + 1`` (chosen at random, so
it works the same when every run is a new ``dagnb run`` process) starts it in a
background thread as it ends. A prune cut short by the process exiting is finished by a
later one.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dagnb.cache.backend import make_folder

__all__ = [
    "KEEP_RUNS",
    "PRUNE_SLACK",
    "RECORD_NAME",
    "RunFolder",
    "last_states",
    "prune",
    "unfinished",
]

KEEP_RUNS = 20  # run folders kept under <cache>/.runs
PRUNE_SLACK = 10  # about this many runs end without pruning between two that prune
RECORD_NAME = "run.json"
_draw = random.random  # whether this run prunes (tests replace it)
_NOT_DONE = ("failed", "skipped", "cancelled")


class RunFolder:
    """One run's folder, made on first use and leased while the run is live."""

    __slots__ = ("_closed", "_lease", "path", "runs")

    def __init__(self, cache_dir: Path, run_id: str) -> None:
        self.runs = cache_dir / ".runs"  # dot folders are not steps to the store
        self.path = self.runs / run_id
        self._lease: int | None = None
        self._closed = False

    def make(self) -> Path:
        """Create the folder (once) and, while the run is live, take its lease."""
        if self._lease is None and not self._closed:
            make_folder(self.path)  # a file named .runs is moved aside, not an error
            self._lease = _lease(self.path)
        return self.path

    def close(self, states: Mapping[str, str], graph_name: str) -> None:
        """Write the run's record, give up the lease, and now and then prune old runs.

        Housekeeping never fails a run: a problem here is one warning.
        """
        self._closed = True
        try:
            make_folder(self.path)
            _write_json(self.path / RECORD_NAME, {
                "graph": graph_name, "finished": time.time(), "states": dict(states),
            })
        except OSError as exc:
            warnings.warn(f"dagnb: run record {str(self.path)!r} not written: {exc}",
                          stacklevel=2)
        finally:
            if self._lease is not None:
                os.close(self._lease)  # closing lets go of the lock
                self._lease = None
        if _draw() * (PRUNE_SLACK + 1) < 1:
            threading.Thread(target=prune, args=(self.runs,), daemon=True,
                             name="dagnb-prune").start()


def _lease(folder: Path) -> int | None:
    """Lock ``folder`` itself (flock on its descriptor: no file to create, gone with the
    process); None where the file system cannot lock, and the run goes on unleased."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def prune(runs: Path, keep: int | None = None) -> list[Path]:
    """Remove the run folders older than the newest ``keep`` (default ``KEEP_RUNS``),
    skipping live runs (their lease is held); returns what was removed."""
    keep = KEEP_RUNS if keep is None else keep
    try:
        folders = sorted((e.name for e in os.scandir(runs) if e.is_dir()), reverse=True)
    except OSError:
        return []
    return [runs / name for name in folders[keep:] if _remove_unless_live(runs / name)]


def _remove_unless_live(folder: Path) -> bool:
    try:
        lease = _lease(folder)
    except OSError:
        return False  # gone already, or not ours to open
    if lease is None:
        return False  # a run still in progress holds it (or it cannot be told)
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(lease)
    return True


def last_states(cache_dir: Path, graph_name: str) -> dict[str, str] | None:
    """Final states of the newest recorded run of ``graph_name``; None when there is none."""
    newest: dict[str, Any] | None = None
    for record in _records(cache_dir / ".runs"):
        if record.get("graph") != graph_name:
            continue
        if newest is None or record.get("finished", 0) > newest.get("finished", 0):
            newest = record
    return None if newest is None else dict(newest.get("states", {}))


def unfinished(states: Mapping[str, str], names: Iterable[str]) -> list[str]:
    """The steps among ``names`` that failed, were skipped or were cancelled."""
    return [n for n in names if states.get(n) in _NOT_DONE]


def _records(runs: Path) -> list[dict[str, Any]]:
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            record = json.loads(Path(entry.path, RECORD_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # no record (an old or a live run), or a damaged one
        if isinstance(record, dict):
            found.append(record)
    return found


def _write_json(path: Path, data: Any) -> None:
    """Write by renaming into place: a reader sees the whole record or none."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)
