"""Circuit breaker: fail fast while an executor keeps failing for transient reasons.

::

    closed --(failure_threshold transient failures in a row)--> open
    open   --(reset_timeout passes)--> half_open: ONE probe goes through,
                                       every other caller still fails fast
    half_open --probe succeeds--> closed (count reset)
    half_open --probe fails-----> open again, for a fresh reset_timeout

The breaker never sleeps and reads time only through its injectable ``clock``; its
methods are short, non-blocking critical sections under a ``threading.Lock``, so the
runner may call them from the event loop or from worker threads alike. One breaker per
executor lives in the current :func:`dagnb.config.context` (:func:`breaker_for`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from dagnb import checks
from dagnb.config import context
from dagnb.errors import CircuitOpenError, ConfigError

__all__ = ["BreakerState", "CircuitBreaker", "breaker_for", "breakers"]

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Counts an executor's transient failures in a row and opens after too many.

    Parameters
    ----------
    name
        The executor's name, used in messages and the status table.
    failure_threshold
        Failures in a row that open the breaker (at least 1).
    reset_timeout
        Seconds the breaker stays open before one probe is let through.
    clock
        Monotonic seconds; tests inject a fake one.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_lock",
        "_opened_at",
        "_probing",
        "failure_threshold",
        "name",
        "reset_timeout",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_settings(failure_threshold, reset_timeout)
        self.name, self.failure_threshold = name, failure_threshold
        self.reset_timeout, self._clock = float(reset_timeout), clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # clock time it opened; None while closed
        self._probing = False  # the half-open probe is in flight

    @property
    def state(self) -> BreakerState:
        """'closed', 'open', or 'half_open' (a probe may go, or is in flight)."""
        with self._lock:
            return self._state(self._clock())

    @property
    def failures(self) -> int:
        """Transient failures in a row since the last success."""
        return self._failures

    @property
    def opened_at(self) -> float | None:
        """Clock time the breaker last opened; None while closed."""
        return self._opened_at

    @property
    def retry_at(self) -> float | None:
        """Clock time from which one probe is let through; None while closed."""
        return None if self._opened_at is None else self._opened_at + self.reset_timeout

    def check(self) -> None:
        """Return if a call may go ahead (it may be the half-open probe), else raise.

        Raises
        ------
        CircuitOpenError
            While open, and in half-open while the probe is in flight.
        """
        if self._opened_at is None:  # closed (most calls): no lock, no clock; a breaker
            return  #                    opening meanwhile lets this one call through
        with self._lock:
            now = self._clock()
            if self._opened_at is None:
                return
            if self._probing or now < self._opened_at + self.reset_timeout:
                raise CircuitOpenError(self._message(now))
            self._probing = True

    def record_success(self) -> None:
        """The executor answered: close the breaker and reset the count."""
        if not self._failures and self._opened_at is None and not self._probing:
            return  # closed and clean already (most calls): no lock taken
        with self._lock:
            self._failures, self._opened_at, self._probing = 0, None, False

    def record_failure(self) -> None:
        """A transient failure: open at the threshold, or re-open after a failed probe."""
        with self._lock:
            self._failures += 1
            if self._probing or (
                self._opened_at is None and self._failures >= self.failure_threshold
            ):
                self._opened_at, self._probing = self._clock(), False

    def release(self) -> None:
        """A call ended without a verdict (cancelled, timed out): free the probe slot."""
        with self._lock:
            self._probing = False

    def snapshot(self) -> dict[str, Any]:
        """One row of the executor status table."""
        with self._lock:
            now = self._clock()
            retry_in = (
                None
                if self._opened_at is None
                else max(0.0, self._opened_at + self.reset_timeout - now)
            )
            return {
                "executor": self.name,
                "state": self._state(now),
                "failures": self._failures,
                "failure_threshold": self.failure_threshold,
                "reset_timeout": self.reset_timeout,
                "retry_in": retry_in,
                "probing": self._probing,
            }

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        late = now >= self._opened_at + self.reset_timeout
        return "half_open" if self._probing or late else "open"

    def _message(self, now: float) -> str:
        head = f"executor {self.name!r} failed {self._failures} times in a row; steps fail fast"
        if self._probing:
            return f"{head} while one probe step checks whether it works again"
        wait = self._opened_at + self.reset_timeout - now  # type: ignore[operator]
        at = (datetime.now() + timedelta(seconds=wait)).strftime("%H:%M:%S")
        return f"{head} until it is tried again in {math.ceil(wait)} s (at {at})"

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state} failures={self._failures}>"


def _check_settings(failure_threshold: object, reset_timeout: object) -> None:
    """Raise ConfigError for a threshold below 1 or a negative timeout."""
    _setting(checks.count, failure_threshold, "failure_threshold", least=1)
    _setting(checks.number, reset_timeout, "reset_timeout", kind="a number of seconds")


def _setting(check: Callable[..., Any], value: object, key: str, **options: Any) -> None:
    checks.checked(check, value, f"breaker {key}", ConfigError, sep="=", **options)


_REGISTRY_LOCK = threading.Lock()


def _registry() -> dict[str, CircuitBreaker]:
    """The current context's breakers by executor name (a fresh context has none)."""
    return context().get("breakers", dict)


def breaker_for(
    executor: str,
    *,
    failure_threshold: int = 5,
    reset_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> CircuitBreaker:
    """The breaker of ``executor`` in the current context, made with these settings on
    first use.

    Later calls return the same breaker and ignore the settings; a fresh context
    (``dagnb.testing.isolated()``) starts with every breaker closed.
    """
    registry = _registry()
    with _REGISTRY_LOCK:
        breaker = registry.get(executor)
        if breaker is None:
            breaker = CircuitBreaker(executor, failure_threshold, reset_timeout, clock)
            registry[executor] = breaker
        return breaker


def breakers() -> list[CircuitBreaker]:
    """Every breaker of the current context, by executor name (for the status table)."""
    registry = _registry()
    with _REGISTRY_LOCK:
        return [registry[name] for name in sorted(registry)]
