"""A step's processes die with the process that started them, however it ends (POSIX).

A step's process group is killed when the step ends, by the process that runs it (a
notebook kernel, ``dagnb run``). When that process ends first, nothing of it is left
to do so: a kernel restarted (``SIGKILL``, or a shutdown during a ``--background``
run), ``dagnb run`` killed. The step's processes, in sessions of their own, would run
on, re-parented to init.

So a small watcher process is started before the first step process, in a session of its
own (a kill of the kernel's process group does not reach it), without the token variable
(in a ``dagnb run`` a step started, it would die with that step's processes, before it
killed the run's own). Its stdin is one end of a socket pair whose other end only this
process holds (close-on-exec: no step inherits it; a socket, not a pipe, so that a dead
watcher is an error here, never a SIGPIPE).
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
An in-process Python step has no process of its own: while one runs, the processes it
starts carry a token (``children_tagged`` in :mod:`dagnb.executors.reaper`), held in
memory this process shares with the watcher (a ``memfd``, Linux: where tokens are
looked for), which reads it as its input ends. That memory is the variable's entry of
the C environment itself (``NAME=token``, ``putenv`` once), which a child inherits:
one write gives both the token. Not a line: a Python step costs a few µs, and a line,
which wakes the watcher, 15 µs where both share a busy CPU. A child forked then and not
exec'd (``multiprocessing``) has the environment this process was started with in
``/proc``: it tells the watcher its pid, start time and that token itself as it is
forked (:meth:`Watcher._tell_forked`; what it forks in turn is not told).
A group listed when this process was killed could, in principle, have ended just then
and its number been handed to a new group by the time the watcher kills it; pids are
handed out in increasing order, so that takes a wrap-around of ``pid_max`` in that
moment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mmap
    from collections.abc import Iterator

__all__ = ["Watcher", "main"]

_POSIX = os.name == "posix"
_ROUNDS = 50  # token-kill rounds at most (a process forking faster than that escapes)
_STARTS = 8  # watchers started at most: past that, one that dies at once is not started again
_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_HELD = 32  # bytes of the in-process steps' token (24) the shared entry has room for
_LINUX = sys.platform.startswith("linux")
# a watcher's start failing so is tried again later (no Python to start is for good)
_FOR_NOW = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN}


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
        self._board: mmap.mmap | None = None  # NAME=token, shared with the watcher
        self._board_fd = -1
        self._address = 0  # the board's, as an entry of the C environment
        self._pinned: list[Any] = []  # the boards' addresses taken: never unmapped
        self._value = len(variable) + 1  # where the token starts in it
        # the token held, in this process's own memory: a child forked finds there the
        # one held as it was forked (the board, shared, may hold the next run's by then)
        self._forked_with = b""
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

    def entry(self) -> int:
        """The address of ``NAME=token``, the entry of the C environment that
        :meth:`hold` writes the token in, in memory shared with the watcher (one started
        if none runs); 0 where there is none (not Linux)."""
        with self._lock:
            if self._socket is None:
                self._start()
            return self._address if self._socket is not None else 0  # (none: no watcher
            #                                    holds it; a later run starts one again)

    def hold(self, token: bytes) -> None:
        """``token`` (24 bytes) is that of the in-process steps running now, their
        processes known by it alone; b"": none runs (the entry's value then empty)."""
        board, start = self._board, self._value
        self._forked_with = token if board is not None else b""
        if board is not None:
            if token:
                board[start:start + len(token)] = token
            else:
                board[start] = 0

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
        if self._process is not None:
            self._process.poll()  # (a watcher that died: reaped)
        if self._board is None:
            self._open_board()
        board = () if self._board is None else (self._board_fd,)
        try:
            ours, its = socket.socketpair()  # (close-on-exec: no step inherits them)
        except OSError:  # no descriptor left (EMFILE): none now, the next step tries
            return
        self._starts += 1
        try:
            self._process = subprocess.Popen(
                [*self._argv, *map(str, board)], stdin=its.fileno(), pass_fds=board,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                start_new_session=True, env=self._environment())
        except OSError as error:  # no Python to start, or not now (EMFILE, ENOMEM)
            ours.close()
            if error.errno not in _FOR_NOW:
                self._starts = _STARTS
            return
        finally:
            its.close()
        ours.setblocking(False)
        self._socket = ours
        listing = "".join(f"+{token} {pgid}\n" for token, pgid in self._listed.items())
        with contextlib.suppress(OSError):  # (a listing past the buffer: what fits is told)
            ours.send(listing.encode(), _NO_SIGNAL)

    def _environment(self) -> dict[bytes, bytes]:
        """This process's environment less the token variable: a watcher carrying the
        token of a step this process runs in (a ``dagnb run`` a step started) would be
        killed with that step's processes, before it kills this process's."""
        variable = os.fsencode(self._argv[4])
        return {name: value for name, value in os.environb.items() if name != variable}

    def _open_board(self) -> None:
        """The memory shared with every watcher this process starts (Linux), holding
        ``NAME=`` and room for a token."""
        if not _LINUX or not hasattr(os, "memfd_create"):
            return
        import ctypes
        import mmap

        size = self._value + _HELD + 1  # (a NUL after the longest token)
        try:
            descriptor = os.memfd_create("dagnb-watcher", os.MFD_CLOEXEC)
        except OSError:
            return
        try:
            os.ftruncate(descriptor, size)
            board = mmap.mmap(descriptor, size)
        except OSError:
            os.close(descriptor)
            return
        board[:self._value] = self._argv[4].encode() + b"="
        self._board, self._board_fd = board, descriptor
        # kept mapped for good: the C environment may point there (a forked child's too)
        self._pinned.append(ctypes.c_char.from_buffer(board))
        self._address = ctypes.addressof(self._pinned[-1])

    def _tell_forked(self, told: socket.socket) -> None:
        """In a child forked while an in-process run's token is held (``multiprocessing``
        in a step): its ``/proc`` environment is the parent's as it started, without
        the token. So the parent's watcher is told it by its pid and start time (not
        another process given its pid since), with the token it is to die with: the one
        held as it was forked (the board, shared, may hold the next run's by now)."""
        token = self._forked_with
        if not token:
            return
        try:
            with open("/proc/self/stat", "rb") as file:
                started = _start_time(file.read())
            told.send(b"*%d %s %s\n" % (os.getpid(), started, token), _NO_SIGNAL)
        except (OSError, IndexError):  # (no /proc: not Linux, where nothing is held)
            pass

    def _forget(self) -> None:
        """In a forked child: close its copy of the socket, which would keep the
        parent's watcher waiting after the parent ended; the child's own steps start a
        watcher of their own."""
        if self._socket is not None:
            self._tell_forked(self._socket)
            self._socket.close()  # (no shutdown: the parent's end stays open)
        self._socket = None
        self._process = None
        self._starts = 0
        self._listed = {}
        self._lock = threading.Lock()
        # the parent's board, not to write: left mapped (the environment may point there)
        if self._board is not None:
            os.close(self._board_fd)
            self._board, self._board_fd, self._address = None, -1, 0


# -- the watcher process ----------------------------------------------------------------
def main() -> None:
    """Read the steps running until the input ends, then kill those still listed."""
    variable, grace = sys.argv[1], float(sys.argv[2])
    for number in (signal.SIGINT, signal.SIGHUP):  # (a terminal's signals are the run's)
        signal.signal(number, signal.SIG_IGN)
    listed, forked = _read_until_the_end(sys.stdin.buffer)
    held = ""
    if len(sys.argv) > 3:  # the in-process steps' token, if one ran as the input ended
        held = _held(int(sys.argv[3]))
        if held:
            listed[held] = 0
    if listed:
        marks = [f"{variable}={token}".encode() for token in listed]
        _kill_groups([pgid for pgid in listed.values() if pgid], grace)  # (0: not known)
        _kill_forked({pid: started for pid, (started, token) in forked.items()
                      if held and token == held})  # (an ended run's: left alone)
        _kill_tagged(marks)
        if 0 in listed.values():  # a process starting then has the token once it runs
            time.sleep(grace)     # its program (exec): looked for again after a while
            _kill_tagged(marks)


def _read_until_the_end(stream: object) -> tuple[dict[str, int], dict[int, tuple[str, str]]]:
    """The steps listed (token -> group), and the children forked while a token was
    held (pid -> start time, token)."""
    listed: dict[str, int] = {}
    forked: dict[int, tuple[str, str]] = {}
    for raw in _lines(stream):
        line = raw.decode().strip()
        if line.startswith("+") and " " in line:
            token, pgid = line[1:].split(" ", 1)
            listed[token] = int(pgid)
        elif line.startswith("-"):
            listed.pop(line[1:], None)
        elif line.startswith("*") and line.count(" ") == 2:
            pid, started, token = line[1:].split(" ")
            forked[int(pid)] = (started, token)
    return listed, forked


# How long the watcher lets lines gather between two reads. Read as each came, every
# step woke it three times (its start, its group, its end): two context switches and
# its Python each, on the CPUs the steps share. A sender's line then lands in a socket
# nobody waits on, and the end of the input is seen at most this much later (a step's
# kill grace is seconds).
_GATHER_S = 0.02


def _lines(stream: object) -> Iterator[bytes]:
    """The lines of ``stream`` until it ends, read in chunks ``_GATHER_S`` apart (a
    stream with no descriptor, a test's, line by line)."""
    try:
        descriptor = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        yield from stream  # type: ignore[attr-defined]
        return
    pending = b""
    while chunk := os.read(descriptor, 1 << 16):
        whole, _, pending = (pending + chunk).rpartition(b"\n")
        if whole:
            yield from whole.split(b"\n")
        time.sleep(_GATHER_S)
    if pending:
        yield pending


def _start_time(stat: bytes) -> bytes:
    """A process's start time (clock ticks after boot) in its ``/proc/<pid>/stat``."""
    return stat.rsplit(b")", 1)[1].split()[19]


def _kill_forked(forked: dict[int, str]) -> None:
    """SIGKILL the processes forked while the token held now was, each if it is still
    the process that was forked (its start time)."""
    for pid, started in forked.items():
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                same = _start_time(file.read()).decode() == started
            if same:
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):  # gone
            continue


def _held(board: int) -> str:
    """The token in the shared entry ``NAME=token`` ("" for none)."""
    try:
        entry = os.pread(board, 4096, 0)
    except OSError:
        return ""
    return entry.partition(b"=")[2].split(b"\0", 1)[0].decode("ascii", "replace")


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
    me = os.getpid()  # (started while an in-process step's token was set: it carries it)
    for pid in pids:
        if pid == me:
            continue
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
