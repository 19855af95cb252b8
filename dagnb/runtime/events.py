"""The event log of a run: every state change, retry and captured line, timestamped.

The status table, the log table, the history and the widgets are views of this log;
they compute nothing of their own. Events are appended from the runner's event loop
and read from any thread (appending to a list is atomic in CPython).

Memory stays bounded whatever a step prints: the log keeps the first
``LOG_LINES_KEPT`` lines (and at most ``LOG_BYTES_KEPT`` of text) of each step; later
lines still reach the listeners (the live views) but are only counted
(:meth:`EventLog.spilled`). Every line is also in the step's log file on disk, which is
where :meth:`~dagnb.Run.logs` reads a step whose lines were not all kept.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from dagnb.checks import warn_user
from dagnb.executors.children import listing_stale

__all__ = [
    "LOG_BYTES_KEPT",
    "LOG_LINES_KEPT",
    "STATES",
    "TERMINAL_STATES",
    "Event",
    "EventLog",
    "Listener",
]

LOG_LINES_KEPT = 10_000  # log lines of one step kept in memory
LOG_BYTES_KEPT = 1 << 20  # ... and characters of them

STATES = (
    "pending",
    "queued",
    "running",
    "succeeded",
    "cached",
    "failed",
    "retrying",
    "skipped",
    "cancelled",
)
TERMINAL_STATES = frozenset({"succeeded", "cached", "failed", "skipped", "cancelled"})


class Event(NamedTuple):
    """One thing that happened. ``kind`` is 'state', 'log', 'retry' or 'run'."""

    time: float
    step: str | None
    kind: str
    attempt: int
    data: dict[str, Any]


Listener = Callable[[Event], None]
_new_event = tuple.__new__


class EventLog:
    """Append-only list of events with listeners called on every append."""

    __slots__ = ("_clock", "_events", "_kept", "_listeners", "_spilled", "_states")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._events: list[Event] = []
        self._listeners: list[Listener] = []
        self._clock = clock
        self._kept: dict[str | None, list[int]] = {}  # step -> [lines, characters] kept
        self._spilled: Counter[str | None] = Counter()
        self._states: dict[str, str] = {}  # step -> its latest state, kept as they come

    def emit(self, kind: str, step: str | None, attempt: int = 0, **data: Any) -> Event:
        """Append an event stamped with the clock and tell the listeners (a log line
        past its step's memory budget is only told)."""
        # tuple.__new__: the NamedTuple's own __new__ is a Python call, on every event
        event = _new_event(Event, (self._clock(), step, kind, attempt, data))
        if kind == "log":
            if self._keep(step, data["line"]):
                self._events.append(event)
        else:
            self._events.append(event)
            if kind == "state" and step is not None:
                self._states[step] = data["state"]
            if self._listeners:  # (code of the user's, perhaps, run on the loop thread
                # between two steps' calls; a line a step printed reaches them in its call,
                # whose length counts, and a hit's lines replayed end with its state)
                listing_stale()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:  # a view that fails must not fail the step it reports
                self._drop(listener, exc)
        return event

    def _drop(self, listener: Listener, error: Exception) -> None:
        """Unsubscribe a listener that raised (once said, as a warning): it would most
        likely raise again on every event, and the run goes on without it."""
        self._listeners = [known for known in self._listeners if known is not listener]
        name = getattr(listener, "__qualname__", type(listener).__name__)
        warn_user(f"dagnb: event listener {name} raised {type(error).__name__}: {error}; "
                  "it gets no more events (the run goes on)")

    def states(self, order: Iterable[str] = ()) -> dict[str, str]:
        """Step name -> latest state: the steps of ``order`` first ('pending' until their
        first state event), then any other step with a state event. The same states as
        the status table's, without folding every event again."""
        found = self._states.copy()  # the loop thread may add to it meanwhile
        states = dict.fromkeys(order, "pending")
        states.update(found)  # (in place for a step of order, after them for another)
        return states

    def _keep(self, step: str | None, line: str) -> bool:
        kept = self._kept.get(step)
        if kept is None:
            kept = self._kept[step] = [0, 0]
        if kept[0] >= LOG_LINES_KEPT or kept[1] + len(line) > LOG_BYTES_KEPT:
            self._spilled[step] += 1
            return False
        kept[0] += 1
        kept[1] += len(line)
        return True

    def spilled(self, step: str | None) -> int:
        """How many log lines of ``step`` were not kept in memory."""
        return self._spilled[step]

    def line_count(self, step: str | None) -> int:
        """How many log lines ``step`` printed, kept in memory or not."""
        kept = self._kept.get(step)
        return (kept[0] if kept is not None else 0) + self._spilled[step]

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for each new event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events[:])

    def __len__(self) -> int:
        return len(self._events)

    def since(self, index: int) -> list[Event]:
        """Events appended at or after position ``index``."""
        return self._events[index:]
