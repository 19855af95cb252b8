"""Run: one execution of a graph's selected steps, and everything it produced.

A Run holds the event log (from which its status and log tables derive), the results
and output folders of its steps, and a handle to cancel it or wait for it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import html
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.cache.housekeeping import DAMAGED, set_aside_as_damaged
from dagnb.checks import bounded_line
from dagnb.errors import RunFailed, StepNotFoundError
from dagnb.executors import loop
from dagnb.model.results import NO_RESULT
from dagnb.model.step import Step
from dagnb.runtime import history
from dagnb.runtime.events import TERMINAL_STATES, Event, EventLog
from dagnb.runtime.frames import check_log_filters, logs_frame, status_frame, status_rows
from dagnb.runtime.history import RunFolder
from dagnb.runtime.logfile import attempt_marked, read_records, tail_records

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Run"]

NOT_OK = ("failed", "cancelled", "skipped")
_NOT_OK_SET = frozenset(NOT_OK)
FAILED_TAIL = 10  # stderr lines of each failed step in a RunFailed
CANCELLED = "the run was cancelled"  # why a step not ended was, as the scheduler says it
LEFT_IN_A_CALL = "the run was cancelled; the step did not return from a call in C code in time"


class Run:
    """The record of one run. Returned by ``graph.run()`` and ``await graph.arun()``."""

    def __init__(
        self,
        run_id: str,
        graph_name: str,
        steps: Mapping[str, Step],
        order: list[str],
        folder: RunFolder,
    ) -> None:
        self.id = run_id
        self.graph_name = graph_name
        self.steps = dict(steps)
        self.order = list(order)
        self._folder = folder
        self.events = EventLog()
        self._results: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}  # Path, or a record with .path
        self._restored: dict[str, Any] = {}  # step -> its CachedResult (a hit's result
        #                                     and log file, read when first asked for)
        self._future: concurrent.futures.Future[Any] | None = None
        self._cancelled = False  # set once, from any thread
        # the record is written once: as the run ends, or by the thread waiting for it
        # as it gives up on it (abandon), whichever comes first; the other waits for it
        self._recording = threading.Lock()
        self._recorded = False
        self.left_running: list[str] = []  # see abandon()
        self.not_stored: dict[str, str] = {}  # step -> why it ran but was not cached
        # step -> why fail-on-miss refused it, its entry gone since the run's check
        self.refused: dict[str, str] = {}
        self._cancel_hook: Any = None
        # step -> files of all its lines (or what lists them, asked when first needed)
        # step -> its log files, or its CachedResult (whose log_files() lists its entry's)
        self._log_files: dict[str, Any] = {}
        self._flushes: dict[str, Callable[[], None]] = {}  # step -> flush its open file
        # whether a view publishes the rich outputs its Python steps display (a notebook
        # cell's run: each lands in the cell, in order with the lines, not in whichever
        # cell runs as a step displays it); else whoever displays one publishes it
        self.displays_by_view = False

    @property
    def given_params(self) -> dict[str, Any]:
        """The params this run was given from outside its steps' definitions
        (:func:`~dagnb.workflows.params.set_params`, ``dagnb run --param``), as its
        record keeps them: ``only_failed`` counts a step's state among such runs alone."""
        return dict(self._folder.params)

    @property
    def kept(self) -> bool:
        """Whether this run is recorded and its folder (its steps' log files) outlives
        the process: a read-only run's is a temporary folder, removed at exit."""
        return self._folder.kept

    @property
    def workspace(self) -> Path:
        """This run's folder of step directories, made when first needed."""
        return self._folder.make()

    @property
    def workspace_text(self) -> str:
        """:attr:`workspace` as text, not made: where steps' folders go once needed."""
        return self._folder.text

    @property
    def workspace_made(self) -> bool:
        """Whether a step made this run's folder yet (if not, no step wrote a file)."""
        return self._folder.made

    def make_workspace(self) -> None:
        """Make this run's folder if it is not made yet (a step is about to use it)."""
        self._folder.make()

    def entry_of(self, step: str) -> str | None:
        """The key of the cache entry ``step`` was served from or stored in this run."""
        return self._folder.entry_of(step)

    def note_use(self, step: str, key: str, read_from_disk: bool = True,
                 created: float | None = None, stored: bool = False) -> None:
        """This run hands cache entry ``step/key`` (of that ``created`` time; ``stored``
        by it) to its steps: eviction leaves it alone while the run is live, and the
        run's record notes which version of the key it was (see
        :meth:`RunFolder.note_use`)."""
        self._folder.note_use(step, key, read_from_disk, created, stored)

    def list_uses_now(self) -> None:
        """Write the entries this run uses to its ``.uses`` now (its folder made, if not
        yet): a step is about to read from disk one noted as read from memory."""
        with contextlib.suppress(OSError):  # (a full disk: only eviction would know)
            self._folder.make()

    def make_workspace_for_uses(self) -> None:
        """Before a step starts: make the run's folder if entries it uses are known to no
        other process yet (time passes now, and an eviction may come)."""
        if self._folder.uses_unwritten:
            with contextlib.suppress(OSError):  # (a full disk: the step says so itself)
                self._folder.make()

    # -- tables ---------------------------------------------------------------------
    def status(self) -> pd.DataFrame:
        """One row per step: step, state, cached, attempts, exit_code, started,
        finished, duration_s, executor, image, error."""
        return status_frame(self.events, self.order)

    def logs(
        self, step: str | None = None, stream: str | None = None, tail: int | None = None
    ) -> pd.DataFrame:
        """Captured lines: time, step, attempt, stream, line (secrets masked).

        A step that printed more than the event log keeps in memory is read from its
        log files (with ``step`` and ``tail``, back from their ends: the cost of the
        tail, not of the file; ``tail`` alone reads them all, keeping that many lines in
        memory). ``stream`` is 'stdout', 'stderr' or None (both); ``tail`` a whole number
        >= 0 or None (all)."""
        check_log_filters(stream, tail)
        if step is not None:
            self._known(step)
        spilled = {n for n in ([step] if step else self._log_files) if self.events.spilled(n)}
        if tail is not None and step in spilled:
            default = _first_line_time(self.events, step)
            records = tail_records(self._flushed_files(step), tail, stream)  # from the end
            events: Iterable[Event] = [_file_event(step, r, default) for r in records]
        elif spilled:
            files = {name: self._flushed_files(name) for name in spilled}
            events = _from_files(self.events, spilled, files)
        else:
            events = self.events
        return logs_frame(events, step=step, stream=stream, tail=tail)

    def log_tail(self, step: str, count: int) -> list[str]:
        """The last ``count`` lines of ``step`` (both streams, masked), read from the end
        of its log files: the views' tail of a step whose later lines the event log did
        not keep, as ``logs(step, tail=count)`` reads it, without building a DataFrame."""
        records = tail_records(self._flushed_files(step), count) if count else []
        return [str(r["line"]) for r in records]

    def log_files(self, step: str) -> list[Path]:
        """The files that hold ``step``'s lines, in order: its attempts' that printed
        (in the run's folder), or its cache entry's once stored; none if it was silent."""
        self._known(step)
        return [path for path in self._flushed_files(step) if path.is_file()]

    def _flushed_files(self, step: str) -> list[Path]:
        """``step``'s log files, a running step's latest lines (still in its buffer)
        written to them first."""
        flush = self._flushes.get(step)
        if flush is not None:
            flush()
        found = self._log_files.get(step, [])
        return list(found) if type(found) is list else found.log_files()

    def status_rows(self) -> dict[str, dict[str, Any]]:
        """:meth:`status` as plain dicts by step name (no pandas; times as epoch seconds)."""
        return status_rows(self.events, self.order)

    def states(self) -> dict[str, str]:
        """Step name -> current state."""
        return self.events.states(self.order)

    # -- products -------------------------------------------------------------------
    def result(self, step: str) -> Any:
        """The step's Python result (``None`` for a step that has none).

        Raises :class:`~dagnb.errors.StepNotFoundError` for a step that did not succeed
        (failed, skipped, cancelled, not finished yet): its None would pass for a result.
        """
        self._known(step)
        if step not in self._results and step in self._restored:
            self._results[step] = self._restored[step].get()
        if step not in self._results:
            raise StepNotFoundError(self._nothing_of(step, "result"))
        value = self._results[step]
        return None if value is NO_RESULT else value

    def outputs(self, step: str) -> Path:
        """The folder holding the step's output files (``$DAGNB_OUT``)."""
        self._known(step)
        if step not in self._outputs:
            raise StepNotFoundError(self._nothing_of(step, "outputs"))
        found = self._outputs[step]
        path = found if isinstance(found, Path) else found.path  # the scheduler's record
        if str(path).startswith(f"{self._folder.text}/") and self._folder.pruned:
            raise StepNotFoundError(self._pruned_outputs(step))
        if not path.exists():
            set_aside = self._set_aside_outputs(step, getattr(found, "entry", None))
            if set_aside:
                raise StepNotFoundError(set_aside)
        return path

    def _set_aside_outputs(self, step: str, entry: Any) -> str | None:
        """Why a step's outputs, a cache entry's folder, are gone when the entry was set
        aside as damaged (a step downstream wrote into it: moved under ``.damaged``);
        None when it was not (removed by a clear or an eviction, say)."""
        if entry is None:
            return None
        root = entry.path.parent.parent  # (<root>/<step>/<key>)
        if not set_aside_as_damaged(root, entry.step, entry.key):
            return None
        damaged = root / DAMAGED
        why = self._damage_of(step)
        return (f"step {step!r} has no outputs any more: its cache entry "
                f"{entry.step}/{entry.key[:12]} was set aside as damaged"
                f"{f' ({why})' if why else ''}, moved under {str(damaged)!r}; the next "
                "run makes it again")

    def _damage_of(self, step: str) -> str | None:
        """The error of the step of this run that wrote into ``step``'s outputs, its
        input, if one did (the input guard's line names ``$DAGNB_IN/<step>``)."""
        told = (f"$DAGNB_IN/{step}/", f"$DAGNB_IN/{step} ", f"$DAGNB_IN/{step};")
        for row in self.status_rows().values():
            error = row.get("error") or ""
            if any(part in error for part in told):
                return error
        return None

    def _pruned_outputs(self, step: str) -> str:
        """Why a step not stored in the cache (``cache=False``...) has no outputs now:
        they were in the run's folder, which a prune of old runs' folders removed."""
        return (f"step {step!r} has no outputs any more: they were in run {self.id}'s "
                f"folder, not in the cache, and that folder was pruned (the newest "
                f"{history.KEEP_RUNS} runs' folders are kept, up to "
                f"{history.KEEP_RUNS_BYTES / 2**30:g} GiB in all); to keep a step's "
                "outputs, let it be cached, or read them before the next runs")

    def _nothing_of(self, step: str, what: str) -> str:
        """Why a step has no result or outputs: its state, and its error if it has one."""
        row = self.status_rows()[step]
        error = row.get("error")
        why = f"state {row['state']!r}" + (f": {error}" if error else "")
        return f"step {step!r} has no {what} in this run ({why})"

    def _known(self, step: str) -> None:
        if step not in self.steps:
            from dagnb.model.graph import _unknown_message

            raise StepNotFoundError(_unknown_message(step, self.steps, f"in run {self.id}"))

    # -- what the scheduler records (the only writers of a Run's state) --------------
    def record(self, step: str, outputs: Any, result: Any = NO_RESULT) -> None:
        """Keep what step ``step`` produced: its output folder (a Path, or a record with
        ``.path``) and its Python result."""
        self._outputs[step] = outputs
        self._results[step] = result

    def record_cached(self, step: str, outputs: Any, restored: Any) -> None:
        """Keep a restored step's outputs and its ``restored`` result (a
        :class:`~dagnb.cache.steps.CachedResult`), whose ``get()`` loads the result and
        ``log_files()`` lists its log file, each when first asked for: most hits of a
        re-run are never read, and a closure each would cost every hit."""
        self._outputs[step] = outputs
        self._restored[step] = restored
        self._log_files[step] = restored  # (its log_files() when asked)
        self._flushes.pop(step, None)

    def record_log_files(
        self,
        step: str,
        paths: Sequence[Path],
        flush: Callable[[], None] | None = None,
    ) -> None:
        """Where all of ``step``'s lines are on disk, in order (its attempts' files, then
        its cache entry's), and
        ``flush``, which writes out the lines the last of them still buffers (for a step
        still running; safe from any thread)."""
        self._log_files[step] = list(paths)
        if flush is None:
            self._flushes.pop(step, None)
        else:
            self._flushes[step] = flush

    def forget_flush(self, step: str, flush: Callable[[], None]) -> None:
        """Let go of ``flush``, a closed log file's (nothing is left to write), unless a
        later attempt's replaced it."""
        if self._flushes.get(step) == flush:
            del self._flushes[step]

    def follow(self, future: concurrent.futures.Future[Any]) -> None:
        """Let ``done`` and ``wait()`` follow ``future``, this run's background execution."""
        self._future = future

    def add_done_callback(self, callback: Callable[[Run], Any]) -> None:
        """Call ``callback(run)`` as the run ends, on the thread that ends it (at once
        if it has ended, or was never started)."""
        if self._future is None:
            callback(self)
        else:
            self._future.add_done_callback(lambda _: callback(self))

    def on_cancel(self, hook: Callable[[], Any]) -> None:
        """Call ``hook`` when the run is cancelled (at once if it already was). The task
        that executes the run calls this as it starts; a thread waiting for that task
        that gives up on it then records the run (:meth:`abandon`)."""
        self._cancel_hook = hook
        loop.when_abandoned(self.abandon)
        if self._cancelled:
            hook()

    def begin(self) -> None:
        """Note in the run history that the run starts (one short line): killed before
        it ends (SIGKILL, power lost), it is read as killed, its steps to run again, not
        taken for no run at all (see :mod:`dagnb.runtime.history`). A run of no steps
        leaves no trace."""
        if self.order:
            self._folder.begin(self.graph_name, self.order)

    def finish(self) -> None:
        """Record the final states in the run's folder (what ``--only-failed`` reads
        later) and let old run folders be pruned; called once, as the run ends (nothing
        if :meth:`abandon` recorded it already). A run of no steps leaves no trace."""
        with self._recording:
            if not self._recorded:
                self._record()

    def _record(self) -> None:
        self._recorded = True
        if self.order:
            states = self.states()
            skipped, errors = self._why_not_done(states)
            self._folder.close(states, self.graph_name, skipped, errors)

    def abandon(self, held: bool) -> list[str]:
        """The thread waiting for the run gives up on it after Ctrl-C's grace, the run's
        task not done (``held``: a Python step of it holds the loop thread in one long
        call, C code that no interrupt stops before it returns): its steps not ended are
        settled as cancelled and the run is recorded now, from that thread, as the
        process may exit before the task runs again (``--only-failed`` would read the
        run before as the last, and find nothing to re-run). :attr:`left_running` lists
        the Python steps still in their call, returned too (the interrupt names them).
        Nothing if the run was recorded already."""
        with self._recording:
            if self._recorded:
                return self.left_running
            states = self.states()
            if held:
                self.left_running = self._in_the_held_call(states)
            for name, state in states.items():
                if state not in TERMINAL_STATES:
                    error = LEFT_IN_A_CALL if name in self.left_running else CANCELLED
                    self.events.emit("state", name, state="cancelled", error=error)
            self._record()
        return self.left_running

    def _why_not_done(self, states: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Why each skipped step was (the upstream step that failed), and the error of
        each failed or cancelled one (masked, as its status row's), for the record."""
        if _NOT_OK_SET.isdisjoint(states.values()):  # (one C call, whatever the size)
            return {}, {}  # (most runs: no status rows made)
        rows = self.status_rows()
        why = {name: rows[name]["error"] for name, state in states.items()
               if state in NOT_OK and rows[name].get("error")}
        skipped = {name: text for name, text in why.items() if states[name] == "skipped"}
        return skipped, {name: _cut(text) for name, text in why.items() if name not in skipped}

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancelled

    # -- control --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once every step has reached a final state."""
        return self._future is None or self._future.done()

    @property
    def ok(self) -> bool:
        """True when every step succeeded or was cached."""
        return all(state in ("succeeded", "cached") for state in self.states().values())

    @property
    def failed(self) -> list[str]:
        """Names of the steps that failed."""
        return [n for n, state in self.states().items() if state == "failed"]

    def raise_for_status(self, *, shown: Collection[str] = ()) -> Run:
        """Raise :class:`~dagnb.RunFailed` if a step failed, was cancelled or was skipped.

        httpx's idiom: ``graph.run().raise_for_status()`` returns the run when every
        step succeeded or was cached. The error carries the steps' status rows and the
        stderr tail of each failed one; a notebook shows those and no traceback.
        ``shown``: steps whose every line the caller printed as they came (a notebook
        cell's text view), whose tails would show those lines a second time.
        """
        bad = {n: state for n, state in self.states().items() if state in NOT_OK}
        if not bad:
            return self
        raise RunFailed(_failure_sentence(self.id, bad, shown), run_id=self.id, states=bad,
                        details=self._failure_details(bad, shown))

    def _failure_details(self, bad: Mapping[str, str], shown: Collection[str]) -> list[str]:
        """The status rows of the ``bad`` steps, then each failed step's stderr tail
        (not of those ``shown``)."""
        rows = status_rows(self.events, self.order)
        table = [["step", "state", "exit", "error"]] + [
            [name, state, _blank(rows[name]["exit_code"]), _blank(rows[name]["error"])]
            for name, state in bad.items()
        ]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in table]
        for name, state in bad.items():
            tail = self.failure_tail(name) if state == "failed" and name not in shown else []
            if tail:
                lines += [f"── {name} failed; last lines of stderr ──",
                          *map(bounded_line, tail)]
        return lines

    def failure_tail(self, step: str, count: int = FAILED_TAIL) -> list[str]:
        """The last ``count`` stderr lines of ``step``, each attempt's under
        ``── attempt N ──`` when they span retries (as ``dagnb run`` shows them): one
        traceback after another would read as a single attempt's."""
        frame = self.logs(step, stream="stderr", tail=count)
        pairs = zip(frame["attempt"].tolist(), frame["line"].tolist(), strict=True)
        return list(attempt_marked(pairs, "──"))

    def holding_the_loop(self) -> list[str]:
        """Its running Python step in the call holding the loop thread, if one is (a
        Python step runs there): every run's steps wait for it to return."""
        future = self._future
        if future is None or loop.holding_the_loop() is not future:
            return []
        return self._in_the_held_call(self.states())

    def _in_the_held_call(self, states: Mapping[str, str]) -> list[str]:
        """The running step whose function the call holding the loop thread is (two if
        they share it): not its other Python steps, on dask workers or awaiting."""
        func = loop.held_function()
        return [name for name, state in states.items()
                if state == "running" and func is not None and self.steps[name].func is func]

    def cancel(self) -> None:
        """Stop the run: running processes are killed, waiting steps are cancelled."""
        self._cancelled = True
        if self._cancel_hook is not None:
            self._cancel_hook()
        loop.interrupt(self._future)  # a Python step blocking the loop stops now, too

    def mark_cancelled(self) -> None:
        """Mark the run cancelled now (:attr:`cancel_requested`), from a signal handler
        or a step's thread, before :meth:`cancel` follows: a step that ends after this
        ends cancelled, its result not stored."""
        self._cancelled = True

    def wait(self, timeout: float | None = None) -> Run:
        """Block until a background run ends (``TimeoutError`` after ``timeout``)."""
        if self._future is not None:
            try:
                concurrent.futures.wait([self._future], timeout=timeout)
            except RuntimeError as exc:  # (a Ctrl-C in the wait's race: see loop._result)
                loop.raise_interrupt_behind(exc)
                raise
            if not self._future.done():
                raise TimeoutError(f"run {self.id} still running after {timeout} s")
        return self

    # -- display --------------------------------------------------------------------
    def summary(self) -> str:
        """One line: how many steps ended in each state."""
        return f"run {self.id} ({self.graph_name}): {self._counts()}"

    def _counts(self) -> str:
        """``2 succeeded, 1 failed`` (`` ...`` after it while steps have not ended)."""
        counts: dict[str, int] = {}
        for state in self.states().values():
            counts[state] = counts.get(state, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no steps"
        finished = all(s in TERMINAL_STATES for s in self.states().values())
        return parts + ("" if finished else " ...")

    def __repr__(self) -> str:
        # (the counts alone after the id and name: the summary's said them again)
        return f"<Run {self.id} {self.graph_name!r}: {self._counts()}>"

    def _repr_html_(self) -> str:
        table = self.status()[
            ["step", "state", "cached", "attempts", "exit_code", "duration_s", "error"]
        ]
        # (the graph's name is a workflow file's text: escaped, as the table's cells are)
        return f"<p>{html.escape(self.summary())}</p>" + table.to_html(index=False, na_rep="")


def _failure_sentence(run_id: str, bad: Mapping[str, str], shown: Collection[str]) -> str:
    """``run X: step 'a' failed, 'b' skipped; ...`` in one sentence."""
    parts = [f"{name!r} {state}" for name, state in bad.items()]
    noun = "step" if len(parts) == 1 else "steps"
    failed = [name for name, state in bad.items() if state == "failed"]
    why = ("the status rows and stderr tails say why" if not failed or set(failed) - set(shown)
           else "the status rows and its output above say why" if len(failed) == 1
           else "the status rows and their output above say why")
    return f"run {run_id}: {noun} {', '.join(parts)}; {why}"


def _from_files(
    events: EventLog, steps: set[str], files: Mapping[str, list[Path]]
) -> Iterator[Event]:
    """The events, with the lines of ``steps`` read from their files instead (where
    their first line was), one at a time."""
    done: set[str] = set()
    last = 0.0
    for event in events:
        last = event.time
        if event.kind != "log" or event.step not in steps:
            yield event
        elif event.step not in done:
            done.add(event.step)
            yield from _file_events(event.step, files.get(event.step, []), last)
    for step in sorted(steps - done):  # none of its lines was kept (one huge line)
        yield from _file_events(step, files.get(step, []), last)


def _first_line_time(events: EventLog, step: str) -> float:
    """The time :func:`_from_files` gives ``step``'s records that have none."""
    last = 0.0
    for event in events:
        last = event.time
        if event.kind == "log" and event.step == step:
            break
    return last


def _file_events(step: str, paths: list[Path], default_time: float) -> Iterator[Event]:
    for record in read_records(paths):
        yield _file_event(step, record, default_time)


def _file_event(step: str, record: dict[str, Any], default_time: float) -> Event:
    data = {"stream": record.get("stream", "stdout"), "line": record["line"]}
    return Event(record.get("time", default_time), step, "log", record.get("attempt", 1), data)


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


_ERROR_KEPT = 300  # characters of a step's error its run's record keeps


def _cut(error: str) -> str:
    """A step's error as its run's record keeps it: its first line (masked already),
    cut short (a Python error's message may be long; the step's log holds the whole)."""
    lines = error.strip().splitlines()
    return bounded_line(lines[0] if lines else error, _ERROR_KEPT)
