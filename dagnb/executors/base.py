"""The Executor protocol: what the runner hands an executor and what it gets back.

An executor runs one attempt of one step. The runner has already resolved everything
(environment, secrets, upstream outputs, the output directory); the executor only runs
the command or function, streams its output through ``task.log`` and reports how it
ended. Timeouts and cancellation arrive as ``asyncio.CancelledError``: the executor must
stop what it started (kill the process group, close the call) before re-raising.

Errors: a non-zero exit is an :class:`Outcome`, not an exception; a failure of the
machinery that may pass (a dropped engine connection) raises
:class:`~dagnb.errors.TransientError`; an exception in user Python code raises
:class:`~dagnb.errors.StepFailed`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..step import Step

__all__ = ["NO_RESULT", "Availability", "Executor", "Input", "Outcome", "Task"]


class _NoResult:
    """Marker for a step that produced no Python result."""

    _instance: _NoResult | None = None

    def __new__(cls) -> _NoResult:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_RESULT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NO_RESULT"


NO_RESULT: Any = _NoResult()

LogSink = Callable[[str, str], None]  # (stream, line) -> None


@dataclasses.dataclass(frozen=True)
class Input:
    """One upstream step's outputs as a downstream step receives them."""

    name: str
    path: Path  # host directory holding the upstream outputs
    result: Any = NO_RESULT  # the upstream Python result, when it has one
    handle: Any = None  # the executor's own handle (a dagger Directory), when it has one


@dataclasses.dataclass
class Task:
    """Everything one attempt of a step needs; built by the runner."""

    step: Step
    attempt: int
    out_dir: Path  # fresh, empty, for the step's outputs ($DAGNB_OUT)
    in_dir: Path  # holds one entry per upstream step ($DAGNB_IN)
    params_file: Path  # the step's params as JSON ($DAGNB_PARAMS)
    inputs: Mapping[str, Input]
    env: Mapping[str, str]  # step env plus the contract's DAGNB_* variables
    secrets: Mapping[str, str]  # secret name -> value, never logged or stored
    base_dir: Path  # relative host paths (mounts, workdir) resolve here
    log: LogSink  # stream is "stdout" or "stderr"; masking is done by the runner


@dataclasses.dataclass
class Outcome:
    """How one attempt ended."""

    exit_code: int | None
    result: Any = NO_RESULT
    handle: Any = None  # passed to downstream steps on the same executor


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether an executor can run here, and why not."""

    available: bool
    reason: str = ""


@runtime_checkable
class Executor(Protocol):
    """Runs one attempt of a step. See the module docstring for the contract."""

    name: str
    capabilities: frozenset[str]  # of "shell", "argv", "python", "containers", "services"

    def availability(self) -> Availability:
        """Whether this executor can run steps here (cheap; no connection is opened)."""
        ...

    async def execute(self, task: Task) -> Outcome:
        """Run one attempt of ``task.step``."""
        ...

    async def aclose(self) -> None:
        """Release connections and processes; the executor may be used again after."""
        ...
