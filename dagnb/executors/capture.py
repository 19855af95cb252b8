"""Capture of print() output from in-process Python steps.

Several steps may run at once on the loop, and the notebook keeps printing from its
own thread, so redirecting ``sys.stdout`` wholesale would mix them. Instead a routing
stream stands in for ``sys.stdout``/``sys.stderr`` while runs are active; it sends a
write to the step whose context (a ContextVar, so asyncio tasks keep theirs) is current,
and everything else to the stream it replaced.

Rich outputs go the same way: a front end that publishes displays (the notebook's IPython
publisher) hands each to :func:`step_display` first, which gives it to the current step's
display sink, if any; a step's own prints before it are sent as a line first, so the
two keep their order. Step hooks (:func:`add_step_hook`) run as each such step starts and
ends, in its context: the notebook shows a matplotlib figure a step left open there.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import io
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

__all__ = ["add_step_hook", "capturing", "current_context", "in_step_with_displays",
           "outside_mask", "remove_step_hook", "routed_output", "step_display",
           "step_with_displays"]

LineSink = Callable[[str, str], None]  # (stream, line)
# (mime bundle, metadata, display id, update) -> True when the step's run shows it
# itself, else the bundle and metadata to publish (its text masked)
Shown = "bool | tuple[dict[str, Any], dict[str, Any]]"
DisplaySink = Callable[[dict[str, Any], dict[str, Any], "str | None", bool], Shown]
# called as a step with a display sink starts; what it returns is called as it ends
StepHook = Callable[[], "Callable[[], object] | None"]

_current: contextvars.ContextVar[_StepBuffer | None] = contextvars.ContextVar(
    "dagnb_capture", default=None
)
_lock = threading.Lock()
_users = 0
# the masks of the runs capturing now: output that reaches no step's log (a thread a
# step started does not inherit its context) is masked with them on its way out
_masks: tuple[Callable[[str], str], ...] = ()
_step_hooks: tuple[StepHook, ...] = ()  # see add_step_hook


class _StepBuffer:
    """Splits one step's writes into lines per stream; also carries the step's
    context object and display sink, so that entering a step sets one ContextVar."""

    __slots__ = ("context", "decoders", "ends", "partial", "show", "sink")

    def __init__(self, sink: LineSink, context: object = None,
                 show: DisplaySink | None = None) -> None:
        self.sink = sink
        self.context = context
        self.show = show
        self.ends: list[Callable[[], object]] | None = None  # the step hooks' ends
        # stream -> what decodes the bytes it writes to sys.stdout.buffer (on the first)
        self.decoders: dict[str, codecs.IncrementalDecoder] | None = None
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
        self._buffer = _RoutingBuffer(self)

    @property
    def buffer(self) -> _RoutingBuffer:
        """The binary side, where the stream it replaced has one (a terminal's, not
        ipykernel's: code that looks for it finds what it would without dagnb)."""
        if not hasattr(self._fallback, "buffer"):
            raise AttributeError(f"{type(self._fallback).__name__!r} has no 'buffer'")
        return self._buffer

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

    def writelines(self, lines: Iterable[str]) -> None:  # (the stream's own went around)
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        if name == "_fallback":  # (a copy's, made without __init__: none yet)
            raise AttributeError(name)
        return getattr(self._fallback, name)


class _RoutingBuffer(io.BufferedIOBase):
    """Stands in for ``sys.stdout.buffer``, a write-only binary stream: the bytes a step
    writes there reach its log as its prints do (decoded as the stream's encoding, a
    character split over two writes whole, bytes it cannot decode escaped), masked the
    same way; others, the stream's. Its file descriptor is the stream's (what writes
    there is not captured, as a subprocess's output is not)."""

    def __init__(self, stream: _RoutingStream) -> None:
        super().__init__()
        self._stream = stream

    def write(self, data: Any) -> int:  # (bytes, bytearray, memoryview, an array)
        step = _current.get()
        if step is None:
            return self._write_outside(data)
        view = memoryview(data)  # (a TypeError for what is no bytes, as a real buffer's)
        self._stream.write(self._decoder(step).decode(view.tobytes()))
        return view.nbytes

    def _write_outside(self, data: Any) -> int:
        """Bytes written outside any step: to the stream's own buffer; while runs with
        secrets go on, text is masked on its way there, and what is no text of the
        stream's encoding (a binary file piped out) goes as it is, not rewritten."""
        if _masks:
            view = memoryview(data)
            try:
                text = view.tobytes().decode(self._encoding())
            except UnicodeDecodeError:
                self._stream._fallback.flush()  # (the text before it goes first)
            else:
                self._stream.write(text)
                return view.nbytes
        return self._raw().write(data)

    def flush(self) -> None:
        self._stream.flush()
        if _current.get() is None:
            self._raw().flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw().fileno()

    def isatty(self) -> bool:
        return self._raw().isatty()

    def close(self) -> None:
        """Nothing: a TextIOWrapper made on it closes it when collected, and the stream
        it stands for stays open."""

    def _raw(self) -> Any:
        return self._stream._fallback.buffer

    def __getattr__(self, name: str) -> Any:  # (name, mode, raw: the stream's own)
        return getattr(self._raw(), name)

    def _decoder(self, step: _StepBuffer) -> codecs.IncrementalDecoder:
        if step.decoders is None:  # (under the lock: two threads of the step may write
            with _lock:  #              their first bytes at once)
                if step.decoders is None:
                    step.decoders = {}
        decoder = step.decoders.get(self._stream._name)
        if decoder is None:
            decoder = step.decoders.setdefault(self._stream._name, self._new_decoder())
        return decoder

    def _new_decoder(self) -> codecs.IncrementalDecoder:
        return codecs.getincrementaldecoder(self._encoding())(errors="backslashreplace")

    def _encoding(self) -> str:
        return getattr(self._stream._fallback, "encoding", None) or "utf-8"


@contextlib.contextmanager
def capturing(mask: Callable[[str], str] | None = None) -> Iterator[None]:
    """Install the routing streams for the duration of a run (nesting is counted);
    ``mask``: the run's, applied to what is written meanwhile outside any step, and
    after the run until the threads it started and left running have ended (a step's
    thread printing a token later on: see :func:`_left_running`)."""
    _install(mask)
    before = frozenset(threading.enumerate()) if mask is not None else frozenset()
    try:
        yield
    finally:
        left = _left_running(before) if mask is not None else []
        if left:
            threading.Thread(target=_release_after, args=(left, mask), daemon=True,
                             name="dagnb-mask-left-running").start()
        else:
            _release(mask)


def _install(mask: Callable[[str], str] | None) -> None:
    global _users, _masks
    with _lock:
        for name in ("stdout", "stderr"):
            # (none yet, or one replaced meanwhile: a run's threads kept the capture
            # after it, and sys.stdout was set back since, by a test runner say)
            current = getattr(sys, name)
            if not isinstance(current, _RoutingStream):
                setattr(sys, name, _RoutingStream(name, current))
        _users += 1
        if mask is not None:
            _masks = (*_masks, mask)


def _release(mask: Callable[[str], str] | None) -> None:
    global _users, _masks
    with _lock:
        if mask is not None:
            index = _masks.index(mask)
            _masks = _masks[:index] + _masks[index + 1:]
        _users -= 1
        if _users == 0:
            for name in ("stdout", "stderr"):
                current = getattr(sys, name)
                if isinstance(current, _RoutingStream):
                    setattr(sys, name, current._fallback)


# threads of dagnb's own, or of its loop's pool (a step's to_thread, awaited): none
# is a step's left running
_OURS = ("dagnb-", "asyncio_")


def _left_running(before: frozenset[threading.Thread]) -> list[threading.Thread]:
    """The threads started during a run that are still running (a step's, printing
    what it fetched with a token), which a mask must cover after the run too; not
    dagnb's own, nor a thread of C code that Python only saw (it cannot be joined)."""
    return [thread for thread in threading.enumerate()
            if thread not in before and not thread.name.startswith(_OURS)
            and not isinstance(thread, threading._DummyThread)]


def _release_after(threads: list[threading.Thread], mask: Callable[[str], str] | None) -> None:
    for thread in threads:
        thread.join()
    _release(mask)


class routed_output(_StepBuffer):
    """``with routed_output(sink):`` sends this context's prints, line by line, to ``sink``.

    A class rather than ``@contextmanager``, and its own buffer: it is entered once per
    Python step, and the generator machinery would cost more than a no-op step.
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _current.set(self)
        if self.show is not None and _step_hooks:
            self.ends = [end for hook in _step_hooks if (end := _quietly(hook)) is not None]

    def __exit__(self, *exc: object) -> None:
        if self.ends:  # (in the step's context still: what they display is the step's)
            for end in self.ends:
                _quietly(end)
        if self.decoders:  # bytes of a character cut short at the end: shown escaped
            for stream, decoder in self.decoders.items():
                if rest := decoder.decode(b"", final=True):
                    self.write(stream, rest)
        partial = self.partial
        if partial["stdout"] or partial["stderr"]:  # (most steps end their lines)
            self.flush_partial()
        _current.reset(self._token)


def _quietly(call: Callable[[], Any]) -> Any:
    """A hook's failure is not the step's: it is said, and the step goes on."""
    try:
        return call()
    except Exception as exc:
        warnings.warn(f"dagnb: a step hook failed: {type(exc).__name__}: {exc}", stacklevel=3)
        return None


def step_display(data: dict[str, Any], metadata: dict[str, Any], display_id: str | None = None,
                 update: bool = False) -> Any:
    """Give a rich output to the Python step running in this context, if any: True when
    its run shows it itself (the caller publishes it not), else the bundle and metadata
    for the caller to publish, their text masked (unchanged when no such step runs and
    no run masks what is written outside its steps: :func:`outside_mask`)."""
    buffer = _current.get()
    if buffer is None or buffer.show is None:
        return data, metadata
    buffer.flush_partial()  # what the step printed before it shows first, as in Jupyter
    return buffer.show(data, metadata, display_id, update)


def outside_mask() -> Callable[[str], str] | None:
    """The masks of the runs capturing now, as one, for output outside their steps (a
    thread a step started); None when no run masks."""
    masks = _masks
    if not masks:
        return None

    def masked(text: str) -> str:
        for mask in masks:
            text = mask(text)
        return text

    def html(text: str) -> str:  # (a reference is masked whole or left whole: Masker.html)
        for mask in masks:
            text = getattr(mask, "html", mask)(text)
        return text

    masked.html = html  # type: ignore[attr-defined]
    return masked


def in_step_with_displays() -> bool:
    """Whether a Python step whose displays are captured runs in this context."""
    buffer = _current.get()
    return buffer is not None and buffer.show is not None


def step_with_displays() -> object | None:
    """What stands for the Python step whose displays are captured in this context (the
    same object all through its attempt, in the tasks it awaits too), or None."""
    buffer = _current.get()
    return buffer if buffer is not None and buffer.show is not None else None


def add_step_hook(hook: StepHook) -> None:
    """Call ``hook()`` as each Python step whose displays are captured starts, in its
    context; a callable it returns is called as the step ends (its failure is a warning)."""
    global _step_hooks
    with _lock:
        if hook not in _step_hooks:
            _step_hooks = (*_step_hooks, hook)


def remove_step_hook(hook: StepHook) -> None:
    global _step_hooks
    with _lock:
        _step_hooks = tuple(known for known in _step_hooks if known is not hook)


def current_context() -> object:
    """The context object given to the innermost ``routed_output``, or None."""
    buffer = _current.get()
    return None if buffer is None else buffer.context

