"""Errors raised by dagnb.

Every error dagnb raises on purpose is a :class:`DagnbError`. User mistakes get a
specific subclass whose one-sentence message names the offending value and what was
expected; the CLI prints that sentence and exits 2, the magics show it as a UsageError.
Step failures are data in the status table; the StepError family describes them.

::

    DagnbError
    ├── ConfigError                 bad configuration key, type or value
    ├── GraphError                  a graph that cannot run
    │   ├── CycleError              a -> b -> a (carries the cycle)
    │   ├── MissingDependencyError  a need that names no step
    │   ├── DuplicateStepError      two steps with one name
    │   ├── StepNotFoundError       a name that is not in the graph
    │   └── InvalidStepError        a bad step field (name, params, mount, ...)
    ├── WorkflowError               a YAML workflow that does not load
    ├── SecretError                 a secret missing from the environment
    ├── FingerprintError            a value that cannot be hashed
    │   └── UnfingerprintableVariable   ... read by a step from the notebook: not cached
    ├── CacheError                  a cache directory that cannot be used
    │   └── CacheMissError          cache_mode fail-on-miss: steps that would run
    ├── ExecutorError
    │   ├── ExecutorUnavailable     no engine for the executor asked for
    │   └── CircuitOpenError        the executor's breaker is open
    ├── TransientError              a failure that may pass: retried by default
    ├── RunFailed                   a run ended with steps that did not succeed
    └── StepError                   one step did not succeed
        ├── StepFailed              non-zero exit or exception (exit code, stderr tail)
        ├── StepTimeout             the step ran past its timeout
        └── StepCancelled           the run was cancelled
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CacheMissError",
    "CircuitOpenError",
    "ConfigError",
    "CycleError",
    "DagnbError",
    "DuplicateStepError",
    "ExecutorError",
    "ExecutorUnavailable",
    "FingerprintError",
    "GraphError",
    "InvalidStepError",
    "MissingDependencyError",
    "RunFailed",
    "SecretError",
    "StepCancelled",
    "StepError",
    "StepFailed",
    "StepNotFoundError",
    "StepTimeout",
    "TransientError",
    "UnfingerprintableVariable",
    "WorkflowError",
]


class DagnbError(Exception):
    """Base class of every error dagnb raises on purpose."""


class ConfigError(DagnbError, ValueError):
    """A configuration key, type or value is wrong."""


class GraphError(DagnbError, ValueError):
    """The graph cannot be run as it is."""


class CycleError(GraphError):
    """The steps' needs form a cycle; ``cycle`` lists it, first name repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = list(cycle)
        if len(set(self.cycle)) == 1:  # (a -> a: one step, naming itself)
            name = self.cycle[0]
            super().__init__(f"step {name!r} needs itself; remove {name!r} from its needs")
            return
        path = " -> ".join(self.cycle)
        super().__init__(f"the steps' needs form a cycle: {path}; remove one of these needs")


class MissingDependencyError(GraphError):
    """A step needs a step that is not in the graph."""


class DuplicateStepError(GraphError):
    """Two steps share one name."""


class StepNotFoundError(GraphError, KeyError):
    """A name does not match any step in the graph."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidStepError(GraphError):
    """A step field has a value that cannot work."""


class WorkflowError(DagnbError, ValueError):
    """A YAML workflow file cannot be loaded."""


class SecretError(DagnbError):
    """A secret a step needs is not set; the message names the variable, never a value."""


class FingerprintError(DagnbError, TypeError):
    """A value cannot be fingerprinted for the cache key."""


class UnfingerprintableVariable(FingerprintError):
    """A global a Python step reads cannot be hashed: the step runs uncached this time.

    The key would otherwise leave that value out and could restore a stale result;
    ``step`` and ``variable`` name them, the message says why in one line, and
    ``reason`` is that line without the step's name (what ``run.not_stored`` keeps).
    """

    def __init__(self, message: str, *, step: str, variable: str, reason: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.variable = variable
        self.reason = reason or message


class CacheError(DagnbError):
    """The cache cannot be used as asked."""


class CacheMissError(CacheError):
    """``cache_mode="fail-on-miss"`` refused a run that would execute steps.

    ``misses`` lists ``(step, reason)`` for every step that would run, with the reason
    ``explain`` gives; the message is one line saying so, then one line per step. A
    notebook shows just that (``_render_traceback_``), with no frames.
    """

    def __init__(self, message: str, *, misses: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.misses = list(misses)

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error: ``CacheMissError: <header>``, the list."""
        return f"{type(self).__name__}: {self}".splitlines()


class ExecutorError(DagnbError):
    """An executor cannot take the step."""


class ExecutorUnavailable(ExecutorError):
    """The executor asked for has no engine here."""


class CircuitOpenError(ExecutorError):
    """The executor failed too often in a row; steps fail fast until it is probed again."""


class TransientError(DagnbError):
    """A failure that may pass if tried again (a dropped connection, a registry time-out).

    ``in_step_code`` is True when the step's own code raised it (a Python step's
    ``ConnectionError``): it is retried like any transient error, but the executor
    worked, so the executor's circuit breaker does not count it. ``exit_code``: how the
    step's own code ended, as :class:`StepFailed` has it (1 for a Python step that
    raised); None for a failure of the machinery, where no step ended. ``masked``: as
    :class:`StepError`'s.
    """

    def __init__(self, message: str = "", *, in_step_code: bool = False,
                 exit_code: int | None = None, masked: bool = False) -> None:
        super().__init__(message)
        self.in_step_code = in_step_code
        self.exit_code = exit_code
        self.masked = masked


class RunFailed(DagnbError):
    """A run ended with failed, cancelled or skipped steps (``Run.raise_for_status()``).

    ``states`` maps those steps to their state; ``details`` holds the lines a notebook
    shows instead of a traceback (their status rows and stderr tails), through IPython's
    ``_render_traceback_`` hook, so no frame of dagnb's is printed.
    """

    def __init__(self, message: str, *, run_id: str = "", states: dict[str, str] | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.states = dict(states or {})
        self.details = list(details or [])

    @property
    def sentence(self) -> str:
        """The one-line summary: which steps failed, were cancelled or skipped."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        """The sentence, then the details: a script's traceback ends with why the steps
        failed (their rows, their stderr tails), not only that they did."""
        return "\n".join([self.sentence, *self.details])

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error: the details, then one ``RunFailed:`` line."""
        return [*self.details, f"{type(self).__name__}: {self.sentence}"]


class StepError(DagnbError):
    """A step did not succeed.

    ``masked``: the message is shown as it is, what it holds of the step's output masked
    already; a run masks the others whole, dagnb's words too (a secret ``1`` would show
    ``exit code ***``)."""

    def __init__(self, message: str, *, step: str | None = None, masked: bool = False) -> None:
        super().__init__(message)
        self.step = step
        self.masked = masked


class StepFailed(StepError):
    """A step exited non-zero or raised; carries the exit code and the stderr tail."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        exit_code: int | None = None,
        stdout_tail: str = "",
        stderr_tail: str = "",
        masked: bool = False,
    ) -> None:
        super().__init__(message, step=step, masked=masked)
        self.exit_code = exit_code
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail


class StepTimeout(StepError):
    """A step ran past its timeout and was stopped."""


class StepCancelled(StepError):
    """A step was stopped because the run was cancelled."""


def exception_line(exc: BaseException) -> str:
    """``KeyError: 'x'``, as Python's last traceback line; the type alone when the
    message is empty (``KeyboardInterrupt``, ``AssertionError()``), not a dangling colon;
    ``BadStr: <str() failed: RuntimeError>`` for one whose ``str()`` raises (the step's
    failure, not dagnb's, is what its status row names)."""
    try:
        text = str(exc)
    except Exception as broken:
        text = f"<str() failed: {type(broken).__name__}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
