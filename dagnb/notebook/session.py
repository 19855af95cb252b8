"""The notebook's session: one graph per kernel, its last run, results in the namespace.

``%%dagger`` cells and the graph builder add steps to the same :class:`Session` graph,
all or nothing: a step that cannot join the graph (an unknown need, a cycle) is refused
and leaves the graph as it was, so one bad cell cannot break the cells after it;
runs use the process-wide settings (``dagnb.configure`` or ``%dagger config``), hence one
cache store and one executor per kernel. After a run, each step's result is in the
user namespace as ``_dagger[NAME]`` (a shell step's is the Path of its output folder),
and the ``--outputs`` variables of ``--python`` cells under their own names. ``_dagger``
is dagnb's: set to anything but a dict, it is a new dict at the next publish, with a
warning saying so.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import threading
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.cache import session_store, store_for
from dagnb.checks import did_you_mean, listed, warn_user
from dagnb.config import context
from dagnb.errors import (
    CycleError,
    DagnbError,
    GraphError,
    MissingDependencyError,
    RunFailed,
    StepFailed,
    WorkflowError,
)
from dagnb.model.graph import Graph
from dagnb.model.step import Step
from dagnb.notebook import stop_button
from dagnb.notebook.cells import RESULTS_NAME, kept_names, kept_values, parse_names, unkept
from dagnb.notebook.document import (
    DaggerCell,
    dagger_cells,
    kernel_notebook_path,
    line_values,
    read_notebook,
)
from dagnb.notebook.unready import name_error_note, other_thread_note, unready_line
from dagnb.notebook.widgets import stop
from dagnb.runtime.events import TERMINAL_STATES, Event
from dagnb.runtime.history import unfinished
from dagnb.runtime.plan import explain, plan
from dagnb.runtime.prepare import start_background
from dagnb.runtime.reads import AS_IT_IS, PublishedReads
from dagnb.runtime.run import Run
from dagnb.workflows.published import notebook_reads

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RESULTS_NAME", "Session", "get_session", "notebook_summary"]

_RECENT_IMAGES = 10
_UNSET = object()


class Session:
    """One kernel's graph, its last run, and where results are published.

    Parameters
    ----------
    namespace
        The user namespace results go to (``shell.user_ns``); a fresh dict if None.
    name
        The graph's name.
    """

    def __init__(self, namespace: MutableMapping[str, Any] | None = None,
                 name: str = "notebook") -> None:
        self.namespace = namespace if namespace is not None else {}
        self.graph = Graph(name)
        self.outputs: dict[str, tuple[str, ...]] = {}  # --outputs of --python cells
        # step -> the id of the notebook cell that defined it (as the front end gives it),
        # the step defined last from a cell last: a renamed cell leaves its old step here
        self._cells: dict[str, str] = {}
        self.recent_images: list[str] = []
        self.latest: dict[str, dict[str, Any]] = {}  # step -> its row in the latest run
        self.step_runs: dict[str, Run] = {}  # step -> the latest run that had it (its logs)
        self.ran: dict[str, tuple[dict[str, Any], Run]] = {}  # step -> its row, run: ran to an end
        self.runs: list[dict[str, Any]] = []  # one summary row per run of the session
        self.live: dict[str, Run] = {}  # run id -> a background run not published yet
        self._started: dict[str, int] = {}  # run id -> its place in order (newest wins)
        # step -> the place of the newest run started with it, and the step's --outputs
        # then: only that run publishes the step's result, under those names
        self._claims: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._counter = itertools.count()
        # variable -> the step whose result it was last published from, and the value
        # (the notebook's variable is a step's while it holds that value, the user's once
        # re-bound), and step -> the cache entry that result came from
        self._published: dict[str, tuple[str, Any]] = {}
        self._published_entries: dict[str, str] = {}
        # step -> the run that last put back (or left) the notebook variables its cell
        # changes in place and reads, the entry they are of and the objects it left
        self._kept: dict[str, tuple[str, str, dict[str, Any]]] = {}
        # run id -> the steps it was asked for by name (a cell's own): published from the
        # cache whatever the notebook holds, as a cell run again gives its value anew
        self._asked: dict[str, frozenset[str]] = {}
        # ids of the background runs a reset cancelled: their end publishes nothing into
        # the graph and results that came after them
        self._forgotten: set[str] = set()
        # run id -> the number (execution count) of the cell that started it in the
        # background and would have raised for its failure in the foreground: `dagnb run
        # NOTEBOOK` names that cell as it names a foreground cell that failed
        self.background_cells: dict[str, int] = {}
        # step -> its params its cell took from notebook variables: param -> (variable,
        # its value then), said by %dagger run and plan once the variable changes
        self.param_variables: dict[str, dict[str, tuple[str, str]]] = {}

    @property
    def last_run(self) -> Run | None:
        """The most recent run of the session graph."""
        return self.graph.last_run

    def define(self, step: Step, outputs: Iterable[str] = (), cell: str | None = None) -> Step:
        """Add ``step`` to the graph, or replace the step of that name; ``cell``: the id
        of the notebook cell defining it, if known.

        All or nothing: a step whose needs name no step (the message says which cell
        to run first), that closes a cycle or whose function does not fit its needs is
        refused with a :class:`~dagnb.GraphError`, and the graph stays as it was.
        """
        previous = self._definition(step.name)
        self._put(step, tuple(outputs), cell)
        try:
            self._check(step)
        except DagnbError:
            self._restore(step.name, previous)
            raise
        self._remember_image(step)
        return step

    @contextlib.contextmanager
    def defining(self, step: Step, outputs: Iterable[str] = (),
                 cell: str | None = None) -> Iterator[Step]:
        """Define ``step`` for the ``with`` block; a DagnbError raised in the block (a run
        that could not start) undoes the definition too, so a refused cell changes nothing."""
        previous = self._definition(step.name)
        self.define(step, outputs, cell)
        try:
            yield step
        except DagnbError:
            self._restore(step.name, previous)
            raise

    def remove(self, name: str) -> Step:
        """Take one step out of the graph; refused while other steps need it."""
        needing = [s.name for s in self.graph if name in s.needs]
        if needing:
            raise GraphError(f"step {name!r} is needed by {', '.join(map(repr, needing))}; "
                             "remove or redefine those steps first")
        step = self.graph.remove(name)
        self.outputs.pop(name, None)
        self._cells.pop(name, None)
        self._results().pop(name, None)
        self._forget_runs_of(name)
        return step

    def _forget_runs_of(self, name: str) -> None:
        """A removed step's latest row and logs go with it: a step defined again under
        its name is ``never run``, not the removed one's ``failed`` (the history keeps
        the runs)."""
        self.latest.pop(name, None)
        self.step_runs.pop(name, None)
        self.ran.pop(name, None)

    def _definition(self, name: str) -> tuple[Step, tuple[str, ...], str | None] | None:
        if name not in self.graph:
            return None
        return self.graph[name], self.outputs.get(name, ()), self._cells.get(name)

    def _put(self, step: Step, outputs: tuple[str, ...], cell: str | None) -> None:
        self.graph.replace(step)
        self.outputs[step.name] = outputs
        self._cells.pop(step.name, None)  # (last: the step its cell defined last)
        if cell:
            self._cells[step.name] = cell

    def _restore(self, name: str,
                 previous: tuple[Step, tuple[str, ...], str | None] | None) -> None:
        if previous is not None:
            self._put(*previous)
            return
        self.graph.remove(name)
        self.outputs.pop(name, None)
        self._cells.pop(name, None)

    def replaced_from_another_cell(self, name: str, cell: str | None) -> str | None:
        """The line saying cell ``cell``'s step ``name`` replaces the one another cell
        defined (a cell copied and not renamed; a renamed one taking another's name):
        it did so silently, the other cell's command and needs gone. None otherwise."""
        other = self._cells.get(name)
        if cell is None or other is None or other == cell or name not in self.graph:
            return None
        return (f"dagnb: step {name!r} was defined by another cell; this cell's definition "
                "replaces it (rename one of them if both are meant)")

    def retire_renamed(self, name: str, cell: str | None) -> str | None:
        """Once cell ``cell`` has defined step ``name``, take out the steps it defined
        before under other names (its cell renamed: the kernel's graph is the
        notebook's, as ``dagnb run NOTEBOOK`` builds it, where no cell defines the old
        one). One that other steps still need stays, said with its fix. The lines that
        say what became of them; None when the cell renamed nothing."""
        olds = [step for step, defined_by in self._cells.items()
                if cell and defined_by == cell and step != name and step in self.graph]
        said = [self._retire(old, name) for old in olds]
        return "\n".join(line for line in said if line) or None

    def _retire(self, old: str, name: str) -> str | None:
        needing = [s.name for s in self.graph if old in s.needs]
        if name in needing:  # (the cell's new step needs the old: both are meant)
            return None
        if needing:  # (said at each run of the cell, until fixed)
            return (f"dagnb: the cell that defined {old!r} now defines {name!r}; step {old!r} "
                    f"stays, as {listed([repr(n) for n in needing])} "
                    f"need{'s' if len(needing) == 1 else ''} it: rename the need to {name!r} "
                    f"in {'its cell' if len(needing) == 1 else 'their cells'}, or "
                    f"%dagger remove {old} once none needs it")
        self.remove(old)
        return (f"dagnb: the cell that defined {old!r} now defines {name!r}: step {old!r} is "
                "out of the graph (its cache entries stay)")

    def removal_fix(self, publishers: Iterable[str]) -> str:
        """What to add to a line saying ``publishers`` all publish one variable: how to
        remove the step a renamed or deleted cell left (``%dagger remove load``), the
        one whose cell now defines another step when that is known, else each."""
        publishers = list(publishers)
        current = {cell: name for name, cell in self._cells.items()}  # (the last wins)
        renamed = {name: current[self._cells[name]] for name in publishers
                   if name in self._cells and current[self._cells[name]] != name}
        if renamed:
            return "".join(f"; the cell that defined {old!r} now defines {new!r}: "
                           f"%dagger remove {old}" for old, new in renamed.items())
        removals = " or ".join(f"%dagger remove {name}" for name in publishers)
        return (f"; if the cell of one of them was renamed or deleted, remove the step it "
                f"left: {removals}")

    def _check(self, step: Step) -> None:
        for need in step.needs:
            if need not in self.graph:
                raise self._missing_need(step.name, need)
        self.graph.validate()

    def _missing_need(self, name: str, need: str) -> GraphError:
        """Which cell to run first (after a kernel restart), else "did you mean"; the
        cycle, when the cell defining ``need`` needs ``name`` in turn (each cell would
        send the user to the other)."""
        notebook, cells = self._notebook_cells()
        found = next((c for c in cells if c.name == need), None)
        if found is not None:
            cycle = self._cycle_through(name, need, cells)
            if cycle is not None:
                return CycleError(cycle)
            return MissingDependencyError(
                f"step {name!r} needs {need!r}, which is not defined in this kernel yet; "
                f"run cell {found.index + 1} of {notebook} ({found.line.strip()}) first")
        hint = did_you_mean(need, self.graph.names)
        if hint:
            return MissingDependencyError(f"step {name!r} needs {need!r}, which is not a "
                                          f"step; {hint}")
        return MissingDependencyError(
            f"step {name!r} needs {need!r}, which is not a step yet; run the cell that "
            f"defines it (%%dagger {need}) first, or check the name")

    def _notebook_cells(self) -> tuple[str, list[DaggerCell]]:
        """The name of the kernel's notebook file and its ``%%dagger`` cells (none when
        it is not known or cannot be read now: the message says less, nothing else
        changes)."""
        path = kernel_notebook_path(self.namespace)
        if path is None:
            return "", []
        try:
            return path.name, dagger_cells(read_notebook(path))
        except WorkflowError:
            return path.name, []

    def _cycle_through(self, name: str, need: str,
                       cells: list[DaggerCell]) -> list[str] | None:
        """``[name, need, ..., name]`` when ``need``'s needs lead back to ``name``: by
        the kernel's steps, and by the notebook's cells for those it lacks."""
        written = {cell.name: _line_needs(cell.line) for cell in cells}  # (the last counts)

        def needs_of(step: str) -> Iterable[str]:
            return self.graph[step].needs if step in self.graph else written.get(step, ())

        path = _needs_path(need, name, needs_of)
        return None if path is None else [name, *path]

    def _remember_image(self, step: Step) -> None:
        """The builder offers recently used images first."""
        if step.image:
            images = [step.image, *(i for i in self.recent_images if i != step.image)]
            self.recent_images = images[:_RECENT_IMAGES]

    def start(self, targets: Iterable[str] | str | None = None, *,
              background: bool = True, **options: Any) -> Run:
        """Start a run of the session graph and return at once.

        With ``background`` (the default, used by the widget's buttons) a waiting
        thread publishes the results to the namespace when the run ends; otherwise the
        caller waits and calls :meth:`publish` itself. A step reading a variable another
        step publishes starts after it, which is published as it ends
        (:func:`~dagnb.workflows.published.notebook_reads`); where it starts after none
        a user would expect one of (several publish it, a loop of reads), a warning says
        so, once per run.
        """
        if targets is not None and not isinstance(targets, str):
            targets = list(targets)  # (read twice: what it names, then the run's)
        asked = _named(targets)
        if options.get("only_failed") and self.latest:  # (none yet: the run history's)
            options["only_failed"] = False  # (of the steps the targets or tags need)
            needed = set(self.graph.select(targets, tags=options.pop("tags", None)))
            targets = [name for name in self.unfinished() if name in needed]
        reads = self.published_reads(targets, tags=options.get("tags"), asked=asked)
        # (what its Python steps display goes to the cell that ran it, through its view)
        begun: list[Run] = []  # (a Ctrl-C as the run starts leaves no run returned)
        starting = functools.partial(self._starting, begun=begun, reads=reads, asked=asked,
                                     background=background)
        try:
            run = start_background(self.graph, targets, displays_by_view=True, reads=reads,
                                   before_start=starting, **options)
            _say_unordered(reads, run.order)
            if background:
                stop_button.watch_until_done(run)
                self._show_live(run)
                self.publish_when_done(run)
        except KeyboardInterrupt:  # (the cell that started it was stopped: so is the run)
            if not begun:
                raise
            run = begun[0]
            if background:  # (what its start changed is given back as it ends)
                stop_button.watch_until_done(run)
            stop(run)
            raise
        return run

    def plan(self, targets: Iterable[str] | str | None = None, *,
             reads: PublishedReads | None = None) -> pd.DataFrame:
        """``graph.plan(targets)`` as a run of the session would go: a step reading a
        variable another step publishes after it, keyed on the value it will read
        (``%dagger plan``, which warns as a run does of a read not ordered; the status
        marks stale steps by it, with ``reads`` of the whole graph's run)."""
        if reads is not None:  # (the status's: said by a run and a plan, not each view)
            return plan(self.graph, targets, reads=reads)
        reads = self.published_reads(targets, asked=_named(targets))
        planned = plan(self.graph, targets, reads=reads)
        _say_unordered(reads, planned["step"])
        for index, step in planned.loc[~planned["cached"], "step"].items():
            unready = self._unready(step, reads)
            if unready is not None:  # ("code changed": its key lacks what no cell defined)
                planned.at[index, "reason"] = unready
        return planned

    def explain(self, name: str) -> list[str]:
        """``graph.explain(name)`` as :meth:`plan` sees it; first, the cells to run for a
        step reading variables this kernel has not defined yet (a restart)."""
        reads = self.published_reads(name, asked=(name,))
        _say_unordered(reads, (name,))
        sentences = explain(self.graph, name, reads=reads)
        unready = self._unready(name, reads)
        return sentences if unready is None else [unready, *sentences]

    def _unready(self, name: str, reads: PublishedReads) -> str | None:
        """Which cells to run first, for a step whose code reads notebook variables not
        defined in this kernel (its key lacks them: a plan would say "code changed")."""
        return unready_line(self.graph, self.namespace, name, reads.variables.get(name, {}))

    def published_reads(self, targets: Iterable[str] | str | None = None, *,
                        tags: Iterable[str] | str | None = None,
                        asked: Iterable[str] = ()) -> PublishedReads:
        """What the steps read of the variables others publish, as a run of ``targets``
        (``tags``) orders them: a variable a cell re-bound is read as it is unless a step
        that run has anyway publishes over it; ``asked``, the steps named, are published
        from the cache whatever the notebook holds."""
        publishing = frozenset(self.graph.select(targets, tags=tags))
        reads = notebook_reads(self.graph, self._left_by_a_step, publishing)
        unordered = {reader: tuple(line + self.removal_fix(reads.publishers[line])
                                   if line in reads.publishers else line for line in lines)
                     for reader, lines in reads.unordered.items()}
        return PublishedReads(reads.ordered, functools.partial(self._value_published,
                                                               asked=frozenset(asked)),
                              unordered)

    def _value_published(self, maker: str, variable: str, entry_key: str,
                         load: Callable[[], Any], asked: frozenset[str] = frozenset()) -> Any:
        """What ``variable`` reads once step ``maker``, served from cache entry
        ``entry_key``, is published: as a run publishes it (see _publish_step), without
        loading the result when the notebook holds that entry's already."""
        if (maker not in asked and self._published_entries.get(maker) == entry_key
                and self._as_published_by(maker, variable)):
            return AS_IT_IS  # (a run leaves it so, and a large frame is not read again)
        value = load()
        outputs = self.outputs.get(maker, ())
        if len(outputs) == 1:
            return value
        return value.get(variable) if outputs and isinstance(value, dict) else AS_IT_IS

    def _left_by_a_step(self, variable: str) -> bool:
        """Whether the notebook's ``variable`` is unset or as a step's result left it:
        not re-bound by a cell since (then it is the user's, and a step reads it as is)."""
        value = self.namespace.get(variable, _UNSET)
        return value is _UNSET or value is self._published.get(variable, (None, _UNSET))[1]

    def _as_published_by(self, name: str, variable: str) -> bool:
        """Whether the notebook's ``variable`` holds what step ``name``'s result was last
        published as (not another step's since, not re-bound by a cell)."""
        step, value = self._published.get(variable, (None, _UNSET))
        return step == name and self.namespace.get(variable, _UNSET) is value

    def _starting(self, run: Run, begun: list[Run], reads: PublishedReads,
                  asked: frozenset[str], background: bool) -> None:
        """Before any step of ``run`` starts: it is its steps' newest run, and a step that
        another reads the published variables of is published as soon as it ends, so
        that step (started after it) reads its value of this run, as cells run in order
        would, and its key sees that value. The stop button's interrupts are watched
        for a background run's steps from their start (:mod:`~dagnb.notebook.stop_button`)."""
        begun.append(run)
        self._claim(run)
        if background:
            stop_button.watch(run)
        if asked:
            self._asked[run.id] = asked
        makers = {maker for read in reads.variables.values() for maker in read.values()}
        # (and one keeping variables its cell changes: a step after it reads them so)
        makers |= {name for name in run.order if kept_names(run.steps[name])}
        if makers & set(run.order):
            run.events.subscribe(functools.partial(self._publish_on_end, run, makers))

    def _publish_on_end(self, run: Run, makers: set[str], event: Event) -> None:
        if (event.kind == "state" and event.step in makers
                and event.data["state"] in ("succeeded", "cached")
                and run.id not in self._forgotten):
            self._publish_step(run, event.step, event.data["state"], self._results())

    def raise_for_status(self, run: Run, printed: Collection[str] = ()) -> None:
        """``run.raise_for_status()``; a step that failed reading a notebook variable a
        cell defines but this kernel has not run yet (after a restart) adds which cell to
        run first. ``printed``: failed steps whose every line the cell's view printed as
        they came (text mode): the error leaves their stderr tails out, which would show
        those lines a second time."""
        try:
            run.raise_for_status(shown=printed)
        except RunFailed as failed:
            failed.details += self.failure_notes(run)
            raise

    def failure_notes(self, run: Run) -> list[str]:
        """One line per step of ``run`` that failed with a NameError for a notebook
        variable not defined yet, naming the cell that defines it, or using an object
        the notebook made on its own thread."""
        rows = run.status_rows()
        notes = (name_error_note(self.graph, self.namespace, name, rows[name]["error"])
                 or other_thread_note(name, rows[name]["error"])
                 for name, state in run.states().items() if state == "failed")
        return [note for note in notes if note]

    def _show_live(self, run: Run) -> None:
        """A run that goes on while the kernel is free is in the views from its start:
        status shows its steps queued and running, history its row, logs its lines."""
        self.live[run.id] = run
        self._remember_rows(run)

    def refresh(self) -> None:
        """Bring the rows of the runs still going up to date (the views ask first)."""
        for run in list(self.live.values()):  # (the publishing thread may remove one)
            done = run.done
            self._remember_rows(run)
            if done:
                self.live.pop(run.id, None)

    def publish_when_done(self, run: Run) -> None:
        """Publish the run's results from a thread when it ends (nobody waits on it)."""
        threading.Thread(target=self._publish_later, args=(run,), daemon=True,
                         name="dagnb-publish").start()

    def unfinished(self) -> list[str]:
        """Steps whose latest row, from whichever run had them, is not done (failed,
        skipped, cancelled or never finished): as ``%dagger status`` shows them, not only
        the last run's. A --background run that ended is read as it ended, not as
        its publishing thread last left it."""
        self.refresh()
        states = {name: row["state"] for name, row in self.latest.items()}
        return unfinished(states, self.graph.names)

    def still_running(self) -> list[str]:
        """Steps of interrupted runs still in one long call (``time.sleep``, a C
        extension): they hold the loop every run's steps need, so the next run waits."""
        runs = {run.id: run for run in self.step_runs.values()
                if run.id not in self.live and not run.done}  # (a background run shares it)
        return [name for run in runs.values()
                for name, state in run.states().items() if state == "running"]

    def background_holding(self) -> list[str]:
        """Python steps of background runs in a call now: a Python step runs on the loop
        every run's steps need, so the next run starts when it returns."""
        return [name for run in list(self.live.values()) for name in run.holding_the_loop()]

    def _publish_later(self, run: Run) -> None:
        try:
            self.publish(run.wait())
        except Exception as exc:  # a thread has nobody to raise to
            warnings.warn(f"dagnb: results of run {run.id} were not published to the "
                          f"namespace: {exc}", stacklevel=1)

    def publish(self, run: Run) -> dict[str, Any]:
        """Put the results of the run's finished steps into the namespace, but not
        those of steps a run started later has (a ``--background`` run ending after a
        newer run of its step leaves the newer one's result, as status shows its row)."""
        if run.id in self._forgotten:  # (cancelled by a reset: of a graph forgotten)
            return self._results()
        results = self._results()
        self._remember_rows(run)
        if run.done:
            self.live.pop(run.id, None)
        for name, state in run.states().items():
            if state in ("succeeded", "cached"):
                self._publish_step(run, name, state, results)
        if run.done:  # (no step reads its entries now)
            self._uncache_unkept(run)
        return results

    def _results(self) -> dict[str, Any]:
        """The notebook's ``_dagger``, the dict of the steps' results. One the user set to
        something else (``_dagger = 1``) is replaced by a new dict, with a warning, rather
        than failing every cell after it."""
        results = self.namespace.setdefault(RESULTS_NAME, {})
        if not isinstance(results, dict):
            warn_user(f"dagnb: `{RESULTS_NAME}` holds the steps' results and was set to "
                      f"something else ({type(results).__name__}); it is a dict of them "
                      "again: keep your value under another name")
            results = self.namespace[RESULTS_NAME] = {}
        return results

    def _publish_step(self, run: Run, name: str, state: str, results: dict[str, Any]) -> None:
        """The result of ``name``, a finished step of ``run``, in ``results`` and under
        its --outputs, unless a run started later has the step."""
        outputs = self._outputs_to_publish(run, name)
        if outputs is None:
            return
        asked = name in self._asked.get(run.id, ())
        self._put_back_kept(run, name, state, asked)
        if state == "cached" and not asked and self._holds(run, name, outputs, results):
            return
        try:
            value = run.result(name)
        except StepFailed as exc:  # (its entry cleared meanwhile: the others still go)
            warnings.warn(f"dagnb: {exc}", stacklevel=3)
            return
        results[name] = value if value is not None else _outputs_or_none(run, name)
        self._publish_outputs(name, outputs, value)
        # (a step publishing no variable, or None: its _dagger entry is the run's folder)
        held = outputs and value is not None
        self._published_entries[name] = (run.entry_of(name) or "") if held else ""

    def _holds(self, run: Run, name: str, outputs: tuple[str, ...],
               results: dict[str, Any]) -> bool:
        """Whether the notebook holds the result of the cache entry ``name`` was restored
        from in ``run`` already, as published from it: not loaded again (a cell's run has
        the steps whose variables it reads, a large frame's among them)."""
        entry = run.entry_of(name)
        return (entry is not None and self._published_entries.get(name) == entry
                and name in results and all(self._as_published_by(name, v) for v in outputs))

    def _put_back_kept(self, run: Run, name: str, state: str, asked: bool) -> None:
        """Bind the notebook variables step ``name``'s cell changes in place and reads
        to the values its cache entry kept (:func:`~dagnb.notebook.cells.keep`), once a
        run: served from the cache, or run out of this process (a dask worker, a
        container), the cell changed none of the notebook's objects; run here, it changed
        them, and they stay (so do other names of them). As ``--outputs`` are, they are
        not loaded again while the notebook holds them as put back from that entry,
        unless the cell's own run asked for the step."""
        names = kept_names(run.steps[name])
        last = self._kept.get(name)
        if not names or (last is not None and last[0] == run.id):
            return
        entry = run.entry_of(name) or ""
        if state == "succeeded" and _ran_here(run, name):
            self._note_kept(run, name, entry, names)
            return
        if (state == "cached" and not asked and last is not None and entry == last[1]
                and all(self.namespace.get(n, _UNSET) is last[2].get(n, _UNSET)
                        for n in names)):
            return
        values = self._kept_values(run, name, state, names) or {}
        for variable in names:
            if variable in values:
                self._rebind(variable, values[variable])
        self._note_kept(run, name, entry, names)

    def _rebind(self, variable: str, value: Any) -> None:
        """Bind the notebook's ``variable`` to a value a step kept; one a step published
        stays that step's (as the object changed in place did)."""
        maker, published = self._published.get(variable, (None, _UNSET))
        if maker is not None and self.namespace.get(variable, _UNSET) is published:
            self._published[variable] = (maker, value)
        self.namespace[variable] = value

    def _kept_values(self, run: Run, name: str, state: str,
                     names: tuple[str, ...]) -> dict[str, Any] | None:
        """The values step ``name`` kept of the variables ``names``, or None (said in a
        line when an entry served lacks them or cannot give them)."""
        try:
            folder = run.outputs(name)
            missing = unkept(folder)
            if missing is None:
                return kept_values(folder)
        except Exception as exc:  # (damaged, cleared meanwhile: the notebook's stay)
            warn_user(f"dagnb: step {name!r}: notebook variables {', '.join(names)}, which "
                      f"its cell changes in place, could not be put back from its cache "
                      f"entry ({exc}); they are left as they are: run the cell again")
            return None
        if state == "cached":  # (an entry its run could not remove: see _uncache_unkept)
            warn_user(f"dagnb: step {name!r} was served from the cache without notebook "
                      f"variable {missing[0]!r}, which its cell changes in place and which "
                      f"does not pickle ({missing[1]}); it is left as it is: run the cell "
                      "with --no-cache")
        return None

    def _note_kept(self, run: Run, name: str, entry: str, names: tuple[str, ...]) -> None:
        self._kept[name] = (run.id, entry, {n: self.namespace.get(n, _UNSET) for n in names})

    def _uncache_unkept(self, run: Run) -> None:
        """Remove the entry of each step of ``run`` (ended) that ran and could not keep
        a variable its cell changes in place (it does not pickle), and say so: a run
        served that entry could not give the variable back, so the step runs uncached,
        as one whose result does not pickle."""
        for name, state in run.states().items():
            entry = run.entry_of(name)
            if (state != "succeeded" or entry is None or name in run.not_stored
                    or not kept_names(run.steps[name])):
                continue
            try:
                missing = unkept(run.outputs(name))
            except DagnbError:  # (its folder gone: nothing to read, nor to serve)
                continue
            if missing is None:
                continue
            why = (f"notebook variable {missing[0]!r}, which its cell changes in place and "
                   f"reads, cannot be pickled ({missing[1]}), so a run served from the "
                   "cache could not give it back")
            run.not_stored[name] = why
            warn_user(f"step {name!r} ran but was not cached: {why}; keep what does not "
                      "pickle out of it (for a lambda, a def does)")
            store = session_store() if run.steps[name].cache == "session" else store_for()
            with contextlib.suppress(DagnbError, OSError):  # (read-only: a hit says so)
                store.remove(name, entry)

    def _claim(self, run: Run) -> None:
        """A run just started is its steps' newest, and publishes them under the
        --outputs they have now (the cell may be edited before a background run ends)."""
        place = self._place(run)
        for name in run.order:
            self._claims[name] = (place, self.outputs.get(name, ()))

    def _outputs_to_publish(self, run: Run, name: str) -> tuple[str, ...] | None:
        """The --outputs ``name``'s result in ``run`` goes to; None when a run started
        later has the step."""
        place = self._place(run)
        claimed, outputs = self._claims.get(name, (place, ()))
        if claimed > place:
            return None
        return outputs if claimed == place else self.outputs.get(name, ())

    def _place(self, run: Run) -> int:
        """The run's place in the order runs started (a run first seen: the newest)."""
        if run.id not in self._started:
            self._started[run.id] = next(self._counter)
        return self._started[run.id]

    def _remember_rows(self, run: Run) -> None:
        """The run's rows as the steps' latest, and its row in the history (replaced in
        place when it is there: a live run, an interrupted one published again). A step
        a run started later has taken keeps that run's row (a --background run that
        ends after a newer run of its step does not take it back), and so does a step
        a run only waited for, another run computing it, when it was cancelled."""
        rows = run.status().to_dict("records")
        place = self._place(run)
        for row in rows:
            holder = self.step_runs.get(row["step"])
            if holder is not None and holder is not run and (
                    self._place(holder) > place or _only_waited(run, row)):
                continue
            self.latest[row["step"]] = {k: _plain(v) for k, v in row.items()}
            self.step_runs[row["step"]] = run
            if _ran_to_an_end(row):
                self.ran[row["step"]] = (self.latest[row["step"]], run)
        summary = _history_row(run, rows)
        known = [i for i, row in enumerate(self.runs) if row["run"] == run.id]
        if known:
            self.runs[known[0]] = summary
        else:
            self.runs.append(summary)

    def _publish_outputs(self, name: str, outputs: tuple[str, ...], value: Any) -> None:
        if len(outputs) == 1:
            self.namespace[outputs[0]] = value
            self._published[outputs[0]] = (name, value)
        elif outputs and isinstance(value, dict):
            for key in outputs:
                self.namespace[key] = value.get(key)
                self._published[key] = (name, value.get(key))

    def clear_cache(self, step: str | None = None, older_than: float | None = None) -> int:
        """Remove entries (of one step; created more than ``older_than`` seconds ago)
        from the configured cache; how many. A step's are this notebook's alone (and
        those saved before entries said their workflow): a workflow file sharing the
        folder may have a step of that name too."""
        workflows = None if step is None else (self.graph.name, None)
        return store_for().clear(step, older_than, workflows)

    def reset(self) -> int:
        """Forget the graph, the last run and the published results; cancel the
        background runs still going (of the graph forgotten), and say how many."""
        cancelled = self._cancel_live_runs()
        self.graph = Graph(self.graph.name)
        self.outputs.clear()
        self._cells.clear()
        self.latest.clear()
        self.step_runs.clear()
        self.ran.clear()
        self.runs.clear()
        self.live.clear()
        self._started.clear()
        self._claims.clear()
        self._published.clear()
        self._published_entries.clear()
        self._kept.clear()
        self._asked.clear()
        self.param_variables.clear()
        self.namespace.pop(RESULTS_NAME, None)
        return cancelled

    def _cancel_live_runs(self) -> int:
        """Cancel the background runs going on, which would otherwise run on unseen and,
        as they end, put their rows and results back into the session just reset."""
        self.refresh()  # (those that ended meanwhile are not live any more)
        going = list(self.live.values())
        for run in going:
            self._forgotten.add(run.id)
            run.cancel()
        return len(going)


def _line_needs(line: str) -> tuple[str, ...]:
    """The steps a ``%%dagger`` line's ``--needs`` names (its last, as the parser takes
    it), read without running the cell: none that reads a notebook variable (``$up``)."""
    given = line_values(line, "--needs")
    return tuple(n for n in parse_names(given[-1] if given else "")
                 if "$" not in n and "{" not in n)


def _needs_path(start: str, goal: str,
                needs_of: Callable[[str], Iterable[str]]) -> list[str] | None:
    """The shortest way from ``start`` to ``goal`` along needs, both ends included."""
    came_from: dict[str, str | None] = {start: None}
    waiting = collections.deque([start])
    while waiting:
        step = waiting.popleft()
        if step == goal:
            path = [step]
            while (before := came_from[path[-1]]) is not None:
                path.append(before)
            return path[::-1]
        for up in needs_of(step):
            if up not in came_from:
                came_from[up] = step
                waiting.append(up)
    return None


def _ran_here(run: Run, name: str) -> bool:
    """Whether step ``name`` of ``run`` last ran in this process: on the local executor,
    which calls a Python step's function here (a cell's, with the notebook's objects)."""
    return next((event.data.get("executor") == "local" for event in reversed(list(run.events))
                 if event.step == name and event.kind == "state"
                 and event.data.get("state") == "running"), False)


def _ran_to_an_end(row: dict[str, Any]) -> bool:
    """Whether the row is of a step its run ran and finished: not one served from the
    cache, nor a row of a --background run at its start (``pending``, ``queued``), which
    would stand for the step after that run ends with it ``cached``."""
    return row["state"] in TERMINAL_STATES and row["state"] != "cached"


def _only_waited(run: Run, row: dict[str, Any]) -> bool:
    """Whether ``run`` cancelled the row's step before any attempt, while it waited for
    another run computing it: that run's row of the step is the news, not this one's."""
    if row["state"] != "cancelled" or row["attempts"]:
        return False
    return any(e.step == row["step"] and e.kind == "state" and "waiting" in e.data
               for e in run.events)


def _run_started(run: Run) -> Any:
    """When ``run`` started (None if it has not), as a status row's times read: the
    history's time of a run stopped before any of its steps started."""
    from dagnb.cache.housekeeping import local_times

    begun = next((e.time for e in run.events
                  if e.kind == "run" and e.data.get("state") == "started"), None)
    return None if begun is None else local_times([begun])[0]


def _history_row(run: Run, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's row in ``%dagger history``: when it started, its steps and how many
    ended each way; ``unfinished`` counts those not finished yet (running, retrying or
    waiting their turn), so a --background run still going does not read as one where
    nothing ran."""
    states = [r["state"] for r in rows]
    started = [r["started"] for r in rows if r["started"] is not None
               and r["started"] == r["started"]]  # (not NaT)
    return {
        "run": run.id, "started": min(started) if started else _run_started(run),
        "steps": ", ".join(r["step"] for r in rows),
        "unfinished": sum(state not in TERMINAL_STATES for state in states),
        **{state: states.count(state) for state in
           ("succeeded", "cached", "failed", "skipped", "cancelled")},
    }


def _plain(value: Any) -> Any:
    """A JSON-friendly cell of a status row (pandas' NA and numpy scalars included)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None if isinstance(value, float) and value != value else value
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def notebook_summary(session: Session | None = None) -> str:
    """Every step's row from its latest run, in graph order, as JSON (``dagnb run NB``).

    A ``--background`` run still going is waited for first: the kernel shuts down after
    this, which would end its steps unrun (``pending``, and exit 0 with their work lost).
    """
    session = session or get_session()
    for run in list(session.live.values()):
        session.publish(run.wait())
    rows = [_summary_row(session, name) for name in session.graph.order()]
    return json.dumps(rows)


def _summary_row(session: Session, step: str) -> dict[str, Any]:
    """The step's latest row; the row of the run that ran it when a later run was served
    the very entry it stored (``dagnb run NB -p``: a step its cell re-ran for the new
    param, served to a later cell's run, read ``cached`` as if the param were ignored).
    A step fail-on-miss refused, its entry gone since its run's check, is marked
    ``refused``: ``dagnb run NB`` exits 2 for it, as for a file's run."""
    latest = session.latest.get(step, {"step": step, "state": "not run"})
    ran, by = session.ran.get(step, (None, None))
    served = session.step_runs.get(step)
    if latest["state"] == "failed" and served is not None and step in served.refused:
        return {**latest, "refused": True}
    if (latest["state"] == "cached" and ran is not None and served is not None
            and by.entry_of(step) is not None and by.entry_of(step) == served.entry_of(step)):
        return ran
    return latest


def _say_unordered(reads: PublishedReads, steps: Iterable[str]) -> None:
    """Warn of each read of ``steps`` a user would expect ordered and is not (a variable
    two steps publish, a loop of reads), a line each, at the user's line."""
    for line in reads.unordered_in(steps):
        warn_user(line)


def _named(targets: Iterable[str] | str | None) -> frozenset[str]:
    """The steps ``targets`` names (none for a run of the whole graph)."""
    return frozenset([targets] if isinstance(targets, str) else targets or ())


def _outputs_or_none(run: Run, name: str) -> Path | None:
    try:
        return run.outputs(name)
    except Exception:
        return None


def get_session(namespace: MutableMapping[str, Any] | None = None) -> Session:
    """The session of the current context (created on first use, bound to ``namespace``).

    A fresh context (``dagnb.testing.isolated()``) starts a fresh session; ``%dagger
    reset`` keeps the object and empties it (:meth:`Session.reset`).
    """
    session = context().get("session", lambda: Session(namespace))
    if namespace is not None and session.namespace is not namespace:
        session.namespace = namespace
    return session
