"""Graph: the steps of a pipeline and the needs between them.

Life cycle: ``add``/``replace``/``remove`` steps (a notebook cell that runs again
replaces its step), ``validate`` (unknown needs, cycles, host paths), ``order`` and
``select`` the steps to run, then ``run`` (synchronous) or ``await arun`` (async).
"""

from __future__ import annotations

import graphlib
import inspect
import json
import os
import re
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dagnb import checks
from dagnb.errors import (
    ConfigError,
    CycleError,
    DuplicateStepError,
    ExecutorUnavailable,
    InvalidStepError,
    MissingDependencyError,
    StepNotFoundError,
)
from dagnb.model.expand import OURS, first_reference, references
from dagnb.model.masking import named_surely_secret, written_secrets
from dagnb.model.moved_modules import STEPS_MODULE_PREFIX
from dagnb.model.step import (
    EXECUTOR_NAMES,
    Step,
    cached_per_function,
    mount_path,
    param_env_name,
)

if TYPE_CHECKING:
    from dagnb.runtime.run import Run

__all__ = ["Graph", "unknown_need_message"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
DERIVED_KEPT = 8  # values Graph.derived keeps at most (then it starts again)
_ABSENT = object()  # no value kept under a key (None may be one)


class Graph:
    """An ordered set of :class:`Step` objects joined by their ``needs``.

    Parameters
    ----------
    name
        Shown in status output and written to YAML.
    steps
        Initial steps, added in order.
    base_dir
        Where relative host paths (mounts, workdirs) resolve; a workflow file's folder,
        else the current directory at run time.

    Attributes
    ----------
    workflow_file
        The file the graph was loaded from, resolved (None for one built in Python or a
        notebook): ``--only-failed`` reads the last run of that file, since files made
        from one template share its name.
    given_params
        The params set from outside the file for its runs (``dagnb run --param``, through
        :func:`~dagnb.workflows.params.set_params`), by name: recorded with each run, so
        that ``only_failed`` (``--only-failed``) counts only the runs given the same
        values, a param given the value the steps have of their own being as good as
        not given (see :meth:`own_params`).
    parameters
        The parameters the workflow declares (a file's ``parameters:``, kept by
        ``templates new``), :class:`~dagnb.workflows.templates.Parameter` by name:
        a ``--param`` of one is checked against it. Empty for most graphs.
    template
        The id of the template the workflow was made from (a file's ``template:``), or
        None: named in the command that makes the file again.
    """

    __slots__ = ("_changes", "_checked", "_derived", "_earlier", "_order", "_own_params",
                 "_steps", "base_dir", "description", "given_params", "last_run", "name",
                 "parameters", "template", "workflow_file")

    def __init__(
        self,
        name: str = "graph",
        steps: Iterable[Step] = (),
        *,
        base_dir: str | Path | None = None,
        description: str = "",
    ) -> None:
        _check_graph_arguments(name, steps)
        self.name = name
        self.description = description
        self.base_dir = _folder(base_dir)
        self.last_run: Run | None = None
        # the states of the runs before it in this process (latest first), and the params
        # they were given: a run of some steps leaves the others' states as they were
        self._earlier: tuple[dict[str, Any], dict[str, str]] = ({}, {})
        self.workflow_file: Path | None = None
        self.given_params: dict[str, Any] = {}  # (replaced, not changed: copies share it)
        self.parameters: dict[str, Any] = {}  # (the model layer knows no Parameter)
        self.template: str | None = None
        self._own_params: dict[str, Any] | None = None  # (kept as set_params first gives)
        self._steps: dict[str, Step] = {}
        self._order: list[str] | None = None  # the whole graph's order, until it changes
        self._changes = 0  # steps added, replaced or removed so far
        self._checked = -1  # the _changes that validate() last passed at
        self._derived: tuple[int, dict[Hashable, Any]] = (-1, {})  # see derived()
        for step in steps:
            self.add(step)

    def __copy__(self) -> Graph:
        """A graph of the same steps whose steps change apart from this one's (copying
        the slots alone would share them: a step replaced through either would change
        both, unchecked by the other's remembered validation)."""
        other = Graph.__new__(Graph)
        for name in Graph.__slots__:
            setattr(other, name, getattr(self, name))
        other._steps = dict(self._steps)
        return other

    # -- building -------------------------------------------------------------------
    def add(self, step: Step) -> Step:
        """Add a new step; a name already in the graph is a DuplicateStepError."""
        if not isinstance(step, Step):
            raise InvalidStepError(f"graph.add() takes a Step, got {step!r}")
        if step.name in self._steps:
            raise DuplicateStepError(
                f"step name {step.name!r} is already in graph {self.name!r}; rename it or "
                "use graph.replace() to redefine it"
            )
        self._steps[step.name] = step
        self._order = None
        self._changes += 1
        return step

    def replace(self, step: Step) -> Step:
        """Add ``step`` or redefine the step of the same name, keeping its position."""
        if not isinstance(step, Step):
            raise InvalidStepError(f"graph.replace() takes a Step, got {step!r}")
        old = self._steps.get(step.name)
        if old is None or old.needs != step.needs:  # the order depends on nothing else
            self._order = None
        self._steps[step.name] = step
        self._changes += 1
        return step

    def remove(self, name: str) -> Step:
        """Remove a step; steps that need it will fail validation until fixed."""
        self._order = None
        self._changes += 1
        return self._steps.pop(self._known(name))

    def step(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        needs: Iterable[str] | None = None,
        **fields: Any,
    ) -> Any:
        """Decorator adding (or redefining) a Python function step.

        Parameters named after upstream steps receive their results; parameters named
        after ``params`` keys receive those values. Without ``needs``, the needs are the
        parameters that have no default and are not params. The function is returned
        unchanged, so it can still be called directly.
        """

        def register(fn: F) -> F:
            # (given, as Step reads it: needs="load" is one step, not four letters)
            step_needs = (tuple(_inferred_needs(fn, fields.get("params"))) if needs is None
                          else needs)
            self.replace(Step(name or fn.__name__, func=fn, needs=step_needs, **fields))
            return fn

        if isinstance(func, str):  # (@graph.step("load"), or graph.step("load") to read)
            raise TypeError(f"graph.step({func!r}): step() decorates a function; name its "
                            f"step with @graph.step(name={func!r}), and read a step as "
                            f"graph[{func!r}]")
        return register(func) if func is not None else register

    # -- reading --------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._steps

    def __getitem__(self, name: str) -> Step:
        return self._steps[self._known(name)]

    def steps_of(self, names: Iterable[str]) -> dict[str, Step]:
        """The steps of ``names`` by name (a run's selection: one lookup each, the
        "did you mean" error for a name the graph has not)."""
        steps = self._steps
        return {name: steps[name] if name in steps else self[name] for name in names}

    def __iter__(self) -> Iterator[Step]:
        return iter(list(self._steps.values()))

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, steps={list(self._steps)})"

    @property
    def changes(self) -> int:
        """How many times a step was added, replaced or removed: a view of the graph
        (the builder's choices) is stale when this moved since it was drawn."""
        return self._changes

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, kept until a step changes: asked again with an equal ``key``
        meanwhile, the same value (a run's links between its steps, which a notebook's
        graph of 1,000 steps made anew on every run). A few keys kept at a time
        (:data:`DERIVED_KEPT`: a notebook's cells select different steps); the caller
        must not change the value."""
        changes, kept = self._derived
        if changes != self._changes:
            kept = {}
            self._derived = (self._changes, kept)
        else:  # (one lookup: a key of 1,000 step names hashes in O(n))
            found = kept.get(key, _ABSENT)
            if found is not _ABSENT:
                return found  # type: ignore[no-any-return]
        value = make()
        if len(kept) >= DERIVED_KEPT:
            kept.clear()
        kept[key] = value
        return value

    @property
    def names(self) -> list[str]:
        """Step names in the order they were added."""
        return list(self._steps)

    def _known(self, name: str) -> str:
        if name not in self._steps:
            raise StepNotFoundError(_unknown_message(name, self._steps, "in the graph"))
        return name

    # -- validation and order -------------------------------------------------------
    def validate(self, *, check_host: bool = False) -> None:
        """Raise the first problem found: unknown needs, a cycle, a bad function step, a
        command reading ``$DAGNB_IN/<step>`` of a step it does not need.

        With ``check_host``, also check that every mount's host path exists. (Steps are
        frozen: a graph checked once is not checked again until a step changes, as on
        every run of a notebook's graph.)
        """
        changes = self._changes
        if self._checked != changes:
            self._check_steps()
            self._checked = changes  # (a step changed meanwhile, by another thread: again)
        if check_host:
            self.check_mounts()

    def _check_steps(self) -> None:
        for step in self._steps.values():
            self._check_needs(step)
            if step.func is not None:
                _check_signature(step)
            elif not isinstance(step.run, str) or "DAGNB_IN" in step.run:
                self._check_inputs_read(step)  # (most commands name no $DAGNB_IN)
        self.order()
        self._warn_of_unpassed()

    def _warn_of_unpassed(self) -> None:
        """Warn, once the graph passed its checks, of what a Python step's function will
        not be given: a step's result its defaulted parameter of that name does not get
        (needs infers no need from it), and a param it takes no parameter for."""
        from dagnb.workflows.pyfunctions import check_params_taken  # (a layer above)

        for step in self._steps.values():
            if step.env:
                _warn_of_written_secrets(step, _warn_of_references_in_env(step))
            if step.func is None:
                _warn_of_params_read_as_variables(step)
                continue
            for name in _defaulted_step_names(step, self._steps):
                checks.warn_user(
                    f"step {step.name!r}: its parameter {name!r} has a default, so it does "
                    f"not get step {name!r}'s result; add needs=[{name!r}] to pass it, or "
                    "rename the parameter")
            if step.params and not _from_a_workflow_file(step.func):  # (its loading
                # warned, of the step's own params, not defaults')
                check_params_taken(step.func, step.params, f"step {step.name!r}")

    def _check_needs(self, step: Step) -> None:
        for need in step.needs:
            if need not in self._steps:
                raise MissingDependencyError(unknown_need_message(step.name, need, self._steps))

    def _check_inputs_read(self, step: Step) -> None:
        """Refuse a shell step whose command reads ``$DAGNB_IN/<step>`` of a step it does
        not need: that folder is never there (``$DAGNB_IN`` holds the steps it needs), and
        the run failed on a file not found, blamed on the folder it ran in."""
        unneeded = [name for name in _input_folders_named(step.run)
                    if name in self._steps and name != step.name and name not in step.needs]
        if unneeded:
            raise MissingDependencyError(_unneeded_read_message(step, unneeded))

    def check_mounts(
        self, names: Iterable[str] | None = None, base_dir: Path | None = None
    ) -> None:
        """Raise InvalidStepError for the first mount whose host path does not exist or is
        neither a file nor a folder (reading a FIFO or a device would never end)."""
        base = base_dir or self.base_dir or Path.cwd()
        chosen = self._steps if names is None else self.steps_of(names)
        for name, step in chosen.items():
            for host in step.mounts:
                path = mount_path(base, host)
                if not path.exists():
                    raise InvalidStepError(self._of_file(
                        f"step {name!r} mounts {host!r}, which does not exist ({path}); "
                        + _mount_fix(host, path)))
                if not (path.is_dir() or path.is_file()):
                    raise InvalidStepError(self._of_file(
                        f"step {name!r} mounts {host!r}, which is {_kind(path)}, not a file "
                        "or folder; mount a file or a folder"
                    ))

    def _of_file(self, message: str) -> str:
        """``message`` starting with the workflow file the graph was loaded from, if any,
        as that file's load errors do (the rest are said by the loader)."""
        if self.workflow_file is None:
            return message
        return f"{_shown_file(self.workflow_file)}: {message}"

    def order(self, names: Iterable[str] | None = None) -> list[str]:
        """Topological order (graphlib), ties broken by the order steps were added."""
        if names is None:
            if self._order is None:
                self._order = self._sorted(set(self._steps))
            return list(self._order)
        return self._sorted(set(names))

    def _sorted(self, wanted: set[str]) -> list[str]:
        """Kahn's algorithm in waves, as graphlib's get_ready/done loop orders them
        (each wave in the order steps were added), without the cycle search graphlib's
        ``prepare`` always makes: that one runs only when a cycle is left over."""
        by_depth = self._sorted_by_depth(wanted)
        if by_depth is not None:
            return by_depth
        unmet: dict[str, int] = {}
        dependents: dict[str, list[str]] = {}
        for name, step in self._steps.items():
            if name in wanted:
                needs = [need for need in step.needs if need in wanted]
                unmet[name] = len(needs)
                for need in needs:
                    dependents.setdefault(need, []).append(name)
        wave = [name for name, count in unmet.items() if count == 0]
        ordered: list[str] = []
        position: dict[str, int] | None = None
        while wave:
            ordered.extend(wave)
            ready = []
            for name in wave:
                for child in dependents.get(name, ()):
                    unmet[child] -= 1
                    if unmet[child] == 0:
                        ready.append(child)
            if len(ready) > 1:
                position = position or {name: i for i, name in enumerate(unmet)}
                ready.sort(key=position.__getitem__)
            wave = ready
        if len(ordered) < len(unmet):
            self._raise_cycle(unmet)
        return ordered

    def _sorted_by_depth(self, wanted: set[str]) -> list[str] | None:
        """``_sorted``'s order in one pass, when each step was added after its needs (as
        most graphs are built; else None): a step's wave is one past its deepest need's,
        so the waves, each in the order steps were added, are a stable sort by wave. (A
        cold re-run of a chain spent some 120 of its 2,500 bytecodes a step in the waves.)"""
        depth: dict[str, int] = {}
        for name, step in self._steps.items():
            if name in wanted:
                deepest = -1
                for need in step.needs:
                    if need in wanted:
                        found = depth.get(need)
                        if found is None:  # added later (or a cycle): the waves tell
                            return None
                        if found > deepest:
                            deepest = found
                depth[name] = deepest + 1
        return sorted(depth, key=depth.__getitem__)

    def _raise_cycle(self, wanted: Iterable[str]) -> None:
        """Raise CycleError naming a cycle among ``wanted`` (graphlib finds it)."""
        sorter = graphlib.TopologicalSorter(
            {name: [d for d in self._steps[name].needs if d in wanted] for name in wanted}
        )
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            raise CycleError(list(reversed(exc.args[1]))) from None

    def upstream(self, name: str) -> set[str]:
        """Every step ``name`` depends on, directly or not."""
        return self._with_upstream(self[name].needs)

    def _with_upstream(self, names: Iterable[str]) -> set[str]:
        """The names and everything they depend on, in one walk."""
        seen: set[str] = set()
        stack = list(names)
        try:
            while stack:
                name = stack.pop()
                if name not in seen:
                    seen.add(name)
                    stack.extend(self._steps[name].needs)
        except KeyError as missing:  # a need that is no step (not validated yet): say whose
            for step in self._steps.values():
                if missing.args[0] in step.needs:
                    self._check_needs(step)
            raise
        return seen

    def downstream(self, name: str) -> set[str]:
        """Every step that depends on ``name``, directly or not."""
        dependents: dict[str, list[str]] = {n: [] for n in self._steps}
        for step in self._steps.values():
            for need in step.needs:
                dependents.setdefault(need, []).append(step.name)
        seen: set[str] = set()
        stack = list(dependents.get(self._known(name), []))
        while stack:
            child = stack.pop()
            if child not in seen:
                seen.add(child)
                stack.extend(dependents[child])
        return seen

    def select(
        self,
        targets: Iterable[str] | str | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        only_failed: bool = False,
    ) -> list[str]:
        """Names to run, in order: the targets (or tagged steps) with all their upstream.

        ``only_failed`` picks the steps of the last run that did not succeed (failed,
        skipped, cancelled, or never ran: a run cut short), with their upstream, which
        the cache makes cheap; every step if params were set since that run (none has
        run with them in this process: ``graph.run`` also reads the run history). With
        targets or tags it narrows what they select: of the steps they need, those.
        """
        chosen = set(self._chosen(targets, tags, only_failed))  # (a target tagged too)
        if len(chosen) == len(self._steps):
            return self.order()
        return self.order(self._with_upstream(chosen))

    def _chosen(self, targets: Any, tags: Any, only_failed: bool) -> list[str]:
        named = self._named(targets, tags)
        if only_failed:
            return self._needed_by(named, self._unfinished_of_last_run())
        return list(self._steps) if named is None else named

    def _named(self, targets: Any, tags: Any) -> list[str] | None:
        """The targets and the steps with one of the tags; None when neither is given."""
        targets = _names_given(targets, "targets", "a step name", "train")
        tags = _names_given(tags, "tags", "a tag", "nightly")
        if targets is None and not tags:
            return None
        chosen = [self._known(t) for t in targets or ()]
        if tags:
            self._check_tags(tags)
            chosen += [s.name for s in self._steps.values() if set(tags) & set(s.tags)]
        return chosen

    def _needed_by(self, named: Iterable[str] | None, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that the ``named`` steps are or depend on (all of them when
        ``named`` is None): a failed step outside a target is not the target's to re-run."""
        if named is None:
            return list(names)
        needed = self._with_upstream(named)
        return [name for name in names if name in needed]

    def _check_tags(self, tags: Iterable[str]) -> None:
        """Every tag asked for is some step's: a mistyped one beside a good one would
        quietly select less."""
        known = {tag for step in self._steps.values() for tag in step.tags}
        unknown = sorted(set(tags) - known)
        if unknown:
            listed = (f"the steps' tags are {_quoted(sorted(known))}" if known
                      else "no step has any tag")
            hint = checks.did_you_mean(unknown[0], known, otherwise=listed)
            noun = "tag" if len(unknown) == 1 else "tags"
            raise StepNotFoundError(f"no step has {noun} {_quoted(unknown)}; {hint}")

    def started(self, run: Run) -> None:
        """``run`` is the graph's last run now; the states of the one before it join those
        of the runs before (given the same params), which ``only_failed`` reads."""
        last = self.last_run
        if len(run.order) >= len(self._steps):  # (every step: its states supersede them,
            self._earlier = ({}, {})  #            and none is read for each run)
        elif last is not None:
            params, states = self._earlier
            if not self.same_run_params(params, last.given_params):
                states = {}
            self._earlier = (last.given_params, {**states, **last.states()})
        self.last_run = run

    def _unfinished_of_last_run(self) -> list[str]:
        """The steps that did not finish in this process's runs given the params the
        graph has now, each by its latest run: a run of targets, or one that re-ran a
        failed step alone, leaves the other steps' states as the runs before left them."""
        from dagnb.runtime.history import unfinished

        if self.last_run is None:
            return []
        if not self.same_run_params(self.last_run.given_params, self.given_params):
            return list(self._steps)  # params set since: no step has run with these
        states = self.states_here()
        return unfinished(states, [name for name in states if name in self._steps])

    def states_here(self) -> dict[str, str]:
        """Each step's state in its latest run in this process among the runs given the
        params of the last one (none before a first run)."""
        if self.last_run is None:
            return {}
        params, earlier = self._earlier
        states = self.last_run.states()
        if earlier and self.same_run_params(params, self.last_run.given_params):
            states = {**earlier, **states}
        return states

    def own_params(self) -> dict[str, Any]:
        """Each param's value in the steps as defined, before ``set_params`` gave any,
        where every step that declares it gives the same: what a run given none runs
        with (a name the steps give different values has none)."""
        if self._own_params is not None:
            return self._own_params
        values: dict[str, Any] = {}
        texts: dict[str, str | None] = {}  # (as JSON: 1 and true are other values)
        for step in self._steps.values():
            for name, value in step.params.items():
                text = _json_text(value)
                values.setdefault(name, value)
                texts[name] = text if texts.get(name, text) == text else None
        return {name: value for name, value in values.items() if texts[name] is not None}

    def keep_own_params(self) -> None:
        """Remember :meth:`own_params` before ``set_params`` replaces the steps' values."""
        if self._own_params is None:
            self._own_params = self.own_params()

    def same_run_params(self, one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
        """Whether runs given params ``one`` and ``other`` ran with the same values: one
        given the file's own ``city=Paris`` is one given none."""
        from dagnb.runtime.history import same_params

        return same_params(one, other) or same_params(one, other, self.own_params())

    # -- data -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data in the workflow format (see :mod:`dagnb.workflows.loader`)."""
        from dagnb.workflows.loader import graph_to_dict

        return graph_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Graph:
        """A graph from workflow-format data; ``source`` names it in errors."""
        from dagnb.workflows.loader import graph_from_dict

        return graph_from_dict(data, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Graph:
        """Load a YAML workflow file."""
        from dagnb.workflows.loader import load

        return load(path)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text of the workflow; written to ``path`` when given."""
        from dagnb.workflows.loader import dump

        return dump(self, path)

    def show(self) -> Any:
        """Draw the graph (SVG with Graphviz, else a text tree), coloured by the last run."""
        from dagnb.views.picture import DagView

        return DagView(self)

    # -- the cache ------------------------------------------------------------------
    def plan(self, targets: Iterable[str] | str | None = None, **options: Any) -> Any:
        """DataFrame of what a run would do now: step, cached, key, reason; the options
        are ``cache_directory`` and ``executor`` (default: the settings; a step run in a
        container has another key than on the host)."""
        from dagnb.runtime.plan import plan

        _check_options(options, "graph.plan()", ("cache_directory", "executor", "targets"))
        _check_executor(options)
        return plan(self, targets, **options)

    def explain(self, name: str, **options: Any) -> list[str]:
        """Why step ``name`` would run, or that it is cached, in sentences; the options
        are ``cache_directory`` and ``executor`` (default: the settings)."""
        from dagnb.runtime.plan import explain

        _check_options(options, "graph.explain()", ("cache_directory", "executor"))
        _check_executor(options)
        if not isinstance(name, str):
            raise ConfigError(f"graph.explain() takes a step name, not {name!r}; give one "
                              "like graph.explain('train')")
        return explain(self, name, **options)

    def warm(self, targets: Iterable[str] | str | None = None, **options: Any) -> Run:
        """Fill the cache for the selected steps (runs what is missing); the Run. The
        options are :meth:`run`'s."""
        from dagnb.runtime.plan import warm
        from dagnb.runtime.prepare import GRAPH_RUN_OPTIONS, check_run_options

        # (checked here, not in plan.warm: prepare imports plan, and not the other way)
        check_run_options(options, "graph.warm()", GRAPH_RUN_OPTIONS)
        return warm(self, targets, **options)

    # -- running --------------------------------------------------------------------
    def run(self, targets: Iterable[str] | str | None = None, *,
            raise_on_failure: bool = False, **options: Any) -> Run:
        """Run the selected steps and wait; the options are :func:`dagnb.runtime.prepare.prepare`'s
        (``on_event=`` sees every event, as the CLI's progress lines do).

        A failed step is data in the returned Run; with ``raise_on_failure`` the run
        ends with :meth:`Run.raise_for_status` (:class:`~dagnb.RunFailed`) instead.
        """
        from dagnb.runtime.prepare import run_graph_sync

        _check_flag(raise_on_failure, "raise_on_failure")
        run = run_graph_sync(self, targets, **options)
        return run.raise_for_status() if raise_on_failure else run

    async def arun(self, targets: Iterable[str] | str | None = None, *,
                   raise_on_failure: bool = False, **options: Any) -> Run:
        """Run the selected steps from async code (``await graph.arun()``); as :meth:`run`."""
        from dagnb.runtime.prepare import run_graph_async

        _check_flag(raise_on_failure, "raise_on_failure")
        run = await run_graph_async(self, targets, **options)
        return run.raise_for_status() if raise_on_failure else run


def _inferred_needs(fn: Callable[..., Any], params: Mapping[str, Any] | None) -> list[str]:
    """Parameters without defaults that are not params name upstream steps."""
    params = params or {}
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty
        and p.name not in params
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


@cached_per_function
def _named_parameters(func: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    """The parameters a run may give a value (not ``*args`` or ``**kwargs``)."""
    return tuple(
        p for p in inspect.signature(func).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def _check_graph_arguments(name: Any, steps: Any) -> None:
    """Refuse ``Graph([a, b])`` (the steps given as its name: a graph of no step, whose
    runs ran nothing and said nothing) and ``Graph("g", {"a": a})`` (a mapping: its keys
    were taken for steps), each with the call that works."""
    if not isinstance(name, str):
        given = (f"a {type(name).__name__}" if isinstance(name, Iterable)
                 else checks.short_repr(name, 40, one_line=True))
        raise InvalidStepError(f"Graph(name, steps): the first argument is the graph's name, "
                               f"not {given}; write Graph('pipeline', [step, ...])")
    if isinstance(steps, Mapping):
        raise InvalidStepError(f"Graph({name!r}, steps): steps is a list of Steps, not a "
                               "mapping; pass list(steps.values())")


def _mount_fix(host: str, path: Path) -> str:
    """``did you mean 'data'?`` for a file or folder beside the missing one whose name is
    close (``dat`` for ``data``), written as the mount was; else how to fix the path."""
    meant = checks.close_sibling(host, path.parent)
    return "create it or fix the path" if meant is None else f"did you mean {meant!r}?"


def _defaulted_step_names(step: Step, steps: Mapping[str, Step]) -> list[str]:
    """The parameters of ``step``'s function named after another step of the graph that
    it neither needs nor is given as a param, and that have a default: they get that
    default, never the step's result."""
    return [p.name for p in _named_parameters(step.func)
            if p.default is not p.empty and p.kind is not p.POSITIONAL_ONLY
            and p.name in steps and p.name != step.name
            and p.name not in step.needs and p.name not in step.params]


def _from_a_workflow_file(func: Any) -> bool:
    """Whether ``func`` is a workflow file's ``python:`` function (of the module dagnb
    imported it from)."""
    return str(getattr(func, "__module__", "")).startswith(STEPS_MODULE_PREFIX)


# ``$DAGNB_IN/<name>``, ``${DAGNB_IN}/<name>`` or ``"$DAGNB_IN"/<name>`` in a command: the
# name whole, a step's name could be (not a glob's ``ma*``, nor ``make.csv``)
_INPUT_FOLDER = re.compile(
    r"\$(?:DAGNB_IN\b|\{DAGNB_IN\})[\"']?/([A-Za-z_][A-Za-z0-9_-]*)(?![A-Za-z0-9_.*?\[-])")
# a shell comment: ``#`` starting a word, to the end of its line
_COMMENT = re.compile(r"(?:^|(?<=\s))#.*$", re.MULTILINE)


def _input_folders_named(run: str | tuple[str, ...] | None) -> list[str]:
    """The names ``run`` reads as ``$DAGNB_IN/<name>``, outside comments, in order."""
    text = run if isinstance(run, str) else "\n".join(run or ()).replace("$$", "")
    if "DAGNB_IN" not in text:  # (an argv item's $$DAGNB_IN is the text, no read)
        return []
    if "#" in text:
        text = _COMMENT.sub("", text)
    return list(dict.fromkeys(_INPUT_FOLDER.findall(text)))


def _warn_of_written_secrets(step: Step, referencing: Collection[str] = ()) -> None:
    """Warn of a secret written into a step's env (``DB_PASSWORD: ...``, a URL's
    password): a run masks it and a key does not show it, but whoever reads the
    workflow file or the notebook reads it, and a container gets it as a plain variable.
    Not of one whose value is a variable's name (``${DB_PASS}``, in ``referencing``):
    :func:`_warn_of_references_in_env` said what it is."""
    for name, value in written_secrets(step.env).items():
        variable = name.partition(":")[0]
        if variable in referencing and _is_a_reference(value):
            continue
        what = "a URL's password" if name.endswith(":password") else "a secret (by its name)"
        checks.warn_user(
            f"step {step.name!r}: env {variable} holds {what} written into the step: runs "
            "mask it and the cache leaves it out, but the workflow file or notebook holds "
            f"it in clear; remove it from env, set {variable} in the environment and list "
            "it under the step's secrets")


def _warn_of_references_in_env(step: Step) -> set[str]:
    """Warn of an env value holding ``$NAME`` or ``${NAME}``: dagnb passes env values as
    written, so the step gets the text (``OUTDIR: $DAGNB_OUT/sub`` made a folder named
    ``$DAGNB_OUT``), or a secret's name for its value (``PGPASSWORD: ${DB_PASS}``). A
    warning, not a refusal: a value may mean its ``$`` (a notebook's ``hello $user``),
    and there is no other way to write it. The variables warned of."""
    warned = set()
    for variable, value in step.env.items():
        found = first_reference(value)
        if found is None:
            continue
        written, name = found
        held = written_secrets({variable: value})
        if any(not _is_a_reference(v) for v in held.values()):  # a secret written in it
            continue  # (a $ in a password: said as a secret written in, its text unshown)
        warned.add(variable)
        said = (f"step {step.name!r}: env {variable} holds {written}, which dagnb does not "
                "expand in env values: the step gets the text as written")
        shown = json.dumps(value)
        if name in step.secrets or named_surely_secret(name) or held:
            checks.warn_user(
                f"{said}, and a secret reaches a step under its own name only; to pass it "
                f"in {variable}, list {name} under the step's secrets and set {variable} from "
                f"it in the command (shell text: {variable}={shown} cmd ...), or export "
                f"{variable} itself and list it under secrets")
            continue
        item = (f"; an item {shown} of a run list expands it" if name.startswith(OURS)
                else "")
        checks.warn_user(f"{said}; to expand it, build the value in the command's shell "
                         f"text ({variable}={shown} cmd ...){item}")
    return warned


def _is_a_reference(text: str) -> bool:
    found = first_reference(text)
    return found is not None and found[0] == text


def _warn_of_params_read_as_variables(step: Step) -> None:
    """Warn of a command that reads a param of its step as a variable of its name
    (``echo $label`` for ``params: {label: x}``): no such variable is set, so it reads
    empty, silently. Not one the command assigns (``label=x``, ``for label in``), nor
    one its ``env`` or this process's environment sets, nor text in single quotes or
    comments (``awk '{print $n}'``: the shell expands neither). An argv list's item
    (``[echo, "$label"]``) reaches the program as written (:mod:`dagnb.model.expand`)."""
    if step.params and step.run and not isinstance(step.run, str):
        _warn_of_params_read_in_argv(step)
        return
    if not step.params or not isinstance(step.run, str) or "$" not in step.run:
        return
    text = _SINGLE_QUOTED.sub("", step.run) if "'" in step.run else step.run
    text = _COMMENT.sub("", text) if "#" in text else text
    for name in step.params:
        if (name in step.env or name in os.environ
                or not re.search(_READ.format(name=re.escape(name)), text)
                or re.search(_SET.format(name=re.escape(name)), text)):
            continue
        checks.warn_user(
            f"step {step.name!r}: its command reads ${name}, which is not set (it reads as "
            f"empty); its param {name!r} is in ${param_env_name(name)} (and all its params, "
            "as JSON, in $DAGNB_PARAMS)")


def _warn_of_params_read_in_argv(step: Step) -> None:
    read = {name for item in step.run or () for name in references(item)}
    for name in step.params:
        if name in read:  # (no item expands it, whatever the environment holds)
            checks.warn_user(
                f"step {step.name!r}: its run list holds ${name}, which reaches the program "
                "as written (an item expands dagnb's $DAGNB_ variables alone); its param "
                f"{name!r} is in ${param_env_name(name)} (and all its params, as JSON, in "
                "$DAGNB_PARAMS)")


_SINGLE_QUOTED = re.compile(r"'[^']*'")
# $name or ${name...} read; name assigned, or the variable of a for or a read
_READ = r"\$(?:{name}\b|\{{{name}[}}:#%/^,@-])"
_SET = r"(?:^|[\s;&|(]){name}=|\b(?:for|read)\s+{name}\b"


def _unneeded_read_message(step: Step, names: list[str]) -> str:
    """``step 'use' reads $DAGNB_IN/make but does not need 'make'; add needs: [make]``."""
    reads = _listed([f"$DAGNB_IN/{name}" for name in names], "and")
    needed = _listed([repr(name) for name in names], "or")
    if step.needs:
        them = "it" if len(names) == 1 else "them"
        fix = f"add {them} to its needs: [{', '.join((*step.needs, *names))}]"
    else:
        fix = f"add needs: [{', '.join(names)}]"
    return f"step {step.name!r} reads {reads} but does not need {needed}; {fix}"


def _listed(items: list[str], word: str) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _check_signature(step: Step) -> None:
    func = _function_name(step.func)
    for parameter in _named_parameters(step.func):
        name, required = parameter.name, parameter.default is parameter.empty
        given = name in step.needs or name in step.params
        # (every executor passes results and params by keyword)
        if parameter.kind is parameter.POSITIONAL_ONLY and (given or required):
            raise InvalidStepError(
                f"step {step.name!r}: parameter {name!r} of {func}() is positional-only "
                f"(before '/'), and dagnb passes it by name; remove the '/' from {func}()"
            )
        if required and not given:
            raise InvalidStepError(
                f"step {step.name!r}: parameter {name!r} of {func}() names "
                "no upstream step in needs and no param; add it to needs or params"
            )
        if name in step.needs and name in step.params:  # (the upstream's result wins:
            raise InvalidStepError(  # the param only changed the key; **kwargs takes none)
                f"step {step.name!r}: param {name!r} is upstream step {name!r} (needs) "
                f"too, whose result {func}() takes as `{name}`, never the param; rename "
                "the param, or the step"
            )


def _shown_file(path: Path) -> str:
    """``path`` relative to the working folder when it is in it (as the command named
    it, mostly), else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # (Windows: another drive)
        return str(path)
    return str(path) if relative.startswith(os.pardir) else relative


def _function_name(func: Any) -> str:
    """A function's name, or a callable object's class (which has no ``__name__``)."""
    return getattr(func, "__name__", None) or type(func).__name__


def _names_given(value: Any, field: str, what: str, example: str) -> list[str] | None:
    """Targets or tags, one name or several, as a list (None for none given)."""
    if value is None or isinstance(value, str):
        return value if value is None else [value]
    if not isinstance(value, Iterable):
        raise ConfigError(f"{field} {value!r} is not {what} or a list of them; give one "
                          f"like {field}={example!r} or {field}=[{example!r}]")
    return list(value)


def _folder(base_dir: Any) -> Path | None:
    if base_dir is not None and not isinstance(base_dir, (str, os.PathLike)):
        raise ConfigError(f"base_dir {base_dir!r} is not a path; give a folder as text or "
                          "a Path, like base_dir='.'")
    return Path(base_dir) if base_dir is not None else None


def _check_options(options: Mapping[str, Any], call: str, known: tuple[str, ...]) -> None:
    """Refuse a keyword ``call`` does not take, with the closest one: passed through, it
    failed as a TypeError of an internal function."""
    checks.known_keys(options, known, call, ConfigError, noun="option",
                      see=f" (see help({call.replace('graph.', 'dagnb.Graph.')[:-2]}))")


def _check_executor(options: Mapping[str, Any]) -> None:
    """Refuse an executor name a run would refuse, with its words: a plan or an
    explanation for no executor would answer as though for the default one."""
    name = options.get("executor")
    if isinstance(name, str) and name not in EXECUTOR_NAMES:
        raise ExecutorUnavailable(
            f"unknown executor {name!r}; use 'auto', 'local', 'dagger' or 'dask'")


def _check_flag(value: Any, option: str) -> None:
    """Refuse a flag that is no bool (``"no"`` is true) in one line, as a count's is."""
    if not isinstance(value, bool):
        raise ConfigError(f"{option}={value!r} must be True or False")


def _quoted(names: Iterable[str]) -> str:
    """``'a', 'b'``: names as a message lists them (not as a Python list)."""
    return ", ".join(repr(name) for name in names)


def unknown_need_message(step: str, need: str, known: Iterable[str]) -> str:
    """Why ``step`` cannot need ``need``, with the closest step name (or the names) to
    write instead; a workflow file's loader says it too, naming the file first."""
    known = [name for name in known if name != step]  # (not itself: that is refused too)
    hint = checks.did_you_mean(need, known, otherwise=checks.choices_named(
        need, known, noun="other steps"))
    return f"step {step!r} needs {need!r}, which is not a step; {hint}"


def _unknown_message(name: str, known: Iterable[str], where: str) -> str:
    return f"no step named {name!r} {where}; " + checks.choices_named(name, known)


def _kind(path: Path) -> str:
    """What a path that is neither file nor folder is, for an error message."""
    if path.is_fifo():
        return "a FIFO"
    if path.is_socket():
        return "a socket"
    return "a device" if path.is_char_device() or path.is_block_device() else "not readable"


def _json_text(value: Any) -> str | None:
    """``value`` as JSON, as a run's record keeps it; None for what JSON cannot hold (a
    Python step's object param, which is no value a run can be given from outside)."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return None
