"""Progress for terminals and logs: a redrawn bar on a TTY, plain lines otherwise."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from dagnb.runtime.events import TERMINAL_STATES, Event
from dagnb.runtime.run import Run
from dagnb.views.live import LiveState, earlier_note, retry_words

__all__ = ["FAILED_LINES", "TABLE_COLUMNS", "ProgressPrinter", "failure_tails", "status_table",
           "text_table"]

TABLE_COLUMNS = [
    "step",
    "state",
    "cached",
    "attempts",
    "exit_code",
    "duration_s",
    "executor",
    "error",
]
_BAR_WIDTH = 24
FAILED_LINES = 20  # lines of a failed step's log shown under its failure, as CI runners do


class ProgressPrinter:
    """Listens to a run's events and reports them to ``stream``.

    Subscribe it before the run starts (``graph.run(on_event=printer.on_event)``): the
    run's first event tells it how many steps there are. A stream that stops taking
    text (a reader gone, ``dagnb run | head``; a full disk) ends the printing, quietly:
    the run goes on, and :attr:`lost` holds the error for the caller to judge.
    """

    def __init__(self, stream: TextIO, *, min_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic,
                 later: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.stream = stream
        self.total = 0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._done: set[str] = set()
        self._running: set[str] = set()
        self._last_draw = -math.inf
        self._min_interval = min_interval
        self._clock = clock
        self._later = _later if later is None else later  # (delay, func) -> .cancel()-able
        self._trailing: Any = None  # the redraw of what a throttled event changed
        self._finished = False
        self._lock = threading.Lock()
        self.lost: OSError | None = None  # why the stream stopped taking text, if it did

    def on_event(self, event: Event) -> None:
        """Event listener; called on the runner's loop."""
        if event.kind == "run" and event.data.get("state") == "started":
            self.total = event.data.get("steps", 0)
        if event.kind == "retry" and not self.tty:
            # ``12:00:01 [0/3] flaky retrying 2/4 in 1.3 s: exit code 5``
            with self._lock:
                self._unless_lost(self._print, event, retry_words(event))
        if event.kind != "state" or event.step is None:
            return
        state = event.data["state"]
        with self._lock:
            self._track(event.step, state)
            if self.tty:
                self._unless_lost(self._draw)
            # (a retry's line comes with its "retry" event, which says when and of how
            # many attempts: the "retrying" state's says neither)
            elif state in TERMINAL_STATES or state == "running" or "waiting" in event.data:
                self._unless_lost(self._line, event)

    def _unless_lost(self, write: Callable[..., None], *args: Any) -> None:
        """``write(*args)``, the lock held, unless the stream stopped taking text; an
        OSError (BrokenPipeError among them) stops it: nothing more is printed."""
        if self.lost is None:
            try:
                write(*args)
            except OSError as exc:
                self.lost = exc

    def _track(self, step: str, state: str) -> None:
        if state == "running":
            self._running.add(step)
        elif state in TERMINAL_STATES:
            self._running.discard(step)
            self._done.add(step)

    def _print(self, event: Event, says: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        print(f"{stamp} [{len(self._done)}/{self.total}] {event.step} {says}",
              file=self.stream, flush=True)

    def _line(self, event: Event) -> None:
        state = event.data["state"]
        extra = ""
        if "waiting" in event.data:  # queued behind another run (said once)
            state, extra = "waiting", f" for {event.data['waiting']}"
        elif state == "running" and event.attempt > 1:
            extra = f" (attempt {event.attempt})"
        elif event.data.get("error"):
            extra = f": {event.data['error']}"
        self._print(event, f"{state}{extra}")

    def _draw(self, force: bool = False) -> None:
        now = self._clock()
        wait = self._min_interval - (now - self._last_draw)
        if not force and wait > 0:  # too soon: drawn when the interval is over instead,
            if self._trailing is None:  # or a long step would show a stale bar throughout
                self._trailing = self._later(wait, self._draw_late)
            return
        self._cancel_trailing()
        self._last_draw = now
        total = self.total or 1
        filled = int(_BAR_WIDTH * len(self._done) / total)
        running = ", ".join(sorted(self._running))[:60]
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {len(self._done)}/{total} {running:<60}")
        self.stream.flush()

    def _draw_late(self) -> None:
        """The redraw a throttled event left for later (called on a timer's thread)."""
        with self._lock:
            self._trailing = None
            if not self._finished:
                self._unless_lost(self._draw, True)

    def _cancel_trailing(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None

    def finish(self) -> None:
        """End the bar's line (on a TTY)."""
        with self._lock:
            self._finished = True
            self._cancel_trailing()
            if self.tty:
                self._unless_lost(self._end_bar)

    def _end_bar(self) -> None:
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()

    def table(self, run: Run) -> str:
        """The run's final status table as text (without pandas: the CLI starts faster);
        with an ``image`` column (the digest that ran) when a step ran in a container."""
        return status_table(list(run.status_rows().values()))


def status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Status rows (a run's, or a notebook's steps') as the CLI's table: counts as
    integers, a missing value blank, an ``image`` column when a step ran in a container."""
    columns = list(TABLE_COLUMNS)
    if any(row.get("image") for row in rows):
        columns.insert(columns.index("executor") + 1, "image")
    return text_table(rows, columns)


def failure_tails(run: Run, reader: Callable[[str], str], count: int = FAILED_LINES) -> list[str]:
    """Under a line saying so, each failed step's last ``count`` lines (stdout and stderr
    as they were logged, masked as the log is: the tail a notebook's live view keeps),
    how many came before, and where its whole log is: its files, and ``reader(step)``,
    the command that shows it."""
    state = LiveState(run, tail=count)
    state.pull()
    rows = state.rows()
    found: list[str] = []
    for name in run.failed:
        found += _failure_tail(run, rows[name], state.lines(name), reader(name))
    return found


def _failure_tail(run: Run, row: Mapping[str, Any], lines: list[str], reader: str) -> list[str]:
    name = row["step"]
    said = f"── {name} failed" + (f": {row['error']}" if row["error"] else "")
    if not lines:  # (a program not found: nothing ran to print)
        return [f"{said}; it printed nothing ──"]
    earlier = earlier_note(run.events.line_count(name) - len(lines), reader)
    files = ", ".join(_near(path) for path in run.log_files(name))
    return [f"{said} ──", *([earlier] if earlier else []), *lines,
            f"── full log: {files} ({reader}) ──" if files else f"── full log: {reader} ──"]


def _near(path: os.PathLike[str]) -> str:
    """A path relative to the working directory when it is inside it (``.dagnb_cache/...``)."""
    relative = os.path.relpath(path)
    return os.fspath(path) if relative.startswith(os.pardir) else relative


def _later(delay: float, func: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, func)
    timer.daemon = True  # a run that ends leaves no redraw to wait for
    timer.start()
    return timer


def text_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as left-aligned text columns; None is blank, floats keep three decimals."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [list(columns), *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _cell(value: Any) -> str:
    if value is None or value != value:  # None or NaN
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)
