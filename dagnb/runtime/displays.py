"""The rich outputs a Python step displays as it runs (IPython's ``display()``: an HTML
table, Markdown, a matplotlib figure), kept with it as its lines are.

A front end that publishes displays (the notebook's) hands each one a step makes to the
step's sink (:func:`dagnb.executors.capture.step_display`): a :class:`StepDisplays` per
attempt. It masks the text of the bundle as the step's lines are masked, puts it in the
run's events, where a view shows it in order with the lines, and keeps it for the step's
cache entry with ``after``, how many of the attempt's lines came before it, so that a hit
replays lines and displays in the order the first run showed them, and ``attempt``, the
attempt that made it, which a hit's events give it as they give the lines theirs. A step
keeps at most :data:`MAX_DISPLAYS` of them and :data:`MAX_DISPLAY_BYTES`: one line in its
log says where that ended, and the displays after it are published as they are, shown
once, not kept.
A live widget is never kept (its model dies with the kernel): it is published as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dagnb.runtime.logfile import LogFile

__all__ = ["MAX_DISPLAYS", "MAX_DISPLAY_BYTES", "WIDGET_VIEW", "StepDisplays", "masked_bundle"]

MAX_DISPLAYS = 100  # displays (and updates of them) kept per attempt of a step
MAX_DISPLAY_BYTES = 20 << 20  # ... and characters of their JSON
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# base64 of a binary file: no text of the step's to mask (and megabytes to search)
_BINARY = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                     "application/pdf"})
_NOTE = ("dagnb: this step displayed more than {count} rich outputs or {size} MB of them: "
         "the later ones are shown now but not kept, so its cached run shows those "
         "above this line only")

Emit = Callable[..., Any]


class StepDisplays:
    """The displays of one attempt of a step; called for each one the step makes (see
    :data:`dagnb.executors.capture.DisplaySink`)."""

    __slots__ = ("_attempt", "_by_id", "_count", "_emit", "_log", "_log_file", "_mask",
                 "_name", "_noted", "_shown", "_size", "records")

    def __init__(self, emit: Emit, name: str, attempt: int, log: Callable[[str, str], None],
                 log_file: LogFile, mask: Callable[[str], str] | None, shown: bool) -> None:
        """``log``: the attempt's line sink (for the note past the limits); ``log_file``:
        its file, whose count of lines places each display; ``shown``: whether a view of
        the run publishes the displays (else their maker does, as without dagnb)."""
        self._emit, self._name, self._attempt, self._log = emit, name, attempt, log
        self._log_file, self._mask, self._shown = log_file, mask, shown
        self.records: list[dict[str, Any]] = []  # what the entry keeps, in order
        self._by_id: dict[str, dict[str, Any]] = {}  # display id -> its record (updates)
        self._count = 0  # displays and updates taken
        self._size = 0  # characters of their JSON
        self._noted = False

    def __call__(self, data: dict[str, Any], metadata: dict[str, Any],
                 display_id: str | None = None, update: bool = False) -> Any:
        """True when the run shows the display; else what its maker is to publish, its
        text masked (nothing of it left: True, not shown)."""
        shown = masked_bundle(data, metadata, self._mask)
        if shown is None:
            return True
        record = self._by_id.get(display_id) if update and display_id else None
        if WIDGET_VIEW in data or (update and record is None) or not self._room(shown):
            return shown  # (a widget, another's display, past the limits: not kept)
        data, metadata = shown
        if record is None:
            record = {"after": self._log_file.count, "attempt": self._attempt, "data": data,
                      "metadata": metadata}
            self.records.append(record)
            if display_id:
                self._by_id[display_id] = record
        else:  # the entry keeps how it ended
            record["data"], record["metadata"] = data, metadata
        self._emit("display", self._name, self._attempt, data=data, metadata=metadata,
                   display_id=display_id, update=update)
        return True if self._shown else shown

    def _room(self, shown: Bundle) -> bool:
        """Whether this display (or update) is within the step's limits and JSON; the
        first past the limits is said in one line of its log."""
        try:
            size = len(json.dumps(shown))
        except (TypeError, ValueError):  # (not JSON: published as it is, not kept)
            return False
        if self._count < MAX_DISPLAYS and self._size + size <= MAX_DISPLAY_BYTES:
            self._count += 1
            self._size += size
            return True
        if not self._noted:
            self._noted = True
            self._log("stderr", _NOTE.format(count=MAX_DISPLAYS, size=MAX_DISPLAY_BYTES >> 20))
        return False


Bundle = tuple[dict[str, Any], dict[str, Any]]  # (mime type -> data, metadata)


def masked_bundle(data: dict[str, Any], metadata: dict[str, Any],
                  mask: Callable[[str], str] | None) -> Bundle | None:
    """The bundle and its metadata with their text masked (not the base64 of a binary
    file); a JSON value is masked as its JSON text (a part that is no JSON once masked
    is left out). None when nothing of it is left."""
    if not mask:
        return data, metadata
    # a Masker keeps HTML's character references whole (a short secret '9' would break
    # &#39;) and finds a secret spelled with them (p&#38;ss)
    in_html = getattr(mask, "html", mask)
    shown = {}
    for kind, value in data.items():
        if kind in _BINARY or not isinstance(value, (str, dict, list)):
            shown[kind] = value
        elif isinstance(value, str):
            shown[kind] = in_html(value) if kind == "text/html" else mask(value)
        elif (masked := _masked_json(value, mask)) is not None:
            shown[kind] = masked
    if not shown:
        return None
    return shown, (_masked_json(metadata, mask) or {}) if metadata else metadata


def _masked_json(value: Any, mask: Callable[[str], str]) -> Any:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # no JSON: the bundle is published as it is, not kept
        return value
    try:
        return json.loads(mask(text))
    except ValueError:
        return None
