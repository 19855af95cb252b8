"""The ``dagnb`` command: run, check and show YAML workflows outside notebooks.

Exit codes: 0 success, 1 a step failed, 2 bad input (one line on stderr, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import DagnbError
from .progress import ProgressPrinter
from .workflow import load

__all__ = ["main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Any]:
    """Register a subcommand handler."""

    def register(func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        _COMMANDS[name] = func
        return func

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagnb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a workflow and print its status table")
    run.add_argument("workflow", help="a workflow YAML file")
    run.add_argument(
        "--target",
        action="append",
        default=None,
        metavar="NAME",
        help="run this step and its upstream (repeatable)",
    )
    run.add_argument("--tag", action="append", default=None, help="run steps with this tag")
    run.add_argument(
        "--only-failed",
        action="store_true",
        help="run the steps that did not succeed last time (cache makes the rest free)",
    )
    run.add_argument("--max-concurrency", type=int, default=None, metavar="N")
    run.add_argument("--executor", choices=["auto", "local", "dagger"], default=None)
    run.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    run.add_argument("--refresh", action="store_true", help="run every step, overwrite the cache")
    run.add_argument("--timeout", default=None, help="limit for the whole run, e.g. 30m")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    run.add_argument("--cache-dir", default=None, help="cache folder (default .dagnb_cache)")
    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow")
    graph = sub.add_parser("graph", help="list the steps in order with their needs")
    graph.add_argument("workflow")
    for extend in _EXTENSIONS:
        extend(sub)
    return parser


_EXTENSIONS: list[Callable[[Any], None]] = []


@command("run")
def _run(args: argparse.Namespace) -> int:
    graph = load(args.workflow)
    from . import loop
    from .runner import _execute, prepare

    run, scheduler = prepare(
        graph,
        args.target,
        tags=args.tag,
        only_failed=False,
        max_concurrency=args.max_concurrency,
        executor=args.executor,
        cache=False if args.no_cache else None,
        refresh=args.refresh,
        timeout=args.timeout,
        fail_fast=args.fail_fast,
        cache_directory=args.cache_dir,
    )
    printer = ProgressPrinter(run, sys.stdout)
    unsubscribe = run.events.subscribe(printer.on_event)
    try:
        loop.run_sync(_execute(run, scheduler))
    except KeyboardInterrupt:
        printer.finish()
        print("dagnb: interrupted; running steps were stopped", file=sys.stderr)
        return 130
    finally:
        unsubscribe()
    printer.finish()
    print(printer.table())
    print(run.summary())
    return 0 if run.ok else 1


@command("validate")
def _validate(args: argparse.Namespace) -> int:
    graph = load(args.workflow)
    graph.validate(check_host=True)
    print(f"{args.workflow}: {len(graph)} steps, valid")
    return 0


@command("graph")
def _graph(args: argparse.Namespace) -> int:
    graph = load(args.workflow)
    graph.validate()
    for name in graph.order():
        needs = ", ".join(graph[name].needs)
        print(f"{name}" + (f"  <- {needs}" if needs else ""))
    return 0


from . import cli_extra  # noqa: E402, F401 - registers the templates and config commands


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagnb`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except DagnbError as exc:
        print(f"dagnb: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    # run the imported module, where the extra commands registered themselves
    from dagnb.cli import main as _main

    sys.exit(_main())
