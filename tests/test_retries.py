"""RetryPolicy, classify, run_with_retries and @retry, with injected sleeps only."""

from __future__ import annotations

import asyncio
import errno
import inspect
import subprocess
import time

import pytest

from dagnb.errors import (
    CircuitOpenError,
    ConfigError,
    StepCancelled,
    StepFailed,
    StepTimeout,
    TransientError,
)
from dagnb.retry.breaker import CircuitBreaker
from dagnb.retry.policy import (
    DEFAULT_RETRIES,
    RetryPolicy,
    classify,
    layered,
    retry,
    run_with_retries,
    run_with_retries_sync,
)
from dagnb.testing import Clock


class Recorder:
    """Collects sleeps and on_retry calls; fails the first ``failures`` attempts."""

    def __init__(self, errors: list[BaseException] | None = None) -> None:
        self.errors = list(errors or [])
        self.attempts: list[int] = []
        self.sleeps: list[float] = []
        self.retries: list[tuple[int, BaseException, float]] = []

    async def attempt(self, number: int) -> str:
        return self.attempt_sync(number)

    def attempt_sync(self, number: int) -> str:
        self.attempts.append(number)
        if self.errors:
            raise self.errors.pop(0)
        return f"ok on {number}"

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, attempt: int, error: BaseException, delay: float) -> None:
        self.retries.append((attempt, error, delay))

    def run(self, policy: object, **options: object) -> str:
        return asyncio.run(
            run_with_retries(
                policy, self.attempt, on_retry=self.on_retry, sleep=self.sleep, **options
            )
        )


def failed(code: int | None) -> StepFailed:
    return StepFailed(f"exited {code}", step="s", exit_code=code)


# ---------------------------------------------------------------- run_with_retries


def test_transient_errors_succeed_on_third_attempt_with_delays_in_bounds():
    policy = RetryPolicy(max_retries=3, backoff_factor=0.5, jitter=0.1)
    rec = Recorder([TransientError("engine went away"), TransientError("again")])
    assert rec.run(policy) == "ok on 3"
    assert rec.attempts == [1, 2, 3]
    assert [(n, str(e)) for n, e, _ in rec.retries] == [(2, "engine went away"), (3, "again")]
    assert rec.sleeps == [d for _, _, d in rec.retries]
    for (attempt, _, delay), (low, high) in zip(rec.retries, [(0.5, 0.6), (1.0, 1.1)], strict=True):
        assert policy.delay_bounds(attempt - 1) == pytest.approx((low, high))
        assert low <= delay <= high


def test_default_policy_retries_transient_errors_twice():
    rec = Recorder([TransientError("a"), ConnectionResetError("b")])
    assert rec.run(None) == "ok on 3"
    rec = Recorder([TransientError(str(n)) for n in range(3)])
    with pytest.raises(TransientError, match="2"):
        rec.run(0)
    assert rec.attempts == [1, 2, 3]


def test_step_failed_is_not_retried_by_default():
    rec = Recorder([failed(1)])
    with pytest.raises(StepFailed, match="exited 1"):
        rec.run(None)
    assert rec.attempts == [1]
    assert rec.retries == [] and rec.sleeps == []


def test_a_bare_retry_count_retries_any_failure():
    for spec in (3, {"max_retries": 3}):
        rec = Recorder([failed(1)])
        assert rec.run(spec) == "ok on 2"
        assert rec.attempts == [1, 2]


def test_step_failed_is_retried_when_retry_on_names_its_exit_code():
    rec = Recorder([failed(1)])
    assert rec.run(RetryPolicy(max_retries=1, retry_on=(1,))) == "ok on 2"
    rec = Recorder([failed(2)])
    with pytest.raises(StepFailed):
        rec.run(RetryPolicy(max_retries=1, retry_on=(1,)))


def test_exit_code_137_and_sigkill_are_retried_when_named():
    rec = Recorder([failed(137), failed(-9)])  # -9: killed by SIGKILL, as a shell says 137
    assert rec.run({"retry_on": [137]}) == "ok on 3"
    policy = RetryPolicy(max_retries=1, retry_on=(137,))
    assert policy.should_retry(subprocess.CalledProcessError(137, ["x"]))
    assert not policy.should_retry(failed(1)) and not policy.should_retry(failed(None))


def test_retry_on_types_match_the_cause_of_a_step_failed():
    try:
        try:
            raise KeyError("flaky api")
        except KeyError as exc:
            raise failed(1) from exc
    except StepFailed as exc:
        error = exc
    assert RetryPolicy(max_retries=1, retry_on=(KeyError,)).should_retry(error)
    assert not RetryPolicy(max_retries=1, retry_on=(ValueError,)).should_retry(error)
    assert RetryPolicy(max_retries=1, retry_on=(lambda e: "exited" in str(e),)).should_retry(error)


def test_exhausted_retries_raise_the_last_error_as_is():
    errors = [TransientError(f"attempt {n}") for n in (1, 2, 3)]
    rec = Recorder(errors[:])
    with pytest.raises(TransientError) as info:
        rec.run(RetryPolicy(max_retries=2, backoff_factor=1, jitter=0))
    assert info.value is errors[-1]
    assert rec.attempts == [1, 2, 3]
    assert [(n, e) for n, e, _ in rec.retries] == [(2, errors[0]), (3, errors[1])]
    assert rec.sleeps == [1.0, 2.0]


def test_step_timeout_is_retried_only_with_retry_on_timeout():
    rec = Recorder([StepTimeout("ran past 10s")])
    with pytest.raises(StepTimeout):
        rec.run(RetryPolicy(max_retries=3))
    assert rec.attempts == [1]
    rec = Recorder([StepTimeout("ran past 10s")])
    assert rec.run(RetryPolicy(max_retries=3, retry_on_timeout=True)) == "ok on 2"


@pytest.mark.parametrize(
    "error", [StepCancelled("stop"), CircuitOpenError("open"), asyncio.CancelledError()]
)
def test_cancellation_and_open_circuits_are_never_retried(error):
    policy = RetryPolicy(max_retries=5, retry_on=(BaseException,), retry_on_timeout=True)
    assert not policy.should_retry(error)
    rec = Recorder([error])
    with pytest.raises(type(error)):
        rec.run(policy)
    assert rec.attempts == [1]


def test_sync_twin_retries_with_injected_sleep():
    rec = Recorder([ConnectionError("reset"), TransientError("blip")])
    sleeps: list[float] = []
    result = run_with_retries_sync(
        RetryPolicy(jitter=0), rec.attempt_sync, on_retry=rec.on_retry, sleep=sleeps.append
    )
    assert result == "ok on 3"
    assert sleeps == [0.5, 1.0]
    assert [n for n, _, _ in rec.retries] == [2, 3]


# ---------------------------------------------------------------- breaker


def test_run_with_retries_consults_the_breaker():
    breaker = CircuitBreaker("dagger", failure_threshold=2, reset_timeout=30, clock=Clock())
    rec = Recorder([TransientError(str(n)) for n in range(5)])
    with pytest.raises(CircuitOpenError, match="executor 'dagger' failed 2 times in a row"):
        rec.run(RetryPolicy(max_retries=5), breaker=breaker)
    assert rec.attempts == [1, 2]  # the third attempt failed fast, and was not retried
    assert [n for n, _, _ in rec.retries] == [2, 3]
    rec = Recorder()
    with pytest.raises(CircuitOpenError):
        rec.run(None, breaker=breaker)
    assert rec.attempts == []


def test_successes_and_permanent_failures_reset_the_breaker():
    breaker = CircuitBreaker("local", failure_threshold=3, clock=Clock())
    assert Recorder([TransientError("x"), TransientError("y")]).run(None, breaker=breaker)
    assert breaker.failures == 0 and breaker.state == "closed"
    with pytest.raises(StepFailed):
        Recorder([TransientError("x"), failed(1)]).run(None, breaker=breaker)
    assert breaker.failures == 0


def test_a_timed_out_probe_frees_the_half_open_slot():
    clock = Clock()
    breaker = CircuitBreaker("dagger", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    with pytest.raises(StepTimeout):
        Recorder([StepTimeout("slow")]).run(None, breaker=breaker)
    assert breaker.state == "half_open"
    assert Recorder().run(None, breaker=breaker) == "ok on 1"
    assert breaker.state == "closed"


# ---------------------------------------------------------------- the policy


def test_delay_is_exponential_capped_and_jittered_within_bounds():
    policy = RetryPolicy(backoff_factor=0.5, max_delay=3.0, jitter=0.25)
    assert [policy.delay_bounds(n)[0] for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for n in (1, 2, 3, 4, 10, 5000):
        low, high = policy.delay_bounds(n)
        assert high == low + 0.25
        assert all(low <= policy.delay(n) <= high for _ in range(20))
    assert RetryPolicy(jitter=0).delay(3) == 2.0


def test_from_value_defaults():
    assert RetryPolicy.from_value(None) == RetryPolicy()
    assert RetryPolicy().max_retries == 0 and RetryPolicy().transient_retries == DEFAULT_RETRIES
    assert RetryPolicy.from_value(3).max_retries == 3
    policy = RetryPolicy(max_retries=1)
    assert RetryPolicy.from_value(policy) is policy
    assert RetryPolicy.from_value(False) == RetryPolicy.disabled()
    assert RetryPolicy.from_value(True).max_retries == DEFAULT_RETRIES
    assert RetryPolicy.from_value({"retry_on": [137]}).max_retries == DEFAULT_RETRIES
    assert RetryPolicy.from_value(5).retries_for(TransientError()) == 5


def test_from_value_accepts_the_seed_config_names():
    policy = RetryPolicy.from_value(
        {"max_retries": 4, "retry_backoff_factor": 0.2, "retry_jitter": 0, "max_delay": 9}
    )
    assert policy == RetryPolicy(max_retries=4, backoff_factor=0.2, jitter=0.0, max_delay=9.0)
    off = RetryPolicy.from_value({"enable_retry": False, "max_retries": 4})
    assert off.max_retries == 0
    assert not off.should_retry(TransientError()) and not off.should_retry(ConnectionError())
    assert RetryPolicy.from_value({"enable_retry": True}) == RetryPolicy()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"max_retries": -1}, r"retry setting max_retries=-1 is not valid; expected a whole"),
        ({"retry_backoff_factor": "fast"}, r"retry_backoff_factor='fast' is not valid"),
        ({"retry_jitter": -0.5}, r"retry_jitter=-0.5 is not valid; expected a number of sec"),
        ({"max_delay": float("inf")}, r"max_delay=inf is not valid"),
        ({"retry_on": ["OOM"]}, r"retry_on=\['OOM'\] is not valid; .*'OOM' is none of these"),
        ({"retry_on_timeout": "yes"}, r"retry_on_timeout='yes' is not valid; expected True"),
        ({"enable_retry": 0}, r"enable_retry=0 is not valid; expected True or False"),
        ({"max_retry": 3}, r"retry setting 'max_retry' is not known \(did you mean 'max_re"),
        ({"jitter": 1, "retry_jitter": 2}, r"'jitter' and 'retry_jitter' both set jitter"),
        (-2, r"max_retries=-2 is not valid"),
        (2.5, r"retries 2.5 is not a retry setting; expected None, a number"),
        ("3", r"retries '3' is not a retry setting"),
    ],
)
def test_bad_retry_settings_raise_config_error(value, message):
    with pytest.raises(ConfigError, match=message):
        RetryPolicy.from_value(value)


@pytest.mark.parametrize(("base", "value", "merged"), [
    ({"backoff_factor": 0.5, "jitter": 0.1}, {"retry_backoff_factor": 2},
     {"jitter": 0.1, "retry_backoff_factor": 2}),
    ({"retry_jitter": 0.3, "max_retries": 1}, {"jitter": 0},
     {"max_retries": 1, "jitter": 0}),
])
def test_a_layer_naming_a_setting_by_its_other_name_overrides_the_one_below(base, value,
                                                                           merged):
    # (both kept, the policy was refused at run time: "both set backoff_factor")
    assert layered(base, value) == merged
    RetryPolicy.from_value(layered(base, value))


def test_policy_fields_are_validated_too():
    with pytest.raises(ConfigError, match=r"max_retries=True is not valid"):
        RetryPolicy(max_retries=True)
    assert RetryPolicy(retry_on=[ValueError, 137]).retry_on == (ValueError, 137)
    assert RetryPolicy(retry_on=ValueError).retry_on == (ValueError,)


# ---------------------------------------------------------------- classify


class _SocketError(OSError):
    """An OSError subclass Python does not map by errno."""


def _foreign(module: str, name: str) -> BaseException:
    """An instance of a class that looks like ``module.name``, without importing it."""
    return type(name, (Exception,), {"__module__": module})("boom")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (TransientError("engine"), "transient"),
        (ConnectionResetError(), "transient"),
        (OSError(errno.ECONNREFUSED, "refused"), "transient"),
        (_SocketError(errno.ETIMEDOUT, "timed out"), "transient"),
        (_SocketError(errno.EPIPE, "pipe"), "transient"),
        (TimeoutError(), "transient"),
        (_foreign("dagger._exceptions", "TransportError"), "transient"),
        (_foreign("dagger", "ClientConnectionError"), "transient"),
        (_foreign("httpx", "TransportError"), "transient"),
        (_foreign("dagger._exceptions", "QueryError"), "permanent"),
        (_SocketError(errno.ENOENT, "no file"), "permanent"),
        (ValueError("bad"), "permanent"),
        (failed(1), "permanent"),
        (StepTimeout("slow"), "timeout"),
        (StepCancelled("stop"), "cancelled"),
        (asyncio.CancelledError(), "cancelled"),
        (KeyboardInterrupt(), "cancelled"),
        (CircuitOpenError("open"), "circuit_open"),
    ],
)
def test_classify(error, kind):
    assert classify(error) == kind


def test_classify_real_httpx_errors():
    httpx = pytest.importorskip("httpx")
    assert classify(httpx.ConnectError("refused")) == "transient"
    assert classify(httpx.ReadTimeout("slow")) == "transient"
    assert classify(httpx.UnsupportedProtocol("ftp://")) == "permanent"


def _http_error(module: str, name: str, status: int) -> BaseException:
    """``module.name`` raised for a response of ``status`` (requests' shape)."""
    response = type("Response", (), {"status_code": status})()
    error = _foreign(module, name)
    error.response = response  # type: ignore[attr-defined]
    return error


def test_classify_requests_urllib_and_urllib3_connection_errors_as_transient():
    requests = pytest.importorskip("requests")
    urllib3 = pytest.importorskip("urllib3")
    import urllib.error

    assert classify(requests.ConnectionError("refused")) == "transient"
    assert classify(requests.ReadTimeout("slow")) == "transient"
    assert classify(requests.exceptions.ChunkedEncodingError("cut")) == "transient"
    assert classify(requests.exceptions.SSLError("bad certificate")) == "permanent"
    refused = urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert classify(refused) == "transient"
    assert classify(urllib.error.URLError("unknown url type: foo")) == "permanent"
    pool = urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.ProtocolError("x"))
    assert classify(pool) == "transient"
    assert classify(urllib3.exceptions.ReadTimeoutError(None, "/", "slow")) == "transient"


@pytest.mark.parametrize(("status", "kind"), [
    (503, "transient"), (502, "transient"), (504, "transient"), (429, "transient"),
    (408, "transient"), (500, "permanent"), (404, "permanent"),
])
def test_classify_http_errors_by_status(status, kind):
    import urllib.error

    assert classify(_http_error("requests.exceptions", "HTTPError", status)) == kind
    assert classify(_http_error("httpx", "HTTPStatusError", status)) == kind
    assert classify(urllib.error.HTTPError("http://x", status, "S", {}, None)) == kind  # type: ignore[arg-type]
    assert classify(_foreign("requests.exceptions", "HTTPError")) == "permanent"  # no response


# ---------------------------------------------------------------- @retry


def test_bare_decorator_on_sync_function(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    calls = []

    @retry
    def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetch a URL."""
        calls.append(url)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return url.upper()

    assert fetch("u") == "U"
    assert len(calls) == 3 and len(sleeps) == 2
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch a URL."
    assert not inspect.iscoroutinefunction(fetch)


def test_bare_decorator_on_async_function(monkeypatch):
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    calls = []

    @retry
    async def fetch(url: str) -> str:
        calls.append(url)
        if len(calls) < 2:
            raise TransientError("blip")
        return url

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch("u")) == "u"
    assert len(calls) == 2 and len(sleeps) == 1


def test_decorator_with_arguments_on_sync_and_async_functions():
    sleeps: list[float] = []
    seen: list[int] = []
    options = dict(
        max_retries=3,
        retry_on=(ValueError,),
        backoff_factor=0.1,
        jitter=0,
        sleep=sleeps.append,
        on_retry=lambda n, e, d: seen.append(n),
    )
    attempts = {"sync": 0, "async": 0}

    @retry(**options)
    def parse(text: str) -> int:
        attempts["sync"] += 1
        if attempts["sync"] < 4:
            raise ValueError(text)
        return int(text)

    @retry(**options)
    async def aparse(text: str) -> int:
        attempts["async"] += 1
        if attempts["async"] < 3:
            raise ValueError(text)
        return int(text)

    assert parse("7") == 7
    assert asyncio.run(aparse("8")) == 8
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2])
    assert seen == [2, 3, 4, 2, 3]


def test_decorator_max_retries_is_exact_and_other_errors_pass_through():
    calls = []

    @retry(max_retries=1, sleep=lambda s: None)
    def always(kind: type[BaseException]) -> None:
        calls.append(kind)
        raise kind("x")

    with pytest.raises(ConnectionError):
        always(ConnectionError)
    with pytest.raises(KeyError):
        always(KeyError)
    assert calls == [ConnectionError, ConnectionError, KeyError, KeyError]

    calls.clear()
    narrowed = retry(max_retries=1, retry_on=(ConnectionError,), sleep=lambda s: None)(
        always.__wrapped__
    )
    with pytest.raises(KeyError):
        narrowed(KeyError)
    assert calls == [KeyError]


def test_decorator_keeps_signatures():
    def plain(a: int, b: str = "x", *args: int, c: float, **kw: str) -> list[int]:
        return []

    async def coro(a: int, /, b: str = "x") -> int:
        return a

    for func in (plain, coro):
        for wrapped in (retry(func), retry(max_retries=1)(func)):
            assert inspect.signature(wrapped) == inspect.signature(func)
            assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(func)
            assert wrapped.__wrapped__ is func


def test_decorator_rejects_a_positional_count():
    with pytest.raises(ConfigError, match=r"retry\(3\) is not valid; expected a function"):
        retry(3)  # type: ignore[call-overload]
