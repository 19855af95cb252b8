"""``dagnb logs WORKFLOW STEP``: the lines a step printed in the last run of a workflow.

``dagnb run`` points here under the last lines of a failed step. The lines come from the
step's log files in the run's folder (``<cache>/.runs/<run>/<step>/logs-<attempt>.jsonl``,
every attempt's, masked as they were logged, each attempt's under ``── attempt N ──``
when there were more), in the newest recorded run of the workflow file that had the
step; control characters show as escapes, as under ``dagnb run``'s failures. The
attempt that succeeded and was stored left its file with its cache entry instead (the
run's folder keeps the lines of steps that failed, were cancelled, or were not stored):
said in one line on stderr, with how to read them. (:mod:`dagnb.cli` registers this as
its ``logs`` subcommand.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dagnb import checks
from dagnb.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``logs`` to the ``dagnb`` parser's subparsers."""
    logs = sub.add_parser("logs", help="the lines a step printed in the last run of a workflow")
    logs.add_argument("workflow", help="the workflow file (as given to dagnb run)")
    logs.add_argument("step", help="the step whose lines to show")
    logs.add_argument("--tail", default=None, metavar="N", help="only the last N lines")
    logs.add_argument("--stream", choices=["stdout", "stderr"], default=None,
                      help="only this stream's lines (default: both, as they were logged)")
    logs.add_argument("--cache-dir", default=None, help="cache folder (default: the setting)")


def run(args: argparse.Namespace, graph: Any) -> int:
    """``dagnb logs``, for the workflow ``graph`` loaded from ``args.workflow``; 1 when
    the run's folder holds none of the lines of a step that succeeded there."""
    from dagnb.runtime.history import DONE_STATES

    tail = _tail(args.tail)
    graph[args.step]  # (an unknown step: refused, with the closest name)
    run_id, state, files = _last_log(args, graph)
    _print_lines(files, tail, args.stream)
    if state in DONE_STATES and not files:  # (files left: it was not stored, --no-cache)
        print(f"dagnb: step {args.step!r} {_DONE[state]} in run {run_id}: the lines of an "
              "attempt stored in the cache are kept with its entry, not in the run's folder; "
              f"in Python, {_replay(args)} replays them from the cache (nothing, for a step "
              "that printed nothing or was not stored)", file=sys.stderr)
        return 1
    if not files:
        print(f"dagnb: step {args.step!r} ({state}) printed nothing in run {run_id}",
              file=sys.stderr)
    return 0


_DONE = {"succeeded": "succeeded", "cached": "came from the cache"}


def _last_log(args: argparse.Namespace, graph: Any) -> tuple[str, str, list[Path]]:
    """The newest run of the workflow that had the step: its id, the step's state there,
    and the log files of its attempts in the run's folder."""
    from dagnb.cache import local_folder
    from dagnb.runtime.history import DONE_STATES, last_run_of
    from dagnb.runtime.logfile import attempt_files

    folder = local_folder(args.cache_dir)
    found = last_run_of(folder, graph.name, graph.workflow_file, args.step)
    if found is None:
        raise ConfigError(f"no run of {args.workflow!r} recorded in {str(folder)!r} had step "
                          f"{args.step!r}; run it first (dagnb run {args.workflow})")
    run_id, state = found
    run_folder = folder / ".runs" / run_id
    if not run_folder.is_dir() and state not in DONE_STATES:  # (stored: lines in the cache)
        raise ConfigError(f"run {run_id}, the last that had step {args.step!r}, has no "
                          f"folder in {str(run_folder.parent)!r}: it was pruned (the newest "
                          "runs' folders are kept), or its steps wrote no file")
    return run_id, state, attempt_files(run_folder / args.step)


def _replay(args: argparse.Namespace) -> str:
    """The Python that runs the step again, a cache hit, and shows its lines."""
    where = "" if args.cache_dir is None else f", cache_directory={args.cache_dir!r}"
    return (f"dagnb.load({args.workflow!r}).run([{args.step!r}]{where})"
            f".logs({args.step!r})")


def _print_lines(files: list[Path], tail: int | None, stream: str | None) -> None:
    """Print the lines of ``files`` (the last ``tail``, of ``stream``), each attempt's
    under a line saying so when there were more, control characters as escapes."""
    from dagnb.runtime.logfile import read_records, tail_records
    from dagnb.views.live import as_terminal_left
    from dagnb.views.progress import attempt_marked, rule_for, terminal_safe

    if tail is not None:
        records: Iterable[dict[str, Any]] = tail_records(files, tail, stream)
        marked = None  # (a list: marked when its lines span attempts)
    else:  # (streamed: every attempt that printed has a file)
        records = (r for r in read_records(files) if stream in (None, r.get("stream")))
        marked = len(files) > 1
    colour = sys.stdout.isatty()
    pairs = ((r.get("attempt", 1), terminal_safe(as_terminal_left(str(r["line"])), colour))
             for r in records)
    for line in attempt_marked(pairs, rule_for(sys.stdout), marked):
        sys.stdout.write(f"{line}\n")


def _tail(given: str | None) -> int | None:
    """``--tail``, checked: a whole number of lines >= 1 (None: every line)."""
    if given is None:
        return None
    return checks.checked(checks.count, given, "--tail", ConfigError, sep=" ", text=True,
                          least=1)
