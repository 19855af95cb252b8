"""CircuitBreaker and its registry, on an injected clock."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dagnb.errors import CircuitOpenError, ConfigError, TransientError
from dagnb.retry.breaker import CircuitBreaker, breaker_for, breakers
from dagnb.retry.policy import run_with_retries
from dagnb.testing import Clock, isolated


@pytest.fixture
def clock() -> Clock:
    return Clock(now=500.0)


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("dagger", failure_threshold=5, reset_timeout=30, clock=clock)


def open_(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


def test_opens_after_the_threshold_and_fails_fast_with_the_message(breaker, clock):
    for _ in range(4):
        breaker.record_failure()
        breaker.check()
    assert breaker.state == "closed" and breaker.failures == 4
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_at == 500.0 and breaker.retry_at == 530.0
    message = (
        r"^executor 'dagger' failed 5 times in a row; steps fail fast until it is tried "
        r"again in 30 s \(at \d\d:\d\d:\d\d\)$"
    )
    with pytest.raises(CircuitOpenError, match=message):
        breaker.check()
    clock.now += 18
    with pytest.raises(CircuitOpenError, match=r"tried again in 12 s"):
        breaker.check()


def test_a_success_resets_the_count(breaker):
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.failures == 4


def test_half_open_lets_exactly_one_probe_and_closes_on_success(breaker, clock):
    open_(breaker)
    clock.now += 30
    assert breaker.state == "half_open"
    breaker.check()  # the probe
    with pytest.raises(CircuitOpenError, match=r"while one probe step checks"):
        breaker.check()
    assert breaker.state == "half_open"
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0
    assert breaker.opened_at is None and breaker.retry_at is None
    breaker.check()
    breaker.check()


def test_a_failed_probe_reopens_with_a_fresh_timeout(breaker, clock):
    open_(breaker)
    clock.now += 45
    breaker.check()
    breaker.record_failure()
    assert breaker.state == "open" and breaker.failures == 6
    assert breaker.retry_at == clock.now + 30
    with pytest.raises(CircuitOpenError, match=r"failed 6 times in a row; .* in 30 s"):
        breaker.check()
    clock.now += 30
    breaker.check()


def test_release_frees_the_probe_slot(breaker, clock):
    open_(breaker)
    clock.now += 30
    breaker.check()
    breaker.release()
    breaker.check()  # a second probe may go
    with pytest.raises(CircuitOpenError):
        breaker.check()


def test_late_failures_while_open_do_not_extend_the_timeout(breaker, clock):
    open_(breaker)
    clock.now += 10
    breaker.record_failure()  # an attempt that started before the breaker opened
    assert breaker.retry_at == 530.0


def test_snapshot(breaker, clock):
    assert breaker.snapshot() == {
        "executor": "dagger",
        "state": "closed",
        "failures": 0,
        "failure_threshold": 5,
        "reset_timeout": 30.0,
        "retry_in": None,
        "probing": False,
    }
    open_(breaker)
    clock.now += 12
    row = breaker.snapshot()
    assert row["state"] == "open" and row["failures"] == 5 and row["retry_in"] == 18.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"failure_threshold": 0}, r"failure_threshold=0 is not valid; expected a whole"),
        ({"failure_threshold": 2.5}, r"failure_threshold=2.5 is not valid"),
        ({"reset_timeout": -1}, r"reset_timeout=-1 is not valid; expected a number of sec"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        CircuitBreaker("x", **settings)


def test_registry_returns_one_breaker_per_executor(clock):
    first = breaker_for("dagger", failure_threshold=2, clock=clock)
    assert breaker_for("dagger") is first and first.failure_threshold == 2
    assert breaker_for("local") is not first
    assert [b.name for b in breakers()] == ["dagger", "local"]
    with isolated():
        assert breakers() == [] and breaker_for("dagger") is not first
    assert breaker_for("dagger") is first  # the outer context's breaker is back


def test_only_one_thread_gets_the_probe(breaker, clock):
    open_(breaker)
    clock.now += 30
    barrier = threading.Barrier(8)

    def try_once(_: int) -> bool:
        barrier.wait()
        try:
            breaker.check()
        except CircuitOpenError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(try_once, range(8))) == [False] * 7 + [True]


def test_only_one_task_gets_the_probe_and_its_success_closes(breaker, clock):
    open_(breaker)
    clock.now += 30
    ran: list[int] = []

    async def attempt(number: int) -> str:
        ran.append(number)
        await asyncio.sleep(0)  # let the other tasks reach the breaker meanwhile
        return "ok"

    async def main() -> list[object]:
        runs = [run_with_retries(None, attempt, breaker=breaker) for _ in range(5)]
        return await asyncio.gather(*runs, return_exceptions=True)

    results = asyncio.run(main())
    assert results.count("ok") == 1 and ran == [1]
    assert all(isinstance(r, CircuitOpenError) for r in results if r != "ok")
    assert breaker.state == "closed"


@pytest.mark.parametrize(("in_step_code", "failures"), [(False, 3), (True, 0)])
def test_only_the_executors_own_transient_errors_count(breaker, in_step_code, failures):
    async def attempt(number: int) -> None:
        raise TransientError("connection reset", in_step_code=in_step_code)

    with pytest.raises(TransientError):
        asyncio.run(run_with_retries({"backoff_factor": 0, "jitter": 0}, attempt,
                                     breaker=breaker))
    assert breaker.failures == failures and breaker.state == "closed"
