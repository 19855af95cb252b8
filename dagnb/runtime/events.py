"""The event log of a run: every state change, retry and captured line, timestamped.

The status table, the log table, the history and the widgets are views of this log;
they compute nothing of their own. Events are appended from the runner's event loop
and read from any thread (appending to a list is atomic in CPython).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = ["STATES", "TERMINAL_STATES", "Event", "EventLog", "Listener"]

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


class EventLog:
    """Append-only list of events with listeners called on every append."""

    __slots__ = ("_clock", "_events", "_listeners")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._events: list[Event] = []
        self._listeners: list[Listener] = []
        self._clock = clock

    def emit(self, kind: str, step: str | None, attempt: int = 0, **data: Any) -> Event:
        """Append an event stamped with the clock and tell the listeners."""
        event = Event(self._clock(), step, kind, attempt, data)
        self._events.append(event)
        for listener in self._listeners:
            listener(event)
        return event

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
