"""``dagnb plan`` and ``dagnb explain``: what a run of a workflow file would do now, and
why a step would run, without running anything (the notebook's ``%dagger plan`` and
``%dagger cache explain NAME``, for workflow files).

::

    dagnb plan WORKFLOW [--target NAME] [--tag TAG] [-p NAME=VALUE] [--executor E]
               [--cache-mode MODE]
    dagnb explain WORKFLOW STEP [-p NAME=VALUE] [--executor E] [--cache-mode MODE]

Both read the cache and write nothing (no hit counted, no entry made); both exit 0
whatever they find (``dagnb run --cache-mode fail-on-miss`` exits 2 when steps would run),
but ``plan`` exits 2, saying why in its last line, where the run would refuse before
running anything (by the run's own checks, in its words): a param or env value holds a
secret's value, a mount's path does not exist, its cache mode (``--cache-mode``, else
the setting) is ``fail-on-miss`` and a step would or may run, or a step that would run
needs a secret that is not set, or a Dagger engine that cannot be reached; and where a
step that would run fails as it starts (its workdir no folder here, as ``dagnb
validate`` says).
A step keyed on the result of one that runs *may run* (counted apart: early cut-off
serves it if that result comes out the same); a ``cache: session`` step runs in each
``dagnb run``, a process of its own.
"""

from __future__ import annotations

import argparse
import shlex
from collections import Counter
from typing import Any

from dagnb import checks
from dagnb.errors import ConfigError
from dagnb.views.progress import terminal_safe, text_table

__all__ = ["add_parsers", "explain", "plan", "plan_table"]

_EXECUTOR_HELP = ("as a run with this executor would key the steps (default: the executor "
                  "setting): a step run in a container has another key than on the host")


def add_parsers(sub: Any, workflow_help: str) -> None:
    """Add ``plan`` and ``explain`` to the ``dagnb`` parser's subparsers."""
    plan_parser = sub.add_parser(
        "plan", help="which steps a run would take from the cache and why the others would run")
    plan_parser.add_argument("workflow", help=workflow_help)
    plan_parser.add_argument("step_words", nargs="*", default=[], metavar="STEP",
                             help="plan these steps and their upstream (as --target STEP)")
    plan_parser.add_argument("--target", action="append", default=None, metavar="NAME",
                             help="plan this step and its upstream (repeatable)")
    plan_parser.add_argument("--tag", action="append", default=None,
                             help="plan the steps with this tag and their upstream (repeatable)")
    explain_parser = sub.add_parser("explain", help="why a step would run (what changed since "
                                                    "its cache entry), or that it is cached")
    explain_parser.add_argument("workflow", help=workflow_help)
    explain_parser.add_argument("step", nargs="?", default=None,
                                help="the step to explain (none: the file's steps listed)")
    for parser in (plan_parser, explain_parser):
        parser.add_argument("--param", "-p", action="append", default=[],
                            metavar="NAME=VALUE", help="as dagnb run --param sets it")
        parser.add_argument("--executor", choices=["auto", "local", "dagger"], default=None,
                            help=_EXECUTOR_HELP)
        parser.add_argument("--cache-dir", default=None,
                            help="cache folder (default: the cache_directory setting)")
        parser.add_argument("--cache-mode", default=None, metavar="MODE",
                            help="as a run with this cache mode would go (default: the "
                                 "cache_mode setting): with off, every step runs; plan "
                                 "exits 2 where fail-on-miss would refuse the run")


def plan(graph: Any, args: argparse.Namespace) -> int:
    """Print the plan of ``graph`` (its ``--param`` values set) as a table and a line."""
    from dagnb.runtime.plan import plan_rows

    targets = graph.select(args.target, tags=args.tag) if args.target or args.tag else None
    mode = _cache_mode(args)
    rows = plan_rows(graph, targets, cache_directory=args.cache_dir, executor=args.executor,
                     cache_mode=mode)
    print(plan_table(rows, args.workflow))
    print(_summary(rows))
    refusal = (_start_refusal(graph, rows, args.cache_dir) or _missed(rows, mode)
               or _run_refusal(graph, rows, args.executor))
    if refusal is not None:
        print(f"dagnb run would refuse before running anything: {refusal}")
        return 2  # (as the run exits)
    failing = _failing_at_once(graph, rows, args.workflow)
    if failing is None:
        return 0
    print(f"dagnb run would fail a step as it starts: {failing}")
    return 2  # (as validate exits)


def _start_refusal(graph: Any, rows: list[dict[str, Any]],
                   cache_directory: str | None) -> str | None:
    """What the run refuses of its steps before it looks at the cache (a mount's path
    that does not exist, a param holding a secret's value, ...), in its words, by its own
    check (:func:`~dagnb.runtime.prepare.refuse_at_start`); None when it has nothing."""
    from dagnb.errors import DagnbError
    from dagnb.runtime.prepare import refuse_at_start
    from dagnb.runtime.selection import selection_of

    try:
        refuse_at_start(graph, selection_of(graph, [row["step"] for row in rows]),
                        cache_directory)
    except DagnbError as refused:
        return str(refused)
    return None


def _failing_at_once(graph: Any, rows: list[dict[str, Any]], workflow: str) -> str | None:
    """``dagnb validate``'s refusal of a step the run starts but that fails at once (its
    workdir no folder here), for the steps that would or may run; None otherwise."""
    from dagnb.errors import DagnbError
    from dagnb.runtime.plan import CACHED
    from dagnb.workflows.loader import refuse_missing_workdirs

    try:
        refuse_missing_workdirs(graph, workflow,
                                [row["step"] for row in rows if row["state"] != CACHED])
    except DagnbError as refused:
        return str(refused)
    return None


def _missed(rows: list[dict[str, Any]], mode: str | None) -> str | None:
    """The run's refusal, in its words, when its cache mode (``mode``, else the setting)
    is ``fail-on-miss`` and a step would or may run (the run lists each with its reason:
    the table's rows); None otherwise. The run checks this first, as here."""
    from dagnb.config import settings
    from dagnb.runtime.plan import MAY_RUN, WILL_RUN

    if (mode or settings().cache_mode) != "fail-on-miss":
        return None
    counts = Counter(row["state"] for row in rows)
    will, may = counts[WILL_RUN], counts[MAY_RUN]
    if not will + may:
        return None
    said = f"{will} step{'' if will == 1 else 's'} would run"
    if may:
        said += f", {may} may run"
    return (f"cache_mode is 'fail-on-miss' and {said}; fill the cache first (run with "
            "cache_mode 'read-write', or pull it), or run with another cache_mode")


def _run_refusal(graph: Any, rows: list[dict[str, Any]], executor: str | None) -> str | None:
    """What the run checks before its first step (a secret not set, an engine not
    reached) for the steps the plan says would or may run, in the run's own words; None
    when it would start. A cached step needs neither, as in the run; a step binding
    services is refused off Dagger, cached or not, as in the run."""
    from dagnb.config import settings
    from dagnb.errors import DagnbError
    from dagnb.model.contract import resolve_secrets
    from dagnb.runtime.plan import CACHED
    from dagnb.runtime.prepare import refuse_services_off_dagger, require_engine

    default = executor or settings().executor
    running = graph.steps_of([row["step"] for row in rows if row["state"] != CACHED])
    try:
        resolve_secrets(running.values())
        require_engine(graph, running, default, None, None)
        refuse_services_off_dagger(graph.steps_of([row["step"] for row in rows]), default)
    except DagnbError as refused:
        return str(refused)
    return None


def _summary(rows: list[dict[str, Any]]) -> str:
    """``1 of 4 steps cached, 2 would run, 1 may run (...)``: a step that may run is
    counted apart, as its key waits for what a step that runs makes."""
    from dagnb.runtime.plan import CACHED, MAY_RUN, WILL_RUN

    counts = Counter(row["state"] for row in rows)
    will, may = counts[WILL_RUN], counts[MAY_RUN]
    line = (f"{counts[CACHED]} of {len(rows)} steps cached, "
            + (f"{will} would run" if will else "none would run"))
    if may:
        line += f", {may} may run (if an upstream's result changes)"
    return line


def plan_table(rows: list[dict[str, Any]], workflow: str | None = None) -> str:
    """The plan's rows as ``dagnb run``'s status table lays rows out (a reason's control
    characters, a line break in a param's value, shown as escapes; a code or command
    diff left to ``dagnb explain``, which ``workflow`` names)."""
    shown = [{**row, "key": row["key"] or "-",
              "reason": terminal_safe(_without_diff(row, workflow))} for row in rows]
    return text_table(shown, ("step", "cached", "key", "reason"))


def _without_diff(row: dict[str, Any], workflow: str | None) -> str:
    """A row's reason with a code or command diff cut off, the command that prints it
    named instead."""
    from dagnb.cache.explain import without_diff

    shows = (f"dagnb explain {shlex.quote(workflow)} {row['step']}" if workflow
             else "dagnb explain")
    return without_diff(str(row["reason"]), shows)


def explain(graph: Any, args: argparse.Namespace) -> int:
    """Print why ``args.step`` would run, a sentence a line."""
    from dagnb.runtime.plan import explain as explained

    if args.step is None:
        raise ConfigError(_name_a_step(graph, args.workflow))
    print("\n".join(explained(graph, args.step, cache_directory=args.cache_dir,
                              executor=args.executor, cache_mode=_cache_mode(args))))
    return 0


def _name_a_step(graph: Any, workflow: str) -> str:
    """The line asking for the step to explain, naming the file's steps."""
    file = shlex.quote(workflow)
    return (f"dagnb explain {file} STEP: name the step to explain, one of "
            f"{checks.listed(list(graph.names))}; dagnb plan {file} says which would run")


def _cache_mode(args: argparse.Namespace) -> str | None:
    """``--cache-mode``, checked (None: the setting's)."""
    from dagnb.config import check_cache_mode

    return None if args.cache_mode is None else check_cache_mode(args.cache_mode,
                                                                  "--cache-mode")
