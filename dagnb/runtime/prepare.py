"""Running a graph: preparation, then the scheduler on dagnb's one event loop.

One way in, as ``dask/local.py`` has: :func:`prepare` validates, selects the steps and
builds the Run and its Scheduler (the executor is one of its options); ``_execute`` runs
them. Three ways to wait share it: ``run_graph_sync`` (behind ``graph.run()``, ``warm``
and the ``dagnb`` command) waits, ``run_graph_async`` (behind ``await graph.arun()``)
awaits from any loop, ``start_background`` (the notebook) returns the Run at once. Bad
input raises a DagnbError before any step starts and nothing is lost.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.cache import local_folder, refuse_foreign_folder
from dagnb.cache.forks import ForkSafeCount
from dagnb.cache.location import pinned_folder
from dagnb.cache.steps import StepCache, refresh_setting
from dagnb.cache.store import only_reading
from dagnb.checks import choices_named, known_keys, short_repr, warn_user
from dagnb.config import check_cache_mode, context, settings
from dagnb.errors import (
    CacheMissError,
    ConfigError,
    DagnbError,
    ExecutorUnavailable,
    InvalidStepError,
    StepNotFoundError,
)
from dagnb.executors import container_steps, get_executor, loop
from dagnb.executors.capture import capturing
from dagnb.model.contract import (
    known_secret_values,
    refuse_secret_values,
    resolve_secrets,
    secret_not_set,
    unset_secret,
)
from dagnb.model.masking import environ_secrets, written_secrets
from dagnb.model.step import Step, parse_duration
from dagnb.runtime.events import Listener
from dagnb.runtime.history import (
    RunFolder,
    graph_origin,
    last_states,
    make_side_home,
    notebook_run_params,
    side_home,
    unfinished,
)
from dagnb.runtime.reads import PublishedReads, checked_after, with_after
from dagnb.runtime.run import Run
from dagnb.runtime.scheduler import Links, RunOptions, Scheduler, step_links
from dagnb.runtime.selection import Selection, selection_of
from dagnb.runtime.unmounted import NOTEBOOK_WORDS, PYTHON_WORDS, WORKFLOW_WORDS, FrontEndWords

if TYPE_CHECKING:
    from dagnb.model.graph import Graph

__all__ = ["prepare", "refuse_at_start", "refuse_services_off_dagger", "require_engine",
           "run_graph_async", "run_graph_sync", "start_background"]


def _refuse_in_a_reimported_script() -> None:
    """A run from a script's top level while a process that multiprocessing spawned
    (dask's LocalCluster workers, a Pool) imports that script again: the run would
    start in every such process, and wait there on the key the parent holds."""
    if "__mp_main__" not in sys.modules:  # (only a spawned process has one)
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == (
                "__mp_main__"):
            raise DagnbError(
                "a run started while a worker process imported your script again "
                "(multiprocessing's spawn: dask's workers, a Pool); put the script's "
                "run under if __name__ == \"__main__\":")
        frame = frame.f_back


def check_run_options(
    options: Mapping[str, Any], call: str, known: frozenset[str] | None = None
) -> None:
    """Refuse an option :func:`prepare` does not take, naming ``call`` (the API the user
    called) and the closest option: passed through, it failed as a TypeError of
    ``prepare()``. Options that are all known cost one set comparison (0.2 µs)."""
    known = known or RUN_OPTIONS
    if options.keys() <= known:
        return
    known_keys(options, sorted(known), call, ConfigError, noun="option",
               see=RUN_OPTIONS_DOC)


def run_graph_sync(graph: Graph, targets: Iterable[str] | str | None = None,
                   words: FrontEndWords = PYTHON_WORDS, /,
                   **options: Any) -> Run:
    """Run and wait. Options are those of :func:`prepare`; the dagnb command gives its
    ``words`` (positional: ``graph.run(words=...)`` is refused as unknown)."""
    check_run_options(options, "graph.run()", GRAPH_RUN_OPTIONS)
    if loop.in_loop_thread():  # (run_sync's own refusal named no call of the user's)
        raise DagnbError(
            f"graph.run() of {graph.name!r} was called by a step that runs on dagnb's loop "
            "(a Python step run in-process), where no run can be waited for; make that "
            "step async and 'await graph.arun()', or make the graph's steps its upstream")
    run, scheduler = prepare(graph, targets, words=words, **options)
    loop.run_sync(_followed(run, scheduler))
    return run


async def run_graph_async(
    graph: Graph, targets: Iterable[str] | str | None = None, **options: Any
) -> Run:
    """Run from async code; the work happens on dagnb's loop whatever loop awaits."""
    check_run_options(options, "graph.arun()", GRAPH_RUN_OPTIONS)
    run, scheduler = prepare(graph, targets, **options)
    # (awaited on dagnb's loop itself, it runs in the caller's task: nothing of its own)
    execute = _execute if loop.in_loop_thread() else _followed
    await loop.run_async(execute(run, scheduler))
    return run


async def _followed(run: Run, scheduler: Scheduler) -> None:
    """:func:`_execute`, the Run following the future it runs under, made by
    ``loop.run_sync`` or ``loop.run_async`` (``start_background`` hands it over itself):
    ``run.cancel()`` interrupts the one it owns of a Python step's call holding the loop,
    and ``done``, ``wait()`` and ``holding_the_loop()`` see it run, from any thread."""
    future = loop.current_future()
    if future is not None:
        run.follow(future)
    await _execute(run, scheduler)


def start_background(
    graph: Graph, targets: Iterable[str] | str | None = None, *,
    displays_by_view: bool = False, before_start: Callable[[Run], None] | None = None,
    after: Mapping[str, Iterable[str]] | None = None, reads: PublishedReads | None = None,
    words: FrontEndWords = NOTEBOOK_WORDS, **options: Any
) -> Run:
    """Start the run and return at once; ``run.wait()`` blocks, ``run.cancel()`` stops.
    ``displays_by_view``: the caller's view publishes what its steps display
    (:attr:`Run.displays_by_view`), set before any step starts; ``before_start`` is
    called with the Run then too (to follow its steps from the first); ``after``,
    ``reads`` and ``words`` (the notebook's by default): see :func:`prepare`."""
    check_run_options(options, "start_background()")
    run, scheduler = prepare(graph, targets, after=after, reads=reads,
                             words=words, **options)
    run.displays_by_view = displays_by_view
    if before_start is not None:
        before_start(run)
    future = loop.TaskFuture(loop.get_loop(), _execute(run, scheduler))
    run.follow(future)  # before its task can start: a stop then reaches its steps
    try:
        future.start()
    except KeyboardInterrupt:  # (its first step may be running already: the caller
        future.cancel()        # stops the run it had from before_start, see Session.start)
        raise
    return run


async def _execute(run: Run, scheduler: Scheduler) -> None:
    """Run it. Nothing is returned: the result of its task and of the future it runs
    under (which the Run follows) would hold the Run in a cycle with that future."""
    task = asyncio.current_task()
    assert task is not None
    running_loop = asyncio.get_running_loop()
    run.on_cancel(lambda: running_loop.call_soon_threadsafe(task.cancel))
    with capturing(scheduler.outside_mask()), _heap_frozen(), scheduler.children_tagged:
        # a long run collects its old garbage as any program does: it is the short
        # ones whose cost the full passes would multiply
        _arm_valve(running_loop)
        try:
            await scheduler.execute()
        except asyncio.CancelledError:
            if run.cancel_requested:
                return  # cancelled on request: the Run records it, nothing to raise
            raise
        finally:
            run.finish()


_frozen_runs = 0
_frozen_at = 0.0  # when the first of the live runs froze the heap (time.monotonic)
_saved_threshold = (700, 10, 10)
_NO_FULL_PASS = 1 << 30  # gen-2 threshold while runs are live: never reached
FULL_PASSES_AFTER = 30.0  # seconds into a run after which full passes are let run again
# the backstop of the full passes (_collect_if_grown): the heap is collected as a run
# begins once it grew by a quarter and this many objects since the last full pass
HEAP_GROWTH_FLOOR = 50_000
HEAP_LOOKS_EVERY = 0.1  # seconds at least between two looks at the heap's size
# and more, so that looks take 0.3% of the time at most: the seconds between two looks
# per second the last one took (a look walks every object, at 5 to 10 ns an object as
# measured once; 75 on this 2-core virtual machine, 5.8 ms for a heap of 77,000:
# spaced by the heap's size alone, they took 2.5% of a kernel's back-to-back runs)
_LOOK_SPACING = 1 / 0.003
_UNCOUNTED = -1
_heap_after_full_pass = _UNCOUNTED  # objects the last full pass left (made here, or seen)
_full_passes_seen = -1  # the collector's count of full passes as the heap was last looked at
_next_look = 0.0  # time.monotonic() of the next look


class _heap_frozen:  # (lower case: used as the function it was, ``with _heap_frozen():``)
    """Keep the collector's full passes away from a run while it runs: the objects that
    existed before it are frozen (a large graph or notebook is not re-scanned), and the
    gen-2 threshold is out of reach, so the run's own objects (an entry, events and an
    outcome per step) are not scanned again and again as they grow: full passes over
    them made a 10,000-step run cost a fifth more per step than a 1,000-step one.
    Young objects are still collected (gens 0 and 1), and so is everything after (or
    after ``FULL_PASSES_AFTER`` seconds of a long run, :func:`_allow_full_passes`), or
    as a run begins (:func:`_collect_if_grown`: runs back to back leave Python's own
    full passes no time between them). (A class: a generator costs every run some 100
    instructions more.)"""

    __slots__ = ()

    def __enter__(self) -> None:
        global _frozen_runs, _saved_threshold, _frozen_at
        if _frozen_runs == 0:
            _frozen_at = time.monotonic()
            gc.freeze()
            if _frozen_at >= _next_look:  # (most runs: not yet)
                _collect_if_grown()
            _saved_threshold = gc.get_threshold()
            gc.set_threshold(_saved_threshold[0], _saved_threshold[1], _NO_FULL_PASS)
        _frozen_runs += 1

    def __exit__(self, *exc_info: object) -> None:
        global _frozen_runs
        _frozen_runs -= 1
        if _frozen_runs == 0:
            gc.set_threshold(*_saved_threshold)
            gc.unfreeze()


# graphs of this many steps are prepared with the heap frozen: a graph just built leaves
# a full pass due, which their preparation's allocations set off (97 ms, an eighth of a
# 100,000-step run's preparation, walking the graph's own objects)
PREPARE_FROZEN_FROM = 1_000


def _frozen_if_big(prepare: Callable[..., tuple[Run, Scheduler]]
                   ) -> Callable[..., tuple[Run, Scheduler]]:
    """``prepare``, the heap frozen as it prepares a graph of ``PREPARE_FROZEN_FROM`` steps
    or more (a smaller one's objects are too few for a freeze to pay). Thawed as the run
    ends (:class:`_heap_frozen`'s exit), or at once if refused while no run is live. A
    freeze and no more, in the caller's thread: what :class:`_heap_frozen` counts and
    sets is the loop thread's alone (a full pass due still runs, over what the
    preparation made)."""
    @functools.wraps(prepare)
    def frozen_if_big(graph: Graph, *args: Any, **kwargs: Any) -> tuple[Run, Scheduler]:
        if len(graph) < PREPARE_FROZEN_FROM:
            return prepare(graph, *args, **kwargs)
        gc.freeze()
        try:
            return prepare(graph, *args, **kwargs)
        except BaseException:
            if not _frozen_runs:  # (a run ending meanwhile thaws it anyway)
                gc.unfreeze()
            raise

    return frozen_if_big


def _collect_if_grown() -> None:
    """The backstop of the full passes :class:`_heap_frozen` keeps from runs: a kernel's
    runs back to back leave too few allocations between them for Python's own to
    trigger, and cyclic garbage (a step's, an exception's traceback) piled up for the
    kernel's life. So as the first live run freezes the heap, at most once a
    ``HEAP_LOOKS_EVERY`` seconds, and rarer as a look takes longer (counting the frozen
    objects walks them all, in CPython 3.11: see ``_LOOK_SPACING``), it is collected
    fully first if it grew by more than a quarter and ``HEAP_GROWTH_FLOOR`` objects
    since the last full pass (Python's own rule: the objects promoted since, beyond a
    quarter of the long-lived ones). The run's own objects are not there yet. Not while
    the collector is disabled (``gc.disable()``).

    The heap a full pass made elsewhere left (Python's own, a ``gc.collect()``; none yet
    in a new process) is counted at the next look: a process that runs once, or whose
    full passes run between looks (the benchmarks'), never walks its heap."""
    global _heap_after_full_pass, _full_passes_seen, _next_look
    if not gc.isenabled():
        return
    walked = 0.0  # seconds the count took
    passes = gc.get_stats()[2]["collections"]
    if passes != _full_passes_seen:
        _heap_after_full_pass = _UNCOUNTED
    else:
        began = time.monotonic()
        size = gc.get_freeze_count()  # (every object: the heap was frozen just now)
        walked = time.monotonic() - began
        if _heap_after_full_pass == _UNCOUNTED:
            _heap_after_full_pass = size
        elif size - _heap_after_full_pass > max(HEAP_GROWTH_FLOOR, _heap_after_full_pass // 4):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            size = _heap_after_full_pass = gc.get_freeze_count()
            passes = gc.get_stats()[2]["collections"]
    _full_passes_seen = passes
    _next_look = time.monotonic() + max(HEAP_LOOKS_EVERY, walked * _LOOK_SPACING)


def _until_full_passes() -> float:
    """Seconds until full passes may run again: counted from when the heap was frozen,
    so that runs that overlap back to back do not keep them away for ever."""
    return max(0.0, FULL_PASSES_AFTER - (time.monotonic() - _frozen_at))


# the timer that lets full passes run again: its loop, when it fires (time.monotonic)
_valve: tuple[asyncio.AbstractEventLoop, float, asyncio.TimerHandle] | None = None


def _arm_valve(loop: asyncio.AbstractEventLoop) -> None:
    """Have full passes let run again ``FULL_PASSES_AFTER`` seconds after the heap froze
    (a run on the loop thread). One timer for all runs, left armed as they end, and
    armed again only to fire sooner (a timer made and cancelled per run cost a run some
    200 instructions): as it fires, it lets them run if live runs have lasted that long
    since the heap froze, else waits again for the rest of that time, if any run is live
    (:func:`_valve_fires`)."""
    global _valve
    due = _frozen_at + FULL_PASSES_AFTER
    valve = _valve
    if valve is not None and valve[0] is loop:
        if valve[1] <= due:
            return  # (most runs: armed as the runs before ended, to fire sooner)
        valve[2].cancel()
    _valve = (loop, due, loop.call_later(max(0.0, due - time.monotonic()), _valve_fires))


def _valve_fires() -> None:
    global _valve
    _valve = None
    if not _frozen_runs:
        return  # the runs it was armed for ended (the next one arms it again)
    if _until_full_passes() > 0:  # (the heap froze again since it was armed)
        _arm_valve(asyncio.get_running_loop())
    else:
        _allow_full_passes()


def _allow_full_passes() -> None:
    """Let full passes run again while runs are still live, over every object: old
    garbage of a long run is collected, and so is what was garbage already as the heap
    froze (runs that keep overlapping, in a kernel's background, would otherwise keep
    it frozen, uncollected, for as long as they go on)."""
    if _frozen_runs:
        gc.unfreeze()
        gc.set_threshold(*_saved_threshold)


def check_retries(steps: Iterable[Step]) -> None:
    """Refuse, before anything runs, a step whose ``retries`` the retry layer would refuse."""
    from dagnb.retry.policy import RetryPolicy

    for step in steps:
        if step.retries is not None and not isinstance(step.retries, int):
            try:
                RetryPolicy.from_value(step.retries)
            except DagnbError as exc:
                raise InvalidStepError(f"step {step.name!r}: {exc}") from None


@_frozen_if_big
def prepare(
    graph: Graph,
    targets: Iterable[str] | str | None = None,
    *,
    tags: Iterable[str] | str | None = None,
    only_failed: bool = False,
    max_concurrency: int | None = None,
    timeout: float | str | None = None,
    fail_fast: bool = False,
    executor: Any = None,
    cache: bool | None = None,
    cache_mode: str | None = None,
    refresh: bool | Iterable[str] = False,
    skip_cache: bool | Iterable[str] | None = None,
    cache_directory: str | Path | None = None,
    cache_version: str | None = None,
    ttl: float | str | None = None,
    retries: Any = None,
    enable_retry: bool | None = None,
    use_circuit_breaker: bool = True,
    sleep: Any = None,
    on_event: Listener | None = None,
    after: Mapping[str, Iterable[str]] | None = None,
    reads: PublishedReads | None = None,
    words: FrontEndWords = PYTHON_WORDS,
) -> tuple[Run, Scheduler]:
    """Validate the graph, select the steps and build the Run and its Scheduler.

    Parameters
    ----------
    targets, tags, only_failed
        Which steps (always with their upstream): names, tags, or those of the last
        run that did not succeed, among the runs given the same params
        (:func:`~dagnb.workflows.params.set_params`). Nothing given: every step.
    max_concurrency
        Steps running at once (default: the ``max_concurrent_executions`` setting).
    timeout
        Limit for the whole run (seconds or '10m'); steps still running are cancelled.
    fail_fast
        Stop everything at the first failure instead of finishing independent branches.
    executor
        'auto', 'local', 'dagger' or an Executor; a step's own ``executor`` wins.
    cache_mode, cache
        What the run does with the cache (default: the ``cache_mode`` setting):
        ``"read-write"``; ``"read-only"`` (hits are used, nothing is written to the
        cache folder: the run's record goes to a folder of this user's outside it,
        :func:`~dagnb.runtime.history.side_home`); ``"fail-on-miss"`` (a
        :class:`~dagnb.errors.CacheMissError` listing every step that would run, with
        why, before anything runs or any cache folder is made); ``"off"`` (no lookups,
        no entries; the run's record is kept under ``.runs`` for ``only_failed``, in
        the side home where the cache folder cannot be written).
        ``cache=False`` is the older spelling of ``"off"``; ``cache=True`` turns an
        ``"off"`` setting into ``"read-write"``.
    refresh, skip_cache, cache_directory, cache_version, ttl
        ``refresh`` (alias ``skip_cache``) runs steps again and overwrites their entries
        (True for all, or names); ``ttl`` (seconds, '1h' or 'never') for the entries of steps
        that set none.
    retries
        Default retry policy for steps that set none (a number or a mapping).
    enable_retry, use_circuit_breaker
        False retries no step at all / lets no executor's circuit breaker hold a step
        back, whatever the steps ask (the platform's per-execution switches);
        ``enable_retry`` None takes the ``enable_retry`` setting.
    on_event
        Called with each of the run's events from its first (the CLI's progress
        lines); ``run.events.subscribe`` does the same once the Run exists.
    after
        Step -> steps it starts after, ordering only (a notebook cell reading a
        variable another cell's step publishes; the notebook's, not an option of
        ``graph.run``): a target brings them into the run as it brings its needs, and
        one that fails skips it, but neither its key nor its arguments see them.
    reads
        What the notebook's steps read of the variables others publish
        (:class:`~dagnb.runtime.reads.PublishedReads`): ``after`` when that is None,
        and what ``fail-on-miss`` looks ahead with (a reader of a step that runs
        would run too; one of a cached step is keyed on that entry's result).
    words
        How a warning says to mount a file and to run a step again, in the words of
        the front end that started the run (:class:`~dagnb.runtime.unmounted.FrontEndWords`:
        ``mounts: {...}`` and ``--refresh-step load``); ``graph.run``'s ``mounts={...}``
        and ``refresh=["load"]`` by default. Not an option of ``graph.run``: the dagnb
        command gives it to ``run_graph_sync``, the notebook to ``start_background``.
    """
    _refuse_in_a_reimported_script()
    config = settings()
    graph.validate()
    if graph.workflow_file is None and not graph.given_params:  # (dagnb run NOTEBOOK -p:
        given = notebook_run_params()  # its runs record them, and --only-failed matches
        if given:  #                     them, as a file's; a graph of its cells, once)
            graph.given_params = given
    cache_directory = cache_directory or None  # None: the setting
    mode = _cache_mode(cache, cache_mode, config.cache_mode)
    cwd = os.getcwd()  # (for the two memos below: one look)
    # a store URL's local tier; a read-only run writes nothing there: any folder will do
    cache_dir = _local_folder(cache_directory, config, refuse=mode != "read-only", cwd=cwd)
    # (off too: it writes no entry, but its steps' folders and its record go elsewhere)
    unwritable = mode in ("read-write", "fail-on-miss", "off") and _unwritable(cache_dir)
    mode = _read_only_if_unwritable(mode, cache_dir) if unwritable else mode
    order = _selection(graph, targets, tags, only_failed, cache_dir)
    after = checked_after(graph, reads.after if reads is not None and after is None else after)
    if after:
        order = with_after(graph, order, after)
    selected = selection_of(graph, order)  # (what the checks look at, kept a while)
    steps = dict(selected.steps)  # (the Run's own)
    base_dir = _resolved(graph.base_dir or ".", cwd)
    refuse_at_start(graph, selected, cache_directory, base_dir)
    refreshed = _refresh(graph, refresh, skip_cache)
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ConfigError(f"max_concurrency={max_concurrency!r} must be a whole number >= 1")
    registry_secrets = config.credential_secrets(cache_directory)  # (its store's too)
    cache_for = functools.partial(
        StepCache, cache_directory, refresh=refreshed, version=cache_version, ttl=ttl,
        # this run's, the other cells' and the registry's
        secrets=[*known_secret_values(selected.graph_secret_steps),
                 *registry_secrets.values()],
        in_container=container_steps(executor or config.executor), workflow=graph.name,
    )
    options = RunOptions(
        max_concurrency=max_concurrency or config.max_concurrent_executions,
        timeout=parse_duration(
            timeout if timeout is not None else config.timeout_seconds, what="run timeout",
            error=ConfigError,  # (a run's option, not a step's)
        ),
        fail_fast=fail_fast,
        executor_for=_executor_chooser(executor or config.executor),
        cache=cache_for(mode=mode) if mode in ("read-write", "read-only") else None,
        retry_defaults=_retry_defaults(retries, config),
        base_dir=base_dir,
        step_timeout=config.step_timeout_seconds,
        retries_enabled=_switch("enable_retry", config.enable_retry if enable_retry is None
                                else enable_retry),
        circuit_breaker=_switch("use_circuit_breaker", use_circuit_breaker),
        after=after,
        reads=reads.variables if reads is not None else {},
        words=_words_for(graph, words),
    )
    if mode == "fail-on-miss":  # counted read-only, as plan does: a refused run makes no
        with only_reading("a fail-on-miss run's look ahead"):  # (damage is said so)
            _refuse_misses(graph, order, cache_for(mode="read-only"), reads)  # no folder
        # (a folder it may not write, a CI's read-only mount of a pulled cache: its hits
        # read as read-only reads them, with no bookkeeping written and nothing to warn of)
        options.cache = cache_for(mode=mode, read_only=unwritable)
    secret_values = _secrets_needed(graph, selected, options.cache, reads)
    default = executor or config.executor
    if "dagger" in selected.executors_named(default):
        require_engine(graph, steps, default, options.cache, reads)
    if selected.binding:
        refuse_services_off_dagger(steps, default)
    if sleep is not None:
        options.sleep = sleep
    run_id = _new_run_id()
    home, kept, records_home = _run_homes(mode, cache_dir, unwritable)
    folder = RunFolder(home, run_id, graph.workflow_file, graph.given_params, kept=kept,
                       origin=None if graph.workflow_file is not None else graph_origin(),
                       records_home=records_home)
    run = Run(run_id, graph.name, steps, order, folder)
    if on_event is not None:
        run.events.subscribe(on_event)
    graph.started(run)
    return run, Scheduler(run, options, secret_values, selected.others_secrets(os.environ),
                          # the variables named as secrets beyond doubt (HF_TOKEN), declared
                          # or not: masked and kept out of the cache, not withheld (an
                          # in-process step reads them, a command inherits them)
                          masked_only={**environ_secrets(), **registry_secrets,
                                       **_written_secrets(steps.values())},
                          links=_links_of(graph, selected, order, options.after))


def _written_secrets(steps: Iterable[Step]) -> dict[str, str]:
    """The secrets written into the steps' env (see ``written_secrets``), masked in the
    run's logs as the environment's are; by a name of their own (the step's first)."""
    found: dict[str, str] = {}
    for step in steps:
        if step.env:  # (most steps set none)
            for name, value in written_secrets(step.env).items():
                found.setdefault(f"{step.name}.env.{name}", value)
    return found


def _links_of(graph: Graph, selected: Selection, order: list[str],
              after: Mapping[str, tuple[str, ...]] | None) -> Links:
    """The links between the run's steps, kept by the graph until a step changes: a
    notebook's graph runs the same selection again and again (1,000 steps: 0.4 ms)."""
    if not after:  # (most runs: the selection's own)
        return selected.links()
    key = ("links", tuple(order), tuple(after.items()))
    return graph.derived(key, functools.partial(step_links, order, selected.steps, after))


def _words_for(graph: Graph, words: FrontEndWords) -> FrontEndWords:
    """The front end's words, but the mounts of a workflow file's steps in its YAML (a
    ``graph.run()`` of a loaded file is fixed in the file, run again from Python)."""
    if graph.workflow_file is None or words.mounts is WORKFLOW_WORDS.mounts:
        return words
    return dataclasses.replace(words, mounts=WORKFLOW_WORDS.mounts)


# prepare's parameters but the graph, read off its code so the list cannot drift from it
# (``targets`` is there for "did you mean": given as a keyword it never reaches options),
# and but ``after``, ``reads`` and ``words``: the front ends', given through
# start_background (the notebook) and run_graph_sync (the dagnb command)
_CODE = prepare.__wrapped__.__code__  # type: ignore[attr-defined]
RUN_OPTIONS = frozenset(
    _CODE.co_varnames[1:_CODE.co_argcount + _CODE.co_kwonlyargcount]) - {
        "after", "reads", "words"}
GRAPH_RUN_OPTIONS = RUN_OPTIONS | {"raise_on_failure"}  # graph.run()'s own too
RUN_OPTIONS_DOC = " (each is described in help(dagnb.runtime.prepare.prepare))"


def _writing_params(graph: Graph, selected: Selection) -> list[Step]:
    """The steps whose params a run writes to the cache folder: its own (those with
    params or env alone: the others hold no secret's value), and each that declares a
    param given from outside the file, which the run's record keeps."""
    given = graph.given_params
    if not given:
        return selected.valued
    steps = selected.steps
    return [step for step in graph
            if step.name in steps or not given.keys().isdisjoint(step.params)]


def refuse_at_start(graph: Graph, selected: Selection, cache_directory: str | Path | None,
                    base_dir: Path | None = None) -> None:
    """Refuse what a run of the ``selected`` steps refuses before anything runs without
    looking at the cache: a mount's path that does not exist, ``retries`` the retry layer
    refuses, a param or env value holding the value of a secret (the store's of
    ``cache_directory`` too). :func:`prepare`'s checks, and ``dagnb plan``'s, which says
    the run would refuse (``base_dir``: the graph's when None)."""
    if selected.mounting:  # (most mount none)
        graph.check_mounts(selected.mounting, base_dir)
    check_retries(selected.odd_retries)
    # (a step with no params and no env holds no secret's value)
    check_secret_values(graph, _writing_params(graph, selected), cache_directory)


def check_secret_values(graph: Graph, steps: Iterable[Step] | None = None,
                        store: str | Path | None = None) -> None:
    """Refuse a param or env value of ``steps`` (all the graph's by default) that holds
    the value of a secret a run of the graph masks: one its steps declare, as set now,
    a variable named as a secret beyond doubt (``HF_TOKEN``), or the registry's, or the
    credentials of the run's store (``store``, its ``cache_directory``; None: the
    setting's) (see :func:`~dagnb.model.contract.refuse_secret_values`)."""
    checked = list(graph if steps is None else steps)
    if not any(step.params or step.env for step in checked):  # (most: no secret looked up)
        return
    names = sorted({name for step in graph for name in step.secrets})
    declared = {name: os.environ[name] for name in names if os.environ.get(name)}
    # (and the variables named as secrets beyond doubt: the run masks them undeclared)
    refuse_secret_values(checked, {**environ_secrets(), **declared,
                                   **settings().credential_secrets(store)})


_RESOLVED: dict[tuple[str, str], Path] = {}
_LOCAL: dict[tuple[Any, ...], Path] = {}


def _local_folder(directory: str | Path | None, config: Any, *, refuse: bool = True,
                  cwd: str | None = None) -> Path:
    """:func:`~dagnb.cache.local_folder`, remembered per folder, settings, working
    directory (``cwd``, if the caller has it), pinned folder and home, as
    :func:`_resolved` is: it resolves a path on every run otherwise. ``refuse``: a folder
    of other things than a cache's is refused (once per folder: a run makes it a cache)."""
    memo = (_folder_text(directory), config.cache_directory, config.cache_local_directory,
            cwd or os.getcwd(), pinned_folder(), os.environ.get("HOME"), refuse)
    found = _LOCAL.get(memo)  # (HOME: for "~"; the pin: a notebook's, set at %load_ext)
    if found is None:
        if len(_LOCAL) > 256:
            _LOCAL.clear()
        found = local_folder(directory)
        if refuse:
            refuse_foreign_folder(found)
        _LOCAL[memo] = found
    return found


def _folder_text(directory: Any) -> str | None:
    """``os.fspath`` of a run's ``cache_directory`` (None: the setting's); a value
    that is no path is refused in one line, not as fspath's TypeError."""
    try:
        return None if directory is None else os.fspath(directory)
    except TypeError:
        raise ConfigError(
            f"cache_directory={short_repr(directory, one_line=True)} (type "
            f"{type(directory).__name__}) is not a folder; use a path or a store URL such "
            "as 's3://bucket/prefix'") from None


def _resolved(path: str | Path, cwd: str | None = None) -> Path:
    """``Path(path).resolve()`` of the base folder, remembered per working directory
    (``cwd``, if the caller has it): resolving costs a ``stat`` per path component, on
    every run. (A symlink re-pointed while the process runs is not seen: a base folder
    is not moved under a session.)"""
    memo = (os.fspath(path), cwd or os.getcwd())
    found = _RESOLVED.get(memo)
    if found is None:
        if len(_RESOLVED) > 256:
            _RESOLVED.clear()
        found = _RESOLVED[memo] = Path(path).resolve()
    return found


def _selection(
    graph: Graph, targets: Any, tags: Any, only_failed: bool, cache_dir: Path
) -> list[str]:
    """The steps to run. ``only_failed`` takes the states of the graph's last run in this
    process when that run was given the params the graph has now; else (a new process,
    params set since) the run history's, as ``dagnb run --only-failed`` does: a step's
    state counts only among the runs given the same params (one done, or failed, with
    city=Paris has not run with London; one given the file's own value has run with none).
    A step those runs do not have has not finished either if it is a workflow file's
    (the file's first run, a step new or renamed since: left out, they would run nothing
    and report success) or ran with other params (a graph of no file: a notebook cell
    never run is not taken for one that failed). With no run of the graph recorded at all
    (here or in the history), every step runs, as ``dagnb run --only-failed`` runs a file
    never run, and a warning says why. Targets or tags narrow it to the steps they need."""
    if not only_failed:
        return graph.select(targets, tags=tags)
    last = graph.last_run
    here = (graph.states_here() if last is not None
            and graph.same_run_params(last.given_params, graph.given_params) else {})
    if here.keys() >= set(graph.names):  # (every step ran here: the history adds none)
        return graph.select(targets, tags=tags, only_failed=True)
    name, source = graph.name, graph.workflow_file
    # with no file, only the runs of the script that built it: another script's graph of
    # the same name ("graph") that succeeded is not this one's
    origin = graph_origin() if source is None else None
    # the history's (a read-only run's too, recorded in the side home), and this
    # process's runs' over them: a step that failed in another process and has not run
    # here since (a run of a target here) is still to run again
    given = last_states(cache_dir, name, source, graph.given_params, graph.own_params(),
                        origin=origin)
    states = {**(given or {}), **here}
    # any run of it, whatever its params (a file's: read only when none with these is)
    ever = (given if source is not None and given is not None
            else last_states(cache_dir, name, source, origin=origin))
    if ever is None and last is None:  # (no run at all: selecting none would report success)
        _say_nothing_recorded(graph, cache_dir, origin, targets or tags)
        return graph.select(targets, tags=tags)
    ran = graph.names if source is not None else {
        *(ever or {}), *(last.states() if last is not None else {})}
    again = unfinished(states, (step.name for step in graph))
    again += [step for step in ran if step not in states and step in graph]
    needed = set(graph.select(targets, tags=tags))
    return graph.select([step for step in again if step in needed])


def _say_nothing_recorded(graph: Graph, cache_dir: Path, origin: str | None,
                          narrowed: Any) -> None:
    """One line saying ``only_failed`` found no run of the graph, so every step runs (as
    ``dagnb run --only-failed`` runs a workflow file never run): not a silent full run;
    worded as the command line's lines for a workflow file (its option's spelling)."""
    file = graph.workflow_file
    option, of = (("--only-failed", file.name) if file is not None else
                  ("only_failed", f"graph {graph.name!r}" + (f" built by {origin!r}"
                                                            if origin else "")))
    steps = "every step the targets or tags select" if narrowed else "every step"
    warn_user(f"dagnb: {option}: no run of {of} is recorded in {str(cache_dir)!r}, so "
              f"{steps} runs (those whose inputs are unchanged come from the cache)")


def _refresh(graph: Graph, refresh: Any, skip_cache: Any) -> bool | frozenset[str]:
    """``refresh`` or its other name ``skip_cache`` (the platform's), checked: a name
    must be one of the graph's steps, else nothing would be refreshed."""
    given = "refresh" if skip_cache is None else "skip_cache"  # (named as the user did)
    wanted = _refresh_setting(refresh if skip_cache is None else skip_cache, given)
    if (skip_cache is not None and refresh is not False
            and _refresh_setting(refresh, "refresh") != wanted):
        raise ConfigError(f"refresh={refresh!r} and skip_cache={skip_cache!r} disagree; "
                          "skip_cache is another name for refresh: give one of them")
    for name in sorted(wanted) if isinstance(wanted, frozenset) else ():
        if name not in graph:
            hint = choices_named(name, graph.names)
            raise StepNotFoundError(f"{given} names {name!r}, which is no step of graph "
                                    f"{graph.name!r}; {hint}")
    return wanted


def _refresh_setting(value: Any, given: str) -> bool | frozenset[str]:
    """:func:`refresh_setting`, its error naming the option as given (``skip_cache``)."""
    try:
        return refresh_setting(value)
    except ConfigError:
        raise ConfigError(f"{given}={value!r} must be True, False or a list of step "
                          "names") from None


def _cache_mode(cache: bool | None, cache_mode: str | None, setting: str) -> str:
    """The run's cache mode: ``cache_mode``, else ``cache`` (the older switch), else the
    ``setting``."""
    if cache_mode is not None:
        mode = check_cache_mode(cache_mode)
        if cache is not None and (mode != "off") != cache:
            raise ConfigError(f"cache={cache!r} and cache_mode={mode!r} disagree; give one")
        return mode
    if cache is None:
        return setting
    _switch("cache", cache)
    return ("read-write" if setting == "off" else setting) if cache else "off"


def _unwritable(cache_dir: Path) -> bool:
    """Whether the cache folder is there and this process may not write it."""
    return not os.access(cache_dir, os.W_OK) and os.path.isdir(cache_dir)


def _read_only_if_unwritable(mode: str, cache_dir: Path) -> str:
    """A ``read-write`` run on a cache folder this process may not write (a read-only
    mount, another user's folder) reads it as ``read-only`` does, said in one warning:
    else each step that missed would fail to make its folder or to take its key's lock
    there, and each write of the run's bookkeeping would warn."""
    if mode != "read-write":
        return mode
    warn_user(f"cache folder {str(cache_dir)!r} cannot be written (a read-only mount, or no "
              "write permission); this run only reads it, as cache_mode 'read-only' does")
    return "read-only"


def _refuse_misses(graph: Graph, order: list[str], cache: Any,
                   reads: PublishedReads | None) -> None:
    """``fail-on-miss``: raise CacheMissError naming every step the run would execute."""
    from dagnb.runtime.plan import misses

    found = misses(graph, order, cache, reads)
    if not found:
        return
    lines = [f"  {name}: {reason}" for name, reason in found]
    raise CacheMissError(
        f"cache_mode is 'fail-on-miss' and {_would_run(found)}; fill the cache first (run "
        "with cache_mode 'read-write', or pull it), or run with another cache_mode:\n"
        + "\n".join(lines),
        misses=found,
    )


def _would_run(found: list[tuple[str, str]]) -> str:
    """``2 steps would run`` (``, 1 may run``: keyed on what those make, see plan)."""
    from dagnb.runtime.plan import MAY_RUN

    may = sum(reason.startswith(MAY_RUN) for _, reason in found)
    will = len(found) - may
    said = f"{will} step{'' if will == 1 else 's'} would run"
    return said + (f", {may} may run" if may else "")


def _run_homes(mode: str, cache_dir: Path, unwritable: bool) -> tuple[Path, bool, Path | None]:
    """Where the run's folder goes, whether it is kept, and where its record goes (None:
    with its folder). In the cache folder, as ever (off too: ``--only-failed`` reads its
    record), unless the run may not write there: a ``read-only`` run's folder is
    temporary and its record goes to the cache folder's side home (``--only-failed``,
    ``dagnb history`` and ``dagnb logs`` read it with the cache folder's own: a failed
    read-only run is not passed over for an older one); an ``off`` run on a folder it may
    not write keeps both there (else every step failed to make its folder)."""
    if mode != "read-only" and not unwritable:
        return cache_dir, True, None
    side = make_side_home(cache_dir)
    if side is None:
        warn_user(f"dagnb: this run is not recorded: {str(side_home(cache_dir))!r}, where "
                  "runs that write nothing to the cache folder keep their records, cannot be "
                  "made; --only-failed, dagnb history and dagnb logs will not see it")
    if mode == "off" and side is not None:
        return side, True, None
    return _scratch_home(), False, side


def _scratch_home() -> Path:
    """Where ``read-only`` runs, which write nothing to the cache folder, keep their
    folders: a temporary folder of this process, removed at exit."""

    def make() -> Path:
        folder = Path(tempfile.mkdtemp(prefix="dagnb-runs-"))
        atexit.register(shutil.rmtree, folder, True)
        return folder

    return context().get("runs.scratch", make)


def _switch(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not valid; expected True or False")
    return value


def _executor_chooser(default: Any) -> Any:
    """Executors are made when a step first needs one, so a fully cached run works
    with no engine at all."""
    if not isinstance(default, str):  # an instance: checked once, not for each step
        executor = get_executor(default)  # (no Executor: the one-line error, now)
        return lambda step: get_executor(step.executor) if step.executor else executor
    if default == "dask":  # (a run's commands cannot go there: each step asks for it)
        raise ConfigError(
            "run(): executor = 'dask' is not valid; expected 'auto', 'local' or 'dagger' "
            "(give the Python steps to send to dask executor='dask')")
    if default not in ("auto", "local", "dagger"):
        get_executor(default)  # raises the one-line error now, before any step runs

    def executor_for(step: Step) -> Any:
        return get_executor(step.executor or default)

    return executor_for


def _secrets_needed(graph: Graph, selected: Selection, cache: Any,
                    reads: PublishedReads | None) -> dict[str, dict[str, str]]:
    """Each step's secrets, read from the environment; one not set is refused now,
    unless its step comes from the cache: a fully cached run needs no secret, as it
    needs no engine (a new shell where nothing was exported, a CI build that has none).
    The scheduler refuses it after all if such a step must run."""
    declaring = selected.secret_steps  # (most steps declare none)
    secrets = resolve_secrets(declaring.values(), required=False)
    _warn_of_empty_secrets(secrets)
    unset = {name: secret for name, step in declaring.items()
             if (secret := unset_secret(step, secrets.get(name, {})))}
    if not unset:  # (most runs: every secret set)
        return secrets
    from dagnb.runtime.plan import misses

    running = (set(unset) if cache is None else  # (no cache: every step runs)
               {name for name, _ in misses(graph, list(selected.steps), cache, reads)})
    for name, secret in unset.items():
        if name in running:
            raise secret_not_set(name, secret)
    return secrets


def _warn_of_empty_secrets(secrets: Mapping[str, Mapping[str, str]]) -> None:
    """Warn of a secret set but empty (``export TOKEN=$(cat missing-file)``): its step
    ran with an empty token, said nowhere (one not set at all is refused)."""
    for step, values in secrets.items():
        for name, value in values.items():
            if not value:
                warn_user(f"step {step!r}: secret {name} is set but empty, so the step gets "
                          f"an empty value; set {name} to the secret (unset, a step that "
                          "must run is refused)")


def require_engine(graph: Graph, steps: Mapping[str, Step], default: Any, cache: Any,
                    reads: PublishedReads | None) -> None:
    """Raise ExecutorUnavailable now if a step must run on an engine that is absent."""
    names = {step.executor or default for step in steps.values()}
    if "dagger" not in names:
        return
    from dagnb.executors.dagger.connection import detect

    availability = detect()
    if availability.available:
        return
    needing = [n for n, step in steps.items() if (step.executor or default) == "dagger"]
    if cache is not None:  # this run's cache: its folder, version and refresh
        from dagnb.runtime.plan import cached_steps

        restorable = cached_steps(graph, list(steps), cache, reads)
        needing = [n for n in needing if n not in restorable]
    if needing:
        raise ExecutorUnavailable(
            f"executor 'dagger' is needed for step {needing[0]!r} but {availability.reason}"
        )


def refuse_services_off_dagger(steps: Mapping[str, Step], default: Any) -> None:
    """A step binding services runs only on Dagger: refused before anything runs (else
    its upstream steps ran first, then it failed)."""
    binding = [name for name, step in steps.items() if step.services]
    if not binding:  # (most runs)
        return
    in_container = container_steps(default)
    for name in binding:
        if not in_container(steps[name]):
            raise ExecutorUnavailable(
                f"step {name!r} binds services {list(steps[name].services)!r}, which need "
                "the Dagger executor, and it would run on this machine; run it on Dagger "
                "(executor: dagger on the step, --executor dagger, or executor='dagger')")


def _retry_defaults(retries: Any, config: Any) -> Any:
    """The run's retries over the settings' (checked as they loaded), refused now as a
    step's are (:func:`check_retries`): else every step that runs fails with its error."""
    from dagnb.retry.policy import RetryPolicy, layered

    if retries is None:  # (most runs)
        return layered(config.retry_defaults(), None)
    try:
        defaults = layered(config.retry_defaults(), retries)
        RetryPolicy.from_value(defaults)
    except DagnbError as exc:
        raise ConfigError(f"retries= of the run: {exc}") from None
    return defaults


def _new_run_id() -> str:
    """Ids sort in the order runs started (to the millisecond): pruning keeps the newest.
    Local time, as ``datetime.now()``; the last part tells apart runs of one
    millisecond: a count from a random start per process (no ``getrandom`` and no
    ``strftime`` per run: 1.2 µs where they took 6.7)."""
    global _last_second
    now = time.time()
    second = int(now)
    last = _last_second  # (read once: another thread may move it to another second)
    if last[0] != second:  # (the second's text made once a second)
        last = _last_second = (second, time.strftime("%Y%m%d-%H%M%S", time.localtime(second)))
    return f"{last[1]}-{int((now - second) * 1000):03d}-{next(_RUNS.count) & 0xFFFFFF:06x}"


_last_second: tuple[int, str] = (-1, "")  # the last second an id was made in, and its text
_RUNS = ForkSafeCount(24)  # (a forked child's runs do not take its parent's next ids)

