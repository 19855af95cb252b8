"""pandas DataFrames derived from a run's event log: status and logs.

Each function is pure: the same events give the same frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

from dagnb import checks
from dagnb.cache.housekeeping import local_times
from dagnb.errors import ConfigError
from dagnb.runtime.events import Event

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LOG_COLUMNS", "STATUS_COLUMNS", "as_text", "check_log_filters", "logs_frame",
           "status_frame", "status_rows"]

STREAMS = ("stdout", "stderr", None)  # None: both

STATUS_COLUMNS = [
    "step",
    "state",
    "cached",
    "attempts",
    "exit_code",
    "started",
    "finished",
    "duration_s",
    "executor",
    "image",
    "error",
]
LOG_COLUMNS = ["time", "step", "attempt", "stream", "line"]


def _blank_row(step: str) -> dict[str, Any]:
    row = dict.fromkeys(STATUS_COLUMNS)
    row.update(step=step, state="pending", cached=False, attempts=0)
    return row


def status_rows(events: Iterable[Event], order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """One row per step, keyed by name: the latest state and what led to it."""
    rows = {name: _blank_row(name) for name in order}
    for event in events:
        if event.kind != "state" or event.step is None:
            continue
        row = rows.get(event.step) or rows.setdefault(event.step, _blank_row(event.step))
        _apply(row, event)
    return rows


def _apply(row: dict[str, Any], event: Event) -> None:
    data = event.data
    state = data["state"]
    row["state"] = state
    if state == "running":
        row["attempts"] = max(row["attempts"], event.attempt)
        row["started"] = row["started"] or event.time
    if state == "cached":
        row["cached"] = True
        row["started"] = row["started"] or event.time
    if state in ("succeeded", "cached"):
        row["error"] = None  # an attempt that failed before the one that worked is history
    for key in ("executor", "image", "exit_code", "error"):
        if key in data:
            row[key] = data[key]
    if state in ("succeeded", "cached", "failed", "cancelled", "skipped"):
        row["finished"] = event.time
        if row["started"] is not None:
            row["duration_s"] = round(event.time - row["started"], 3)


def status_frame(events: Iterable[Event], order: Sequence[str] = ()) -> pd.DataFrame:
    """Columns: step, state, cached, attempts, exit_code, started, finished,
    duration_s, executor, image, error (one row per step, in ``order``); times are
    timezone-aware, in the machine's zone."""
    import pandas as pd  # on first use: the CLI and plain scripts start without it

    rows = list(status_rows(events, order).values())
    frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    for column in ("started", "finished"):
        frame[column] = local_times(frame[column])
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    frame["attempts"] = frame["attempts"].astype("int64")
    frame["cached"] = frame["cached"].astype(bool)
    frame["duration_s"] = frame["duration_s"].astype("float64")
    return as_text(frame, ("step", "state", "executor", "image", "error"))


def as_text(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``columns`` as Python strings, None where missing: the same frame, shown the same
    way (None, not NaN), under pandas 2 (object columns) and 3 (``str`` columns)."""
    for column in columns:
        if column in frame:
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), None)
    return frame


def check_log_filters(stream: Any, tail: Any) -> None:
    """Refuse a ``stream`` or ``tail`` that would select no line: a typo ('out') must not
    read as a step that printed nothing."""
    checks.checked(checks.one_of, stream, "logs(): stream", ConfigError, sep="=",
                   choices=STREAMS)
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, Integral) or tail < 0):
        raise ConfigError(f"logs(): tail={tail!r} is not valid; expected a whole number >= 0 "
                          "or None (every line)")


def logs_frame(
    events: Iterable[Event],
    step: str | None = None,
    stream: str | None = None,
    tail: int | None = None,
) -> pd.DataFrame:
    """Columns: time, step, attempt, stream, line; optionally one step, one stream,
    and only the last ``tail`` lines (see :func:`check_log_filters`)."""
    import pandas as pd

    chosen = (
        e for e in events
        if e.kind == "log"
        and (step is None or e.step == step)
        and (stream is None or e.data["stream"] == stream)
    )
    if tail is not None:  # only the last lines in memory, however many there are
        chosen = iter(deque(chosen, maxlen=tail))
    # (a line replayed from the cache: when it was printed, not when it was replayed)
    rows = [(e.data.get("at") or e.time, e.step, e.attempt, e.data["stream"], e.data["line"])
            for e in chosen]
    frame = pd.DataFrame(rows, columns=LOG_COLUMNS)
    frame["time"] = local_times(frame["time"])
    frame["attempt"] = frame["attempt"].astype("int64")
    return as_text(frame, ("step", "stream", "line"))  # as status_frame: no lines, same dtypes
