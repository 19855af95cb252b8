"""The local executor: steps run on this machine, the embedded default.

Shell text runs with ``bash -e -o pipefail -c`` (see :mod:`dagnb.executors.shell`), an
argv list directly, each in a new process group so
that a timeout or cancellation kills the command and everything it started. Python
function steps run in-process on the runner's loop: coroutine functions as tasks, plain
functions called inline (a thread hop per step would cost more than a no-op step, and the
GIL gives Python code no parallelism); their prints are captured per step. A kernel
interrupt, ``run.cancel()``, the step's timeout and the run's stop an inline call as
Ctrl-C stops plain Python (:func:`dagnb.executors.loop.call_interruptibly`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from dagnb.errors import StepFailed, TransientError
from dagnb.executors.base import NO_RESULT, Availability, Input, Outcome, Task
from dagnb.executors.capture import routed_output
from dagnb.executors.context import StepContext
from dagnb.executors.loop import Interrupted, call_interruptibly, until_cancelled
from dagnb.executors.reaper import TOKEN_VARIABLE, StepProcesses, running_step, sweep
from dagnb.executors.shell import host_argv
from dagnb.retry.policy import classify

__all__ = ["LocalExecutor"]

_KILL_GRACE = 0.3  # seconds between SIGTERM and SIGKILL
_DRAIN_GRACE = 0.5  # seconds a finished step's pipes may still deliver output
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
        self._notice_image(task)
        if task.step.func is not None:
            return await _call_function(task)
        return await _run_process(task)

    def _notice_image(self, task: Task) -> None:
        """Say once per process that images do not apply here (not in a step's log,
        which the cache would keep)."""
        if task.step.image and not self._noticed_image:
            self._noticed_image = True
            print(
                f"dagnb: the local executor ignores images such as {task.step.image!r}; "
                "steps run on this machine (use executor='dagger' for containers)",
                file=sys.stderr,
            )


# -- processes ------------------------------------------------------------------------
async def _run_process(task: Task) -> Outcome:
    _prepare_dirs(task)
    with running_step() as processes:  # see dagnb.executors.reaper
        process = await _start(task, processes.token)
        processes.pgid = process.pid
        try:
            return await _finish(process, task, processes)
        finally:
            await sweep(processes, leader_reaped=process.returncode is not None)


async def _start(task: Task, token: str) -> asyncio.subprocess.Process:
    step = task.step
    argv = host_argv(step) if isinstance(step.run, str) else list(step.run or ())
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**_process_env(task), TOKEN_VARIABLE: token},  # what escapes its group has it
        cwd=_workdir(task),
        start_new_session=True,  # its own process group, killed as one
    )


async def _finish(
    process: asyncio.subprocess.Process, task: Task, processes: StepProcesses
) -> Outcome:
    """Stream the step's output until it exits; kill its group if stopped before."""
    pumps = asyncio.gather(
        _pump(process.stdout, "stdout", task), _pump(process.stderr, "stderr", task)
    )
    try:
        await _exited(process.pid, pumps)
        await _end_group(process.pid, processes, pumps)
        return Outcome(exit_code=await process.wait())
    except BaseException:
        await _kill_group(process)
        pumps.cancel()
        raise


async def _exited(pid: int, pumps: asyncio.Future[Any]) -> None:
    """Return once the process has exited, even if a child of it keeps its pipes open.

    asyncio's ``Process.wait()`` also waits for the pipes to close, so a background child
    holding them would hold the step; a pidfd says when the process itself is done.
    Without pidfds (not Linux), the pipes closing is the signal, as before.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # it exited and asyncio's child watcher reaped it already
        return
    except (AttributeError, OSError):  # no pidfds here: the pipes closing decides
        await asyncio.shield(pumps)
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _end_group(pgid: int, processes: StepProcesses, pumps: asyncio.Future[Any]) -> None:
    """The step's main process has exited: what it left running goes too.

    A background child (``server &``, or a daemon that left the group) may still hold the
    output pipes, and would keep the step, and its timeout, waiting for an end of file
    that never comes; it gets a moment to finish writing, then its process group and
    every process with the step's token are killed, so no process outlives its step.
    """
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(pumps), _DRAIN_GRACE)
    _kill_stragglers(pgid)
    if not pumps.done():
        processes.kill_escaped()
    await pumps


def _prepare_dirs(task: Task) -> None:
    task.out_dir.mkdir(parents=True, exist_ok=True)
    task.in_dir.mkdir(parents=True, exist_ok=True)
    for name, item in task.inputs.items():
        link = task.in_dir / name
        if not link.exists():
            link.symlink_to(item.path.resolve(), target_is_directory=True)


def _process_env(task: Task) -> dict[str, str]:
    """The host's environment less the secrets other steps declare, with this Python's
    folder first on PATH: ``python3`` in a step is then the interpreter (and packages)
    dagnb runs in, as in a notebook."""
    host = {k: v for k, v in os.environ.items() if k not in task.withheld}
    env = {**host, **task.env, **task.secrets}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _workdir(task: Task) -> str:
    workdir = task.step.workdir
    if workdir is None:
        return str(task.base_dir)
    path = task.base_dir / workdir
    return str(path) if path.is_dir() else str(task.base_dir)


async def _pump(reader: asyncio.StreamReader | None, stream: str, task: Task) -> None:
    """Forward complete lines as they come; long lines are not a problem."""
    if reader is None:
        return
    pending: list[bytes] = []  # the line so far, in chunks: joined once, so linear
    while chunk := await reader.read(_CHUNK):
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        lines = chunk.split(b"\n")
        lines[0] = b"".join([*pending, lines[0]])
        pending = [lines.pop()]
        for line in lines:
            task.log(stream, line.decode("utf-8", "replace"))
    if rest := b"".join(pending):
        task.log(stream, rest.decode("utf-8", "replace"))


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there shortly after (its
    leader may be gone already while children of the group live on)."""
    if process.returncode is not None:
        _kill_stragglers(process.pid)
        return
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, 5.0)):
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
    kwargs = function_arguments(step.func, task.inputs, step.params)
    try:
        with routed_output(task.log, StepContext(task)):
            if step.is_async:
                result = await step.func(**kwargs)  # type: ignore[misc]
            else:
                result = call_interruptibly(step.func, kwargs)  # type: ignore[arg-type]
    except Interrupted:  # by a timeout or a cancel: it reaches this task now
        await until_cancelled()
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        failure = _failure(task, exc)
        if classify(exc) == "transient":  # a dropped connection in user code may pass
            raise TransientError(str(failure)) from exc
        raise failure from exc
    return Outcome(exit_code=0, result=result)


def function_arguments(
    func: Any, inputs: Mapping[str, Input], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for a step function: upstream results, then params.

    An upstream step without a Python result (a shell step) is passed as the Path of
    its output folder.
    """
    kwargs: dict[str, Any] = {}
    for name in _parameter_names(func):
        if name in inputs:
            item = inputs[name]
            kwargs[name] = item.path if item.result is NO_RESULT else item.result
        elif name in params:
            kwargs[name] = params[name]
    return kwargs


@functools.lru_cache(maxsize=4096)
def _parameter_names(func: Any) -> tuple[str, ...]:
    return tuple(inspect.signature(func).parameters)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_ours(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def _failure(task: Task, exc: Exception) -> StepFailed:
    """Report the user's exception as its traceback lines, minus dagnb's own frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and _is_ours(frames[0].filename):  # the calls that led into the step
        frames = frames[1:]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip("\n")
    for line in ["Traceback (most recent call last):", *text.split("\n")]:
        task.log("stderr", line)
    summary = f"{type(exc).__name__}: {exc}"
    return StepFailed(summary, step=task.step.name, exit_code=1, stderr_tail=text[-2000:])
