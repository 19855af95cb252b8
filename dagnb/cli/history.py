"""``dagnb history [WORKFLOW]``: the recorded runs, oldest first, one row each.

Each run of a workflow file (and of a notebook, ``dagnb run NB`` or a kernel's) leaves a
record in the cache folder's ``.runs``: when it finished, how each step ended, the params
it was given. This lists them, the last ``--last`` (20 unless told), of every workflow or
of the one named: its run ids are what ``dagnb logs`` names. (:mod:`dagnb.cli` registers
this as its ``history`` subcommand.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dagnb import checks
from dagnb.errors import ConfigError

__all__ = ["add_parser", "run"]

_ENDINGS = ("succeeded", "cached", "failed", "skipped", "cancelled")
_LAST = 20


def add_parser(sub: Any) -> None:
    """Add ``history`` to the ``dagnb`` parser's subparsers."""
    history = sub.add_parser("history", help="the recorded runs, oldest first: when, how "
                             "their steps ended, their params")
    history.add_argument("workflow", nargs="?", default=None,
                         help="only the runs of this workflow file (default: every run)")
    history.add_argument("--last", default=None, metavar="N",
                         help=f"only the last N runs (default {_LAST}; 'all' for every one)")
    history.add_argument("--cache-dir", default=None, help="cache folder (default: the setting)")


def run(args: argparse.Namespace, graph: Any | None) -> int:
    """``dagnb history``, of the workflow ``graph`` loaded from ``args.workflow`` (None:
    every run recorded)."""
    from dagnb.cache import local_folder
    from dagnb.cli.cache import missing_folder
    from dagnb.runtime.history import recorded_runs

    last = _last(args.last)
    folder = local_folder(args.cache_dir)
    if args.cache_dir is not None and not checks.is_url(args.cache_dir) and not folder.is_dir():
        raise missing_folder(args.cache_dir, folder)  # (a typo: not "no run yet")
    shown, total = (recorded_runs(folder, last=last) if graph is None
                    else recorded_runs(folder, graph.name, graph.workflow_file, last=last))
    if not shown:
        of = "" if graph is None else f" of {args.workflow}"
        print(f"no run{of} recorded in {str(folder)!r} (dagnb run records each; "
              "--cache-dir names another cache folder)")
        return 0
    print(_table(shown))
    if len(shown) < total:
        print(f"(the last {len(shown)} of {total} runs; --last all shows every one)")
    return 0


def _table(records: list[dict[str, Any]]) -> str:
    """The runs' rows as text, as pandas would print them (without its 0.5 s import)."""
    from dagnb.cli.cache import text_table

    rows = [_row(record) for record in records]
    return text_table({name: [row[name] for row in rows] for name in rows[0]})


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """One run: its id, when it finished, of what, its steps by how they ended, params."""
    states = record.get("states") if isinstance(record.get("states"), dict) else {}
    finished = record.get("finished")
    source = record.get("source")
    row = {
        "run": str(record.get("run", "?")),
        "finished": (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished))
                     if isinstance(finished, (int, float)) else ""),
        "workflow": Path(source).name if isinstance(source, str) else str(record.get("graph", "")),
        "steps": len(states),
    }
    ended = list(states.values())
    row.update({ending: ended.count(ending) for ending in _ENDINGS})
    params = record.get("params")
    row["params"] = json.dumps(params, separators=(",", ":")) if params else ""
    return row


def _last(given: str | None) -> int | None:
    """``--last``, checked: a whole number >= 1, or ``all`` (None)."""
    if given is None:
        return _LAST
    if given.strip().lower() == "all":
        return None
    try:
        return checks.checked(checks.count, given, "--last", ConfigError, sep=" ", text=True,
                              least=1)
    except ConfigError as exc:  # (the count's words alone would hide that all is taken)
        raise ConfigError(f"{exc}, or all (every run)") from None
