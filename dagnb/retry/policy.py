"""Retries: a :class:`RetryPolicy` translated into tenacity objects, and error kinds.

dagnb writes no retry loop: a policy becomes tenacity's ``stop``, ``wait`` and ``retry``
objects, and :func:`run_with_retries` hands them to ``tenacity.AsyncRetrying`` (its sync
twin to ``tenacity.Retrying``) with an injectable ``sleep``.

A failed attempt is first classified (:func:`classify`); the kind and the policy's
``retry_on`` decide how many retries the error may have (:meth:`RetryPolicy.retries_for`):

============  ===================================================================
kind          retried
============  ===================================================================
transient     ``max(max_retries, transient_retries)`` times while ``retry_transient``
              (infrastructure blips are retried even when a step asks for none), else
              like permanent
permanent     ``max_retries`` times, only when an item of ``retry_on`` matches it
timeout       ``max_retries`` times, only when ``retry_on_timeout``
cancelled     never
circuit_open  never
============  ===================================================================

Transient errors are :class:`~dagnb.errors.TransientError`, ``ConnectionError``,
``TimeoutError``, an ``OSError`` whose errno says the network failed (ECONNRESET,
ECONNREFUSED, ETIMEDOUT, EPIPE, ...), the transport errors of requests, urllib3, httpx,
httpcore, aiohttp, gql and dagger (urllib's ``URLError`` by its reason), and the HTTP
errors of requests, httpx, urllib and aiohttp whose status is 408, 429, 502, 503 or
504, recognized by module and class name so none of them is imported.
Only :class:`~dagnb.errors.StepTimeout` is a *timeout*: the runner raises it for a step's
own time limit, while a ``TimeoutError`` from user code is a transient network error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import inspect
import itertools
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Literal, ParamSpec, TypeVar, Union, cast, overload

import tenacity
from tenacity import RetryCallState, stop_after_attempt, wait_exponential, wait_random
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from dagnb import checks
from dagnb.errors import (
    CircuitOpenError,
    ConfigError,
    StepCancelled,
    StepFailed,
    StepTimeout,
    TransientError,
)
from dagnb.retry.breaker import CircuitBreaker

__all__ = [
    "DEFAULT_RETRIES",
    "ErrorKind",
    "RetryOn",
    "RetryPolicy",
    "RetrySpec",
    "classify",
    "retry",
    "run_with_retries",
    "run_with_retries_sync",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

ErrorKind = Literal["transient", "permanent", "timeout", "cancelled", "circuit_open"]
RetryOnItem = type[BaseException] | int | Callable[[BaseException], bool]
RetryOn = tuple[RetryOnItem, ...]
RetrySpec = Union["RetryPolicy", Mapping[str, Any], int, bool, None]
OnRetry = Callable[[int, BaseException, float], None]

DEFAULT_RETRIES = 2
"""Retries of transient errors by default, and of ``@retry`` and ``retry_on`` errors."""

DEFAULT_JITTER = 0.1
"""Seconds of random jitter added to each wait; ``jitter=True`` means this."""

# ---------------------------------------------------------------- classification


def _qualified(names: str) -> frozenset[tuple[str, str]]:
    """{("httpx", "TransportError"), ...} from "httpx.TransportError ..."."""
    return frozenset(tuple(name.rsplit(".", 1)) for name in names.split())  # type: ignore[misc]


_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE}
) | {errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTUNREACH}
# (top-level module, class name), matched anywhere in the error's MRO
_TRANSPORT_ERRORS = _qualified("""
    httpx.TransportError httpcore.NetworkError httpcore.TimeoutException
    httpcore.RemoteProtocolError dagger.TransportError dagger.ClientConnectionError
    gql.TransportServerError gql.TransportClosed gql.TransportConnectionFailed
    aiohttp.ClientConnectionError requests.ConnectionError requests.Timeout
    requests.ChunkedEncodingError urllib3.ProtocolError urllib3.TimeoutError
""")
# transport errors that are the caller's mistake, not the network's (requests' SSLError
# is a ConnectionError, but a certificate that does not verify stays so)
_PERMANENT_TRANSPORT_ERRORS = _qualified(
    "httpx.UnsupportedProtocol httpx.LocalProtocolError requests.SSLError"
)
# an HTTP response's error: transient when its status says "try again later"
_HTTP_STATUS_ERRORS = _qualified("""
    requests.HTTPError httpx.HTTPStatusError urllib.HTTPError aiohttp.ClientResponseError
""")
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
# errors that carry the network's error as their ``reason`` (urlopen's, urllib3's pool)
_WRAPPING_ERRORS = _qualified("urllib.URLError urllib3.MaxRetryError")


def classify(exc: BaseException) -> ErrorKind:
    """The kind of a failed attempt, for retry decisions and the status table.

    Parameters
    ----------
    exc
        The error an attempt raised.

    Returns
    -------
    str
        ``"circuit_open"`` (:class:`~dagnb.errors.CircuitOpenError`), ``"cancelled"``
        (:class:`~dagnb.errors.StepCancelled`, ``asyncio.CancelledError``,
        ``KeyboardInterrupt``), ``"timeout"`` (:class:`~dagnb.errors.StepTimeout`),
        ``"transient"`` (see the module docstring) or ``"permanent"``.
    """
    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, (StepCancelled, asyncio.CancelledError, KeyboardInterrupt)):
        return "cancelled"
    if isinstance(exc, StepTimeout):
        return "timeout"
    return "transient" if _is_transient(exc) else "permanent"


def _is_transient(exc: BaseException) -> bool:
    """True for errors of the network or the engine that may pass."""
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    names = {(cls.__module__.partition(".")[0], cls.__name__) for cls in type(exc).__mro__}
    if names & _HTTP_STATUS_ERRORS:
        return _http_status(exc) in _TRANSIENT_STATUSES
    if names & _WRAPPING_ERRORS:  # URLError(ConnectionRefusedError(...)): by its reason
        reason = getattr(exc, "reason", None)
        return isinstance(reason, BaseException) and reason is not exc and _is_transient(reason)
    return bool(names & _TRANSPORT_ERRORS) and not names & _PERMANENT_TRANSPORT_ERRORS


def _http_status(exc: BaseException) -> int | None:
    """The status of an HTTP error's response: requests' and httpx' ``response``,
    urllib's and aiohttp's ``status`` (aiohttp's ``code`` warns: read only if need be)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if not isinstance(status, int):
        status = getattr(exc, "status", None)
    if not isinstance(status, int):
        status = getattr(exc, "code", None)
    return status if isinstance(status, int) else None


def _exit_code(exc: BaseException) -> int | None:
    """The exit code of a failed command, with a signal -N read as 128+N (-9 is 137)."""
    if isinstance(exc, StepFailed):
        code = exc.exit_code
    elif isinstance(exc, subprocess.CalledProcessError):
        code = exc.returncode
    else:
        return None
    return 128 - code if code is not None and code < 0 else code


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and its explicit causes (a StepFailed raised from a user's exception)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _matches(item: RetryOnItem, exc: BaseException) -> bool:
    """Whether one ``retry_on`` item names this error."""
    if isinstance(item, type):
        return any(isinstance(error, item) for error in _chain(exc))
    if isinstance(item, int):  # a Python step's StepFailed (exit 1) is raised from the
        return any(_exit_code(error) == item for error in _chain(exc))  # CalledProcessError
    return bool(item(exc))


# ---------------------------------------------------------------- validation


def _checker(check: Callable[..., Any], **options: Any) -> Callable[[str, Any], Any]:
    """A check of one retry setting, failing as ConfigError('retry setting key=...')."""

    def check_setting(key: str, value: Any) -> Any:
        what = f"retry setting {key}"
        return checks.checked(check, value, what, ConfigError, sep="=", **options)

    return check_setting


_whole = _checker(checks.count)
_seconds = _checker(checks.number, kind="a number of seconds")
_flag = _checker(checks.flag)


def _jitter_seconds(value: object) -> float:
    """Seconds, or a switch as other schedulers spell it: True (the default), False (none)."""
    if isinstance(value, bool):
        return DEFAULT_JITTER if value else 0.0
    return checks.number(value, kind="a number of seconds")


_jitter = _checker(_jitter_seconds)


def _error_matchers(value: object) -> RetryOn:
    """``retry_on`` items: exception types, exit codes or predicates (see RetryPolicy)."""
    items = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
    for item in items:
        is_error_type = isinstance(item, type) and issubclass(item, BaseException)
        is_code = isinstance(item, int) and not isinstance(item, bool)
        if not (is_error_type or is_code or (callable(item) and not isinstance(item, type))):
            raise checks.Invalid(
                value,
                "exception types, exit codes such as 137, or predicates taking the error; "
                f"{item!r} is none of these",
            )
    return cast(RetryOn, items)


_retry_on = _checker(_error_matchers)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "max_retries": _whole,
    "backoff_factor": _seconds,
    "max_delay": _seconds,
    "jitter": _jitter,
    "retry_on": _retry_on,
    "retry_on_timeout": _flag,
    "retry_transient": _flag,
    "transient_retries": _whole,
}
_ALIASES = {"retry_backoff_factor": "backoff_factor", "retry_jitter": "jitter"}
_KNOWN = sorted([*_CHECKS, *_ALIASES, "enable_retry"])


def _canonical(key: object) -> str:
    """The field a mapping key sets; ConfigError for an unknown key."""
    if isinstance(key, str) and key in _ALIASES:
        return _ALIASES[key]
    if isinstance(key, str) and key in _KNOWN:
        return key
    hint = checks.did_you_mean(key, _KNOWN)
    hint = f" ({hint})" if hint else ""
    raise ConfigError(
        f"retry setting {key!r} is not known{hint}; expected one of {', '.join(_KNOWN)}"
    )


# ---------------------------------------------------------------- the policy


class _StopAfterAllowedRetries(stop_base):
    """Stop once the last error has had the retries its kind allows."""

    def __init__(self, allowed: Callable[[BaseException], int]) -> None:
        self.allowed = allowed

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        retries = 0 if error is None else self.allowed(error)
        return stop_after_attempt(retries + 1)(retry_state)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a step (or a function) is tried again.

    Parameters
    ----------
    max_retries
        Retries after the first attempt for errors the policy retries (see the module
        docstring); 0 retries nothing but transient errors.
    backoff_factor
        The wait before retry ``n`` is ``backoff_factor * 2**(n-1)`` seconds ...
    max_delay
        ... capped at ``max_delay`` seconds ...
    jitter
        ... plus a uniformly random ``0..jitter`` **seconds** (absolute, not a fraction),
        so every wait lies in :meth:`delay_bounds`. ``True`` is the default 0.1 s,
        ``False`` none (stored as seconds).
    retry_on
        Narrows which failures ``max_retries`` applies to: an exception type (matching
        the error or, for a ``StepFailed`` raised ``from`` a Python step's exception,
        that exception), an int exit code of a ``StepFailed`` or of the
        ``CalledProcessError`` a Python step raised (a signal ``-9`` counts as ``137``),
        or a predicate ``error -> bool``. Empty (the default): every failure
        but a timeout is retried ``max_retries`` times; with ``max_retries=0`` (the
        default policy) a non-zero exit is therefore never retried.
    retry_on_timeout
        Retry :class:`~dagnb.errors.StepTimeout` (``max_retries`` times).
    retry_transient
        Retry transient errors at least ``transient_retries`` times.
    transient_retries
        The floor of retries for transient errors: they get
        ``max(max_retries, transient_retries)``.

    Cancellations and open circuit breakers are never retried.
    """

    max_retries: int = 0
    backoff_factor: float = 0.5
    max_delay: float = 30.0
    jitter: float | bool = DEFAULT_JITTER
    retry_on: RetryOn = ()
    retry_on_timeout: bool = False
    retry_transient: bool = True
    transient_retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _CHECKS[field.name](field.name, getattr(self, field.name))
            object.__setattr__(self, field.name, value)

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that retries nothing, not even transient errors."""
        return cls(max_retries=0, retry_transient=False)

    @classmethod
    def from_value(cls, value: RetrySpec) -> RetryPolicy:
        """The policy a step's ``retries=`` (or a config value) asks for.

        Parameters
        ----------
        value
            ``None``: the default policy, which retries transient errors
            ``DEFAULT_RETRIES`` (2) times and nothing else. An int: ``max_retries``
            (transient errors still get at least 2). ``False``: no retries at all;
            ``True``: ``max_retries=2``. A RetryPolicy: itself. A mapping of the field
            names, of the aliases ``retry_backoff_factor`` and ``retry_jitter``, and of
            ``enable_retry`` (False: no retries at all). A mapping that names
            ``retry_on`` or ``retry_on_timeout`` without ``max_retries`` gets
            ``max_retries=2``, so that naming errors to retry retries them.

        Raises
        ------
        ConfigError
            For an unknown key or a bad value, naming both.
        """
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, bool):
            return cls(max_retries=DEFAULT_RETRIES) if value else cls.disabled()
        if isinstance(value, int):
            return cls(max_retries=_whole("max_retries", value))
        if isinstance(value, Mapping):
            return cls._from_mapping(value)
        raise ConfigError(
            f"retries {value!r} is not a retry setting; expected None, a number of retries, "
            "a mapping of retry settings or a RetryPolicy"
        )

    @classmethod
    def _from_mapping(cls, value: Mapping[Any, Any]) -> RetryPolicy:
        settings: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for key, raw in value.items():
            name = _canonical(key)
            if name in settings:
                raise ConfigError(
                    f"retry settings {given_as[name]!r} and {key!r} both set {name}; give one"
                )
            check = _flag if name == "enable_retry" else _CHECKS[name]
            settings[name], given_as[name] = check(key, raw), key
        enabled = settings.pop("enable_retry", True)
        names_errors = settings.get("retry_on") or settings.get("retry_on_timeout")
        if names_errors and "max_retries" not in settings:
            settings["max_retries"] = DEFAULT_RETRIES
        if not enabled:
            settings.update(max_retries=0, retry_transient=False)
        return cls(**settings)

    def retries_for(self, exc: BaseException) -> int:
        """How many retries this policy allows for an error like ``exc``."""
        kind = classify(exc)
        if kind in ("cancelled", "circuit_open") or not isinstance(exc, Exception):
            return 0
        if kind == "timeout":
            return self.max_retries if self.retry_on_timeout else 0
        # retries=N alone retries any failure, as users of other schedulers expect;
        # naming retry_on narrows it to those errors and exit codes.
        named = not self.retry_on or any(_matches(i, exc) for i in self.retry_on)
        retries = self.max_retries if named else 0
        if kind == "transient" and self.retry_transient:
            retries = max(retries, self.max_retries, self.transient_retries)
        return retries

    def should_retry(self, exc: BaseException) -> bool:
        """Whether an error like ``exc`` is retried at all (the count is the stop's)."""
        return self.retries_for(exc) > 0

    def delay_bounds(self, retry: int) -> tuple[float, float]:
        """The least and greatest wait before retry number ``retry`` (1 is the first)."""
        try:
            base = min(self.backoff_factor * 2.0 ** (retry - 1), self.max_delay)
        except OverflowError:
            base = self.max_delay
        return base, base + self.jitter

    def delay(self, retry: int) -> float:
        """One draw of the wait before retry number ``retry`` (after failed attempt ``retry``)."""
        state = RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = retry
        return self.tenacity_wait()(state)

    def tenacity_wait(self) -> wait_base:
        """``wait_exponential(backoff_factor, max=max_delay) + wait_random(0, jitter)``."""
        backoff = wait_exponential(multiplier=self.backoff_factor, max=self.max_delay)
        return backoff + wait_random(0, self.jitter)

    def tenacity_stop(self) -> stop_base:
        """``stop_after_attempt(retries_for(error) + 1)`` for the last error."""
        return _StopAfterAllowedRetries(self.retries_for)

    def tenacity_retry(self) -> tenacity.retry_base:
        """``retry_if_exception(should_retry)``."""
        return tenacity.retry_if_exception(self.should_retry)

    def tenacity_kwargs(self, on_retry: OnRetry | None = None) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` (no sleep)."""
        return {
            "stop": self.tenacity_stop(),
            "wait": self.tenacity_wait(),
            "retry": self.tenacity_retry(),
            "reraise": True,
            "before_sleep": None if on_retry is None else _before_sleep(on_retry),
        }


def _before_sleep(on_retry: OnRetry) -> Callable[[RetryCallState], None]:
    """tenacity's before_sleep calling ``on_retry(next_attempt, error, delay)``."""

    def before_sleep(state: RetryCallState) -> None:
        error = cast(tenacity.Future, state.outcome).exception()
        on_retry(state.attempt_number + 1, cast(BaseException, error), state.upcoming_sleep)

    return before_sleep


# ---------------------------------------------------------------- running


def _record(breaker: CircuitBreaker, error: BaseException | None) -> None:
    """Tell the breaker how an attempt ended: only transient errors of the executor
    itself count as failures."""
    kind = None if error is None else classify(error)
    if kind in (None, "permanent") or _in_step_code(error):
        breaker.record_success()  # the executor answered, even if the step failed
    elif kind == "transient":
        breaker.record_failure()
    else:
        breaker.release()


def _in_step_code(error: BaseException | None) -> bool:
    """A transient error the step's own code raised (its executor worked)."""
    return isinstance(error, TransientError) and error.in_step_code


async def _guarded(
    attempt_fn: Callable[[int], Awaitable[T]], number: int, breaker: CircuitBreaker | None
) -> T:
    """One attempt, behind the breaker when there is one."""
    if breaker is None:
        return await attempt_fn(number)
    breaker.check()
    try:
        result = await attempt_fn(number)
    except BaseException as error:
        _record(breaker, error)
        raise
    _record(breaker, None)
    return result


def _guarded_sync(attempt_fn: Callable[[int], T], number: int, breaker: CircuitBreaker | None) -> T:
    """One attempt, behind the breaker when there is one (sync)."""
    if breaker is None:
        return attempt_fn(number)
    breaker.check()
    try:
        result = attempt_fn(number)
    except BaseException as error:
        _record(breaker, error)
        raise
    _record(breaker, None)
    return result


async def run_with_retries(
    policy: RetrySpec,
    attempt_fn: Callable[[int], Awaitable[T]],
    *,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    breaker: CircuitBreaker | None = None,
) -> T:
    """Await ``attempt_fn(1)``, ``attempt_fn(2)``, ... until one succeeds or the policy stops.

    Parameters
    ----------
    policy
        A :class:`RetryPolicy`, or anything :meth:`RetryPolicy.from_value` takes.
    attempt_fn
        Runs attempt number ``n`` (1-based).
    on_retry
        Called as ``on_retry(next_attempt, error, delay)`` before each wait, where
        ``delay`` is the seconds about to be slept.
    sleep
        The coroutine function that waits; tests inject one that only records.
    breaker
        Checked before each attempt (an open breaker raises
        :class:`~dagnb.errors.CircuitOpenError`, never retried); told of each outcome:
        a transient error is a failure, a success, a permanent error or a transient
        error of the step's own code (``TransientError.in_step_code``) closes it, a
        timeout or cancellation frees the half-open probe slot.

    Returns
    -------
    The first successful attempt's result.

    Raises
    ------
    BaseException
        The last attempt's error, as it was raised, once it is not retried or the
        retries are used up (never tenacity's ``RetryError``).
    """
    try:  # most attempts succeed: tenacity's machinery is only built after a failure
        if breaker is None:  # (_guarded written out: no coroutine of its own for
            return await attempt_fn(1)  # the first attempt, which every step makes)
        breaker.check()
        try:
            result = await attempt_fn(1)
        except BaseException as error:
            _record(breaker, error)
            raise
        breaker.record_success()  # (_record of no error)
        return result
    except Exception as error:
        first_failure = [error]
    numbers = itertools.count(2)

    async def attempt() -> T:
        if first_failure:  # replay attempt 1 so tenacity's counting and waits are exact
            raise first_failure.pop()
        return await _guarded(attempt_fn, next(numbers), breaker)

    kwargs = RetryPolicy.from_value(policy).tenacity_kwargs(on_retry)
    retrying = tenacity.AsyncRetrying(sleep=sleep, **kwargs)
    try:
        return await retrying(attempt)
    except BaseException as error:
        _let_go_of_retry_state(error)
        raise
    finally:
        _untied(retrying)


def _untied(retrying: tenacity.BaseRetrying) -> None:
    """Clear the actions tenacity (8.3 on) keeps of its last turn, methods of
    ``retrying`` in ``retrying``'s own state: a cycle, and with it what ``retrying``
    holds (the attempt, and so a run's scheduler and the run, its steps' results among
    them) alive until a full collection (rare while runs go on). Where the state has no
    actions (older tenacity), nothing."""
    state = getattr(retrying, "iter_state", None)
    if state is not None and hasattr(state, "reset"):
        state.reset()


def _let_go_of_retry_state(error: BaseException) -> None:
    """Clear the locals of tenacity's frames (and of the future they keep the outcome
    in) in ``error``'s traceback. They hold the retry's state, which holds the error,
    whose traceback holds them: a cycle, and with it the frames of the step's own code
    that raised, its DataFrames among their locals, alive until a full collection (rare
    while runs go on, see ``dagnb.runtime.prepare``). Their locals are no one's to
    read; the step's own frames keep theirs, for a post-mortem."""
    seen = 0
    traceback = error.__traceback__
    while traceback is not None and seen < _FRAMES_LOOKED_AT:
        frame = traceback.tb_frame
        if frame.f_globals.get("__name__", "").startswith(_RETRY_MODULES):
            with contextlib.suppress(RuntimeError):  # (one still running: not ours)
                frame.clear()
        traceback, seen = traceback.tb_next, seen + 1


_RETRY_MODULES = ("tenacity", "concurrent.futures")
_FRAMES_LOOKED_AT = 200  # (a deep recursion's traceback is not walked to its end)


def run_with_retries_sync(
    policy: RetrySpec,
    attempt_fn: Callable[[int], T],
    *,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
    breaker: CircuitBreaker | None = None,
) -> T:
    """The synchronous twin of :func:`run_with_retries` (``sleep`` is a plain function)."""
    numbers = itertools.count(1)

    def attempt() -> T:
        return _guarded_sync(attempt_fn, next(numbers), breaker)

    kwargs = RetryPolicy.from_value(policy).tenacity_kwargs(on_retry)
    retrying = tenacity.Retrying(sleep=sleep, **kwargs)
    try:
        return retrying(attempt)
    finally:
        _untied(retrying)


# ---------------------------------------------------------------- the decorator


def _async_sleep(sleep: Callable[[float], Any] | None) -> Callable[[float], Awaitable[None]]:
    """An awaitable sleep from None (asyncio.sleep, looked up now), or any sleep."""
    if sleep is None:
        return asyncio.sleep
    if inspect.iscoroutinefunction(sleep):
        return sleep

    async def call(seconds: float) -> None:
        result = sleep(seconds)
        if inspect.isawaitable(result):
            await result

    return call


def _wrap(
    func: Callable[P, R],
    policy: RetryPolicy,
    on_retry: OnRetry | None,
    sleep: Callable[[float], Any] | None,
    breaker: CircuitBreaker | None,
) -> Callable[P, R]:
    """``func`` retried under ``policy``, async if ``func`` is."""
    options: dict[str, Any] = {"on_retry": on_retry, "breaker": breaker}  # read-only
    if inspect.iscoroutinefunction(func):
        async_func = cast(Callable[P, Awaitable[Any]], func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            call = functools.partial(async_func, *args, **kwargs)
            wait = _async_sleep(sleep)  # per call, so a patched asyncio.sleep applies
            return await run_with_retries(policy, lambda _n: call(), sleep=wait, **options)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        call = functools.partial(func, *args, **kwargs)
        wait = sleep or time.sleep  # looked up per call, so a patched time.sleep applies
        return run_with_retries_sync(policy, lambda _n: call(), sleep=wait, **options)

    return wrapper


@overload
def retry(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(
    func: None = None,
    /,
    *,
    max_retries: int = DEFAULT_RETRIES,
    backoff_factor: float = 0.5,
    max_delay: float = 30.0,
    jitter: float | bool = DEFAULT_JITTER,
    retry_on: RetryOnItem | RetryOn = (),
    retry_transient: bool = True,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Any] | None = None,
    breaker: CircuitBreaker | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry(
    func: Callable[P, R] | None = None,
    /,
    *,
    max_retries: int = DEFAULT_RETRIES,
    backoff_factor: float = 0.5,
    max_delay: float = 30.0,
    jitter: float | bool = DEFAULT_JITTER,
    retry_on: RetryOnItem | RetryOn = (),
    retry_transient: bool = True,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Any] | None = None,
    breaker: CircuitBreaker | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry a sync or async function on transient errors; ``@retry`` or ``@retry(...)``.

    The wrapped function keeps its signature, name and docstring, and stays a coroutine
    function if it was one.

    Parameters
    ----------
    func
        The function, when used bare as ``@retry``.
    max_retries
        Retries after the first call (exactly; no transient floor here). Default 2.
    backoff_factor, max_delay, jitter
        The waits, as in :class:`RetryPolicy` (jitter in seconds, or True/False).
    retry_on
        Errors to retry besides the transient ones (``TransientError``,
        ``ConnectionError``, ``TimeoutError`` and the others :func:`classify` calls
        transient): exception types, exit codes or predicates.
    retry_transient
        False retries only what ``retry_on`` names.
    on_retry
        ``on_retry(next_attempt, error, delay)`` before each wait.
    sleep
        Waits between calls: a plain function for sync ``func``, a plain or coroutine
        function for async ``func``. Default ``time.sleep`` / ``asyncio.sleep``.
    breaker
        A :class:`~dagnb.retry.breaker.CircuitBreaker` consulted before each call.

    Examples
    --------
    >>> @retry(max_retries=3, retry_on=(ValueError,), backoff_factor=0.1)
    ... def fetch(url: str) -> bytes: ...
    """
    policy = RetryPolicy(
        max_retries=max_retries,
        backoff_factor=backoff_factor,
        max_delay=max_delay,
        jitter=jitter,
        retry_on=cast(RetryOn, retry_on),
        retry_transient=retry_transient,
        transient_retries=0,
    )

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        return _wrap(function, policy, on_retry, sleep, breaker)

    if func is None:
        return decorate
    if not callable(func):
        raise ConfigError(
            f"retry({func!r}) is not valid; expected a function, or keyword arguments such "
            "as @retry(max_retries=3)"
        )
    return decorate(func)


def layered(base: Mapping[str, Any], value: Any) -> Any:
    """Retry settings ``value`` (None, a count, a mapping or a RetryPolicy) over ``base``.

    Settings < run < step: each level overrides the keys it names. A mapping that names
    ``retry_on`` or ``retry_on_timeout`` but no count does not inherit a count of 0,
    since naming what to retry means retrying it (``from_value`` then gives 2).
    """
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(base, RetryPolicy):
        if value is None:
            return base
        base = dataclasses.asdict(base)
    merged = dict(base)
    if value is None:
        return merged
    if isinstance(value, bool) or not isinstance(value, (int, Mapping)):
        return RetryPolicy.from_value(value)  # True/False, or the one-line error
    if isinstance(value, int):
        return {**merged, "max_retries": value}
    if {"retry_on", "retry_on_timeout"} & value.keys() and "max_retries" not in value:
        merged.pop("max_retries", None)
    # a setting given under its other name (retry_jitter, jitter) replaces the base's
    named = {_ALIASES.get(key, key) for key in value}
    merged = {key: v for key, v in merged.items() if _ALIASES.get(key, key) not in named}
    return {**merged, **value}

