"""The ``dagnb`` command: run, check and show workflows (YAML files, or notebooks run headless).

::

    dagnb run|validate|graph WORKFLOW
    dagnb plan WORKFLOW | explain WORKFLOW STEP    (see dagnb.cli.plan)
    dagnb logs WORKFLOW STEP [--tail N] [--stream stdout|stderr]    (see dagnb.cli.logs)
    dagnb history [WORKFLOW] [--last N] [--run RUN]    (see dagnb.cli.history)
    dagnb templates list|show|new ...
    dagnb config show|path
    dagnb images list|refresh [IMAGE ...]
    dagnb cache verify|list|stats|clear|prune|push|pull    (see dagnb.cli.cache)
    dagnb --version

A run that has failed steps prints, before its status table, each one's failure with
the last lines of its log and where the whole log is (``dagnb logs``).

Exit codes: 0 success, 1 a step failed, 2 bad input (one line on stderr, no
traceback) or a ``--cache-mode fail-on-miss`` run that would execute steps (the line,
then one per step; ``plan`` exits 2 too, its last line the run's), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import json
import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from dagnb import checks, config
from dagnb.cli import cache as cache_commands
from dagnb.cli import history as history_command
from dagnb.cli import logs as logs_command
from dagnb.cli import plan as plan_command
from dagnb.errors import ConfigError, DagnbError, StepNotFoundError
from dagnb.views.progress import (
    ProgressPrinter,
    colour_for,
    failure_tails,
    rule_for,
    status_table,
)
from dagnb.workflows import templates
from dagnb.workflows.loader import dump, load

__all__ = ["main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Any]:
    """Register a subcommand handler."""

    def register(func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        _COMMANDS[name] = func
        return func

    return register


_WORKFLOW_HELP = "a workflow YAML file, or a notebook (.ipynb, percent .py)"


def build_parser() -> argparse.ArgumentParser:
    # (the docstring's first line, without its reST quotes: --help prints it as it is)
    description = __doc__.splitlines()[0].replace("``", "")
    parser = _Parser(prog="dagnb", description=description)
    parser.add_argument("--version", action=_Version, help="print dagnb's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a workflow and print its status table")
    run.add_argument("workflow", help=_WORKFLOW_HELP)
    run.add_argument(STEP_WORDS, nargs="*", default=[], metavar="STEP",  # (a default:
                     # argparse then does not call it required with the file)
                     help="run these steps and their upstream (as --target STEP)")
    run.add_argument(
        "--target",
        action="append",
        default=None,
        metavar="NAME",
        help="run this step and its upstream (repeatable)",
    )
    run.add_argument("--tag", action="append", default=None,
                     help="run steps with this tag and their upstream (repeatable)")
    run.add_argument(
        "--only-failed",
        action="store_true",
        help="run the steps that did not succeed last time (cache makes the rest free), "
             "with the --param values that run was given (a --param given now wins)",
    )
    run.add_argument("--max-concurrency", type=_at_least_one, default=None, metavar="N",
                     help="steps at once (default: the max_concurrent_executions setting)")
    run.add_argument("--executor", choices=["auto", "local", "dagger"], default=None,
                     help="where steps run (default: the executor setting); a step's own "
                          "executor wins")
    run.add_argument("--cache-mode", default=None, metavar="MODE",
                     help="read-write (default), read-only (use hits, write nothing), "
                          "fail-on-miss (exit 2 listing the steps that would run) or off")
    run.add_argument("--no-cache", action="store_true", help="same as --cache-mode off")
    run.add_argument("--refresh", action="store_true",
                     help="run every step, overwrite the cache (it takes no step name: "
                          "--refresh-step NAME)")
    run.add_argument("--refresh-step", action="append", default=None, metavar="NAME",
                     help="run this step again, overwrite its cache entry (repeatable)")
    run.add_argument("--timeout", default=None, help="limit for the whole run, e.g. 30m")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    run.add_argument("--cache-dir", default=None,
                     help="cache folder (default: the cache_directory setting, .dagnb_cache)")
    run.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                     help="workflows: set the param NAME of every step that has it (the value "
                          "read as the file reads it; as typed for a param the file gives as "
                          "text, and the items of a list it gives as text items, unless "
                          "quoted); notebooks: a name the cell tagged 'parameters' assigns "
                          "(papermill's convention; JSON when it parses, else text; as typed "
                          "where that cell assigns text)")
    run.add_argument("--output", "-o", default=None, metavar="FILE.ipynb",
                     help="notebooks: write the executed notebook here")
    _add_switches(run)
    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", help=_WORKFLOW_HELP)
    validate.add_argument("--explain", action="store_true",
                          help="print the aliases read and the workflow in dagnb's spelling")
    validate.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                          help="check the workflow with this param value, as run sets it")
    graph = sub.add_parser("graph", help="list the steps in order with their needs")
    graph.add_argument("workflow", help=_WORKFLOW_HELP)
    plan_command.add_parsers(sub, "a workflow YAML file")
    add_subcommands(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """An option a command does not know is refused with that command's usage (not
    dagnb's) and the option meant when one is close: ``run --tags`` is ``--tag``. (Its
    subcommands' parsers are of this class too: add_subparsers makes them so.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (an option cut short is refused, not taken for the one it begins: `run wf.yml
        # --only clean` ran --only-failed, with clean its target, saying nothing)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        extras = self._optional_words_placed(parsed, args, extras)
        extras = self._steps_as_targets(parsed, args, extras)
        if extras:  # (left by this command's parser: refused here, with its usage)
            meant = self._named_after_flag(args, extras) or self._meant(extras)
            self.error(f"unrecognized arguments: {' '.join(extras)}{meant}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        """A command or group named without its action (``dagnb``, ``dagnb cache``):
        the actions it takes listed, as its ``--help`` lists them, above the error,
        rather than a usage line that names none of them."""
        if message.endswith(_NO_ACTION):
            self.print_help(sys.stderr)
            self.exit(2, f"{self.prog}: error: {message}\n")
        if message.startswith(_NO_WORKFLOW):
            message += _workflows_here()
        super().error(message + self._command_meant(message))

    def _command_meant(self, message: str) -> str:
        """``; did you mean 'history'?`` for a command or action misspelt (``histroy``)
        or named as other tools name it (``cache ls``, ``cache rm``), and for an option's
        value not among its choices (``--stream out``)."""
        given = _INVALID_CHOICE.search(message)
        if given is None:
            return ""
        choices = [str(name) for action in self._actions
                   if action.choices and given.group("option") in (
                       *action.option_strings, action.metavar, action.dest)
                   for name in action.choices]
        if not choices:
            return ""
        word = given.group(2)
        if word == "dask" and given.group("option") == "--executor":  # (a step's own)
            return ("; dask runs the Python steps that ask for it: write executor: dask on "
                    "a python: step of the workflow file (--executor dask on a %%dagger "
                    "--python cell)")
        if word in _SETTING_WRITES and "path" in choices:  # (dagnb config set KEY VALUE)
            return ("; write a setting as a KEY: VALUE line of dagnb.yaml in the project's "
                    "folder (dagnb config path names the file in force), or set DAGNB_<KEY>; "
                    "dagnb config show KEY shows it")
        close = _OTHER_NAMES.get(word) if _OTHER_NAMES.get(word) in choices else None
        close = close or checks.closest(word, choices)
        if not close and word in _COMMANDS and self.prog != "dagnb":  # (dagnb cache explain)
            return f"; {word} is a command of its own: dagnb {word} (dagnb {word} -h says how)"
        return f"; did you mean {close!r}?" if close else ""

    def _optional_words_placed(self, parsed: argparse.Namespace, args: Any,
                               extras: list[str]) -> list[str]:
        """An optional word given after an option (``logs wf.yml --tail 5 b``,
        ``templates new ID -p rows=5 FILE``), which argparse leaves over once the words
        before the option are placed, fills its place, as it does written before it.
        (Not a word right after an unknown option: that one's value, refused with it.)"""
        values = {word for flag, word in itertools.pairwise(args or ())
                  if flag in extras and flag.startswith("-")}
        for action in self._actions:
            if action.option_strings or action.nargs != "?":
                continue
            word = next((w for w in extras if not w.startswith("-") and w not in values),
                        None)
            if word is None:
                break
            if getattr(parsed, action.dest, action.default) == action.default:
                setattr(parsed, action.dest, word)
                extras = [*extras[:extras.index(word)], *extras[extras.index(word) + 1:]]
        return extras

    def _steps_as_targets(self, parsed: argparse.Namespace, args: Any,
                          extras: list[str]) -> list[str]:
        """``run wf.yml a b`` runs a and b as ``--target a --target b`` does; so do step
        names after an option (argparse leaves those over: ``wf.yml --no-cache a``), but
        for one right after ``--refresh``, which takes none, or after an unknown option,
        as its value (both refused, naming the fix)."""
        words = getattr(parsed, STEP_WORDS, None)
        if words is None:
            return extras
        delattr(parsed, STEP_WORDS)
        values = {word for flag, word in itertools.pairwise(args or ())
                  if flag == "--refresh" or (flag in extras and flag.startswith("-"))}
        later = [w for w in extras if not w.startswith("-") and w not in values]
        if words or later:
            parsed.target = [*(parsed.target or ()), *words, *later]
        parsed.split_values = self._split_values(list(args or ()), later)
        return [w for w in extras if w not in later]

    def _split_values(self, args: list[str], later: list[str]) -> dict[str, str]:
        """Of the ``later`` words, those right after an option's value, each with how
        that value is written quoted: ``--timeout 10 minutes`` is a value with a space
        (``--timeout '10 minutes'``), more likely than a step named ``minutes``."""
        split = {word: checks.value_split_at(self, args, at)
                 for at, word in enumerate(args) if word in later}
        return {word: quoted for word, quoted in split.items() if quoted is not None}

    def _named_after_flag(self, args: Any, extras: Sequence[str]) -> str:
        """`` (--refresh takes no step name: --refresh-step load)`` for ``run wf.yml
        --refresh load``, the words a warning of older versions said to add."""
        words = list(args or ())
        named = [word for flag, word in itertools.pairwise(words)
                 if flag == "--refresh" and word in extras]
        if not named or not any("--refresh-step" in action.option_strings
                                for action in self._actions):
            return ""
        steps = " ".join(f"--refresh-step {name}" for name in named)
        return f" (--refresh takes no step name: {steps})"

    def _meant(self, extras: Sequence[str]) -> str:
        """``; did you mean --tag?`` for the first unknown option close to one of this
        command's options (its value, ``--tags=x``, left out); not ``--help``, which an
        option of another command resembles (``cache stats --step``: "--help?")."""
        known = [option for action in self._actions for option in action.option_strings
                 if option.startswith("--") and option != "--help"]
        for extra in extras:
            option = extra.partition("=")[0]
            needs, otherwise = _SPELLED_OTHERWISE.get(option, ("", None))
            if otherwise is not None and needs in known and not otherwise.startswith("--"):
                return f" ({otherwise})"
            close = (otherwise if needs in known else None) or (
                checks.closest(option, known) if option.startswith("--") else None)
            if close is not None:
                return f" (did you mean {close}?)"
        return ""


# the attribute of run's and plan's step names given as words (taken as --target)
STEP_WORDS = "step_words"
# how argparse ends its error for a command or group given no action: its metavars
_NO_ACTION = ("required: COMMAND", "required: ACTION")
# how argparse refuses a command given no workflow file
_NO_WORKFLOW = "the following arguments are required: workflow"


def _workflows_here() -> str:
    """``; name one: workflows/etl.yml, ...``: the workflow files and notebooks in the
    working folder and the ``workflow_directory``, for a command given none."""
    from dagnb.workflows.loader import workflow_files

    found = workflow_files([Path("."), Path(config.settings().workflow_directory)])
    if not found:
        return ("; name a workflow file (none here: dagnb templates new ID FILE writes one "
                "from a template)")
    return f"; name one: {checks.listed(found, most=6)}"


# argparse's refusal of a command or action it does not know, the word given (a repr)
_INVALID_CHOICE = re.compile(r"argument (?P<option>[^:]*): invalid choice: '([^']*)'")
# what other tools call a command or action dagnb names otherwise
_OTHER_NAMES = {"ls": "list", "rm": "clear", "delete": "clear", "remove": "clear",
                "purge": "clear", "check": "validate", "log": "logs", "show": "list",
                "info": "stats", "du": "stats", "upload": "push", "download": "pull",
                "evict": "prune", "status": "history", "runs": "history", "execute": "run",
                "get": "show", "view": "show", "entries": "list"}
# what config is asked to write, which a file or a variable does
_SETTING_WRITES = frozenset({"set", "unset", "edit", "write", "add"})
# run's options that plan and explain spell otherwise
# an option as other tools (or users) spell it: the option of this command it needs, and
# what to say instead
_SPELLED_OTHERWISE = {
    "--no-cache": ("--cache-mode", "--cache-mode off"),
    "--only": ("--target", "to run some steps, name them after the file, or give --target "
                           "STEP; --only-failed runs those that did not succeed last time"),
}


def _say_cache_beside_the_workflow(workflow: Path, given: str | None) -> None:
    """One line when the run uses the working folder's cache (the default setting)
    though the workflow's folder holds a cache of its own: ``dagnb run w1/wf.yml`` from
    above ran every step again, its history apart, saying nothing of either folder. Said
    as well by the commands that read a workflow's cache (plan, explain, logs, history),
    which found no entry, no run, without a word of the other folder."""
    from dagnb.cache import local_folder

    if given is not None or config.origins().get("cache_directory") != config.DEFAULT:
        return
    used, beside = local_folder(None), workflow.absolute().parent / ".dagnb_cache"
    if beside.resolve() == used.resolve() or not (beside / ".runs").is_dir():
        return
    shown = os.path.relpath(beside)
    print(f"dagnb: the cache folder is {os.path.relpath(used)}, this folder's; {shown}, "
          f"beside the workflow, is another one (--cache-dir {shown} uses it)",
          file=sys.stderr)


@command("run")
def _run(args: argparse.Namespace) -> int:
    mode = _cache_mode(args)
    if _is_notebook(args.workflow):
        _refuse_workflow_options(args)
        return _run_notebook(args, mode)
    _refuse_notebook_options(args)
    graph = load(args.workflow)
    _refuse_split_values(graph, args)
    given = _set_params(graph, args)
    _warn_unreached(given, graph, args)
    _unfailing_stdout()
    _say_cache_beside_the_workflow(Path(args.workflow), args.cache_dir)
    printer = ProgressPrinter(sys.stdout)
    from dagnb.runtime.prepare import run_graph_sync  # (a run imports it: no cost)
    from dagnb.runtime.unmounted import WORKFLOW_WORDS

    try:
        with printer.stderr_above_bar():
            # (graph.run's, but a warning says this command's --refresh-step load and
            # the YAML's mounts: {...})
            run = run_graph_sync(
                graph, args.target, WORKFLOW_WORDS,
                tags=args.tag,
                only_failed=args.only_failed,
                max_concurrency=args.max_concurrency,
                executor=args.executor,
                cache_mode=mode,
                refresh=_refreshed(args, graph),
                timeout=args.timeout,
                fail_fast=args.fail_fast,
                cache_directory=args.cache_dir,
                on_event=printer.on_event,
                **_switches(args),
            )
    except KeyboardInterrupt as stop:
        _no_more_interrupts(args)
        _report_interrupted(graph.last_run, printer)
        return 128 + getattr(stop, "signal", signal.SIGINT)
    if args.only_failed and not run.order:
        print(f"dagnb: the last run of {graph.name!r} has no failed, skipped, cancelled or "
              f"unfinished steps{_among(args)}; nothing to re-run")
        return 0
    printer.finish()
    if printer.lost is not None:
        return _stdout_lost(printer.lost, run.summary())
    if run.failed:
        print("\n".join(failure_tails(run, _logs_command(args, run.id), rule=rule_for(sys.stdout),
                                       colour=colour_for(sys.stdout))))
        _say_unwritable(run)
    print(printer.table(run))
    print(run.summary())
    if given.values:
        print(given.line(run.order))
    return 0 if run.ok else _failed_code(run)


def _refreshed(args: argparse.Namespace, graph: Any) -> bool | list[str]:
    """``graph.run``'s ``refresh``: True for ``--refresh`` (every step), else the steps
    ``--refresh-step`` names, each a step of the workflow."""
    named = args.refresh_step
    if named and (args.refresh or args.skip_cache):
        every = "--refresh" if args.refresh else "--skip-cache"
        raise ConfigError(f"{every} runs every step again and --refresh-step {named[0]} only "
                          "the steps it names; give one of them")
    for name in named or ():
        if name not in graph:
            raise StepNotFoundError(f"--refresh-step {name!r} is no step of {args.workflow!r}; "
                                    f"{checks.choices_named(name, graph.names)}")
    return named or args.refresh


# a failed step's error (its status row's) saying that a disk is full, or read-only
_UNWRITABLE_ERRORS = {errno.ENOSPC: "[Errno 28]", errno.EROFS: "[Errno 30]"}
_NEARLY_FULL = 64 << 20  # bytes free on the run folder's disk: it is what filled up


def _say_unwritable(run: Any) -> None:
    """One line on stderr for a run whose step failed on a full or read-only disk where
    the run's folder is (its step's folders could not be made: the error alone names no
    folder): which folder, and the fix. A step that failed writing elsewhere (the run's
    folder's disk has room, and may be written) gets none."""
    errors = " ".join(str(row.get("error") or "") for row in run.status_rows().values()
                      if row.get("state") == "failed")
    found = [code for code, text in _UNWRITABLE_ERRORS.items() if text in errors]
    if not found:  # (most failures)
        return
    folder = run.workspace_text
    existing = next((path for path in (Path(folder), *Path(folder).parents)
                     if path.exists()), Path(folder))
    free = _free_bytes(existing)
    if errno.ENOSPC in found and free is not None and free < _NEARLY_FULL:
        print(f"dagnb: the run's folder {folder!r} is on a disk with {free / 2**20:.1f} MiB "
              "free, where its steps' folders could not be written: free space there, or "
              "run with --cache-dir on another disk", file=sys.stderr)
    elif errno.EROFS in found and not os.access(existing, os.W_OK):
        print(f"dagnb: the run's folder {folder!r} is on a read-only file system, where its "
              "steps' folders could not be made: run with --cache-dir on a folder this user "
              "may write, or with --cache-mode read-only", file=sys.stderr)


def _free_bytes(path: Path) -> int | None:
    """The bytes a user may still write on ``path``'s disk; None where it cannot be told."""
    try:
        status = os.statvfs(path)
    except (OSError, AttributeError):  # (no statvfs on Windows)
        return None
    return status.f_bavail * status.f_frsize


def _failed_code(run: Any) -> int:
    """1 for a failed run; 2, as the check before it refuses, when the steps that failed
    were only refused by ``fail-on-miss`` (their entries gone since that check)."""
    failed = {name for name, state in run.states().items() if state == "failed"}
    return 2 if failed and failed <= run.refused.keys() else 1


def _report_interrupted(run: Any, printer: ProgressPrinter) -> None:
    """An interrupted run's end: its bar's line ended, its status table and summary (which
    steps were cancelled) as a finished run's, and on stderr what became of the steps."""
    printer.finish()
    if run is not None and printer.lost is None:  # (None: stopped before it was made)
        with contextlib.suppress(OSError):  # (a reader gone: the exit code still says it)
            print(printer.table(run))
            print(run.summary(), flush=True)
    _say_interrupted(run.left_running if run is not None else [])


def _say_interrupted(left: Sequence[str]) -> None:
    """The line on stderr ending an interrupted run: what became of its steps."""
    if not left:
        print("dagnb: interrupted; running steps were stopped", file=sys.stderr)
        return
    noun = "step" if len(left) == 1 else "steps"
    print(f"dagnb: interrupted; Python {noun} {', '.join(map(repr, left))} did not stop: a "
          "long call outside Python (C code) cannot be interrupted; it ends as dagnb exits, "
          "recorded as cancelled", file=sys.stderr)


def _unfailing_stdout() -> None:
    """Write what stdout's encoding cannot (a step's ``é`` or ``✓`` on an ASCII or cp1252
    console) as escapes: a failed run's report must not end in a UnicodeEncodeError."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # (a TextIOWrapper's)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def _logs_command(args: argparse.Namespace, run_id: str) -> Callable[[str], str]:
    """The ``dagnb logs`` command that shows a step's whole log of this run, named by its
    id: without it, ``dagnb logs`` shows the newest run that had the step, perhaps one
    that waited for this one's and ran it again."""
    where = "" if args.cache_dir is None else f" --cache-dir {shlex.quote(args.cache_dir)}"
    return lambda step: (f"dagnb logs {shlex.quote(args.workflow)} {step} --run {run_id}"
                         f"{where}")


def _among(args: argparse.Namespace) -> str:
    """Which steps ``--only-failed`` looked at, when ``--target``/``--tag`` narrowed it."""
    named = [*(f"--target {t}" for t in args.target or ()),
             *(f"--tag {t}" for t in args.tag or ())]
    return f" among those {', '.join(named)} select" if named else ""


class _Given(NamedTuple):
    """The ``--param`` values set (``typed``: those of the command line, not carried
    from the last run by ``--only-failed``), the steps each was set in, and the mask
    that hides secrets where they are shown."""

    values: dict[str, Any]
    steps: dict[str, list[str]]
    typed: frozenset[str] = frozenset()
    mask: Callable[[str], str] = str

    def line(self, selected: Collection[str] | None = None) -> str:
        """``params given: ...`` (values as JSON, secrets masked), each with the steps
        it was set in that are ``selected``, the run's (None: every one)."""
        from dagnb.workflows.params import shown

        return "params given: " + "; ".join(
            f"{name}={shown(json.dumps(self.values[name], ensure_ascii=False), self.mask)}"
            f"{_taken_by(steps, selected)}" for name, steps in self.steps.items())


def _taken_by(steps: list[str], selected: Collection[str] | None) -> str:
    """`` for a, b``: the steps of ``selected`` (None: all) among ``steps``."""
    taking = [step for step in steps if selected is None or step in selected]
    return f" for {', '.join(taking)}" if taking else " (no step of this run takes it)"


def _warn_unreached(given: _Given, graph: Any, args: argparse.Namespace) -> list[str] | None:
    """Warn, in one line on stderr, of the command line's params that reach no step
    ``--target``/``--tag`` select (not an error: the same command line may be reused
    with other targets); the steps selected (None: every one, none narrowed)."""
    targets, tags = getattr(args, "target", None), getattr(args, "tag", None)
    if not given.values or not (targets or tags):
        return None
    selected = graph.select(targets, tags=tags)
    chosen = set(selected)
    unreached = [f"--param {name} (taken by {', '.join(steps)})"
                 for name, steps in given.steps.items()
                 if name in given.typed and chosen.isdisjoint(steps)]
    if unreached:
        named = " ".join([*(f"--target {t}" for t in targets or ()),
                          *(f"--tag {t}" for t in tags or ())])
        verb, it = ("reaches", "it changes") if len(unreached) == 1 else ("reach", "they change")
        print(f"dagnb: warning: {', '.join(unreached)} {verb} no step that {named} "
              f"selects: {it} nothing in this run", file=sys.stderr)
    return selected


def _set_params(graph: Any, args: argparse.Namespace) -> _Given:
    """Set the ``--param`` values in the workflow's steps (for ``--only-failed``, with
    the last run's: see dagnb.cli.only_failed): which, in which steps (no values when
    none was set)."""
    only_failed = getattr(args, "only_failed", False)
    if not args.param and not only_failed:
        return _Given({}, {})
    from dagnb.model.contract import known_secret_values
    from dagnb.model.masking import MIN_LINE, Masker
    from dagnb.workflows.params import file_values, param_pairs, set_params

    store = getattr(args, "cache_dir", None)  # (validate has none)
    # what the messages and the line of the params given hide: the declared secrets, and
    # the registry's and the stores' credentials (a CI's log shows `-p k=$VAR` expanded)
    mask = Masker([*known_secret_values(graph),
                   *config.settings().credential_secrets(store).values()],
                  words_below=MIN_LINE)
    values = param_pairs(args.param, mask, file_values(graph), graph.parameters,
                         repr(args.workflow))  # (a declared parameter's: checked by it)
    _refuse_secret_texts(graph, args.param, values, store)
    changed = set_params(graph, values, repr(args.workflow), mask)  # (a name refused first)
    typed = frozenset(values)
    if only_failed:
        from dagnb.cli.only_failed import last_run_params

        carried = last_run_params(graph, values, args.cache_dir, mask)
        changed.update(set_params(graph, carried, repr(args.workflow), mask))
        values.update(carried)
    return _Given(values, changed, typed, mask)


def _refuse_secret_texts(graph: Any, items: Sequence[str], values: dict[str, Any],
                         store: str | None = None) -> None:
    """Refuse a ``--param`` that YAML read as no text (a number, a list) from a text
    holding the value of a secret the workflow declares, or the registry's, or of the
    credentials of the run's store (``store``, its ``--cache-dir``): a key
    ``0x1F2E3D4C5B6A`` read as the number 34283457370986 passed the check of a param's
    value (:func:`~dagnb.model.contract.refuse_secret_values`, which refuses text
    holding one, with the step's name), and went in that form to the params file."""
    from dagnb.model.masking import SecretFinder

    names = sorted({name for step in graph for name in step.secrets})
    finder = SecretFinder({**config.settings().credential_secrets(store),
                           **{name: os.environ[name] for name in names if os.environ.get(name)}})
    for item in items if finder else ():
        name, _, text = item.partition("=")
        if not isinstance(values.get(name.strip()), str):
            finder.refuse(text.encode(), f"--param {name.strip()!r}",
                          "would be written to the step's params file in the cache folder",
                          "read the secret from the environment inside the step instead "
                          "(os.environ[{held!r}] in a function, \"${held}\" in a command), "
                          "with {held!r} in its secrets")


def _stdout_lost(error: OSError, summary: str) -> int:
    """Exit code of a run whose stdout stopped taking its lines (the run went on to its
    end, recorded): a reader that left (``| head``) is no error, as for Python's own
    tools; any other failure (a full disk) is said on stderr, with the run's outcome."""
    _quiet_stdout()
    if isinstance(error, BrokenPipeError):
        return 141  # what a shell reports for a command that SIGPIPE ended
    print(f"dagnb: error: stdout could not be written ({error.strerror or error}); the run "
          f"went on: {summary}", file=sys.stderr)
    return 1


def _refuse_notebook_options(args: argparse.Namespace) -> None:
    """``--output`` means something for a notebook only: refused for YAML, where it would
    be silently ignored."""
    if args.output is not None:
        raise ConfigError(
            f"--output {args.output!r} applies to notebooks (the executed .ipynb), not to the "
            f"workflow {args.workflow!r}; drop it (step outputs stay in the cache)"
        )


# Options of a YAML run that a headless notebook cannot honour: each cell is a run of its
# own, so these go on the %%dagger cells. Option, attribute, its value when not given,
# what to do instead.
_WORKFLOW_ONLY = (
    ("--only-failed", "only_failed", False,
     "run it again without it: its steps that succeeded come from the cache, the others run"),
    ("--refresh", "refresh", False,
     "put --refresh on the %%dagger cells whose steps should run again"),
    ("--refresh-step", "refresh_step", None,
     "put --refresh on the %%dagger cells whose steps should run again"),
    ("--skip-cache", "skip_cache", False,
     "put --skip-cache on the %%dagger cells whose steps should run again"),
    ("--fail-fast", "fail_fast", False,
     "drop it: a notebook run stops at the first cell that fails"),
    ("--[no-]use-circuit-breaker", "use_circuit_breaker", None, "put it on the %%dagger cells"),
)


def _refuse_workflow_options(args: argparse.Namespace) -> None:
    """Refuse, before the kernel starts, a ``run`` option a notebook would ignore."""
    for option, attribute, unset, instead in _WORKFLOW_ONLY:
        if getattr(args, attribute) is not unset:
            raise ConfigError(f"{option} applies to workflow files, not to the notebook "
                              f"{args.workflow!r}; {instead}")


def _cache_mode(args: argparse.Namespace) -> str | None:
    """``--cache-mode``, checked; ``--no-cache`` is its older spelling of ``off``."""
    mode = None if args.cache_mode is None else config.check_cache_mode(args.cache_mode,
                                                                          "--cache-mode")
    if args.no_cache and mode not in (None, "off"):
        raise ConfigError(f"--no-cache and --cache-mode {mode} disagree; give one")
    return "off" if args.no_cache else mode


def _add_switches(run: argparse.ArgumentParser) -> None:
    """The platform's per-execution switches, under their own names."""
    run.add_argument("--skip-cache", action="store_true", help="same as --refresh")
    run.add_argument("--enable-retry", action=argparse.BooleanOptionalAction, default=None,
                     help="--no-enable-retry retries no step")
    run.add_argument("--use-circuit-breaker", action=argparse.BooleanOptionalAction,
                     default=None, help="--no-use-circuit-breaker ignores open breakers")


def _switches(args: argparse.Namespace) -> dict[str, Any]:
    given = {"enable_retry": args.enable_retry, "use_circuit_breaker": args.use_circuit_breaker}
    switches = {key: value for key, value in given.items() if value is not None}
    return {**switches, "skip_cache": True} if args.skip_cache else switches


@command("validate")
def _validate(args: argparse.Namespace) -> int:
    if args.explain and _is_notebook(args.workflow):
        raise ConfigError(
            f"--explain reads workflow YAML; {args.workflow!r} is a notebook, whose %%dagger "
            "cells are in dagnb's spelling already"
        )
    if args.param and _is_notebook(args.workflow):
        raise ConfigError(f"validate --param applies to workflow files; the notebook "
                          f"{args.workflow!r} reads its parameters cell when it runs: "
                          "dagnb run NOTEBOOK --param ...")
    graph = _load_any(args.workflow, lint=True)
    given = _set_params(graph, args)
    later = _known_when_run(args.workflow)
    graph.validate()
    checked = [name for name in graph.order() if name not in later]  # (not '$data' itself)
    graph.check_mounts(checked)
    from dagnb.runtime.prepare import check_retries, check_secret_values
    from dagnb.workflows.loader import refuse_missing_workdirs

    refuse_missing_workdirs(graph, args.workflow)  # (a run fails such a step)

    check_retries(graph)  # all that a run would refuse, refused now
    check_secret_values(graph)
    _check_mounted_trees(graph, checked)
    if args.explain:  # valid YAML on stdout: the verdict and the notes are comments
        from dagnb.workflows.loader import explain

        print(f"# {args.workflow}: {_steps(len(graph))}, valid")
        if given.values:  # (the file below is as written)
            print(f"# {given.line()}")
        print(explain(args.workflow), end="")
        return 0
    print(f"{args.workflow}: {_steps(len(graph))}, valid")
    if given.values:
        print(given.line())
    for name, note in later.items():
        print(f"note: step {name!r}: {note}, and checked then")
    return 0


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _check_mounted_trees(graph: Any, names: list[str]) -> None:
    """Walk each mounted folder as a run's key would (no file read): too deep is refused
    now, not when the step runs."""
    from dagnb.errors import FingerprintError, InvalidStepError
    from dagnb.fingerprint import check_tree
    from dagnb.model.step import mount_path

    base = graph.base_dir or Path.cwd()
    for name in names:
        for host in graph[name].mounts:
            try:
                check_tree(mount_path(base, host))
            except FingerprintError as exc:
                raise InvalidStepError(f"step {name!r} mounts {host!r}: {exc}") from None


@command("graph")
def _graph(args: argparse.Namespace) -> int:
    graph = _load_any(args.workflow)
    graph.validate()
    later = _known_when_run(args.workflow)
    reads = _outputs_read(args.workflow)
    for name in graph.order():
        read = {step: variable for variable, step in reads.get(name, {}).items()
                if step not in graph[name].needs}
        needs = ", ".join([*graph[name].needs,
                           *(f"{step} (reads {variable})" for step, variable in read.items())])
        note = f"  ({later[name]})" if name in later else ""
        print(f"{name}" + (f"  <- {needs}" if needs else "") + note)
    return 0


def _outputs_read(path: str) -> dict[str, dict[str, str]]:
    """For a notebook: what each step reads of another step's ``--outputs`` (it runs
    after that one, as ``--target`` and a saved workflow have it)."""
    if not _is_notebook(path):
        return {}
    from dagnb.notebook.document import read_notebook
    from dagnb.notebook.flow import outputs_read

    return outputs_read(read_notebook(path))


@command("plan")
def _plan(args: argparse.Namespace) -> int:
    return plan_command.plan(_planned(args, "plan"), args)


@command("explain")
def _explain(args: argparse.Namespace) -> int:
    return plan_command.explain(_planned(args, "explain"), args)


def _planned(args: argparse.Namespace, action: str) -> Any:
    """The workflow file's graph with the ``--param`` values set, as ``run`` sets them;
    a notebook is refused: its steps' keys see what its cells leave in the kernel."""
    if _is_notebook(args.workflow):
        raise ConfigError(
            f"dagnb {action} reads workflow files, and {args.workflow!r} is a notebook, whose "
            "steps' keys see what its cells leave in the kernel: open it and run "
            f"{_MAGIC_OF[action]} there, or find the first cell that would run a step with "
            "dagnb run NOTEBOOK --cache-mode fail-on-miss (it stops at that cell)")
    _refuse_missing_folder(args.cache_dir)
    graph = load(args.workflow)
    _refuse_split_values(graph, args)
    given = _set_params(graph, args)
    selected = _warn_unreached(given, graph, args)
    _unfailing_stdout()
    _say_cache_beside_the_workflow(Path(args.workflow), args.cache_dir)
    if given.values:
        print(given.line(selected))
    return graph


_MAGIC_OF = {"plan": "%dagger plan", "explain": "%dagger cache explain NAME"}


def _refuse_split_values(graph: Any, args: argparse.Namespace) -> None:
    """A word after an option's value that names no step is the value's, split by a
    space: refused naming the value quoted, not as a step no graph has."""
    for word, quoted in getattr(args, "split_values", {}).items():
        if word not in graph.names:
            raise ConfigError(f"no step is named {word!r}; if it is part of a value with a "
                              f"space, quote the value: {quoted}")


def _refuse_missing_folder(given: str | None) -> None:
    """A ``--cache-dir`` naming no folder is refused: a typo would plan every step to
    run, as an empty cache does (a store URL is read as a run reads it)."""
    if given is None or checks.is_url(given):
        return
    from dagnb.cache import local_folder

    folder = local_folder(given)
    if not folder.exists():
        raise cache_commands.missing_folder(given, folder)


def add_subcommands(sub: Any) -> None:
    """Add ``templates``, ``config``, ``cache`` and ``images`` to ``dagnb``'s subparsers."""
    tpl = sub.add_parser("templates", help="list pipeline templates and start workflows from them")
    actions = tpl.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the templates as a table")
    listing.add_argument("--category", default=None, help="only this category")
    show = actions.add_parser("show", help="a template's description and parameters")
    show.add_argument("id", nargs="?", default=None, help="the template (none: their ids)")
    new = actions.add_parser("new", help="write a workflow file from a template")
    new.add_argument("id", nargs="?", default=None, help="the template (none: their ids)")
    new.add_argument("path", nargs="?", default=None, metavar="OUTPUT",
                     help="the workflow file to write (the same as -o)")
    new.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                     help="a template parameter (repeatable); lists as a,b or [1, 2]")
    new.add_argument("-o", "--output", default=None,
                     help="workflow file to write, or a folder for <id>.yml "
                          "(default <workflow_directory>/<id>.yml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    cfg = sub.add_parser("config", help="show the effective settings and their sources")
    cfg_actions = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = cfg_actions.add_parser("show", help="every setting (or those named) with its "
                                               "value and source")
    show.add_argument("keys", nargs="*", metavar="KEY",
                      help="only these settings (dagnb config show cache_mode)")
    cfg_actions.add_parser("path", help="the config file in force")
    cache_commands.add_parser(sub)
    logs_command.add_parser(sub)
    history_command.add_parser(sub)
    images = sub.add_parser("images", help="the image tags pinned to digests (pin_images)")
    image_actions = images.add_subparsers(dest="action", required=True, metavar="ACTION")
    image_actions.add_parser("list", help="each pinned tag and its digest")
    again = image_actions.add_parser(
        "refresh", help="resolve the pinned tags again in a new engine session; say which moved")
    again.add_argument("images", nargs="*", metavar="IMAGE", help="only these tags")
    for parser in image_actions.choices.values():
        parser.add_argument("--cache-dir", default=None, help="cache folder (default: the setting)")


@command("templates")
def _templates(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "new": _new}[args.action](args)


def _list(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:  # a broken file: one line, then go on
        warnings.simplefilter("always", templates.BrokenTemplateWarning)
        rows = templates.table_rows(args.category)
    for warning in caught:
        print(f"dagnb: warning: {warning.message}", file=sys.stderr)
    shown = {name: [row[name] for row in rows] for name in ("id", "category", "name")}
    print(cache_commands.text_table(shown) if rows else "no templates found")
    return 0


def _template(args: argparse.Namespace) -> templates.Template:
    """The template ``args.id`` names; none named, refused naming the ids there are."""
    if args.id is None:
        known = sorted(row["id"] for row in templates.table_rows(None))
        raise ConfigError(f"dagnb templates {args.action} ID: name the template, one of "
                          f"{checks.listed(known)} (dagnb templates list describes them)")
    return templates.get(args.id)


def _show(args: argparse.Namespace) -> int:
    template = _template(args)
    print(f"{template.id}: {template.name} [{template.category}]")
    print(template.description)
    print("parameters:")
    for parameter in template.parameters.values():
        print(f"  {templates.signature(parameter)}  {parameter.description}")
    graph = template.instantiate(**{
        name: p.example() for name, p in template.parameters.items() if p.required
    })
    print("steps: " + ", ".join(graph.order()))
    return 0


def _new(args: argparse.Namespace) -> int:
    template = _template(args)
    values = template.values(_pairs(args.param), from_text=True)
    if args.path is not None and args.output is not None and args.path != args.output:
        raise ConfigError(f"templates new was given two files to write, {args.path!r} and "
                          f"-o {args.output!r}; name one")
    output = _workflow_path(args.output or args.path, args.id,
                            "-o " if args.output is not None else "")
    if output.exists() and not args.force:
        raise ConfigError(f"{str(output)!r} already exists; pass --force to overwrite it")
    _write_workflow(template, output, values)
    print(f"wrote {output} from template {template.id!r}; run it with: "
          f"dagnb run {shlex.quote(str(output))}")
    return 0


def _workflow_path(output: str | None, template_id: str, option: str = "-o ") -> Path:
    """Where ``templates new`` writes: ``-o`` (or OUTPUT: ``option`` "") as given, but an
    existing folder (or a path ending in a slash) is the folder for ``<template id>.yml``,
    as ``cp`` reads it."""
    if not output:
        return Path(config.settings().workflow_directory) / f"{template_id}.yml"
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return Path(output) / f"{template_id}.yml"
    if Path(output).suffix.lower() not in (".yml", ".yaml"):  # (dagnb run reads it by suffix)
        raise ConfigError(f"{option}{output!r}: templates new writes a YAML workflow; name a .yml "
                          f"file (such as {str(Path(output).with_suffix('.yml'))!r})")
    return Path(output)


def _write_workflow(template: templates.Template, output: Path, values: dict[str, Any]) -> None:
    """The template's workflow written to ``output`` (its folders made); a path that
    cannot be written is one line naming it, not a traceback, and leaves no folder."""
    workflow = template.instantiate(**values)  # first: a value it refuses makes no folder
    missing = _missing_folders(output.parent)
    written = False
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        dump(workflow, output, replace=True)  # (reached new, or with --force)
        written = True
    except OSError as exc:
        in_the_way = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
        why = (f"{str(in_the_way)!r} is a file, not a folder" if in_the_way is not None
               else exc.strerror or str(exc))
        raise ConfigError(f"cannot write {str(output)!r}: {why}; pass -o a path in a folder "
                          "you can write") from None
    finally:
        if not written:
            _remove_empty(missing)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, innermost first."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write made, innermost first, if still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _pairs(items: list[str]) -> dict[str, str]:
    """``-p`` NAME=VALUE items by name, split as ``dagnb run -p`` splits them (each value
    is then read by its Parameter as run reads it: in quotes, the text in them)."""
    from dagnb.workflows.params import given_once, name_and_text

    return dict(name_and_text(item) for item in given_once(items, str))


command("cache")(cache_commands.run)


@command("logs")
def _logs(args: argparse.Namespace) -> int:
    # (a notebook's runs are recorded as "notebook", every one's: found by their origin)
    workflow = (logs_command.notebook_of(args.workflow, args.cache_dir)
                if _is_notebook(args.workflow)
                else logs_command.workflow_of(args.workflow, args.cache_dir))
    _unfailing_stdout()
    if not _is_notebook(args.workflow):  # (as run says it: of workflow files)
        _say_cache_beside_the_workflow(Path(args.workflow), args.cache_dir)
    return logs_command.run(args, workflow)


@command("history")
def _history(args: argparse.Namespace) -> int:
    _unfailing_stdout()
    if args.workflow is None:
        return history_command.run(args, None)
    # (a notebook's runs are recorded as "notebook", every one's: found by their origin)
    if _is_notebook(args.workflow):
        return history_command.run(args, history_command.notebook_of(args.workflow))
    workflow = history_command.workflow_of(args.workflow)
    _say_cache_beside_the_workflow(Path(args.workflow), args.cache_dir)
    return history_command.run(args, workflow)


@command("images")
def _images(args: argparse.Namespace) -> int:
    """`dagnb images list|refresh`: the tags pin_images pinned, and pinning them again."""
    if args.action == "refresh":
        from dagnb.cache import local_folder, refuse_foreign_folder
        from dagnb.executors.dagger.images import refresh
        from dagnb.executors.loop import run_sync

        refuse_foreign_folder(local_folder(args.cache_dir))  # (the pins are written there)
        print("\n".join(run_sync(refresh(args.cache_dir, args.images))))
        return 0
    from dagnb.cache import local_folder
    from dagnb.cache.images import ImagePins

    folder = local_folder(args.cache_dir)  # (listing reads it: nothing is made there)
    if args.cache_dir and not checks.is_url(args.cache_dir) and not folder.is_dir():
        raise cache_commands.missing_folder(args.cache_dir, folder)
    print(ImagePins(folder).listing())
    return 0


@command("config")
def _config(args: argparse.Namespace) -> int:
    if args.action == "path":
        path = config.find_config_file()
        print(path if path is not None else "no config file (built-in defaults and DAGNB_* only)")
        return 0
    config.reload()  # what a fresh process sees: the file and the environment as they are now
    rows = config.show_rows(short_paths=False)  # a terminal shows them whole
    if args.keys:
        checks.known_keys(args.keys, [row["key"] for row in rows], "dagnb config show",
                          ConfigError, noun="setting")
        rows = [row for row in rows if row["key"] in args.keys]
    print(cache_commands.text_table({"key": [row["key"] for row in rows],
                                     "value": [repr(row["value"]) for row in rows],
                                     "source": [row["source"] for row in rows]}))
    return 0




def _is_notebook(path: str) -> bool:
    return Path(path).suffix in (".ipynb", ".py")


def _load_any(path: str, *, lint: bool = False) -> Any:
    """The graph of a workflow file, or the one a notebook's %%dagger cells define
    (checked as ``dagnb run`` checks it before its kernel starts; ``lint``: validate's
    warnings too)."""
    if not _is_notebook(path):
        return load(path)
    from dagnb.notebook.magics import notebook_graph

    return notebook_graph(path, lint=lint)


def _known_when_run(path: str) -> dict[str, str]:
    """For a notebook: each step whose ``%%dagger`` line reads notebook variables
    (``--param who=$customer``), with a note saying so; read from the file, the line
    holds ``$customer``, not the value the cell will run with."""
    if not _is_notebook(path):
        return {}
    from dagnb.notebook.document import dagger_cells, read_notebook
    from dagnb.notebook.magics import line_fields

    notes = {}
    for cell in dagger_cells(read_notebook(path)):
        fields = line_fields(cell.line)
        if fields:
            notes[cell.name] = (f"its line reads notebook variables ({', '.join(fields)}), "
                                "known only when the cell runs")
    return notes


def _run_notebook(args: argparse.Namespace, cache_mode: str | None) -> int:
    """`dagnb run NOTEBOOK`: execute it headless, then the steps' status table; a cell
    refused by ``fail-on-miss`` exits 2, as a YAML run does."""
    from dagnb.notebook.cells import parse_assignments
    from dagnb.notebook.headless import run_notebook
    from dagnb.notebook.magics import notebook_graph

    params = parse_assignments(args.param, "--param", as_json=True)
    # what graph/validate refuse is refused before any cell runs, not when its cell comes
    steps = len(notebook_graph(args.workflow, in_order=True))
    outcome = run_notebook(args.workflow, params=params,
                           param_texts=parse_assignments(args.param, "--param"),
                           targets=args.target, tags=args.tag,
                           output=args.output, cache_mode=cache_mode,
                           timeout=_timeout(args.timeout), settings=_kernel_settings(args))
    if outcome.interrupted is not None:
        _no_more_interrupts(args)
    if outcome.rows:  # (as a YAML run's: a frame of rows some "not run" made counts floats)
        print(status_table(outcome.rows))
    if outcome.interrupted is not None:  # (the cell's KeyboardInterrupt is no news)
        _say_interrupted([row["step"] for row in outcome.rows if row.get("state") == "running"])
    elif outcome.error is not None:  # (one line naming the cell, so the user finds it)
        cell = outcome.failed_cell
        where = f"a cell of {args.workflow}" if cell is None else cell.said(args.workflow)
        print(f"dagnb: {where} failed:\n{outcome.error}", file=sys.stderr)
    elif not outcome.rows and not steps:  # (its cells ran: said, not silent; steps its
        # code ran through the Python API, graph.run(), are its own to report)
        print(f"dagnb: {args.workflow} has no %%dagger cell: its code ran, and no step is "
              "listed; a step is a cell that starts with %%dagger NAME", file=sys.stderr)
    return outcome.exit_code


def _at_least_one(given: str) -> int:
    """``--max-concurrency``, as argparse reads it: a whole number >= 1, said with the
    option's name (argparse's line starts with it), not the keyword's of ``graph.run``."""
    try:
        return checks.count(given, least=1, text=True)
    except checks.Invalid:
        shown = given if given.strip() else repr(given)
        raise argparse.ArgumentTypeError(f"{shown} must be a whole number >= 1") from None


def _timeout(given: str | None) -> float | None:
    """``--timeout`` in seconds (None: no limit)."""
    if given is None:
        return None
    return checks.checked(checks.duration, given, "--timeout", ConfigError, sep=" ")


def _kernel_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run options a notebook's kernel takes as settings (its cells' runs read them)."""
    given = {"executor": args.executor, "max_concurrent_executions": args.max_concurrency,
             "cache_directory": args.cache_dir, "enable_retry": args.enable_retry}
    return {key: value for key, value in given.items() if value is not None}


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"dagnb {_version()}")  # (on stdout, as argparse's own version action)
        parser.exit()


def _version() -> str:
    """The version of the installed distribution; the source's when none is installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dagnb")
    except PackageNotFoundError:  # (a source tree on PYTHONPATH)
        from dagnb import __version__

        return __version__


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, stopping the run as Ctrl-C does (its number decides the exit code)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal = signal_number


def _stop_like_ctrl_c(signal_number: int, frame: Any) -> None:
    raise Terminated(signal_number)


def _handle_termination() -> None:
    """``timeout``, a CI cancel and a closed terminal send SIGTERM or SIGHUP: without this
    Python dies at once and every step process lives on; with it the run stops its steps
    (their whole process groups) as for Ctrl-C, then exits 128 + the signal's number.
    A signal ignored when dagnb starts stays ignored: ``nohup`` (``trap '' HUP``) ignores
    SIGHUP so that a run outlives the terminal, as Python leaves an ignored SIGINT."""
    for number in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _stop_like_ctrl_c)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagnb`` console script."""
    args = build_parser().parse_args(_signed_values_joined(
        sys.argv[1:] if argv is None else argv))
    args.from_command_line = argv is None
    if threading.current_thread() is threading.main_thread():
        _handle_termination()
    if sys.stdout is None:  # (started with stdout closed, `dagnb ... >&-`: Python's None)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    shown, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        _check_working_folder()
        _check_cache_dir(args)
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # (a reader gone: the error caught here, not at exit)
        return code
    except DagnbError as exc:
        print(f"dagnb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # (Ctrl-C; SIGTERM and SIGHUP: Terminated)
        _no_more_interrupts(args)
        print(f"dagnb: interrupted{_what_is_kept(args)}", file=sys.stderr)
        return 128 + getattr(stop, "signal", signal.SIGINT)
    except BrokenPipeError:  # (`dagnb ... | head`): the reader has what it wanted
        _quiet_stdout()
        return 141  # what a shell reports for a command that SIGPIPE ended
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        where = repr(exc.filename) if exc.filename else "writing the output"
        print(f"dagnb: error: {exc.strerror} ({where})", file=sys.stderr)
        _quiet_stdout()  # (`> /dev/full`: flushing at exit would fail again)
        return 1
    finally:
        warnings.formatwarning = shown


# Options whose value may start with "-": argparse takes "--timeout -1s" for two options
# and says "expected one argument", where dagnb's own check says what a duration is.
_SIGNED_OPTIONS = frozenset({"--timeout", "--older-than", "--max-age", "--max-size"})
_NEGATIVE = re.compile(r"-[0-9.]")


def _signed_values_joined(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--timeout -1s`` as ``--timeout=-1s`` (a value that starts like a
    negative number), which argparse gives the option to be checked (before any ``--``)."""
    joined: list[str] = []
    for item in argv:
        if (joined and joined[-1] in _SIGNED_OPTIONS and _NEGATIVE.match(item)
                and "--" not in joined):
            joined[-1] = f"{joined[-1]}={item}"
        else:
            joined.append(item)
    return joined


def _check_working_folder() -> None:
    """One line for a shell left in a folder that was removed (every command resolves
    paths from it: a FileNotFoundError deep in the config search, before)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise ConfigError("the current folder no longer exists (removed since the shell "
                          "entered it); cd into an existing folder and run the command "
                          "again") from None


def _no_more_interrupts(args: argparse.Namespace) -> None:
    """A command stopped by Ctrl-C exits 130 from here on: a second Ctrl-C landing while
    it says so (or pending when ``main`` returns) would end the process by SIGINT
    instead. Only in the ``dagnb`` process itself (``main()`` of the command line, not of
    a caller that passed its own arguments), whose every step is stopped by now."""
    if getattr(args, "from_command_line", False) and (
            threading.current_thread() is threading.main_thread()):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _what_is_kept(args: argparse.Namespace) -> str:
    """What an interrupted command leaves (a run says it itself: it stops its steps)."""
    if getattr(args, "action", None) in ("push", "pull"):  # (each entry copied whole, last)
        return (f"; the entries {args.action}ed so far are whole and kept: run it again to "
                "copy the rest")
    return ""


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})  # a disk full, or failing


def _check_cache_dir(args: argparse.Namespace) -> None:
    """Any command's ``--cache-dir``, checked as the setting is before anything uses it: a
    store URL with a user or password in it is refused, and named with them redacted."""
    given = getattr(args, "cache_dir", None)
    if given:
        checks.checked(checks.location, given, "--cache-dir", ConfigError, sep=" ")


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    """A warning as the command prints it: one line, not dagnb's source line after it
    (and no second "dagnb: ", which a warning meant for a notebook begins with)."""
    return f"dagnb: warning: {str(message).removeprefix('dagnb: ')}\n"


def _quiet_stdout() -> None:
    """Send what is left of stdout nowhere: flushing it at exit would fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

