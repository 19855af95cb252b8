"""dagnb's loop woken through an eventfd rather than asyncio's socket pair.

Every call from another thread (a ``graph.run()`` handing its run to the loop, a
process-starting thread reporting back) wakes the loop. asyncio writes a byte to a
socket pair for it, and reads until the socket raises ``BlockingIOError``; an eventfd
(Linux) is a counter: one 8-byte write to wake, one read to reset, no exception. A
``call_soon_threadsafe`` round trip took 42 µs with the socket and 33 with the eventfd
(a thread pool's futex: 31) on the 2-core machine the benchmarks run on, and 34 and 22
with both threads on one CPU (``loop_wake_round_trip`` in ``benchmarks/``).

Only where asyncio would make its own selector loop (the default policy on Linux):
a policy the user chose (uvloop) is left to make the loop. This loop adds no signal
handlers (it runs on a thread of its own, where asyncio refuses them), so the bytes
asyncio's socket carried for them are not missed.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import warnings
from typing import Any

__all__ = ["EventfdLoop", "new_loop"]

_ONE = (1).to_bytes(8, sys.byteorder)  # what eventfd_write(fd, 1) writes


class EventfdLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """asyncio's selector loop, its self-pipe the eventfd ``descriptor`` (it owns it)."""

    # loop iterations begun: a callback that reads it twice and finds it unchanged knows
    # no other callback ran in between (see dagnb.executors.children)
    turns = 0

    def __init__(self, descriptor: int) -> None:
        # (a file object, not the bare number: once closed, a late write from another
        # thread raises ValueError rather than write to whatever reuses the number)
        self._wakeup: io.FileIO | None = io.FileIO(descriptor, "r+", closefd=True)
        super().__init__()

    def _make_self_pipe(self) -> None:  # (called by asyncio's __init__)
        assert self._wakeup is not None
        self._ssock = self._csock = None
        self._internal_fds += 1  # type: ignore[attr-defined]
        self._add_reader(self._wakeup.fileno(), self._read_from_self)  # type: ignore[attr-defined]

    def _close_self_pipe(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is None:
            return
        self._remove_reader(wakeup.fileno())  # type: ignore[attr-defined]
        wakeup.close()
        self._internal_fds -= 1  # type: ignore[attr-defined]

    def _run_once(self) -> None:
        self.turns += 1
        super()._run_once()  # type: ignore[misc]

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        """Refused, as asyncio refuses it on any thread but the main one (where this
        loop never runs): its signals would wake it through the socket it has not."""
        raise RuntimeError("set_wakeup_fd only works in main thread of the main interpreter")

    def _read_from_self(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.read(8)  # (the count, reset to 0; None when it was 0 already)

    def _write_to_self(self) -> None:
        wakeup = self._wakeup  # (any thread, perhaps as the loop closes)
        if wakeup is None:
            return
        # (not contextlib.suppress: a context manager made on every wake)
        try:  # noqa: SIM105
            wakeup.write(_ONE)
        except (OSError, ValueError):  # (closed meanwhile)
            pass


def new_loop() -> asyncio.AbstractEventLoop:
    """A loop for dagnb's thread: an :class:`EventfdLoop` where asyncio would make its
    selector loop and Linux has eventfd, else the policy's own."""
    with warnings.catch_warnings():  # (once a process; Python 3.14 deprecates policies)
        warnings.simplefilter("ignore", DeprecationWarning)
        policy: Any = asyncio.get_event_loop_policy()
        default = type(policy) is asyncio.DefaultEventLoopPolicy
    if (default and hasattr(os, "eventfd")
            and getattr(policy, "_loop_factory", None) is asyncio.SelectorEventLoop):
        try:
            descriptor = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # type: ignore[attr-defined]
        except OSError:  # (EMFILE; a kernel without eventfd): asyncio's own
            return asyncio.new_event_loop()
        return EventfdLoop(descriptor)
    return asyncio.new_event_loop()
