"""Throttle: turn a stream of "something changed" pokes into at most one render per interval.

A run can emit 100,000 log events a second; a browser can draw perhaps ten updates.
So the event listener, called on dagnb's loop thread for every event, is
:attr:`Throttle.poke`: the ``append`` of a one-item deque, a C call that costs the run
about 50 ns per event and takes no lock. Rendering happens elsewhere, at most once per
``interval``:

- ``tick()`` from a caller's own wait loop (the magics wait for a synchronous run on the
  kernel's main thread and tick in between, so output lands in the running cell);
- or a daemon thread started with ``start()`` (background runs, button-started runs)
  that looks every ``interval`` and renders when poked.

``flush()`` renders now if anything is pending (the final frame). A lock keeps the
thread and a flushing caller from rendering at the same time. While ``heartbeat`` is
set, a quiet stretch counts as a poke every ``heartbeat`` seconds, so a view's running
durations keep moving while a step prints nothing.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Calls ``render()`` at most once per ``interval`` seconds after a :attr:`poke`.

    Parameters
    ----------
    render
        What to call; it reads the current state itself (the throttle carries no data).
    interval
        Minimum seconds between two renders (0.1: ten updates a second).
    clock
        Monotonic clock, injectable for tests.
    """

    __slots__ = ("_clock", "_last", "_lock", "_pokes", "_stop", "_thread", "heartbeat",
                 "interval", "poke", "render", "renders")

    def __init__(self, render: Callable[[], None], interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.render = render
        self.interval = interval
        self.renders = 0  # how many times render() ran (read by tests)
        self.heartbeat: float | None = None  # seconds; None: render only when poked
        self._clock = clock
        self._pokes: collections.deque[object] = collections.deque(maxlen=1)
        #: Note that something changed: ``poke(anything)``; the listener to subscribe.
        self.poke: Callable[..., None] = self._pokes.append
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> bool:
        """True when a change has not been rendered yet."""
        return bool(self._pokes)

    def tick(self) -> bool:
        """Render if something changed and ``interval`` has passed; True if it rendered."""
        self._beat()
        if not self._pokes or self._clock() - self._last < self.interval:
            return False
        return self.flush()

    def _beat(self) -> None:
        if self.heartbeat is not None and self._clock() - self._last >= self.heartbeat:
            self.poke(None)

    def flush(self) -> bool:
        """Render now if something changed; True if it rendered."""
        with self._lock:
            if not self._pokes:
                return False
            self._pokes.clear()  # before rendering: a poke meanwhile is seen next time
            self._last = self._clock()
            self.renders += 1
            self.render()
            return True

    def start(self) -> Throttle:
        """Render from a daemon thread until :meth:`stop` (for runs nobody waits on)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="dagnb-render", daemon=True)
            self._thread.start()
        return self

    def _work(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self._beat()
                self.flush()
            self.flush()
        except Exception:  # a widget closed under us: nothing left to draw on
            return

    def stop(self) -> None:
        """Let the thread render once more and end; returns at once (safe from render)."""
        self._stop.set()

    def release(self) -> None:
        """Render nothing from now on, and let go of ``render``: a view's own method,
        which holds the view, which holds this throttle (a cycle; see the views' close)."""
        self.render = _nothing

    def close(self) -> None:
        """Stop the thread (if any), wait for it, and render what is pending."""
        thread, self._thread = self._thread, None
        self.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 2)
        self.flush()


def _nothing() -> None:
    """What a released throttle renders."""
