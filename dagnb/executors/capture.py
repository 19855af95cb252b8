"""Capture of print() output from in-process Python steps.

Several steps may run at once on the loop, and the notebook keeps printing from its
own thread, so redirecting ``sys.stdout`` wholesale would mix them. Instead a routing
stream stands in for ``sys.stdout``/``sys.stderr`` while runs are active; it sends a
write to the step whose context (a ContextVar, so asyncio tasks keep theirs) is current,
and everything else to the stream it replaced.

What is written outside any step while runs with secrets go on (a thread a step
started, the notebook's own prints during a background run) goes on to the stream it
replaced masked, as it comes: each write but for the end of the writing thread's
unfinished line that may begin a secret, held back until more text shows it is none (or
the line ends, or those runs end), so that a secret written in pieces is masked whole
(:class:`_HeldEcho`). What is let go with no more text after it (as those runs end, as
a notebook cell ends: :func:`release_held`, or as the interpreter exits) is the last of
its line: a secret's start there is masked too. A run without secrets passes each write
on as it is.

Rich outputs go the same way: a front end that publishes displays (the notebook's IPython
publisher) hands each to :func:`step_display` first, which gives it to the current step's
display sink, if any; a step's own prints before it are sent as a line first, so the
two keep their order. Step hooks (:func:`add_step_hook`) run as each such step starts and
ends, in its context: the notebook shows a matplotlib figure a step left open there.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import contextvars
import functools
import io
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeVar

__all__ = ["add_step_hook", "capturing", "current_context", "in_step_with_displays",
           "outside_mask", "release_held", "remove_step_hook", "routed_output",
           "step_display", "step_with_displays"]

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
_saved: dict[str, TextIO] = {}
# the masks of the runs capturing now: output that reaches no step's log (a thread a
# step started does not inherit its context) is masked with them on its way out
_masks: tuple[Callable[[str], str], ...] = ()
# taken to write outside steps while runs mask, and to change the masks: what a stream
# holds back is masked with the masks it was held back for
_echo_lock = threading.RLock()
_echoes: weakref.WeakSet[_HeldEcho] = weakref.WeakSet()  # (a stream kept past its run's)
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
        # a line cut off (the step ended, or displays next) is the last of its line: a
        # sink that masks one as such (the scheduler's: ``last``) gets it so, lest a
        # secret's start there show in clear (``Bearer sk-live-Abc1``)
        sink = getattr(self.sink, "last", self.sink)
        for stream, pieces in partial.items():
            if rest := "".join(pieces):
                sink(stream, rest)


class _RoutingStream:
    """Stands in for sys.stdout or sys.stderr while runs capture output."""

    def __init__(self, name: str, fallback: TextIO) -> None:
        self._name = name
        self._fallback = fallback
        self._buffer = _RoutingBuffer(self)
        self._echo = _HeldEcho(fallback)

    @property
    def buffer(self) -> _RoutingBuffer:
        """The binary side, where the stream it replaced has one (a terminal's, not
        ipykernel's: code that looks for it finds what it would without dagnb)."""
        if not hasattr(self._fallback, "buffer"):
            # (__getattr__ then raises the stream's own AttributeError, as without dagnb)
            raise AttributeError(f"{type(self._fallback).__name__!r} has no 'buffer'")
        return self._buffer

    def write(self, text: str) -> int:
        buffer = _current.get()
        if buffer is None:
            if not _masks:
                return self._fallback.write(text)
            self._echo.write(text)
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
        # (a step's traceback leaves this frame out: its AttributeError is the stream's)
        __tracebackhide__ = True
        if name == "_fallback":  # (a copy's, made without __init__: none yet)
            raise AttributeError(name)
        return getattr(self._fallback, name)


class _HeldEcho:
    """Writes what is written outside any step to the stream it stands for, masked with
    the masks of the runs going on, but for the end of a thread's unfinished line that may
    begin a secret (``tok-`` of ``tok-123...``: :meth:`Masker.unfinished_from`): that waits
    for the thread's next write, and goes with it once it shows there is no secret there
    (masked whole if there is), or when its line ends, or when the runs that mask end (or
    the notebook cell that wrote it, or the interpreter: :meth:`release`). A flush does not
    let it go (``print(token[:4], end="", flush=True)``), nor does time, nor another
    thread's line (the notebook's view printing a step's): a secret written in pieces is
    never shown in clear. Bytes written to ``sys.stdout.buffer`` come as text, a
    character split over two writes whole."""

    __slots__ = ("__weakref__", "_before", "_decoders", "_held", "_out")

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._held: dict[int, str] = {}  # thread -> what it wrote that waits
        # thread -> the last character it wrote out of its unfinished line: whether what
        # waits starts a word (masked as a secret's start only then: `ban|ana` is none)
        self._before: dict[int, str] = {}
        # thread -> what decodes its bytes, while it holds a character cut short
        self._decoders: dict[int, codecs.IncrementalDecoder] = {}
        _echoes.add(self)

    def write(self, text: str) -> None:
        with _echo_lock:
            masks = _masks
            if not masks:  # (the runs ended since the caller looked)
                self._out.write(text)
                return
            thread = threading.get_ident()
            if self._held:
                text = self._held.pop(thread, "") + text
            if text[-1:] == "\n":
                cut = len(text)
                self._before.pop(thread, None)
            else:
                cut = _unfinished_from(text, masks)
                if cut < len(text):
                    self._held[thread] = text[cut:]
                if cut:
                    self._before[thread] = text[cut - 1]
            if cut:
                self._out.write(_masked(text[:cut], masks))

    def write_bytes(self, data: bytes, raw: Any, encoding: str) -> int:
        """Bytes that are text of ``encoding`` go as :meth:`write`'s (a character cut
        short waits for its end); others (a binary file piped out) to ``raw``, the
        stream's buffer, as they are, after what the thread wrote before them."""
        with _echo_lock:
            thread = threading.get_ident()
            decoder = (self._decoders.pop(thread, None)
                       or codecs.getincrementaldecoder(encoding)())
            try:
                text = decoder.decode(data)
            except UnicodeDecodeError:
                cut_short = decoder.getstate()[0]
                if (held := self._held.pop(thread, None)) is not None:  # (no text follows)
                    before = self._before.pop(thread, "")
                    self._out.write(_masked_as_last(held, _masks, before))
                self._out.flush()  # (the text before them goes first)
                if not cut_short:
                    return raw.write(data)
                return raw.write(cut_short + data) - len(cut_short)
            if decoder.getstate()[0]:
                self._decoders[thread] = decoder
            if text:
                self.write(text)
            return len(data)

    def release(self, thread: int | None = None) -> None:
        """Write what waits, of ``thread`` (of every thread: None), as the last of its
        line, masked (the runs that masked it end, or the cell that wrote it), and the
        bytes of a character cut short as they are."""
        with _echo_lock:
            held = _taken(self._held, thread)
            before = _taken(self._before, thread)
            decoders = _taken(self._decoders, thread)
            for who, text in held.items():
                self._out.write(_masked_as_last(text, _masks, before.get(who, "")))
            if decoders:
                self._out.flush()  # (the text before them goes first)
                for decoder in decoders.values():
                    self._out.buffer.write(decoder.getstate()[0])


_Held = TypeVar("_Held")


def _taken(by_thread: dict[int, _Held], thread: int | None) -> dict[int, _Held]:
    """What ``by_thread`` holds of ``thread`` (of every thread: None), taken out of it."""
    if thread is None:
        taken = dict(by_thread)
        by_thread.clear()
        return taken
    return {thread: by_thread.pop(thread)} if thread in by_thread else {}


def _unfinished_from(text: str, masks: tuple[Callable[[str], str], ...]) -> int:
    """Where the unfinished line that ends ``text`` may begin a secret of one of
    ``masks``; where it begins, for a mask that cannot tell."""
    line = text.rfind("\n") + 1
    cut = len(text)
    for mask in masks:
        find = getattr(mask, "unfinished_from", None)
        cut = min(cut, line if find is None else find(text, line))
    return cut


def _masked(text: str, masks: Iterable[Callable[[str], str]]) -> str:
    for mask in masks:
        text = mask(text)
    return text


def _masked_as_last(text: str, masks: Iterable[Callable[[str], str]], before: str) -> str:
    """``text``, written after ``before``, masked as the last of its line, no more to
    come: the start of a secret it ends with masked too (``tok-9f``:
    :meth:`Masker.masked_as_last`), by a mask that can tell one."""
    for mask in masks:
        last = getattr(mask, "masked_as_last", None)
        text = mask(text) if last is None else last(text, before)
    return text


def release_held() -> None:
    """Write what the routing streams hold back of this thread's unfinished lines (a
    secret's start, maybe) as their last, masked: a notebook calls it as each cell ends,
    so that a cell's partial line printed while a background run goes on shows in that
    cell, not in the one running when the run ends (or in none, as nbclient drops it)."""
    thread = threading.get_ident()
    with _echo_lock:
        for echo in list(_echoes):
            echo.release(thread)


@atexit.register
def _release_at_exit() -> None:
    """Write what every thread holds back as the interpreter exits (a script's last
    partial line, a thread a step left running), lest it be lost; not when a daemon
    thread holds the lock (its write blocked on a full pipe: the exit would hang)."""
    if not _echo_lock.acquire(timeout=1):
        return
    try:
        for echo in list(_echoes):
            with contextlib.suppress(ValueError, OSError):  # (its stream closed)
                echo.release()
    finally:
        _echo_lock.release()


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
            view = memoryview(data)  # (a TypeError for what is no bytes)
            return self._stream._echo.write_bytes(view.tobytes(), self._raw(), self._encoding())
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
        __tracebackhide__ = True  # (see _RoutingStream.__getattr__)
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


class capturing:  # (lower case: used as the function it was, ``with capturing(mask):``)
    """Install the routing streams for the duration of a run (nesting is counted);
    ``mask``: the run's, applied to what is written meanwhile outside any step.

    Not kept after the run for the threads it left running: those a library starts and
    never ends (dask's pools, a client's IO loop) would keep every later print of the
    process masked, ever slower; what such a thread prints after the run goes out as it
    is (README), though a ``dagnb.Memory`` call there still keeps the run's secrets out
    of its cache (:func:`dagnb.cache.secret_scan.remember_secrets`). The routing streams
    are made again only for a stream that is not the one they last stood for (a class,
    and streams made once: a generator and two streams cost every run some 400
    instructions)."""

    __slots__ = ("_mask",)

    def __init__(self, mask: Callable[[str], str] | None = None) -> None:
        self._mask = mask

    def __enter__(self) -> None:
        global _users, _masks
        mask = self._mask
        with _lock:
            if _users == 0:
                for name in ("stdout", "stderr"):
                    _saved[name] = fallback = getattr(sys, name)
                    setattr(sys, name, _routing(name, fallback))
            _users += 1
            if mask is not None:
                with _echo_lock:
                    _masks = (*_masks, mask)
                    _guard_kernel_streams()

    def __exit__(self, *exc_info: object) -> None:
        global _users
        with _lock:
            if self._mask is not None:
                _stop_masking(self._mask)
            _users -= 1
            if _users == 0:
                for name, stream in _saved.items():
                    if isinstance(getattr(sys, name), _RoutingStream):
                        setattr(sys, name, stream)
                _saved.clear()


_routings: dict[str, _RoutingStream] = {}  # the routing stream last made for each name


def _routing(name: str, fallback: TextIO) -> _RoutingStream:
    """The routing stream that stands for ``fallback``: the one made last time if it
    stood for that same stream (what it holds back was let go as the runs that masked
    ended, :func:`_stop_masking`), else a new one."""
    stream = _routings.get(name)
    if stream is None or stream._fallback is not fallback:
        stream = _routings[name] = _RoutingStream(name, fallback)
    return stream


def _stop_masking(mask: Callable[[str], str]) -> None:
    """Let go of what the routing streams hold back, masked with ``mask`` too, as it
    stops masking (the run ends); :data:`_lock` held."""
    global _masks
    with _echo_lock:
        for echo in list(_echoes):
            echo.release()
        index = _masks.index(mask)
        _masks = _masks[:index] + _masks[index + 1:]
        if _guarded:  # (see _guard_kernel_streams)
            global _late
            until, late = _late
            kept = late if time.monotonic() < until else ()
            _late = (time.monotonic() + LATE_SECONDS, (*kept, mask))


# the kernel's streams whose writes go through dagnb (see _guard_kernel_streams)
_guarded: set[int] = set()
# until when (time.monotonic()) the kernel's streams mask with the masks of the runs
# with secrets that ended last, and those masks
_late: tuple[float, tuple[Callable[[str], str], ...]] = (0.0, ())
LATE_SECONDS = 1.0  # (ipykernel forwards a subprocess's lines from a thread, a moment later)


def _guard_kernel_streams() -> None:
    """Mask what is written to the notebook kernel's own streams past dagnb's stand-ins
    while runs with secrets go on, and for :data:`LATE_SECONDS` after: a ``logging``
    handler made before the run holds the stream itself, and ipykernel writes what a
    subprocess prints to file descriptor 1 or 2 with the stream's ``write``, from a
    thread of its own, a moment later. Those reached the cell and the saved notebook in
    clear. The stream's ``write`` is replaced once and stays so: when no run masks it
    passes the text on as it is, one call more (a terminal's stream is C code, its
    ``write`` not to be replaced: README). :data:`_echo_lock` held."""
    for name, stream in _saved.items():
        if id(stream) in _guarded or not _is_kernel_stream(stream):
            continue
        echo = _routing(name, stream)._echo
        original = functools.partial(type(stream).write, stream)
        echo._out = _Unguarded(stream, original)
        stream.write = _guarded_write(echo, original)
        _guarded.add(id(stream))


def _guarded_write(echo: _HeldEcho, original: Callable[[str], int]) -> Callable[[str], int]:
    def write(text: str) -> int:
        if _masks:
            echo.write(text)
            return len(text)
        until, late = _late
        if late and time.monotonic() < until:
            text = _masked(text, late)
        return original(text)

    return write


def _is_kernel_stream(stream: object) -> bool:
    kind = type(stream)
    return kind.__name__ == "OutStream" and kind.__module__.startswith("ipykernel")


class _Unguarded:
    """A guarded kernel stream as its own class writes, for the echo that masks its
    writes (the stream's ``write`` leads to that echo: through it, a loop)."""

    __slots__ = ("_stream", "write")

    def __init__(self, stream: Any, write: Callable[[str], int]) -> None:
        self._stream = stream
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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

    masked.html = html
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

