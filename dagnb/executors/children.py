"""The child processes a plain Python step started, stopped when the step is (Linux).

A plain Python step runs inline on dagnb's loop thread, and an interrupt (a cancel, a
timeout, the kernel's stop button) lands only between two bytecodes
(:mod:`dagnb.executors.loop`): in a wait for a child (``subprocess.run``,
``os.system``) it lands when the child ends, and the run, and the next notebook cell,
wait until then. So the children the thread started during the interrupted call are
stopped as a shell step's group is: SIGTERM, then SIGKILL after the same grace. The
wait returns, the interrupt lands and the step ends as cancelled or timed out.

Linux lists a thread's children in ``/proc/self/task/<tid>/children``. The list is read
as a call begins, from a file kept open; the children listed then (a server an earlier
step left running on purpose) are left alone. The ``pread`` cost a chain of no-op steps
3 to 4 µs a step (a tenth of each), so a listing is used again while no code could have
started a child since it was read: the same loop callback runs (the same turn of the
loop, :class:`~dagnb.executors.wakeup.EventfdLoop`, and the same task: no other task ran
meanwhile), no event listener was called, and each call since returned within
``SPAWN_FLOOR`` (starting a process takes longer).

Stopped with the new ones: their descendants (``sh -c`` started them; one holding the
output pipe keeps ``subprocess.run`` reading), and the group of one that leads its own
(``start_new_session``), never the kernel's group.
Where that file is missing (not Linux, or a kernel without ``CONFIG_PROC_CHILDREN``),
nothing is stopped: the step ends when its call returns, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import weakref
from typing import NamedTuple

from dagnb.executors.reaper import KILL_GRACE

__all__ = ["SPAWN_FLOOR", "listing_stale", "snapshot", "started_since", "stop"]

_LIMIT = 1 << 16  # bytes of a listing: more (some 8,000 children) is not read, nor stopped
# s: no call returns sooner having started a process: Python's os.posix_spawn waits for
# the child's exec, 157 µs at best on the 2-core machine (fork: 265), some 40 µs on fast
# hardware; a no-op step's call takes 1 µs
SPAWN_FLOOR = 20e-6


class _Listing:
    """The children file of the thread whose calls are snapshot (dagnb's loop thread),
    kept open: read again from its start, it lists the children of that moment."""

    thread: int | None = None
    fd = -1
    missing = not sys.platform.startswith("linux")
    # the last listing read, and the loop callback it was read in: the loop's turn, and
    # the task it stepped (weakly: a task kept would keep its run's results)
    kept: bytes | None = None
    turn: int | None = None
    task: weakref.ref[object] | None = None


def snapshot(thread: int, turn: int | None = None, task: object = None) -> bytes | None:
    """The children of ``thread`` (its native id) now, as listed (parsed only if the call
    is stopped); None where they cannot be listed. The loop callback running now, its
    ``turn`` and ``task`` (None: unknown), lets the listing read last in it serve."""
    if _Listing.thread == thread:
        kept = _Listing.task  # (a chain of quick steps: the listing kept serves)
        if turn is not None and turn == _Listing.turn and kept is not None and kept() is task:
            return _Listing.kept
        try:
            listing = os.pread(_Listing.fd, _LIMIT, 0)
        except OSError:  # the step's code closed it (os.closerange)
            _forget()
        else:
            return _kept(listing if len(listing) < _LIMIT else None, turn, task)
    return _kept(_opened_snapshot(thread), turn, task)


def _kept(listing: bytes | None, turn: int | None, task: object) -> bytes | None:
    _Listing.kept = listing
    _Listing.turn, _Listing.task = (None, None) if turn is None else (turn, weakref.ref(task))
    return listing


def listing_stale() -> None:
    """Code that may have started processes ran on the loop thread (a call that lasted
    ``SPAWN_FLOOR`` or more, an event listener, which may be the user's): the next call
    reads the listing again."""
    _Listing.turn = None


def _opened_snapshot(thread: int) -> bytes | None:
    """:func:`snapshot` through a file opened now (the first call, or after a close)."""
    if _Listing.missing:
        return None
    for _ in range(2):  # (again once, through a fresh file: see _forget)
        try:
            if _Listing.thread != thread:
                _Listing.fd = os.open(f"/proc/self/task/{thread}/children",
                                      os.O_RDONLY | os.O_CLOEXEC)
                _Listing.thread = thread
            listing = os.pread(_Listing.fd, _LIMIT, 0)
        except FileNotFoundError:  # no such file on this system
            _Listing.missing = True
            return None
        except OSError:  # the step's code closed it (os.closerange)
            _forget()
            continue
        return listing if len(listing) < _LIMIT else None
    return None


def _forget() -> None:
    """Open the file again next time. The old number is not closed: if the step's code
    closed it, the number may be another file's by now."""
    _Listing.thread = _Listing.turn = None


if hasattr(os, "register_at_fork"):  # a forked child's file would list its parent's
    os.register_at_fork(after_in_child=_forget)


class _Process(NamedTuple):
    pid: int
    start: bytes  # its start time: with the pid, names the process (pids are reused)
    leader: bool  # it leads a process group of its own
    pidfd: int | None = None  # a child of this process: to reap it if its waiter does not


REAP_AFTER = 1.0  # seconds a stopped child's own waiter (Popen.wait) has to reap it


def stop(processes: list[_Process], grace: float = KILL_GRACE,
         reap_after: float = REAP_AFTER) -> None:
    """SIGTERM ``processes``, SIGKILL those still there after ``grace`` seconds, then reap
    the children among them their waiter left zombies. Blocks: run it in a thread."""
    try:
        _send(processes, signal.SIGTERM)
        deadline = time.monotonic() + grace
        running = processes
        while running and time.monotonic() < deadline:
            time.sleep(0.01)
            running = [process for process in running if _running(process)]
        _send(running, signal.SIGKILL)
        _reap_left(processes, reap_after)
    finally:
        for process in processes:
            if process.pidfd is not None:
                os.close(process.pidfd)


def _reap_left(processes: list[_Process], wait: float) -> None:
    """Reap the stopped children no one reaped within ``wait`` seconds. The call they
    were started in is interrupted: one landing in ``subprocess.Popen()`` after the fork
    leaves the child to no one, a zombie of the kernel for good. Their waiter (``Popen``
    in ``wait()``) goes first: one that finds the child reaped takes it as ended.
    Through the pidfd opened as it was found alive: never another process by its pid."""
    left = [process for process in processes if process.pidfd is not None]
    deadline = time.monotonic() + wait
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [process for process in left if _unreaped(process)]
    for process in left:
        with contextlib.suppress(ChildProcessError, OSError):  # (reaped meanwhile)
            os.waitid(os.P_PIDFD, process.pidfd, os.WEXITED | os.WNOHANG)  # type: ignore[attr-defined,arg-type]


def _unreaped(process: _Process) -> bool:
    """The child is still there (running, or a zombie its waiter has not reaped)."""
    fields = _stat(process.pid)
    return fields is not None and fields[19] == process.start


def started_since(thread: int, before: bytes) -> list[_Process]:
    """The live children the thread has and had not at ``before``, and their
    descendants, each checked to be the child of its parent still (not a reused pid):
    what :func:`stop` is handed. Read while the interrupted call is still in: read
    later, a process the thread's next step started would be among them."""
    old = set(before.split())
    if not all(pid.isdigit() for pid in old):  # the step's code closed the file, and the
        _forget()  #                               number is another file's: stop nothing
        return []
    now = _listed(f"/proc/self/task/{thread}/children") or []
    found: list[_Process] = []
    pending = [(pid, os.getpid()) for pid in now if str(pid).encode() not in old]
    while pending:
        pid, parent = pending.pop()
        fields = _stat(pid)
        if fields is None or int(fields[1]) != parent or fields[0] == b"Z":
            continue  # gone (or a zombie, as good as gone), or its pid reused
        pidfd = _pidfd(pid, fields[19]) if parent == os.getpid() else None
        found.append(_Process(pid, fields[19], int(fields[2]) == pid, pidfd))
        pending += [(child, pid) for child in _children_of(pid)]
    return found


def _pidfd(pid: int, start: bytes) -> int | None:
    """A pidfd naming the child ``pid`` that started at ``start`` (Linux 5.3+; None
    where there is none, or the pid names another process by now)."""
    try:
        pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
    fields = _stat(pid)  # (read after the open: the pidfd names this one)
    if fields is not None and fields[19] == start:
        return pidfd
    os.close(pidfd)
    return None


def _children_of(pid: int) -> list[int]:
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [child for tid in threads
            for child in _listed(f"/proc/{pid}/task/{tid}/children") or ()]


def _listed(path: str) -> list[int] | None:
    try:
        with open(path, "rb") as file:
            return [int(pid) for pid in file.read().split()]
    except (OSError, ValueError):
        return None


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the name: state, ppid, pgrp, ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _running(process: _Process) -> bool:
    fields = _stat(process.pid)
    return fields is not None and fields[19] == process.start and fields[0] != b"Z"


def _send(processes: list[_Process], sig: signal.Signals) -> None:
    for process in processes:
        if not _running(process):  # ended, and its pid perhaps another process's now
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if process.leader:  # its group: what it started there, as for a shell step
                os.killpg(process.pid, sig)
            else:  # (in the kernel's group, which is not to be killed)
                os.kill(process.pid, sig)
