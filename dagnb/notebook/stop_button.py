"""The kernel's stop button while a run nobody waits for (``--background``) goes on.

Jupyter's stop button sends SIGINT to the kernel's whole process group, so to the
processes a ``--python`` step of a background run waits for, though the run itself is
not the interrupted cell's and goes on. Such a step could return what the killed process
left (``returncode`` -2, a partial file) and be stored as a success, served from the
cache after. So, from the start of the first background run to the end of the last,
every SIGINT the kernel gets is counted (the signal wakeup fd,
:func:`dagnb.executors.loop.hold_wakeup`), and the scheduler ends an attempt that one
overlapped ``cancelled``, not stored (:func:`dagnb.executors.loop.interrupted_unwaited`),
as it does one whose ``os.system`` command died of SIGINT (C's ``system()`` ignores
SIGINT in the whole kernel while its command runs: ``os.system`` is wrapped meanwhile).

ipykernel ignores SIGINT while idle (``SIG_IGN``: no handler, no wakeup fd, sees it)
and puts Python's default handler in place for each request, giving back the one it
found after (``Kernel.pre_handler_hook`` and ``post_handler_hook``). Meanwhile the idle
handler is :func:`_noticed`, a Python one that does nothing, as ``SIG_IGN`` did, except
let the signal reach the wakeup fd. A process started meanwhile gets SIGINT's default
action (one inherits an ignored signal, not a handled one): the stop button kills it
as it killed one started while a cell ran, rather than only sometimes. Everything is
given back, on the main thread (signals are set there only), as the last run ends.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

from dagnb.executors import loop
from dagnb.runtime.run import Run

__all__ = ["watch", "watch_until_done"]


def _noticed(signum: int, frame: Any) -> None:
    """SIGINT while the kernel is idle: nothing, as ipykernel's ``SIG_IGN``, but a
    Python handler has Python's C-level one write it to the wakeup fd, counted."""


class _Watch:
    """The background runs going, and the loop of the main thread that gives back what
    the first one changed when the last ends."""

    __slots__ = ("ending", "main_loop", "runs")

    def __init__(self) -> None:
        self.runs: set[Run] = set()
        self.ending: set[Run] = set()  # runs told to give back as they end (once each)
        self.main_loop: asyncio.AbstractEventLoop | None = None


_watch = _Watch()


def watch(run: Run) -> bool:
    """Count the SIGINTs that overlap an attempt of ``run``, about to start and waited
    for by nobody; False, and nothing done, off the main thread of a kernel running an
    asyncio loop there (nothing could give the signals back). Then
    :func:`watch_until_done` once the run has started."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        main_loop = asyncio.get_running_loop()
    except RuntimeError:  # (a terminal IPython: no loop to come back to)
        return False
    if not _watch.runs:
        loop.hold_wakeup()
        _notice_idle_interrupts()
        _watch.main_loop = main_loop
    _watch.runs.add(run)
    loop.watch_unwaited(run)
    return True


def watch_until_done(run: Run) -> None:
    """Stop watching ``run`` as it ends, and give everything back after the last (once,
    however often it is asked: an interrupted start asks again)."""
    if run in _watch.runs and run not in _watch.ending:
        _watch.ending.add(run)
        run.add_done_callback(_ended)


def _ended(run: Run) -> None:
    loop.unwatch_unwaited(run)  # (its attempts have ended: at once, on any thread)
    main_loop = _watch.main_loop
    if main_loop is not None and not main_loop.is_closed():
        main_loop.call_soon_threadsafe(_release, run)


def _release(run: Run) -> None:
    """On the main thread: one run fewer; after the last, SIGINT ignored again while
    the kernel is idle, and the wakeup fd given back."""
    _watch.runs.discard(run)
    _watch.ending.discard(run)
    if _watch.runs:
        return
    _watch.main_loop = None
    _ignore_idle_interrupts()
    loop.release_wakeup()


def _kernel() -> Any:
    """The ipykernel Kernel, if this is one's process."""
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None)


def _notice_idle_interrupts() -> None:
    """:func:`_noticed` in place of ``SIG_IGN``: now if the kernel is idle, or as the
    request under way ends (the handler ``post_handler_hook`` restores)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, _noticed)
    kernel = _kernel()
    if getattr(kernel, "saved_sigint_handler", None) == signal.SIG_IGN:
        kernel.saved_sigint_handler = _noticed


def _ignore_idle_interrupts() -> None:
    """``SIG_IGN`` again wherever :func:`_noticed` is (in place, or to be restored)."""
    if signal.getsignal(signal.SIGINT) is _noticed:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    kernel = _kernel()
    if getattr(kernel, "saved_sigint_handler", None) is _noticed:
        kernel.saved_sigint_handler = signal.SIG_IGN
