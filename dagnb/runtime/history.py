"""The run history on disk: one folder per run under ``<cache>/.runs/``, and one log
of run records, ``<cache>/.runs/records.jsonl``.

A run's folder holds its steps' working directories (``<step>/out``, ``<step>/in``,
``params.json``) and ``.uses``, the cache entries it hands to its steps (eviction in any
process leaves them alone while the run is live). When a run ends, one line is appended
to the records log: the run's id, the graph's name, its workflow file (``source``, for a
graph loaded from one), when it ended, each step's final state, the params given for the
run (``params``: the values ``dagnb run --param`` set; none, no field) and the key of the
cache entry each step was served from or stored in (``entries``: ``dagnb logs`` reads a
cached step's lines from it; none, no field), when that entry was stored
(``entry_created``, its ``created``: the same key may be stored again later, by a
``--refresh`` or once its ttl passed, and ``dagnb logs`` then tells this run's lines are
gone; older records have no field), and why each skipped step was (``skipped``: the
upstream step that failed, which ``dagnb logs`` says; none, no field) and the error
each failed or cancelled step ended with (``errors``: its first line, masked, which
``dagnb history --run`` shows; none, no field).
``dagnb run --only-failed`` reads the newest record of a workflow from there, so it
works in a new process: of that file, since files made from one template share its name;
of that name and ``origin``, for a graph built in Python or a notebook (the script that
built it: two scripts' ``dagnb.Graph()`` share the name "graph", and one's runs are not
the other's); of that name alone, for records older versions wrote with neither. A
step's state counts only among the runs given the same params: a step done with
``city=Paris`` has not run with ``city=Rome``. (Runs of older versions left ``run.json``
in their folder, and their records have no params, nor entries; those are read too, as
runs given none.)

A run that is killed (SIGKILL, the machine losing power) writes no record as it ends. So
each run also appends one short line as it starts, to ``<cache>/.runs/started.jsonl``:
its id, workflow, params, steps, and its process (pid, when it started, and the host and
pid namespace that pid means something in). A reader takes a started run with no record
whose process is gone (no such pid on this host, or one that started at another time:
the pid used again) for a killed one: a record of state ``killed`` for each
of its steps, which ``--only-failed`` runs again (those it finished and stored come from
the cache) and ``dagnb history`` lists. A process of another host cannot be told dead: its run is
taken for live, and read as it was before. A prune drops the lines of the runs that
ended and writes the killed ones' records to the records log.

A run that writes nothing to the cache folder (``read-only``, or a run on a folder this
user may not write) keeps its start line and record in the cache folder's side home
instead (:func:`side_home`: ``<temp>/dagnb-<uid>/runs/<name>-<digest>/.runs``, this
user's alone), its record marked ``read_only`` (its steps' folder was temporary); an
``off`` run there keeps its folder there too. Every reader reads both, the newest run
winning: a read-only run that failed is not passed over for an older one that
succeeded. A run whose record cannot be written in the cache folder (a full disk)
writes it there; where that fails too, its start line is marked in place as that of a
run that ended unrecorded (its steps ``unrecorded``, run again by ``--only-failed``),
not killed.

The folder is made only when something needs it (a step that executes a command, or
one that asks for its output folder), and the record is an append to a file that
exists already: a run of in-process Python steps that write no files creates no file.
While a run is live it holds a lock on its folder (POSIX ``flock``, let go by the system
if the process dies); pruning, which keeps the newest ``KEEP_RUNS`` folders, and of them
the newest up to ``KEEP_RUNS_BYTES`` in all, skips any folder whose lock is held, so a
long run's outputs are never deleted under it.

A run's folder is mostly of use while it runs: once a step is stored, its lines and
files are read from its cache entry (``dagnb logs``, ``Run.logs``, ``Run.outputs``), and
the records log says how it ended (``dagnb history``, ``--only-failed``, explain). What
its stored (or served) steps left there, their params file, ``in/`` links and emptied
``out/`` (16 KB and five inodes a shell step: 435 MB for 20,000), is removed by the
first prune to see the folder finished (``.uses`` stays: a line an entry);
a stored step's failed attempts' logs stay, as does all that failed, unstored or skipped
steps left (how a user debugs them, and a cache-off step's outputs). Removing is slow on
some disks (milliseconds a folder where the file system discards freed blocks), so a run
does not do it as it ends: it notes in ``.runs/.trim`` that it is owed (a run that stored
no step, with the cache off, does not), and the next run to make its folder prunes, in
its thread, for sure. That prune notes the folder's size in its ``.size``, which later
prunes read instead of walking its files.

Records are appended under an exclusive ``flock`` on the log, one ``write`` each,
between newlines (a record torn by a crash spoils no other); the process keeps the log
open between runs (opening it cost a run more than the append). Pruning rewrites
the log under the same lock when it has grown, keeping the newest ``KEEP_RUNS`` records
that fit in ``_COMPACT_BYTES`` (fewer for runs of very many steps: a 100,000-step run's
record is 9 MB), the newest of each workflow (name and file) and those of the run folders
kept, and renames the copy into place (a writer that finds the file replaced under its
lock opens it again).

Pruning is off the hot path: about one run in ``PRUNE_SLACK + 1`` that makes its folder
(chosen at random, so it works the same when every run is a new ``dagnb run`` process)
prunes in a thread of its own while its steps run, and waits for it as it ends, before
its caller has the run: a prune still going then would be removing old folders while
the caller removes the cache (a TemporaryDirectory left), and make that fail. A run
that made no folder compacts the log as it ends, once it has grown. A prune cut short
by the process being killed is finished by a later one.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from dagnb.cache.backend import make_folder
from dagnb.cache.housekeeping import RUN_USES, STORED_MARK
from dagnb.checks import listed, warn_user
from dagnb.errors import ConfigError
from dagnb.model.jsontext import encoder, object_text

__all__ = [
    "ANY_ORIGIN",
    "DONE_STATES",
    "FOREIGN_RUN_DAYS",
    "KEEP_RUNS",
    "KEEP_RUNS_BYTES",
    "KILLED",
    "NOTEBOOK_PARAMS_VARIABLE",
    "NOT_RUN_STATES",
    "PRUNE_SLACK",
    "RECORDS_NAME",
    "RECORD_NAME",
    "STARTED_NAME",
    "UNRECORDED",
    "RunFolder",
    "StepInRun",
    "entry_created",
    "finished_at",
    "graph_origin",
    "last_params",
    "last_run_of",
    "last_states",
    "make_side_home",
    "notebook_run_params",
    "prune",
    "run_folder_of",
    "same_params",
    "side_home",
    "unfinished",
    "unwritable_fix",
]

KEEP_RUNS = 20  # run folders kept under <cache>/.runs
# and bytes of them, the newest first (see _bound_bytes): once trimmed, a run whose steps
# were stored takes a few KB; this bounds what failed and unstored steps left (logs,
# cache-off outputs) to what 20 runs of a mid-sized pipeline leave, not 20 times the
# biggest run's
KEEP_RUNS_BYTES = 1 << 30
SIZE_NAME = ".size"  # in a finished run's folder: its bytes, noted by a prune
TRIM_OWED = ".trim"  # in .runs: a finished run left its stored steps' folders
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
PRUNE_SLACK = 10  # about this many runs end without pruning between two that prune
RECORD_NAME = "run.json"  # a run's record in its folder, before the records log
RECORDS_NAME = "records.jsonl"
STARTED_NAME = "started.jsonl"  # a line as each run starts: see the module's text
KILLED = "killed"  # the state of each step of a run killed before it ended
# the state of each step of a run that ended but could write its record nowhere (a full
# disk): its start line says so (see _mark_unrecorded), not that it was killed
UNRECORDED = "unrecorded"
FOREIGN_RUN_DAYS = 2  # a run started on another host: taken for live this long at most
_COMPACT_AT = 4 * KEEP_RUNS  # records in the log before a prune rewrites it
# or bytes (runs of many steps have long records), and what it keeps, newest first (and
# the newest of each workflow): a 100,000-step run's record is 9 MB, and 20 of them made
# every drawn prune read, parse and rewrite 180 MB, 2 s of a re-run that cost 5
_COMPACT_BYTES = 16 << 20
_PRUNE_LOG_BYTES = 32 << 10  # runs that made no folder prune once the log is this big
_draw = random.random  # whether this run prunes (tests replace it)
# a step left in any other state (failed, skipped, cancelled; or pending, queued, running
# in a run cut short) was not done, and --only-failed runs it again
DONE_STATES = frozenset({"succeeded", "cached"})
ANY_ORIGIN = "*any*"  # a reader of any script's runs of a name (dagnb logs, history)
# the --param values `dagnb run NOTEBOOK` gave the notebook, as JSON, for its kernel (no
# DAGNB_ prefix: not taken for a misspelt setting, which the kernel would warn of)
NOTEBOOK_PARAMS_VARIABLE = "_DAGNB_NOTEBOOK_PARAMS"


def graph_origin() -> str | None:
    """What built a graph of no workflow file: the main script's path, or in a kernel
    the notebook's file where the front end says it (:func:`kernel_notebook_path`), else
    where ``dagnb run NOTEBOOK`` says it (``DAGNB_NOTEBOOK_FILE``: not the front end's
    name, which would make ``%load_ext`` read the cells), as the record's ``origin``: two
    notebooks of one folder, whose graphs share a name, do not read each other's runs.
    None where there is none (a REPL, ``python -c``, a kernel that was not told its file)."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if isinstance(script, str) and script:
        return _absolute_once(script)
    notebook = kernel_notebook_path(getattr(main, "__dict__", None))
    if notebook is not None:
        return str(notebook)
    return os.environ.get("DAGNB_NOTEBOOK_FILE") or None


def kernel_notebook_path(namespace: Mapping[str, Any] | None = None) -> Path | None:
    """The notebook file this kernel runs, when the front end said so: Jupyter Server
    (2.x) starts a session's kernel with ``JPY_SESSION_NAME`` set to the notebook's path
    and ipykernel copies it into ``__session__``; VS Code sets ``__vsc_ipynb_file__``. A
    kernel started any other way (``jupyter console``, nbclient) does not know it."""
    namespace = namespace or {}
    for candidate in (namespace.get("__vsc_ipynb_file__"), namespace.get("__session__"),
                      os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate.endswith((".ipynb", ".py")):
            # an absolute path from JupyterLab; else relative to the server's root, while
            # the kernel runs in the notebook's folder
            for path in (Path(candidate), Path(Path(candidate).name)):
                if path.is_file():
                    return path.absolute()
    return None


def notebook_run_params() -> dict[str, Any]:
    """The params ``dagnb run NOTEBOOK --param`` gave the notebook, for a graph that
    notebook's kernel builds (its origin is that notebook: not a script a cell started),
    which its runs record as a workflow's runs record theirs; ``{}`` elsewhere."""
    notebook = os.environ.get("DAGNB_NOTEBOOK_FILE")
    given = os.environ.get(NOTEBOOK_PARAMS_VARIABLE)
    if not notebook or not given or graph_origin() != notebook:
        return {}
    try:
        params = json.loads(given)
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}


@functools.lru_cache(maxsize=8)
def _absolute_once(script: str) -> str:
    """``os.path.abspath(script)``, once a process (the path Python 3.9 and later gives
    ``__main__.__file__`` is absolute already: the working folder cannot move it)."""
    return os.path.abspath(script)


# -- runs that may not write the cache folder ------------------------------------------
def side_home(cache_dir: Path) -> Path:
    """Where the runs that write nothing to ``cache_dir`` keep their records (its
    ``.runs``, laid out as the cache folder's): ``read-only`` runs, explicit or on a
    folder this process may not write, and ``off`` runs on such a folder (their steps'
    folders too). One per user and cache folder (its resolved path), in the temporary
    folder: ``<temp>/dagnb-<uid>/runs/<name>-<digest>``, kept until the system cleans it,
    and read with the cache folder's own records (:func:`last_states`, ``dagnb history``,
    ``dagnb logs``). A run whose record cannot be written in the cache folder (a full
    disk) writes it here too."""
    resolved = os.path.realpath(cache_dir)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(resolved))[:40] or "cache"
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:16]
    return _side_base() / "runs" / f"{name}-{digest}"


def _side_base() -> Path:
    return Path(tempfile.gettempdir()) / f"dagnb-{os.getuid()}"


def make_side_home(cache_dir: Path) -> Path | None:
    """:func:`side_home`, made (its ``.runs`` too); None where it cannot be, or where its
    ``dagnb-<uid>`` folder is not this user's alone (another user's, or one others may
    write: records planted there would steer ``--only-failed``)."""
    base = _side_base()
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        if not _own_folder(base):
            return None
        home = side_home(cache_dir)
        make_folder(home / ".runs")
    except OSError:
        return None
    return home


def _own_folder(path: Path) -> bool:
    """Whether ``path`` is a folder (not a link) of this user that no other may write."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid()
            and not status.st_mode & 0o022)


def _in_side(home: Path) -> bool:
    """Whether ``home`` is a :func:`side_home` (it has none of its own)."""
    return _side_base() in home.parents


def unwritable_fix(exc: OSError) -> str:
    """What to do about a cache folder that could not be written (``exc``'s errno)."""
    if exc.errno == errno.ENOSPC:
        return "free space on its disk, or run with --cache-dir on another disk"
    return ("run with --cache-dir on a folder this user may write, or with --cache-mode "
            "read-only")


def _runs_folders(cache_dir: Path) -> list[Path]:
    """The ``.runs`` folders holding the records of ``cache_dir``'s runs: its own, and
    its :func:`side_home`'s where there is one."""
    side = side_home(cache_dir) / ".runs"
    return [cache_dir / ".runs", *([side] if _own_folder(_side_base()) and side.is_dir()
                                   else [])]


def run_folder_of(cache_dir: Path, run_id: str) -> Path:
    """The folder of run ``run_id`` of ``cache_dir``: in its ``.runs``, or in its
    :func:`side_home`'s (a run that could not write the cache folder); the first where
    neither has it."""
    folders = [runs / run_id for runs in _runs_folders(cache_dir)]
    return next((folder for folder in folders if folder.is_dir()), folders[0])


class RunFolder:
    """One run's folder, made on first use and leased while the run is live."""

    __slots__ = ("_cache_dir", "_closed", "_entries", "_entries_created", "_lease", "_lock",
                 "_path", "_pruning", "_records_home", "_uses", "_uses_file", "_uses_urgent",
                 "kept", "origin", "params", "recorded", "run_id", "source", "text")

    def __init__(self, cache_dir: Path, run_id: str, source: Path | None = None,
                 params: Mapping[str, Any] | None = None, kept: bool = True,
                 origin: str | None = None, records_home: Path | None = None) -> None:
        self._cache_dir = cache_dir
        # False: in a temporary folder (a read-only run's), removed with the process
        self.kept = kept
        # where its start line and record go: its folder's home, or (a read-only run's,
        # whose folder is temporary) the cache folder's side_home
        self._records_home = records_home or cache_dir
        self.recorded = kept or records_home is not None  # (a record that outlives it)
        self.run_id = run_id
        self.source = source  # the workflow file run, recorded for --only-failed
        self.origin = origin  # with no file, the script that built the graph (None: none)
        # the params given for the run, recorded too: a copy, as they were (a list the
        # caller changes in place later was not given to this run)
        self.params = copy.deepcopy(dict(params)) if params else {}
        self.text = f"{cache_dir}/.runs/{run_id}"  # Paths made when asked for: most runs never
        self._path: Path | None = None
        self._lease: int | None = None
        self._pruning: threading.Thread | None = None
        self._closed = False
        self._uses: list[str] | None = []  # entries used, kept until the folder is made
        self._uses_file: int | None = None
        self._uses_urgent = False  # whether a kept use is of an entry read from disk later
        self._entries: dict[str, str] = {}  # step -> key of the entry it used, for the record
        # step -> that entry's created time: which version of the key it was (for the record)
        self._entries_created: dict[str, float] = {}
        # (a step's own thread may make the folder, through current().inputs, while the
        # loop notes uses: a use noted as the kept ones are written out is not lost)
        self._lock = threading.Lock()

    @property
    def runs(self) -> Path:
        """The folder of all runs' folders (dot folders are not steps to the store)."""
        return self._cache_dir / ".runs"

    @property
    def path(self) -> Path:
        """This run's folder."""
        if self._path is None:
            self._path = Path(self.text)
        return self._path

    @property
    def made(self) -> bool:
        """Whether the folder was made (and is leased) by this live run."""
        return self._lease is not None

    @property
    def pruned(self) -> bool:
        """Whether the run made its folder, ended, and a prune removed the folder since
        (the newest ``KEEP_RUNS`` are kept, up to ``KEEP_RUNS_BYTES``: never a live run's)."""
        # (_uses is None once the folder was made: see _start_uses)
        return self._closed and self._uses is None and not os.path.isdir(self.text)

    def make(self) -> Path:
        """Create the folder (once) and, while the run is live, take its lease."""
        if self._lease is None and not self._closed:
            with self._lock:
                if self._lease is None and not self._closed:
                    self._make()
        return self.path

    def _make(self) -> None:
        try:
            make_folder(self.path)  # a file named .runs is moved aside, not an error
        except OSError as exc:  # (the step that needed it fails with this: where, and why)
            raise OSError(exc.errno, f"{exc.strerror}: the run's folder {self.text!r} could "
                                     f"not be made; {unwritable_fix(exc)}") from exc
        lease = _lease(self.path)
        self._start_uses(leased=lease is not None)
        # leased last: make() returns at once, unlocked, once it is, and a caller may then
        # read entries that only .uses keeps from an eviction
        self._lease = lease
        # while the steps run (this one is leased); after a run that owes a trim, its
        # part of a prune for sure (no rewrite of the logs: most runs owe one)
        drawn = _draw() * (PRUNE_SLACK + 1) < 1
        if drawn or _trim_owed(self.runs):
            work = _prune_quietly if drawn else _trim_quietly
            self._pruning = threading.Thread(target=work, args=(self.runs,),
                                             name="dagnb-prune", daemon=True)
            self._pruning.start()

    def entry_of(self, step: str) -> str | None:
        """The key of the cache entry ``step`` was served from or stored in, if any."""
        return self._entries.get(step)

    def note_use(self, step: str, key: str, read_from_disk: bool = True,
                 created: float | None = None, stored: bool = False) -> None:
        """Say that this run hands entry ``step/key`` (restored or stored) to its steps:
        written to ``<run>/.uses`` once the folder is made (until then kept: no step ran
        yet to read it), so that an eviction in another process leaves it alone while
        the run is live. ``read_from_disk``: False for a result its steps downstream take
        from memory alone (an eviction cannot touch it: no folder is made for it).
        ``created``: the entry's ``created`` time, kept in the record to tell this version
        of the key from one stored again under it later (None: not known).
        ``stored``: the run stored it (``+STEP`` follows: a killed run's record says the
        step succeeded; a line with no tab, which readers of the lines before skip).
        (A step name holds no space or control character.)"""
        line = f"{step}\t{key}\n{STORED_MARK}{step}\n" if stored else f"{step}\t{key}\n"
        with self._lock:
            self._entries[step] = key
            self._note_created(step, created)
            if self._uses is not None:
                self._uses.append(line)
                self._uses_urgent = self._uses_urgent or read_from_disk
            elif self._uses_file is not None:
                with contextlib.suppress(OSError):  # (a full disk: only eviction would know)
                    os.write(self._uses_file, line.encode())

    def _note_created(self, step: str, created: float | None) -> None:
        """Keep which version of its entry ``step`` used (none known: none kept, not an
        earlier one's)."""
        if created is None:
            self._entries_created.pop(step, None)
        else:
            self._entries_created[step] = created

    @property
    def uses_unwritten(self) -> bool:
        """Whether entries this run reads from disk later are listed in memory only (it
        made no folder)."""
        return self._uses_urgent and self._uses is not None and not self._closed

    def _start_uses(self, leased: bool) -> None:
        """Open the new folder's ``.uses`` and write the uses kept so far; none where the
        folder is not ``leased`` (no eviction takes the run for live)."""
        kept, self._uses = self._uses or [], None
        if not leased:
            return
        with contextlib.suppress(OSError):
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._uses_file = os.open(f"{self.text}/{RUN_USES}", flags, 0o666)
            os.write(self._uses_file, "".join(kept).encode())

    def begin(self, graph_name: str, steps: Iterable[str]) -> None:
        """Note that the run starts, in one line appended to ``.runs/started.jsonl``: a
        run killed before :meth:`close` is then read as killed (see the module's text).
        A kept run's alone; one that cannot be noted goes on (``close`` warns, if the
        records log cannot be written either). Two system calls: an fstat and the write,
        without the log's lock (see :meth:`_Appender.append`), no sync."""
        if not self.recorded:
            return
        line = {"run": self.run_id, "graph": graph_name, **self._workflow_fields(),
                "started": time.time(), "pid": os.getpid(), "since": _own_start(),
                "host": _host(), "steps": list(steps)}
        with contextlib.suppress(OSError, TypeError, ValueError):  # (never fails a run)
            _appender.append(f"{self._records_home}/.runs/{STARTED_NAME}",
                             f"\n{object_text(line)}\n".encode())

    def _workflow_fields(self) -> dict[str, Any]:
        """What the run's record says it was a run of: its file or its script, params."""
        # (origin null where no script is known: still not an older version's record)
        fields: dict[str, Any] = ({"source": str(self.source)} if self.source is not None
                                  else {"origin": self.origin})
        if self.params:  # (most runs are given none: no field)
            fields["params"] = self.params
        return fields

    def close(self, states: Mapping[str, str], graph_name: str,
              skipped: Mapping[str, str] | None = None,
              errors: Mapping[str, str] | None = None) -> None:
        """Write the run's record (with why each ``skipped`` step was, and the
        ``errors`` of the failed and cancelled ones), give up the
        lease, and now and then prune old runs.

        Housekeeping never fails a run: a problem here is one warning.
        """
        self._closed = True
        # (what it is a run of first: a compaction reads that from the line's head)
        record = {"run": self.run_id, "graph": graph_name, **self._workflow_fields(),
                  "finished": time.time(), "states": dict(states)}
        if self._entries:
            record["entries"] = self._entries
        if self._entries_created:
            record["entry_created"] = self._entries_created
        if skipped:
            record["skipped"] = dict(skipped)
        if errors:
            record["errors"] = dict(errors)
        if not self.kept:  # (its folder, its steps' lines with it, went with its process)
            record["read_only"] = True
        log_size = 0
        records = f"{self._records_home}/.runs"  # (text: two Path joins cost a run 5 µs)
        try:
            log_size = _append_record(f"{records}/{RECORDS_NAME}", record)
        except OSError as exc:
            self._record_elsewhere(record, Path(records), exc)
        finally:
            if self._uses_file is not None:
                os.close(self._uses_file)
                self._uses_file = None
            if self._lease is not None:
                if self._stored_any(states):  # (what a stored step ran with is left)
                    _owe_trim(self.runs)
                os.close(self._lease)  # closing lets go of the lock
                self._lease = None
        if self._pruning is not None:
            self._pruning.join()  # done before the caller has the run: see the module's text
        # a run that made no folder (and drew no prune) and left the log small leaves
        # nothing to prune; one that left it big compacts it now (rare, and quick)
        elif log_size > _PRUNE_LOG_BYTES and _draw() * (PRUNE_SLACK + 1) < 1:
            _prune_quietly(Path(records))  # (a Path: prune joins paths to it)

    def _record_elsewhere(self, record: Mapping[str, Any], records: Path,
                          exc: OSError) -> None:
        """The record could not be written in ``records`` (a full disk, a folder that
        turned read-only): written in the cache folder's :func:`side_home` instead (read
        with its own), else its start line is marked in place as that of a run that
        ended unrecorded, not killed (:func:`_mark_unrecorded`); said in one warning."""
        said = (f"dagnb: run {self.run_id}'s record could not be written in "
                f"{str(records)!r} ({exc})")
        # (a run that writes in its cache folder: one that cannot, its record there already)
        kept_here = self.kept and not _in_side(self._records_home)
        side = make_side_home(self._cache_dir) if kept_here else None
        if side is not None:
            try:
                _append_record(side / ".runs" / RECORDS_NAME, record)
            except OSError:
                pass
            else:
                warn_user(f"{said}; kept in {str(side / '.runs')!r} instead, where dagnb "
                          "history, dagnb logs and --only-failed read it")
                return
        marked = self.recorded and _mark_unrecorded(records / STARTED_NAME, self.run_id)
        warn_user(f"{said}{'; dagnb history lists it as unrecorded' if marked else ''}; "
                  f"{unwritable_fix(exc)}")

    def _stored_any(self, states: Mapping[str, str]) -> bool:
        """Whether a step ran and was stored in this run (not one served from the cache:
        that leaves nothing here; nor with the cache off: no entry)."""
        return any(states.get(step) == "succeeded" for step in self._entries)


def _owe_trim(runs: Path) -> None:
    """Note that a finished folder holds what its stored steps left: the next run to make
    its folder prunes (and so trims it) for sure, not one in ``PRUNE_SLACK + 1``."""
    with contextlib.suppress(OSError):  # (housekeeping never fails a run)
        os.close(os.open(runs / TRIM_OWED, os.O_WRONLY | os.O_CREAT | _CLOEXEC, 0o666))


def _trim_owed(runs: Path) -> bool:
    return os.path.exists(runs / TRIM_OWED)


def _prune_quietly(runs: Path) -> None:
    with contextlib.suppress(Exception):  # housekeeping never fails a run
        prune(runs)


def _trim_quietly(runs: Path) -> None:
    """A prune's trim and size bound alone (see :func:`prune`)."""
    with contextlib.suppress(Exception):  # housekeeping never fails a run
        _no_trim_owed(runs)
        folders = sorted((e.name for e in os.scandir(runs) if e.is_dir()), reverse=True)
        _bound_bytes(runs, folders[:KEEP_RUNS], KEEP_RUNS_BYTES)


def _no_trim_owed(runs: Path) -> None:
    """Take the note away before trimming: a run ending meanwhile notes its own again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(runs / TRIM_OWED)


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


def prune(runs: Path, keep: int | None = None, max_bytes: int | None = None) -> list[Path]:
    """Remove the run folders older than the newest ``keep`` (default ``KEEP_RUNS``),
    then, of those kept, the older ones beyond ``max_bytes`` in all (default
    ``KEEP_RUNS_BYTES``: see :func:`_bound_bytes`), skipping live runs (their lease is
    held); returns what was removed."""
    keep = KEEP_RUNS if keep is None else keep
    max_bytes = KEEP_RUNS_BYTES if max_bytes is None else max_bytes
    _no_trim_owed(runs)
    with contextlib.suppress(OSError):
        _settle_started(runs)
    try:
        folders: list[str] | None = sorted(
            (e.name for e in os.scandir(runs) if e.is_dir()), reverse=True)
    except OSError:
        folders = None
    with contextlib.suppress(OSError):  # (a kept folder's record is kept: see _kept_lines)
        _compact_records(runs / RECORDS_NAME, keep, frozenset((folders or [])[:keep]))
    if folders is None:
        return []
    removed = [runs / name for name in folders[keep:] if _remove_unless_live(runs / name)]
    return removed + _bound_bytes(runs, folders[:keep], max_bytes)


def _bound_bytes(runs: Path, newest_first: list[str], max_bytes: int) -> list[Path]:
    """Remove the finished folders among ``newest_first`` from the first that would take
    their total past ``max_bytes`` on: the newest kept first (the newest finished one
    whatever its size: the last run's logs are what a user reads next). Each finished
    folder is settled once (:func:`_settled_bytes`). Returns what was removed.

    Finished is told by the run's record alone, never by a try of its lease: a run just
    made takes it a moment later (a prune that held it then left the run unleased), and
    a finished run's folder held meanwhile looked live to another run, whose ``--refresh``
    then kept the entries it lists from being replaced. A live folder is neither removed
    nor counted (it grows while its run goes on)."""
    stored = _StoredSteps(runs)
    total, removed, over, kept_one = 0, [], False, False
    for name in newest_first:
        folder = runs / name
        if stored.record(name) is None or not folder.is_dir():
            continue
        if not over:
            size = _settled_bytes(folder, stored)
            over = kept_one and total + size > max_bytes
            total, kept_one = total + size, True
        if over:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class _StoredSteps:
    """The steps a run stored or was served from the cache (done, and its record names
    their entry), from the records log, read once when first asked; only the record of
    the run asked of is parsed (told by how its line begins, ``{"run":"<id>"``)."""

    def __init__(self, runs: Path) -> None:
        self._runs = runs
        self._lines: list[bytes] | None = None

    def of(self, run_id: str) -> set[str]:
        record = self.record(run_id) or {}
        entries, states = record.get("entries"), record.get("states")
        if isinstance(entries, dict) and isinstance(states, dict):
            return {step for step in entries if states.get(step) in DONE_STATES}
        return set()

    def record(self, run_id: str) -> dict[str, Any] | None:
        """The run's record: None while it runs (or if it was killed and no prune has
        written its record yet)."""
        if self._lines is None:
            self._lines = _log_lines(self._runs / RECORDS_NAME)
        head = b'{"run":' + _json_texts(run_id)[0]
        for line in self._lines:
            record = _parsed(line) if line.startswith(head) else None
            if record is not None and record.get("run") == run_id:
                return record
        return None


def _settled_bytes(folder: Path, stored: _StoredSteps) -> int:
    """The bytes a finished run folder holds, noted in its ``.size`` by the first prune
    that measures it (a finished folder changes no more: later prunes read the note,
    not the folder's files); before measuring, what its stored steps left is trimmed
    (a run killed as it trimmed, or one of an older version, had it left)."""
    note = folder / SIZE_NAME
    with contextlib.suppress(OSError, ValueError):
        return int(note.read_text(encoding="ascii"))
    with contextlib.suppress(OSError):
        _trim_stored(str(folder), stored.of(folder.name))
    size = _folder_bytes(str(folder))
    with contextlib.suppress(OSError):
        note.write_text(str(size), encoding="ascii")
    return size


def _folder_bytes(top: str) -> int:
    """The disk space a folder takes, as ``du`` counts it (its allocated blocks: a
    folder of many small files and folders takes far more than their bytes say); links
    are not followed."""
    total, folders = 0, [top]
    while folders:
        with contextlib.suppress(OSError), os.scandir(folders.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    total += _disk_bytes(entry.stat(follow_symlinks=False))
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
    return total


def _disk_bytes(status: os.stat_result) -> int:
    blocks = getattr(status, "st_blocks", None)  # (not on Windows)
    return status.st_size if blocks is None else blocks * 512


def _trim_stored(folder: str, stored: Collection[str]) -> None:
    """Remove from a finished run's folder what its ``stored`` steps left there (their
    params file, ``in/`` links and emptied ``out/``: what they made is in the cache, and
    ``dagnb logs``, ``Run.logs`` and ``Run.outputs`` read a stored step's lines and files
    from its entry). ``.uses`` stays (one short line an entry, the run's list of them).
    A stored step's failed attempts' logs stay (``dagnb logs`` shows them before the
    entry's lines), as does all that failed, unstored or skipped steps left: how a user
    debugs them."""
    if not stored:
        return
    with os.scandir(folder) as entries:  # (one look: most stored steps left no folder)
        names = [entry.name for entry in entries
                 if entry.name in stored and entry.is_dir(follow_symlinks=False)]
    for name in names:
        with contextlib.suppress(OSError):
            _trim_step(f"{folder}/{name}")


def _trim_step(path: str) -> None:
    """Empty a stored step's folder but for its attempts' logs; remove it if none."""
    kept = False
    with os.scandir(path) as entries:
        found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_folder in found:
        if name.startswith("logs-"):
            kept = True
        elif is_folder:
            _remove_folder(f"{path}/{name}")
        else:
            os.unlink(f"{path}/{name}")
    if not kept:
        os.rmdir(path)


def _remove_folder(path: str) -> None:
    """``rm -r path``: one call for an empty one (a stored step's ``out``)."""
    try:
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


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


def last_states(cache_dir: Path, graph_name: str, source: Path | None = None,
                params: Mapping[str, Any] | None = None,
                own: Mapping[str, Any] | None = None,
                origin: str | None = ANY_ORIGIN) -> dict[str, str] | None:
    """Each step's final state in the newest recorded run of ``graph_name`` that ran it
    (a notebook runs a cell's steps at a time: a step that failed in one run stays
    failed after later runs of other steps); None when there is no run. Given its
    workflow file, ``source``, only that file's runs count (and older records, which
    name no file, of that name); given ``params``, only the runs given those params
    (a record with none was given none), or the same values, given ``own`` (the values
    the steps have of their own: see :func:`same_params`). Given ``origin`` (no file), only
    that script's runs count: see :func:`_runs_of`."""
    runs = _runs_of(cache_dir, graph_name, source, origin)
    if params is not None:
        runs = [record for record in runs if same_params(_params(record), params, own)]
    if not runs:
        return None
    states: dict[str, str] = {}
    for record in runs:
        states.update(record.get("states", {}))
    return states


def last_params(cache_dir: Path, graph_name: str,
                source: Path | None = None) -> dict[str, Any] | None:
    """The params given for the newest recorded run of this workflow (``{}``: none, or a
    record older versions wrote); None when there is no run."""
    runs = _runs_of(cache_dir, graph_name, source)
    return _params(runs[-1]) if runs else None


class StepInRun(NamedTuple):
    """A step in a recorded run: the run's id, the step's final state there, the key
    of the cache entry it was served from or stored in (None: none, or not recorded),
    why it was skipped there (None: it was not, or the record does not say), and the
    ``created`` time of that entry (None: the record is older than the field), and
    whether the run was read-only (its steps' lines went with its process)."""

    run: str
    state: str
    entry: str | None
    why: str | None = None
    created: float | None = None
    read_only: bool = False  # a run whose folder, with its steps' lines, was not kept


# states of a step that started no attempt in its run (it has no lines there)
NOT_RUN_STATES = frozenset({"skipped", "pending", "queued"})


def last_run_of(cache_dir: Path, graph_name: str, source: Path | None, step: str,
                *, ran: bool = False, run: str | None = None,
                killed: bool = True, origin: str | None = ANY_ORIGIN) -> StepInRun | None:
    """``step`` in the newest recorded run of this workflow that had it (given ``ran``,
    that ran it: not skipped, nor left pending; given ``run``, in that run; a run killed
    before it ended too, its steps' state :data:`KILLED`, unless ``killed`` is False);
    None when no run had it. The log is read back from its end, and only its lines that
    may be this workflow's are parsed, up to the first that had the step. Given an
    ``origin`` (a notebook's file), of the graphs of that name that it built."""
    def wanted(record: Mapping[str, Any]) -> bool:
        found = _step_in(record, step)
        return found is not None and (run is None or found.run == run) and not (
            ran and found.state in NOT_RUN_STATES) and (
                killed or found.state not in (KILLED, UNRECORDED))

    folders = _runs_folders(cache_dir)
    gone = ([start for runs in folders  # (first: see _gone)
             for start in _gone(_lines_of(runs, graph_name, source, STARTED_NAME), runs)]
            if killed else [])
    logs = [_lines_of(runs, graph_name, source) for runs in folders]
    newest = [next(filter(wanted, (record for record in _newest_first(lines)
                                   if _of(record, graph_name, source, origin))), None)
              for lines in logs]  # (each log's newest: the cache folder's, its side's)
    had = [record for record in (*newest, *_folder_records(folders[0]),
                                 *_unrecorded(gone, [line for lines in logs for line in lines]))
           if record is not None and _of(record, graph_name, source, origin) and wanted(record)]
    return _step_in(max(had, key=_finished), step) if had else None


def recorded_runs(cache_dir: Path, graph_name: str | None = None, source: Path | None = None,
                  last: int | None = None, origin: str | None = ANY_ORIGIN,
                  ) -> tuple[list[dict[str, Any]], int]:
    """The newest ``last`` run records in ``cache_dir`` (None: every one), oldest first,
    and how many there are: every workflow's and notebook's, or, given ``graph_name``
    (and its file, ``source``, or the notebook that built it, ``origin``), that
    workflow's. Of every workflow's, only the lines shown are parsed: the log holds the
    runs in the order they ended (each appends its record as it ends), so the newest
    are its last lines; the others are counted."""
    if graph_name is not None:
        records = _runs_of(cache_dir, graph_name, source, origin)
        return (records if last is None else records[-last:]), len(records)
    folders = _runs_folders(cache_dir)
    gone = [start for runs in folders  # (first: see _gone)
            for start in _gone(_log_lines(runs / STARTED_NAME), runs)]
    logs = [_log_lines(runs / RECORDS_NAME) for runs in folders]
    lines = [line for log in logs for line in log]
    older = [*_folder_records(folders[0]), *_unrecorded(gone, lines)]
    newest = [record for log in logs for record in itertools.islice(_newest_first(log), last)]
    records = sorted([*newest, *older], key=_finished)
    if last is None:
        return records, len(records)
    return records[-last:], sum(map(_looks_recorded, lines)) + len(older)


def _step_in(record: Mapping[str, Any], step: str) -> StepInRun | None:
    """``step`` as ``record`` has it; None when it has not, or is not readable."""
    states = record.get("states")
    state = states.get(step) if isinstance(states, dict) else None
    if not isinstance(state, str) or not isinstance(record.get("run"), str):
        return None
    key, why = (_text_of(record.get(field), step) for field in ("entries", "skipped"))
    return StepInRun(record["run"], state, key, why, entry_created(record, step),
                     record.get("read_only") is True)


def entry_created(record: Mapping[str, Any], step: str) -> float | None:
    """The ``created`` time of the entry ``step`` used in a recorded run, the version of
    its key it was; None when the record notes none (one older than the field)."""
    noted = record.get("entry_created")
    created = noted.get(step) if isinstance(noted, dict) else None
    return created if type(created) in (int, float) else None


def _text_of(field: object, step: str) -> str | None:
    """A record field's text for ``step`` (a dict by step name); None if it has none."""
    value = field.get(step) if isinstance(field, dict) else None
    return value if isinstance(value, str) else None


def _runs_of(cache_dir: Path, graph_name: str, source: Path | None,
             origin: str | None = ANY_ORIGIN) -> list[dict[str, Any]]:
    """The records of this workflow, oldest first (the log's lines of others unparsed).
    Given an ``origin`` (a graph of no file), the records older versions wrote, which say
    none, count only while that script has none of its own: they may be another
    script's, of the same name (its steps' done states taken for this graph's would run
    nothing); until then they are all that is known, as before."""
    folders = _runs_folders(cache_dir)  # (the cache folder's, and its side's)
    gone = [start for runs in folders  # (first: see _gone)
            for start in _gone(_lines_of(runs, graph_name, source, STARTED_NAME), runs)]
    lines = [line for runs in folders for line in _lines_of(runs, graph_name, source)]
    logged = [r for r in map(_parsed, lines) if r is not None]
    found = [r for r in [*logged, *_folder_records(folders[0]), *_unrecorded(gone, lines)]
             if _of(r, graph_name, source, origin)]
    if source is None and origin != ANY_ORIGIN and any("origin" in r for r in found):
        found = [r for r in found if "origin" in r]
    return sorted(found, key=_finished)


def _finished(record: Mapping[str, Any]) -> float:
    """When the run ended, to sort by: a record saying no time is the oldest, as those
    with none always were (not skipped, as a torn line is: its states and params are
    whole, and dagnb history still lists it)."""
    return finished_at(record) or 0


def finished_at(record: Mapping[str, Any]) -> float | None:
    """When the run ended, in seconds since the epoch; None when the record says no time:
    older versions' may hold none, one hand-edited or another tool's text, true or NaN."""
    finished = record.get("finished")
    if isinstance(finished, bool) or not isinstance(finished, (int, float)):
        return None
    return finished if isinstance(finished, int) or math.isfinite(finished) else None


def _params(record: Mapping[str, Any]) -> dict[str, Any]:
    params = record.get("params")
    return dict(params) if isinstance(params, dict) else {}


def same_params(one: Mapping[str, Any], other: Mapping[str, Any],
                own: Mapping[str, Any] | None = None) -> bool:
    """Whether two runs were given the same params: the same JSON values (``1`` is not
    ``1.0``, nor ``true``, though Python finds them equal: each makes its own key).
    Given ``own``, the values the steps have when given none (a workflow file's), the
    values each run ran with: one given ``city=Paris`` where the file says Paris ran
    as one given none."""
    if own:
        one, other = {**own, **one}, {**own, **other}
    return _params_text(one) == _params_text(other)


def _params_text(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _of(record: Mapping[str, Any], graph_name: str, source: Path | None,
        origin: str | None = ANY_ORIGIN) -> bool:
    """Whether ``record`` is a run of this workflow file, or of this name (no file) and,
    given an ``origin``, of that script (a record that says none is an older version's)."""
    if "source" in record:
        return source is not None and record["source"] == str(source)
    if "origin" in record and (source is not None or origin not in (ANY_ORIGIN,
                                                                     record["origin"])):
        return False  # a graph built in Python: no workflow file's, nor another script's
    return record.get("graph") == graph_name


def unfinished(states: Mapping[str, str], names: Iterable[str]) -> list[str]:
    """The steps among ``names`` with a state that is not done: failed, skipped or
    cancelled, or never finished (pending, queued, running when the run ended)."""
    return [n for n in names if n in states and states[n] not in DONE_STATES]


def _folder_records(runs: Path) -> list[dict[str, Any]]:
    """The records older runs left in their folders (``run.json``, before the log)."""
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.is_dir():
            continue
        try:
            record = json.loads(Path(entry.path, RECORD_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # no record (an old or a live run), or a damaged one
        if isinstance(record, dict):
            found.append(record)
    return found


def _logged(path: Path) -> list[dict[str, Any]]:
    """The records in the log; a torn or damaged line is skipped."""
    return [record for record in map(_parsed, _log_lines(path)) if record is not None]


def _log_lines(path: Path) -> list[bytes]:
    """The log's non-blank lines, unparsed (most readers parse a few of them)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    return [line for line in data.split(b"\n") if line.strip()]


def _lines_of(runs: Path, graph_name: str, source: Path | None,
              log: str = RECORDS_NAME) -> list[bytes]:
    """The log's lines that may be records of this workflow: those holding its file's
    name or its graph's name as JSON text (a record of it holds one; others, unparsed);
    of the records log, or another of the same form (``log``: the started runs')."""
    names = [graph_name] if source is None else [graph_name, str(source)]
    needles = {text for name in names for text in _json_texts(name)}
    return [line for line in _log_lines(runs / log)
            if any(needle in line for needle in needles)]


# -- runs killed before they ended ----------------------------------------------------
def _gone(lines: Iterable[bytes], runs: Path | None = None) -> list[dict[str, Any]]:
    """The runs started (lines of the started log) whose process is gone: killed, or
    ended with a record, which :func:`_unrecorded` tells apart. Read before the records:
    a run whose process is gone wrote its record before it went, so a reader that finds
    it gone and then reads the records cannot miss that record. ``runs``: the folder
    the log is in, where the runs' own folders tell how their steps ended."""
    gone = [start for start in _starts(lines) if _process_gone(start)]
    for start in gone:
        start[_RUNS] = runs
    return gone


def _starts(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The started log's lines, parsed; torn or damaged ones left out."""
    return [start for start in map(_parsed, lines) if start is not None and _is_start(start)]


def _unrecorded(gone: Iterable[Mapping[str, Any]], lines: list[bytes]) -> list[dict[str, Any]]:
    """The :func:`_gone` runs that no line of the records log (``lines``, the workflow's
    or all) is the record of, each as the record of a killed run. (A run's id, its time
    and random part, is in no other run's record.)"""
    logged = b"\n".join(lines)
    return [_killed(start) for start in gone if _json_texts(start["run"])[0] not in logged]


def _is_start(line: Mapping[str, Any]) -> bool:
    """Whether a started log's line is whole and of this form (not a torn one)."""
    return (isinstance(line.get("run"), str) and isinstance(line.get("steps"), list)
            and finished_at({"finished": line.get("started")}) is not None)


def _killed(start: Mapping[str, Any], runs: Path | None = None) -> dict[str, Any]:
    """The record of a run killed before it ended, from the line noted as it started:
    each of its steps ``killed``, but for those its folder's ``.uses`` lists (in
    ``runs``), which ended with their result before it: ``succeeded`` where the run
    stored it, else ``cached`` (a step writes nothing more as it ends: all its steps,
    those done and those never started, read ``killed`` before). Sorted as of when it
    started, the last time it is known to have been live. One whose line says it ended
    (:func:`_mark_unrecorded`) is ``unrecorded`` instead."""
    record = {key: value for key, value in start.items()
              if key not in ("started", "pid", "since", "host", "steps", _ENDED, _RUNS)}
    state, flag = (UNRECORDED, "unrecorded") if _ENDED in start else (KILLED, "killed")
    runs = runs or start.get(_RUNS)
    done = {} if runs is None else _done_before(runs / str(start["run"]))
    record.update({"finished": start["started"], flag: True,
                   "states": {str(step): done.get(str(step), state)
                              for step in start["steps"]}})
    return record


def _done_before(folder: Path) -> dict[str, str]:
    """The steps of a killed run that ended with their result, by its folder's
    ``.uses`` (a line per entry it handed on; ``+STEP`` after one it stored)."""
    try:
        lines = (folder / RUN_USES).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    stored = {line[1:] for line in lines if line.startswith(STORED_MARK)}
    handed_on = (line.partition("\t") for line in lines)
    return {step: "succeeded" if step in stored else "cached"
            for step, tab, _ in handed_on if tab}


_RUNS = "\0runs"  # a gone run's start line's key: the folder its log is in (not written)


_ENDED = "end"  # a start line's field, in place of "pid", once its run ended unrecorded
# where a start line says its pid: just after when it started (a param named pid is
# earlier, in its params)
_PID_FIELD = re.compile(rb',"started":[-+.0-9eE]+,("pid"):')


def _mark_unrecorded(path: Path, run_id: str) -> bool:
    """Mark run ``run_id``'s line in the started log ``path`` as that of a run that ended
    but could write its record nowhere (a full disk): its ``"pid"`` becomes ``"end"``,
    written in place (bytes the file has: no space needed), so readers list it as
    ``unrecorded``, not killed. False where it cannot be (the line gone, a prune's
    rewrite under way, a file system that cannot write at all)."""
    head = b'{"run":' + _json_texts(run_id)[0] + b","
    try:
        descriptor = os.open(path, os.O_RDWR | _CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # (a prune rewrites it under this lock)
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            return False  # replaced meanwhile: its line, if any, is in the new one
        data = path.read_bytes()
        start = 0 if data.startswith(head) else data.find(b"\n" + head) + 1
        end = data.find(b"\n", start) if start > 0 or data.startswith(head) else -1
        found = _PID_FIELD.search(data, start, end) if end > start else None
        if found is None:
            return False
        return os.pwrite(descriptor, f'"{_ENDED}"'.encode(), found.start(1)) == 5
    except OSError:
        return False
    finally:
        os.close(descriptor)


def _process_gone(start: Mapping[str, Any]) -> bool:
    """Whether the process that started a run is gone: of this host and pid namespace, no
    process, or a zombie, has its pid now, or one that started at another time than the
    line says (``since``: the pid used again since, by another process; a line of an
    older version, which has none, reads as live then); of another host (a CI job's
    container, a teammate's machine sharing the cache), none can be told, so it is taken
    for live for :data:`FOREIGN_RUN_DAYS`, then for killed (its line is then settled by
    a prune)."""
    if _ENDED in start:  # (it ended: its record could not be written)
        return True
    pid = start.get("pid")
    if start.get("host") != _host():  # (a CI job's container, gone with its run: in time)
        started = finished_at({"finished": start.get("started")})
        return started is not None and time.time() - started > FOREIGN_RUN_DAYS * 86400
    if type(pid) is not int or pid <= 0:
        return False
    since = start.get("since")
    if pid == os.getpid():
        return type(since) is int and since != _own_start()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # (PermissionError: another user's process has the pid: the run's,
        pass  #         or one that took the pid since, which its start tells)
    state, began = _process_state(pid)
    return state == b"Z" or (type(since) is int and began is not None and began != since)


def _process_state(pid: int) -> tuple[bytes | None, int | None]:
    """The state of process ``pid`` (``Z``: ended, its parent yet to reap it) and when it
    started (clock ticks after boot), from ``/proc`` (Linux); None for what cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None, None
    began = fields[19] if len(fields) > 19 else b""  # (the stat's 22nd field, starttime)
    return (fields[0] if fields else None), (int(began) if began.isdigit() else None)


def _own_start() -> int | None:
    """When this process started (see :func:`_process_state`), read once per process."""
    pid = os.getpid()
    if _OWN_START[0] != pid:  # (a forked child started later than its parent)
        _OWN_START[:] = [pid, _process_state(pid)[1]]
    return _OWN_START[1]


_OWN_START: list[Any] = [None, None]  # [pid, its start]


@functools.lru_cache(maxsize=1)
def _host() -> str:
    """Where a pid means something: this host's name, and its pid namespace where the
    system says (a container's pids are not its host's). Once a process."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{os.uname().nodename} {namespace}".rstrip()


def _settle_started(runs: Path) -> None:
    """Rewrite the started log with the lines of live runs alone: a run that ended has
    its record already; one killed gets its record now, in the records log. (Under the
    started log's lock, appending through a descriptor of its own: the process's
    appender, held by a run starting in another thread, may be waiting for that lock.)"""
    path = runs / STARTED_NAME
    descriptor = _existing_locked(path)
    if descriptor is None:
        return
    try:
        lines = _log_lines(path)
        # (a run whose record went to the side home, its disk full here, ended too)
        logs = [runs / RECORDS_NAME, *([] if _in_side(runs.parent) else
                                      [side_home(runs.parent) / ".runs" / RECORDS_NAME])]
        logged_ids = set().union(*map(_run_ids, logs))
        # (most lines are of runs that ended, their record logged: dropped unparsed; the
        # process check comes first all the same, see _gone)
        starts = _starts(line for line in lines if not _logged_start(line, logged_ids))
        gone = {start["run"] for start in starts if _process_gone(start)}
        # (read again after _gone; none to look for when every start line was logged)
        logged = b"\n".join(line for log in logs for line in _log_lines(log)) if starts else b""
        ended = {start["run"] for start in starts if _json_texts(start["run"])[0] in logged}
        killed = [_killed(start, runs) for start in starts
                  if start["run"] in gone and start["run"] not in ended]
        if killed:
            _append_all(runs / RECORDS_NAME, killed)
        live = [_COMPACT(start) for start in starts
                if start["run"] not in gone and start["run"] not in ended]
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text("".join(f"{line}\n" for line in live), encoding="utf-8")
        os.replace(partial, path)
    finally:
        os.close(descriptor)


_START_HEAD = b'{"run":"'  # how a start line begins (_COMPACT's text of a dict)
_RUN_FIELD = re.compile(rb'"run":"([^"\\]*)"')  # a run id as records hold it (unescaped)


def _run_ids(path: Path) -> set[bytes]:
    """The run ids the records log holds, as they are written, unparsed: one pass over
    it, where looking for each start line's id in the whole log took a prune time that
    grew as the square of the runs since the last."""
    try:
        return set(_RUN_FIELD.findall(path.read_bytes()))
    except OSError:
        return set()


def _logged_start(line: bytes, logged_ids: set[bytes]) -> bool:
    """Whether the start line ``line``'s run has a record among ``logged_ids``, told
    from its run id alone, unparsed (False when the line is not of that form: parsed
    then)."""
    if not line.startswith(_START_HEAD):
        return False
    end = line.find(b'"', len(_START_HEAD))
    return end > 0 and line[len(_START_HEAD):end] in logged_ids


def _append_all(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append ``records`` to the log under its lock, through a descriptor of its own."""
    descriptor = _open_locked(path)
    try:
        os.write(descriptor, "".join(f"\n{_COMPACT(r)}\n" for r in records).encode())
    finally:
        os.close(descriptor)


def _json_texts(value: str) -> tuple[bytes, bytes]:
    """``value`` as a JSON string, its non-ASCII escaped (as dagnb writes it) and not."""
    return (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode())


def _newest_first(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    """The records of log lines, parsed one at a time from the last."""
    for line in reversed(lines):
        record = _parsed(line)
        if record is not None:
            yield record


def _parsed(line: bytes) -> dict[str, Any] | None:
    """One log line's record; None for a torn or damaged one. (UTF-8, as dagnb writes
    its logs: json.loads would first guess the encoding of each line, a prune's every
    line.)"""
    try:
        record = _DECODE(line.decode())
    except ValueError:  # (UnicodeDecodeError too)
        return None
    return record if isinstance(record, dict) else None


_DECODE = json.JSONDecoder().decode


def _looks_recorded(line: bytes) -> bool:
    """Whether a log line, unparsed, is a whole record (not one torn by a crash)."""
    line = line.strip()
    return line.startswith(b"{") and line.endswith(b"}")


_COMPACT = encoder(separators=(",", ":"))  # json.dumps' text, its C encoder made once


def _append_record(path: Path | str, record: Mapping[str, Any]) -> int:
    """Append one record, in one write, under the log's lock; the log's size after."""
    data = f"\n{object_text(record)}\n".encode()
    with _appender.lock:
        descriptor, size = _appender.locked(os.fspath(path))
        try:
            written = os.write(descriptor, data)
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    if written < len(data):  # (a disk that filled up mid-write: a torn line, skipped)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
    return size + len(data)


class _Appender:
    """The records logs this process appends to, each kept open between runs: opening
    the log costs a run more than appending to it. A log replaced by a prune's rewrite
    (or removed) has no link left, and is opened again."""

    KEEP = 8  # logs kept open (a process rarely uses more than one cache folder)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._open: dict[str, tuple[int, int]] = {}  # path -> (pid, descriptor)

    def locked(self, path: str) -> tuple[int, int]:
        """The log open for appending with its lock held, and its size."""
        for _attempt in range(10):
            descriptor = self._descriptor(path)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            status = os.fstat(descriptor)
            if status.st_nlink > 0 and _same_file(path, status):
                return descriptor, status.st_size
            self._forget(path)  # replaced meanwhile: open the new one
        raise OSError(f"the run records {path!r} kept changing while being opened")

    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` (one small line: one ``write`` of an ``O_APPEND`` file, whole
        beside other appenders') without the log's lock, each run's start line: two
        system calls where the lock's took five. A prune's rewrite meanwhile is
        followed (a log with no link left is opened again); one under way may miss a
        line written as it replaces the log: that run, if killed, is then unseen."""
        with self.lock:
            for _attempt in range(3):
                descriptor = self._descriptor(path)
                if os.fstat(descriptor).st_nlink > 0:
                    os.write(descriptor, data)
                    return
                self._forget(path)  # replaced meanwhile: open the new one

    def _descriptor(self, path: str) -> int:
        found = self._open.get(path)
        if found is not None and found[0] == os.getpid():
            return found[1]
        if found is not None:  # a forked child's copy: its own, opened again
            self._forget(path)
        if len(self._open) >= self.KEEP:
            self._forget(next(iter(self._open)))
        descriptor = _open_locked(Path(path))  # made (with its folder) if missing
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        self._open[path] = (os.getpid(), descriptor)
        return descriptor

    def _forget(self, path: str) -> None:
        _pid, descriptor = self._open.pop(path)
        with contextlib.suppress(OSError):
            os.close(descriptor)


_appender = _Appender()


def _same_file(path: str, status: os.stat_result) -> bool:
    """Whether ``path`` still names the open file: a link count alone misses a file
    replaced from another host of a network file system (it keeps its .nfs name)."""
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_ino, now.st_dev) == (status.st_ino, status.st_dev)


def _open_locked(path: Path) -> int:
    """The log open for appending, its lock held; made (with its folder) if missing."""
    descriptor = _locked_log(path, create=True)
    assert descriptor is not None  # (made when missing)
    return descriptor


def _existing_locked(path: Path) -> int | None:
    """The log open for appending, its lock held; None when missing. What a prune opens:
    it never brings back a cache folder removed under it, nor stops that removal with a
    log of its making."""
    return _locked_log(path, create=False)


def _locked_log(path: Path, create: bool) -> int | None:
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_CREAT if create else 0
    for _attempt in range(10):  # each retry follows a prune's rewrite or a made folder
        try:
            descriptor = os.open(path, flags, 0o666)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                return None
            make_folder(path.parent)  # a file named .runs is moved aside, not an error
            continue
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            if os.fstat(descriptor).st_ino == os.stat(path).st_ino:
                return descriptor  # still the log: not replaced by a prune meanwhile
        except FileNotFoundError:
            pass
        os.close(descriptor)
    raise OSError(f"the run records {str(path)!r} kept changing while being opened")


def _workflow(record: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """What a record is a run of: its graph's name, workflow file and script (if any)."""
    return record.get("graph"), record.get("source"), record.get("origin")


def _compact_records(path: Path, keep: int, folders: Collection[str] = ()) -> None:
    """Rewrite the log with what :func:`_kept_lines` keeps, once it holds more than
    ``_COMPACT_AT`` lines or ``_COMPACT_BYTES``; renamed into place under its lock
    (unless all are kept). ``folders``: the runs whose folders are kept."""
    descriptor = _existing_locked(path)
    if descriptor is None:
        return
    try:
        lines = _log_lines(path)
        if len(lines) <= max(_COMPACT_AT, keep) and path.stat().st_size <= _COMPACT_BYTES:
            return
        kept = _kept_lines(lines, keep, folders)
        if len(kept) == len(lines):  # (a workflow's newest record is this big alone)
            return
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        # (each kept record as it was written: one JSON object a line, parsed whole)
        partial.write_bytes(b"".join(line.strip() + b"\n" for line in kept))
        os.replace(partial, path)
    finally:
        os.close(descriptor)


def _kept_lines(lines: list[bytes], keep: int, folders: Collection[str] = ()) -> list[bytes]:
    """Of the log's ``lines``, the whole records that are: among the newest ``keep`` and
    fit in ``_COMPACT_BYTES`` with the others so taken (the newest one always; a big one
    left out leaves the older ones in), the newest of their workflow (parsed to be
    sure: one torn after a ``}`` must not hide the one before), or of a run whose folder
    is kept (its logs are read through its record, and a folder with none is taken for
    live by the prune's size bound)."""
    kept: list[bytes] = []
    room, newer, seen = _COMPACT_BYTES, 0, set()
    for line in reversed(lines):
        identity = _line_identity(line)
        if identity is None:
            continue
        run, workflow = identity
        newest = workflow not in seen
        if newest and _parsed(line) is None:
            continue
        seen.add(workflow)
        recent = newer < keep and (newer == 0 or len(line) <= room)
        newer += 1
        if recent:
            room -= len(line)
        if recent or newest or run in folders:
            kept.append(line)
    return kept[::-1]


# a record's head as dagnb writes it: its run, graph, then its file or its script
_HEAD = re.compile(rb'\{"run":"([^"\\]*)","graph":("(?:[^"\\]|\\.)*"),'
                   rb'"(source|origin)":("(?:[^"\\]|\\.)*"|null)[,}]')


def _line_identity(line: bytes) -> tuple[Any, Any] | None:
    """The run a log line is the record of and what it is a run of (as :func:`_workflow`),
    read from its head alone (a 100,000-step run's line, 9 MB, parsed whole took 70 ms);
    None for a line that is no whole record (one torn just after a ``}`` is not told
    apart here). Lines written otherwise (older ones) are parsed."""
    line = line.strip()
    head = _HEAD.match(line)
    if head is None or not line.endswith(b"}"):
        record = _parsed(line)
        return None if record is None else (record.get("run"), _workflow(record))
    run, graph, field, value = head.groups()
    named = _DECODE(value.decode())
    return run.decode(), (_DECODE(graph.decode()), named if field == b"source" else None,
                          named if field == b"origin" else None)


def run_id_meant(given: str, ids: list[Any]) -> str:
    """The run id ``given`` names among ``ids``: itself, or the one id that starts or
    ends with it (``--run 20261207-084037``, or its last part, ``1c15c5``, as a short
    git hash names a commit); ``given`` when none does. Refused when several do."""
    if given in ids:
        return given
    meant = sorted({i for i in ids
                    if isinstance(i, str) and (i.startswith(given) or i.endswith(given))})
    if len(meant) > 1:
        raise ConfigError(f"--run {given!r} names {len(meant)} recorded runs "
                          f"({listed(meant, most=5)}); give more of its id")
    return meant[0] if meant else given


def run_steps(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each step of a recorded run, in the run's order: how it ended, the cache entry it
    was served from or stored in (its key's first 12 digits), and why it did not end
    well (a failed or cancelled step's error, masked as it was shown; why one was
    skipped; that the run was killed or its end unrecorded). A record older than a
    field shows that field blank."""
    states = record.get("states")
    rows = []
    for step, state in (states.items() if isinstance(states, dict) else ()):
        entry = _text_of(record.get("entries"), step)
        rows.append({"step": str(step), "state": str(state),
                     "entry": "" if entry is None else entry[:12],
                     "why": _why_not_done(record, str(step), state)})
    return rows


def _why_not_done(record: Mapping[str, Any], step: str, state: object) -> str:
    if state == KILLED:
        return "the run was killed before it ended (its process is gone)"
    if state == UNRECORDED:
        return "the run ended, but its record could not be written"
    field = "skipped" if state == "skipped" else "errors"
    return _text_of(record.get(field), step) or ""
