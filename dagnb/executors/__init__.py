"""Executors: where a step runs. ``local`` (this machine), ``dagger`` (containers) or
``dask`` (Python steps on a dask.distributed cluster).

``auto`` picks Dagger when an engine is reachable and the local executor otherwise,
and says which once per context. The executors made so far, that choice and the count
of steps running on each live in the current :func:`dagnb.config.context`, so a fresh
context (``dagnb.testing.isolated()``) starts with none. :func:`status` shows them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

# Not plain ``context``: the ``dagnb.executors.context`` submodule takes that name here.
from dagnb.checks import short_repr
from dagnb.config import context as live_context
from dagnb.config import settings
from dagnb.errors import ExecutorUnavailable
from dagnb.executors.base import NO_RESULT, Availability, Executor, Input, Outcome, Task
from dagnb.executors.local import LocalExecutor
from dagnb.model.step import EXECUTOR_NAMES, Step

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "NO_RESULT",
    "Availability",
    "Executor",
    "Input",
    "LocalExecutor",
    "Outcome",
    "Task",
    "container_steps",
    "get_executor",
    "known_executors",
    "running_on",
    "status",
]

_lock = threading.Lock()


class _Registry:
    """The context's executors by name, its 'auto' choice, and the steps running on each."""

    __slots__ = ("auto_choice", "instances", "running")

    def __init__(self) -> None:
        self.instances: dict[str, Executor] = {}
        self.auto_choice: str | None = None
        self.running: dict[str, list[object]] = {}  # see running_on()


def _registry() -> _Registry:
    """The registry of the current context (a fresh context starts with no executors)."""
    return live_context().get("executors", _Registry)


def known_executors() -> list[str]:
    """Names that ``get_executor`` accepts besides 'auto'."""
    return [name for name in EXECUTOR_NAMES if name != "auto"]


def get_executor(name: str | Executor = "auto") -> Executor:
    """The executor of that name ('auto', 'local', 'dagger' or 'dask') in the current
    context, or ``name`` itself if it is an Executor."""
    if not isinstance(name, str):
        return _instance(name)
    if name == "auto":
        name = _pick_auto()
    instances = _registry().instances
    with _lock:
        if name not in instances:
            instances[name] = _create(name)
        return instances[name]


def container_steps(default: str | Executor) -> Callable[[Step], bool | str]:
    """Whether a run whose executor is ``default`` (a step's own wins) executes a step in
    a container: what its cache key must say. Known without making the executor, so a
    fully cached run needs no engine; 'auto' is chosen now, as a run would choose it."""
    answers: dict[str | None, bool | str] = {}  # by the step's own executor

    def in_container(step: Step) -> bool | str:
        found = answers.get(step.executor)
        if found is None:
            found = answers[step.executor] = _in_container(step.executor or default)
        return found

    return in_container


def _in_container(name: str | Executor) -> bool | str:
    """Whether ``name`` runs steps in containers; for an executor made with a default
    image other than dagnb's, that image (an image-less step's key names it)."""
    if not isinstance(name, str):
        if "containers" not in name.capabilities:
            return False
        return _own_default_image(name) or True
    return (_pick_auto() if name == "auto" else name) == "dagger"


def _own_default_image(executor: Executor) -> str | None:
    image = getattr(executor, "default_image", None)
    if not isinstance(image, str):
        return None
    from dagnb.executors.dagger.translate import DEFAULT_IMAGE  # (loaded with the executor)

    return None if image == DEFAULT_IMAGE else image


def _create(name: str) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "dagger":
        from dagnb.executors.dagger.executor import DaggerExecutor

        return _usable(DaggerExecutor(registry_auth=settings().registry_auth()))
    if name == "dask":
        from dagnb.executors.dask import DaskExecutor

        return _usable(DaskExecutor())
    raise ExecutorUnavailable(
        f"unknown executor {name!r}; use 'auto', 'local', 'dagger' or 'dask'"
    )


def _instance(executor: object) -> Executor:
    """An Executor given as such (anything else failed every step on an attribute)."""
    if not isinstance(executor, Executor):  # (its methods and attributes, by name)
        raise ExecutorUnavailable(
            f"executor {short_repr(executor, one_line=True)} (type {type(executor).__name__})"
            " is not an executor; use 'auto', 'local', 'dagger' or 'dask', or an Executor "
            "instance")
    return executor


def _usable(executor: Executor) -> Executor:
    """The executor, or ExecutorUnavailable saying why it cannot run here."""
    availability = executor.availability()
    if not availability.available:
        raise ExecutorUnavailable(
            f"executor {executor.name!r} is not available: {availability.reason}"
        )
    return executor


def _pick_auto() -> str:
    """Dagger when an engine is reachable, else local; chosen (and said) once per context."""
    registry = _registry()
    if registry.auto_choice is None:
        try:
            from dagnb.executors.dagger.connection import pick_auto
        except ImportError:
            choice, reason = "local", "no Dagger support module"
        else:
            choice, reason = pick_auto()
        registry.auto_choice = choice
        _say(_notice(choice, reason))
    return registry.auto_choice


def _say(notice: str) -> None:
    """``notice`` on stderr, unless stderr stopped taking text (``dagnb run 2>&1 | head``,
    a full disk): as for the progress lines, the run goes on. Said as the first step asks
    for its executor, an error here would fail that step without running it."""
    with contextlib.suppress(OSError):  # (BrokenPipeError among them)
        print(notice, file=sys.stderr)


# How connection.detect() begins its reason when dagger-io is missing: an engine may be
# there all the same (``dagger run jupyter lab`` without the extra), so it is not "none".
_NO_SDK = "the Dagger SDK is not installed"


def _notice(choice: str, reason: str) -> str:
    """One short line; the long reason (how to install) is in
    ``dagnb.executors.status()``."""
    if choice == "local" and reason.startswith(_NO_SDK):
        return (f"dagnb: {_NO_SDK} (pip install 'dagnb[dagger]'); steps run on this "
                "machine")
    if choice == "local":  # (what was looked for: said as such, in a terminal too)
        return ("dagnb: no Dagger engine found (no dagger CLI on PATH, no "
                "DAGGER_SESSION_PORT); steps run on this machine")
    return f"dagnb: steps run in containers through Dagger ({reason})"


# -- the executor status table --------------------------------------------------------
def running_on(name: str) -> list[object]:
    """The attempts running on executor ``name`` in the current context: the scheduler
    appends a token as an attempt starts and removes it as it ends, and
    :func:`status` counts them. A list, not a count under a lock: ``append`` and
    ``remove`` are atomic, and a no-op step paid 0.56 µs for a locked ``with``."""
    return _registry().running.setdefault(name, [])


def status() -> pd.DataFrame:
    """The executors of the current context and their state, one row per executor.

    Returns
    -------
    pandas.DataFrame
        Columns ``name``, ``available``, ``reason``, ``capabilities``, ``running`` (steps
        running on it now), ``capacity`` (``max_concurrent_executions``), ``breaker``
        (its circuit breaker's state) and ``retry_in`` (seconds until an open breaker
        lets a probe through, else None).

    Examples
    --------
    >>> dagnb.executors.status()[["name", "available", "breaker"]]  # doctest: +SKIP
    """
    import pandas as pd

    from dagnb.retry.breaker import breaker_for

    running = _registry().running
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
                "running": len(running.get(name, ())),
                "capacity": settings().max_concurrent_executions,
                "breaker": snapshot["state"],
                "retry_in": snapshot["retry_in"],
            }
        )
    return pd.DataFrame(rows)


def _peek(name: str) -> Executor | None:
    """The executor, created without side effects when it can be."""
    instances = _registry().instances
    if name in instances:
        return instances[name]
    if name == "local":
        return LocalExecutor()
    if name == "dask":
        from dagnb.executors.dask import DaskExecutor

        return DaskExecutor()
    try:
        from dagnb.executors.dagger.executor import DaggerExecutor
    except ImportError:
        return None
    return DaggerExecutor()
