"""Retries, timeouts and the circuit breaker, through ``graph.run()`` on the local executor.

Every run gets a recording ``sleep`` so no retry waits for real; the breaker test injects
a clock. Only the timeout tests take real time (about a second each).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import time
from typing import Any

import pandas as pd
import pytest

import dagnb
from dagnb import Graph, RetryPolicy, Step, TransientError
from dagnb.retry.breaker import breaker_for
from dagnb.testing import FakeExecutor, wait_until


class Sleeps(list):
    """An injected ``sleep`` that records the delays instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


pytestmark = pytest.mark.usefixtures("workdir")


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def run_graph(steps: list[Step], sleeps: Sleeps, **options: Any) -> dagnb.Run:
    options = {"executor": "local", "cache": False, **options}
    return Graph("retries", steps).run(sleep=sleeps, **options)


def row(run: dagnb.Run, step: str) -> dict[str, Any]:
    frame = run.status()
    return frame[frame["step"] == step].iloc[0].to_dict()


def state_events(run: dagnb.Run, state: str) -> list[Any]:
    return [e for e in run.events if e.kind == "state" and e.data["state"] == state]


def default_policy() -> RetryPolicy:
    """The policy a step with no ``retries`` gets: the settings' defaults."""
    return RetryPolicy.from_value(dagnb.settings().retry_defaults())


@pytest.mark.parametrize(("retries", "error"), [
    (-1, r"retry setting max_retries=-1 is not valid; expected a whole number >= 0$"),
    ({"max_retires": 3}, r"retry setting 'max_retires' is not known \(did you mean "
                         r"'max_retries'\?\)"),
    ("3", r"retries '3' is not a retry setting"),
])
def test_a_bad_retries_of_the_run_is_refused_before_it_as_a_steps_is(sleeps, retries, error):
    graph = Graph("retries", [Step("load", run="true")])
    assert graph.run(sleep=sleeps, executor="local").ok  # cached: no step would run
    for mode in ("read-write", "off"):  # (else every step that ran failed with it)
        with pytest.raises(dagnb.ConfigError, match=rf"^retries= of the run: {error}"):
            graph.run(retries=retries, cache_mode=mode, sleep=sleeps, executor="local")
    assert run_graph([Step("load", run="true")], sleeps, retries={"retry_jitter": 0}).ok


# -- transient errors -------------------------------------------------------------------


def test_transient_error_is_retried_until_the_third_attempt_succeeds(sleeps):
    calls: list[int] = []

    def fetch() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError(f"registry blip {len(calls)}")
        return "data"

    run = run_graph([Step("fetch", func=fetch)], sleeps)

    status = row(run, "fetch")
    assert (status["state"], status["attempts"]) == ("succeeded", 3), status
    assert run.result("fetch") == "data"
    policy = default_policy()
    assert len(sleeps) == 2
    for retry, delay in enumerate(sleeps, start=1):
        low, high = policy.delay_bounds(retry)
        assert low <= delay <= high, (retry, delay, (low, high))
    retrying = state_events(run, "retrying")
    assert [e.attempt for e in retrying] == [1, 2]
    assert [e.data["delay"] for e in retrying] == [round(d, 3) for d in sleeps]
    errors = [e.data["error"] for e in retrying]
    assert "registry blip 1" in errors[0] and "registry blip 2" in errors[1], errors


# -- exit codes -------------------------------------------------------------------------


def test_exit_code_1_is_not_retried_by_default(sleeps):
    run = run_graph([Step("bad", run="echo nope >&2; exit 1")], sleeps)
    status = row(run, "bad")
    assert (status["state"], status["attempts"], status["exit_code"]) == ("failed", 1, 1)
    assert "exit code 1" in status["error"] and "nope" in status["error"]
    assert sleeps == [] and state_events(run, "retrying") == []


def test_exit_code_1_is_retried_when_retry_on_names_it(sleeps):
    run = run_graph(
        [Step("bad", run="exit 1")], sleeps, retries={"max_retries": 2, "retry_on": [1]}
    )
    status = row(run, "bad")
    assert (status["state"], status["attempts"], status["exit_code"]) == ("failed", 3, 1)
    assert len(sleeps) == 2 and len(state_events(run, "retrying")) == 2


def test_a_retry_finds_the_link_to_an_upstream_that_wrote_no_files(sleeps):
    # (the link dangles: a Python step not cached makes no output folder; the second
    # attempt took it for missing and failed making it again, FileExistsError)
    use = Step("use", run='test -L "$DAGNB_IN/made" && test "$DAGNB_ATTEMPT" = 2',
               needs=["made"], retries={"max_retries": 1, "retry_on": [1]})
    run = run_graph([Step("made", func=lambda: 1), use], sleeps)
    status = row(run, "use")
    assert (status["state"], status["attempts"]) == ("succeeded", 2), status["error"]


def test_retry_on_without_a_count_retries(sleeps):
    # RetryPolicy.from_value: naming errors to retry without max_retries gives 2 retries.
    run = run_graph([Step("bad", run="exit 1", retries={"retry_on": [1]})], sleeps)
    assert row(run, "bad")["attempts"] == 3
    run = run_graph([Step("bad", run="exit 1")], sleeps, retries={"retry_on": [1]})
    assert row(run, "bad")["attempts"] == 3


@pytest.mark.parametrize("command", ["kill -9 $$", "exit 137"])
def test_killed_step_is_retried_with_retry_on_137(sleeps, command):
    plain = run_graph([Step("oom", run=command)], sleeps)
    assert row(plain, "oom")["attempts"] == 1
    run = run_graph(
        [Step("oom", run=command, retries={"max_retries": 1, "retry_on": [137]})], sleeps
    )
    status = row(run, "oom")
    assert (status["state"], status["attempts"]) == ("failed", 2)
    assert status["exit_code"] in (137, -9)  # a signal is reported as the OS gives it


@pytest.mark.parametrize("command", ["kill -9 $$", "exit 137"])
def test_a_python_steps_killed_subprocess_is_retried_with_retry_on_137(sleeps, command):
    calls: list[int] = []

    def train() -> None:
        calls.append(1)
        subprocess.run(["sh", "-c", command], check=True)  # CalledProcessError: -9 / 137

    run = run_graph([Step("train", func=train, retries={"max_retries": 1, "retry_on": [137]})],
                    sleeps)
    assert (row(run, "train")["attempts"], len(calls)) == (2, 2)
    other = run_graph([Step("train", func=train, retries={"retry_on": [3]})], sleeps)
    assert row(other, "train")["attempts"] == 1


def test_exhausted_retries_keep_every_attempt_in_the_logs(sleeps):
    step = Step(
        "flaky",
        run='echo "try $DAGNB_ATTEMPT"; echo "boom $DAGNB_ATTEMPT" >&2; exit 3',
        retries={"max_retries": 2, "retry_on": [3]},
    )
    run = run_graph([step], sleeps)

    status = row(run, "flaky")
    assert (status["state"], status["attempts"], status["exit_code"]) == ("failed", 3, 3)
    assert status["error"] == "exit code 3: boom 3"
    logs = run.logs("flaky")
    assert logs[["attempt", "stream", "line"]].values.tolist() == [
        [n, stream, f"{word} {n}"]
        for n in (1, 2, 3)
        for stream, word in (("stdout", "try"), ("stderr", "boom"))
    ]


def test_a_python_step_out_of_transient_retries_has_the_exit_code_of_one_that_raised(sleeps):
    def fetch() -> None:
        raise ConnectionError("db down")

    def parse() -> None:
        raise ValueError("bad row")

    run = run_graph([Step("fetch", func=fetch), Step("parse", func=parse)], sleeps)
    fetched, parsed = row(run, "fetch"), row(run, "parse")
    assert (fetched["state"], fetched["attempts"], fetched["exit_code"]) == ("failed", 3, 1)
    assert fetched["error"] == "ConnectionError: db down"
    assert (parsed["attempts"], parsed["exit_code"]) == (1, 1)


def test_a_step_the_open_breaker_stopped_has_no_exit_code(sleeps):
    breaker_for("down", failure_threshold=1, reset_timeout=30)
    executor = FakeExecutor("down", up=False)
    run = run_graph([Step("a", run="true")], sleeps, executor=executor)
    assert run.states() == {"a": "failed"} and pd.isna(row(run, "a")["exit_code"])


# -- timeouts ---------------------------------------------------------------------------


def _sleeping(marker: str, **fields: Any) -> Step:
    # Not the last command, so bash forks `sleep` instead of exec-ing it: a child to kill.
    return Step("slow", run=f"echo started; sleep {marker}; echo never", timeout=1, **fields)


def _no_process_matches(marker: str, within: float = 1.0) -> bool:
    def gone() -> bool:
        return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0

    return wait_until(gone, timeout=within, interval=0.05)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_timeout_stops_the_step_and_its_children(sleeps):
    marker = f"100.{secrets.randbelow(10**6):06d}"  # unique: other runs may share this host
    started = time.monotonic()
    run = run_graph([_sleeping(marker)], sleeps, retries={"max_retries": 2})
    elapsed = time.monotonic() - started

    status = row(run, "slow")
    assert elapsed < 2.5, elapsed
    assert (status["state"], status["attempts"]) == ("failed", 1)
    assert "timeout" in status["error"]
    assert run.logs("slow")["line"].tolist() == ["started"]
    assert _no_process_matches(f"sleep {marker}")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_timeout_is_retried_only_with_retry_on_timeout(sleeps):
    marker = f"100.{secrets.randbelow(10**6):06d}"
    started = time.monotonic()
    step = _sleeping(marker, retries={"max_retries": 1, "retry_on_timeout": True})
    run = run_graph([step], sleeps)
    elapsed = time.monotonic() - started

    status = row(run, "slow")
    assert (status["state"], status["attempts"]) == ("failed", 2)
    assert "timeout" in status["error"]
    assert elapsed < 2 * 1 + 1.5, elapsed
    assert len(sleeps) == 1 and "timeout" in state_events(run, "retrying")[0].data["error"]
    assert _no_process_matches(f"sleep {marker}")


def writes_on_after_its_cancel(done: list[str]) -> Any:
    """An async step whose attempt 1 swallows its timeout's cancel and goes on writing
    to its $DAGNB_OUT while attempt 2 runs; ``done`` gets "zombie" when it stops."""

    async def step() -> str:
        context = dagnb.current()
        out, attempt = context.out_dir, context.attempt
        if attempt == 2:
            await asyncio.sleep(0.3)
            (out / "fresh.txt").write_text("attempt 2")
            return "attempt 2"
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            for _ in range(20):
                await asyncio.sleep(0.05)
                with contextlib.suppress(OSError):
                    (out / "stale.txt").write_text("attempt 1")
            done.append("zombie")
        return "attempt 1"

    return step


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_retry_after_an_attempt_that_did_not_stop_gets_a_folder_of_its_own(sleeps, tmp_path):
    done: list[str] = []
    # (attempt 2 sleeps 0.3 s: a 0.5 s timeout cut it short too on a loaded machine)
    step = Step("s", func=writes_on_after_its_cancel(done), timeout=1.5,
                retries=RetryPolicy(max_retries=1, retry_on_timeout=True))
    cache = tmp_path / "cache"
    run = run_graph([step], sleeps, cache=True, cache_directory=cache)
    assert wait_until(lambda: done, timeout=5), "attempt 1 never ended"

    status = row(run, "s")
    assert (status["state"], status["attempts"]) == ("succeeded", 2)
    assert run.result("s") == "attempt 2"
    assert sorted(p.name for p in run.outputs("s").iterdir()) == ["fresh.txt", "result.json"]
    assert "did not stop" in state_events(run, "retrying")[0].data["error"]
    assert "attempt 1 did not stop when cancelled" in " ".join(run.logs("s")["line"])
    replay = run_graph([step], sleeps, cache=True, cache_directory=cache)
    assert row(replay, "s")["state"] == "cached"
    assert sorted(p.name for p in replay.outputs("s").iterdir()) == ["fresh.txt", "result.json"]


# -- the circuit breaker ----------------------------------------------------------------


def test_breaker_opens_fails_fast_and_a_probe_closes_it(sleeps):
    now = [1000.0]
    breaker = breaker_for("flaky", failure_threshold=3, reset_timeout=30, clock=lambda: now[0])
    executor = FakeExecutor("flaky", up=False)  # the engine is down until `up` is set
    steps = [Step(name, run="true") for name in ("a", "b", "c")]

    first = run_graph(steps, sleeps, executor=executor, max_concurrency=1)
    # "a" used its 3 attempts (1 + 2 transient retries) and opened the breaker.
    assert executor.calls == ["a", "a", "a"] and breaker.state == "open"
    assert row(first, "a")["state"] == "failed"
    assert "lost the engine" in row(first, "a")["error"]
    for name in ("b", "c"):
        status = row(first, name)
        assert (status["state"], status["attempts"]) == ("failed", 0)
        assert "executor 'flaky' failed 3 times in a row; steps fail fast" in status["error"]

    now[0] += 29  # still open: nothing reaches the executor
    assert row(run_graph(steps[:1], sleeps, executor=executor), "a")["state"] == "failed"
    assert len(executor.calls) == 3

    now[0] += 2  # past the reset timeout: one probe goes through and closes the breaker
    executor.up = True
    second = run_graph(steps, sleeps, executor=executor, max_concurrency=1)
    assert second.states() == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    assert breaker.state == "closed" and breaker.failures == 0


def test_failed_probe_opens_the_breaker_again(sleeps):
    now = [0.0]
    breaker = breaker_for("flaky", failure_threshold=1, reset_timeout=10, clock=lambda: now[0])
    executor = FakeExecutor("flaky", up=False)
    run_graph([Step("a", run="true")], sleeps, executor=executor)
    assert breaker.state == "open" and executor.calls == ["a"]  # the retry failed fast
    now[0] += 10
    run = run_graph([Step("probe", run="true")], sleeps, executor=executor)
    assert executor.calls == ["a", "probe"]
    assert breaker.state == "open" and breaker.opened_at == 10
    assert "fail fast" in row(run, "probe")["error"]


def test_a_python_steps_connection_error_is_retried_but_not_counted_by_the_breaker(sleeps):
    breaker = breaker_for("local", failure_threshold=2)
    calls: list[str] = []

    def fetch() -> None:
        calls.append("fetch")
        raise ConnectionError("db down")

    failed = run_graph([Step("fetch", func=fetch), Step("fetch2", func=fetch)], sleeps,
                       max_concurrency=1)
    assert failed.states() == {"fetch": "failed", "fetch2": "failed"}
    assert len(calls) == 6  # 1 + 2 transient retries each: still retried
    assert (breaker.state, breaker.failures) == ("closed", 0)
    later = run_graph([Step("unrelated", run="true")], sleeps)
    assert later.states() == {"unrelated": "succeeded"}


def test_a_python_steps_requests_connection_error_and_http_503_are_retried(sleeps):
    requests = pytest.importorskip("requests")
    calls: list[str] = []

    def fetch() -> int:
        calls.append("fetch")
        if len(calls) == 1:
            raise requests.ConnectionError("HTTPConnectionPool: Max retries exceeded")
        if len(calls) == 2:
            response = requests.Response()
            response.status_code, response.reason, response.url = 503, "Unavailable", "http://x/"
            response.raise_for_status()
        return 42

    run = run_graph([Step("fetch", func=fetch)], sleeps)
    assert (run.states(), len(calls), run.result("fetch")) == ({"fetch": "succeeded"}, 3, 42)
    assert row(run, "fetch")["attempts"] == 3


def test_the_result_of_a_step_that_failed_or_was_skipped_raises_not_none(sleeps):
    def fetch() -> int:
        raise ConnectionError("api down")

    def total(fetch: int) -> int:
        return fetch + 1

    run = run_graph([Step("fetch", func=fetch), Step("total", func=total, needs=["fetch"]),
                     Step("quiet", run="true")], sleeps)
    with pytest.raises(dagnb.StepNotFoundError, match=r"'fetch' has no result .*'failed': "
                                                      r"ConnectionError: api down"):
        run.result("fetch")
    with pytest.raises(dagnb.StepNotFoundError, match=r"'total' has no result .*'skipped'"):
        run.result("total")
    assert run.result("quiet") is None  # a step that succeeded with no result: None


def test_a_step_that_succeeded_after_retries_has_no_error_and_says_how_it_got_there(
        sleeps, tmp_path, capsys):
    from dagnb.views.live import TextView

    flag = tmp_path / "tries"
    step = Step("flaky", run=f'echo x >> "{flag}"; [ "$(wc -l < "{flag}")" -ge 3 ] || exit 1',
                retries=3)
    run = run_graph([step], sleeps)
    status = row(run, "flaky")
    assert (status["state"], status["attempts"], status["error"]) == ("succeeded", 3, None)
    TextView(run, focus="flaky").close()
    err = capsys.readouterr().err.splitlines()
    retries = [line for line in err if "retrying" in line]
    assert retries[0].startswith("── flaky: retrying 2/4 in ") and "exit code 1" in retries[0]
    assert retries[1].startswith("── flaky: retrying 3/4 in ")


def test_the_retry_line_counts_the_attempts_the_error_gets_not_the_transient_floor(
        sleeps, capsys):
    from dagnb.views.live import TextView

    run = run_graph([Step("once", run="exit 1", retries=1)], sleeps)
    assert row(run, "once")["attempts"] == 2
    retries = [e for e in run.events if e.kind == "retry"]
    assert [e.data["attempt_limit"] for e in retries] == [2]
    TextView(run, focus="once").close()
    err = capsys.readouterr().err
    assert "── once: retrying 2/2 in " in err


def test_retry_policies_are_memoized_apart_for_settings_that_are_equal_but_not_the_same() -> None:
    from dagnb.runtime.scheduler import _policy_memo

    keys = [_policy_memo({"max_retries": v, "jitter": 0.1}) for v in (1, 1.0, True)]
    assert len(set(keys)) == 3
    assert _policy_memo({"max_retries": 1, "jitter": 0.1}) == keys[0]
    assert _policy_memo({"max_retries": 1, "retry_on": [3]}) is None  # a list: not memoized
