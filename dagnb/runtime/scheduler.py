"""The async scheduler: one run of a graph's selected steps.

Design, in the spirit of ``dask/local.py``: the scheduler is handed the executor it
submits to. A step starts the moment its last need finishes (no polling, so a 10,000-step
fan-out costs the same per step as a chain): the task that finished it goes on with one
of the steps it released, and queues the others; they get tasks of their own as soon as
that task waits for anything (a process, an async step), and otherwise it runs them
too, so plain Python steps called inline cost no task and no loop turn each. The first
step runs in the run's own task unless a run timeout or ``fail_fast`` must be able to
stop it alone. A semaphore bounds how many run at once, when more than that could.

For each step it asks the cache first (a hit restores the result, outputs and logs and
never touches the executor), then runs attempts through the retry policy, and records
every state change, retry and captured line as an event. A failure marks the
step's dependents ``skipped`` and independent branches go on, unless ``fail_fast``.
Cancellation (``run.cancel()``, Ctrl-C, the run's timeout) cancels the step tasks; each
executor kills what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import pickle
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from dagnb import checks
from dagnb.cache.entry import PackedEntry
from dagnb.cache.images import image_label
from dagnb.cache.remote import HeldUploads, unanswered_words
from dagnb.cache.secret_scan import (
    SecretsInForce,
    by_distinct_names,
    remember_secrets,
    set_secrets_source,
)
from dagnb.cache.steps import MUST_WAIT, CachedResult, has_files
from dagnb.checks import LINE_LIMIT, bounded_line
from dagnb.errors import (
    CacheMissError,
    DagnbError,
    StepCancelled,
    StepError,
    StepFailed,
    StepTimeout,
    TransientError,
    UnfingerprintableVariable,
    exception_line,
)
from dagnb.executors import running_on
from dagnb.executors.base import QUEUES, SIMULATED, Executor, Input, Outcome, Task
from dagnb.executors.context import step_secrets
from dagnb.executors.local import parameter_names
from dagnb.executors.loop import (
    STARTS_A_PROCESS,
    cancelling,
    holding,
    interrupt_arrived,
    interrupted_unwaited,
    stop_pending,
    until_cancelled,
    unwaited_attempt,
    wait_for,
)
from dagnb.executors.reaper import TaggedFromFirstCall
from dagnb.executors.workdir import unmade_mounts_hint
from dagnb.fingerprint import keyed_before_imports, ran_here
from dagnb.model.contract import secret_not_set, unset_secret, write_params
from dagnb.model.masking import MIN_LINE, Masker, SecretFinder, shared_finder, shared_masker
from dagnb.model.results import NO_RESULT, PUBLISHED_AS, own_result, save_result
from dagnb.model.step import Step
from dagnb.retry.policy import run_with_retries
from dagnb.runtime.displays import StepDisplays
from dagnb.runtime.history import STARTED_NAME
from dagnb.runtime.inputs_guard import InputGuard
from dagnb.runtime.leaks import container_link, named_secret, stored_secret, unstorable
from dagnb.runtime.logfile import LogFile
from dagnb.runtime.run import Run
from dagnb.runtime.unmounted import PYTHON_WORDS, FrontEndWords, ran_in_hint, warn_if_changed_since

if TYPE_CHECKING:
    from dagnb.cache.images import ImagePins
    from dagnb.cache.steps import StepCache
    from dagnb.cache.store import Entry

__all__ = ["Links", "RunOptions", "Scheduler", "step_links"]

STDERR_TAIL = 20  # stderr lines of a failed attempt in its StepFailed
# an error's line: room for "exit code N: " and the note of a stderr line cut to its limit
_ERROR_LIMIT = LINE_LIMIT + 100


@dataclasses.dataclass
class RunOptions:
    """How to run: concurrency, limits, the executor, cache and retry defaults."""

    max_concurrency: int = 4
    timeout: float | None = None
    step_timeout: float | None = None  # for steps that set no timeout of their own
    fail_fast: bool = False
    executor_for: Callable[[Step], Executor] | None = None
    cache: StepCache | None = None
    retry_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    retries_enabled: bool = True  # False: no step is retried, whatever it asks
    circuit_breaker: bool = True  # False: no step waits on its executor's breaker
    sleep: Callable[[float], Any] = asyncio.sleep
    base_dir: Path = dataclasses.field(default_factory=Path.cwd)
    # step -> steps it starts after, ordering only: not its needs (its key, its arguments)
    after: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # step -> {variable: the step publishing it}: why it starts after that step (said
    # when that one fails and skips it)
    reads: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    # how a warning says to mount a file and run a step again: graph.run's mounts={...}
    # and refresh=["load"], or the front end's that started the run (the dagnb
    # command's mounts: {...} and --refresh-step load, the notebook's --mount, --refresh)
    words: FrontEndWords = PYTHON_WORDS


# Retry policies (immutable) built from plain settings, shared by every run.
_POLICIES: dict[tuple[Any, ...], Any] = {}
_PLAIN = frozenset((int, float, bool, str, type(None)))


def _policy_memo(value: Any) -> tuple[Any, ...] | None:
    """What tells apart the policies of retry settings ``value``, a dict of plain
    values (their types too: ``1``, ``1.0`` and ``True`` are equal keys, not equal
    settings); None for anything else (not memoized). Cheaper than its repr."""
    if type(value) is not dict:
        return None
    values = tuple(value.values())
    types = tuple(map(type, values))
    return (tuple(value), types, values) if _PLAIN.issuperset(types) else None


# a step's secrets when it declares none: shared by such steps, so not writable
_NONE: Mapping[str, str] = MappingProxyType({})
_NO_NAMES: frozenset[str] = frozenset()
# the mask and finder of a run without secrets (neither is changed once made: shared)
_NO_MASK = Masker()
_NO_FINDER = SecretFinder({})
_NO_IMAGE = object()  # a step that ran in no container: its state names no image


class _Outcome:
    """What a finished step hands its dependents (its folder's Path made on demand), and
    the cache entry its folder is, if it is one."""

    __slots__ = ("_path", "digest", "entry", "handle", "result")

    def __init__(self, path: Path | str | None, result: Any, handle: Any, digest: str | None,
                 entry: Entry | None = None) -> None:
        """``path`` None: the folder of ``entry`` (a hit's), asked of it when first used
        (most hits of a re-run are never read)."""
        self._path, self.result, self.handle, self.digest = path, result, handle, digest
        self.entry = entry

    @property
    def where(self) -> Path | str | os.PathLike[str]:
        """The folder as given (text, or a packed entry's made when used as a path)."""
        if self._path is None:
            assert self.entry is not None
            self._path = self.entry.out_ref
        return self._path

    @property
    def path(self) -> Path:
        where = self.where
        if not isinstance(where, Path):
            self._path = where = Path(where)
        return where


class _AttemptLog(LogFile):
    """One attempt's lines: its sink (see Scheduler._attempt), ``log(stream, line)`` for a
    line that ended and ``log.last(stream, line)`` for the end of a stream that had no
    newline (the step cut off mid-line), masked as the last of its line: a secret's start
    there (``Bearer sk-live-Abc1``) is masked too (:meth:`Masker.masked_as_last`). Masked,
    they go to the event log (a bounded head), to the last stderr lines (a short tail,
    made on the first: most steps print nothing) and to this attempt's log file, which
    it is (opened at the first line). Also the token of the running attempt
    (executors.status()). One object an attempt: four (a file, its callback, the sink, a
    bound method) cost every no-op step 2 µs."""

    __slots__ = ("_emit", "_files", "_mask", "_name", "_number", "_scheduler", "_tails")

    def __init__(self, scheduler: Scheduler, name: str, number: int,
                 files: list[LogFile]) -> None:
        # no path, no folder, no file until the attempt prints its first line
        LogFile.__init__(self, None)  # type: ignore[arg-type]  # (see path)
        self._scheduler, self._files = scheduler, files  # (for _open: each attempt's file)
        self._emit, self._mask, self._tails = scheduler._emit, scheduler._masking, scheduler._tails
        self._name, self._number = name, number

    def __call__(self, stream: str, line: str) -> None:
        mask = self._mask
        self._record(stream, line if mask is None else mask(line))

    def last(self, stream: str, line: str) -> None:
        mask = self._mask
        self._record(stream, line if mask is None else mask.masked_as_last(line))

    def _record(self, stream: str, masked: str) -> None:
        name = self._name
        event = self._emit("log", name, self._number, stream=stream, line=masked)
        masked = event.data["line"]
        if stream == "stderr" and masked.strip():
            tail = self._tails.get(name)
            if tail is None:
                tail = self._tails[name] = deque(maxlen=STDERR_TAIL)
            tail.append(masked)
        self.write_line(event.time, self._number, stream, masked)

    @property
    def path(self) -> Path:
        """The file (it exists once a line was written)."""
        path = self._path
        if not isinstance(path, Path):
            path = self._path = Path(
                f"{self._scheduler._folder}/{self._name}/logs-{self._number}.jsonl")
        return path

    def _open(self) -> None:
        """Open the file, its folder made first (the run's, leased), and tell the Run
        where the step's lines are (its attempts' files so far) and how to flush this one."""
        self._scheduler.run.make_workspace()
        LogFile._open(self)
        files = self._files
        if files is not None:
            self._scheduler.run.record_log_files(self._name, [f.path for f in files],
                                                 files[-1].flush)

    def close(self) -> None:
        opened = self._files is not None and self.count > 0  # (told the run its flush)
        LogFile.close(self)
        self._files = None  # (it holds this attempt: a cycle only the GC would free)
        if opened:  # a closed file has nothing to flush; the run holding its flush held
            self._scheduler.run.forget_flush(self._name, self.flush)  # it, and so this
            # scheduler, and so the run: a cycle only the GC freed (a run with its cache
            # off, or a step that failed, whose attempt printed)

    def show(self, *shown: Any) -> Any:
        """Where an attempt of a Python step puts what it displays: its StepDisplays,
        made on its first display (see Scheduler._display)."""
        return self._scheduler._display(self._name, self._number, self, *shown)


class _Start:
    """The start of an attempt its executor may first queue (``task.began``): called when
    the attempt leaves that queue, it says "running" and lets the step's timeout begin."""

    __slots__ = ("event", "say")

    def __init__(self, say: Callable[[], object]) -> None:
        self.event, self.say = asyncio.Event(), say

    def __call__(self) -> None:
        if not self.event.is_set():
            self.event.set()
            self.say()


class Scheduler:
    """Runs ``run.order`` once; create one per run."""

    def __init__(
        self, run: Run, options: RunOptions, secrets: Mapping[str, Mapping[str, str]],
        others: Mapping[str, str] = _NONE, masked_only: Mapping[str, str] = _NONE,
        links: Links | None = None,
    ) -> None:
        """``secrets``: each step's, read from the environment; ``others``: those that
        the graph's steps outside this run declare (a notebook's other cells), withheld
        and masked here too; ``masked_only``: secrets of the settings (a registry's
        token), masked and kept out of the cache but not withheld; ``links``: the run's
        :func:`step_links` as an earlier run of the same steps made them."""
        self.run = run
        self.options = options
        self._caller = checks.user_line()  # (made where the run starts, not on the loop)
        self.secrets = secrets
        declared = {n: v for values in secrets.values() for n, v in values.items()}
        # what a dagnb.Memory call in one of the run's in-process steps keeps of its
        # secrets (none), set on their tasks; made only for a run that has some
        self._cache_secrets: SecretsInForce | None = None
        if declared or others or masked_only:
            self._take_secrets(declared, others, masked_only)
        else:  # (most runs: no secret at all; the empty mask and finder are shared)
            self.mask, self._secret_names = _NO_MASK, _NO_NAMES
            self._secret_values: dict[str, str] = {}
            self._secrets_found = _NO_FINDER
        self._masking = self.mask if self.mask else None  # (asked for on every step)
        self._folder = run.workspace_text  # (where each step's folder goes)
        # what its Python steps start dies with this process (see reaper): from the first
        # one called, around the run (prepare._execute)
        self.children_tagged = TaggedFromFirstCall()
        self._emit = run.events.emit
        self._finished: dict[str, _Outcome] = {}
        self._step_count = len(run.order)  # (settled: the run is done)
        waiting, self._dependents, self._widest = links or step_links(
            run.order, run.steps, options.after)
        self._waiting = waiting.copy()  # (counted down as steps end)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._settled: set[str] = set()
        self._unsent: dict[str, HeldUploads] = {}  # step -> its entry's upload, held
        self._not_uploaded: list[str] = []  # said as the run ends (_say_not_uploaded)
        # the stores that left a held upload unanswered past its deadline, each with that
        # deadline and the entries left unsent to it from then on (said as the run ends)
        self._unanswered: dict[str, tuple[float, int]] = {}
        self._all_done: asyncio.Event | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._failed_fast = False
        self._policies: dict[str | None, Any] = {}
        self._executors: dict[Any, Executor] = {}
        self._breakers: dict[str, Any] = {}
        self._all_inline: bool | None = None  # see _read_by_a_command
        self._running: dict[str, list[object]] = {}  # executor -> its attempts now
        self._stop_reason = "the run was cancelled"
        self._stopper: asyncio.Task[None] | None = None
        self._ready: deque[str] = deque()  # ready steps no task has taken yet
        self._handoff = False  # whether _hand_off is scheduled
        self._images: dict[str, str | None] = {}  # step -> the image that ran, as shown
        # step -> the attempt that did not stop when cancelled (it may write on) and the
        # folder of the latest attempt, one of its own (see _step_dir)
        self._left_running: dict[str, int] = {}
        # Python steps whose unstored result holds a secret: not written for commands,
        # nor staged for a container (see _result_for_commands)
        self._withheld_results: set[str] = set()
        self._own_dirs: dict[str, str] = {}
        self._tails: dict[str, deque[str]] = {}  # the last stderr lines of each step
        # (step, attempt) -> what a Python step's attempt displayed, made on its first
        self._displays: dict[tuple[str, int], StepDisplays] = {}
        self._missing = False  # whether the last cache look missed
        self._keys: dict[str, str] = {}  # step -> its key's digest, as it runs to be stored
        # a folder a served step names unmounted -> the newest change under it, walked once
        # by this run's hits (see unmounted.warn_if_changed_since)
        self._walked: dict[str, float] = {}
        # what a step that ran finds of its upstream steps' cache entries (it may not
        # write into them): none to look at when the run has no cache
        # (its set_aside holds the cache and the steps, not this scheduler: a bound
        # method would make a cycle, freed only by a full pass of the collector)
        self._guard = (InputGuard(functools.partial(_set_aside, options.cache, run.steps),
                                  self.mask) if options.cache is not None else None)
        # an in-process Python step -> what the guard looks at after it, which grows if
        # it asks dagnb.current().inputs for the folders of packed entries
        self._watching: dict[str, list[Any]] = {}

    def _take_secrets(self, declared: Mapping[str, str], others: Mapping[str, str],
                      masked_only: Mapping[str, str]) -> None:
        """The run's masks and what finds its secrets: of each step's (``declared``),
        ``others`` and ``masked_only`` (see ``__init__``)."""
        values = [*declared.values(), *others.values(), *masked_only.values()]
        # (shared with the runs of the same secrets: made anew, they cost 100 µs a run)
        self.mask = shared_masker(values)
        self._masked_names = frozenset(masked_only)
        self._secret_names = frozenset(declared).union(others)
        self._secret_values = by_distinct_names(  # (each value, a rotated one's too)
            [*declared.items(), *others.items(), *masked_only.items()])
        self._secrets_found = shared_finder(self._secret_values)
        if self.mask:
            self._cache_secrets = SecretsInForce(shared_masker(values, words_below=MIN_LINE),
                                                 self._secrets_found)
            set_secrets_source(step_secrets)

    def outside_mask(self) -> Callable[[str], str] | None:
        """The mask of what is printed outside any step while the run lasts (a thread a
        step started): those under ``MIN_LINE`` characters where they are words of
        their own, as the notebook's own prints go through it too, and a secret ``a``
        would mask every ``a``."""
        return self._cache_secrets.mask if self._cache_secrets is not None else None

    # -- the run --------------------------------------------------------------------
    async def execute(self) -> Run:
        """Run every selected step; returns the Run (failures are data, not errors)."""
        self._all_done = asyncio.Event()
        checks.warn_at_run_caller(self._caller)  # (this task's, and its steps')
        limit = max(1, self.options.max_concurrency)
        # no semaphore when every step may run at once: it would only cost each step
        self._semaphore = asyncio.Semaphore(limit) if limit < self._widest else None
        self._emit("run", None, state="started", steps=len(self.run.order))
        self.run.begin()
        # (a cached call outside the steps' context, a thread of a step's pool, keeps
        # the run's secrets out of the cache too, and so does one after the run ends: a
        # thread a step left running)
        if self.mask:
            remember_secrets(self._secret_values)
        try:
            await wait_for(self._drive(), self.options.timeout)  # inline steps too
        except asyncio.TimeoutError:
            await self._stop_all(f"the run's timeout of {self.options.timeout:g} s was reached")
        except asyncio.CancelledError:
            await self._stop_all("the run was cancelled")
            raise
        finally:
            # (a cancelled task keeps its CancelledError, whose traceback holds the
            # task's frames, ``self`` among their locals: through this dict, a cycle that
            # held the run until a full collection; every task here is done by now)
            self._tasks.clear()
            if self.options.cache is not None:
                self.options.cache.close()
            if self._not_uploaded or self._unanswered:
                self._say_not_uploaded()
            self._emit("run", None, state="finished")
        return self.run

    async def _drive(self) -> None:
        assert self._all_done is not None
        if not self.run.order:
            return
        roots = [name for name in self.run.order if self._waiting[name] == 0]
        if self.options.timeout is not None or self.options.fail_fast:
            for name in roots:  # each in a task of its own: stopping them never stops this one
                self._start(name)
        else:  # the first root runs in this task: a 1-step run makes no task, no loop turn
            self._emit("state", roots[0], state="queued")
            for name in roots[1:]:
                self._wait_ready(name)
            await self._chain_from(roots[0])
        if not self._all_done.is_set():
            await self._all_done.wait()

    def _start(self, name: str) -> None:
        self._emit("state", name, state="queued")
        self._tasks[name] = asyncio.ensure_future(self._chain_from(name))

    async def _chain_from(self, name: str | None) -> None:
        """Run a step, then go on with one child it released in this same task, so a
        chain of steps costs no new task and no loop turn per step; then with the
        steps waiting in ``_ready`` that no task has taken yet. None starts once the run
        was cancelled or passed its timeout, the cancellation perhaps not here yet: a
        Python step it interrupted gives the loop turns before it arrives, and a step
        started in them would hold the loop past the caller's grace (_stop_all settles
        those left)."""
        this = asyncio.current_task()
        run = self.run
        try:
            while name is not None and not (run.cancel_requested or stop_pending()):
                self._tasks[name] = this  # type: ignore[assignment]  # what _stop_all cancels
                name = await self._step(name)
                if name is None and self._ready and not self._failed_fast:
                    name = self._ready.popleft()
        finally:  # (a cancel's traceback holds this frame, and the task its cancel: not
            this = None  # a cycle through this name, which held the run till a full pass)

    def _wait_ready(self, name: str) -> None:
        """Queue a ready step for the task that made it ready, which takes it once done
        with its own chain; should that task wait for anything first (a process, an
        async step), the loop is free, and :meth:`_hand_off` gives the queued steps tasks
        of their own. A fan-out of inline steps so costs no task per step."""
        self._emit("state", name, state="queued")
        self._ready.append(name)
        if not self._handoff:
            self._handoff = True
            asyncio.get_running_loop().call_soon(self._hand_off)

    def _hand_off(self) -> None:
        self._handoff = False
        while self._ready:
            name = self._ready.popleft()
            self._tasks[name] = asyncio.ensure_future(self._chain_from(name))

    def _not_started(self, name: str) -> None:
        """Settle ``name`` as cancelled by the stop under way (fail_fast): nothing new
        starts after a failure, a deploy step waiting for a slot least of all."""
        self._settle(name, "cancelled", error=self._stop_reason)

    async def _stop_all(self, reason: str) -> None:
        self._stop_reason = reason
        self._ready.clear()  # none of them starts now: settled as cancelled below
        this = asyncio.current_task()  # the run's own task, when it ran a step inline
        running = [t for t in dict.fromkeys(self._tasks.values()) if not t.done() and t is not this]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for name in self.run.order:
            if name not in self._settled:
                self._settle(name, "cancelled", error=reason)

    # -- one step -------------------------------------------------------------------
    async def _step(self, name: str) -> str | None:
        """Run one step; returns the child to continue with, if any."""
        step = self.run.steps[name]
        try:
            if self._semaphore is None:
                outcome = await self._cached_or_run(step)
            else:  # not ``async with``: two coroutines less per step
                await self._semaphore.acquire()
                try:
                    if self._failed_fast:  # a step failed as this one waited for a slot:
                        return self._not_started(name)  # (its stop task not run yet)
                    outcome = await self._cached_or_run(step)
                finally:
                    self._semaphore.release()
        except asyncio.CancelledError:
            self._settle(name, "cancelled", error=self._stop_reason)
            raise
        except StepError as exc:
            self._fail(step, exc)
        except CacheMissError as exc:  # fail-on-miss: its entry went since the run's check
            self.run.refused[name] = str(exc)  # (another process pruned it): not run
            self._fail(step, StepFailed(str(exc), step=name))
        except DagnbError as exc:  # the breaker, retries of a transient error exhausted
            self._fail(step, _exhausted(name, exc))
        except Exception as exc:  # an executor's own failure still ends only this step
            self._fail(step, StepFailed(exception_line(exc), step=name))
        else:
            self._finished[name] = outcome
            return self._release(name)
        finally:
            if self._unsent:  # (after its end was said: most runs have none)
                self._send_held(name)
        return None

    def _send_held(self, name: str) -> None:
        """Upload the entry step ``name`` saved to a store URL (:class:`HeldUploads`),
        once its end was said: its ``duration_s`` is its own time, not the line's to the
        store (9 s of an 80 MB upload read as a 3 s step's broken timeout). The upload's
        seconds are a ``stored`` event's ``store_s``."""
        held = self._unsent.pop(name, None)
        if held is None:
            return
        with holding():  # (the upload holds the loop: not others' time)
            seconds, sent = held.send(self._stopping)
        self._emit("stored", name, store_s=round(seconds, 3), sent=sent)
        self._count_unanswered(held)
        if held.interrupted:  # (a failure is said by the store's warning, once an outage)
            why = ("the run was interrupted" if self.run.cancel_requested or cancelling()
                   else "the run's timeout was reached")
            self._not_uploaded += [
                f"{name}'s entry was not uploaded to {store}: {why}; dagnb cache push "
                "sends it (so does the next run it is cached in)"
                for store in dict.fromkeys(held.unsent)]

    def _count_unanswered(self, held: HeldUploads) -> None:
        """Note the stores ``held`` gave up on (no answer within the deadline), and the
        entries it left unsent to those, one line each as the run ends: the first
        stalled upload is not the only one (the store then rests, later ones unsent)."""
        for store, deadline in held.unanswered.items():
            self._unanswered.setdefault(store, (deadline, 0))
        if held.interrupted:  # (said by the interrupt's line, entry by entry)
            return
        for store in held.unsent:
            if store in self._unanswered:
                deadline, count = self._unanswered[store]
                self._unanswered[store] = (deadline, count + 1)

    def _hold_unsent(self, name: str, key: str, cache: StepCache) -> None:
        """A hit of an entry whose upload to a store URL never ended (Ctrl-C, a killed
        process, the store down): uploaded as a save's is, once its end is said."""
        hold = getattr(cache.store.backend, "hold_if_unsent", None)
        if hold is not None:
            held = HeldUploads()
            hold(name, key, held)
            if held:
                self._unsent[name] = held

    def _stopping(self) -> bool:
        """Whether the run was interrupted or cancelled: an upload under way stops."""
        return self.run.cancel_requested or stop_pending()

    def _say_not_uploaded(self) -> None:
        """One line per entry an interrupt kept from its store, as the run ends (an
        upload cut short by Ctrl-C said nothing: the entry stayed local, and teammates
        computed it again)."""
        for line in self._not_uploaded:
            checks.warn_user(line)
        for store, (deadline, count) in self._unanswered.items():
            checks.warn_user(_unanswered_line(store, deadline, count))

    async def _cached_or_run(self, step: Step) -> _Outcome:
        cache = self.options.cache
        if cache is not None and cache.images is not None:
            step = await self._pinned(step, cache.images)
        if cache is None:  # (then no guard: _attempts would only await _tries)
            return self._record(step, await self._tries(step), None)
        if not cache.enabled_for(step):
            return self._record(step, await self._attempts(step), None)
        try:
            key = cache.key(step, self._upstream_digests(step), self.options.base_dir)
        except UnfingerprintableVariable as exc:  # no honest key: run it, store nothing
            unkeyed = exc.reason
        else:
            unkeyed = None
        if unkeyed is not None:  # (run outside the except: the step's own error has no
            # dagnb exception as its context, "During handling of ..." in its traceback)
            return self._not_stored(step, await self._attempts(step), None, "", unkeyed)
        # a run whose last look missed (a first run) takes the key's lock first and
        # looks once, under it: a look before the lock would only miss again
        looked = not self._missing
        entry = cache.lookup(step, key) if looked else None
        if entry is not None and cache.writes:
            self._hold_unsent(step.name, key.digest, cache)
        if entry is None:
            # (not ``async with``: two coroutines less per step when the lock is free)
            claim = cache.claim(step, key, looked=looked, on_wait=self._waiting_for_another_run)
            entry = claim.enter_now()
            try:
                if entry is MUST_WAIT:
                    entry = await claim.__aenter__()
                self._missing = entry is None  # another process may have run it meanwhile
                if entry is None:
                    return await self._run_and_store(step, cache, key)
            finally:
                claim.release()
        self._missing = False
        return self._restore(step, entry, cache.restore(step, entry))

    def _waiting_for_another_run(self, step: Step, holder: int | None = None) -> None:
        """Another process holds the step's key: it runs the step, and this run waits
        to take its entry (a "queued" event that says so: the state does not change),
        naming that process (``holder``, its pid where known) and its run, so that one
        that hangs (SIGSTOP) can be told and killed. The wait may last as long as that
        step: the entries this run restored are listed in its ``.uses`` first, so no
        prune removes them meanwhile."""
        self.run.make_workspace_for_uses()
        self._emit("state", step.name, state="queued",
                   waiting=_another_run(holder, step.name, self.run))

    async def _pinned(self, step: Step, images: ImagePins) -> Step:
        """With ``pin_images``: the step with its image tag pinned to a digest, resolved
        by its executor the first time (only the Dagger executor resolves images)."""
        if images.wants(step) and images.digest(step) is None:
            from dagnb.executors.dagger.executor import DaggerExecutor

            executor, image = self._executor(step), step.image or ""
            if isinstance(executor, DaggerExecutor):
                ref = await executor.image_ref(image, step.platform, step=step.name)
                images.add(image, step.platform, ref)
        return images.pinned(step)

    async def _run_and_store(self, step: Step, cache: StepCache, key: Any) -> _Outcome:
        started = time.monotonic()
        files: list[LogFile] = []
        self._keys[step.name] = key.digest  # (its executor's own cache is keyed by it too)
        outcome = await self._attempts(step, files)
        self._note_imports_made(step)
        shown = self._displays.pop((step.name, len(files)), None)  # (the one that succeeded)
        out_dir = self._out_text(step.name)  # made only if the step wrote files
        if SIMULATED in self._executor(step).capabilities:  # a scripted outcome is no result
            self.run.not_stored[step.name] = "a simulated executor (a test double) ran it"
            return self._record(step, outcome, cache.digest_of(Path(out_dir), outcome.result))
        last = files[-1]  # the attempt that succeeded: its lines are the entry's
        if last.error is not None:  # an entry without all its lines would replay them so
            return self._not_stored(step, outcome, cache, out_dir,
                                    f"its log could not be written ({last.error})")
        # (hashing big outputs holds the loop: not others' time; an upload to a store
        # URL is held, and sent once the step's end is said: see _send_held)
        with holding(), HeldUploads() as held:
            try:
                return self._store(step, cache, key, outcome, out_dir, files, started,
                                   shown.records if shown is not None else ())
            finally:
                if held:  # (saved, whatever came after)
                    self._unsent[step.name] = held

    def _note_imports_made(self, step: Step) -> None:
        """A Python step run here whose key was made before its function first imported a
        project module (``import helpers`` in its body: keyed by the file then): its next
        key, the module imported, stands for that one while the module's data is as the
        run left it, so a second run in this process is served from the cache
        (:mod:`dagnb.fingerprint.first_imports`). One dict's truth for most steps."""
        func = step.func
        if func is not None and keyed_before_imports(func) and self._inline(step):
            ran_here(func)

    def _store(self, step: Step, cache: StepCache, key: Any, outcome: Outcome, out_dir: str,
               files: list[LogFile], started: float,
               displays: Sequence[Mapping[str, Any]] = ()) -> _Outcome:
        """Save what a step made, unless it holds a secret (see _run_and_store)."""
        last = files[-1]
        # one look at its folder (none if the run made no folder for its steps): most
        # steps write no file, and then nothing there is walked, searched or looked at
        # again by the save (each look cost a shell step's loop a scan of the folder)
        wrote = self.run.workspace_made and has_files(out_dir)
        refused = self._unstorable(out_dir if wrote else None, outcome.result)
        if refused is not None:
            return self._not_stored(step, outcome, cache, out_dir, refused)
        entry = cache.save(
            step,
            key,
            out_dir=out_dir,
            result=outcome.result,
            logs=last.path if last.count else [],  # type: ignore[arg-type]  # moved in
            displays=displays,
            exit_code=outcome.exit_code or 0,
            duration_s=time.monotonic() - started,
            provenance={"image_ref": outcome.image_ref} if outcome.image_ref else None,
            may_hold_files=wrote,
        )
        if entry is None:  # not stored (an unpicklable result, a full disk): keep it in memory
            self.run.not_stored[step.name] = ("its result cannot be pickled, or the disk is "
                                              "full (the warning said which)")
            return self._record(step, outcome, cache.digest_of(Path(out_dir), outcome.result))
        if entry.not_stored is not None:  # (its files given back: the trim leaves them)
            self.run.not_stored[step.name] = entry.not_stored
            return self._record(step, outcome, entry.output_digest)
        self._ran(step, outcome)
        if wrote and isinstance(outcome.result, PurePath):
            _warn_if_into_out_dir(step.name, outcome.result, out_dir)
        # (most steps ran once: no list of the earlier attempts' files made)
        self.run.record_log_files(step.name, [entry.log_file] if len(files) == 1 else
                                  [f.path for f in files[:-1]] + [entry.log_file])
        # left empty by the save (one inode less): only a Python step's folder can be,
        # and only if the run made its folder (a command's keeps params.json and in/)
        if step.func is not None and self.run.workspace_made:
            with contextlib.suppress(OSError):
                os.rmdir(f"{self._folder}/{step.name}")
        # (its steps downstream read it; from memory alone if they are inline Python
        # and it is a pack record: then no run folder is made to list it. A folder, a
        # result too big for a pack, is listed: a step may read it by its path)
        self.run.note_use(entry.step, entry.key, wrote or not isinstance(entry, PackedEntry)
                          or self._read_by_a_command(step.name), created=entry.created,
                          stored=True)
        # a packed entry's folder is made only if a downstream step or the user asks
        done = _Outcome(entry.out_ref, outcome.result, outcome.handle, entry.output_digest,
                        entry)
        self.run.record(step.name, done, outcome.result)
        return done

    def _unstorable(self, out_dir: str | None, result: Any) -> str | None:
        """Why what a step made cannot be stored, or None. ``out_dir``: None if it wrote
        no file. Its outputs' names are looked at first, as the second reason names one."""
        found = self._secrets_found
        named = named_secret(found, out_dir) if out_dir is not None else None
        if named is not None:
            return (f"the name of one of its files, folders or links (or a link's target) "
                    f"holds the value of secret {named!r}, and the cache keeps no secret; "
                    "name its outputs without it")
        odd = unstorable(out_dir) if out_dir is not None else None
        if odd is not None:  # (a container's link out of its outputs is one: said as such)
            return container_link(out_dir) or (
                f"its output {odd!r} is not a file or a folder (a pipe, a device, a "
                "socket, a broken link); write files there")
        leaked = stored_secret(found, out_dir, result)
        if leaked is not None:
            return (f"its result or files hold the value of secret {leaked!r}, and the cache "
                    "keeps no secret; pass the secret on at run time instead")
        return None

    def _read_by_a_command(self, name: str) -> bool:
        """Whether a step downstream of ``name`` is not inline Python (it reads the
        entry's files, its result as a file among them)."""
        if self._all_inline is None:  # (asked once a run: most runs are all inline)
            self._all_inline = self._every_step_inline()
        if self._all_inline:
            return False
        steps = self.run.steps
        for child in self._dependents[name]:  # (not any() of a generator: every step)
            step = steps[child]
            if step.func is None or not self._inline(step):
                return True
        return False

    def _every_step_inline(self) -> bool:
        """Whether every step of the run is Python run in this process, as the executors
        made so far tell (one not made yet is not known: executors are made as a step
        first needs one, so that a cached step needs no engine)."""
        steps = self.run.steps.values()
        if any(step.func is None for step in steps):
            return False
        made = self._executors
        return all(named in made and made[named].name == "local"
                   for named in {step.executor for step in steps})

    def _inline(self, step: Step) -> bool:
        """Whether the local executor runs Python ``step`` in this process; an executor
        that cannot be had fails that step when it starts, not the one storing now."""
        try:
            return self._executor(step).name == "local"
        except Exception:  # (ExecutorUnavailable, a bad setting: said as that step starts)
            return False

    def _restore(self, step: Step, entry: Entry, result: CachedResult) -> _Outcome:
        name, head = step.name, entry.head.get  # (four fields read: one call)
        done = _Outcome(None, result, None, entry.output_digest, entry)
        self.run.note_use(entry.step, entry.key, created=entry.created)  # (read downstream)
        # (a file it names, no input, edited)
        warn_if_changed_since(step, entry.created, self.options.words, self._walked)
        # first: a reader of the step's lines while they are replayed finds its file
        self.run.record_cached(name, done, result)
        if head("displays"):  # (most entries have none: no file opened, no check made)
            self._replay_with_displays(name, entry)
        elif head("log_lines") != 0:
            for line in entry.iter_logs():  # (at: when it was printed, by the run it made)
                self._emit("log", name, line.get("attempt", 1), stream=line["stream"],
                           line=line["line"], cached=True, at=line.get("time"))
        provenance = head("provenance")
        reference = provenance.get("image_ref") if provenance else None
        self._emit(
            "state",
            name,
            state="cached",
            executor="cache",  # its image when the entry was made in a container
            image=image_label(step.image, reference) if reference else None,
            exit_code=head("exit_code", 0),
        )
        self._settled.add(name)
        return done

    def _replay_with_displays(self, name: str, entry: Entry) -> None:
        """A hit's lines and displays, each display after the lines it came after, of
        the attempt that made it (as its lines are)."""
        displays = entry.displays()
        emit, at = self._emit, 0

        def shown_until(lines: float) -> None:
            nonlocal at
            while at < len(displays) and displays[at].get("after", 0) <= lines:
                record = displays[at]
                # (an entry written before displays kept their attempt: the first)
                emit("display", name, record.get("attempt", 1), data=record["data"],
                     metadata=record.get("metadata"), display_id=None, update=False,
                     cached=True)
                at += 1

        for count, line in enumerate(entry.iter_logs()):
            shown_until(count)
            emit("log", name, line.get("attempt", 1), stream=line["stream"], line=line["line"],
                 cached=True, at=line.get("time"))
        shown_until(float("inf"))  # those after the last line

    def _not_stored(self, step: Step, outcome: Outcome, cache: StepCache | None,
                    out_dir: str, why: str) -> _Outcome:
        """A step that ran well but whose result is not stored: said (a warning), kept
        for the notebook's status, and its result handed on from memory. No ``cache``:
        it had no key to be stored under (no output digest either)."""
        checks.warn_user(f"step {step.name!r} ran but was not cached: {why}")
        self.run.not_stored[step.name] = why
        digest = None if cache is None else cache.digest_of(Path(out_dir), outcome.result)
        return self._record(step, outcome, digest)

    def _record(self, step: Step, outcome: Outcome, digest: str | None) -> _Outcome:
        if outcome.image_ref:  # (_ran inline: every step that ran passes here)
            self._ran(step, outcome)
        out_dir = (f"{self._folder}/{step.name}/out" if not self._own_dirs  # (most runs)
                   else self._out_text(step.name))
        if (step.func is not None and outcome.result is not NO_RESULT
                and self._all_inline is not True  # (most runs: no call, once it is known)
                and self._read_by_a_command(step.name)):
            cache = self.options.cache
            if digest is None and cache is not None:  # (of its folder without the file)
                digest = cache.digest_of(Path(out_dir), outcome.result)
            self._result_for_commands(step, out_dir, outcome.result)
        done = _Outcome(out_dir, outcome.result, outcome.handle, digest)
        self.run.record(step.name, done, outcome.result)
        return done

    def _result_for_commands(self, step: Step, out_dir: str, result: Any) -> None:
        """A Python step's result that is not stored (caching off or read-only, a miss
        of ``cache=False``...) written into its folder as its entry would hold it, when a
        command or another process reads it there (``$DAGNB_IN/<step>/result.json``):
        the step contract does not depend on the cache mode. Not a result holding a
        secret: the run's folder is kept, and no secret is written in plain text."""
        leaked = stored_secret(self._secrets_found, None, result)
        if leaked is not None:
            self._withheld_results.add(step.name)
            checks.warn_user(f"step {step.name!r}: its result holds the value of secret "
                             f"{leaked!r}, so the steps that read it as a file "
                             f"($DAGNB_IN/{step.name}) do not get it; pass the secret to "
                             "them at run time instead")
            return
        try:
            self.run.make_workspace()
            os.makedirs(out_dir, exist_ok=True)
            save_result(Path(out_dir), result)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            checks.warn_user(f"step {step.name!r}: its result could not be written for the "
                             f"steps that read it as a file ($DAGNB_IN/{step.name}): {exc}")

    def _ran(self, step: Step, outcome: Outcome | BaseException) -> None:
        """Keep the image that ran (by digest, when the executor says: an Outcome's, a
        failed attempt's error's ``image_ref``) for the status."""
        reference = getattr(outcome, "image_ref", None)
        if reference:
            self._images[step.name] = image_label(step.image, reference)

    def _upstream_digests(self, step: Step) -> dict[str, str]:
        if not step.needs:  # (a root: most steps of a wide graph)
            return {}
        cache = self.options.cache
        assert cache is not None
        digests = {}
        for need in step.needs:
            done = self._finished.get(need)
            if done is None:  # outside the selection: not run now
                continue
            if done.digest is None:
                done.digest = cache.digest_of(done.path, _value(done.result))
            digests[need] = done.digest
        return digests

    # -- attempts -------------------------------------------------------------------
    async def _attempts(self, step: Step, files: list[LogFile] | None = None) -> Outcome:
        """Run the attempts (:meth:`_tries`); a step that wrote into the cache entry of
        an upstream step (``$DAGNB_IN``) fails, and the entry is set aside (a packed
        entry's folder is made again from its record)."""
        guard = self._guard
        if guard is None or not step.needs:
            return await self._tries(step, files)
        takes = self._takes(step)
        watched = guard.start(step.name, self._upstream_entries(step), takes)
        if takes is not None:  # (in this process: current().inputs may add to it)
            self._watching[step.name] = watched
        elif not watched:  # (most steps: no upstream entry with files)
            return await self._tries(step, files)
        failure = None
        try:
            outcome = await self._tries(step, files)
        except StepFailed as exc:  # its own failure: a write into its input says more
            failure = exc
        finally:  # (a timeout or a cancel too: the entry is set aside, the error goes on)
            self._watching.pop(step.name, None)
            # (a Python step sees no $DAGNB_OUT: it is told of its own folder)
            out = "$DAGNB_OUT" if step.func is None else "dagnb.current().out_dir"
            wrote = guard.end(step.name, watched, out) if watched else None
        try:
            if wrote is not None:
                raise StepFailed(wrote, step=step.name, masked=True) from failure
            if failure is not None:
                raise failure
        finally:  # (the error's traceback holds this frame: no cycle through this name,
            failure = None  # which held the run, its results, till a full collection)
        return outcome

    def _takes(self, step: Step) -> Callable[[], tuple[str, ...]] | None:
        """For a Python step run in this process, what gives the names it takes as
        arguments (the folder of a packed entry only if it has no result); None for a
        step given every input as files."""
        if step.func is None or not self._inline(step):
            return None
        return functools.partial(parameter_names, step.func)

    def _input_paths_asked(self, task: Task) -> None:
        """An in-process Python step asks ``dagnb.current().inputs`` for its upstream
        folders: those of packed entries, made now, are read from disk though their use
        was noted as from memory. The run's ``.uses`` lists them first (its folder made
        now, if not yet: no eviction removes them while it runs), and the guard looks at
        them after the step, as at a command's ``$DAGNB_IN``."""
        step = task.step
        packed = {name: entry for name, entry in self._upstream_entries(step).items()
                  if isinstance(entry, PackedEntry)}
        if not packed:
            return
        self.run.list_uses_now()
        watched = self._watching.get(step.name)
        if watched is not None and self._guard is not None:
            self._guard.watch(step.name, packed, watched)

    def _upstream_entries(self, step: Step) -> dict[str, Entry | None]:
        finished = self._finished
        return {need: finished[need].entry for need in step.needs if need in finished}

    async def _tries(self, step: Step, files: list[LogFile] | None = None) -> Outcome:
        """Run the attempts; each writes its lines to a file of ``files`` (the last is
        that of the attempt that succeeded)."""
        if step.secrets:  # (served from the cache as the run began, it needed none)
            unset = unset_secret(step, self.secrets.get(step.name, _NONE))
            if unset is not None:
                raise secret_not_set(step.name, unset)
        if self.options.cache is not None:  # (no cache: no entry used to protect)
            self.run.make_workspace_for_uses()
        if step.func is not None:
            self.children_tagged.need()
        # (each lookup's usual case inline, as each is made once a run: every step)
        executor = self._executors.get(step.executor)
        if executor is None:
            executor = self._executor(step)
        retries = step.retries
        policy = self._policies.get(None if retries is None else repr(retries))
        if policy is None:
            policy = self._policy(step)
        files = [] if files is None else files
        guard = None
        if self.options.circuit_breaker and step.circuit_breaker:
            guard = self._breakers.get(executor.name)
            if guard is None:
                guard = self._breaker_of(executor)
        attempt = functools.partial(self._attempt, step, executor, files)
        on_retry = functools.partial(self._retrying, step.name, policy)  # (no closure
        return await run_with_retries(  # made: a partial is one object, freed at once)
            policy, attempt, on_retry=on_retry, sleep=self.options.sleep, breaker=guard
        )

    def _retrying(self, name: str, policy: Any, number: int, error: BaseException,
                  delay: float) -> None:
        """Say that attempt ``number - 1`` failed and attempt ``number`` follows."""
        self._emit(
            "state",
            name,
            number - 1,
            state="retrying",
            error=self._error_line(error),
            delay=round(delay, 3),
        )
        self._emit(
            "retry",
            name,
            number - 1,
            error=self._error_line(error),
            delay=delay,
            next_attempt=number,
            attempt_limit=_attempt_limit(policy, error),
        )

    def _policy(self, step: Step) -> Any:
        """The step's retries over the run's defaults (settings < run < step)."""
        retries = step.retries  # most steps share one setting: build each policy once
        memo = None if retries is None else repr(retries)
        if memo not in self._policies:
            self._policies[memo] = self._build_policy(step.retries)
        return self._policies[memo]

    def _build_policy(self, value: Any) -> Any:
        from dagnb.retry.policy import RetryPolicy, layered

        if not self.options.retries_enabled:
            return RetryPolicy.disabled()
        value = layered(self.options.retry_defaults, value)
        memo = _policy_memo(value)
        policy = _POLICIES.get(memo) if memo is not None else None
        if policy is None:
            policy = RetryPolicy.from_value(value)  # checks every field: not on every run
            if memo is not None and len(_POLICIES) < 256:
                _POLICIES[memo] = policy
        return policy

    async def _attempt(
        self, step: Step, executor: Executor, files: list[LogFile], number: int
    ) -> Outcome:
        """Attempt ``number``, its lines to a log file of its own, added to ``files``."""
        if self._tails:  # a new attempt's tail (most runs print nothing on stderr)
            self._tails.pop(step.name, None)
        log_file = _AttemptLog(self, step.name, number, files)
        files.append(log_file)
        limit = step.timeout if step.timeout is not None else self.options.step_timeout
        running = self._running[executor.name]  # (made with the executor)
        running.append(log_file)  # this attempt's token, for executors.status()
        task = start = outcome = None
        began = time.monotonic()
        # (None unless nobody waits for the run; the stop button's SIGINT reaches only
        # the kernel's process group: a Python step run here, not a command, which leads
        # a group of its own)
        local = executor.name == "local"
        inline = local and step.func is not None  # (Python run here: asked below too)
        seen = unwaited_attempt(self.run) if inline else None
        own_group = local and step.func is None  # (a command: see above)
        try:
            task, start = self._started(step, executor, number, log_file, inline)
            if limit is None:  # wait_for would only await it
                ended = await executor.execute(task)
            else:
                starts = start.event if start is not None else None
                ended = await wait_for(executor.execute(task), limit, starts)
            if self.run.cancel_requested or cancelling() or (  # (too short to have
                    time.monotonic() - began >= STARTS_A_PROCESS  # started a process: no
                    and interrupt_arrived(self.run, began, own_group=own_group)):  # call)
                await self._cut_short()
            if seen is not None and interrupted_unwaited(seen, began):
                raise _stopped_by_the_button(step.name)
            outcome = ended
            if ended.image_ref:  # (failed or not: the image that ran; _ran inline)
                self._ran(step, ended)
        except asyncio.CancelledError:  # (a run's timeout, a cancel): one still queued did
            start = None  # not run, and is not said to have (no 'started', no attempt)
            raise
        except asyncio.TimeoutError:
            raise StepTimeout(
                f"step {step.name!r} ran past its timeout of {limit:g} s and "
                f"{_how_stopped(task, limit, time.monotonic() - began)}",
                step=step.name, masked=True,
            ) from None
        except StepCancelled:
            raise
        except Exception as exc:
            self._ran(step, exc)  # (an executor's StepFailed may name the image that ran)
            if self.run.cancel_requested or cancelling() or interrupt_arrived(
                    self.run, began, own_group=own_group):
                await self._cut_short()
            if seen is not None and interrupted_unwaited(seen, began):
                raise _stopped_by_the_button(step.name) from exc
            raise
        finally:
            if start is not None:  # (one that failed queued, not sent, is an attempt too)
                start()
            running.remove(log_file)
            log_file.close()
            if task is not None and task.left_running:  # (its displays kept: it may go on)
                self._left_running.setdefault(step.name, number)
            elif self._displays and not self._stores_displays(step, outcome):
                self._displays.pop((step.name, number), None)
        assert outcome is not None
        if outcome.exit_code not in (0, None):
            raise StepFailed(
                self._exit_message(step.name, number, outcome.exit_code)
                + (unmade_mounts_hint(step) if executor.name == "local" else ""),
                step=step.name,
                exit_code=outcome.exit_code,
                stderr_tail=self._stderr_tail(step.name, number),
                masked=True,  # (its stderr line is: not the exit code)
            )
        if _exited_before_outputs(step, outcome, executor):
            raise StepFailed(_outputs_unreached(step), step=step.name)
        if _may_hold_own_result(step, outcome, executor, task):
            outcome = _with_own_result(step, outcome, task)
        return outcome

    @staticmethod
    async def _cut_short() -> NoReturn:
        """The run was cancelled, or an interrupt marked it so, as an attempt ended: the
        stop button's SIGINT reaches the processes an in-process Python step waits for
        (the kernel's process group) before dagnb cancels the run, and the step may
        return at once with what they left. It ends cancelled, stored nowhere, as the
        cancel that follows reaches this task (:func:`until_cancelled`)."""
        await until_cancelled()
        raise asyncio.CancelledError

    def _started(
        self, step: Step, executor: Executor, number: int, log_file: _AttemptLog,
        inline: bool,
    ) -> tuple[Task, _Start | None]:
        """The attempt's task, its folder leased if it needs one, "running" said; by an
        executor that queues attempts, when one leaves its queue (the _Start, then).
        ``inline``: a Python step run in this process."""
        if not inline:  # only inline Python makes none
            self.run.make_workspace()  # its folder, leased before an executor writes there
        task = self._task(step, number, log_file, params=executor.name != "local")
        if inline and step.needs:
            task.on_input_paths = self._input_paths_asked  # (if it asks for its folders)
        image = None  # a step on the host ran in no image, whatever it names
        if "containers" in executor.capabilities:
            image = self._images[step.name] = image_label(step.image)
        start = None
        if QUEUES in executor.capabilities:  # (said when the attempt leaves its queue)
            task.began = start = _Start(functools.partial(
                self._emit, "state", step.name, number, state="running",
                executor=executor.name, image=image))
        else:  # (no partial: every step of a run passes here)
            self._emit("state", step.name, number, state="running", executor=executor.name,
                       image=image)
        left = self._left_running.get(step.name)
        if left is not None:  # said in the run's log (the run's log only, not the entry's)
            self._emit("log", step.name, number, stream="stderr",
                       line=f"dagnb: attempt {left} did not stop when cancelled and may still "
                            f"write to its folder; attempt {number} writes to {task.step_dir}/out")
        return task, start

    def _task(self, step: Step, number: int, log_file: _AttemptLog, params: bool = True,
              ) -> Task:
        task = Task(
            step=step,
            attempt=number,
            step_dir=self._step_dir(step.name, number) if self._left_running
            else f"{self._folder}/{step.name}",  # (most runs: none left running)
            make_folder=self.run.make_workspace,
            inputs=self._inputs(step) if step.needs else {},
            secrets=self.secrets.get(step.name, _NONE),
            withheld=self._secret_names.difference(step.secrets) if self._secret_names
            else _NO_NAMES,
            base_dir=self.options.base_dir,
            run_id=self.run.id,
            log=log_file,
            show=None if step.func is None else log_file.show,
        )
        if self._masking is not None:
            task.mask, task.cache_secrets = self._masking, self._cache_secrets
            task.masked_names = self._masked_names
        cache = self.options.cache
        if cache is not None:
            task.cache_folder = cache.folder
        key = self._keys.get(step.name)
        if key is not None:
            task.key = key
        if key is None or _afresh(step, cache):
            task.fresh = True  # (no cache this run, too): an executor's must not serve it
        if number > 1 and task.out_dir.exists():  # an earlier attempt's leftovers
            shutil.rmtree(task.out_dir)
        if step.func is None and params:  # the local executor writes it with the folders
            write_params(step, task.params_file)
        return task

    def _step_dir(self, name: str, number: int) -> str:
        """The attempt's folder: the step's; but after an attempt that did not stop (it may
        still write to its $DAGNB_OUT), a fresh one of its own, whose outputs alone are
        stored and shown, as the contract's fresh, empty $DAGNB_OUT requires."""
        folder = f"{self._folder}/{name}"
        left = self._left_running.get(name)
        if left is None:
            return folder
        folder = self._own_dirs[name] = f"{folder}/attempt-{number}"
        return folder

    def _inputs(self, step: Step) -> dict[str, Input]:
        inputs = {}
        for need in step.needs:
            done = self._finished.get(need)
            if done is not None:
                result = done.result  # (_value inline: on every step with needs)
                if isinstance(result, CachedResult):
                    result = result.get()
                elif need in self._withheld_results and self._reads_files(step):
                    result = NO_RESULT  # (a container's executor would stage it as a file)
                where = done._path  # (the where property's usual case inline)
                inputs[need] = Input(need, done.where if where is None else where, result,
                                     done.handle)
        return inputs

    def _reads_files(self, step: Step) -> bool:
        """Whether ``step`` gets its upstreams' results as files (a command, or any step
        in a container), not as values in memory (Python, in this process or on dask)."""
        if step.func is None:
            return True
        try:
            return self._executor(step).name == "dagger"
        except Exception:  # (ExecutorUnavailable, a bad setting: said as that step starts)
            return False

    def _stores_displays(self, step: Step, outcome: Outcome | None) -> bool:
        """Whether an attempt's displays go into the step's entry: it succeeded, and the
        step is stored (its key made, see _run_and_store); else they are dropped as it
        ends (they were shown as they came)."""
        return (outcome is not None and outcome.exit_code in (0, None)
                and step.name in self._keys)

    def _display(self, name: str, number: int, log_file: _AttemptLog, *shown: Any) -> Any:
        """One display of attempt ``number`` of ``name`` (see StepDisplays.__call__): the
        succeeded attempt's are kept for the step's entry (one that did not stop, still
        displaying, keeps its own)."""
        sink = self._displays.get((name, number))
        if sink is None:
            sink = self._displays[name, number] = StepDisplays(
                self._emit, name, number, log_file, log_file, self._masking,
                self.run.displays_by_view)
        return sink(*shown)

    def _executor(self, step: Step) -> Executor:
        """The step's executor, looked up once per executor name in a run."""
        found = self._executors.get(step.executor)
        if found is None:
            assert self.options.executor_for is not None
            found = self._executors[step.executor] = self.options.executor_for(step)
            if found.name not in self._running:  # (what each attempt on it uses)
                self._running[found.name] = running_on(found.name)
        return found

    def _breaker_of(self, executor: Executor) -> Any:
        """The executor's circuit breaker, looked up once per run."""
        found = self._breakers.get(executor.name)
        if found is None:
            found = self._breakers[executor.name] = _breaker(executor)
        return found

    def _out_dir(self, name: str) -> Path:
        return self.run.workspace / name / "out"  # made (and leased): it is saved from

    def _out_text(self, name: str) -> str:
        """Where a step's outputs are, whether or not it made the folder."""
        own = self._own_dirs.get(name)  # (after an attempt that did not stop)
        return f"{self._folder}/{name}/out" if own is None else f"{own}/out"

    # -- endings --------------------------------------------------------------------
    def _exit_message(self, name: str, attempt: int, code: int) -> str:
        tail = self._stderr_tail(name, attempt, lines=1)
        said = f" ({_signal_words(-code)})" if code < 0 else ""  # (the code stays: retry_on
        return f"exit code {code}{said}" + (f": {tail}" if tail else "")  # reads -9 as 137)

    def _stderr_tail(self, name: str, attempt: int, lines: int = STDERR_TAIL) -> str:
        """The last non-blank stderr lines of the step's current attempt."""
        found = list(self._tails.get(name, ()))  # (masked already)
        return "\n".join(bounded_line(_as_shown(line)) for line in found[-lines:])

    def _error_line(self, error: BaseException) -> str:
        """The error's first line, masked unless it is already, then bounded (a Python
        step's exception)."""
        line = _one_line(error)
        return bounded_line(line if getattr(error, "masked", False) else self.mask(line),
                            _ERROR_LIMIT)

    def _fail(self, step: Step, exc: StepError) -> None:
        exit_code = getattr(exc, "exit_code", None)
        state = "cancelled" if isinstance(exc, StepCancelled) else "failed"
        image = self._images.get(step.name, _NO_IMAGE)
        self._settle(
            step.name,
            state,
            error=self._error_line(exc) + self._ran_in(step, exc, state),
            exit_code=exit_code,
            error_type=type(exc).__name__,
            **({} if image is _NO_IMAGE else {"image": image}),
        )
        for name, via in self._skippable(step.name).items():
            why = (self._reading(name, step.name) if via == step.name
                   else f" (through {via})")  # (via's own row says how it depends)
            self._settle(name, "skipped", error=f"upstream step {step.name!r} {state}{why}")
        if self.options.fail_fast and not self._failed_fast and state == "failed":
            self._failed_fast = True
            reason = self._stop_reason = f"stopped after step {step.name!r} failed (fail_fast)"
            # kept: the loop holds tasks weakly, and this one must finish
            self._stopper = asyncio.get_running_loop().create_task(self._stop_all(reason))
        self._check_done()

    def _ran_in(self, step: Step, exc: StepError, state: str) -> str:
        """For a failure on a file not found, the folder the step ran in, which its
        relative paths start from (a shell step's and an in-process Python step's differ)."""
        executor = self._executors.get(step.executor) if state == "failed" else None
        if executor is None:  # (none made: the step never started in a folder)
            return ""
        in_process = step.func is not None and executor.name == "local"
        return self.mask(ran_in_hint(step, exc, self.options.base_dir, executor.name,
                                     in_process))

    def _reading(self, name: str, upstream: str) -> str:
        """`` (it reads rows, which load publishes)`` for a step started after
        ``upstream`` for the variables it reads, not needing it: why it depends on it."""
        read = self.options.reads.get(name)
        if not read or upstream in self.run.steps[name].needs:
            return ""
        variables = [variable for variable, maker in read.items() if maker == upstream]
        return (f" (it reads {', '.join(variables)}, which {upstream} publishes)"
                if variables else "")

    def _skippable(self, name: str) -> dict[str, str]:
        """The unsettled steps downstream of ``name``, each with the step it was reached
        through (``name`` itself for a direct dependent)."""
        seen: dict[str, str] = {}
        queue = [(child, name) for child in self._dependents[name]]
        for child, via in queue:  # (breadth first: each reached by its shortest way)
            if child not in seen and child not in self._settled:
                seen[child] = via
                queue.extend((grandchild, child) for grandchild in self._dependents[child])
        return seen

    def _release(self, name: str) -> str | None:
        """Mark ``name`` done and start the children it made ready; the first of them
        is returned for the calling task to run next."""
        if name not in self._settled:  # (_settle and _check_done inline: every step)
            self._settled.add(name)
            image = self._images.get(name, _NO_IMAGE)
            if image is _NO_IMAGE:  # (most steps: no dict made to pass it on)
                self._emit("state", name, state="succeeded", exit_code=0)
            else:
                self._emit("state", name, state="succeeded", exit_code=0, image=image)
        settled, waiting = self._settled, self._waiting
        if len(settled) == self._step_count and self._all_done is not None:
            self._all_done.set()
        ready = []
        for child in self._dependents[name]:
            left = waiting[child] = waiting[child] - 1
            if left == 0 and child not in settled and not self._failed_fast:
                ready.append(child)
        if not ready:
            return None
        if len(ready) > 1:
            for child in ready[1:]:
                self._wait_ready(child)
        self._emit("state", ready[0], state="queued")
        return ready[0]  # the calling task records it as its own

    def _settle(self, name: str, state: str, **data: Any) -> None:
        if name in self._settled:
            return
        self._settled.add(name)
        self._emit("state", name, state=state, **data)
        self._check_done()

    def _check_done(self) -> None:
        if self._all_done is not None and len(self._settled) == self._step_count:
            self._all_done.set()


def _unanswered_line(store: str, deadline: float, count: int) -> str:
    """What a run says of a store (its URL, no credentials) that moved none of an upload
    for ``deadline`` seconds: ``count`` entries left unsent, and what sends them."""
    them = "it" if count == 1 else "them"
    return (unanswered_words(store, deadline, count) + f", kept in the local tier; the next "
            f"run served {them} from the tier uploads {them}, or dagnb cache push does")


def _another_run(holder: int | None, step: str, run: Run) -> str:
    """``another run computing it``, with the process holding the step's key, and its
    run where its start line tells: ``(pid 4242, run 20261205-...)``; the words alone
    when it is not known, or is this process (a background run, shown beside it)."""
    if holder is None or holder == os.getpid():
        return "another run computing it"
    found = _run_of(os.path.dirname(run.workspace_text), holder, step, run.id)
    return f"another run computing it (pid {holder}{f', run {found}' if found else ''})"


def _run_of(runs: str, pid: int, step: str, own: str) -> str | None:
    """The newest run with ``step`` that process ``pid`` noted as it started in
    ``.runs/started.jsonl`` (see :mod:`dagnb.runtime.history`); None if none."""
    try:
        with open(f"{runs}/{STARTED_NAME}", "rb") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if str(pid).encode() not in line:
            continue
        with contextlib.suppress(ValueError):
            start = json.loads(line)
            if (isinstance(start, dict) and start.get("pid") == pid
                    and step in (start.get("steps") or ()) and start.get("run") != own):
                return str(start["run"])
    return None


Links = tuple[dict[str, int], dict[str, list[str]], int]


def step_links(
    order: list[str], steps: Mapping[str, Step],
    after: Mapping[str, tuple[str, ...]] | None = None,
) -> Links:
    """Each step's count of needs in the run, the steps of the run that need it, and the
    most steps that can ever run at once, or more: the roots, plus for each step
    releasing k steps, k - 1 new branches (a chain is one, whatever its length). In one
    pass: a notebook's graph of 1,000 steps makes them on every run. The steps a step
    starts ``after`` count as its needs here (not elsewhere: its key, its arguments)."""
    waiting = dict.fromkeys(order, 0)
    dependents: dict[str, list[str]] = {name: [] for name in order}
    branches = 0
    for name in order:
        count = 0
        needs = steps[name].needs
        if after and name in after:  # (most runs have none: no tuple made per step)
            needs = (*needs, *(m for m in after[name] if m not in needs))
        for need in needs:
            children = dependents.get(need)
            if children is not None:
                branches += 1 if children else 0  # a second child: a new branch
                children.append(name)
                count += 1
        if count:
            waiting[name] = count
        else:
            branches += 1  # a root
    return waiting, dependents, min(branches, len(order))


def _set_aside(cache: StepCache, steps: Mapping[str, Step], name: str, entry: Entry,
               problem: str) -> bool:
    """Move aside an upstream step's entry that a step downstream changed; False if
    it was removed meanwhile (a clear, an eviction)."""
    return cache.quarantine(steps[name], entry, problem)


def _value(result: Any) -> Any:
    return result.get() if isinstance(result, CachedResult) else result


def _warn_if_into_out_dir(name: str, result: PurePath, out_dir: str) -> None:
    """A step's result that is a path into its out_dir dangles once its outputs move
    into the cache entry (this run's steps downstream get it too, and a hit): said, with
    the path that stays right."""
    try:
        inside = Path(os.path.abspath(result)).relative_to(os.path.abspath(out_dir))
    except ValueError:
        return
    checks.warn_user(f"step {name!r} returned a path inside its out_dir, which moves into "
                     f"the cache; a downstream step reads it as "
                     f"dagnb.current().inputs[{name!r}] / {inside.as_posix()!r}")


def _afresh(step: Step, cache: StepCache | None) -> bool:
    """Whether an executor's own cache (Dagger's exec cache, which outlives the process
    and keeps no age) must not serve a step that dagnb runs: it runs whatever a cache
    holds (cache=False, refresh, no cache), or a result of it is kept a while only (a
    ttl: the engine cannot tell an old exec's age; ``cache="session"``: one process)."""
    return (step.cache is False or step.cache == "session" or cache is None
            or cache.refreshes(step) or cache.ttl_of(step) is not None)


def _exited_before_outputs(step: Step, outcome: Outcome, executor: Executor) -> bool:
    """Whether a --python cell's step with --outputs ended by ``sys.exit(0)`` (no result,
    as a step without --outputs may end): stored, it would publish None as each."""
    return (outcome.result is NO_RESULT and bool(getattr(step.func, PUBLISHED_AS, ()))
            and SIMULATED not in executor.capabilities)  # (a scripted outcome has none)


def _may_hold_own_result(step: Step, outcome: Outcome, executor: Executor,
                         task: Task | None) -> bool:
    """Whether a Python step's folder may hold a result file it wrote itself: one that
    asked for its folder (an inline step that did not has none), on an executor that
    does not write its result there itself (a container's is exported with it)."""
    return (step.func is not None and outcome.result is not NO_RESULT and task is not None
            and "out_dir" in task.__dict__ and "containers" not in executor.capabilities)


def _with_own_result(step: Step, outcome: Outcome, task: Task) -> Outcome:
    """``outcome`` with the result of a step that wrote its own result file (see
    :func:`~dagnb.model.results.own_result`): refused if it returned a value too."""
    try:
        result = own_result(step.name, task.out_dir, outcome.result)
    except ValueError as exc:
        raise StepFailed(str(exc), step=step.name) from None
    return outcome if result is outcome.result else dataclasses.replace(outcome, result=result)


def _outputs_unreached(step: Step) -> str:
    names = ", ".join(repr(name) for name in getattr(step.func, PUBLISHED_AS, ()))
    return (f"step {step.name!r}: the cell ended (sys.exit(0)) before assigning its "
            f"--outputs {names}; nothing was stored: assign them before sys.exit(), "
            "or raise to fail the step")


def _as_shown(line: str) -> str:
    """What a terminal left of a line redrawn with carriage returns (a progress bar
    ending in the error): its last part that is not blank."""
    if "\r" not in line:
        return line
    parts = [part for part in line.split("\r") if part.strip()]
    return parts[-1] if parts else line


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


LATE_STOP = 0.5  # s past its timeout: a stop that came when a long C call returned


def _how_stopped(task: Any, limit: float, lasted: float) -> str:
    """How a step that ran past its timeout of ``limit`` ended, ``lasted`` seconds after
    it began: stopped, or not, or stopped late, an in-process call held in C code (a
    ``time.sleep(8)``) until it returned: "was stopped" said nothing of the 6 s more it
    ran, nor that what the call did is done."""
    if task is not None and task.left_running:
        return "did not stop (it ignored its cancel and runs on, its result dropped)"
    if lasted > limit + LATE_STOP:
        return (f"was stopped {lasted:.1f} s in, when a call into C code returned (such a "
                "call, time.sleep say, cannot be cut short: what it did is done)")
    return "was stopped"


def _stopped_by_the_button(name: str) -> StepCancelled:
    """An attempt of a run nobody waits for (``--background``) that a SIGINT overlapped:
    the kernel's stop button signals its whole process group, so the processes the step
    waited for died of it, and what the step made of that (a ``returncode`` of -2, a
    partial file, a ``CalledProcessError``) is not its result. It ends cancelled, not
    stored and not retried (a re-run would repeat what the user perhaps meant to stop),
    its dependents skipped, while the rest of the run goes on as the button left it."""
    return StepCancelled(
        f"step {name!r} was cut short: the stop button's interrupt reached the processes "
        "it waited for (a --background run goes on, this step's result was not kept); "
        "run it again", step=name, masked=True)


def _exhausted(name: str, error: DagnbError) -> StepFailed:
    """The failure of a step that no attempt may follow (an open breaker, a transient
    error out of retries), with the exit code its own code ended with, if it ended: a
    Python step that raised a ConnectionError each time shows 1, as one that raised a
    ValueError once."""
    exit_code = error.exit_code if isinstance(error, TransientError) else None
    return StepFailed(str(error), step=name, exit_code=exit_code,
                      masked=getattr(error, "masked", False))


def _breaker(executor: Executor) -> Any:
    from dagnb.retry.breaker import breaker_for

    return breaker_for(executor.name)


def _attempt_limit(policy: Any, error: BaseException) -> int:
    """The most attempts the policy allows after ``error``: its kind's retries (only a
    transient error has the higher floor), as the policy's stop counts them."""
    return 1 + policy.retries_for(error)


def _signal_words(number: int) -> str:
    """What a signal that ended a step's process says of it (``exit code -9``)."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"ended by signal {number}"
    if number == signal.SIGKILL:
        return f"killed by signal {number}, {name}: out of memory, or killed from outside"
    verb = "stopped" if number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) else "killed"
    return f"{verb} by signal {number}, {name}"
