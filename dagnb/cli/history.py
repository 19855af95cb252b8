"""``dagnb history [WORKFLOW]``: the recorded runs, oldest first, one row each.

Each run of a workflow file (and of a notebook, ``dagnb run NB`` or a kernel's) leaves a
record in the cache folder's ``.runs``: when it finished, how each step ended, the params
it was given. This lists them, the last ``--last`` (20 unless told), of every workflow or
of the one named, secrets in the params masked as ``dagnb run`` masks them: its run ids
are what ``dagnb logs`` names. (:mod:`dagnb.cli` registers this as its ``history``
subcommand.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagnb import checks
from dagnb.errors import ConfigError, DagnbError

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
    print(_table(shown, _params_mask(graph, shown)))
    if len(shown) < total:
        print(f"(the last {len(shown)} of {total} runs; --last all shows every one)")
    return 0


def _params_mask(graph: Any | None, records: list[dict[str, Any]]) -> Callable[[str], str]:
    """What masks the params shown, as ``dagnb run`` masks those it prints: the values,
    as set now, of the secrets the workflow's steps declare (with no workflow named,
    those of each run's file, as it reads now), and of the registry's credentials."""
    from dagnb import config
    from dagnb.model.contract import known_secret_values
    from dagnb.model.masking import MIN_LINE, Masker

    graphs = [graph] if graph is not None else _workflows_of(records)
    steps = [step for one in graphs for step in one]
    secrets = [*known_secret_values(steps), *config.settings().credential_secrets().values()]
    return Masker(secrets, words_below=MIN_LINE)


def _workflows_of(records: list[dict[str, Any]]) -> list[Any]:
    """The workflow files of the runs given params, loaded (one that no longer loads
    declares no secret: left out)."""
    from dagnb.workflows.loader import load

    graphs = []
    for source in sorted({record["source"] for record in records
                          if record.get("params") and isinstance(record.get("source"), str)}):
        with contextlib.suppress(DagnbError, OSError, ValueError):  # (a notebook's, gone...)
            graphs.append(load(source))
    return graphs


def _table(records: list[dict[str, Any]], mask: Callable[[str], str]) -> str:
    """The runs' rows as text, as pandas would print them (without its 0.5 s import)."""
    from dagnb.cli.cache import text_table

    rows = [_row(record, mask) for record in records]
    return text_table({name: [row[name] for row in rows] for name in rows[0]})


def _row(record: dict[str, Any], mask: Callable[[str], str]) -> dict[str, Any]:
    """One run: its id, when it finished, of what, its steps by how they ended, params
    (secrets masked)."""
    states = record.get("states") if isinstance(record.get("states"), dict) else {}
    source = record.get("source")
    row = {
        "run": str(record.get("run", "?")),
        "finished": _finished(record),
        "workflow": Path(source).name if isinstance(source, str) else str(record.get("graph", "")),
        "steps": len(states),
    }
    ended = list(states.values())
    row.update({ending: ended.count(ending) for ending in _ENDINGS})
    params = record.get("params")
    row["params"] = mask(json.dumps(params, separators=(",", ":"))) if params else ""
    return row


def _finished(record: dict[str, Any]) -> str:
    """When the run ended, as local time; "" when its record says no time, or one past
    any calendar (a hand edit: 1e300)."""
    from dagnb.runtime.history import finished_at

    seconds = finished_at(record)
    if seconds is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, ValueError, OSError):
        return ""


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
