"""A step's processes die with the process that started them, however it ends (POSIX).

A step's process group is killed when the step ends, by the process that runs it (a
notebook kernel, ``dagnb run``). When that process ends first, nothing of it is left
to do so: a kernel restarted (``SIGKILL``, or a shutdown during a ``--background``
run), ``dagnb run`` killed. The step's processes, in sessions of their own, would run
on, re-parented to init.

So a small watcher process is started before the first step process, in a session of its
own (a kill of the kernel's process group does not reach it). Its stdin is one end of a
socket pair whose other end only this process holds (close-on-exec: no step inherits
it; a socket, not a pipe, so that a dead watcher is an error here, never a SIGPIPE).
Each step's token is sent there as its process is about to start, its process group
once started, and its end when it ends (lines of some 40 bytes, sent without blocking,
about 2 µs each). When this process ends, whatever the way (an exit, a crash, ``SIGKILL``), the
system closes its end; the watcher reads the end of its input and kills the groups
still listed: SIGTERM, then SIGKILL after the step kill's grace, and on Linux every
process carrying their tokens (what left the group, as :mod:`dagnb.executors.reaper`
finds them). Then it exits.

The watcher is this file run as a script (``python -I -S``: the standard library only,
some 10 ms of CPU to start, not dagnb's imports), started as the first step is about to
start its process, and told of each step before its process starts (its token; its
group once there): the lines wait in the socket until it reads them. Told only once the
process ran, as before, a ``dagnb run`` killed while it started the watcher (15 ms, more
on a busy machine) left that step's processes running for good. A process killed while
it forked a step's, before the step's program ran, is the one gap left: the watcher
looks for the token twice, ``grace`` apart. If it dies, the next step's line finds the
socket closed and a new one is started with the steps running then (8 at most: one that
cannot run is not started again and again). Where none can be started (no
``sys.executable``, not POSIX), steps are killed as before, with their step or run.
A group listed when this process was killed could, in principle, have ended just then
and its number been handed to a new group by the time the watcher kills it; pids are
handed out in increasing order, so that takes a wrap-around of ``pid_max`` in that
moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["Watcher", "main"]

_POSIX = os.name == "posix"
_ROUNDS = 50  # token-kill rounds at most (a process forking faster than that escapes)
_STARTS = 8  # watchers started at most: past that, one that dies at once is not started again
_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class Watcher:
    """This process's side: starts the watcher and tells it the steps running."""

    def __init__(self, variable: str, grace: float) -> None:
        self._argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), variable,
                      str(grace)]
        self._lock = threading.Lock()
        self._listed: dict[str, int] = {}  # token -> process group, as the watcher has them
        self._socket: socket.socket | None = None  # our end of the watcher's stdin
        self._process: subprocess.Popen[bytes] | None = None  # (kept: no ResourceWarning)
        self._starts = 0
        if hasattr(os, "register_at_fork"):  # a forked child keeps no watcher alive
            os.register_at_fork(after_in_child=self._forget)

    def add(self, token: str, pgid: int) -> None:
        """The step with ``token`` has started, its processes in group ``pgid``; or
        ``pgid`` 0: it is about to start (its processes known by their token only)."""
        with self._lock:
            self._listed[token] = pgid
            self._tell(f"+{token} {pgid}\n")

    def drop(self, token: str) -> None:
        """The step with ``token`` has ended, its processes killed."""
        with self._lock:
            if self._listed.pop(token, None) is not None:
                self._tell(f"-{token}\n")

    def _tell(self, line: str) -> None:
        if self._socket is None:
            self._start()
            return
        try:  # (a socket, not a pipe: no SIGPIPE, should the process not ignore it)
            self._socket.send(line.encode(), _NO_SIGNAL)
        except BlockingIOError:  # it stopped reading (SIGSTOP): the line is lost
            pass
        except OSError:  # it is gone (killed): a new one gets the steps running now
            self._socket.close()
            self._socket = None
            self._start()

    def _start(self) -> None:
        """Start a watcher, told every step listed (the line being told among them)."""
        if not _POSIX or not sys.executable or self._starts >= _STARTS:
            return  # (no watcher: steps are killed with their step or run only)
        self._starts += 1
        if self._process is not None:
            self._process.poll()  # (a watcher that died: reaped)
        ours, its = socket.socketpair()  # (close-on-exec: no step inherits them)
        try:
            self._process = subprocess.Popen(
                self._argv, stdin=its.fileno(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)
        except OSError:  # no Python to start
            ours.close()
            self._starts = _STARTS
            return
        finally:
            its.close()
        ours.setblocking(False)
        self._socket = ours
        listing = "".join(f"+{token} {pgid}\n" for token, pgid in self._listed.items())
        with contextlib.suppress(OSError):  # (a listing past the buffer: what fits is told)
            ours.send(listing.encode(), _NO_SIGNAL)

    def _forget(self) -> None:
        """In a forked child: close its copy of the socket, which would keep the
        parent's watcher waiting after the parent ended; the child's own steps start a
        watcher of their own."""
        if self._socket is not None:
            self._socket.close()  # (no shutdown: the parent's end stays open)
        self._socket = None
        self._process = None
        self._starts = 0
        self._listed = {}
        self._lock = threading.Lock()


# -- the watcher process ----------------------------------------------------------------
def main() -> None:
    """Read the steps running until the input ends, then kill those still listed."""
    variable, grace = sys.argv[1], float(sys.argv[2])
    for number in (signal.SIGINT, signal.SIGHUP):  # (a terminal's signals are the run's)
        signal.signal(number, signal.SIG_IGN)
    listed = _read_until_the_end(sys.stdin.buffer)
    if listed:
        marks = [f"{variable}={token}".encode() for token in listed]
        _kill_groups([pgid for pgid in listed.values() if pgid], grace)  # (0: not known)
        _kill_tagged(marks)
        if 0 in listed.values():  # a process starting then has the token once it runs
            time.sleep(grace)     # its program (exec): looked for again after a while
            _kill_tagged(marks)


def _read_until_the_end(stream: object) -> dict[str, int]:
    listed: dict[str, int] = {}
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode().strip()
        if line.startswith("+") and " " in line:
            token, pgid = line[1:].split(" ", 1)
            listed[token] = int(pgid)
        elif line.startswith("-"):
            listed.pop(line[1:], None)
    return listed


def _kill_groups(groups: list[int], grace: float) -> None:
    """SIGTERM the groups, and SIGKILL those still there after ``grace`` seconds."""
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_signal_groups([g], 0) for g in groups):
        time.sleep(0.01)
    _signal_groups(groups, signal.SIGKILL)


def _signal_groups(groups: list[int], number: int) -> bool:
    """Send ``number`` to each group; whether one of them was there."""
    there = False
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, number)
            there = True
    return there


def _kill_tagged(marks: list[bytes]) -> None:
    """SIGKILL every process whose environment holds one of the marks, round after round
    until none is found (Linux: elsewhere there is no ``/proc`` to read)."""
    killed: set[int] = set()
    for _ in range(_ROUNDS):
        found = [pid for pid in _tagged(marks) if pid not in killed]
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(found)


def _tagged(marks: list[bytes]) -> list[int]:
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:
                entries = file.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if any(mark in entries for mark in marks):
            found.append(pid)
    return found


if __name__ == "__main__":
    main()
