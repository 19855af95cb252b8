"""Progress for terminals and logs: a redrawn bar on a TTY, plain lines otherwise."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from dagnb.runtime.events import TERMINAL_STATES, Event
from dagnb.runtime.logfile import attempt_marked, tail_records
from dagnb.runtime.run import Run
from dagnb.views.live import earlier_note, retry_words, shown_line

__all__ = ["FAILED_LINES", "TABLE_COLUMNS", "ProgressPrinter", "attempt_marked", "colour_for",
           "failure_tails", "rule_for", "status_table", "terminal_safe", "text_table"]

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
                 later: Callable[[float, Callable[[], None]], Any] | None = None,
                 columns: Callable[[], int] | None = None) -> None:
        self.stream = stream
        # the terminal's width, asked at each draw (one ioctl, at most 10 a second): a
        # line as wide wraps, and "\r" then redraws only its second row
        self._columns = functools.partial(_terminal_columns, stream) if columns is None else columns
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
        self._lock = threading.RLock()  # (stderr's writes above the bar take it too)
        self._bar_width = 0  # the bar's length on the terminal's line, while it is there
        self.lost: OSError | None = None  # why the stream stopped taking text, if it did

    def on_event(self, event: Event) -> None:
        """Event listener; called on the runner's loop."""
        if event.kind == "run" and event.data.get("state") == "started":
            self.total = event.data.get("steps", 0)
        if event.kind == "retry" and not self.tty:
            # ``12:00:01 [0/3] flaky retrying 2/4 in 1.3 s: exit code 5``
            with self._lock:
                self._unless_lost(self._print, event, terminal_safe(retry_words(event)))
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
            if state != "cancelled":  # (not done: an interrupted run's bar is not full)
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
        elif event.data.get("error"):  # (a step's text: escaped, as under the report)
            extra = f": {terminal_safe(event.data['error'])}"
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
        running = ", ".join(sorted(self._running))
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        fits = self._fits()
        # (padded over what the last draw left, as wide as the terminal allows)
        line = f"[{bar}] {len(self._done)}/{total} {running}"[:fits]
        line = line.ljust(min(self._bar_width, fits))
        self.stream.write("\r" + line)
        self.stream.flush()
        self._bar_width = len(line)

    def _fits(self) -> int:
        """How many characters a line may have without wrapping: the terminal's width
        less one (a line as wide leaves some terminals' cursor past its end)."""
        return max(self._columns() - 1, 1)

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
        self._bar_width = 0

    @contextlib.contextmanager
    def stderr_above_bar(self) -> Iterator[None]:
        """While it lasts, what is printed to ``sys.stderr`` (a notice, a warning) on the
        terminal that shows the bar clears the bar's line first, and the bar is drawn
        again under a finished line: else the text runs on after ``[....] 0/5``."""
        stderr = sys.stderr
        if not (self.tty and getattr(stderr, "isatty", lambda: False)()):
            yield
            return
        sys.stderr = _AboveBar(stderr, self)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stderr = stderr

    def _write_above(self, stream: TextIO, text: str) -> int:
        with self._lock:
            if text and self._bar_width:
                self._unless_lost(self._hide_bar)
            written = stream.write(text)
            if text.endswith("\n") and not self._finished:
                stream.flush()  # (on the terminal before the bar drawn under it)
                self._unless_lost(self._draw, True)
            return written

    def _hide_bar(self) -> None:
        self.stream.write("\r" + " " * min(self._bar_width, self._fits()) + "\r")
        self.stream.flush()
        self._bar_width = 0

    def table(self, run: Run) -> str:
        """The run's final status table as text (without pandas: the CLI starts faster);
        with an ``image`` column (the digest that ran) when a step ran in a container."""
        return status_table(list(run.status_rows().values()))


def _terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to: ``COLUMNS`` when set (as
    :func:`shutil.get_terminal_size` reads it), else the terminal's; 80 when neither says."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("COLUMNS", "")) > 0:
            return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):  # (no descriptor, or no terminal's)
        return 80


class _AboveBar:
    """A stream (stderr) whose writes go above a :class:`ProgressPrinter`'s bar."""

    def __init__(self, stream: TextIO, printer: ProgressPrinter) -> None:
        self._stream = stream
        self._printer = printer

    def write(self, text: str) -> int:
        return self._printer._write_above(self._stream, text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty, ...
        return getattr(self._stream, name)


def status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Status rows (a run's, or a notebook's steps') as the CLI's table: counts as
    integers, a missing value blank, an ``image`` column when a step ran in a container."""
    columns = list(TABLE_COLUMNS)
    if any(row.get("image") for row in rows):
        columns.insert(columns.index("executor") + 1, "image")
    return text_table(rows, columns)


def failure_tails(run: Run, reader: Callable[[str], str], count: int = FAILED_LINES, *,
                  rule: str = "──", colour: bool | None = False) -> list[str]:
    """Under a line saying so, each failed step's last ``count`` lines (stdout and stderr
    as they were logged, masked as the log is, each attempt's under ``rule attempt N
    rule`` when they come from more than one), how many came before, and where its whole
    log is: its files, and ``reader(step)``, the command that shows it; of a run not
    kept (read-only), that it is not kept, as its files go with the process and
    ``reader`` would show another run's. Control characters show as escapes
    (:func:`terminal_safe`; ``colour``: SGR kept, None: left out)."""
    rows = run.status_rows()
    tails = _last_lines(run, run.failed, count)
    found: list[str] = []
    for name in run.failed:
        lines = [(attempt, terminal_safe(shown_line(line), colour))
                 for attempt, line in tails[name]]
        found += _failure_tail(run, rows[name], lines, reader(name), rule)
    return found


def _failure_tail(run: Run, row: Mapping[str, Any], lines: list[tuple[int, str]],
                  reader: str, rule: str) -> list[str]:
    name = row["step"]
    error = terminal_safe(row["error"]) if row["error"] else ""
    said = f"{rule} {name} failed" + (f": {error}" if error else "")
    if not lines:  # (a program not found: nothing ran to print)
        return [f"{said}; it printed nothing {rule}"]
    cut = run.events.line_count(name) - len(lines)
    if not run.kept:
        earlier = f"{cut} earlier line{'s' if cut != 1 else ''} not shown: {_NOT_KEPT}"
        footer = (f"{rule} full log: not kept: a read-only run writes nothing to the cache "
                  f"folder ({_KEEP_IT}) {rule}")
        return [f"{said} {rule}", *([earlier] if cut > 0 else []),
                *attempt_marked(lines, rule), footer]
    earlier = earlier_note(cut, reader)
    files = ", ".join(_near(path) for path in run.log_files(name))
    return [f"{said} {rule}", *([earlier] if earlier else []), *attempt_marked(lines, rule),
            f"{rule} full log: {files} ({reader}) {rule}" if files
            else f"{rule} full log: {reader} {rule}"]


_KEEP_IT = "--cache-mode off keeps it for dagnb logs"
_NOT_KEPT = f"a read-only run keeps no log once it ends ({_KEEP_IT})"


def _last_lines(run: Run, names: list[str], count: int) -> dict[str, list[tuple[int, str]]]:
    """(attempt, line) of the last ``count`` lines of each step of ``names``: from the
    event log, walked back once; from the log files' end for a step past what the event
    log keeps (10,000 lines), whose later lines, a traceback among them, it lacks."""
    found: dict[str, list[tuple[int, str]]] = {name: [] for name in names}
    wanting = len(found)
    for event in reversed(run.events.since(0)):
        lines = found.get(event.step) if event.kind == "log" else None  # type: ignore[arg-type]
        if lines is None or len(lines) >= count:
            continue
        lines.append((event.attempt, event.data["line"]))
        if len(lines) == count:
            wanting -= 1
            if not wanting:
                break
    for name, lines in found.items():
        lines.reverse()
        if run.events.spilled(name):
            found[name] = [(record.get("attempt", 1), str(record["line"]))
                           for record in tail_records(run.log_files(name), count)]
    return found


# An SGR sequence (colour), or one control character but tab: \033[2J clears a terminal,
# \033]0;...\007 retitles it, \r and \b overwrite what came before; C1 (\x9b) too.
_CONTROL = re.compile(r"\x1b\[[0-9;:]*m|[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def colour_for(stream: TextIO) -> bool | None:
    """How a step's colour (SGR) codes print to ``stream``: kept on a terminal (True),
    left out there when ``NO_COLOR`` asks for none (None: https://no-color.org, set and
    not empty), shown as escapes elsewhere (False: a file or pipe gets no codes)."""
    if not getattr(stream, "isatty", lambda: False)():
        return False
    return None if os.environ.get("NO_COLOR") else True


def terminal_safe(line: str, colour: bool | None = False) -> str:
    """``line`` with each control character but tab shown as its escape (``\\x1b``), so
    that a step's output printed under a report cannot clear or rewrite it; ``colour``
    (a terminal): SGR colour sequences kept, and reset at the end of the line; None
    (a terminal under NO_COLOR): left out (:func:`colour_for`)."""
    if _CONTROL.search(line) is None:  # (most lines: one scan)
        return line
    kept = False

    def shown(match: re.Match[str]) -> str:
        nonlocal kept
        text = match.group()
        if len(text) > 1 and colour is None:
            return ""
        if colour and len(text) > 1:
            kept = True
            return text
        return text.encode("unicode_escape").decode("ascii")

    line = _CONTROL.sub(shown, line)
    return f"{line}\x1b[0m" if kept else line


def rule_for(stream: TextIO) -> str:
    """``──`` where ``stream`` can encode it, else ``--`` (an ASCII or cp1252 console)."""
    try:
        "──".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "--"
    return "──"


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
    # (a step's error: a clear-screen in it would wipe the report printed above the table)
    return f"{value:.3f}" if isinstance(value, float) else terminal_safe(str(value))
