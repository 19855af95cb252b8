"""What a live view of a run shows, and the plain-text view used without widgets.

:class:`LiveState` folds a run's events into what both views draw: the status rows
(through :func:`dagnb.runtime.frames.status_rows`, so the numbers are those of ``run.status()``),
the last lines of each step's log, and the new events since the last look. It reads the
event log from a cursor, so it costs nothing between renders however many lines a step
prints.

:class:`TextView` is the view for terminals, nbval and the CLI: new log lines are
printed as they come (stdout to stdout, stderr to stderr, like ``%%bash``), the
replayed output of the cell's own step when it is cached (under a "cached" header), one
line for any other cached step, and at the end the stderr tail of a failed step whose
lines were not printed, and a status table. Given a ``publish`` (the notebook's), it
shows what Python steps display too, in order with their lines, by the same rule
(:func:`folded`); :class:`DisplayFeed` does that for a view that prints no lines.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from dagnb.checks import bounded_line
from dagnb.runtime.events import TERMINAL_STATES, Event
from dagnb.runtime.frames import status_rows
from dagnb.runtime.logfile import attempt_marked
from dagnb.views.throttle import Throttle

if TYPE_CHECKING:
    from dagnb.runtime.run import Run

__all__ = ["STATE_COLOURS", "DisplayFeed", "LiveState", "Publish", "TextView", "earlier_note",
           "failed_tail", "folded", "format_rows", "retry_line", "row_cells", "shown_line",
           "waiting_line"]

Publish = Callable[[Mapping[str, Any]], None]  # a display event's data -> shown

TAIL_LINES = 20  # log lines kept per step for the live tail
FAILED_TAIL = 10  # stderr lines shown under a failed step
STATE_COLOURS = {
    "pending": "#9e9e9e", "queued": "#78909c", "running": "#1e88e5",
    "succeeded": "#2e7d32", "cached": "#00897b", "failed": "#c62828",
    "retrying": "#ef6c00", "skipped": "#757575", "cancelled": "#6d4c41",
    "stale": "#f9a825", "uncached": "#9ccc65", "never run": "#607d8b",
}


class LiveState:
    """A run's events folded for display; call :meth:`pull` before each render.

    Parameters
    ----------
    run
        The run to follow.
    tail
        Log lines kept per step (0: none, for views that print every line).
    """

    def __init__(self, run: Run, tail: int = TAIL_LINES) -> None:
        self.run = run
        self.cursor = 0
        self.state_events: list[Event] = []
        self.tail = tail
        self.tails: dict[str, collections.deque[str]] = {
            name: collections.deque(maxlen=tail) for name in run.order
        }
        self.finished = False
        self.retrying: dict[str, Event] = {}
        self.waiting: dict[str, Event] = {}  # steps another run computes, this one waits for

    def pull(self) -> list[Event]:
        """Fold the events appended since the last call; returns them."""
        new = self.run.events.since(self.cursor)
        self.cursor += len(new)
        # Comprehensions, not a Python call per event: this runs while the run does,
        # and every microsecond here is one the run's thread waits for the GIL.
        changes = [e for e in new if e.kind != "log"]
        self.state_events += [e for e in changes if e.kind == "state"]
        for event in changes:  # a step waiting for its next attempt or another run
            if event.kind == "retry":
                self.retrying[event.step] = event  # type: ignore[index]
            elif event.kind == "state" and event.data.get("state") != "retrying":
                self.retrying.pop(event.step, None)  # type: ignore[arg-type]
            if event.kind == "state":
                self._note_waiting(event)
        self.finished = self.finished or any(
            e.kind == "run" and e.data.get("state") == "finished" for e in changes)
        if self.tail and (len(changes) < len(new) or any(e.kind == "retry" for e in changes)):
            self._fold_tails(new)
        return new

    def _note_waiting(self, event: Event) -> None:
        if "waiting" in event.data:
            self.waiting[event.step] = event  # type: ignore[index]
        else:
            self.waiting.pop(event.step, None)  # type: ignore[arg-type]

    def _fold_tails(self, new: list[Event]) -> None:
        """Keep the last lines per step, walking back only as far as needed; a retry
        comes between its step's attempts as the line text mode prints for it."""
        found: dict[str, list[str]] = {name: [] for name in self.tails}
        wanting = len(found)
        for event in reversed(new):
            lines = (found.get(event.step)  # type: ignore[arg-type]
                     if event.kind in ("log", "retry") else None)
            if lines is None or len(lines) >= self.tail:
                continue
            lines.append(event.data["line"] if event.kind == "log"
                         else RetryLine(retry_line(event)))
            if len(lines) == self.tail:
                wanting -= 1
                if not wanting:
                    break
        for name, lines in found.items():
            self.tails[name].extend(reversed(lines))

    def lines(self, name: str) -> list[str]:
        """The last lines of step ``name``. Past what the event log keeps of a step
        (10,000 lines) its lines reach no cursor, so they come from its log files' end:
        the folded tail would stay at line 10,000 and miss a traceback after it."""
        if self.run.events.spilled(name):
            return [shown_line(line) for line in self.run.log_tail(name, self.tail)]
        return [line if type(line) is RetryLine else shown_line(line)
                for line in self.tails.get(name, ())]

    def earlier(self, name: str, lines: Sequence[str]) -> str:
        """The note saying how many of step ``name``'s lines its tail ``lines`` (from
        :meth:`lines`) leaves out, and what shows them; "" when none."""
        printed = sum(type(line) is not RetryLine for line in lines)
        return earlier_note(self.run.events.line_count(name) - printed, logs_command(name))

    def rows(self) -> dict[str, dict[str, Any]]:
        """Status rows by step name, as in ``run.status()``."""
        return status_rows(self.state_events, self.run.order)

    def progress(self) -> tuple[int, int]:
        """(steps in a final state, steps in the run)."""
        rows = self.rows()
        return sum(r["state"] in TERMINAL_STATES for r in rows.values()), len(rows)


class RetryLine(str):
    """The line a step's tail shows where it was retried (not one the step printed)."""


def shown_line(line: str) -> str:
    """A log line as a terminal leaves it, cut to ``LINE_LIMIT``: a progress bar (tqdm)
    rewrites its line with ``\\r`` and prints ``\\n`` only at the end, one line of every
    state it drew, which the widget and the saved notebook would carry whole."""
    return bounded_line(as_terminal_left(line))


def as_terminal_left(line: str) -> str:
    """A line redrawn with ``\\r`` (a progress bar) as a terminal left it: its last state."""
    return line.rstrip("\r").rpartition("\r")[2] if "\r" in line else line


def earlier_note(count: int, reader: str) -> str:
    """The line that says a step's output is cut to its tail, and which command (the
    ``reader``) shows the rest; "" when nothing was cut."""
    if count <= 0:
        return ""
    plural = "s" if count != 1 else ""
    return f"{count} earlier line{plural} not shown; {reader} shows them"


def logs_command(step: str) -> str:
    """The notebook's command that shows all of ``step``'s lines."""
    return f"%dagger logs {step}"


def failed_tail(run: Run, step: str, count: int = FAILED_TAIL) -> tuple[str, list[str]]:
    """The note saying how many of failed ``step``'s lines are not shown ("" when none),
    and its last ``count`` stderr lines, as :meth:`~dagnb.Run.failure_tail` gives them
    (each attempt's under ``── attempt N ──`` when they span retries)."""
    frame = run.logs(step, stream="stderr", tail=count)
    pairs = zip(frame["attempt"].tolist(), frame["line"].tolist(), strict=True)
    note = earlier_note(run.events.line_count(step) - len(frame), logs_command(step))
    return note, list(attempt_marked(pairs, "──"))


def row_cells(row: dict[str, Any], now: float | None = None) -> dict[str, str]:
    """Display strings of one status row: state, cached mark, attempt, duration, error."""
    duration = row["duration_s"]
    if duration is None and row["started"] is not None and row["state"] not in TERMINAL_STATES:
        duration = (now or time.time()) - row["started"]
    return {
        "step": row["step"],
        "state": row["state"],
        "cached": "✓" if row["cached"] else "",
        "attempt": str(row["attempts"] or ""),
        "duration": "" if duration is None else f"{duration:.1f}s",
        "exit": "" if row["exit_code"] is None else str(row["exit_code"]),
        "error": row["error"] or "",
    }


def retry_line(event: Event) -> str:
    """``── fetch: retrying 2/4 in 1.3 s: <reason> ──`` for a ``retry`` event."""
    return f"── {event.step}: {retry_words(event)} ──"


def waiting_line(event: Event) -> str:
    """``── fit: waiting for another run computing it ──`` for a step queued behind
    another run (a ``--background`` one, another process) holding its cache key, as
    ``dagnb run`` says it."""
    return f"── {event.step}: waiting for {event.data['waiting']} ──"


def retry_words(event: Event) -> str:
    """``retrying 2/4 in 1.3 s: <reason>``: a ``retry`` event as the notebook's views
    and ``dagnb run``'s progress lines both say it."""
    data = event.data
    limit = data.get("attempt_limit")
    count = f"{data['next_attempt']}/{limit}" if limit else str(data["next_attempt"])
    return f"retrying {count} in {data['delay']:.1f} s: {data['error']}"


def format_rows(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text status table (step, state, cached, attempt, duration, exit, error)."""
    cells = [row_cells(r) for r in rows]
    columns = ["step", "state", "cached", "attempt", "duration", "exit", "error"]
    widths = {c: max([len(c), *(len(x[c]) for x in cells)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    for x in cells:
        lines.append("  ".join(x[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def folded(event: Event, focus: str | None) -> bool:
    """Whether a view leaves out a step's replayed output: each output shows once, so a
    cached step other than the cell's own (``focus``) is not shown again."""
    return "cached" in event.data and event.step != focus


class DisplayFeed:
    """Publishes what a run's Python steps display, as they do (or are replayed), for a
    view that shows no lines in the cell's output (the widget); call :meth:`flush` from
    the thread whose output is the cell's."""

    def __init__(self, run: Run, focus: str | None, publish: Publish) -> None:
        self._events, self._focus, self._publish = run.events, focus, publish
        self._cursor = 0

    def flush(self) -> None:
        new = self._events.since(self._cursor)
        self._cursor += len(new)
        for event in new:
            if event.kind == "display" and not folded(event, self._focus):
                self._publish(event.data)


class TextView:
    """Prints a run's output as it comes, then its failures and status table.

    Parameters
    ----------
    run
        The run to follow.
    focus
        The step a ``%%dagger`` cell defined: its lines print bare; other steps' lines
        and headers name their step.
    stdout, stderr
        Where to print (default: ``sys.stdout``/``sys.stderr`` at print time).
    failed_tails
        Print the stderr tail of each failed step at the end; off when the caller
        raises :class:`~dagnb.RunFailed`, which shows them itself.
    publish
        Shows what a Python step displays (None: displays are left out), between the
        lines printed before and after it.
    """

    def __init__(self, run: Run | None = None, focus: str | None = None, *,
                 stdout: TextIO | None = None, stderr: TextIO | None = None,
                 failed_tails: bool = True, publish: Publish | None = None) -> None:
        self.focus = focus
        self.publish = publish
        self.failed_tails = failed_tails
        self._out, self._err = stdout, stderr
        self._headed: set[str] = set()
        self._folded: dict[str, int] = {}  # cached lines of other steps, counted not printed
        self.throttle = Throttle(self.render)
        self._unsubscribe: Any = None
        if run is not None:
            self.follow(run)

    def follow(self, run: Run) -> None:
        """Print the output of ``run`` from now on."""
        self.state = LiveState(run, tail=0)
        self._unsubscribe = run.events.subscribe(self.throttle.poke)
        self.throttle.poke(None)  # what it logged before (a wait begun): at the next tick

    def tick(self) -> bool:
        """Print new lines if due (at most ten times a second)."""
        return self.throttle.tick()

    def close(self) -> None:
        """Stop following the run and print its ending (see :meth:`finish`)."""
        self.close_quietly()
        self.finish()

    def close_quietly(self) -> None:
        """Stop following the run without printing anything; the throttle lets go of
        this view (its render held it: a cycle that kept the view's run, and the results
        its steps published, a notebook's DataFrames, till a full collection)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.throttle.release()

    def render(self) -> None:
        """Print the lines logged since the last render.

        Each output shows once: a cached step other than the cell's own is one line (its
        output was shown when it ran, and ``%dagger logs`` has it), not a replay.
        """
        out: list[str] = []
        err: list[str] = []
        for event in self.state.pull():
            if event.kind == "log" and self._folds(event):
                self._folded[event.step] = self._folded.get(event.step, 0) + 1  # type: ignore[index]
            elif event.kind == "log":
                if event.step not in self._headed:
                    # (the lines before it first: a step's stderr, written after every
                    # step's stdout of the tick, read as the last header's step's)
                    self._write(out, err)
                    out, err = [], []
                    self._header(event, out)
                (err if event.data["stream"] == "stderr" else out).append(event.data["line"])
            elif event.kind == "state" and event.data.get("state") == "cached":
                self._cached_line(event.step or "", out)
            elif event.kind == "retry":
                err.append(retry_line(event))
            elif event.kind == "state" and "waiting" in event.data:
                out.append(waiting_line(event))
            elif event.kind == "display" and self.publish is not None and not self._folds(event):
                if event.step not in self._headed:
                    self._header(event, out)
                self._write(out, err)  # the lines before it, then it
                out, err = [], []
                self.publish(event.data)
        self._write(out, err)

    def _folds(self, event: Event) -> bool:
        return folded(event, self.focus)

    def _later_notes(self, run: Run) -> list[str]:
        """A line for each step printed here whose later lines were not: past the lines
        a run keeps in memory, the view has none to print (a 30,000-line step stopped
        at line 10,000 with no word, in the cell and in ``dagnb run NOTEBOOK -o``)."""
        notes = []
        for step in sorted(self._headed):
            count = run.events.spilled(step)
            if count:
                plural = "s" if count != 1 else ""
                notes.append(f"── {step}: {count} later line{plural} not shown; "
                             f"{logs_command(step)} shows them ──")
        return notes

    def _cached_line(self, step: str, out: list[str]) -> None:
        if step == self.focus:
            return
        lines = self._folded.pop(step, 0)
        if lines:  # a step that printed nothing stays silent, as when it ran
            plural = "s" if lines != 1 else ""
            out.append(f"── {step}: cached, {lines} line{plural}; %dagger logs {step} ──")

    def _header(self, event: Event, out: list[str]) -> None:
        step = event.step or ""
        cached = "cached" in event.data
        self._headed.add(step)
        if step == self.focus and not cached and len(self._headed) == 1:
            return  # (the cell's own lines alone: as a plain cell's; after another step's
            #          lines, under a header of their own, or they read as that step's)
        out.append(f"── {step}" + (" (cached output)" if cached else "") + " ──")

    def _write(self, out: Sequence[str], err: Sequence[str]) -> None:
        if out:
            stream = self._out or sys.stdout
            stream.write("\n".join(out) + "\n")
            stream.flush()
        if err:
            stream = self._err or sys.stderr
            stream.write("\n".join(err) + "\n")
            stream.flush()

    def finish(self) -> None:
        """Print what is left, the stderr tail of failed steps and the status table."""
        self.render()
        run = self.state.run
        lines = self._later_notes(run)
        for name in run.failed if self.failed_tails else ():
            if name in self._headed:  # its lines, traceback included, were printed live
                continue
            earlier, tail = failed_tail(run, name)
            if tail:
                lines.append(f"── {name} failed; last lines of stderr ──")
                lines.extend([earlier] if earlier else [])
                lines.extend(tail)
        lines.append(format_rows(self.state.rows().values()))
        self._write(lines, [])
