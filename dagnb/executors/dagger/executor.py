"""The Dagger executor: each step runs in a container through the Dagger engine.

Steps without an ``image`` run in ``python:3.12-slim`` (:data:`DEFAULT_IMAGE`). The
pipeline a task becomes is described in :mod:`dagnb.executors.dagger.translate`. All
steps share the process's one engine connection (:mod:`dagnb.executors.dagger.connection`) and run
concurrently on it; the runner decides how many at once.

Output: Dagger hands over a command's stdout and stderr when it has finished, not as it
runs, so a step's log lines arrive together at its end (the engine's own progress
output is live in ``dagger run``'s view, and otherwise goes to the run folder's
``engine.log``: :mod:`dagnb.executors.dagger.enginelog`); a step stopped before its
command ended (its timeout, a cancel) gets none, and its log says so and where to look
(:func:`_output_withheld`). The output directory is
exported into the task's ``out_dir`` for the cache, and also returned as
``Outcome.handle`` so that downstream Dagger steps mount it directly; a link in it that
leads out of it is set aside on this machine (:mod:`dagnb.executors.dagger.links`).
``Outcome.image_ref`` is the digest the image resolved to (asked with its ``USER``, once
per image and session), a failed exec's too: its ``Outcome``'s, or its ``StepFailed``'s
``image_ref``.

Errors: execs keep Dagger's default ``expect: SUCCESS``, so a non-zero exit is a
``dagger.ExecError``, which the engine does not cache (a retry runs again) and which
``dagger run`` and Dagger Cloud show as a failure. It becomes an ``Outcome`` with that
exit code and the logs, as on the local executor (a Python step's ``sys.exit(3)`` too);
a Python step's failure (named by its exception's line), one whose process ended without
returning (``os._exit()``: the shim then fails the exec whatever the code, so the engine
caches nothing; :mod:`dagnb.executors.dagger.shim`), or a kill by a signal, becomes
``StepFailed`` with the output's tails, its output in the logs all the same; a dropped
or refused connection becomes ``TransientError``, which the runner retries and the
circuit breaker counts; a file-system error on this machine (staging an input) is named
as such, with its path, not as the engine's. Secret values are masked as ``***`` in what
every message holds of the step's output or the engine's words, not in dagnb's own (a
secret ``1`` leaves ``exit code 1``): such errors are marked ``masked``. Cancelling
``execute`` cancels the in-flight request, and the engine stops the work of a request
whose client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dagnb.cache.images import digest_of
from dagnb.errors import DagnbError, ExecutorUnavailable, StepFailed, TransientError
from dagnb.executors.base import NO_RESULT, Availability, Outcome, Task
from dagnb.executors.dagger import connection, links, shim
from dagnb.executors.dagger.enginelog import ENGINE_LOG
from dagnb.executors.dagger.translate import (
    CONTAINER_OUT,
    DEFAULT_IMAGE,
    VOLATILE_SINCE,
    ServiceLookup,
    build_container,
    image_container,
    image_from,
    parse_registry_auth,
    staged_inputs,
    volume_key,
)
from dagnb.executors.local import ended_without_result, output_unreached_line
from dagnb.model.masking import Masker
from dagnb.model.results import load_result

__all__ = ["DEFAULT_IMAGE", "DaggerExecutor"]

_TAIL = 2000  # characters of stdout/stderr kept in a StepFailed
_SIGNALLED = range(128, 192)  # exit codes of a process killed by a signal (137: OOM kill)
T = TypeVar("T")


class DaggerExecutor:
    """Runs steps in containers on a Dagger engine.

    Parameters
    ----------
    default_image
        Image for steps that name none (``python:3.12-slim``).
    registry_auth
        ``{"address", "username", "password_env" | "token_env"}`` or a list of them;
        the password is read from that variable at run time and sent as a Dagger secret.
    services
        ``alias -> dagger.Service`` for steps with ``services=[...]``; defaults to the
        services started with :func:`dagnb.executors.dagger.services.start`.
    """

    name = "dagger"
    capabilities = frozenset({"shell", "argv", "python", "containers", "services"})

    def __init__(
        self,
        *,
        default_image: str = DEFAULT_IMAGE,
        registry_auth: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
        services: ServiceLookup | None = None,
    ) -> None:
        self.default_image = default_image
        self.registry_auth = parse_registry_auth(registry_auth)
        self._services = services

    def availability(self) -> Availability:
        return connection.detect()

    async def aclose(self) -> None:
        await connection.aclose()

    async def execute(self, task: Task) -> Outcome:
        found = self.availability()
        if not found.available:
            raise ExecutorUnavailable(f"executor 'dagger' is not available: {found.reason}")
        # One span per step: dagger-io sends the trace context with every query, so
        # `dagger run` and Dagger Cloud group the step's execs under its name.
        attributes = {"dagnb.step": task.step.name, "dagnb.attempt": task.attempt,
                      "dagnb.run_id": task.run_id}
        # The engine's progress output, while the step runs, goes to its run's folder.
        engine_log = connection.engine_log().attached(Path(task.step_dir).parent,
                                                      self._secret_values(task))
        try:
            with engine_log, _tracer().start_as_current_span(task.step.name,
                                                             attributes=attributes):
                return await self._execute(task)
        except BaseException as exc:  # (3.10's contextlib keeps an error that leaves a
            _untangled(exc)  # ``with`` in a frame of its traceback: see _untangled)
            raise exc.with_traceback(None)  # noqa: B904 (the same error, on its way)

    async def _execute(self, task: Task) -> Outcome:
        dagger = connection.require_sdk()
        secrets = self._secret_values(task)
        mask = _output_mask(task, secrets)
        dag = None
        try:
            dag = await connection.client()
            volatile = await connection.engine_version() >= VOLATILE_SINCE
            image = image_container(dag, task, default_image=self.default_image,
                                    registry_auth=self.registry_auth)
            facts = await self._image_facts(self._image_key(task), image)
            with staged_inputs(task) as staged:
                ctr = build_container(dag, task, image=image, services=self._services,
                                      registry_auth=self.registry_auth,
                                      volatile_variables=volatile,
                                      owner=task.step.user or facts["user"],
                                      empty=await connection.constant("empty", dag.directory),
                                      volumes=await _volumes(dag, task), staged=staged)
                outcome = await _run(ctr, task)
            return dataclasses.replace(outcome, image_ref=facts["image_ref"])
        except DagnbError as exc:
            raise _masked(exc, secrets) from None
        except asyncio.CancelledError as cancel:  # (a timeout, a cancel: through the SDK's
            _untangled(cancel)  # retrying, which holds it, a cycle: see _untangled)
            raise cancel.with_traceback(None)  # noqa: B904 (the same cancel, on its way)
        except dagger.ExecError as exc:
            failed = _failed_exec(task, exc, mask)
            _untangled(exc)
        except Exception as exc:
            if connection.is_transient(exc):  # the session may be gone: a retry gets a new one
                await connection.reopen(dag)
            _untangled(exc)  # (its words are what the step's error says of it)
            raise _classified(f"step {task.step.name!r}", exc, mask, dagger,
                              task.step.name) from None
        # The image ran, failed or not: its digest is named as a succeeded step's is.
        if isinstance(failed, StepFailed):
            failed.image_ref = facts["image_ref"]  # type: ignore[attr-defined]
            try:
                raise failed
            finally:  # (its traceback holds this frame: no cycle through this name)
                failed = None  # type: ignore[assignment]
        return dataclasses.replace(failed, image_ref=facts["image_ref"])

    async def image_ref(self, image: str, platform: str | None = None, *,
                        step: str | None = None) -> str:
        """The digest reference tag ``image`` resolves to on the engine now
        (``docker.io/library/python:3.12-slim@sha256:…``); what ``pin_images`` pins.

        Its errors are those of a step's exec (``step``: the step it is asked for,
        named in them): the engine's words masked, a network failure a TransientError,
        others StepFailed. It is asked before the step's attempts, so no retry of the
        runner's follows: a dropped connection is asked once more here, in a new
        session if the old one was lost."""
        try:
            try:
                return await self._image_ref(image, platform)
            except Exception as exc:
                if not connection.is_transient(exc):
                    raise
            return await self._image_ref(image, platform)  # (a lost session was reopened)
        except DagnbError as exc:  # (no engine, a registry password not set: one line)
            raise _masked(exc, self._registry_secrets()) from None
        except Exception as exc:
            raise self._image_error(exc, image, step) from None

    async def _image_ref(self, image: str, platform: str | None) -> str:
        dag = await connection.client()
        try:
            container = image_from(dag, image, platform, self.registry_auth)
            facts = await self._image_facts((image, platform), container)
        except Exception as exc:
            if connection.is_transient(exc):  # the session may be gone: the next ask reopens
                await connection.reopen(dag)
            raise
        # The pinned reference names the same image: its steps need not ask again.
        pinned = f"{image.partition('@')[0]}@{digest_of(facts['image_ref'])}"
        await connection.remembered(("image", pinned, platform), functools.partial(_same, facts))
        return facts["image_ref"]

    async def _image_facts(self, key: tuple[str, str | None], image: Any) -> dict[str, str]:
        """The image's ``USER`` ("" is root) and ``imageRef`` (the digest it resolved
        to), both in one query, asked once per image and session (tags resolve once per
        session in the engine too). The engine answers ``imageRef`` only right after
        ``from``, so it cannot ride on the exec's query."""
        facts = image._select_multiple(user="user", image_ref="imageRef")
        return await connection.remembered(("image", *key),
                                           functools.partial(facts.execute, dict[str, str]))

    def _image_error(self, exc: Exception, image: str, step: str | None) -> DagnbError:
        """An error resolving ``image`` worded as a step's exec's; not marked masked, so
        the run masks it with its steps' secrets too (only the registry's are known
        here)."""
        mask = Masker(self._registry_secrets())
        who = f"step {step!r}" if step else f"image {image!r}"
        error = _classified(who, exc, mask, connection.require_sdk(), step)
        error.masked = False  # type: ignore[attr-defined]  # (both kinds have it)
        return error

    def _image_key(self, task: Task) -> tuple[str, str | None]:
        return task.step.image or self.default_image, task.step.platform

    def _secret_values(self, task: Task) -> list[str]:
        return [v for v in task.secrets.values() if v] + self._registry_secrets()

    def _registry_secrets(self) -> list[str]:
        values = []
        for auth in self.registry_auth:
            with contextlib.suppress(DagnbError):  # build_container names the variable
                values.append(auth.secret_value())
        return [v for v in values if v]


async def _same(value: Any) -> Any:
    return value


async def _run(ctr: Any, task: Task) -> Outcome:
    try:  # runs the exec; a non-zero exit raises dagger.ExecError
        ctr = await _apart(ctr.sync())
    except asyncio.CancelledError:  # (a timeout, a cancel: the engine keeps what it printed)
        task.log("stderr", _output_withheld(task))
        raise
    # Both in one query: each is a round trip of its own otherwise.
    output = await _apart(ctr._select_multiple(stdout="stdout", stderr="stderr").execute(
        dict[str, str]))
    _log(task, "stdout", output["stdout"])
    _log(task, "stderr", output["stderr"])
    out = connection.adopt(ctr.directory(CONTAINER_OUT))
    await _apart(out.export(str(task.out_dir)))
    # (before anything here reads them: a link out of $DAGNB_OUT names the container's file)
    links.set_aside_leaving_links(task.out_dir)
    result = load_result(task.out_dir) if task.step.func is not None else NO_RESULT
    return Outcome(exit_code=0, result=result, handle=out)


async def _apart(query: Awaitable[T]) -> T:
    """``await query`` in a task of its own: the frames of dagger-io's (and httpx's,
    tenacity's) that a failed try leaves in a cycle (an error kept in a frame of its own
    traceback) hold their callers' frames, up to the task's first; in this task, those
    of this executor, which hold the step's task, and so its run, are not among them. A
    cancel of this task reaches that one."""
    return await asyncio.ensure_future(query)


def _output_withheld(task: Task) -> str:
    """The log line of a step stopped before its command ended: the engine hands a
    command's output over only when it ends, so none reached dagnb, and the run must not
    read as a step that printed nothing. Where the engine showed it as it ran: its
    progress output in the run's ``engine.log``, or ``dagger run``'s view."""
    where = (f"{Path(task.step_dir).parent / ENGINE_LOG}, the engine's log of this run"
             if not os.environ.get("DAGGER_SESSION_PORT") else
             "the view of the `dagger run` it ran under (or its Dagger Cloud trace)")
    return (f"dagnb: the Dagger engine returned none of the output of step "
            f"{task.step.name!r}: it hands a command's output over when the command ends, "
            f"and this one was stopped before; what it printed as it ran is in {where}")


@functools.cache
def _tracer() -> Any:
    """dagger-io's OpenTelemetry tracer (configured from OTEL_* variables, as under
    ``dagger run``; without them its spans cost next to nothing)."""
    from dagger import telemetry

    return telemetry.get_tracer()


async def _volumes(dag: Any, task: Task) -> dict[str, Any]:
    """The step's cache volumes, each ID asked once per session."""
    keys = {alias: volume_key(task, alias) for alias in task.step.cache_volumes}
    return {alias: await connection.constant(("volume", key),
                                             functools.partial(dag.cache_volume, key))
            for alias, key in keys.items()}


def _failed_exec(task: Task, exc: Any, mask: _Mask) -> Outcome | StepFailed:
    """A command's non-zero exit is an Outcome with its logs, as on the local executor
    (a Python step's sys.exit(3) too); a Python step that raised (a cell's --outputs
    name its code did not reach, in one line), or ended without returning (os._exit()),
    or a kill by a signal is a StepFailed. Every one's output
    reaches the run's logs first: the local executor's does too."""
    stdout = exc.stdout or ""
    stderr, how = shim.ending(exc.stderr or "") if task.step.func else (exc.stderr or "", "")
    _log(task, "stdout", stdout)
    _log(task, "stderr", stderr)
    code = exc.exit_code
    if how.startswith("died "):  # before the signal's case: its code is the step's own
        return _died(task, int(how.removeprefix("died ")), _tails(mask, stdout, stderr))
    if how == "exit":  # (its sys.exit(137) too: no kill)
        return Outcome(exit_code=code)
    if code in _SIGNALLED:
        return _exec_failed(task, code, _tails(mask, stdout, stderr))
    if how == "raised":
        return _raised(task, code, mask(stderr), _tails(mask, stdout, stderr))
    if how.startswith("unreached "):  # (the shim printed no traceback: a line dagnb wrote)
        return StepFailed(output_unreached_line(task.step.name, how.removeprefix("unreached ")),
                          step=task.step.name, exit_code=code)
    if how.startswith(("wrote ", "unloadable ")):  # (its own result file: the shim saved nothing)
        return StepFailed(_own_result_refused(task.step.name, how, mask), step=task.step.name,
                          masked=True)
    return Outcome(exit_code=code)


def _own_result_refused(step: str, how: str, mask: _Mask) -> str:
    """The local executor's words (:func:`~dagnb.model.results.own_result`) for a step
    that wrote its own result file and returned a value ("wrote result.json"), or
    returned None and wrote one that does not load ("unloadable result.json: why")."""
    if how.startswith("wrote "):
        return (f"step {step!r} {how}, the name dagnb keeps its returned value under; "
                "name the file otherwise (metrics.json), or return None to make that "
                "file the step's result")
    name, _, why = how.removeprefix("unloadable ").partition(": ")
    return (f"step {step!r} returned None and wrote {name}, which dagnb reads as its "
            f"result, and it does not load ({mask(why)}); name the file otherwise "
            "(metrics.json)")


def _tails(mask: _Mask, stdout: str, stderr: str) -> dict[str, str]:
    """A StepFailed's ``stdout_tail`` and ``stderr_tail``, masked."""
    return {"stdout_tail": mask(stdout)[-_TAIL:], "stderr_tail": mask(stderr)[-_TAIL:]}


def _died(task: Task, code: int, tails: dict[str, str]) -> StepFailed:
    """The step's process ended without returning, raising or sys.exit(): os._exit()
    or native code calling exit() ended it mid-step, with no result; an exit code of 0
    must not make it a success (the shim's exec fails, so the engine caches nothing)."""
    return StepFailed(
        ended_without_result(task.step.name, "in the container", code),
        step=task.step.name, exit_code=code, masked=True, **tails,
    )


def _raised(task: Task, code: int, stderr: str, tails: dict[str, str]) -> StepFailed:
    """A Python step's failure, ending with its exception's line as the local
    executor's message is that line ("ValueError: bad input row 42")."""
    raised = _exception_line(stderr)  # (all of it: a long traceback's head is not in a tail)
    return StepFailed(
        f"step {task.step.name!r}: the Python function raised (exit code {code})"
        + (f": {raised}" if raised else "; see its stderr"),
        step=task.step.name, exit_code=code, masked=True, **tails,
    )


def _exception_line(stderr: str) -> str:
    """The exception's line of the last traceback in ``stderr`` (its first line not
    indented after the frames), or "" without one (``sys.exit(1)`` prints none)."""
    lines = stderr.splitlines()  # (its first line may follow the step's unended one)
    starts = [i for i, line in enumerate(lines)
              if line.endswith("Traceback (most recent call last):")]
    if not starts:
        return ""
    for line in lines[starts[-1] + 1:]:
        if line.strip() and not line[0].isspace():
            return line
    return ""


def _log(task: Task, stream: str, text: str) -> None:
    """``text``'s lines to the step's log; one cut off (no newline ends the output)
    goes to the sink's ``last``, if it has one, which masks a secret's start at its end
    (``Bearer tok-9f8e``), as the local executor's does."""
    *lines, rest = text.split("\n")
    for line in lines:
        task.log(stream, line)
    if rest:
        getattr(task.log, "last", task.log)(stream, rest)


_Mask = Callable[[str], str]


def _output_mask(task: Task, secrets: list[str]) -> _Mask:
    """What masks the step's output and the engine's words in an error: the step's
    secrets (and the registry's) as the executor knows them, then the run's (those of
    other steps, which an upstream's files may hold). Each text is masked as the last
    of its output: one cut off mid-line may end with a secret's start. Made when an
    error asks: most steps succeed."""
    run_mask = getattr(task.mask, "masked_as_last", task.mask)
    return lambda text: run_mask(Masker(secrets).masked_as_last(text))


def _masked(exc: DagnbError, secrets: list[str]) -> DagnbError:
    message = str(exc)
    if any(value in message for value in secrets):
        exc.args = (Masker(secrets)(message), *exc.args[1:])
    return exc


def _exec_failed(task: Task, code: int, tails: dict[str, str]) -> StepFailed:
    """A step killed by a signal: its code, the signal's name and its last stderr line."""
    last = tails["stderr_tail"].strip().splitlines()[-1:]
    return StepFailed(
        f"step {task.step.name!r} exited with code {code} "
        f"({_signal_words(code)})" + (f": {last[0]}" if last else ""),
        step=task.step.name, exit_code=code,
        masked=True,  # (its stderr line is: not the exit code)
        **tails,
    )


def _signal_words(code: int) -> str:
    """"killed by SIGKILL; out of memory?" for 137: the OOM killer's signal, and the
    usual reason a container's process gets it."""
    try:
        name = signal.Signals(code - 128).name
    except ValueError:
        name = f"signal {code - 128}"
    return f"killed by {name}" + ("; out of memory?" if name == "SIGKILL" else "")


def _host_error(exc: Exception) -> str:
    """The words of a file-system error raised here (staging an input, reading a
    result), naming its path; "" for any other error. An OSError without a path (a
    TimeoutError) is no file's."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        source, _target, why = exc.args[0][0]  # copytree's first failed file
        return f"{why} (copying {str(source)!r})"
    if not isinstance(exc, OSError) or exc.filename is None:
        return ""
    paths = " -> ".join(repr(str(p)) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{exc.strerror or type(exc).__name__}: {paths}"


def _untangled(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of the errors it came from, once read: dagger-io
    raises its ExecError (its QueryError) from the transport's error in a frame holding
    it, which that error's traceback holds, and its retrying (tenacity's) keeps the
    error or cancel of its attempt in a frame of its traceback: cycles, and through the
    traceback this executor's frames, the task, and so the run, its steps' results,
    alive until a full collection."""
    left: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while left:
        error = left.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        left += [error.__cause__, error.__context__]


def _classified(who: str, exc: Exception, mask: _Mask, dagger: Any,
                step: str | None) -> DagnbError:
    """The error an exception of the engine's connection or of this machine's is, said
    of ``who`` ("step 'load'") for step ``step``; only its words are masked (they may
    quote the step's command), not the step's name."""
    if connection.is_transient(exc):
        return TransientError(f"{who}: lost the Dagger engine: {mask(str(exc))}",
                              masked=True)
    if host := _host_error(exc):  # not the engine's: the path is this machine's
        return StepFailed(f"{who}: file-system error on this machine: {mask(host)}",
                          step=step, masked=True)
    message = mask(str(exc))
    if isinstance(exc, dagger.QueryError) and connection.network_error(message):
        return TransientError(f"{who}: Dagger engine error: {message}", masked=True)
    return StepFailed(f"{who}: Dagger engine error: {message}", step=step, masked=True)
