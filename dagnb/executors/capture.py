"""Capture of print() output from in-process Python steps.

Several steps may run at once on the loop, and the notebook keeps printing from its
own thread, so redirecting ``sys.stdout`` wholesale would mix them. Instead a routing
stream stands in for ``sys.stdout``/``sys.stderr`` while runs are active; it sends a
write to the step whose context (a ContextVar, so asyncio tasks keep theirs) is current,
and everything else to the stream it replaced.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["capturing", "current_context", "routed_output"]

LineSink = Callable[[str, str], None]  # (stream, line)

_current: contextvars.ContextVar[_StepBuffer | None] = contextvars.ContextVar(
    "dagnb_capture", default=None
)
_lock = threading.Lock()
_users = 0
_saved: dict[str, TextIO] = {}
# the masks of the runs capturing now: output that reaches no step's log (a thread a
# step started does not inherit its context) is masked with them on its way out
_masks: tuple[Callable[[str], str], ...] = ()


class _StepBuffer:
    """Splits one step's writes into lines per stream; also carries the step's
    context object, so that entering a step sets one ContextVar, not two."""

    __slots__ = ("context", "partial", "sink")

    def __init__(self, sink: LineSink, context: object = None) -> None:
        self.sink = sink
        self.context = context
        # the unfinished line of each stream, in pieces: joined once it ends, so a long
        # line written a bit at a time costs linear time, not quadratic (made now, not
        # on the first write: two threads of a step writing first would make two)
        self.partial: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def write(self, stream: str, text: str) -> None:
        partial = self.partial
        if "\n" not in text:
            partial[stream].append(text)
            return
        lines = text.split("\n")
        lines[0] = "".join([*partial[stream], lines[0]])
        partial[stream] = [lines.pop()]
        for line in lines:
            self.sink(stream, line)

    def flush_partial(self) -> None:
        partial = self.partial
        if not (partial["stdout"] or partial["stderr"]):  # most steps: nothing
            return
        self.partial = {"stdout": [], "stderr": []}
        for stream, pieces in partial.items():
            if rest := "".join(pieces):
                self.sink(stream, rest)


class _RoutingStream:
    """Stands in for sys.stdout or sys.stderr while runs capture output."""

    def __init__(self, name: str, fallback: TextIO) -> None:
        self._name = name
        self._fallback = fallback

    def write(self, text: str) -> int:
        buffer = _current.get()
        if buffer is None:
            if not _masks:
                return self._fallback.write(text)
            shown = text
            for mask in _masks:
                shown = mask(shown)
            self._fallback.write(shown)
            return len(text)
        buffer.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        if _current.get() is None:
            self._fallback.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


@contextlib.contextmanager
def capturing(mask: Callable[[str], str] | None = None) -> Iterator[None]:
    """Install the routing streams for the duration of a run (nesting is counted);
    ``mask``: the run's, applied to what is written meanwhile outside any step."""
    global _users, _masks
    with _lock:
        if _users == 0:
            for name in ("stdout", "stderr"):
                _saved[name] = getattr(sys, name)
                setattr(sys, name, _RoutingStream(name, _saved[name]))
        _users += 1
        if mask is not None:
            _masks = (*_masks, mask)
    try:
        yield
    finally:
        with _lock:
            if mask is not None:
                index = _masks.index(mask)
                _masks = _masks[:index] + _masks[index + 1:]
            _users -= 1
            if _users == 0:
                for name, stream in _saved.items():
                    if isinstance(getattr(sys, name), _RoutingStream):
                        setattr(sys, name, stream)
                _saved.clear()


class routed_output(_StepBuffer):
    """``with routed_output(sink):`` sends this context's prints, line by line, to ``sink``.

    A class rather than ``@contextmanager``, and its own buffer: it is entered once per
    Python step, and the generator machinery would cost more than a no-op step.
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _current.set(self)

    def __exit__(self, *exc: object) -> None:
        self.flush_partial()
        _current.reset(self._token)


def current_context() -> object:
    """The context object given to the innermost ``routed_output``, or None."""
    buffer = _current.get()
    return None if buffer is None else buffer.context

