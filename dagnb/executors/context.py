"""The running step's context, for in-process Python steps.

A shell step reads ``$DAGNB_OUT``; a Python function running in-process cannot have
its own environment variables, so it calls :func:`current` instead.
"""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.executors.capture import current_context

if TYPE_CHECKING:
    from dagnb.cache.secret_scan import SecretsInForce
    from dagnb.executors.base import Task

__all__ = ["StepContext", "current", "param_copy", "step_secrets"]

# held while the runner lists and watches a step's input folders: a second thread of
# the step asking meanwhile waits, or it would read (and write) them unwatched
_ASKING = threading.Lock()


class StepContext:
    """Where the running step writes and reads (the step contract's paths)."""

    __slots__ = ("_task",)

    def __init__(self, task: Task) -> None:
        self._task = task

    @property
    def step(self) -> str:
        """The step's name."""
        return self._task.step.name

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self._task.attempt

    @property
    def params(self) -> Mapping[str, Any]:
        """The step's params, read-only as the step's own: copies of their values, as its
        function gets them (see param_copy)."""
        params = self._task.step.params
        if not params:
            return _NO_PARAMS
        return StepParams({name: param_copy(value) for name, value in params.items()})

    @property
    def inputs(self) -> dict[str, Path]:
        """Upstream step name -> the folder holding its outputs."""
        task = self._task
        if task.on_input_paths is not None:  # (the runner lists and watches them first)
            with _ASKING:
                asked = task.on_input_paths
                if asked is not None:
                    asked(task)
                    task.on_input_paths = None  # (after: a thread asking now has waited)
        return {name: item.path for name, item in task.inputs.items()}

    @property
    def out_dir(self) -> Path:
        """The step's output folder, created on first use."""
        out_dir = self._task.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir

    def __repr__(self) -> str:
        return f"<StepContext {self.step!r} attempt {self.attempt}>"


class StepParams(Mapping[str, Any]):
    """A step's params as :func:`current` gives them: read-only for the step (as a
    ``mappingproxy`` is), and pickled as the plain dict they hold, so that a step
    returning them (``{"params": dagnb.current().params}``) is cached as any dict is."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(self._values)

    def __reduce__(self) -> tuple[type[dict], tuple[dict[str, Any]]]:
        return dict, (dict(self._values),)


_NO_PARAMS = StepParams({})

_SHARED_AS_IS = frozenset({str, int, float, bool, type(None)})  # (nothing to change in place)


def param_copy(value: Any) -> Any:
    """A param's value as a running step gets it: its own copy, as a dask worker's or a
    container's is (a step that fills defaults into a config dict in place changes
    neither the Step, nor its cache key, nor another step sharing the dict). Copied by a
    pickle round trip, 3 to 5 times faster than ``deepcopy`` for a large list or dict
    (a 100,000-item list: 4 ms, not 19) of the JSON values params are, by ``deepcopy``
    should pickle fail on one."""
    if type(value) in _SHARED_AS_IS:
        return value
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:  # (pickle's errors are of many types: a reducer raises what it may)
        return copy.deepcopy(value)


def current() -> StepContext:
    """The context of the Python step running now; raises outside a step."""
    context = current_context()  # set with the step's output capture
    if not isinstance(context, StepContext):
        raise RuntimeError(
            "dagnb.current() is only available inside a running Python step, and a step's "
            "context does not reach the threads it starts (a ThreadPoolExecutor's): read "
            "dagnb.current() before starting them and pass its values on, or run them in "
            "contextvars.copy_context().run")
    return context


def step_secrets() -> SecretsInForce | None:
    """The secrets in force in this context: those of the run whose Python step runs in
    it (in a task or thread it started with its context too), or None."""
    context = current_context()
    return context._task.cache_secrets if isinstance(context, StepContext) else None
