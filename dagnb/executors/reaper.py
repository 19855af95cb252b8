"""No process outlives its step: the processes a step left behind are found and killed.

Each local step runs in a process group of its own, killed when the step ends. A process
can leave that group: ``setsid``, a double-forking daemon. On Linux two more things
catch those:

- **A token in the environment.** Every step process gets ``DAGNB_STEP_TOKEN=<random>``
  in its environment, which its descendants inherit. When the step ends, every process
  whose ``/proc/<pid>/environ`` carries the token is killed (readable for processes of
  the same user, and for all when dagnb runs as root), until none is left (a process
  forking meanwhile only makes another round). A process that rewrites its environment
  (``env -i``, ``sudo``) escapes it.
- **A child subreaper.** While a local step process runs, this process is a child
  subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): an orphan of a step is reparented here,
  not to init, so that what is killed is reaped here. It is switched off again once no
  step process runs, since in a notebook kernel it would make every orphan of the
  kernel's own children (``!server &``) the kernel's to reap.

Reaping only what is surely a step's: the members of a step's process group
(``waitpid(-pgid)``; no process of ours can join that group) and the tagged processes
killed here. A step's child that started its own session and then ended by itself is
left a zombie of this process (an entry in the process table, not a running process)
until this process ends: it cannot be told apart from a child that code in this process
started with ``start_new_session`` and will wait for itself.

When this process ends before its steps (a notebook kernel restarted, ``dagnb run``
killed), a watcher process kills what they left: see :mod:`dagnb.executors.watcher`.

cgroups would contain a step without a token, but need a delegated, writable cgroup
(rarely there for a user, in a notebook or in CI containers); they are not used. Not on
Linux: the group kill only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from dagnb.cache.forks import ForkSafeCount
from dagnb.executors.watcher import Watcher

__all__ = [
    "KILL_GRACE",
    "TOKEN_VARIABLE",
    "StepProcesses",
    "TaggedFromFirstCall",
    "children_tagged",
    "group_alive",
    "kill_everything",
    "kill_tagged",
    "open_for_writing",
    "pipe_holders",
    "process_name",
    "running_step",
    "steps_run",
    "sweep",
]

TOKEN_VARIABLE = "DAGNB_STEP_TOKEN"
KILL_GRACE = 0.3  # seconds between a step's SIGTERM and SIGKILL
_PR_SET_CHILD_SUBREAPER = 36
_ROUNDS = 50  # kill rounds before giving up on a process that forks faster than that
_REAP_WAIT = 1.0  # seconds a killed process may take to become a zombie we can reap
_RECENT = 1.0  # seconds: a step younger than this has its processes looked for by pid
_PROBE = 24  # up to this many new pids are tried one by one instead of listing /proc
_LINUX = sys.platform.startswith("linux")


class _Steps:
    """The step processes running now, by token, and whether this process is a child
    subreaper for them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, StepProcesses] = {}
        self.subreaper = False


# the run the calling task's steps belong to (dagnb's loop sets it as it starts a run's
# task): a Ctrl-C on one run kills that run's steps, not another run's
steps_run: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "dagnb_steps_run", default=None)

_steps = _Steps()  # per OS process, not per dagnb context: the subreaper flag is the process's
_watcher = Watcher(TOKEN_VARIABLE, KILL_GRACE)  # kills what is listed if this process dies


def new_token() -> str:
    """A token for one step attempt's processes: unique, not secret (a step can read
    its own), so a count from a random start (no ``getrandom`` per step)."""
    return f"{next(_TOKENS.count) & _TOKEN_MASK:024x}"


_TOKENS = ForkSafeCount(96)  # (a forked child's tokens are not its parent's)
_TOKEN_MASK = (1 << 96) - 1


class StepProcesses:
    """One step attempt's processes: its token, its group once started (its leader's
    pid), the pids killed for carrying the token (to reap), and the run it is of."""

    __slots__ = ("killed", "pgid", "run", "started", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.run = steps_run.get()
        self.pgid: int | None = None
        self.started = time.monotonic()
        self.killed: set[int] = set()

    def announce(self) -> None:
        """The step's main process is about to start: the watcher is told its token
        first (started now if none runs), so that it kills what carries the token should
        this process die before :meth:`set_group` tells it the group."""
        _watcher.add(self.token, 0)

    def set_group(self, pgid: int) -> None:
        """The step's main process has started, leading group ``pgid``: the watcher
        kills that group too should this process die."""
        self.pgid = pgid
        _watcher.add(self.token, pgid)

    def forget_group(self) -> None:
        """The step's processes are killed: the watcher need not kill them again."""
        _watcher.drop(self.token)

    def kill_escaped(self) -> None:
        """SIGKILL every process with the step's token, in its group or not."""
        if self.pgid is None:  # nothing started
            return
        recent = time.monotonic() - self.started < _RECENT
        self.killed |= kill_tagged(
            [self.token], after=self.pgid if recent else None, skip=_other_leaders(self)
        )

    def left_in_group(self) -> list[int]:
        """The live processes (no zombies) of the step's group: those its main process
        left running. Only pids handed out after its leader's are looked at, as
        :meth:`kill_escaped` does."""
        if self.pgid is None or not _LINUX:
            return []
        recent = time.monotonic() - self.started < _RECENT
        return [pid for pid in _candidates(self.pgid if recent else None)
                if _live_member(pid, self.pgid)]


def _other_leaders(step: StepProcesses) -> set[int]:
    """The main processes of the other steps running now: each carries its own step's
    token, so their environments need not be read (with 8 steps at once, most of the
    pids handed out since a step started are theirs)."""
    with _steps.lock:
        return {s.pgid for s in _steps.running.values() if s is not step and s.pgid}


@contextlib.contextmanager
def running_step() -> Iterator[StepProcesses]:
    """Count a step's processes as running for the block (start them inside it and set
    ``pgid``): this process adopts orphans meanwhile, and :func:`kill_everything` kills
    them."""
    step = StepProcesses(new_token())
    with _steps.lock:
        _steps.running[step.token] = step
        _set_subreaper(True)
    try:
        yield step
    finally:
        step.forget_group()
        with _steps.lock:
            _steps.running.pop(step.token, None)
            if not _steps.running:
                _set_subreaper(False)


class _ChildrenTagged:
    """``with children_tagged:`` around a run with in-process Python steps (once a run:
    a step's cost 2.5 µs): the processes started meanwhile carry a token in their
    environment, which the watcher holds while such a run runs, and kills should this
    process die first (Linux: where a token is looked for). One token for the runs going
    at once (they share the environment), a new one each time none ran; between runs the
    variable is empty (C environment) or unset (``os.environ``). So the processes the
    user starts between runs (a notebook's ``!server &``) carry none, and those a step
    left running on purpose are left alone once its run ended.

    In ``os.environ``'s dict (``env={**os.environ, ...}`` passes it on), and in the C
    environment a child (``subprocess.run``, ``os.system``) inherits as the watcher's
    shared entry, ``putenv`` once (:meth:`Watcher.entry`): ``os.environ[...] =`` would
    copy each new value (``setenv``: 5 µs, and the C library keeps every copy for good).
    Where the environment holds a token already, of a step of another dagnb that this
    process runs in, that one stays: what a step starts is that step's."""

    __slots__ = ()
    lock = threading.Lock()
    count = 0  # in-process steps running now
    token: bytes | None = None  # the token set in os.environ's dict (None: none of ours)
    placed = False  # the watcher's entry is in the C environment

    def __enter__(self) -> None:
        if not _LINUX:
            return
        cls = _ChildrenTagged
        with cls.lock:
            cls.count += 1
            if cls.count > 1:
                return
            try:
                _tag_children()
            except BaseException:  # (no watcher to start: EMFILE) not counted, or no
                cls.count -= 1     # later run would be tagged, and none held
                _watcher.hold(b"")
                raise

    def __exit__(self, *exc_info: object) -> None:
        if not _LINUX:
            return
        cls = _ChildrenTagged
        with cls.lock:
            cls.count -= 1
            if cls.count or cls.token is None:
                return
            _watcher.hold(b"")
            environ = getattr(os.environ, "_data", None)
            value = environ.get(_TOKEN_KEY) if type(environ) is dict else None
            if value is cls.token:
                del environ[_TOKEN_KEY]
            elif value == cls.token:  # set again as it was (os.environ restored from a
                del os.environ[TOKEN_VARIABLE]  # copy: mock.patch.dict): a copy of the
                cls.placed = False  # token, setenv's in our entry's place; unset with it
            else:  # the step's code set or removed the variable: its value kept, the
                cls.placed = False  # entry placed again (setenv or unsetenv took it out)
            cls.token = None

    @staticmethod
    def forget() -> None:  # (a forked child's watcher is its own, once started)
        cls = _ChildrenTagged
        cls.lock, cls.count, cls.token, cls.placed = threading.Lock(), 0, None, False


def _tag_children() -> None:
    """Hold a new token, in the environment's variable (the first run going)."""
    cls = _ChildrenTagged
    environ = getattr(os.environ, "_data", None)  # (not a test's mock of it)
    if type(environ) is not dict:
        return
    if environ.get(_TOKEN_KEY):  # another's (its setenv took our entry out)
        cls.placed = False
        return
    if not cls.placed and not _place_entry():
        return
    token = b"%024x" % (next(_TOKENS.count) & _TOKEN_MASK)
    _watcher.hold(token)
    environ[_TOKEN_KEY] = cls.token = token


def _place_entry() -> bool:
    """Put the watcher's entry in the C environment (a watcher started if none runs);
    whether it is there. (Before any token is held: a watcher started now carries none.)"""
    address = _watcher.entry()
    if address:
        _libc().putenv(ctypes.c_void_p(address))
        _ChildrenTagged.placed = True
    return _ChildrenTagged.placed


_TOKEN_KEY = TOKEN_VARIABLE.encode()
children_tagged = _ChildrenTagged()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ChildrenTagged.forget)


class TaggedFromFirstCall:
    """``with`` around a run: :data:`children_tagged` entered at its first :meth:`need`
    (as its first Python step is called, not served from the cache) and left as the run
    ends. A run that calls none, fully cached, starts no watcher (a process of its own:
    10 ms of CPU, which a fresh ``dagnb run`` of a cached workflow paid for nothing)."""

    __slots__ = ("_entered",)

    def __init__(self) -> None:
        self._entered = False

    def need(self) -> None:
        if not self._entered:
            children_tagged.__enter__()
            self._entered = True

    def __enter__(self) -> TaggedFromFirstCall:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._entered:
            self._entered = False
            children_tagged.__exit__(*exc_info)


def _set_subreaper(on: bool) -> None:
    """Switch the child subreaper on or off (Linux; a no-op elsewhere or if refused)."""
    if not _LINUX or _steps.subreaper == on:
        return
    with contextlib.suppress(OSError, AttributeError):
        if _prctl()(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0:
            _steps.subreaper = on


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """The C library, its calls made holding the GIL (``putenv`` takes no time: a
    release would let another thread in, and the step wait for it to give it back)."""
    return ctypes.PyDLL(None)


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    return ctypes.CDLL(None, use_errno=True).prctl


async def sweep(step: StepProcesses, *, leader_reaped: bool) -> None:
    """Kill every process the step left, then reap what is ours to reap.

    The group's leader (the step's main process) is asyncio's to reap: until it has
    been, the group is not waited for here, or asyncio would lose its exit status.
    """
    step.kill_escaped()
    if step.pgid is not None:
        _kill_group(step.pgid)
    await _reap(step.pgid if leader_reaped else None, step.killed)


def kill_everything(run: object | None = None) -> None:
    """SIGKILL every running step's processes at once, only those of ``run`` if given
    (a second Ctrl-C): no grace, no reaping (the loop's own cleanup of each step does
    that if it still runs)."""
    with _steps.lock:
        steps = [step for step in _steps.running.values() if run is None or step.run is run]
    for step in steps:
        if step.pgid is not None:
            _kill_group(step.pgid)
    kill_tagged(step.token for step in steps)


def kill_tagged(
    tokens: Iterable[str], *, after: int | None = None, skip: Collection[int] = ()
) -> set[int]:
    """SIGKILL every process whose environment carries one of the tokens, round after
    round until none is found; returns the pids killed.

    ``after``: only processes started after that pid was, which saves reading every
    process's environment (pids are handed out in increasing order, wrapping at
    ``pid_max``; so only for a step younger than ``_RECENT`` seconds, which cannot have
    seen the pids wrap twice).
    ``skip``: pids known to carry none of the tokens.
    """
    marks = [f"{TOKEN_VARIABLE}={token}\0".encode() for token in tokens]
    killed: set[int] = set()
    if not marks or not _LINUX:
        return killed
    for _ in range(_ROUNDS):
        candidates = (pid for pid in _candidates(after) if pid not in skip)
        found = [pid for pid in _tagged(marks, candidates) if pid not in killed]
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
    return killed


def _candidates(after: int | None) -> Iterable[int]:
    """The pids that may carry a token: those handed out after ``after`` (up to the last
    one handed out), else every process's."""
    last = _last_pid()
    if after is not None and last is not None:
        if last >= after and last - after <= _PROBE:  # few: try each rather than list all
            return range(after + 1, last + 1)
        if last == after:
            return ()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return ()
    if after is None or last is None:
        return pids
    if last >= after:
        return [pid for pid in pids if after < pid <= last]
    return [pid for pid in pids if pid > after or pid <= last]  # wrapped around pid_max


def _last_pid() -> int | None:
    try:
        return int(os.pread(_last_pid_file(), 32, 0))
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _last_pid_file() -> int:
    """Kept open: read once per step, and reading it again from offset 0 gives the
    current value (a tenth of the cost of opening it each time)."""
    return os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY | os.O_CLOEXEC)


def _tagged(marks: list[bytes], pids: Iterable[int]) -> list[int]:
    """Live processes whose environment holds one of the marks (zombies have none)."""
    found: list[int] = []
    me = os.getpid()
    for pid in pids:
        if pid == me:
            continue
        try:  # (no file object: most pids probed are gone, or other steps' own)
            environ = _environ_of(pid)
        except OSError:  # gone, never was, or another user's
            continue
        if any(b"\0" + mark in environ for mark in marks):
            found.append(pid)
    return found


def _environ_of(pid: int) -> bytes:
    """The environment of process ``pid`` as ``/proc`` gives it, a NUL before it."""
    descriptor = os.open(f"/proc/{pid}/environ", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [b"\0"]
        while chunk := os.read(descriptor, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(descriptor)
    return b"".join(chunks)


def _live_member(pid: int, pgid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie) of group ``pgid``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    state, _, group = stat.rsplit(b")", 1)[1].split()[:3]
    return state != b"Z" and int(group) == pgid


def open_for_writing(pids: Iterable[int], folder: str) -> list[tuple[int, str]]:
    """The files under ``folder`` (a real path) that the processes ``pids`` hold open
    for writing, as (pid, path) pairs (Linux; none elsewhere)."""
    prefix = folder.rstrip(os.sep) + os.sep
    found: list[tuple[int, str]] = []
    for pid in pids:
        for fd, target in _open_files(pid):
            if target.startswith(prefix) and _writable(pid, fd):
                found.append((pid, target))
    return found


def pipe_holders(fd: int) -> list[int]:
    """The other processes that hold the pipe ``fd`` is an end of (Linux: every
    process's open files are looked at, those of other users but root's unreadable)."""
    try:
        mark = f"pipe:[{os.fstat(fd).st_ino}]"
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    me = os.getpid()
    return [pid for pid in pids
            if pid != me and any(target == mark for _, target in _open_files(pid))]


def process_name(pid: int) -> str:
    """The command name of process ``pid`` ("" if gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as file:
            return file.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _open_files(pid: int) -> Iterator[tuple[str, str]]:
    """The open descriptors of process ``pid`` and what each points to."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or another user's
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            yield fd, os.readlink(f"/proc/{pid}/fd/{fd}")


def _writable(pid: int, fd: str) -> bool:
    """Whether descriptor ``fd`` of process ``pid`` was opened for writing."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as file:
            info = file.read()
    except OSError:
        return False
    for line in info.splitlines():
        if line.startswith(b"flags:"):
            return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _reap(pgid: int | None, killed: set[int]) -> None:
    """Wait (briefly) for the step's group and the killed processes to be reaped: ours
    by ``waitpid`` here, the others by their parents."""
    pending = set(killed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _REAP_WAIT
    while True:
        if pgid is not None:
            _reap_group(pgid)
        pending = {pid for pid in pending if not _reaped(pid)}
        group_left = pgid is not None and group_alive(pgid)
        if (not pending and not group_left) or loop.time() > deadline:
            return
        await asyncio.sleep(0.005)


def _reap_group(pgid: int) -> None:
    """Reap the group's members that are zombies of this process."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass


def group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` has a member still (a zombie counts)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reaped(pid: int) -> bool:
    """True once ``pid`` is gone; reaps it if it is a zombie child of this process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return True
    state, ppid = stat.rsplit(b")", 1)[1].split()[:2]
    if state == b"Z" and int(ppid) == os.getpid():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return True
    return state == b"Z"  # another's zombie: its parent reaps it
