"""IPython magics: ``%%dagger`` cells define and run steps, ``%dagger`` inspects them.

``%load_ext dagnb`` registers them on the kernel's :class:`~dagnb.notebook.session.Session`.
Each magic parses its options and calls the public API; a bad option or a
:class:`~dagnb.DagnbError` is shown as a one-line ``UsageError``, and a failed step is
data (its status row and stderr tail), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import os
import re
import shlex
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.core import magic_arguments as ma
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.utils.text import DollarFormatter

from dagnb import checks
from dagnb.cache import Store, forget_secrets, store_for, sync
from dagnb.cache.clearing import check_clear_options, check_clear_scope, kept_in_store
from dagnb.cache.explain import without_diff
from dagnb.cache.location import pin_relative_folder
from dagnb.cache.secret_scan import known_secrets
from dagnb.checks import closest, known_keys, listed, value_split_at
from dagnb.config import check_cache_mode, configured_by, settings
from dagnb.errors import (
    CacheMissError,
    DagnbError,
    InvalidStepError,
    MissingDependencyError,
    RunFailed,
    WorkflowError,
)
from dagnb.executors.capture import release_held
from dagnb.executors.dagger import services
from dagnb.model.graph import Graph, unknown_need_message
from dagnb.model.masking import MIN_LINE, Masker, named_as_secret
from dagnb.model.step import Step
from dagnb.notebook import displays, warning_lines
from dagnb.notebook.cells import parse_assignments, parse_names, step_from_options
from dagnb.notebook.document import (
    MAGIC,
    DaggerCell,
    binds_at_top,
    dagger_cells,
    declared_secrets,
    defining_cell,
    kernel_notebook_path,
    read_notebook,
    refuse_unloaded_magic,
)
from dagnb.notebook.kernel_logs import quiet_shutdown_race
from dagnb.notebook.overview import (
    NO_STEPS_YET,
    history,
    name_a_step,
    notebook_logs,
    notebook_states,
    notebook_status,
    run_steps_frame,
    shown,
)
from dagnb.notebook.param_sources import changed_variables, params_from_variables
from dagnb.notebook.session import Session, get_session
from dagnb.notebook.unready import unready_message
from dagnb.notebook.widgets import LeftRunning, discard, live_view, stop, watch
from dagnb.views.live import TextView
from dagnb.workflows.loader import load
from dagnb.workflows.published import SeveralPublishers
from dagnb.workflows.pyfunctions import UndefinedName

__all__ = [
    "DaggerMagics", "Text", "adopt_notebook", "cell_definition", "cell_definitions",
    "graph_from_cells", "graph_of", "line_fields", "load_ipython_extension", "notebook_graph",
    "parse_line", "step_from_cell", "unload_ipython_extension",
]


class Text(str):
    """A message a magic returns: shown as plain text, without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _usage_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """DagnbErrors become UsageErrors: one line in the notebook, no traceback. A message
    shows no secret's value: IPython wrote the notebook's values into the magic's line
    (``--param p=$pw``) before a parser quoted it, and the cell's output is saved."""

    @functools.wraps(func)
    def wrapper(magics: DaggerMagics, line: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(magics, line, *args, **kwargs)
        except (RunFailed, CacheMissError) as exc:  # shown by their _render_traceback_
            # (status rows, misses), no frames: the magic's are left out of it, as they
            # held the run, its steps' results, and IPython keeps the cell's error in a
            # cycle (its ExecutionResult, in a frame of the traceback): till a full pass
            raise exc.with_traceback(None)  # noqa: B904 (the same error, not a new one)
        except (DagnbError, UsageError) as exc:
            raise UsageError(magics.without_secrets(str(exc), line)) from None
        except LeftRunning as stop:
            steps = ", ".join(map(repr, stop.steps)) or "a step"
            raise UsageError(
                f"interrupted: the run was cancelled, but {steps} is still running: Python "
                "code in one long call (time.sleep, subprocess.run, a C extension) stops "
                "only when the call returns; %dagger status shows when it has") from None
        except KeyboardInterrupt:
            raise UsageError("interrupted: the run was cancelled and its processes "
                             "stopped; %dagger status shows where it got to") from None

    return wrapper


# What the parser or shlex says of a line a value IPython wrote into it unquoted broke.
_SPLIT_BY_A_VALUE = ("unrecognized arguments", "No closing quotation", "No escaped character")


def split_words(line: str) -> list[str]:
    """``shlex.split``, with an unclosed quote as a UsageError rather than a traceback."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read the options {line!r}: {exc}{_CLOSE_THE_QUOTE}") from None


_CLOSE_THE_QUOTE = "; close the quote"  # (not the fix when IPython wrote the quote in)


def parse_line(magic: Callable[..., Any], line: str, words: list[str] | None = None) -> Any:
    """A magic's options with POSIX shell quoting (``--env "A=x y"``), unlike
    ``parse_argstring``, which keeps the quotes in the values; a mistyped option gets
    a suggestion, as a mistyped step name does. ``words``: the line's words, made
    otherwise (see :meth:`DaggerMagics.written_words`)."""
    words = split_words(line) if words is None else words
    magic.parser.allow_abbrev = False  # (--only is no --only-failed: refused, not taken)
    try:
        return magic.parser.parse_args(words)
    except UsageError as exc:
        raise UsageError(_with_suggestion(str(exc), words, magic.parser)) from None


# what asks a magic for its options' help: IPython's parsers take no --help (theirs would
# end the kernel's process), and %%dagger NAME --help was refused as unrecognized
_HELP_WORDS = frozenset({"--help", "-h"})


def asks_for_help(words: list[str]) -> bool:
    """Whether ``--help`` (or ``-h``) is among a magic's words."""
    return not _HELP_WORDS.isdisjoint(words)


def show_help(magic: Callable[..., Any]) -> None:
    """Print a magic's usage and options, as its parser says them (else its docstring):
    what ``--help`` prints in a terminal, without running or defining anything."""
    parser = getattr(magic, "parser", None)
    text = parser.format_help().removeprefix("::") if parser is not None else magic.__doc__
    print(inspect.cleandoc(text or ""))


def _with_suggestion(message: str, words: list[str], parser: Any) -> str:
    known = [s for action in parser._actions for s in action.option_strings]
    unknown = [w.split("=")[0] for w in words if w.startswith("--") and
               w.split("=")[0] not in known]
    # (compared without their dashes, which every option shares: --bogus is no --outputs)
    names = {option.lstrip("-"): option for option in known}
    close = closest(unknown[0].lstrip("-"), names) if unknown else None
    if close:
        return f"{message}; did you mean {names[close]!r}?"
    return message + _spaces_hint(message, words, parser)


def _spaces_hint(message: str, words: list[str], parser: Any) -> str:
    """How to write what a space split: a value (``--timeout 10 minutes``: quote it) or
    the step's name (``%%dagger bad name``: one word); and the name a cell gave none."""
    positional = [action.dest for action in parser._actions if not action.option_strings]
    if message.endswith("required: name") and positional == ["name"]:
        return "; name the step after %%dagger, as in %%dagger load"
    extra = _UNRECOGNIZED.search(message)
    first = extra.group(1).split()[0] if extra else ""
    if not first or first.startswith("-") or first not in words:
        return ""
    at = words.index(first)
    quoted = value_split_at(parser, words, at)
    if quoted is not None:
        return f"{_QUOTE_IT}{quoted}"
    if at == 1 and "name" in positional:
        return f"{_ONE_WORD}{words[0]}_{first}"
    return ""


_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.+)$")
# what a space split is said to need, which a $name's expansion says its own fix for
_QUOTE_IT, _ONE_WORD = "; a value with a space is quoted: ", "; a step's name is one word: "


def _step_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a step (shared by %%dagger and the builder's export)."""
    arguments = [
        ma.argument("--python", action="store_true",
                    help="The cell is Python, not shell; upstream results are variables."),
        ma.argument("--outputs", "--output", metavar="VARS",
                    help="With --python: the variables kept as the step's result."),
        ma.argument("--image", help="Container image (Dagger executor)."),
        ma.argument("--needs", "--need", metavar="A,B", help="Upstream steps."),
        ma.argument("--env", action="append", default=[], metavar="K=V",
                    help="Environment variable (repeatable)."),
        ma.argument("--secret", action="append", default=[], metavar="NAME",
                    help="Environment variable passed as a secret (repeatable)."),
        ma.argument("--mount", action="append", default=[], metavar="HOST:PATH",
                    help="Read-only input file or folder (repeatable)."),
        ma.argument("--param", action="append", default=[], metavar="K=V",
                    help="Parameter; the value is JSON when it parses, else text. A --python "
                         "cell reads it as the variable K (where a Python literal such as "
                         "False or ['a', 'b'] is that value), a shell cell as $DAGNB_PARAM_K."),
        ma.argument("--retries", type=int, metavar="N",
                    help="Retry a failed run of the step up to N times, with backoff."),
        ma.argument("--timeout", help="Time limit, such as 10m."),
        ma.argument("--ttl", help="How long the cached result stays valid, such as 1h; "
                    "never: whatever the run's or the setting's."),
        ma.argument("--no-cache", action="store_true", help="Never cache this step."),
        ma.argument("--tags", "--tag", metavar="A,B", help="Labels, for %%dagger run --tags."),
        ma.argument("--executor", choices=["auto", "local", "dagger", "dask"],
                    help="Where the step runs (default: the executor setting); dask "
                         "takes --python cells only."),
    ]
    for argument in reversed(arguments):
        func = argument(func)
    return func


def _raises(args: Any) -> bool:
    """Whether a run of these options ends with ``raise_for_status`` (not in background)."""
    return not args.background and _failure_raises(args)


def _failure_raises(args: Any) -> bool:
    """Whether a failed step fails the cell, in the foreground (``--no-raise`` and the
    ``raise_on_failure`` setting say not)."""
    return not args.no_raise and settings().raise_on_failure


def _printed_whole(run: Any, view: Any) -> frozenset[str]:
    """The failed steps whose every line the cell's text view printed as they came: all
    but those past what the event log keeps of a step, whose last lines it never saw.
    A widget prints none into the cell's output."""
    if not isinstance(view, TextView):
        return frozenset()
    return frozenset(name for name in run.failed if not run.events.spilled(name))


def _run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of a run (shared by %%dagger and %dagger run)."""
    arguments = [
        ma.argument("--refresh", action="store_true",
                    help="Run again even if cached, and overwrite the cache entry."),
        ma.argument("--background", action="store_true",
                    help="Return at once; the status widget keeps updating."),
        ma.argument("--max-concurrency", type=int, metavar="N", help="Steps at once."),
        ma.argument("--skip-cache", action="store_true", help="Same as --refresh."),
        ma.argument("--cache-mode", metavar="MODE",
                    help="read-write, read-only (use hits, write nothing), fail-on-miss "
                         "(refuse the run, listing each step that would run) or off; "
                         "default: the cache_mode setting."),
        ma.argument("--enable-retry", action=argparse.BooleanOptionalAction, default=None,
                    help="--no-enable-retry: retry no step in this run."),
        ma.argument("--use-circuit-breaker", action=argparse.BooleanOptionalAction,
                    default=None, help="--no-use-circuit-breaker: ignore open breakers."),
        ma.argument("--no-raise", action="store_true",
                    help="A failed, cancelled or skipped step does not raise RunFailed "
                         "(for every cell: %%dagger config raise_on_failure=false)."),
    ]
    for argument in reversed(arguments):
        func = argument(func)
    return func


@magics_class
class DaggerMagics(Magics):
    """``%%dagger`` and ``%dagger``, bound to one :class:`~dagnb.notebook.session.Session`."""

    def __init__(self, shell: Any, session: Session | None = None) -> None:
        super().__init__(shell)
        self._session = session

    @property
    def session(self) -> Session:
        """The session given, else the process's (looked up each time: it can be reset)."""
        if self._session is not None:
            return self._session
        return get_session(self.shell.user_ns if self.shell is not None else None)

    @ma.magic_arguments("%dagger")
    @ma.argument("name", help="Step name; running the cell again redefines the step.")
    @_step_options
    @_run_options
    @ma.argument("--define-only", action="store_true",
                 help="Add the step to the graph without running it.")
    @cell_magic("dagger")
    @_usage_errors
    def dagger_cell(self, line: str, cell: str) -> None:
        """Define a step from this cell and run it with what it needs.

        The cell is a shell script (or Python with --python). Running the cell adds the
        step to the notebook's graph, or replaces it, then runs it together with any
        upstream step whose result is not cached. A cell that is refused (a bad option,
        an unknown upstream step) changes nothing in the graph; after a kernel restart
        the message says which cell to run first. ``%dagger remove NAME`` takes a step
        out. Unchanged steps are cache hits: their output is replayed, marked as cached
        (what a --python step displayed too: HTML, images, plots).

        The output appears below the cell as it is produced, then the status. When a
        step fails, is cancelled or is skipped, the cell raises ``RunFailed`` after the
        run, showing the status rows and the end of the stderr (in text mode, of the
        steps whose lines were not printed above), so Run All stops there;
        ``--no-raise`` shows them without raising.

        With --python, upstream results are variables named after the upstream steps
        (so such a step needs a Python name: ``load_data``, not ``load-data``), and the
        --outputs variables come back into the notebook. Every step's result is
        also in the dict ``_dagger`` (a shell step's is its output folder). IPython
        syntax works in a --python cell as in any cell (``files = !ls``, ``%time``).

        Params: ``--param n=3`` is the variable ``n`` in a --python cell (also
        ``dagnb.current().params["n"]``); a shell cell reads ``$DAGNB_PARAM_N``, or all
        params as JSON from the file ``$DAGNB_PARAMS``. Changing a param re-runs the step.

        Examples::

            %%dagger fetch --param n=3
            seq $DAGNB_PARAM_N > "$DAGNB_OUT/numbers.txt"

            %%dagger total --python --needs fetch --outputs total --param scale=2
            total = scale * sum(int(x) for x in (fetch / "numbers.txt").read_text().split())
        """
        words = self.written_words("%%dagger", line)
        try:
            if asks_for_help(split_words(line) if words is None else words):  # (the cell is
                show_help(self.dagger_cell)  #                   neither run nor defined)
                return
            args = parse_line(self.dagger_cell, line, words)
        except UsageError as exc:
            raise UsageError(self._hinted(str(exc), "%%dagger", line, words)) from None
        number = _running_cell_number(self.shell)  # (its frames named as IPython's are)
        step = step_from_options(args.name, cell, args, self.shell.user_ns,
                                 label=None if number is None else f"In[{number}]")
        outputs = parse_names(args.outputs)
        cell_id = _running_cell_id(self.shell)
        self.session.param_variables[step.name] = params_from_variables(
            _line_as_written(self.shell, "%%dagger", line) if words is not None else None,
            self.shell.user_ns)
        _say(self.session.replaced_from_another_cell(step.name, cell_id))
        if args.define_only or not _selected(step.name):
            self.session.define(step, outputs, cell_id)
            _say(self.session.retire_renamed(step.name, cell_id))
            return
        with self.session.defining(step, outputs, cell_id):  # a run that cannot start
            #                                                   undoes it
            run, view = self._start([step.name], args, focus=step.name)
        _say(self.session.retire_renamed(step.name, cell_id))
        self._follow(run, view, args)

    def _run(self, targets: list[str] | None, args: Any, **options: Any) -> Text | None:
        run, view = self._start(targets, args, **options)
        if options.get("only_failed") and not run.order:
            discard(view)
            among = (" among the steps named or tagged and their upstream"
                     if targets or options.get("tags") else "")
            return Text(f"nothing to run again{among}: no step failed, was skipped or was "
                        "cancelled (see %dagger status)")
        self._follow(run, view, args)
        return None

    def _start(self, targets: list[str] | None, args: Any, focus: str | None = None,
               **options: Any) -> tuple[Any, Any]:
        """Build the view, then start the run (a DagnbError here means nothing ran)."""
        if args.refresh or args.skip_cache:
            options["refresh"] = targets if targets else True
        for switch in ("enable_retry", "use_circuit_breaker"):
            if getattr(args, switch) is not None:
                options[switch] = getattr(args, switch)
        if args.max_concurrency is not None:
            options["max_concurrency"] = args.max_concurrency
        if args.cache_mode is not None:
            options["cache_mode"] = check_cache_mode(args.cache_mode, "--cache-mode")
        view = live_view(focus=focus, failed_tails=not _raises(args))
        held = self.session.still_running()
        if held:  # (else the cell hangs with no word why)
            print(f"dagnb: this run starts when {', '.join(map(repr, held))}, interrupted, "
                  "returns from its long call (%dagger status shows when it has)")
        busy = self.session.background_holding()
        if busy:  # (a Python step runs on the loop: the cell would wait with no word why)
            print(f"dagnb: this run starts when {', '.join(map(repr, busy))}, of a "
                  "--background run, returns (a --python step holds the kernel's run loop "
                  "while it runs)")
        try:
            return self.session.start(targets, background=args.background, **options), view
        except BaseException:
            discard(view)
            raise

    def _follow(self, run: Any, view: Any, args: Any) -> None:
        """Show the run until it ends, publish its results, then raise if a step failed.
        An interrupted run is published too (then the interrupt goes on, stopping the cell):
        status, history, logs and ``_dagger`` keep what it did."""
        try:
            watch(run, view, background=args.background)
        except KeyboardInterrupt:
            if args.background:  # (the cell stopped as it started the run: so does the run,
                stop(run)  #       as the interrupt's message says)
            raise
        finally:
            if not args.background:
                self.session.publish(run)
                if not run.done:  # (an interrupt stopped waiting first: what it ends as)
                    self.session.publish_when_done(run)
        if _raises(args):
            self.session.raise_for_status(run, printed=_printed_whole(run, view))
        elif args.background and _failure_raises(args):
            number = _running_cell_number(self.shell)
            if number is not None:
                self.session.background_cells[run.id] = number

    @line_magic("dagger")
    @_usage_errors
    def dagger_line(self, line: str) -> Any:
        """Run and inspect the notebook's graph.

        Commands::

            %dagger run [NAMES ...] [--only-failed] [--tags A,B] [--max-concurrency N]
                        [--refresh | --skip-cache] [--cache-mode MODE] [--background]
                        [--no-raise] [--[no-]enable-retry] [--[no-]use-circuit-breaker]
                                                      run steps (all by default)
            %dagger status                            every step: its latest state
            %dagger history [--run RUN]               every run of the session (one run:
                                                      its steps, how each ended and why)
            %dagger logs NAME [--tail N] [--stream stdout|stderr]   its latest lines
            %dagger graph                             draw the graph, coloured by state
            %dagger plan                              what a run would do now
            %dagger cache [stats|list [NAME]|explain NAME]   (list: entries too)
            %dagger cache clear NAME | --older-than AGE | --all
                                                      remove entries (--all: every one)
            %dagger cache push|pull [URL]             copy entries to / from a store URL
                                                      (push --check: files there by content)
            %dagger services                          running service containers
            %dagger images [list|refresh [IMAGE ...]] tags pinned to digests (pin_images)
            %dagger save PATH.yml / %dagger load PATH.yml   YAML workflow file
            %dagger remove NAME                       take one step out of the graph
            %dagger reset                             forget the graph and results
            %dagger config [KEY | KEY=VALUE ...]      show (those named) or change settings

        Define steps with ``%%dagger NAME`` cells (see ``%%dagger?``).
        """
        typed = self.written_words("%dagger", line)
        words = split_words(line) if typed is None else typed
        if not words:
            raise UsageError(f"%dagger needs a command, one of {', '.join(_COMMANDS)} "
                             "(see %dagger?)")
        command, rest = words[0], shlex.join(words[1:])
        if command == "help" or asks_for_help(words[:1]):
            show_help(DaggerMagics.dagger_line)
            return None
        handler = _COMMANDS.get(command)
        if handler is None:
            raise UsageError(_unknown_command(command, words[1:]))
        if asks_for_help(words[1:]):  # (a command with no options of its own: them all)
            show_help(handler if hasattr(handler, "parser") else DaggerMagics.dagger_line)
            return None
        try:
            return handler(self, rest)
        except UsageError as exc:
            raise UsageError(self._hinted(str(exc), "%dagger", line, typed)) from None

    def written_words(self, magic: str, line: str) -> list[str] | None:
        """The words of the ``magic`` line as typed, each ``$name`` or ``{expr}`` in them
        then given its value whole: IPython writes a value into the line before the magic
        reads it, so a value with a quote in it lost it (``label = 'say "hi"'`` with
        ``--param label="$label"`` gave ``say hi``, silently) or split the line in two.
        ``magic``: ``%%dagger`` (a cell's line) or ``%dagger`` (a line magic's). None
        (the line as IPython expanded it) when the line typed is not known."""
        written = _line_as_written(self.shell, magic, line)
        if written is None:
            return None
        return _words_with_values(written, getattr(self.shell, "user_ns", {}))

    def _hinted(self, message: str, magic: str, line: str, typed: list[str] | None) -> str:
        """``message`` with the quoting hint when the magic's words were IPython's: read as
        typed (``typed``), each value was one word, and quoting it is no fix."""
        if typed is not None:
            return message
        return self._with_quoting_hint(message, magic, line)

    def _with_quoting_hint(self, message: str, magic: str, line: str) -> str:
        """``message`` of a parser that found extra words or an unclosed quote, plus how
        to quote the ``$name`` or ``{expr}`` of the line as written, if IPython's
        expansion of it made them (``--param who=$city`` with city = "New York":
        "unrecognized arguments: York"; title = "Q3's sales": "No closing quotation")."""
        if not any(said in message for said in _SPLIT_BY_A_VALUE):
            return message
        written = _line_as_written(self.shell, magic, line)
        namespace = getattr(self.shell, "user_ns", {})
        fix = None if written is None else _quoted_example(
            written, lambda word: _expanded(word, namespace))
        if fix is None:
            return message
        for said in (_QUOTE_IT, _ONE_WORD):  # (the value IPython wrote: its fix below)
            message = message.split(said)[0]
        return (f"{message.removesuffix(_CLOSE_THE_QUOTE)}; IPython wrote the value of "
                f"{fix[0]} into the line unquoted: quote it, as in {fix[1]}")

    def without_secrets(self, message: str, line: str = "") -> str:
        """``message`` with the value of every secret dagnb knows masked (``***``)."""
        namespace = getattr(self.shell, "user_ns", None)
        secrets = _secret_values(self.session, namespace, line)
        return Masker(secrets, words_below=MIN_LINE)(message) if secrets else message

    # -- commands --------------------------------------------------------------------



def _secret_values(session: Session, namespace: Mapping[str, Any] | None,
                   line: str) -> list[str]:
    """The values, as set now, of the secrets the notebook's steps declare (in the kernel,
    in its notebook file, on ``line``), of those runs of this process were given and
    dagnb's credentials, and of each variable named as a secret (``DB_PASSWORD``),
    declared or not (but for one under ``MIN_LINE`` characters: ``1``, ``dev``)."""
    names = {name for step in session.graph for name in step.secrets}
    names |= declared_secrets([("code", f"{MAGIC} {line}")])
    path = kernel_notebook_path(namespace)
    if path is not None:
        with contextlib.suppress(WorkflowError, OSError):  # (gone, mid-save: the rest)
            names |= declared_secrets(read_notebook(path))
    values = [os.environ[name] for name in sorted(names) if os.environ.get(name)]
    values += [value for name, value in os.environ.items()
               if named_as_secret(name) and len(value.strip()) >= MIN_LINE]
    return [*values, *known_secrets().values(), *settings().credential_secrets().values()]


@ma.magic_arguments("dagger run")
@ma.argument("names", nargs="*", help="Steps to run (with their upstream); all if none.")
@ma.argument("--only-failed", action="store_true",
             help="Steps %%dagger status shows failed, skipped or cancelled.")
@ma.argument("--tags", "--tag", metavar="A,B", help="Steps with these tags.")
@_run_options
def _cmd_run(self: DaggerMagics, rest: str) -> Text | None:
    _refuse_target_option(split_words(rest), "run")
    args = parse_line(_cmd_run, rest)
    if not (len(self.session.graph) or args.names or args.tags):  # (else a bare header)
        if args.cache_mode is not None:  # (a wrong option is said first, as with steps)
            check_cache_mode(args.cache_mode, "--cache-mode")
        return Text(NO_STEPS_YET)
    options: dict[str, Any] = {"only_failed": args.only_failed}
    if args.tags:
        options["tags"] = parse_names(args.tags)
    _say_changed_variables(self)
    return self._run(args.names or None, args, **options)


def _say_changed_variables(self: DaggerMagics) -> None:
    """The params the notebook's cells took from variables that now hold another value
    (a line each: the step runs, or is served, with the value of then)."""
    for said in changed_variables(self.session.param_variables, self.session.graph,
                                  self.shell.user_ns):
        print(said, flush=True)


def _say(line: str | None) -> None:
    if line is not None:
        print(line, flush=True)


def _running_cell_id(shell: Any) -> str | None:
    """The id of the notebook cell running, as the front end sent it (JupyterLab and
    Notebook 7 do; ipykernel passes it to IPython's run_cell), or None."""
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    cell_id = getattr(getattr(result, "info", None), "cell_id", None)
    return cell_id if isinstance(cell_id, str) and cell_id else None


def _running_cell_number(shell: Any) -> int | None:
    """The running cell's execution count (``In [N]``), which the front end records
    on the cell, or None."""
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    number = getattr(result, "execution_count", None)
    return number if isinstance(number, int) else None


def _refuse_target_option(words: list[str], command: str) -> None:
    """``%dagger run --target x`` (``dagnb run NOTEBOOK --target``'s option): the magic
    takes the step names as arguments (the parser would suggest --tags)."""
    for index, word in enumerate(words):
        option, _, value = word.partition("=")
        if option in ("--target", "--targets", "--step", "--steps"):
            value = value or (words[index + 1] if index + 1 < len(words) else "NAME")
            raise UsageError(f"%dagger {command} has no {option} option; give the step name "
                             f"as an argument: %dagger {command} "
                             f"{' '.join(parse_names(value))}")


def _cmd_status(self: DaggerMagics, rest: str) -> Any:
    _no_arguments(rest, "status")
    return _shown(notebook_status(self.session))


@ma.magic_arguments("dagger history")
@ma.argument("--run", metavar="RUN", help="Only this run (its id, or its start or end): "
             "its steps, how each ended and why.")
def _cmd_history(self: DaggerMagics, rest: str) -> Any:
    words = split_words(rest)
    if words and not words[0].startswith("-"):  # (a run's id, given as the CLI's file is)
        raise UsageError(f"%dagger history takes no {words[0]!r}; for one run's steps, "
                         f"name it with --run: %dagger history --run {words[0]}")
    args = parse_line(_cmd_history, rest)
    if args.run is not None:
        return run_steps_frame(self.session, args.run)
    return _shown(history(self.session))


def _no_arguments(rest: str, command: str) -> None:
    """A command that takes nothing refuses what it was given, rather than ignore it."""
    if rest.strip():
        raise UsageError(f"%dagger {command} takes no arguments, got {rest!r}; write "
                         f"%dagger {command} alone (see %dagger?)")


def _shown(answer: Any) -> Any:
    """A sentence (a step that has not run: no run to read) shown as text; a DataFrame,
    empty or not, shows as itself."""
    return Text(answer) if isinstance(answer, str) else answer


@ma.magic_arguments("dagger logs")
@ma.argument("name", nargs="?", default=None, help="The step (none: its steps are listed).")
@ma.argument("--tail", type=int, metavar="N", help="Only the last N lines.")
@ma.argument("--stream", choices=["stdout", "stderr"], help="Only one stream.")
def _cmd_logs(self: DaggerMagics, rest: str) -> pd.DataFrame:
    args = parse_line(_cmd_logs, rest)
    if args.tail is not None and args.tail < 1:
        raise UsageError(f"--tail {args.tail}: --tail must be a positive number of lines; "
                         "write it like --tail 20")
    if args.name is None:
        raise UsageError(name_a_step(self.session))
    return _shown(notebook_logs(self.session, args.name, stream=args.stream, tail=args.tail))


def _cmd_graph(self: DaggerMagics, rest: str) -> Any:
    from dagnb.views.picture import DagView

    _no_arguments(rest, "graph")
    return DagView(self.session.graph, states=notebook_states(self.session))


@ma.magic_arguments("dagger plan")
@ma.argument("names", nargs="*", help="Steps to plan (with their upstream); all if none.")
@ma.argument("--tags", "--tag", metavar="A,B", help="Steps with these tags.")
def _cmd_plan(self: DaggerMagics, rest: str) -> pd.DataFrame:
    _refuse_target_option(split_words(rest), "plan")
    args = parse_line(_cmd_plan, rest)  # (options are not step names: --tag is --tags)
    targets = args.names or None
    if args.tags:
        targets = self.session.graph.select(targets, tags=parse_names(args.tags))
    planned = self.session.plan(targets)
    _say_changed_variables(self)
    if planned.empty:
        return shown(planned, empty=NO_STEPS_YET)
    planned["reason"] = [without_diff(str(reason), f"%dagger cache explain {step}")
                         for step, reason in zip(planned["step"], planned["reason"],
                                                 strict=True)]
    return shown(planned, empty=NO_STEPS_YET, left=True)  # (a reason whole, not cut at 50)


def _cmd_cache(self: DaggerMagics, rest: str) -> Any:
    words = split_words(rest) or ["stats"]
    store = store_for()
    action, names = words[0], words[1:]
    if action == "stats" and not names:  # (an empty cache: a sentence, as entries says)
        return shown(store.stats(), empty="no cache entries yet")
    if action in ("entries", "list") and len(names) <= 1:  # (list: dagnb cache's word)
        return _cache_entries(store, *names)
    if action == "clear":
        return _cache_clear(self, shlex.join(names))
    if action == "explain" and len(names) <= 1:
        if not names:
            raise UsageError("explain needs a step name: %dagger cache explain NAME")
        return Text("\n".join(self.session.explain(names[0])))
    check = action == "push" and "--check" in names  # (as dagnb cache push --check)
    if check:
        names = [name for name in names if name != "--check"]
    if action in ("push", "pull") and len(names) <= 1:
        done = sync(action, *names, check=check, command="%dagger cache")
        unanswered = done.unanswered_line()
        return Text(done.line(action) + ("" if unanswered is None else f"\n{unanswered}"))
    if action in _CLEAR_WORDS:
        raise UsageError(f"%dagger cache {action!r} is not a cache command; did you mean "
                         f"%dagger cache {shlex.join(['clear', *(names or ['NAME'])])}?")
    raise UsageError(f"%dagger cache {rest!r} is not a cache command; use stats, list "
                     "[NAME], clear NAME|--older-than AGE|--all, explain NAME, push [URL] or "
                     "pull [URL]")


_CACHE_ACTIONS = ("stats", "list", "entries", "clear", "explain", "push", "pull")
_CLEAR_WORDS = ("remove", "rm", "delete", "del", "drop", "purge", "prune")  # (clear's)


def _cache_entries(store: Store, step: str | None = None) -> pd.DataFrame:
    """The store's entries, their times shown as ``%dagger history`` and ``dagnb cache
    list`` show them: local clock times without the offset (the frame keeps it)."""
    frame = store.entries(step)
    if step is None or not frame.empty:
        return shown(frame, empty="no cache entries")
    held = list(store.stats().index)  # (a step of another graph may hold some: kept)
    others = f"; it holds entries of {', '.join(held)}" if held else ""
    return shown(frame, empty=f"no cache entries of step {step!r}{others}")


@ma.magic_arguments("dagger cache clear")
@ma.argument("name", nargs="?", help="The step whose entries go.")
@ma.argument("--step", metavar="NAME", help="The same, as dagnb cache clear spells it.")
@ma.argument("--older-than", metavar="AGE", help="Only entries created more than AGE ago.")
@ma.argument("--all", action="store_true", help="Every entry (needed when alone).")
def _cache_clear(self: DaggerMagics, rest: str) -> Text:
    """``%dagger cache clear``, by ``dagnb cache clear``'s rules (dagnb.cache.clearing)."""
    args = parse_line(_cache_clear, rest)
    if args.name is not None and args.step is not None:
        raise UsageError(f"%dagger cache clear {rest}: name the step once, as NAME or "
                         "--step NAME")
    step = args.name if args.step is None else args.step
    older = check_clear_options(step, args.older_than, args.all)
    step = check_clear_scope(  # (a Memory function's plain name: its full one)
        store_for(), "%dagger cache clear", step, older, args.all, name_a_step="name a step",
        known=self.session.graph.names, step_given_as="step" if args.step is None else "--step",
        plain_names=True)
    removed = self.session.clear_cache(step, older)
    noun = "cache entry" if removed == 1 else "cache entries"
    # (of a store URL, as dagnb cache clear says: the tier alone went, the store serves on)
    kept = kept_in_store(None, _kept_for_others(step))
    return Text(f"removed {removed} {noun}" + (f" of {step!r}" if step else "")
                + (f" created more than {args.older_than} ago" if older is not None else "")
                + (f" from {store_for().location}{kept}" if kept else ""))


def _kept_for_others(step: str | None) -> str:
    """What becomes of a store's entries a clear in the kernel left there: the kernel's
    store fetches none it cleared (its steps run again and replace them there), where
    another process (another machine's, this kernel restarted) downloads them."""
    which = "their steps" if step is None else f"step {step!r}"
    return (", which other machines and a restarted kernel download again; this kernel "
            f"runs {which} again and replaces them there")


def _cmd_images(self: DaggerMagics, rest: str) -> Text:
    """``%dagger images [list]`` / ``%dagger images refresh [IMAGE ...]`` (pin_images)."""
    words = split_words(rest) or ["list"]
    action, names = words[0], words[1:]
    if action == "refresh":
        from dagnb.executors.dagger.images import refresh
        from dagnb.executors.loop import run_sync

        return Text("\n".join(run_sync(refresh(images=names))))  # (none: it says so)
    if action == "list" and not names:
        from dagnb.cache.images import ImagePins

        return Text(ImagePins(store_for().location).listing())
    raise UsageError(f"%dagger images {rest!r} is not an images command; use list or "
                     "refresh [IMAGE ...]")


def _cmd_services(self: DaggerMagics, rest: str) -> pd.DataFrame:
    _no_arguments(rest, "services")
    return shown(services.running(), empty="no service started in this session "
                 "(dagnb.services.start(name, image, ports) starts one in Dagger)")


def _one_path(rest: str, command: str) -> str:
    path = _one_word(rest, command, "pipeline.yml", what="path")
    if not path.strip():
        raise UsageError(f"%dagger {command} takes a file's path, such as %dagger {command} "
                         "pipeline.yml; got an empty one")
    return path


def _one_word(rest: str, command: str, example: str, what: str = "step name") -> str:
    words = split_words(rest)
    if len(words) != 1:
        raise UsageError(f"%dagger {command} takes one {what}, such as %dagger {command} "
                         f"{example}; got {rest!r}")
    return words[0]


def _cmd_save(self: DaggerMagics, rest: str) -> Text:
    path = _one_path(rest, "save")
    try:
        self.session.graph.to_yaml(path)
    except SeveralPublishers as exc:  # (a step a renamed cell left, often)
        raise WorkflowError(f"{exc}{self.session.removal_fix(exc.publishers)}") from None
    except UndefinedName as exc:  # (a restart: the cell defining it has not run yet)
        raise WorkflowError(f"cannot save {path}: "
                            f"{_not_run_yet(exc, self.session.namespace)}") from None
    count = len(self.session.graph)
    return Text(f"saved {count} step{'' if count == 1 else 's'} to {path}")


def _not_run_yet(exc: UndefinedName, namespace: Mapping[str, Any]) -> str:
    """A run's words for a step reading a name this kernel lacks: the cell to run first."""
    notebook = kernel_notebook_path(namespace)
    index = defining_cell(notebook, exc.name) if notebook is not None else None
    place = f"cell {index + 1} of {notebook.name}" if index is not None else None
    return unready_message(exc.step, [(exc.name, place)])


def _cmd_load(self: DaggerMagics, rest: str) -> Text:
    path = _one_path(rest, "load")
    if Path(path).suffix.lower() == ".ipynb":  # (it said: unknown workflow key 'cells')
        raise UsageError(f"%dagger load {path}: a notebook is no workflow file; %dagger "
                         "load reads a YAML one (%dagger save writes it), and a notebook "
                         f"runs as one with dagnb run {path} in a terminal")
    graph = load(path)
    dropped = [name for name in self.session.graph.names if name not in graph]
    cancelled = self.session.reset()
    self.session.graph = graph
    count = len(graph)
    return Text(f"loaded {count} step{'' if count == 1 else 's'} from {path}: "
                f"{', '.join(graph.names)}{_replaced(dropped)}{_cancelled_runs(cancelled)}")


def _replaced(dropped: list[str]) -> str:
    """What a load adds when the graph it replaces had steps the file has not: they were
    taken out with no word (the notebook's cells, a save of it, wrote one step)."""
    if not dropped:
        return ""
    return (f"; it replaces the notebook's graph, whose {listed(dropped)} "
            f"{'is' if len(dropped) == 1 else 'are'} out of it now (run a cell to define "
            "its step again)")


def _cmd_remove(self: DaggerMagics, rest: str) -> Text:
    name = _one_word(rest, "remove", "NAME")
    self.session.remove(name)
    count = len(self.session.graph)
    return Text(f"removed step {name!r}; the graph has {count} step{'' if count == 1 else 's'}")


def _cmd_reset(self: DaggerMagics, rest: str) -> Text:
    _no_arguments(rest, "reset")
    cancelled = self.session.reset()
    forget_secrets()  # (a dagnb.Memory call then keeps no earlier run's secret out)
    return Text("the notebook's graph is empty again, and the secrets its runs were "
                f"given are forgotten{_cancelled_runs(cancelled)}")


def _cancelled_runs(count: int) -> str:
    """What a reset adds for the background runs it cancelled (of the graph it forgot)."""
    if not count:
        return ""
    return f"; {count} background run{'' if count == 1 else 's'} of the old graph cancelled"


def _cmd_config(self: DaggerMagics, rest: str) -> pd.DataFrame:
    """Every setting, or those named (``%dagger config max_retries``), after the
    ``KEY=VALUE`` changes given beside them are made; changes alone show what they set."""
    words = split_words(rest)
    named = [word for word in words if "=" not in word]
    values = dataclasses.asdict(settings())
    if named:
        known_keys(named, list(values), "%dagger config", UsageError, noun="setting")
    changes = parse_assignments([w for w in words if "=" in w], "%dagger config",
                                as_json=True)
    if changes:
        configured_by("%dagger config", changes)
        values = dataclasses.asdict(settings())
    shown = named or [key for key in values if key in _changed_keys(changes)]  # (a change:
    keys = [key for key in values if not shown or key in shown]  # those it made, not all)
    return pd.DataFrame({"setting": keys, "value": [repr(values[key]) for key in keys],
                         "source": _sources(keys)})


def _sources(keys: list[str]) -> list[str]:
    """Where each setting's value came from, as ``dagnb config show`` says it (a file,
    a variable, the default); one set in this kernel, by ``%dagger config`` or
    ``dagnb.configure()``, says so: "argument" named no argument the user gave."""
    from dagnb.config import ARGUMENT, DEFAULT, origins, readable_source

    where = origins()
    return ["set in this kernel" if where.get(key) == ARGUMENT
            else readable_source(where.get(key, DEFAULT)) for key in keys]


def _changed_keys(changes: Mapping[str, Any]) -> set[str]:
    """The settings ``changes`` set, by their names in the table (``workflow_defaults``
    holds some: each of its keys is a setting of its own there)."""
    from dagnb.config.aliases import DEFAULTS_ALIASES

    keys = set(changes)
    nested = changes.get("workflow_defaults")
    if isinstance(nested, Mapping):
        keys |= {DEFAULTS_ALIASES.get(key, key) for key in nested}
    return keys


def _unknown_command(command: str, rest: list[str]) -> str:
    """The refusal of ``%dagger COMMAND``, with the cache command of that name if there
    is one (``%dagger explain load``: ``%dagger cache explain load``)."""
    said = f"unknown %dagger command {command!r}"
    if command in _CACHE_ACTIONS:
        return f"{said}; did you mean %dagger cache {shlex.join([command, *rest])}?"
    meant = _command_meant(command)
    if meant is not None:
        return f"{said}; did you mean %dagger {shlex.join([meant, *rest])}?"
    return f"{said}; use one of {', '.join(sorted(_COMMANDS))} (see %dagger?)"


def _command_meant(command: str) -> str | None:
    """The command ``command`` is a start of (``hist``, ``stat``: one alone) or a typo
    of (``histroy``, ``cach``), if one is close."""
    started = [name for name in _COMMANDS if name.startswith(command.casefold())]
    if len(command) >= 3 and len(started) == 1:
        return started[0]
    return checks.closest(command, _COMMANDS, cutoff=0.75)


# (in %dagger?'s order: a bare %dagger lists them so)
_COMMANDS: dict[str, Callable[[DaggerMagics, str], Any]] = {
    "run": _cmd_run, "status": _cmd_status, "history": _cmd_history, "logs": _cmd_logs,
    "graph": _cmd_graph, "plan": _cmd_plan, "cache": _cmd_cache, "services": _cmd_services,
    "images": _cmd_images, "save": _cmd_save, "load": _cmd_load, "remove": _cmd_remove,
    "reset": _cmd_reset, "config": _cmd_config,
}


# -- a notebook's cells read as steps (dagnb graph/validate/run NOTEBOOK, kernel start) --


def step_from_cell(text: str, namespace: Mapping[str, Any] | None = None) -> Step:
    """The Step a ``%%dagger`` cell's text defines (its first line holds the options)."""
    return cell_definition(text, namespace)[0]


def cell_definition(text: str, namespace: Mapping[str, Any] | None,
                    defined: Collection[str] = ()) -> tuple[Step, tuple[str, ...]]:
    """The cell's Step and its ``--outputs`` (the magic's own parser and codec);
    ``defined``: names the cells before it bind (see :func:`adopt_notebook`)."""
    first, _, body = text.partition("\n")
    if not first.startswith(MAGIC):
        raise ValueError(f"a %%dagger cell starts with '%%dagger NAME', not {first!r}")
    args = parse_line(DaggerMagics.dagger_cell, first[len(MAGIC):])
    return (step_from_options(args.name, body, args, namespace, defined),
            parse_names(args.outputs))


def adopt_notebook(session: Any, path: str | Path, namespace: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, list[int]], list[str]]:
    """Define in ``session`` each step the notebook's cells define, as after running them.

    Used when a kernel starts (or restarts) and knows its notebook: the graph is whole
    before any cell runs, so a downstream cell run first finds its upstream steps (and
    their cached results). A cell that does not parse is passed over, with one line
    among the problems returned beside the names defined. A ``--python`` cell takes a
    variable it reads before assigning it (``rows = [r for r in rows if r]``) from the
    notebook when a cell before it binds it, as the cells run in order do. The names
    defined come with the numbers of the cells defining them (a later one replaces).
    """
    defined: dict[str, list[int]] = {}
    problems: list[str] = []
    try:
        cells = read_notebook(path)
    except WorkflowError:
        if Path(path).suffix != ".py":
            raise
        return [], []  # a plain script, not a notebook: its cells define steps as they run
    steps = {cell.index: cell for cell in dagger_cells(cells)}
    bound: set[str] = set()  # what the cells so far bind
    for index, (kind, source) in enumerate(cells):
        cell = steps.get(index)
        if cell is None:
            bound |= binds_at_top(kind, source)
            continue
        try:
            line = _line_as_run(cell.line)
            step, outputs = cell_definition(f"{line}\n{cell.body}", namespace, bound)
            session.define(step, outputs)
        except (DagnbError, UsageError) as exc:
            problems.append(f"cell {cell.index + 1} ({cell.line.strip()!r}): {exc}")
        else:
            defined.setdefault(step.name, []).append(cell.index + 1)
            bound |= set(outputs)
    return defined, problems


_EXPANDER = DollarFormatter()  # what IPython's var_expand uses on a magic's line


def _line_as_run(line: str) -> str:
    """A ``%%dagger`` line as the magic receives it when its cell runs: IPython expands
    ``$name`` and ``{expr}`` in it with the notebook's variables (``$$`` is a ``$``).

    A line that reads the notebook's variables (``--param who=$customer``) is refused:
    read from the file before the cell runs, the step would take ``'$customer'`` as its
    value (computed, cached and passed downstream under that key). A line whose ``{...}``
    is no expression (JSON: ``--param cfg={"a": 1}``) IPython leaves as it is.
    """
    fields = line_fields(line)
    if fields is None:
        return line  # IPython's expansion fails whatever the notebook holds: left as is
    if fields:
        raise InvalidStepError(
            f"its line reads notebook variables ({', '.join(fields)}), known only when "
            "the cell runs; run the cell to define the step")
    try:
        return _EXPANDER.vformat(line, args=[], kwargs={})
    except Exception:  # as var_expand: a line that does not format is left as it is
        return line


def line_fields(line: str) -> list[str] | None:
    """The expressions IPython expands in a ``%%dagger`` line (``$customer``, ``{n * 2}``):
    they read notebook variables when the cell runs. None when the line does not expand
    (IPython then leaves it as it is)."""
    try:
        fields = [f for _, f, _, _ in _EXPANDER.parse(line) if f is not None]
        for field in fields:
            compile(field, "<line>", "eval")
    except (ValueError, SyntaxError):
        return None
    return fields


def _words_with_values(written: str, namespace: Mapping[str, Any]) -> list[str] | None:
    """The words of the line ``written``, split as the shell splits them, and then its
    fields given their values as IPython evaluates them (``$$`` a ``$``), each value
    whole in its word, whatever it holds; None where IPython left the line as it is
    (a field that fails) or it does not split (an unclosed quote as typed)."""
    try:
        parts = list(_EXPANDER.parse(written))
    except ValueError:
        return None
    template: list[str] = []
    values: list[str] = []
    for literal, field, spec, conversion in parts:
        template.append(literal)
        if field is None:
            continue
        try:  # (as IPython's FullEvalFormatter.vformat: the spec is part of the expression)
            value = eval(f"{field}:{spec}" if spec else field, dict(namespace))
            text = _EXPANDER.format_field(_EXPANDER.convert_field(value, conversion), "")
        except Exception:  # (the user's expression: anything can happen)
            return None
        template.append(f"\0{len(values)}\0")  # (a hole no shell quoting touches)
        values.append(text)
    try:
        words = shlex.split("".join(template))
    except ValueError:
        return None
    return [_HOLE.sub(lambda found: values[int(found[1])], word) for word in words]


_HOLE = re.compile("\0(\\d+)\0")


def _line_as_written(shell: Any, magic: str, line: str) -> str | None:
    """The options of the cell's ``magic`` line as typed (IPython keeps the cell's raw
    text in its history before running it), if they expand to ``line``; else None.
    Of several such lines in the cell (two ``%dagger`` lines), the one whose values as
    they are now expand it to ``line``: the one running, or one that reads the same."""
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    if not history:
        return None
    namespace = getattr(shell, "user_ns", {})
    for written in _magic_options(history[-1], magic):
        if (_expands_to(written, line)  # (first: no expression of another line evaluated)
                and _expanded(written, namespace).strip() == line.strip()):
            return written
    return None


def _magic_options(source: str, magic: str) -> list[str]:
    """The options of each line of ``source`` that calls ``magic``, as typed: at its start
    (indented in a block too) or assigned (``frame = %dagger logs s``), as IPython reads
    a line magic; a ``%dagger`` line is no ``%%dagger`` one."""
    call = re.compile(rf"\s*(?:[^%=]+=\s*)?{re.escape(magic)}\s+(.*)")
    return [found[1].strip() for text in source.splitlines() if (found := call.match(text))]


def _expands_to(written: str, line: str) -> bool:
    """Whether ``written`` expands fields and its text around them is in ``line``, in
    order (what IPython's expansion of it gave)."""
    try:
        parts = list(_EXPANDER.parse(written))
    except ValueError:
        return False
    if all(field is None for _, field, _, _ in parts):
        return False
    at = 0
    for literal, *_ in parts:
        found = line.find(literal, at)
        if found < 0:
            return False
        at = found + len(literal)
    return True


def _expanded(word: str, namespace: Mapping[str, Any]) -> str:
    """``word`` as IPython expanded it with the notebook's variables; as it is if that
    fails (IPython then left it so)."""
    try:
        return _EXPANDER.vformat(word, args=[], kwargs=dict(namespace))  # (a copy, as
        #                                                  IPython's: eval adds builtins)
    except Exception:  # (the user's expression: anything can happen)
        return word


def _quoted_example(written: str, expand: Callable[[str], str] = lambda word: word
                    ) -> tuple[str, str] | None:
    """The word of ``written`` that IPython expands into several (``who=$city`` with
    city = "New York": by ``expand``), else the first it expands, and the same quoted,
    with the option before it (``--param who="$city"``); None if none is one word."""
    words = written.split()
    expanding = [i for i, word in enumerate(words) if line_fields(word)]
    if not expanding:
        return None
    split = [i for i in expanding if _breaks_words(expand(words[i]))]
    index = (split or expanding)[0]
    word = words[index]
    key, equals, value = word.partition("=")
    shown, quoted = ((value, f'{key}="{value}"') if equals and line_fields(value)
                     else (word, f'"{word}"'))
    before = words[index - 1] if index else ""
    if before.startswith("--") and "=" not in before:
        quoted = f"{before} {quoted}"
    return shown, quoted


def _breaks_words(text: str) -> bool:
    """Whether ``text``, unquoted in a line, is not one shell word (a space, a quote)."""
    return len(text.split()) > 1 or any(mark in text for mark in "'\"\\")


def graph_from_cells(cells: Iterable[DaggerCell], name: str = "notebook",
                     namespace: Mapping[str, Any] | None = None) -> Graph:
    """The graph the cells define, in order; a later cell of the same name replaces one."""
    return graph_of(cell_definitions(cells, namespace), name)


def cell_definitions(cells: Iterable[DaggerCell], namespace: Mapping[str, Any] | None = None
                     ) -> dict[int, tuple[Step, tuple[str, ...]]]:
    """Each cell's Step and ``--outputs`` (:func:`cell_definition`) by the cell's index;
    a cell refused is named in the error."""
    found = {}
    for cell in cells:
        where = _cell_named(cell)
        try:
            found[cell.index] = cell_definition(f"{cell.line}\n{cell.body}", namespace)
        except DagnbError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        except UsageError as exc:  # the magic's parser refusing an option
            raise WorkflowError(f"{where}: {exc}") from None
    return found


def graph_of(definitions: Mapping[int, tuple[Step, tuple[str, ...]]],
             name: str = "notebook") -> Graph:
    """The graph of :func:`cell_definitions`' steps, in order; a later cell of the same
    name replaces one."""
    graph = Graph(name)
    for step, _ in definitions.values():
        graph.replace(step)
    return graph


def _cell_named(cell: DaggerCell) -> str:
    """``cell 3 ('%%dagger fit --python')``: how an error names the cell."""
    return f"cell {cell.index + 1} ({cell.line.strip()!r})"


def notebook_graph(path: str | Path, *, in_order: bool = False, lint: bool = False) -> Graph:
    """The graph a notebook file's ``%%dagger`` cells define, checked as ``dagnb graph``,
    ``validate`` and ``run`` check it before any kernel starts: each cell's line and code,
    each ``--needs`` naming a step, ``%load_ext dagnb`` before the first cell (and a
    warning for a step two cells define differently, with ``lint``: ``dagnb validate``'s,
    not graph's or run's, as the quickstart re-runs an edited cell so). ``in_order``
    (``dagnb run``): each
    need is defined by a cell before, as the cells run top to bottom in a kernel that does
    not know its notebook."""
    cells = read_notebook(path)
    found = dagger_cells(cells)
    steps = _static_steps(found)
    if lint:
        _warn_redefinitions(found, steps)
    # (a run of a notebook that also makes steps otherwise, `%dagger load wf.yml`, a
    # builder, may need those: its needs are checked as its cells run, as before)
    checked = not (in_order and _steps_made_otherwise(cells))
    if checked:
        _check_needs(found, steps, in_order)
    refuse_unloaded_magic(cells, Path(path).name)
    graph = Graph(Path(path).stem)
    for step in steps.values():
        graph.replace(step)
    if checked:
        graph.validate()
    return graph


# `%dagger load wf.yml` (or IPython's call of it), `dagnb.builder()`: steps no
# `%%dagger` cell defines
_MAKES_STEPS = re.compile(
    r"%dagger\s+load\b|run_line_magic\(\s*['\"]dagger['\"]\s*,\s*['\"]\s*load\b|\bbuilder\(")


def _steps_made_otherwise(cells: Iterable[tuple[str, str]]) -> bool:
    return any(kind == "code" and _MAKES_STEPS.search(source) for kind, source in cells)


def _static_steps(found: list[DaggerCell]) -> dict[int, Step]:
    """Each cell's step by its index, refused in one line naming the cell. A cell whose
    line reads notebook variables (``--timeout $t``, ``--needs $up``) is checked when it
    runs: when it does not parse as written, or needs such a name, it stands for its step
    here, needing nothing (none, when the name itself is one)."""
    steps = {}
    for cell in found:
        if not line_fields(cell.line):
            steps[cell.index] = cell_definitions([cell])[cell.index][0]
            continue
        try:
            step = cell_definitions([cell])[cell.index][0]
        except DagnbError:
            step = None
        if step is None or any(line_fields(need) for need in step.needs):
            try:
                step = Step(cell.name, run=":")
            except DagnbError:
                continue
        steps[cell.index] = step
    return steps


def _warn_redefinitions(found: list[DaggerCell], steps: Mapping[int, Step]) -> None:
    """Warn of two cells defining one step differently, which a copied cell not renamed
    does: the later replaces the earlier, which graph and validate then do not show. Not
    refused: a notebook may show an edited cell run again so (the quickstart tutorial
    does); the same cell twice (a cached re-run) is one definition."""
    first: dict[str, DaggerCell] = {}
    for cell in found:
        if cell.index not in steps:
            continue
        name = steps[cell.index].name
        earlier = first.setdefault(name, cell)
        if _cell_text(earlier) != _cell_text(cell):
            checks.warn_user(
                f"step {name!r} is defined by cell {earlier.index + 1} and again, "
                f"differently, by {_cell_named(cell)}, which replaces it from there on; "
                "rename one of them if they are two steps")


def _cell_text(cell: DaggerCell) -> tuple[str, str]:
    return cell.line.strip(), cell.body.strip()


def _check_needs(found: list[DaggerCell], steps: Mapping[int, Step], in_order: bool) -> None:
    """Refuse a ``--needs`` that no cell defines (naming the cell), and with ``in_order``
    one only a later cell defines."""
    defined_by: dict[str, int] = {}
    for index, step in steps.items():
        defined_by.setdefault(step.name, index)
    for cell in found:
        step = steps.get(cell.index)
        for need in step.needs if step is not None else ():
            if need not in defined_by:
                raise MissingDependencyError(
                    f"{_cell_named(cell)}: {unknown_need_message(step.name, need, defined_by)}")
            if in_order and defined_by[need] > cell.index:
                raise MissingDependencyError(
                    f"{_cell_named(cell)}: step {step.name!r} needs {need!r}, which only "
                    f"cell {defined_by[need] + 1}, after it, defines; move that cell above "
                    "it (dagnb run runs the cells in order, defining each step as it goes)")



ONLY_STEPS_VARIABLE = "DAGNB_ONLY_STEPS"  # set by `dagnb run NOTEBOOK --target`


def _selected(name: str) -> bool:
    """False for a step that ``dagnb run NOTEBOOK --target`` does not need (it is defined only)."""
    only = os.environ.get(ONLY_STEPS_VARIABLE)
    return only is None or name in only.split(",")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dagnb``: register the magics; read the notebook's steps when it is known.

    A kernel that knows its notebook file (JupyterLab, VS Code: see
    :func:`dagnb.notebook.document.kernel_notebook_path`) starts with the graph its
    ``%%dagger`` cells define, so after a restart any cell can run first.

    A relative cache folder (the default ``.dagnb_cache``) is pinned to the notebook's
    folder: the file's when the kernel knows it, else the one the kernel started in
    (Jupyter, nbclient and ``dagnb run`` start it there); a later ``%cd`` does not move it.
    """
    path = kernel_notebook_path(ipython.user_ns)
    pin_relative_folder(path.parent if path is not None else Path.cwd())
    magics = DaggerMagics(ipython)
    ipython.register_magics(magics)
    displays.install(ipython)  # what a --python step displays is its own output
    # (a cell's partial line held back while a run masks goes out in that cell)
    ipython.events.register("post_execute", release_held)
    warning_lines.install()  # (a warning's line: the %%dagger line, not IPython's call)
    quiet_shutdown_race()  # (a traceback of ipykernel's own on a stopped `dagnb run`)
    if path is not None and not len(magics.session.graph):
        defined, problems = adopt_notebook(magics.session, path, ipython.user_ns)
        if defined or problems:
            print(_adopted_note(path, defined, problems))


def _adopted_note(path: Path, defined: Mapping[str, list[int]], problems: list[str]) -> str:
    """The line a kernel that read its notebook's steps prints: how many, from the file
    saved when (after a restart, the cells on screen may have been edited since), which
    cells define one step twice (a copied cell: the later replaces it, silently before),
    and the cells passed over."""
    name = f"{path.name} ({_saved_at(path)}; unsaved edits are not seen)"
    noun = "step" if len(defined) == 1 else "steps"
    twice = [f"step {step!r} is defined in cells {', '.join(map(str, cells[:-1]))} and "
             f"{cells[-1]}: the last one counts" for step, cells in defined.items()
             if len(cells) > 1]
    return (f"dagnb: {len(defined)} {noun} read from {name}"
            + "".join(f"; {note}" for note in twice)
            + "".join(f"; skipped {problem}" for problem in problems))


def _saved_at(path: Path) -> str:
    """``saved 14:02:11`` (today), ``saved 2024-05-01 14:02`` (before): the file's time."""
    try:
        saved = time.localtime(path.stat().st_mtime)
    except OSError:  # (gone since it was read)
        return "saved when read"
    if saved[:3] == time.localtime()[:3]:
        return time.strftime("saved %H:%M:%S", saved)
    return time.strftime("saved %Y-%m-%d %H:%M", saved)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext dagnb``: displays go straight to the publisher again."""
    displays.uninstall(ipython)
    warning_lines.uninstall()
    if release_held in ipython.events.callbacks["post_execute"]:
        ipython.events.unregister("post_execute", release_held)
