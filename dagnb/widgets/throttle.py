"""Throttle: turn a stream of "something changed" pokes into at most one render per interval.

A run can emit 100,000 log events a second; a browser can draw perhaps ten updates.
So the event listener (called on dagnb's loop thread for every event) only calls
:meth:`Throttle.poke`, which sets a flag. Rendering happens elsewhere, at most once per
``interval``:

- ``tick()`` from a caller's own wait loop (the magics wait for a synchronous run on the
  kernel's main thread and tick in between, so output lands in the running cell);
- or a daemon thread started with ``start()`` (background runs, button-started runs),
  which sleeps until poked and then renders no more often than ``interval``.

``flush()`` renders now if anything is pending (the final frame). A lock keeps the
thread and a flushing caller from rendering at the same time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Calls ``render()`` at most once per ``interval`` seconds after :meth:`poke`.

    Parameters
    ----------
    render
        What to call; it reads the current state itself (the throttle carries no data).
    interval
        Minimum seconds between two renders (0.1: ten updates a second).
    clock
        Monotonic clock, injectable for tests.
    """

    __slots__ = ("_clock", "_dirty", "_last", "_lock", "_stop", "_thread", "_wake",
                 "interval", "render", "renders")

    def __init__(self, render: Callable[[], None], interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.render = render
        self.interval = interval
        self.renders = 0  # how many times render() ran (read by tests)
        self._clock = clock
        self._dirty = False
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def poke(self, *_: object) -> None:
        """Note that something changed; cheap enough to call for every event."""
        self._dirty = True
        if self._thread is not None and not self._wake.is_set():
            self._wake.set()

    @property
    def pending(self) -> bool:
        """True when a change has not been rendered yet."""
        return self._dirty

    def tick(self) -> bool:
        """Render if something changed and ``interval`` has passed; True if it rendered."""
        if not self._dirty or self._clock() - self._last < self.interval:
            return False
        return self.flush()

    def flush(self) -> bool:
        """Render now if something changed; True if it rendered."""
        with self._lock:
            if not self._dirty:
                return False
            self._dirty = False
            self._last = self._clock()
            self.renders += 1
            self.render()
            return True

    def start(self) -> Throttle:
        """Render from a daemon thread until :meth:`close` (for runs nobody waits on)."""
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._work, name="dagnb-render", daemon=True)
            self._thread.start()
        return self

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            delay = self.interval - (self._clock() - self._last)
            if delay > 0 and not self._stop:
                time.sleep(delay)  # the rate limit itself: changes accumulate meanwhile
            try:
                self.flush()
            except Exception:  # a widget closed under us: nothing left to draw on
                return
            if self._stop:
                return

    def stop(self) -> None:
        """Let the thread render once more and end; returns at once (safe from a listener)."""
        self._stop = True
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (if any), wait for it, and render what is pending."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.stop()
            if thread is not threading.current_thread():
                thread.join(timeout=2 * self.interval + 1)
        self.flush()
