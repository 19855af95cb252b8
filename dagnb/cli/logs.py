"""``dagnb logs WORKFLOW STEP``: the lines a step printed in the newest run that had it.

``WORKFLOW`` is a workflow file, or a notebook (or a script that runs a graph): its runs
are those whose record's ``origin`` is its file (every notebook's graph is named
``notebook``), and its steps those of its runs (it is not loaded: that would run it).

``dagnb run`` points here under the last lines of a failed step. The lines come from the
step's log files in the run's folder
(``<cache>/.runs/<run>/<step>/logs-<attempt>.jsonl``, every attempt's, masked as they
were logged, each attempt's under ``── attempt N ──`` when there were more), in the
newest recorded run of the workflow file that had the step; control characters show as
escapes, as under ``dagnb run``'s failures. A step served from the cache in that run (a
re-run whose inputs did not change) shows the lines of its cache entry, those of the run
that stored it (the run's record names the entry), under one line on stderr saying so
and when; an entry gone since (a cleared cache), or stored again under its key since (a
``--refresh``, an expired ttl: the record of a run notes which version it used, and the
lines found are a later run's), is said in one line, exit 1. A step that ran,
succeeded and was stored in that run left its lines with its cache entry too (the run's
folder keeps the lines of steps that failed, were cancelled, or were not stored): they
come from there, under such a line; of a step that succeeded on a retry, after its
failed attempts' lines from the run's folder. A step that succeeded and was not stored
(``cache: false``, ``--no-cache``, a result holding a secret) and left no lines there
printed nothing, said in one line with why it was not stored (exit 0; 1 when a prune may
have taken the run's folder, with the lines). A record written before runs named their
entries (a step from the cache with none named) says how to read them in Python instead.
``--run RUN`` reads an earlier recorded run instead of the newest. A run killed before it
ended (``kill -9``: read as killed, :mod:`dagnb.runtime.history`) shows the lines its
step's file got by then, under one line on stderr saying so (exit 0); without ``--run``,
one whose step left no lines there gives way to the newest run that was not killed,
said in a line (one that ended but could not write its record, a full disk, as a killed
one). A read-only run is recorded too, outside the cache folder (its side home,
:func:`dagnb.runtime.history.side_home`), but its folder went with its process: a step
that ran there, failed or succeeded, has no lines to show, said in one line (exit 2);
one served from the cache there shows its entry's lines, as above. A step that did not
run in that run (skipped, as its upstream failed; in a read-only run too) is said in one
line on stderr, exit 1, with why (the run's record) and the newest run that ran it. A
step the file no longer defines (renamed since), or any step of a file that does not
load now (a YAML error mid-edit), is read from the run records of that file all the
same, under one line on stderr saying so.
(:mod:`dagnb.cli` registers this as its ``logs`` subcommand.)
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from dagnb import checks
from dagnb.errors import ConfigError, DagnbError

if TYPE_CHECKING:
    from dagnb.cache.entry import Entry
    from dagnb.runtime.history import StepInRun

__all__ = ["Workflow", "add_parser", "notebook_of", "run", "workflow_of"]


def add_parser(sub: Any) -> None:
    """Add ``logs`` to the ``dagnb`` parser's subparsers."""
    logs = sub.add_parser("logs", help="the lines a step printed in the newest run of a "
                          "workflow or notebook that had it")
    logs.add_argument("workflow", help="the workflow file or notebook (as given to dagnb run)")
    logs.add_argument("step", nargs="?", default=None,
                      help="the step whose lines to show (none: the file's steps are listed)")
    logs.add_argument("--tail", default=None, metavar="N", help="only the last N lines")
    logs.add_argument("--run", default=None, metavar="RUN",
                      help="the lines of this recorded run (its id), not the newest's")
    logs.add_argument("--stream", choices=["stdout", "stderr"], default=None,
                      help="only this stream's lines (default: both, as they were logged)")
    logs.add_argument("--cache-dir", default=None, help="cache folder (default: the setting)")


class Workflow(NamedTuple):
    """A workflow file as ``dagnb logs`` reads it: the name and file its runs are
    recorded under, its graph, or (None) why it does not load now (mid-edit). A
    notebook's (``origin``, the file its runs name: every notebook's graph is named
    ``notebook``) has no graph: its steps are those its runs had."""

    name: str | None
    source: Path | None
    graph: Any | None
    problem: str | None = None
    origin: str | None = None


def notebook_of(path: str, cache_dir: str | None) -> Workflow:
    """The notebook (or script) at ``path``: its runs are those whose ``origin`` is its
    file (by any spelling of it, as ``dagnb history`` finds them), of the graph its
    newest run ran (``notebook``, every notebook's; a script's own name)."""
    from dagnb.cache import local_folder
    from dagnb.cli.history import same_file
    from dagnb.runtime.history import recorded_runs

    source = Path(path).absolute()
    newest = next((record for record in reversed(recorded_runs(local_folder(cache_dir))[0])
                   if same_file(record.get("origin"), source)), None)
    if newest is None and not source.is_file():  # (a typo: not "no run recorded")
        raise ConfigError(checks.missing_file("notebook", path))
    if newest is None:
        return Workflow("notebook", None, None, origin=str(source))
    return Workflow(str(newest.get("graph")), None, None, origin=newest["origin"])


def _last_run(folder: Path, workflow: Workflow, step: str, **options: Any) -> StepInRun | None:
    """``step`` in the newest run of ``workflow`` that had it (see ``last_run_of``)."""
    from dagnb.runtime.history import ANY_ORIGIN, last_run_of

    return last_run_of(folder, workflow.name, workflow.source, step,  # type: ignore[arg-type]
                       origin=workflow.origin or ANY_ORIGIN, **options)


def _runs(folder: Path, workflow: Workflow) -> list[dict[str, Any]]:
    """The recorded runs of ``workflow``, oldest first."""
    from dagnb.runtime.history import ANY_ORIGIN, recorded_runs

    return recorded_runs(folder, workflow.name, workflow.source,
                         origin=workflow.origin or ANY_ORIGIN)[0]


def workflow_of(path: str, cache_dir: str | None = None) -> Workflow:
    """The workflow file at ``path``; one that is there but does not load (a YAML error
    mid-edit), or is gone but recorded (renamed or removed since: ``dagnb history``
    names this command for its runs), is still found in the run records by its path."""
    from dagnb.workflows.loader import load

    try:
        graph = load(path)
    except DagnbError as exc:
        if not Path(path).is_file() and not _recorded(Path(path).resolve(), cache_dir):
            raise
        return Workflow(None, Path(path).resolve(), None, str(exc))
    return Workflow(graph.name, graph.workflow_file, graph)


def _recorded(source: Path, cache_dir: str | None) -> bool:
    """Whether a run of the workflow file ``source`` is recorded in the cache folder."""
    from dagnb.cache import local_folder
    from dagnb.cli.history import same_file
    from dagnb.runtime.history import recorded_runs

    return any(same_file(record.get("source"), source)
               for record in recorded_runs(local_folder(cache_dir))[0])


def run(args: argparse.Namespace, workflow: Workflow) -> int:
    """``dagnb logs``, for the ``workflow`` read from ``args.workflow``; 1 when neither
    the run's folder nor the cache holds the lines of a step done there."""
    from dagnb.runtime.history import DONE_STATES, KILLED, NOT_RUN_STATES, UNRECORDED

    tail = _tail(args.tail)
    if args.step is None:
        raise ConfigError(_name_a_step(args, workflow))
    found, files = _last_log(args, workflow)
    unlisted = _unlisted(args, workflow, found)
    if unlisted:
        print(f"dagnb: {unlisted}", file=sys.stderr, flush=True)
    if found.state in (KILLED, UNRECORDED):
        return _print_killed(args, found, files, tail)
    if found.state in NOT_RUN_STATES and not files:
        print(f"dagnb: {_not_run(args, workflow, found)}", file=sys.stderr)
        return 1
    if found.entry is not None and found.state == "succeeded" and files:
        return _print_retried(args, workflow, found, files, tail)  # (failed, then stored)
    if found.entry is not None and found.state in _DONE:  # (stored: its lines with it)
        return _print_entry(args, workflow, found, tail)
    printed = _print_lines(files, tail, args.stream)
    if files and not printed:
        _say_none_on(args, found.run)
    if found.state == "cached" and not files:  # (no entry named: a record older than that)
        print(f"dagnb: step {args.step!r} came from the cache in run {found.run}: the lines "
              "of an attempt stored in the cache are kept with its entry, not in the run's "
              f"folder; in Python, {_replay(args)} replays them from the cache",
              file=sys.stderr)
        return 1
    if found.state in DONE_STATES and not files:  # (its record names no entry: not stored)
        return _silent_unstored(args, workflow, found)
    if not files:
        print(f"dagnb: step {args.step!r} ({found.state}) printed nothing in run {found.run}",
              file=sys.stderr)
    return 0


_DONE = {"succeeded": "succeeded", "cached": "came from the cache"}


def _name_a_step(args: argparse.Namespace, workflow: Workflow) -> str:
    """The line asking for a step: the file's steps (or, when it does not load, those of
    its newest recorded run), and those that failed in its newest run."""
    from dagnb.cache import local_folder

    records = _runs(local_folder(args.cache_dir), workflow)
    states = records[-1].get("states") if records else None
    states = states if isinstance(states, dict) else {}
    steps = (list(workflow.graph.names) if workflow.graph is not None
             else [str(name) for name in states])
    failed = [name for name in steps if states.get(name) == "failed"]
    command = f"dagnb logs {shlex.quote(args.workflow)} STEP"
    if not steps and workflow.origin is not None:
        return (f"{command}: no run of {args.workflow} is recorded in "
                f"{str(local_folder(args.cache_dir))!r} yet (dagnb run {args.workflow} "
                "records its runs, as running its cells does)")
    if not steps:
        return (f"{command}: name the step whose lines to show ({args.workflow} does not "
                f"load now: {workflow.problem}; and no run of it is recorded)")
    newest = (f"; in its newest run, {records[-1].get('run')}, "
              f"{checks.listed([repr(name) for name in failed])} failed" if failed else "")
    return (f"{command}: name the step whose lines to show, one of {checks.listed(steps)}"
            f"{newest}")


def _print_killed(args: argparse.Namespace, found: StepInRun, files: list[Path],
                  tail: int | None) -> int:
    """Print the lines a step of a run killed before it ended (``kill -9``: no record
    of how its steps ended) wrote to the run's folder, under one line on stderr saying
    so; or say that it wrote none there."""
    from dagnb.runtime.history import KILLED

    said = (f"dagnb: run {found.run} was killed before it ended" if found.state == KILLED
            else f"dagnb: run {found.run} ended, but how could not be recorded (its cache "
                 "folder's disk was full, or it turned read-only)")
    if not any(_size(path) for path in files):  # (a file opened, its lines not written)
        print(f"{said}, and step {args.step!r} left no lines in its folder: it had printed "
              "nothing by then, or had not started, or had finished and was stored (its "
              "lines then went with its cache entry)", file=sys.stderr)
        return 0
    print(f"{said}: the lines step {args.step!r} had written to its log file by then (what "
          "it printed in its last moment may be missing)", file=sys.stderr, flush=True)
    if not _print_lines(files, tail, args.stream):
        _say_none_on(args, found.run)
    return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _silent_unstored(args: argparse.Namespace, workflow: Workflow, found: StepInRun) -> int:
    """Say that a step which succeeded and was not stored (its lines stay in the run's
    folder, not with an entry) left no lines there: 0 when it printed nothing (the run's
    folder is there, or it never had one: a run of silent Python steps makes none), 1
    when a prune may have taken the folder with them."""
    from dagnb.cache import local_folder
    from dagnb.runtime.history import KEEP_RUNS, KEEP_RUNS_BYTES, run_folder_of

    runs = run_folder_of(local_folder(args.cache_dir), found.run).parent
    said = (f"dagnb: step {args.step!r} succeeded in run {found.run}, not stored in the "
            f"cache ({_why_unstored(args, workflow)})")
    if (runs / found.run).is_dir() or not _may_be_pruned(runs, found.run):
        print(f"{said}; it printed nothing", file=sys.stderr)
        return 0
    print(f"{said}, and that run has no folder in {str(runs)!r} to keep its lines: it "
          "printed nothing and wrote no file, or the folder was pruned since (the newest "
          f"{KEEP_RUNS} runs' folders are kept, up to {KEEP_RUNS_BYTES / 2**30:g} GiB)",
          file=sys.stderr)
    return 1


def _may_be_pruned(runs: Path, run_id: str) -> bool:
    """Whether a prune may have taken the folder of run ``run_id``. It keeps the newest
    ``KEEP_RUNS`` folders by name (the run ids' order), and of them the newest up to
    ``KEEP_RUNS_BYTES``, taking every older finished one past that: so with fewer newer
    ones beside it, and an older one still there (or none newer), the run never had a
    folder."""
    from dagnb.runtime.history import KEEP_RUNS

    try:
        names = [entry.name for entry in os.scandir(runs) if entry.is_dir()]
    except OSError:
        return True
    newer = sum(name > run_id for name in names)
    return newer >= KEEP_RUNS or (newer > 0 and not any(name < run_id for name in names))


def _why_unstored(args: argparse.Namespace, workflow: Workflow) -> str:
    """Why a step that succeeded was not stored: ``cache: false`` if the file says so
    now, else what else keeps a result out (the run's record does not say which)."""
    graph = workflow.graph
    if graph is not None and args.step in graph and graph[args.step].cache is False:
        return "it has cache: false"
    return ("caching was off for that run (--no-cache, --cache-mode off), or the run "
            "warned that its result could not be stored: one holding a secret's value, "
            "or one that cannot be pickled")


def _unlisted(args: argparse.Namespace, workflow: Workflow, found: StepInRun) -> str:
    """The line saying the file does not define the step now, or does not load ("":
    it defines it): its lines come from the run records alone. A notebook's steps are
    those of its runs: none to say."""
    if workflow.origin is not None:
        return ""
    if workflow.graph is None and not os.path.lexists(args.workflow):
        return (f"{args.workflow} is gone (renamed or removed since); step {args.step!r} "
                f"read from its run records: its lines in run {found.run}")
    if workflow.graph is None:
        return (f"{args.workflow} does not load now ({workflow.problem}); step "
                f"{args.step!r} read from its run records: its lines in run {found.run}")
    if args.step not in workflow.graph:
        return (f"{args.workflow} no longer defines step {args.step!r}; read from its run "
                f"records: its lines in run {found.run}, the newest that had it")
    return ""


def _not_run(args: argparse.Namespace, workflow: Workflow, found: StepInRun) -> str:
    """Why a step has no lines in the run asked for (it was skipped, or never started),
    and the newest run that ran it, with the command that shows its lines."""
    from dagnb.cache import local_folder

    why = (f"it was skipped because {found.why}" if found.why
           else "it was skipped: a step upstream of it did not succeed"
           if found.state == "skipped" else f"it was still {found.state} when the run ended")
    said = f"step {args.step!r} did not run in run {found.run}: {why}"
    folder = local_folder(args.cache_dir)
    earlier = _last_run(folder, workflow, args.step, ran=True)
    if earlier is None:
        return f"{said}; no recorded run of {args.workflow!r} ran it"
    return (f"{said}; it last ran in run {earlier.run} ({earlier.state}): "
            f"{_logs_command(args, earlier.run)} shows its lines")


def _logs_command(args: argparse.Namespace, run_id: str | None,
                  workflow: str | None = None) -> str:
    """The ``dagnb logs`` command that shows the step's lines in run ``run_id`` (None:
    in the newest run that had it) of ``workflow`` (None: the file given)."""
    where = "" if args.cache_dir is None else f" --cache-dir {shlex.quote(args.cache_dir)}"
    which = "" if run_id is None else f" --run {run_id}"
    return f"dagnb logs {shlex.quote(workflow or args.workflow)} {args.step}{which}{where}"


def _last_log(args: argparse.Namespace, workflow: Workflow) -> tuple[StepInRun, list[Path]]:
    """The step in the newest run of the workflow that had it (one the file defines no
    more, too), and the log files of its attempts in the run's folder."""
    from dagnb.cache import local_folder
    from dagnb.cli.cache import missing_folder
    from dagnb.runtime.history import (
        DONE_STATES,
        KILLED,
        NOT_RUN_STATES,
        UNRECORDED,
        run_folder_of,
        run_id_meant,
        side_home,
    )

    folder = local_folder(args.cache_dir)
    named = args.cache_dir is not None and not checks.is_url(args.cache_dir)
    # (a typo: not "no run yet"; a read-only run's of a folder never made is recorded)
    if named and not folder.is_dir() and not side_home(folder).is_dir():
        raise missing_folder(args.cache_dir, folder)
    if args.run is not None:  # (a unique start or end of its id names it)
        ids = [r.get("run") for r in _runs(folder, workflow)]
        args.run = run_id_meant(args.run, ids)
    found = _last_run(folder, workflow, args.step, run=args.run)
    if found is None:
        _refuse_unknown(args, workflow)
    if found is None and args.run is not None:
        raise ConfigError(f"--run {args.run!r}: no run of {args.workflow!r} recorded in "
                          f"{str(folder)!r} by that id had step {args.step!r}; leave --run "
                          "out for the newest run that had it")
    if found is None:
        raise ConfigError(f"no run of {args.workflow!r} recorded in {str(folder)!r} had step "
                          f"{args.step!r}; run it first (dagnb run {args.workflow})"
                          + _elsewhere(args))
    if (found.state in (KILLED, UNRECORDED) and args.run is None
            and not _attempts(folder, found, args.step)):
        found = _before_killed(args, workflow, folder, found)
    run_folder = run_folder_of(folder, found.run)
    gone = not run_folder.is_dir() and found.state not in (KILLED, UNRECORDED)
    if gone and found.read_only and found.state in NOT_RUN_STATES:
        return found, []  # (it had no lines to keep: said as it did not run, see run)
    # (what ran in a read-only run printed to a temporary folder; a hit's lines are the
    # entry's, as a stored step's; a killed run's missing folder is said)
    if gone and found.read_only and found.state != "cached":
        raise ConfigError(f"run {found.run}, the last that had step {args.step!r}, was "
                          "read-only: its steps' lines were not kept (a read-only run "
                          "writes nothing to the cache folder; --cache-mode off keeps "
                          "them for dagnb logs); dagnb history lists the runs, and --run "
                          "RUN shows an earlier one's")
    if gone and found.state not in DONE_STATES:
        raise ConfigError(f"run {found.run}, the last that had step {args.step!r}, has no "
                          f"folder in {str(run_folder.parent)!r}: it was pruned (the newest "
                          "runs' folders are kept), or its steps wrote no file")
    return found, _attempts(folder, found, args.step)


def _attempts(folder: Path, found: StepInRun, step: str) -> list[Path]:
    """The log files of the step's attempts in the folder of the run ``found``."""
    from dagnb.runtime.history import run_folder_of
    from dagnb.runtime.logfile import attempt_files

    return attempt_files(run_folder_of(folder, found.run) / step)


def _before_killed(args: argparse.Namespace, workflow: Workflow, folder: Path,
                   killed: StepInRun) -> StepInRun:
    """The newest run that had the step and was not killed, in place of the newest,
    killed before the step wrote a line (one served from the cache writes none: its
    lines are those of the entry, as an earlier run's record names it), said in a
    line; ``killed`` when there is none."""
    from dagnb.runtime.history import KILLED

    earlier = _last_run(folder, workflow, args.step, killed=False)
    if earlier is None:
        return killed
    how = ("was killed before it ended" if killed.state == KILLED
           else "ended unrecorded (its end could not be written)")
    print(f"dagnb: run {killed.run}, the newest that had step {args.step!r}, {how} and "
          f"holds no lines of it; run {earlier.run} shown instead "
          f"({_logs_command(args, killed.run)} for that one)", file=sys.stderr, flush=True)
    return earlier


def _refuse_unknown(args: argparse.Namespace, workflow: Workflow) -> None:
    """Refuse a step no record has that the file does not define, or any step no record
    has when the file does not load (its error, and why it matters here); of a
    notebook, a step none of its recorded runs had."""
    if workflow.origin is not None:
        _refuse_unrecorded_step(args, workflow)
        return
    if workflow.graph is None:
        raise ConfigError(f"{workflow.problem} (dagnb logs found no run record of this "
                          f"file with step {args.step!r}: name a step a recorded run had, or "
                          "fix the file)")
    workflow.graph[args.step]  # (unknown: refused, with its steps and the closest name)


def _refuse_unrecorded_step(args: argparse.Namespace, workflow: Workflow) -> None:
    """Refuse a step no recorded run of the notebook had, naming those its runs had
    (the closest first) when it has runs at all (none: the caller says so)."""
    from dagnb.cache import local_folder

    if args.run is not None:
        return  # (the caller names the run that lacks it)
    steps = {str(name): None for record in _runs(local_folder(args.cache_dir), workflow)
             for name in (record.get("states") or {})}
    if steps:
        hint = checks.did_you_mean(args.step, steps)
        raise ConfigError(f"no recorded run of {args.workflow} had step {args.step!r}"
                          f"{f' ({hint})' if hint else ''}; its runs had "
                          f"{checks.listed(list(steps))}")


def _elsewhere(args: argparse.Namespace) -> str:
    """Where else its runs may be: the folder a run given --cache-dir, or another
    setting, cached in (nothing when --cache-dir named the folder)."""
    if args.cache_dir is not None:
        return ""
    return (", or name the folder it cached in with --cache-dir DIR (one a run was given "
            "with --cache-dir, or the setting cache_directory)")


def _print_entry(args: argparse.Namespace, workflow: Workflow, found: StepInRun,
                 tail: int | None) -> int:
    """Print the lines of the cache entry a step was served from in that run (the lines
    of the run that stored it, as ``run.logs(step)`` replays them), or stored there,
    under one line on stderr saying so and when; 1 if the entry is gone."""
    entry = _stored_entry(args, workflow, found)
    if entry is None:
        return 1
    run_id, done = found.run, _DONE[found.state]
    made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
    silent = entry.head_field("log_lines") == 0  # (no file: a silent step's entry has none)
    said = f"dagnb: step {args.step!r} {done} in run {run_id}"
    print(_entry_header(said, found.state == "cached", made, silent), file=sys.stderr,
          flush=True)
    if silent:
        return 0
    if not _print_records(_entry_records(entry, tail, args.stream), marked=False):
        _say_none_on(args)  # (one attempt: the stored run's, which the line above names)
    return 0


def _print_retried(args: argparse.Namespace, workflow: Workflow, found: StepInRun,
                   files: list[Path], tail: int | None) -> int:
    """Print the lines of a step that succeeded on a retry: its failed attempts' from
    the run's folder, then those of the attempt stored with its cache entry (the run's
    folder keeps only what was not stored); 1 if the entry is gone."""
    from itertools import chain

    from dagnb.runtime.logfile import read_records, tail_records

    entry = _stored_entry(args, workflow, found)
    if entry is None:  # (the failed attempts' lines are still there to show)
        _print_lines(files, tail, args.stream)
        return 1
    made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
    print(f"dagnb: step {args.step!r} succeeded in run {found.run} on a retry: the failed "
          "attempts' lines from the run's folder, then those of the one stored with its "
          f"cache entry at {made}", file=sys.stderr, flush=True)
    stored = _entry_records(entry, tail, args.stream)
    if tail is None:
        earlier = (r for r in read_records(files) if args.stream in (None, r.get("stream")))
        printed = _print_records(chain(earlier, stored), marked=True)
    else:
        last = list(stored)
        earlier_tail = (tail_records(files, tail - len(last), args.stream)
                        if len(last) < tail else [])
        printed = _print_records([*earlier_tail, *last], marked=None)
    if not printed:
        _say_none_on(args, found.run)
    return 0


def _stored_entry(args: argparse.Namespace, workflow: Workflow,
                  found: StepInRun) -> Entry | None:
    """The cache entry a step was served from or stored in, in that run; None (said in
    one line on stderr) if it is gone since, or was stored again under its key since
    (what is there now holds a later run's lines)."""
    from dagnb.cache import local_folder, store_for

    folder = local_folder(args.cache_dir)
    entry = store_for(folder).peek(args.step, found.entry)
    if entry is None:
        print(f"dagnb: step {args.step!r} {_DONE[found.state]} in run {found.run}, and its "
              f"cache entry is no longer in {str(folder)!r} (the cache was cleared or pruned "
              f"since): run the workflow again (dagnb run {args.workflow}) to see its lines",
              file=sys.stderr)
        return None
    # (a record older than runs noting which version they used: none to check, as before)
    if found.created is None or found.created == entry.created:
        return entry
    print(f"dagnb: {_replaced(args, workflow, found, entry)}", file=sys.stderr)
    return None


def _replaced(args: argparse.Namespace, workflow: Workflow, found: StepInRun,
              entry: Entry) -> str:
    """The line saying the lines of the run asked for are gone, its entry stored again
    since, and the command that shows the lines there now (of the run that stored them:
    the first recorded with that version of the entry)."""
    from dagnb.cache import local_folder
    from dagnb.runtime.history import entry_created

    made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
    records = _runs(local_folder(args.cache_dir), workflow)
    later = next((r["run"] for r in records if entry_created(r, args.step) == entry.created
                  and r.get("run") != found.run and isinstance(r.get("run"), str)), None)
    by, shows = ((f"by run {later}", f"{_logs_command(args, later)} shows those")
                 if later is not None else _stored_elsewhere(args, workflow, found, entry))
    return (f"step {args.step!r} {_DONE[found.state]} in run {found.run}, but its lines are "
            f"gone: its cache entry was stored again at {made} {by} (a "
            f"--refresh, an expired ttl, or a cleared cache since); {shows}")


def _stored_elsewhere(args: argparse.Namespace, workflow: Workflow, found: StepInRun,
                      entry: Entry) -> tuple[str, str]:
    """Who stored the entry again when no run of this file did, and what shows its
    lines: a run of another workflow file sharing the cache folder (its step of the
    same name and key), named with its command; else the newest run of this file, unless
    that is the run asked about (its command again would say this again)."""
    from dagnb.cache import local_folder
    from dagnb.runtime.history import entry_created, recorded_runs

    folder = local_folder(args.cache_dir)
    other = next((r for r in recorded_runs(folder)[0]
                  if entry_created(r, args.step) == entry.created
                  and isinstance(r.get("run"), str) and isinstance(r.get("source"), str)
                  and Path(r["source"]).suffix != ".ipynb"), None)
    if other is not None:
        file = _shown_path(Path(other["source"]))
        return (f"by run {other['run']} of {file}",
                f"{_logs_command(args, other['run'], file)} shows those")
    newest = _last_run(folder, workflow, args.step)
    if newest is None or newest.run == found.run:
        return ("by a run of another workflow, notebook or script sharing this cache "
                "folder", "its lines there now are that run's, not this one's")
    return ("by a later run", f"{_logs_command(args, None)} shows the newest run's")


def _shown_path(path: Path) -> str:
    """``path`` from the current folder where it is below it, else as it is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _entry_header(said: str, cached: bool, made: str, silent: bool) -> str:
    """The line over a cache entry's lines: whose run's they are, and when it stored them."""
    if cached:
        return (f"{said}; the run that stored its entry, at {made}, printed nothing" if silent
                else f"{said}: its lines from the run that stored the entry, at {made}")
    return (f"{said}, stored in the cache at {made}; it printed nothing" if silent
            else f"{said}: its lines, stored with its cache entry at {made}")


def _replay(args: argparse.Namespace) -> str:
    """The Python that runs the step again, a cache hit, and shows its lines."""
    where = "" if args.cache_dir is None else f", cache_directory={args.cache_dir!r}"
    return (f"dagnb.load({args.workflow!r}).run([{args.step!r}]{where})"
            f".logs({args.step!r})")


def _print_lines(files: list[Path], tail: int | None, stream: str | None) -> int:
    """Print the lines of ``files`` (the last ``tail``, of ``stream``), each attempt's
    under a line saying so when there were more; how many lines it printed."""
    from dagnb.runtime.logfile import read_records, tail_records

    if tail is not None:
        records: Iterable[dict[str, Any]] = tail_records(files, tail, stream)
        marked = None  # (a list: marked when its lines span attempts)
    else:  # (streamed: every attempt that printed has a file)
        records = (r for r in read_records(files) if stream in (None, r.get("stream")))
        marked = len(files) > 1
    return _print_records(records, marked)


def _say_none_on(args: argparse.Namespace, run_id: str | None = None) -> None:
    """Say that ``--stream`` found no line: the step printed on the other stream alone
    (the output would be empty, as if the step had printed nothing at all)."""
    if args.stream is not None:
        where = "" if run_id is None else f" in run {run_id}"
        print(f"dagnb: step {args.step!r} printed nothing on {args.stream}{where}",
              file=sys.stderr)


def _entry_records(entry: Entry, tail: int | None,
                   stream: str | None) -> Iterable[dict[str, Any]]:
    """The lines of a cache entry (its last ``tail``, of ``stream``): a packed one's from
    memory (no folder made for it), a folder's tail read back from the end of its file."""
    from dagnb.cache.entry import PackedEntry
    from dagnb.runtime.logfile import tail_records

    if tail is not None and not isinstance(entry, PackedEntry):
        return tail_records([entry.log_file], tail, stream)
    records = (r for r in entry.iter_logs() if stream in (None, r.get("stream")))
    return records if tail is None else collections.deque(records, maxlen=tail)


def _print_records(records: Iterable[dict[str, Any]], marked: bool | None) -> int:
    """Print log records, control characters as escapes (colour kept on a terminal,
    left out there under NO_COLOR: :func:`~dagnb.views.progress.colour_for`), under
    attempt lines when ``marked`` (None: when they span attempts); how many it printed."""
    from dagnb.views.live import as_terminal_left
    from dagnb.views.progress import attempt_marked, colour_for, rule_for, terminal_safe

    colour = colour_for(sys.stdout)
    pairs = ((r.get("attempt", 1), terminal_safe(as_terminal_left(str(r["line"])), colour))
             for r in records)
    printed = 0  # (an attempt's line comes only over a record's: 0 when none was)
    for line in attempt_marked(pairs, rule_for(sys.stdout), marked):
        sys.stdout.write(f"{line}\n")
        printed += 1
    return printed


def _tail(given: str | None) -> int | None:
    """``--tail``, checked: a whole number of lines >= 1 (None: every line)."""
    if given is None:
        return None
    return checks.checked(checks.count, given, "--tail", ConfigError, sep=" ", text=True,
                          least=1)
