"""The local executor: steps run on this machine, the embedded default.

Shell text runs with ``bash -e -o pipefail -c`` (see :mod:`dagnb.executors.shell`), an
argv list directly (its ``$DAGNB_...`` variables expanded first:
:mod:`dagnb.model.expand`), each in a new process group so
that a timeout or cancellation kills the command and everything it started. A step's
folders are made and its process started in a worker thread (both wait on the system,
not on Python), its exit is awaited through a pidfd and its output read on the loop, so
that a step costs little more than starting its process. Python
function steps run in-process on the runner's loop: coroutine functions as tasks, plain
functions called inline (a thread hop per step would cost more than a no-op step, and the
GIL gives Python code no parallelism); their prints are captured per step. A kernel
interrupt, ``run.cancel()``, the step's timeout and the run's stop an inline call as
Ctrl-C stops plain Python (:func:`dagnb.executors.loop.call_interruptibly`), and on Linux
the child processes it started, so that a wait for them returns
(:mod:`dagnb.executors.children`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from dagnb.checks import warn_user
from dagnb.errors import StepFailed, TransientError, exception_line
from dagnb.executors.base import NO_RESULT, Availability, Input, Outcome, Task
from dagnb.executors.capture import routed_output
from dagnb.executors.context import StepContext, param_copy
from dagnb.executors.loop import Interrupted, call_interruptibly, until_cancelled
from dagnb.executors.programs import start_program
from dagnb.executors.reaper import (
    KILL_GRACE,
    TOKEN_VARIABLE,
    StepProcesses,
    group_alive,
    open_for_writing,
    pipe_holders,
    process_name,
    running_step,
    sweep,
)
from dagnb.executors.shell import host_argv
from dagnb.executors.workdir import workdir_of
from dagnb.model.contract import make_step_folders
from dagnb.model.expand import OURS, expanded_argv, unset_in_script
from dagnb.model.results import PUBLISHED_AS
from dagnb.model.step import cached_per_function
from dagnb.retry.policy import classify

__all__ = ["LocalExecutor"]

_DRAIN_GRACE = 0.5  # seconds a finished step's pipes may still deliver output
_SETTLE_S = 0.25  # seconds what a step left gets to end by itself before it is judged
_CHUNK = 1 << 16


class LocalExecutor:
    """Runs steps as host processes or in-process Python calls."""

    name = "local"
    capabilities = frozenset({"shell", "argv", "python"})

    def __init__(self) -> None:
        self._noticed_image = False

    def availability(self) -> Availability:
        return Availability(True, "runs on this machine")

    async def aclose(self) -> None:
        return None

    async def execute(self, task: Task) -> Outcome:
        if task.step.services:
            raise StepFailed(
                f"step {task.step.name!r} binds services {list(task.step.services)!r}, "
                "which need the dagger executor; run it with executor='dagger'",
                step=task.step.name,
            )
        if task.step.image and not self._noticed_image:
            self._notice_image(task)
        if task.step.func is not None:
            return await _call_function(task)
        return await _run_process(task)

    def _notice_image(self, task: Task) -> None:
        """Say once per process that images do not apply here (not in a step's log,
        which the cache would keep)."""
        if not self._noticed_image:
            self._noticed_image = True
            print(
                f"dagnb: the local executor ignores images such as {task.step.image!r}; "
                "steps run on this machine (a container needs the dagger executor and a "
                "Dagger engine)",  # (in no front end's words: each names its executor so)
                file=sys.stderr,
            )


# -- processes ------------------------------------------------------------------------
async def _run_process(task: Task) -> Outcome:
    with running_step() as processes:  # see dagnb.executors.reaper
        process = _Child(await _launch(task, processes))
        try:
            return await _finish(process, task, processes)
        finally:
            await sweep(processes, leader_reaped=process.returncode is not None)


async def _launch(task: Task, processes: StepProcesses) -> subprocess.Popen[bytes]:
    """Make the step's folders and start its process, in a worker thread.

    Both wait on the system (the disk; the new process's ``exec``) for longer than
    anything else a step costs the event loop, and neither holds the GIL meanwhile: off
    the loop, they overlap with the other steps' work. A step stopped meanwhile has its
    process killed as soon as it is there.
    """
    env = _process_env(task, {TOKEN_VARIABLE: processes.token})  # escapees have it
    argv = _script_argv(task, env) if isinstance(task.step.run, str) else _argv(task, env)
    out_dir, in_dir, params_file = task.folder_texts()  # (on the loop: the run's folder made)
    folders = functools.partial(
        make_step_folders,
        task.step,
        out_dir=out_dir,
        in_dir=in_dir,
        params_file=params_file,
        inputs={name: item.path for name, item in task.inputs.items()},
    )
    start = functools.partial(
        start_program if isinstance(task.step.run, str) else subprocess.Popen,
        argv,
        bufsize=0,
        stdin=_devnull(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=workdir_of(task),
        start_new_session=True,  # its own process group, killed as one
    )
    started = _starters().submit(_make_and_start, folders, start, processes)
    try:
        return await asyncio.wrap_future(started)  # cancelled too if not begun yet
    except asyncio.CancelledError:
        started.add_done_callback(functools.partial(_abandon, processes))
        raise


def _script_argv(task: Task, env: Mapping[Any, Any]) -> list[str]:
    """The argv running the step's shell text, which reads no ``$DAGNB_`` name the step
    has not (:func:`unset_in_script`)."""
    step = task.step
    assert isinstance(step.run, str)
    if OURS in step.run:
        names = {os.fsdecode(name) for name in env}  # (POSIX: _process_env's bytes)
        if (line := unset_in_script(step.name, step.run, names)) is not None:
            raise StepFailed(line, step=step.name)
    return host_argv(step)


def _argv(task: Task, env: Mapping[Any, Any]) -> list[str]:
    """The step's argv list with dagnb's ``$DAGNB_...`` variables expanded from ``env``,
    its process's environment (:mod:`dagnb.model.expand`); such a name not there fails
    the step before it starts."""
    argv = list(task.step.run or ())
    if not any("$" in item for item in argv):
        return argv
    if env and isinstance(next(iter(env)), bytes):  # (POSIX: _process_env's bytes)
        def lookup(name: str) -> str | None:
            value = env.get(os.fsencode(name))
            return None if value is None else os.fsdecode(value)
    else:
        lookup = env.get
    try:
        return expanded_argv(task.step.name, argv, lookup)
    except ValueError as exc:  # (the item as written: no secret's value)
        raise StepFailed(str(exc), step=task.step.name) from None


def _make_and_start(
    folders: Callable[[], None], start: Callable[[], subprocess.Popen[bytes]],
    processes: StepProcesses,
) -> subprocess.Popen[bytes]:
    folders()
    processes.announce()  # (here, not on the loop: the first starts the watcher, 15 ms)
    popen = start()
    processes.set_group(popen.pid)
    return popen


def _abandon(processes: StepProcesses, started: concurrent.futures.Future[Any]) -> None:
    """The step was stopped while its process started: kill what it started, as soon as
    it has (in the thread that started it; here, if it has already). Not on the loop,
    which may be gone by then."""
    if started.cancelled() or started.exception() is not None:
        return
    popen = started.result()
    _kill_stragglers(popen.pid)
    processes.kill_escaped()
    for pipe in (popen.stdout, popen.stderr):
        pipe.close()  # type: ignore[union-attr]
    with contextlib.suppress(subprocess.TimeoutExpired):  # else subprocess reaps it later
        popen.wait(1.0)
    processes.forget_group()  # (the step ended before its process started)


@functools.lru_cache(maxsize=1)
def _starters() -> concurrent.futures.ThreadPoolExecutor:
    """Threads of their own, so that no long task in the loop's default pool delays a
    step's start."""
    return concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="dagnb-start")


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_starters.cache_clear)


@functools.lru_cache(maxsize=1)
def _devnull() -> int:
    """Every step's stdin: opened once, not once per step as ``subprocess.DEVNULL``."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


class _Child:
    """A step's main process, whose exit is awaited through a pidfd on the loop.

    asyncio's subprocesses (before Python 3.12) start a thread per process to wait for
    it, which costs more than running ``true``; a pidfd becomes readable when the
    process exits, even if a child of it keeps the output pipes open. Without pidfds
    (not Linux), a thread waits, as asyncio's would.
    """

    __slots__ = ("_exit", "_loop", "_popen", "pid")

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen, self.pid = popen, popen.pid
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_in_thread, daemon=True,
                             name="dagnb-wait-process").start()
        else:
            self._loop.add_reader(fd, self._on_pidfd, fd)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    @property
    def outputs(self) -> tuple[Any, Any]:
        return self._popen.stdout, self._popen.stderr

    async def wait(self) -> int:
        """The exit code (negative: the signal that ended it), once it has exited."""
        return await asyncio.shield(self._exit)

    def _on_pidfd(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        self._exited(_wait(self.pid))

    def _wait_in_thread(self) -> None:
        code = _wait(self.pid)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._exited, code)

    def _exited(self, code: int) -> None:
        self._popen.returncode = code  # reaped: Popen must not wait for it again
        if not self._exit.done():
            self._exit.set_result(code)


def _wait(pid: int) -> int:
    """Reap ``pid`` (it has exited, or is about to) and return its exit code."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else: asyncio says 255 too
        return 255
    return os.waitstatus_to_exitcode(status)


class _Pipe:
    """One output pipe of the step, read on the loop as data comes; complete lines go
    to the step's log, long lines are no problem."""

    __slots__ = ("_file", "_loop", "_pending", "_stream", "_task", "done")

    def __init__(self, file: Any, stream: str, task: Task) -> None:
        self._file, self._stream, self._task = file, stream, task
        self._pending: list[bytes] = []  # the line so far, in chunks: joined once
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(file.fileno(), False)
        self._loop.add_reader(file.fileno(), self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._file.fileno(), _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.let_go()
            return
        try:
            self._lines(chunk)
        except Exception as exc:  # a failing log sink fails the step, as it would inline
            self._failed(exc)

    def let_go(self) -> None:
        """Stop reading, the line so far logged: at the end of the output, or when a
        process that escaped the step still holds the pipe."""
        try:
            if rest := b"".join(self._pending):  # (a line cut off: the sink's last, if
                log = self._task.log                  # it has one, masks a secret's start)
                getattr(log, "last", log)(self._stream, rest.decode("utf-8", "replace"))
        except Exception as exc:
            self._failed(exc)
            return
        self.close()

    def _failed(self, exc: Exception) -> None:
        self.close()
        if not self.done.done():
            self.done.set_exception(exc)

    def _lines(self, chunk: bytes) -> None:
        if b"\n" not in chunk:
            self._pending.append(chunk)
            return
        lines = chunk.split(b"\n")
        lines[0] = b"".join([*self._pending, lines[0]])
        self._pending = [lines.pop()]
        for line in lines:
            self._task.log(self._stream, line.decode("utf-8", "replace"))

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        """Stop reading (at the end of the output, or when the step is stopped)."""
        if not self._file.closed:
            self._loop.remove_reader(self._file.fileno())
            self._file.close()
        if not self.done.done():
            self.done.set_result(None)


async def _finish(process: _Child, task: Task, processes: StepProcesses) -> Outcome:
    """Stream the step's output until it exits; kill its group if stopped before."""
    stdout, stderr = process.outputs
    pipes = (_Pipe(stdout, "stdout", task), _Pipe(stderr, "stderr", task))
    try:
        code = await process.wait()  # not the pipes: a background child may hold them
        cut = await _end_group(process.pid, processes, pipes, task, check_outputs=code == 0)
    except BaseException:
        await _kill_group(process)
        raise
    finally:
        for pipe in pipes:
            pipe.close()
    if cut:
        raise StepFailed(cut, step=task.step.name)
    return Outcome(exit_code=code)


async def _end_group(pgid: int, processes: StepProcesses, pipes: tuple[_Pipe, _Pipe],
                     task: Task, *, check_outputs: bool) -> str:
    """The step's main process has exited: what it left running goes too.

    A background child (``server &``, or a daemon that left the group) may still hold the
    output pipes, and would keep the step, and its timeout, waiting for an end of file
    that never comes; it gets a moment to finish writing, then its process group and
    every process with the step's token are killed, so no process outlives its step.

    A process killed so may have been writing the step's outputs (a writer started with
    ``&`` and not waited for): with ``check_outputs`` (it exited 0: a failure says its
    own), its outputs are looked at when it left any, and the failure that names the
    files cut short is returned ("" if none).
    """
    output = asyncio.gather(*(pipe.done for pipe in pipes))
    if not output.done():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(output), _DRAIN_GRACE)
    # (looked at once the pipes ended, or the grace did: most steps then left nothing,
    # one killpg(pgid, 0) says so; before, a step's pipes not yet read to their end as it
    # exited cost it a walk of its outputs and of /proc)
    left_some = check_outputs and (not output.done() or group_alive(pgid))
    watched = _OutputsWatch(task.folder_texts()[0]) if left_some else None
    if watched is not None:
        watched.note_left(await _left_after_settling(processes))  # (before they are killed)
    _kill_stragglers(pgid)
    if not output.done():
        processes.kill_escaped()
        await _drain_or_let_go(output, pipes, task)
    await output
    return watched.cut_short(task.step.name, processes.killed) if watched is not None else ""


async def _left_after_settling(processes: StepProcesses) -> list[int]:
    """The processes the step left that are still running after a moment given them to
    end by themselves: ``tee`` flushing a log, a server the step stopped without waiting
    for it, ending on its own, is no writer cut short."""
    deadline = time.monotonic() + _SETTLE_S
    left = processes.left_in_group()
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        left = processes.left_in_group()
    return left


async def _drain_or_let_go(output: asyncio.Future[Any], pipes: tuple[_Pipe, _Pipe],
                           task: Task) -> None:
    """Wait a moment for the pipes' end once all the step's processes dagnb can find
    are killed; a process that left both its group and its environment (``setsid env
    -i daemon &``) may still hold them, for as long as it lives: they are closed then,
    and the step ends, with a warning (its timeout is no longer at stake)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(output), _DRAIN_GRACE)
    if output.done():
        return
    holders = sorted({pid for pipe in pipes if not pipe.done.done()
                      for pid in pipe_holders(pipe.fileno())})
    for pipe in pipes:
        pipe.let_go()
    who = ", ".join(_named(pid) for pid in holders) or "its pid not found"
    warn_user(f"step {task.step.name!r}: a process it started ({who}) left its process "
              "group and its environment, so dagnb could not stop it, and holds the "
              "step's output still: its later lines are not kept; redirect such a "
              "process's output ('daemon > daemon.log 2>&1 &') or end it in the step")


def _named(pid: int) -> str:
    name = process_name(pid)
    return f"pid {pid}, {name}" if name else f"pid {pid}"


class _OutputsWatch:
    """The files of a step's output folder when its command exited leaving processes
    running, to tell which of them those processes wrote before they were killed."""

    __slots__ = ("_at_exit", "_folder", "_left", "_writing")

    def __init__(self, folder: str) -> None:
        self._folder = os.path.realpath(folder)
        self._at_exit = _files_in(self._folder)
        self._left: dict[int, str] = {}
        self._writing: dict[str, int] = {}

    def note_left(self, pids: list[int]) -> None:
        """The processes left running, about to be killed, and what they hold open for
        writing in the folder (a file written slowly may not change in the moment)."""
        self._left = {pid: _named(pid) for pid in pids}
        for pid, path in open_for_writing(pids, self._folder):
            self._writing.setdefault(os.path.relpath(path, self._folder), pid)

    def cut_short(self, step: str, escaped: set[int]) -> str:
        """The failure naming the outputs that changed after the command exited while a
        process it left was still running, killed now ("" if none, or if none was left
        to kill: one that ended by itself meanwhile finished its files)."""
        if not self._left and not escaped:
            return ""
        now = _files_in(self._folder)
        changed = {name for name in self._at_exit.keys() | now.keys()
                   if self._at_exit.get(name) != now.get(name)}
        # (changed, not merely held open: ``exec > "$DAGNB_OUT/all.log"; sleep 30 &``
        # passes the descriptor to a process that never writes)
        files = sorted(changed)
        if not files:
            return ""
        writers = sorted({self._writing[name] for name in files if name in self._writing})
        who = ", ".join(self._left.get(pid, f"pid {pid}")
                        for pid in writers or sorted(self._left) or sorted(escaped))
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        return (f"step {step!r}: its output {shown} was still being written by a process "
                f"it left running ({who}) when its command ended, and dagnb stopped that "
                "process with the step, so the file may be cut short and is not passed on; "
                "'wait' for it before the step ends (a server's log: write it outside "
                "$DAGNB_OUT)")


def _files_in(folder: str) -> dict[str, tuple[int, int]]:
    """Each file under ``folder`` (by its path there) with its size and mtime."""
    found: dict[str, tuple[int, int]] = {}
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found[os.path.relpath(entry.path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _process_env(task: Task, extra: Mapping[str, str]) -> dict[Any, Any]:
    """The host's environment less the secrets other steps declare, plus the step's
    variables and ``extra``, with this Python's folder first on PATH: ``python3`` in a
    step is then the interpreter (and packages) dagnb runs in, as in a notebook.

    As bytes where the system's environment is bytes (POSIX): ``os.environ`` would
    decode every variable for each step, and ``Popen`` encode it back (some 450 calls,
    a quarter of what a shell step costs this process in Python)."""
    raw = getattr(os.environ, "_data", None) if os.supports_bytes_environ else None
    if type(raw) is not dict:  # not bytes (Windows), or os.environ replaced (a test's mock)
        host = {k: v for k, v in os.environ.items() if k not in task.withheld}
        env = {**host, **task.env, **task.secrets, **extra}
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        return env
    encode = os.fsencode  # (what Popen does with text)
    env = _host_environb(raw)
    if task.withheld:
        withheld = {encode(name) for name in task.withheld}
        env = {k: v for k, v in env.items() if k not in withheld}
    mappings = (task.env, task.secrets, extra)
    try:  # (str.encode as fsencode does it, without its Python frame per name and value)
        added = {k.encode(_FS_ENCODING, _FS_ERRORS): v.encode(_FS_ENCODING, _FS_ERRORS)
                 for mapping in mappings for k, v in mapping.items()}
    except AttributeError:  # a PathLike or bytes value, as Popen takes them
        added = {encode(k): encode(v) for mapping in mappings for k, v in mapping.items()}
    env = {**env, **added}
    env[b"PATH"] = b"%s%s%s" % (_PYTHON_FOLDER, os.pathsep.encode(), env.get(b"PATH", b""))
    return env


_PYTHON_FOLDER = os.fsencode(os.path.dirname(sys.executable))
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _host_environb(now: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The dict behind ``os.environ`` (``now``, its bytes) copied, not to be changed:
    copied anew only when the environment changed since, as one comparison of two
    dicts in C."""
    global _environb
    if now != _environb:
        _environb = dict(now)
    return _environb


_environb: dict[bytes, bytes] = {}


async def _kill_group(process: _Child) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there shortly after (its
    leader may be gone already while children of the group live on)."""
    if process.returncode is not None:
        _kill_stragglers(process.pid)
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.shield(asyncio.wait_for(process.wait(), wait))
            _kill_stragglers(process.pid)
            return
        except (asyncio.TimeoutError, asyncio.CancelledError):
            continue


def _kill_stragglers(pgid: int) -> None:
    """Children that ignored SIGTERM outlive their leader; finish the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# -- Python functions -----------------------------------------------------------------
async def _call_function(task: Task) -> Outcome:
    step = task.step
    if step.workdir is not None:  # (one that is no folder fails the step; the process
        workdir_of(task)  #              keeps its own)
    if step.env and step.is_async:
        raise StepFailed(_async_env_refused(step.name), step=step.name)
    kwargs = function_arguments(step.func, task.inputs, step.params)
    try:
        with routed_output(task.log, StepContext(task), task.show):
            if step.is_async:  # (a task of its own, in a copy of this context; 3.10's
                result = await _until_cancelled_or_done(task, contextvars.copy_context().run(
                    asyncio.get_running_loop().create_task,  # create_task takes none)
                    _kept_on_the_loop(step.func(**kwargs))))  # type: ignore[arg-type]
            else:  # its env around the interruptible call: no interrupt lands in the
                saved = _set_env(step.env) if step.env else None  # restore, run however
                folder = _folder_before(task.run_id)
                try:  # the call ended (an error, a timeout, a cancel)
                    result = contextvars.copy_context().run(
                        call_interruptibly, step.func, kwargs)  # type: ignore[arg-type]
                finally:
                    if saved is not None:
                        _restore_env(saved)
                    _back_to(folder, step.name, task.run_id)
    except Interrupted:  # by a timeout or a cancel: it reaches this task now
        await until_cancelled()
        raise
    except asyncio.CancelledError:
        raise
    except _Ended as ended:  # (an async step's BaseException, carried out of its task)
        return _base_exception(task, ended.raised)
    except Exception as exc:
        failure = _failure(task, exc)
        try:
            if classify(exc) == "transient":  # a dropped connection in user code may pass
                raise TransientError(str(failure), in_step_code=True,
                                     exit_code=failure.exit_code) from exc
            raise failure from exc
        finally:  # (held here, it held its own traceback, which holds this frame: a
            del failure  # cycle, and the step's locals with it, till a full collection)
    except BaseException as exc:  # sys.exit(), the step's own KeyboardInterrupt: they
        return _base_exception(task, exc)  # end the step, not the loop all steps need
    return Outcome(exit_code=0, result=result)


def _working_folder() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # (removed from under the process: nothing to go back to)
        return None


# the run whose in-process step ended last, and the folder the process was in then: the
# next step of that run starts there (a look less a step: getcwd costs 1.2 µs here)
_last_folder: tuple[str, str | None] = ("", None)


def _folder_before(run_id: str) -> str | None:
    """The process's folder as an in-process step of ``run_id`` starts."""
    run, folder = _last_folder
    return folder if run == run_id and run_id else _working_folder()


def _back_to(folder: str | None, step: str, run_id: str) -> None:
    """Put the process back in ``folder`` if the step's call left it elsewhere, and say
    so: the steps after it would run there, and in the folder they were started in
    once it comes from the cache (a fresh cache failing a run a warm one passes)."""
    global _last_folder
    now = _working_folder()
    _last_folder = (run_id, folder if folder is not None else now)
    if folder is None or now == folder:
        return
    with contextlib.suppress(OSError):  # (gone meanwhile: the next step says where it is)
        os.chdir(folder)
        warn_user(f"step {step!r} changed the working folder to {now!r}; dagnb changed it "
                  f"back to {folder!r}, as a later step would not see it once {step!r} "
                  "comes from the cache; give paths from a folder instead of changing "
                  "to it, or change back before the step returns")


def _set_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set a plain in-process step's ``env`` in ``os.environ`` for its call, as a dask
    worker's process has it (both executors share its cache key); what each variable
    was before (None: unset), for :func:`_restore_env`.

    Safe for a plain function only: it holds the loop while it runs, so no other step
    runs meanwhile, and a shell step's environment is built on the loop (_process_env),
    not in the thread that starts its process."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    return saved


def _restore_env(saved: Mapping[str, str | None]) -> None:
    """Put back the variables :func:`_set_env` set, however the call ended."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _async_env_refused(step: str) -> str:
    """Why an async in-process step with ``env`` does not run: between its awaits the
    other steps run on the same loop, and would see its variables (a shell step started
    meanwhile would inherit them); dask runs it in a process of its own."""
    return (f"step {step!r} is an async Python step with env, which the local executor "
            "cannot set for it alone (the steps beside it on the loop would see it); make "
            "it a plain function, pass the values as params, or run it with executor='dask'")


async def _until_cancelled_or_done(task: Task, step_task: asyncio.Task[Any]) -> Any:
    """The async step's result; a cancel (its timeout, the run's stop) cancels its task
    and ends the step within KILL_GRACE, as a process gets after SIGTERM, even if the
    step's coroutine swallows the cancel."""
    try:
        return await asyncio.shield(step_task)  # a cancel reaches us, not only the step
    except asyncio.CancelledError:
        step_task.cancel()
        await asyncio.wait((step_task,), timeout=KILL_GRACE)
        # A coroutine still running here ignored the cancel. Python cannot stop it: it is
        # left to run on dagnb's loop until it returns by itself, its result or error
        # dropped (_dropped), its prints still routed to the ended step's log sink.
        if not step_task.done():  # (the runner gives a retry a folder of its own)
            task.left_running = True
        step_task.add_done_callback(_dropped)
        raise
    finally:  # (the task's error has this frame in its traceback: no cycle through this
        # name, which held the run until a full collection)
        step_task = None  # type: ignore[assignment]


def _dropped(step_task: asyncio.Task[Any]) -> None:
    """Take a left step task's outcome, so that asyncio does not log it at exit."""
    if not step_task.cancelled():
        step_task.exception()


class _Ended(Exception):
    """A BaseException an async step raised, carried out of its task as an Exception:
    asyncio lets SystemExit and KeyboardInterrupt out of the loop, which then stops."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(repr(raised))
        self.raised = raised


async def _kept_on_the_loop(step: Any) -> Any:
    try:
        return await step
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _Ended(exc) from None


def _base_exception(task: Task, exc: BaseException) -> Outcome:
    """``sys.exit()`` ends the step as it ends a script (as on dask); any other
    BaseException fails the step."""
    if isinstance(exc, SystemExit):
        return _exited(task, exc.code)
    raise _failure(task, exc) from exc


def _exited(task: Task, code: object) -> Outcome:
    """A step that called ``sys.exit(code)``: its exit status, as a process's."""
    status, message = exit_status(code)
    if message:
        task.log("stderr", message)
    return Outcome(exit_code=status)


def exit_status(code: object) -> tuple[int, str]:
    """The exit status ``sys.exit(code)`` gives a process (the low 8 bits: 256 is 0, -9
    is 247), and the line Python prints to stderr for it: a code that is no number is
    printed, with status 1 ("" for none)."""
    if code is None or isinstance(code, int):
        return int(code or 0) & 0xFF, ""
    return 1, str(code)


def ended_without_result(step: str, where: str, code: int) -> str:
    """The failure of a step whose process (``where``: "in the container") ended
    without returning, raising or sys.exit(): os._exit() or a native exit()."""
    return (f"step {step!r}: its process {where} exited with code {code} before "
            "returning a result (os._exit() or a native exit() ends it so); end the step "
            "by returning, raising or sys.exit() instead")


def function_arguments(
    func: Any, inputs: Mapping[str, Input], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for a step function: upstream results, then params.

    An upstream step without a Python result (a shell step) is passed as the Path of
    its output folder.
    """
    kwargs: dict[str, Any] = {}
    for name in parameter_names(func):
        if name in inputs:
            item = inputs[name]
            kwargs[name] = item.path if item.result is NO_RESULT else item.result
        elif name in params:  # (a copy: the function may change it in place)
            kwargs[name] = param_copy(params[name])
    return kwargs


@cached_per_function
def parameter_names(func: Any) -> tuple[str, ...]:
    """The names of ``func``'s parameters (an upstream step's, or a param's)."""
    return tuple(inspect.signature(func).parameters)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_ours(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def _shown_frames(tb: Any) -> list[traceback.FrameSummary]:
    """The frames of a traceback but those that ask to be hidden (``__tracebackhide__``,
    as pytest and IPython read it): dagnb's stand-in for ``sys.stdout``, say, which
    passes on the AttributeError of the stream it replaced (ipykernel's has no
    ``buffer``), raised in its frame; without dagnb, no frame of the user's sees it."""
    frames = traceback.extract_tb(tb)  # (with the columns of the carets)
    hidden = [_hides(frame) for frame, _ in traceback.walk_tb(tb)]
    if not any(hidden) or len(hidden) != len(frames):  # (cut by sys.tracebacklimit)
        return frames
    return [summary for summary, hide in zip(frames, hidden, strict=True) if not hide]


def _hides(frame: Any) -> bool:
    return ("__tracebackhide__" in frame.f_code.co_varnames  # (most: none, no f_locals)
            and bool(frame.f_locals.get("__tracebackhide__")))


def _is_cell_wrapper(frame: traceback.FrameSummary, inner: traceback.FrameSummary) -> bool:
    """The frame of the outer function dagnb wraps a --python cell in (it passes in the
    notebook variables the cell reassigns): the cell's own frame follows, same name."""
    return (frame.filename.startswith("<dagger-cell")
            and (inner.filename, inner.name) == (frame.filename, frame.name))


def _as_written(frames: list[traceback.FrameSummary], func: Any) -> list[Any]:
    """The frames of a --python cell's lines as the user wrote them: its last expression
    runs inside the call that displays it, which is no line of theirs (no carets then:
    their columns are the call's)."""
    written = getattr(func, "_dagnb_lines_as_written", None)
    if not written:
        return frames
    filename = func.__code__.co_filename
    return [traceback.FrameSummary(frame.filename, frame.lineno, frame.name,
                                   line=written[frame.lineno])
            if frame.filename == filename and frame.lineno in written else frame
            for frame in frames]


def _output_unreached(step: Any, exc: BaseException) -> str:
    """The failure of a --python cell whose code did not reach an assignment to one of
    its --outputs (``if flag: u = 1``): the UnboundLocalError of the ``return u`` line
    dagnb added, in the cell's words; "" for any other exception."""
    line = getattr(step.func, "_dagnb_return_line", None)
    if line is None or not isinstance(exc, UnboundLocalError):
        return ""
    raised = traceback.extract_tb(exc.__traceback__)[-1]
    named = re.search(r"'(\w+)'", str(exc))
    if ((raised.filename, raised.lineno) != (step.func.__code__.co_filename, line)
            or named is None or named[1] not in getattr(step.func, PUBLISHED_AS, ())):
        return ""
    return output_unreached_line(step.name, named[1])


def output_unreached_line(step: str, output: str) -> str:
    """The failure of a --python cell whose code did not reach an assignment to its
    --outputs name ``output``, on any executor."""
    return (f"step {step!r}: --outputs {output!r} was not assigned: the cell's code did "
            f"not reach an assignment to it; assign it on every path ({output} = None "
            "first, say)")


def _failure(task: Task, exc: BaseException) -> StepFailed:
    """Report the user's exception as its traceback lines, minus dagnb's own frames."""
    unreached = _output_unreached(task.step, exc)
    if unreached:  # (raised on a line dagnb wrote: no frame of it would help)
        return StepFailed(unreached, step=task.step.name, exit_code=1)
    text = _traceback_text(exc, task.step.func)
    for line in text.split("\n"):
        task.log("stderr", line)
    return StepFailed(exception_line(exc), step=task.step.name, exit_code=1,
                      stderr_tail=text[-2000:])


def _traceback_text(exc: BaseException, func: Any) -> str:
    """The exception's traceback as Python prints it, with its cause or context and an
    ExceptionGroup's members, each exception's frames the user's own."""
    shown = traceback.TracebackException.from_exception(exc)
    pending: list[tuple[Any, BaseException]] = [(shown, exc)]
    while pending:  # (as TracebackException pairs them: no recursion, loops cut)
        summary, raised = pending.pop()
        summary.stack = traceback.StackSummary.from_list(
            _own_frames(raised.__traceback__, func))
        linked = [(summary.__cause__, raised.__cause__),
                  (summary.__context__, raised.__context__),
                  *zip(getattr(summary, "exceptions", None) or (),  # (3.11+: a group's;
                       getattr(raised, "exceptions", ()), strict=False)]  # no other's)
        pending += [(link, cause) for link, cause in linked if link is not None]
    return "".join(shown.format()).rstrip("\n")


def _own_frames(tb: Any, func: Any) -> list[traceback.FrameSummary]:
    """A traceback's frames from the user's first on: not dagnb's calls into the step."""
    frames = _shown_frames(tb)
    while frames and _is_ours(frames[0].filename):
        frames = frames[1:]
    if len(frames) > 1 and _is_cell_wrapper(frames[0], frames[1]):
        frames = frames[1:]
    return _as_written(frames, func)
