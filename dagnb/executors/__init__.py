"""Executors: where a step runs. ``local`` (this machine) or ``dagger`` (containers).

``auto`` picks Dagger when an engine is reachable and the local executor otherwise,
and says which once per process.
"""

from __future__ import annotations

import sys
import threading
import types

import pandas as pd

from dagnb.errors import ExecutorUnavailable
from dagnb.executors.base import NO_RESULT, Availability, Executor, Input, Outcome, Task
from dagnb.executors.local import LocalExecutor

__all__ = [
    "NO_RESULT",
    "Availability",
    "Executor",
    "Input",
    "LocalExecutor",
    "Outcome",
    "Task",
    "get_executor",
    "known_executors",
    "reset_executors",
    "status",
    "track",
]

_lock = threading.Lock()
_instances: dict[str, Executor] = {}
_auto_choice: str | None = None


def known_executors() -> list[str]:
    """Names that ``get_executor`` accepts besides 'auto'."""
    return ["local", "dagger"]


def get_executor(name: str | Executor = "auto") -> Executor:
    """The process-wide executor of that name ('auto', 'local' or 'dagger')."""
    if not isinstance(name, str):
        return name
    if name == "auto":
        name = _pick_auto()
    with _lock:
        if name not in _instances:
            _instances[name] = _create(name)
        return _instances[name]


def _create(name: str) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "dagger":
        from dagnb.config import settings
        from dagnb.executors.dagger.executor import DaggerExecutor

        executor = DaggerExecutor(registry_auth=settings().registry_auth())
        availability = executor.availability()
        if not availability.available:
            raise ExecutorUnavailable(f"executor 'dagger' is not available: {availability.reason}")
        return executor
    raise ExecutorUnavailable(f"unknown executor {name!r}; use 'auto', 'local' or 'dagger'")


def _pick_auto() -> str:
    global _auto_choice
    if _auto_choice is None:
        try:
            from dagnb.executors.dagger.connection import pick_auto
        except ImportError:
            choice, reason = "local", "no Dagger support module"
        else:
            choice, reason = pick_auto()
        _auto_choice = choice
        print(f"dagnb: executor 'auto' uses {choice!r} ({reason})", file=sys.stderr)
    return _auto_choice


def reset_executors() -> None:
    """Forget the executor instances and the 'auto' choice (for tests)."""
    global _auto_choice
    with _lock:
        _instances.clear()
        _auto_choice = None


# -- the executor status table --------------------------------------------------------
_running: dict[str, int] = {}


def track(name: str, delta: int) -> None:
    """Count steps running on an executor (called by the scheduler around each attempt)."""
    with _lock:
        _running[name] = _running.get(name, 0) + delta


def status() -> pd.DataFrame:
    """One row per executor: name, available, reason, capabilities, running, capacity,
    breaker (its state) and retry_in (seconds until an open breaker is probed)."""
    from dagnb.config import settings
    from dagnb.retry.breaker import breaker_for

    rows = []
    for name in known_executors():
        executor = _peek(name)
        availability = executor.availability() if executor else Availability(False, "")
        snapshot = breaker_for(name).snapshot()
        rows.append(
            {
                "name": name,
                "available": availability.available,
                "reason": availability.reason,
                "capabilities": ", ".join(sorted(executor.capabilities)) if executor else "",
                "running": _running.get(name, 0),
                "capacity": settings().max_concurrent_executions,
                "breaker": snapshot["state"],
                "retry_in": snapshot["retry_in"],
            }
        )
    return pd.DataFrame(rows)


def _peek(name: str) -> Executor | None:
    """The executor, created without side effects when it can be."""
    if name in _instances:
        return _instances[name]
    if name == "local":
        return LocalExecutor()
    try:
        from dagnb.executors.dagger.executor import DaggerExecutor
    except ImportError:
        return None
    return DaggerExecutor()


class _CallableModule(types.ModuleType):
    """Lets ``dagnb.executors()`` show the status table while ``dagnb.executors`` stays
    the package that holds ``local`` and ``dagger`` (importing a submodule would
    otherwise rebind a function of that name back to the package)."""

    def __call__(self) -> pd.DataFrame:
        return status()


sys.modules[__name__].__class__ = _CallableModule
