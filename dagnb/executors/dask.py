"""The dask executor: Python steps on a dask.distributed cluster.

What runs where. A step with ``executor="dask"`` is a Python function; each attempt of it
is one dask task. The runner, the cache and the shell steps stay on this machine: the
function and its arguments (upstream results, params) travel to a worker by value
(cloudpickle), with the source of the project's own modules it uses (a helper beside
the workflow or the notebook, a package of the project: :mod:`.shipped`), which workers
need not have; its return value travels back by value and is cached here like any other.
Both travel as frames (:mod:`dagnb.executors.wire`), an array's data uncopied; a payload
over 1 MB is scattered to a worker ahead of its task, and with its own LocalCluster the
client sends and gathers straight from the workers, not through the scheduler, which runs
in this process. A worker that dies holding a payload sent ahead takes it along: dask
cancels the task, and the attempt fails as one whose worker died running it does (a
transient error, in the same words); the retry sends the payload again.
The step's contract folders (``$DAGNB_OUT``, ``$DAGNB_IN`` with its links, the
``$DAGNB_PARAMS`` file) are made here, as the local executor makes them; files a step
writes to its output folder are written by the worker at the path the runner gave: the
worker must share that filesystem (a ``LocalCluster`` does; a remote cluster needs a
shared mount). A worker that does not find the params file there gets a copy of its own
and no ``$DAGNB_IN``, rather than variables naming paths it does not have.

The cluster is the ``dask_scheduler`` setting's (``DAGNB_DASK_SCHEDULER``: an address
such as ``tcp://10.0.0.5:8786``), or else a ``LocalCluster`` of two single-threaded
worker processes started on first use, whose workers dask dropped for good (killed, and
not back within its lost-worker-timeout) are started again
(:meth:`_Cluster.workers_restored`). The client (and the cluster it started) lives in
the current :func:`dagnb.config.context`, one per process, and is closed at exit, or by
:func:`close`. A client found closed (dask closes one that has lost its scheduler for
about 10 s; a LocalCluster of the user's closed) is replaced by a new connection when the
next step is sent, rather than refuse every later step of the process; so is one opened
for another ``dask_scheduler`` than the setting's now (closed once its steps have ended).
A scheduler lost during a run fails its steps in a line naming it and when it was lost,
once dask has tried for its connect timeout to connect again (one back by then lets
their retries go); the run's later steps fail at once with the same line for 30 s,
rather than each wait for a connect timeout of its own, one after another.

When a step starts. More steps than the cluster has threads wait in dask's queue, which
is not the step's time: the task logs a dask event as a worker starts it, the client
hears it (one subscription per connection to the scheduler) and calls ``task.began()``,
and the runner then says the step is running and starts its timeout. Chosen over
sending no more steps than the cluster's threads: that count is wrong on a cluster
other clients share, or whose workers come and go, where the event is what a worker
did. Until the event comes the client asks the scheduler, every step timeout (at least
1 s), where the task is: run by a worker (its heartbeat says), it has started all the same
(a worker with an older dagnb logs no event); still waiting for one, the step's log says
so once, and the run's timeout bounds the wait.

Why a child process on the worker. dask cannot stop a task that is running:
``Future.cancel()`` marks it cancelled on its worker, and the worker's thread runs on.
So the task starts the step in a child process of its own (a new process group), waits
for it while looking every 0.1 s whether the task is still wanted, and kills the group
once it is not: a cancel, a timeout, a client that went away. The step stops, whatever it
was doing. Once the child has ended, what it started is killed too: its process group,
and on Linux every process carrying the attempt's token in its environment
(:mod:`dagnb.executors.reaper`), so a ``setsid`` escapee as well. On Linux the child also
dies with its worker (a parent-death signal), and so does what it started: the worker
has a watcher (:mod:`dagnb.executors.watcher`, as the local executor's process has) that
kills the groups and tokens of its steps still running when the worker ends (killed,
out of memory), whose retry would otherwise run beside them. A child that ends without
writing its report (os._exit(), a native exit()) fails its step whatever its exit code,
0 too: it returned no result for the cache to keep; sys.exit() is reported, and ends
the step as on the local executor (0 succeeds).
The step ends as its function returns: the child runs its exit work (atexit) and
exits, killing the threads the step left running (the local executor, in-process, lets
them run on), which a normal exit would wait for, holding the step and its timeout.
The price is a Python start per attempt (0.1 to 0.3 s), small next to the
steps worth sending to a cluster. The child's stdout and stderr go to files, not pipes (a
process it left running would hold a pipe open, and the task would wait for it). The
task reads them as they grow, every 0.1 s, and sends their new lines to the client as
dask events (through the scheduler, the way the task's own result goes to a remote
cluster's client), masked with the secrets the child has (it writes them beside its
output before the step runs), since the scheduler keeps its last events; the client
logs them as they come (masked again, as every executor's
lines). So a step that is stopped (a timeout, a cancel) or lost keeps what it printed,
which came only with its result before. The child's stdout and stderr are line-buffered
and note in a third file which of them each line went to, so that the lines keep the
order they were printed in (they came grouped by stream). Its result carries them all
again, and those not heard by then (an event lost with a reconnection) are logged from
it. A step stopped whose last lines do not come within 2 s says so in its log, rather
than seem silent.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import importlib.util
import io
import json
import linecache
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from dagnb.cache.keys import keyed_environ
from dagnb.config import context, secret_value, settings
from dagnb.errors import (
    ExecutorError,
    ExecutorUnavailable,
    StepFailed,
    TransientError,
    exception_line,
)
from dagnb.executors import served, shipped, wire
from dagnb.executors.base import QUEUES, Availability, Input, Outcome, Task
from dagnb.executors.local import ended_without_result, function_arguments
from dagnb.executors.reaper import TOKEN_VARIABLE, StepProcesses, kill_tagged, new_token
from dagnb.executors.workdir import workdir_of
from dagnb.model.contract import make_step_folders, write_params

if TYPE_CHECKING:
    from dagnb.model.masking import Masker

__all__ = ["DaskExecutor", "close"]

_INSTALL = "pip install 'dagnb[dask]'"
_CONTEXT_NAME = "dask"
_STOP_GRACE = 5.0  # seconds a cancel waits for the scheduler to take it
_CONNECT_TIMEOUT = 10.0  # seconds a scheduler has to answer
_SCATTER_FROM = 1 << 20  # bytes of payload sent ahead of its task
_INPUT = "-input"  # the name of a payload sent ahead of its task: the task's, then this
_BEGAN = "dagnb-began"  # the topic of the events a task logs as it starts on a worker
_LOOK_EVERY = 1.0  # seconds, at least, between asking the scheduler where a task is
_RESTART_WAIT = 60.0  # seconds dropped workers have to start again before a second try
_LINES = "dagnb-lines"  # the topic of the events carrying the lines a step prints
_CONNECTION_LOST = "scheduler-connection-lost"  # dask's reason for the tasks it cancels
_LAST_WORDS = 2.0  # seconds a stopped step's last lines have to come from its worker


class DaskExecutor:
    """Runs Python function steps on a dask.distributed cluster (module docstring)."""

    name = "dask"
    capabilities = frozenset({"python", QUEUES})

    def availability(self) -> Availability:
        if not _installed():
            return Availability(False, f"dask.distributed is not installed; {_INSTALL}")
        address = settings().dask_scheduler
        if address:
            return Availability(True, f"runs Python steps on the dask scheduler {address}")
        return Availability(True, "runs Python steps on a LocalCluster started on first use")

    async def aclose(self) -> None:
        await asyncio.to_thread(close)

    async def execute(self, task: Task) -> Outcome:
        _refuse_commands(task)
        payload = _payload(task)
        await asyncio.to_thread(_make_folders, task)  # (the disk: off the loop)
        key = _key(task)
        marker = os.path.join(task.step_dir, f".{key}")
        began = _on_loop(task.began)
        heard = _Heard(task)
        cluster, sent, future = await _submitted(task, payload, key, marker, began, heard)
        del payload  # (a pickle in it may be large: the cluster has it now)
        watch = asyncio.ensure_future(_watch_start(task, cluster, key, began))
        keep = (asyncio.ensure_future(_keep_workers(task, cluster))
                if cluster.local is not None else None)
        try:
            await _done(future)
            report = await asyncio.to_thread(cluster.result, future)
        except (asyncio.CancelledError, KeyboardInterrupt):
            with contextlib.suppress(asyncio.TimeoutError):  # an unreachable scheduler
                await asyncio.wait_for(
                    asyncio.shield(asyncio.to_thread(cluster.stop, [future])), _STOP_GRACE
                )
            if key not in cluster.starting:  # (one still queued printed nothing)
                await heard.last_words(_LAST_WORDS, "its dask worker sent no last lines "
                                       f"within {_LAST_WORDS:g} s of its stop")
            raise
        except Exception as exc:  # the worker died, the connection dropped: may pass
            error, why = await _failure(task, cluster, exc)
            await heard.last_words(0, why, began=key not in cluster.starting)
            raise error from exc
        finally:
            watch.cancel()
            if keep is not None:
                keep.cancel()
            cluster.release(future, sent)
            if cluster.finished(future):  # the last step of a connection since replaced
                asyncio.get_running_loop().run_in_executor(None, cluster.close)  # (blocks)
            with contextlib.suppress(OSError):
                os.remove(marker)
        await heard.rest(report["lines"], report.get("cut", ()))  # (an older worker: none)
        return _outcome(task, report)


# -- the client side ------------------------------------------------------------------
def _installed() -> bool:
    return importlib.util.find_spec("distributed") is not None


def _refuse_commands(task: Task) -> None:
    step = task.step
    if step.func is None:
        raise StepFailed(
            f"step {step.name!r} is a command and executor 'dask' runs Python functions "
            "only; give it executor='local' or 'dagger'",
            step=step.name,
        )
    if step.services:
        raise StepFailed(
            f"step {step.name!r} binds services {list(step.services)!r}, which need the "
            "dagger executor; run it with executor='dagger'",
            step=step.name,
        )


def _make_folders(task: Task) -> None:
    """The step's contract folders, here, as the local executor makes them: a worker
    that shares this machine's files (a LocalCluster) finds them at the same paths."""
    make_step_folders(
        task.step,
        out_dir=str(task.out_dir),
        in_dir=str(task.in_dir),
        params_file=str(task.params_file),
        inputs={name: item.path for name, item in task.inputs.items()},
    )


def _payload(task: Task) -> list[wire.Frame]:
    """The function, its arguments and the step's paths, as frames for a worker: an
    argument that is bytes is a frame of its own, the rest one pickle (:mod:`wire`)."""
    step = task.step
    kwargs = function_arguments(step.func, task.inputs, step.params)
    raw = [name for name, value in kwargs.items() if wire.is_frame(value)]
    # the host variables its key counts, as this process has them: the worker's own
    # (inherited as it started, or another machine's) would not be what the key holds
    keyed = keyed_environ(step)
    spec: dict[str, Any] = {
        "name": step.name,
        "attempt": task.attempt,
        "params": dict(step.params),
        "inputs": {name: str(item.path) for name, item in task.inputs.items()},
        "out_dir": str(task.out_dir),
        "cwd": workdir_of(task),  # (one that is no folder fails the step here)
        "env": {**{name: value for name, value in keyed.items() if value is not None},
                **task.env, **task.secrets},
        "unset": sorted(name for name, value in keyed.items() if value is None),
        "withheld": sorted(task.withheld),  # other steps' secrets, as the local executor
        "secrets": _secret_names(task),  # (names only: the step's values are in env)
        "is_async": step.is_async,
    }
    try:
        _send_by_value(step.func)
        pickled = {name: value for name, value in kwargs.items() if name not in raw}
        return _pack((step.func, pickled, spec, raw), [kwargs[name] for name in raw])
    except ExecutorError as exc:  # (no text of a module as it runs here to send)
        raise StepFailed(f"step {step.name!r} cannot be sent to dask workers: {exc}",
                         step=step.name) from None
    except Exception as exc:
        raise StepFailed(
            f"step {step.name!r} cannot be sent to dask workers: its function or "
            f"arguments do not pickle ({type(exc).__name__}: {exc}); make open files, "
            "locks and connections inside the step instead of passing or capturing them",
            step=step.name,
        ) from exc


def _secret_names(task: Task) -> list[str]:
    """The names of the secrets the step's process on the worker keeps out of any
    ``dagnb.Memory`` cache: the step's own, and those the run masks that no step
    declares (the registry's, the credentials of the run's store, named by the run's
    ``cache_directory`` or the setting; a worker started here inherits them)."""
    return sorted({*task.secrets, *task.masked_names, *settings().credential_secrets()})


def _send_by_value(func: Any) -> None:
    """Have cloudpickle send the code of ``func``'s module, and of its classes, when a
    worker could not import it: a module loaded from its file under a name no finder
    knows (a workflow's ``python:`` steps module) is pickled by reference otherwise."""
    import importlib.machinery

    import cloudpickle

    name = getattr(func, "__module__", None)
    module = sys.modules.get(name) if isinstance(name, str) and "." not in name else None
    if module is None or name == "__main__":
        return
    finders = (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter,
               importlib.machinery.PathFinder)
    if not any(finder.find_spec(name) for finder in finders):
        cloudpickle.register_pickle_by_value(module)


def _pack(call: Any, raw: list[Any]) -> list[wire.Frame]:
    """``call``, the ``raw`` values, the sources of the code sent by value and the
    project's modules the call reaches (:mod:`.shipped`), as frames: cloudpickle, but
    keeping the file names of that code (cloudpickle writes ``<dynamic-code>``) and
    those files' lines, so that a traceback on a worker names the notebook cell or file
    and shows the line, as it would here."""
    import linecache
    import types
    from collections import ChainMap

    import cloudpickle

    sources: dict[str, list[str]] = {}  # (filled as ``call`` is pickled: packed after it)
    reached = shipped.Reached()
    code_reduce = getattr(cloudpickle.cloudpickle, "_code_reduce", None)  # private there

    def reduce_code(code: types.CodeType) -> Any:
        make, args = code_reduce(code)
        sources.setdefault(code.co_filename, linecache.getlines(code.co_filename))
        return make, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)

    class Pickler(cloudpickle.Pickler):
        dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
            {types.CodeType: reduce_code} if code_reduce else {},
            cloudpickle.Pickler.dispatch_table,
        )

        def reducer_override(self, obj: Any) -> Any:
            reached.note(obj)
            return super().reducer_override(obj)

    def values() -> Any:  # (the modules last: known once ``call`` is pickled)
        yield from (call, *raw, sources)
        by_value = cloudpickle.list_registry_pickle_by_value()  # (its pickle holds them)
        yield shipped.project_sources(reached.names, sent_otherwise=by_value)

    return wire.pack(values(), Pickler)


def _key(task: Task) -> str:
    """A task name that reads well on the dask dashboard and is unique per attempt."""
    return f"dagnb-{task.step.name}-{task.attempt}-{uuid.uuid4().hex[:12]}"


async def _upload(task: Task, cluster: _Cluster, payload: list[wire.Frame], key: str) -> Any:
    """The payload as the task ``key`` takes it (in a thread: a large one takes a while)."""
    try:
        return await asyncio.to_thread(cluster.upload, payload, key)
    except Exception as exc:  # no worker took it: may pass
        raise TransientError(
            f"step {task.step.name!r} could not be sent to the dask cluster: "
            f"{exception_line(exc)}"
        ) from exc


def _on_loop(began: Callable[[], None] | None) -> Callable[[], None]:
    """``task.began``, to be called from the dask client's thread."""
    if began is None:
        return lambda: None
    loop = asyncio.get_running_loop()

    def call() -> None:
        with contextlib.suppress(RuntimeError):  # (the run's loop has closed)
            loop.call_soon_threadsafe(began)

    return call


async def _watch_start(
    task: Task, cluster: _Cluster, key: str, began: Callable[[], None]
) -> None:
    """Until the worker's event comes, ask the scheduler every step timeout (at least
    _LOOK_EVERY s) where the task is: a worker running it is its start all the same (the
    event can be lost: workers with an older dagnb log none), and a task still waiting
    for a worker is said once in the step's log. Without this, a lost event left the
    step's timeout unstarted, and a cluster without workers waited forever."""
    every = max(task.step.timeout or _LOOK_EVERY, _LOOK_EVERY)
    sent, said = time.monotonic(), False
    while True:
        await asyncio.sleep(every)
        if key not in cluster.starting:  # the event came (or the attempt has ended)
            return
        state = await asyncio.to_thread(cluster.state, key)
        if state in ("executing", "memory", "erred", "forgotten"):
            cluster.starting.pop(key, None)
            began()
            return
        # ("processing": perhaps run by a worker whose heartbeat has not said so yet)
        if not said and state not in (None, "processing"):
            said = True
            task.log("stderr", f"dagnb: step {task.step.name!r} is waiting for a free dask "
                               f"worker ({time.monotonic() - sent:.0f} s so far); its "
                               "timeout starts when one takes it")


async def _keep_workers(task: Task, cluster: _Cluster) -> None:
    """While the attempt lasts, start again the workers dagnb's LocalCluster dropped: a
    task queued, or rescheduled as its worker died, waits for ever on a cluster with no
    workers (a worker restarted fast can take the task, then be closed by the drop)."""
    while True:
        await asyncio.sleep(_LOOK_EVERY)
        _say_restored(task, cluster.workers_restored(), cluster)


def _say_restored(task: Task, restored: int, cluster: _Cluster) -> None:
    """Say in the step's log that dagnb's LocalCluster is starting dropped workers again."""
    if restored:
        total = len(cluster.local.worker_spec)
        task.log("stderr", f"dagnb: dask's LocalCluster had dropped {restored} of its {total} "
                           "workers (killed, and not back within dask's lost-worker-timeout); "
                           "dagnb is starting them again")


async def _submitted(
    task: Task, payload: list[wire.Frame], key: str, marker: str,
    began: Callable[[], None], heard: _Heard, again: bool = True,
) -> tuple[_Cluster, Any, Any]:
    """The attempt sent to the context's cluster: the cluster, its input, its future. A
    client closed since :func:`_cluster` looked at it is replaced once, as one it finds
    closed is."""
    from distributed.client import ClosedClientError

    cluster = await asyncio.to_thread(_cluster, task.run_id)
    _say_restored(task, cluster.workers_restored(), cluster)
    if cluster.client.status == "connecting" and not await asyncio.to_thread(
            cluster.reconnected, task.run_id):  # (a task sent now would be cancelled)
        raise ExecutorUnavailable(f"step {task.step.name!r} was not sent: "
                                  f"{_unreachable(cluster.where)}")
    sent = await _upload(task, cluster, payload, key)
    try:
        return cluster, sent, cluster.submit(sent, key, marker, began, heard)
    except ClosedClientError:
        if not again:
            raise
        cluster.release(sent)
    return await _submitted(task, payload, key, marker, began, heard, again=False)


async def _done(future: Any) -> None:
    """Wait for a dask future from asyncio without holding a thread. Its end is heard on
    the dask client's loop, not through ``Future.add_done_callback``, whose thread pool
    refuses work once the interpreter shuts down: a step still running as ``dagnb run``
    exits after a Ctrl-C (a local step's C call held the run's loop) is cancelled by the
    client's close at exit, and the refusal printed a tornado traceback after the run's
    summary."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(_: Any) -> None:
        with contextlib.suppress(RuntimeError):  # (the run's loop has closed)
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    try:  # (undocumented: a distributed without it is heard as documented)
        from distributed.client import done_callback
    except ImportError:
        future.add_done_callback(settle)
    else:
        future.client.loop.add_callback(done_callback, future, settle)
    await done


class _Heard:
    """The lines of one attempt, logged as its worker sends them (events of topic
    _LINES, numbered from 0), so that a step stopped or lost keeps what it printed:
    they came only with its report before, which such a step never sends. The report
    carries them all again; those not heard by then are logged from it."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.count = 0  # lines logged: the first ``count`` of the attempt's
        self.ended = asyncio.Event()  # its worker sent the last of them
        self.closed = False
        self._loop = asyncio.get_running_loop()

    def hear(self, message: dict[str, Any]) -> None:
        """Lines from the worker (on the dask client's thread)."""
        with contextlib.suppress(RuntimeError):  # (the run's loop has closed)
            self._loop.call_soon_threadsafe(self._take, message)

    def _take(self, message: dict[str, Any]) -> None:
        at, lines = message["at"], message["lines"]
        if self.closed or at > self.count:  # (after a lost event: the report has them)
            return
        self._log(lines[self.count - at:], self.count, message.get("cut", ()))
        self.count = max(self.count, at + len(lines))
        if message["end"]:
            self.ended.set()

    async def rest(self, lines: list[tuple[str, str]], cut: Collection[int]) -> None:
        """Log the report's lines not heard yet, after those heard (their events may
        wait on the loop: its turn lets them through first)."""
        await asyncio.sleep(0)
        self.closed = True
        self._log(lines[self.count:], self.count, cut)

    def _log(self, lines: list[tuple[str, str]], at: int, cut: Collection[int]) -> None:
        """Log ``lines``, the attempt's from number ``at`` on; those numbered in ``cut``
        were cut off mid-line (a stream's end without a newline): masked as the last of
        their line, as the local executor's are, lest a secret's start there show."""
        log = self.task.log
        last = getattr(log, "last", log)
        for number, (stream, line) in enumerate(lines, at):
            (last if number in cut else log)(stream, line)

    async def last_words(self, within: float, why: str, began: bool = True) -> None:
        """Wait up to ``within`` s for the last lines of a step that was stopped or lost;
        without them, its log says that what it printed was lost with it, and ``why``
        (rather than the run saying that it printed nothing); ``began``: whether the
        client heard that a worker started it (the word may be lost with it)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ended.wait(), within)
        await asyncio.sleep(0)
        self.closed = True
        if self.ended.is_set():
            return
        which = "anything" if not self.count else "anything else"
        started = "" if began else ", if a worker had started it,"
        self.task.log("stderr", f"dagnb: {which} step {self.task.step.name!r} printed"
                                f"{started} was lost with it: {why}")


def _outcome(task: Task, report: dict[str, Any]) -> Outcome:
    """How the step ended (its lines are in its log: :class:`_Heard`)."""
    status = report["status"]
    if status == "ok":
        [result] = wire.unpack(report.pop("result"))  # (the frames go: the result stays)
        return Outcome(exit_code=0, result=result)
    if status == "lost":  # dask started it again over the files the lost run left
        raise _lost(task)
    if status == "error":  # its traceback is the last of the lines above
        if report["transient"]:  # the step's own code raised it: not the cluster's
            raise TransientError(report["summary"], in_step_code=True, exit_code=1)
        raise StepFailed(
            report["summary"], step=task.step.name, exit_code=1,
            stderr_tail=report["tail"],
        )
    if status == "died":  # it wrote no report: killed, or ended by os._exit()
        return _died(task, report["exit_code"], report["lines"])
    return Outcome(exit_code=report["exit_code"])  # sys.exit(): its status, as a script's


def _died(task: Task, code: int, lines: list[tuple[str, str]]) -> Outcome:
    """The child ended without writing its report. Killed (``code`` is -signal), it
    fails as a killed process does. Otherwise os._exit() or native code calling exit()
    ended it mid-step, without Python's cleanup (files left unflushed): it produced no
    result, and an exit code of 0 must not make it a success, which the cache would
    then serve to every run after."""
    if code < 0:
        return Outcome(exit_code=code)
    stderr = "\n".join(line for stream, line in lines if stream == "stderr")
    raise StepFailed(
        ended_without_result(task.step.name, "on the dask worker", code),
        step=task.step.name, exit_code=code, stderr_tail=stderr[-2000:],
    )


def _lost(task: Task, exc: BaseException | None = None) -> TransientError:
    """The attempt the cluster lost, in one line that reads the same however dask lost
    it to a worker's death: dask starts a task whose worker died running it again (the
    run then reports 'lost'), and cancels one whose input, sent ahead of it, died with
    the worker holding it (with a reason: 'already forgotten', or 'lost dependencies'
    when the input was lost before the task came)."""
    return TransientError(
        f"step {task.step.name!r} was lost on the dask cluster: {_lost_cause(exc)}; it "
        "runs again as a new attempt if its retries allow"
    )


async def _failure(task: Task, cluster: _Cluster, exc: Exception) -> tuple[Exception, str]:
    """What an attempt the cluster failed raises, and why what the step printed after
    its last line heard was lost. A scheduler that stays unreachable (dask cancels every
    task as the connection drops, then tries to connect again for its connect timeout)
    fails it in a line saying so, not retried: a retry failed the same 10 s later, in
    dask's words, until the breaker said only that dask had failed N times. One back
    by then lets the retry go, as another loss does."""
    if cluster.lost_connection(exc) and not await asyncio.to_thread(
            cluster.reconnected, task.run_id):
        error = ExecutorUnavailable(f"step {task.step.name!r} was stopped: "
                                    f"{_unreachable(cluster.where)}")
        return error, _unreachable(cluster.where, fix=False)
    return _lost(task, exc), f"it was lost on the dask cluster: {_lost_cause(exc)}"


def _lost_cause(exc: BaseException | None) -> str:
    reason = getattr(exc, "reason", None)  # a FutureCancelledError's
    if exc is None or reason in ("already forgotten", "lost dependencies"):
        return "the worker running it died (killed, or out of memory)"
    if reason == "scheduler-restart":
        return "the cluster was restarted, its workers with it"
    if reason == _CONNECTION_LOST:
        return "the connection to its scheduler dropped"
    return exception_line(exc).splitlines()[0]  # (a cancel's message may add more)


# -- the cluster ----------------------------------------------------------------------
class _Cluster:
    """The client of this context, the LocalCluster it started (if it started one), and
    the tasks it has running."""

    def __init__(self, client: Any, local: Any = None, address: str = "") -> None:
        self.client = client
        self.local = local
        self.address = address  # the dask_scheduler setting it was opened for
        self.running: set[Any] = set()
        self.retired = False  # replaced in the context: closed once nothing runs on it
        self.starting: dict[str, Callable[[], None]] = {}  # task keys: their began()
        self.hearing: dict[str, _Heard] = {}  # task keys: where their lines go
        self.where = address or _scheduler_address(client)  # (said when it is lost)
        self._subscribed: Any = None  # the connection to the scheduler it subscribed on
        self._restoring_at: float | None = None  # when dropped workers were started again
        self._restoring: frozenset[Any] = frozenset()  # the names of those workers
        # values go straight to and from the workers of a LocalCluster (dask's default
        # is through the scheduler, which is in this process: one more copy here)
        self.direct = True if local is not None else None

    def upload(self, payload: list[wire.Frame], key: str) -> Any:
        """The payload, or a future of it when it is large: sent to a worker ahead of
        the task, not inside it, it leaves no copy in the scheduler's task graph. Its
        name is the task's, with _INPUT after it (dask's would be 'list-<hash>')."""
        if wire.nbytes(payload) < _SCATTER_FROM or not self._has_workers():
            return payload  # (none yet: the task waits for one in the queue, as it did)
        try:
            [sent] = self.client.scatter({key + _INPUT: payload}, direct=self.direct).values()
            return sent
        except (TimeoutError, asyncio.TimeoutError):  # the workers went meanwhile: ditto
            return payload

    def workers_restored(self) -> int:
        """How many workers dagnb's own LocalCluster had dropped and is now starting again
        (0: none, or the cluster is not dagnb's). A worker killed (out of memory) and not
        back within dask's ``distributed.deploy.lost-worker-timeout`` (15 s: a loaded
        machine's restart takes longer) is dropped for good, its nanny closed; with both
        gone, every later step waited in the queue for ever. The cluster still lists the
        dropped workers' specs: scaling to them starts them again (once: the cluster
        starts what its specs name and are not running, under its own lock)."""
        local = self.local
        if local is None:
            return 0
        try:
            missing = frozenset(local.worker_spec) - frozenset(local.workers)
            if not missing:
                self._restoring, self._restoring_at = frozenset(), None
                return 0
            now = time.monotonic()
            if local.status.name != "running" or self._started_lately(missing, now):
                return 0
            local.scale(len(local.worker_spec))
        except Exception:  # (a cluster closing meanwhile: the submit says what is wrong)
            return 0
        self._restoring, self._restoring_at = missing, now
        return len(missing)

    def _started_lately(self, missing: frozenset[Any], now: float) -> bool:
        """Whether the workers ``missing`` were all started again less than
        ``_RESTART_WAIT`` ago: they may still be starting, or die as they start (not
        started again and again). Another worker dropped since is started at once (the
        cluster sat at one worker for up to a minute after a second one was lost)."""
        return (missing <= self._restoring and self._restoring_at is not None
                and now - self._restoring_at < _RESTART_WAIT)

    def _has_workers(self) -> bool:
        """Whether the cluster has a worker now: scattering waits for one only until a
        connection timeout, where an adaptive cluster (starting from none) can take
        minutes to start one."""
        try:
            return bool(self.client.scheduler_info().get("workers"))
        except Exception:  # (a scheduler gone: the submit says so)
            return False

    def lost_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` (or the client's state) says the connection to the scheduler
        dropped; the first time, the clock time is noted (the attempts that fail over it
        end later, as the client tries to connect again)."""
        lost = getattr(exc, "reason", None) == _CONNECTION_LOST
        if not lost and self.client.status != "connecting":
            return False
        _LOST_AT.setdefault(self.where, time.strftime("%H:%M:%S"))
        return True

    def reconnected(self, run_id: str) -> bool:
        """Wait while the client connects to its scheduler again (dask tries for its
        connect timeout, then closes it); whether it did. If not, the run ``run_id``
        does not try a new connection for a while (:func:`_connect_unless_refused`)."""
        deadline = time.monotonic() + _CONNECT_TIMEOUT + 2
        while self.client.status == "connecting" and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.client.status == "running":
            _LOST_AT.pop(self.where, None)
            return True
        self.gave_up(run_id)
        return False

    def gave_up(self, run_id: str) -> None:
        """Once dask has closed the client of a scheduler it lost (after trying for its
        connect timeout), the run ``run_id`` does not try it again for a while."""
        if self.address and run_id and self.where in _LOST_AT:
            _refuse(self.address, run_id, ExecutorUnavailable(
                f"executor 'dask': {_unreachable(self.address)}"))

    def serves(self, address: str) -> bool:
        """Whether it is the connection for the dask_scheduler setting ``address`` ("" for
        a LocalCluster) and its client can take tasks: dask closes a client that lost its
        scheduler for about 10 s, and then refuses every task it is given."""
        return self.address == address and self.client.status not in ("closing", "closed")

    def submit(self, payload: Any, key: str, marker: str, began: Callable[[], None],
               heard: _Heard) -> Any:
        """Send one attempt to the cluster; its future. ``began`` is called when a
        worker starts it: until then it waits in dask's queue for a free worker, which
        is not the step's time (its timeout begins then). ``heard`` takes its lines."""
        self.starting[key] = began
        self.hearing[key] = heard
        self._subscribe()
        future = self.client.submit(_run_on_worker, payload, key, marker, key=key, pure=False)
        self.running.add(future)
        return future

    def _subscribe(self) -> None:
        """Hear the workers' word that a task began, on this connection to the scheduler:
        one made again (a scheduler restarted) has forgotten the subscription."""
        connection = self.client.scheduler_comm
        if connection is None or connection is not self._subscribed:
            self.client.subscribe_topic(_BEGAN, self._began)
            self.client.subscribe_topic(_LINES, self._heard)
            self._subscribed = connection

    def _began(self, event: tuple[float, str]) -> None:
        """A worker began the task named in ``event`` (on the client's thread)."""
        began = self.starting.pop(event[1], None)
        if began is not None:
            began()

    def _heard(self, event: tuple[float, dict[str, Any]]) -> None:
        """Lines a worker sent (on the client's thread)."""
        heard = self.hearing.get(event[1].get("key", ""))
        if heard is not None:
            heard.hear(event[1])

    def state(self, key: str) -> str | None:
        """Where the scheduler has task ``key``: its state, or "executing" once its
        worker's heartbeat says it runs it ("processing" may mean in a worker's queue);
        None when the scheduler does not answer."""

        def where(dask_scheduler: Any) -> str:  # (nested: pickled by value, for a
            found = dask_scheduler.tasks.get(key)  #  scheduler without dagnb)
            if found is None:
                return "forgotten"
            worker = found.processing_on
            if worker is not None and found in getattr(worker, "executing", ()):
                return "executing"
            return str(found.state)

        try:
            return self.client.run_on_scheduler(where)
        except Exception:
            return None

    def result(self, future: Any) -> Any:
        """The task's return value (its exception if it raised); waits for it."""
        return self.client.gather(future, direct=self.direct)

    def finished(self, future: Any) -> bool:
        """The attempt of ``future`` has ended; whether it is to be closed now (the last
        step of a retired connection)."""
        self.running.discard(future)
        self.starting.pop(future.key, None)
        self.hearing.pop(future.key, None)
        return self.retired and not self.running

    def retire(self) -> None:
        """Close it once the steps it runs have ended (now, if none): the context has a
        new connection, and a run still under way keeps its steps on this one."""
        self.retired = True
        if not self.running:
            self.close()

    def release(self, *futures: Any) -> None:
        """Let the cluster drop the task and its input now: the error of an attempt
        that failed holds them (through its traceback) as long as the run keeps it."""
        for future in futures:
            if not isinstance(future, list):  # (a payload sent in the task)
                future.release()

    def stop(self, futures: Any) -> None:
        """Cancel the tasks; their workers then kill the steps' processes."""
        with contextlib.suppress(Exception):
            self.client.cancel(list(futures))

    def close(self) -> None:
        """Stop the steps still running (a worker finishes a task before it closes), then
        close the client and the cluster."""
        running = self.running.copy()  # steps may end meanwhile, on the run's thread
        if running:
            self.stop(running)
        with _quiet_cancelled():
            for part in (self.client, self.local):
                if part is not None:
                    with contextlib.suppress(Exception):
                        part.close()


@contextlib.contextmanager
def _quiet_cancelled() -> Iterator[None]:
    """Keep out of the log the error dask's client logs as it closes while it tries to
    reach a scheduler that is gone (its user closed the cluster dagnb was told of): its
    attempt cancelled, a 30-line traceback of CancelledError as the script exited."""
    logger = logging.getLogger("distributed.client")
    logger.addFilter(_not_cancelled)
    try:
        yield
    finally:
        logger.removeFilter(_not_cancelled)


def _not_cancelled(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, asyncio.CancelledError)


_SWAP = threading.Lock()  # one connection made at a time, whichever context asks
_LOST_AT: dict[str, str] = {}  # schedulers whose connection dropped: when (HH:MM:SS)


def _scheduler_address(client: Any) -> str:
    with contextlib.suppress(Exception):
        return str(client.scheduler.address)
    return "?"


def _unreachable(address: str, fix: bool = True) -> str:
    lost = _LOST_AT.get(address)
    said = f"the Dask scheduler at {address} is unreachable" + (
        f" (lost at {lost})" if lost else "")
    return said + ("; start it again, or fix the dask_scheduler setting "
                   "(DAGNB_DASK_SCHEDULER), and run again" if fix else "")


def _cluster(run_id: str = "") -> _Cluster:
    """The context's cluster connection: made on first use, and again once its client
    is closed (a scheduler gone for 10 s, a LocalCluster of the user's closed), which
    would otherwise refuse every later task of the process, or once the dask_scheduler
    setting names another cluster than the one it was opened for. ``run_id``: the run
    asking, which is not made to wait again for a scheduler that did not answer it."""
    address = settings().dask_scheduler or ""
    with _SWAP:
        found = context().peek(_CONTEXT_NAME)
        if found is not None and found.serves(address):
            return found
        if found is not None:
            found.gave_up(run_id)
        local = _drop(found, address) if found is not None else None
        cluster = _connect_unless_refused(address, local, run_id)
        context().set(_CONTEXT_NAME, cluster)
        return cluster


def _drop(cluster: _Cluster, address: str) -> Any:
    """Forget ``cluster`` and close it once its steps have ended. Its LocalCluster, when
    that still runs and ``address`` asks for it (""), is returned for the next
    connection instead."""
    context().pop(_CONTEXT_NAME)
    local = cluster.local
    if not address and local is not None and local.status.name == "running":
        cluster.local = None  # (not closed with its client)
    else:
        local = None
    if not cluster.running:
        atexit.unregister(cluster.close)  # (else closed at exit, if its steps run on)
    cluster.retire()
    return local


_REFUSED: dict[str, tuple[str, float, ExecutorUnavailable]] = {}  # address: run, when, why
_REFUSE_FOR = 30.0  # seconds a run is not made to wait again for a scheduler gone


def _refuse(address: str, run_id: str, error: ExecutorUnavailable) -> None:
    """Have the run ``run_id`` fail at once with ``error`` as it next asks for
    ``address``, for _REFUSE_FOR s (kept when it has been so since less)."""
    refused, when, _ = _REFUSED.get(address, ("", 0.0, None))
    if refused != run_id or time.monotonic() - when >= _REFUSE_FOR:
        _REFUSED[address] = (run_id, time.monotonic(), error)


def _connect_unless_refused(address: str, local: Any, run_id: str) -> _Cluster:
    """:func:`_connect`, but a scheduler that did not answer a run lately is not asked
    again by that run: its error is raised again at once. Each of its steps (and each
    retry) that found it gone waited the connect timeout, one after another. The next
    run asks again (the scheduler may have been started again meanwhile)."""
    refused, when, error = _REFUSED.get(address, ("", 0.0, None))
    if error is not None and run_id and refused == run_id \
            and time.monotonic() - when < _REFUSE_FOR:
        raise ExecutorUnavailable(*error.args)
    try:
        cluster = _connect(address, local)
    except ExecutorUnavailable as exc:
        if address:
            _refuse(address, run_id, exc)
        raise
    _REFUSED.pop(address, None)
    return cluster


def _connect(address: str, local: Any = None) -> _Cluster:
    """A new connection: to the dask_scheduler setting's address, else to ``local`` (a
    LocalCluster dagnb started, still running) or to a new LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ExecutorUnavailable(
            f"executor 'dask' needs dask.distributed, which is not installed; {_INSTALL}"
        ) from None
    _quiet_lost_inputs()
    _quiet_reconnects()
    if address:
        try:
            _answers(address)
            cluster = _Cluster(Client(address, set_as_default=False,
                                      timeout=f"{_CONNECT_TIMEOUT}s"), address=address)
            _LOST_AT.pop(address, None)
        except Exception as exc:
            if address in _LOST_AT:  # (this process lost it: since when)
                raise ExecutorUnavailable(f"executor 'dask': {_unreachable(address)} "
                                          f"({exception_line(exc)})") from None
            raise ExecutorUnavailable(
                f"executor 'dask' cannot reach the scheduler {address!r} "
                f"({exception_line(exc)}); start it or fix the dask_scheduler setting "
                "(DAGNB_DASK_SCHEDULER): a scheduler's address, not its dashboard's"
            ) from None
    elif local is not None:
        cluster = _Cluster(Client(local, set_as_default=False), local)
    else:
        try:
            local = LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=logging.ERROR,
            )
        except RuntimeError as exc:  # ("Nanny failed to start.")
            raise ExecutorUnavailable(
                f"executor 'dask': the LocalCluster's workers did not start ({exc}); "
                "a script that runs a graph at its top level needs it under "
                "if __name__ == \"__main__\": (each worker imports the script again)"
            ) from None
        cluster = _Cluster(Client(local, set_as_default=False), local)
    atexit.register(cluster.close)
    return cluster


def _quiet_lost_inputs() -> None:
    """Keep out of this process's log the scheduler's error that a worker's death lost
    data sent ahead of a task, when that data is steps' inputs only: the step's own error
    says it, in its row, as for a step with no such input (a LocalCluster's scheduler
    runs here, and the error reached a notebook under the run, naming a dask key)."""
    logger = logging.getLogger("distributed.scheduler")
    if _not_lost_inputs not in logger.filters:
        logger.addFilter(_not_lost_inputs)


def _quiet_reconnects() -> None:
    """Keep out of this process's log dask's error that its client failed to connect
    again to a scheduler dagnb lost: the steps' rows say that it is unreachable, and
    since when (it reached the CLI's output, between its progress lines)."""
    logger = logging.getLogger("distributed.client")
    if _not_reconnects not in logger.filters:
        logger.addFilter(_not_reconnects)


def _not_reconnects(record: logging.LogRecord) -> bool:
    return not (_LOST_AT and record.getMessage().startswith("Failed to reconnect"))


_LOST_DATA = re.compile(r"lose scattered data.*?\{([^}]*)\}")


def _not_lost_inputs(record: logging.LogRecord) -> bool:
    found = _LOST_DATA.search(record.getMessage())
    if found is None:
        return True
    keys = re.findall(r"'([^']*)'", found.group(1))
    return not keys or not all(k.startswith("dagnb-") and k.endswith(_INPUT) for k in keys)


def _answers(address: str) -> None:
    """Raise unless a dask scheduler answers at ``address`` within the connect timeout.
    Client() waits for the handshake without a limit: an address that accepts and stays
    silent (an SSH tunnel to a gone host, a proxy, the dashboard's port) hung the run."""
    from distributed.comm import connect
    from distributed.security import Security

    async def probe() -> None:
        args = Security().get_connection_args("client")
        comm = await asyncio.wait_for(  # (a second more: a refused connect says so)
            connect(address, timeout=_CONNECT_TIMEOUT, **args), _CONNECT_TIMEOUT + 1)
        await comm.close()

    try:
        asyncio.run(probe())
    except asyncio.TimeoutError:
        raise TimeoutError(f"no answer within {_CONNECT_TIMEOUT + 1:g} s") from None


def close() -> None:
    """Close the current context's dask client (and the LocalCluster it started); the
    next dask step connects again."""
    cluster = context().pop(_CONTEXT_NAME)
    if cluster is not None:
        cluster.close()
        atexit.unregister(cluster.close)


# -- the worker side ------------------------------------------------------------------
_POLL = 0.1  # seconds between looks at whether the task is still wanted


def _run_on_worker(payload: list[wire.Frame], key: str, marker: str) -> dict[str, Any]:
    """The dask task: run the step in a child process, return what became of it."""
    from distributed import get_worker

    if not _first_start(marker):
        return {"status": "lost", "lines": []}

    worker = get_worker()
    worker.log_event(_BEGAN, key)  # its timeout starts now, not as it waited for a worker
    # the token is in the child's environment, inherited by what it starts; the worker's
    # watcher kills its group and what carries the token should this worker die first
    processes = StepProcesses(new_token())
    # in the worker's own folder: dask removes it when the worker closes, and a killed
    # worker's when the next one starts, with the step's files in it
    where = getattr(worker, "local_directory", None)
    with tempfile.TemporaryDirectory(prefix="dagnb-", dir=where) as scratch:
        files = {name: os.path.join(scratch, name) for name in _FILES}
        with open(files["step"], "wb") as handle:
            pickle.dump((os.getpid(), sys.path), handle)
            wire.write(handle, payload)
        child = _start(files, processes)
        with open(files["stdout"], "rb") as stdout, open(files["stderr"], "rb") as stderr, \
                open(files["order"], "rb") as order:
            tail = _Tail({"stdout": stdout, "stderr": stderr}, order, key, worker,
                         files["secrets"])
            _wait(child, processes, lambda: _wanted(worker, key), tail.send)
            tail.send(last=True)
        if child.returncode == 0 and os.path.exists(files["result"]):
            report = _read_report(files["result"])
            return {**report, "lines": tail.lines + report.pop("lines", []),
                    "cut": sorted(tail.cut)}
        return {"status": "died", "lines": tail.lines, "cut": sorted(tail.cut),
                "exit_code": child.returncode}


class _Tail:
    """The lines the child writes to its stdout and stderr files, read as they come
    (every _POLL s) and sent to the client in events of topic _LINES, masked with the
    secrets the child has (the scheduler keeps its last events), which it writes to the
    file ``secrets`` before the step runs: no line goes before that file is there.
    A step stopped or lost keeps what it printed. The two files' lines are put in the
    order the child printed them by the file ``order`` (:class:`_Tagged`: a byte for
    each line it printed, its stream's); a line no byte names (written below Python: a
    subprocess's, C code's) goes a turn after it came, stdout's first. A stream's end
    without a newline (the step cut off mid-line) is masked as the last of its line
    (:meth:`~dagnb.model.masking.Masker.masked_as_last`), here and by the client."""

    _CHUNK = 1 << 16  # bytes of lines, about, in one event

    def __init__(self, handles: dict[str, Any], order: Any, key: str, worker: Any,
                 secrets: str) -> None:
        self.lines: list[tuple[str, str]] = []
        self.cut: set[int] = set()  # the numbers in ``lines`` of those cut off mid-line
        self._key, self._worker, self._secrets = key, worker, secrets
        self._mask: Masker | None = None
        self._sent = 0
        self._handles = handles  # the streams' files, read as they grow
        self._partial = dict.fromkeys(handles, b"")
        self._order, self._tags = order, b""  # (tags not yet matched with a line)
        self._queued: dict[str, collections.deque[str]] = {
            stream: collections.deque() for stream in handles}
        self._stale = dict.fromkeys(handles, 0)  # lines queued a turn already

    def send(self, last: bool = False) -> None:
        """Send the lines written since the last turn (``last``: a last line unended
        too, and the word that no more come)."""
        cut = []
        for stream, handle in self._handles.items():
            *whole, rest = (self._partial[stream] + handle.read()).split(b"\n")
            if last and rest:
                whole, rest = [*whole, rest], b""
                cut.append(stream)
            self._partial[stream] = rest
            self._queued[stream] += [line.decode("utf-8", "replace") for line in whole]
        self._in_order(last)
        self.cut.update(self._last_of(stream) for stream in cut)
        if self._mask is None and not self._read_secrets():
            return  # (the step has not run yet; its report has these lines)
        while self._sent < len(self.lines) or last:
            self._event(last)
            last = last and self._sent < len(self.lines)

    def _in_order(self, last: bool) -> None:
        """Move the queued lines to ``lines``: those a turn old first, then as the
        tags say, and all that are left at the ``last``."""
        for stream, queue in self._queued.items():
            self._move(stream, min(self._stale[stream], len(queue)))
        self._tags += self._order.read()
        used = 0
        for tag in self._tags:
            stream = _TAGS.get(tag, "stdout")
            if not self._queued[stream]:
                break
            self._move(stream, 1)
            used += 1
        self._tags = self._tags[used:]
        for stream, queue in self._queued.items():
            self._stale[stream] = len(queue)
            if last:
                self._move(stream, len(queue))

    def _move(self, stream: str, count: int) -> None:
        queue = self._queued[stream]
        self.lines += [(stream, queue.popleft()) for _ in range(count)]

    def _last_of(self, stream: str) -> int:
        """The number of the last line in ``lines`` of ``stream``."""
        return next(number for number in range(len(self.lines) - 1, -1, -1)
                    if self.lines[number][0] == stream)

    def _read_secrets(self) -> bool:
        from dagnb.model.masking import Masker

        try:
            with open(self._secrets, encoding="utf-8") as handle:
                self._mask = Masker(json.load(handle))
        except (OSError, ValueError):  # (not written yet, or not whole yet)
            return False
        return True

    def _event(self, last: bool) -> None:
        chunk, size = [], 0
        for number, (stream, line) in enumerate(self.lines[self._sent:], self._sent):
            if chunk and size + len(line) > self._CHUNK:
                break
            chunk.append([stream, self._masked(number, line)])
            size += len(line)
        at, self._sent = self._sent, self._sent + len(chunk)
        end = last and self._sent == len(self.lines)
        cut = sorted(number for number in self.cut if at <= number < self._sent)
        with contextlib.suppress(Exception):  # (a closing worker: the report has them)
            self._worker.log_event(_LINES, {"key": self._key, "at": at, "lines": chunk,
                                            "end": end, "cut": cut})

    def _masked(self, number: int, line: str) -> str:
        if self._mask is None:
            return line
        return self._mask.masked_as_last(line) if number in self.cut else self._mask(line)


def _read_report(path: str) -> dict[str, Any]:
    """The child's report, with the frames of its result as memoryviews: dask sends
    those as they are, where bytes in a dict are copied into its pickle."""
    with open(path, "rb") as handle:
        report = pickle.load(handle)
        if report["status"] == "ok":
            report["result"] = [memoryview(frame) for frame in wire.read(handle)]
    return report


_FILES = ("step", "stdout", "stderr", "result", "secrets", "order")
_TAGS = {ord("o"): "stdout", ord("e"): "stderr"}  # the bytes of the file ``order``


def _first_start(marker: str) -> bool:
    """False when dask starts the task again because the worker running it died: the
    step's $DAGNB_OUT holds what the lost run wrote, which a silent second run would add
    to and the cache store as its outputs. The runner's retry starts in an empty one.
    A worker without the run's folder cannot tell, and keeps the step's files anyway."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def _start(files: dict[str, str], processes: StepProcesses) -> subprocess.Popen[bytes]:
    """Start the child with files for its streams, not pipes: a process the step leaves
    running inherits them, and a pipe would keep the task waiting for that process.
    The worker's watcher is told the child's token before it starts, its group after."""
    env = {**os.environ, TOKEN_VARIABLE: processes.token}
    open(files["order"], "wb").close()  # (read by the worker from the start)
    processes.announce()
    try:
        with open(files["step"], "rb") as stdin, open(files["stdout"], "wb") as stdout, \
                open(files["stderr"], "wb") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, files["result"]],
                stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                start_new_session=True,  # its own process group, killed as one
            )
    except BaseException:
        processes.forget_group()  # (nothing started: nothing for the watcher to kill)
        raise
    processes.set_group(child.pid)
    return child


def _wait(child: subprocess.Popen[bytes], processes: StepProcesses,
          wanted: Callable[[], bool], each_turn: Callable[[], None]) -> None:
    """Wait for the child to exit, killing it once the task is unwanted; then kill what
    it left: its process group, and (Linux) every process carrying its token; the
    watcher is then told they are gone."""
    try:
        while not _exited(child):
            time.sleep(_POLL)
            each_turn()
            if not wanted():
                _kill_group(child.pid)
    finally:
        _kill_group(child.pid)  # before the reap: the pid cannot name another group yet
        child.wait()
        child.wait()
        kill_tagged([processes.token])  # those that left the group (setsid); Linux only
        processes.forget_group()


def _exited(child: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited; on Linux it is left unreaped, so its pid (its group's
    id) stays reserved until the group is killed."""
    if not hasattr(os, "waitid") or not hasattr(os, "WNOWAIT"):
        return child.poll() is not None
    return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wanted(worker: Any, key: str) -> bool:
    """Whether the worker still runs ``key``: a cancelled future, a client gone or a
    worker closing marks its task 'cancelled' (or forgets it) but lets the thread run."""
    task = worker.state.tasks.get(key)
    return task is not None and task.state not in ("cancelled", "released")


# The child's whole program: it imports no more than the step needs.
_PR_SET_PDEATHSIG = 1
_CHILD_MAIN = "from dagnb.executors.dask import child_main; child_main()"


def child_main() -> NoReturn:
    """In the child: read the step from stdin, call it, write how it ended (argv[1])."""
    worker, paths = pickle.load(sys.stdin.buffer)
    _die_with(worker)
    _tag_lines()
    sys.path[:] = [p for p in paths if p] + [p for p in sys.path if p not in paths]
    *loads, load_modules = wire.loaders(wire.read(sys.stdin.buffer))
    shipped.serve(load_modules())  # (before the rest: unpickling it imports them)
    try:
        (func, kwargs, spec, raw), *values, sources = [load() for load in loads]
    except ModuleNotFoundError as exc:
        _end(_missing_module(exc))
    kwargs.update(zip(raw, values, strict=True))
    del values
    for filename, lines in sources.items():  # no mtime: linecache keeps them as they are
        linecache.cache.setdefault(filename, (sum(map(len, lines)), None, lines, filename))
    # the worker may have inherited other steps' secrets: not the step's to read
    inherited = {name: os.environ.pop(name, "") for name in spec["withheld"]}
    for name in spec.get("unset", ()):  # (keyed as unset; an older client sends none)
        os.environ.pop(name, None)
    os.environ.update(spec["env"])
    _remember_secrets(spec.get("secrets", ()), inherited)  # (an older client: none)
    _unshared_contract(func, spec, scratch=os.path.dirname(sys.argv[1]))
    if os.path.isdir(spec["cwd"]):
        os.chdir(spec["cwd"])
    _end(_call(func, kwargs, spec))


def _end(report: dict[str, Any]) -> NoReturn:
    """Write the report and end the child: the step ends as its function returns, as on
    the local executor. A normal exit would first join the non-daemon threads the step
    left running, holding the step (and its timeout) for them; they are killed instead.
    The process's exit work runs (atexit: a ``dagnb.Memory``'s counts, logging's
    flush), but not the collection of objects left alive: a file the step left open and
    unflushed in a global keeps what it flushed only."""
    _write_report(report)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)


class _Tagged(io.TextIOWrapper):
    """The child's stdout or stderr: line-buffered, so that a line printed is in its
    file at once, as its worker reads it (a file's buffer of 8 kB held a step's prints
    without flush=True until it ended, and a timeout's kill lost them); and a byte
    (``tag``) is added to the file ``order`` for each line, so that the worker tells
    in which order the two files' lines came (:class:`_Tail`)."""

    def __init__(self, stream: Any, tag: bytes, order: int) -> None:
        super().__init__(stream.buffer, encoding=stream.encoding, errors=stream.errors,
                         line_buffering=True)
        self.tag, self.order = tag, order

    def write(self, text: str) -> int:
        written = super().write(text)  # (in its file now: line-buffered)
        lines = text.count("\n")
        if lines:
            with contextlib.suppress(OSError):
                os.write(self.order, self.tag * lines)
        return written


def _tag_lines() -> None:
    """Make the child's stdout and stderr :class:`_Tagged`."""
    try:
        order = os.open(os.path.join(os.path.dirname(sys.argv[1]), "order"),
                        os.O_WRONLY | os.O_APPEND)
    except OSError:  # (no such file: its worker reads none)
        return
    sys.stdout = _Tagged(sys.stdout, b"o", order)
    sys.stderr = _Tagged(sys.stderr, b"e", order)


def _remember_secrets(names: Iterable[str], inherited: dict[str, str]) -> None:
    """Keep the run's secrets that this process has out of any ``dagnb.Memory`` cache a
    call in it writes, in the step or in a thread the step leaves running, as the
    client's process keeps a run's (it remembers them; nothing here did): the step's
    own, and those the worker inherited. Only names travel for it: no value reaches
    the worker that was not there. A call in the step's context finds them in its
    task (:func:`_child_task`), as on the local executor."""
    from dagnb.cache.secret_scan import remember_secrets, set_secrets_source
    from dagnb.executors.context import step_secrets

    known = {**inherited, **{name: secret_value(name) for name in names}}
    remember_secrets(known)
    set_secrets_source(step_secrets)
    _write_secrets(sorted({value for value in known.values() if value}))


def _write_secrets(values: list[str]) -> None:
    """The values its worker masks in the lines it sends as they come (:class:`_Tail`),
    written whole under their name (the worker reads none until it is there). The step's
    file in the same folder holds them already."""
    path = os.path.join(os.path.dirname(sys.argv[1]), "secrets")
    with open(path + ".part", "w", encoding="utf-8") as handle:
        json.dump(values, handle)
    os.replace(path + ".part", path)


def _write_report(report: dict[str, Any]) -> None:
    """The report, and after it the frames of the step's result, as they are."""
    sys.stdout.flush()
    sys.stderr.flush()
    frames = report.pop("result", None)
    with open(sys.argv[1], "wb") as handle:
        pickle.dump(report, handle)
        if frames is not None:
            wire.write(handle, frames)


def _missing_module(exc: ModuleNotFoundError) -> dict[str, Any]:
    """The failure of a step whose function or arguments name a module the worker does
    not have (a helper module beside the notebook): pickled by reference, it is
    imported before the step's code runs, so no traceback of the user's says why."""
    name = exc.name or "?"
    return {
        "status": "error", "transient": False, "tail": "", "lines": [],
        "summary": f"the dask worker cannot load the step: {exception_line(exc)} "
                   "(the step's function or an argument is defined there); install "
                   f"{name!r} on the workers or put it on their PYTHONPATH, or send its code "
                   "with the step: "
                   f"cloudpickle.register_pickle_by_value({name.split('.')[0]}) before the run",
    }


def _unshared_contract(func: Any, spec: dict[str, Any], scratch: str) -> None:
    """On a worker that does not share the client's run folder (the params file the
    client wrote is not there), the params go to a file in the attempt's scratch
    folder, and ``$DAGNB_IN`` is unset: the upstream outputs are on the client only."""
    if os.path.exists(os.environ["DAGNB_PARAMS"]):
        return
    from dagnb.model.step import Step

    params_file = os.path.join(scratch, "params.json")
    write_params(Step(spec["name"], func=func, params=spec["params"]), Path(params_file))
    os.environ["DAGNB_PARAMS"] = params_file
    os.environ.pop("DAGNB_IN", None)


def _die_with(worker: int) -> None:
    """On Linux, the child is killed when its worker process ends: a closed or lost
    worker leaves no step running (the child has a process group of its own). The signal
    reaches the child only: the worker's watcher kills the processes it started."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker's kill on cancel still works
        return
    if os.getppid() != worker:  # it ended before the prctl call took effect
        os._exit(1)


def _call(func: Any, kwargs: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Call the step function with ``dagnb.current()`` set up; a report of the ending."""
    import cloudpickle

    from dagnb.executors.capture import routed_output
    from dagnb.executors.context import StepContext

    lines: list[tuple[str, str]] = []
    task = _child_task(func, spec, lambda stream, line: lines.append((stream, line)))
    try:
        with routed_output(lambda stream, line: None, StepContext(task)):
            result = asyncio.run(func(**kwargs)) if spec["is_async"] else func(**kwargs)
    except SystemExit as exc:  # reported, so that the worker tells it from os._exit()
        return {**_exit_report(task, exc.code), "lines": lines}
    except BaseException as exc:  # (KeyboardInterrupt or the user's own fails, as on local;
        served.explain_unshipped(exc, "install the project on the workers")  # (unreported,
        return {**_error_report(task, exc), "lines": lines}  # it read os._exit())
    try:
        return {"status": "ok", "result": wire.pack([result], cloudpickle.Pickler)}
    except Exception as exc:
        return {**_error_report(task, TypeError(
            f"step {spec['name']!r} returned {type(result).__name__} that cannot be pickled "
            f"back from the worker ({exc}); return plain data or write files to its out_dir"
        )), "lines": lines}


def _child_task(func: Any, spec: dict[str, Any], log: Any) -> Task:
    """A Task as ``dagnb.current()``, the failure report and a ``dagnb.Memory`` call
    in the step (the secrets this process remembers) read it."""
    from dagnb.cache.secret_scan import secrets_in_force
    from dagnb.model.step import Step

    step = Step(spec["name"], func=func, params=spec["params"])
    inputs = {name: Input(name, path) for name, path in spec["inputs"].items()}
    task = Task(step=step, attempt=spec["attempt"], inputs=inputs, secrets={},
                base_dir=Path.cwd(), log=log,
                out_dir=Path(spec["out_dir"]))
    task.cache_secrets = secrets_in_force()
    return task


def _exit_report(task: Task, code: object) -> dict[str, Any]:
    """A step that called ``sys.exit(code)`` ends as a script would, as on the local
    executor: its exit status (0 succeeds, with no result), a message printed."""
    from dagnb.executors.local import exit_status

    status, message = exit_status(code)
    if message:
        task.log("stderr", message)
    return {"status": "exit", "exit_code": status}


def _error_report(task: Task, exc: BaseException) -> dict[str, Any]:
    """The failure in a line, whether a retry may pass; the task's log gets the user's
    traceback, less dagnb's frames, as the local executor writes it."""
    from dagnb.executors.local import _failure
    from dagnb.retry.policy import classify

    failure = _failure(task, exc)
    return {
        "status": "error",
        "summary": str(failure),
        "tail": failure.stderr_tail,
        "transient": classify(exc) == "transient",
    }
