"""``dagnb.executors.status()``: one row per executor, with what is running and the breakers."""

from __future__ import annotations

from typing import Any

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.retry.breaker import breaker_for
from dagnb.runtime.prepare import start_background
from dagnb.testing import wait_until

# The stub engine fixtures (stub, dagger_stub); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]

COLUMNS = ["name", "available", "reason", "capabilities", "running", "capacity", "breaker",
           "retry_in"]


pytestmark = pytest.mark.usefixtures("workdir")


def no_engine(monkeypatch, tmp_path) -> None:
    """Hide every way of reaching a Dagger engine."""
    for key in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no dagger CLI on it


def row(name: str) -> dict[str, Any]:
    frame = dagnb.executors.status()
    return frame[frame["name"] == name].iloc[0].to_dict()


def test_executors_is_a_plain_module_with_a_status_function():
    assert not callable(dagnb.executors)
    assert list(dagnb.executors.status()["name"]) == dagnb.executors.known_executors()


def test_table_has_one_row_per_executor(monkeypatch, tmp_path):
    no_engine(monkeypatch, tmp_path)
    frame = dagnb.executors.status()
    assert list(frame.columns) == COLUMNS
    assert frame["name"].tolist() == ["local", "dagger", "dask"]
    local, dagger = row("local"), row("dagger")
    assert local["available"] and local["capabilities"] == "argv, python, shell"
    assert (local["running"], local["breaker"], local["retry_in"]) == (0, "closed", None)
    assert local["capacity"] == dagnb.settings().max_concurrent_executions
    assert not dagger["available"]
    assert "install the dagger CLI" in dagger["reason"]
    assert "DAGGER_SESSION_PORT" in dagger["reason"]
    assert "containers" in dagger["capabilities"]


def test_running_counts_a_step_while_it_runs(tmp_path):
    gate = tmp_path / "go"
    # Waits for the gate (at most 10 s, so a failed test leaves nothing behind).
    step = Step("wait", run=f'for i in $(seq 500); do [ -e "{gate}" ] && exit 0; sleep 0.02; done')
    run = start_background(Graph("g", [step]), executor="local", cache=False)
    try:
        assert wait_until(lambda: row("local")["running"] == 1), run.status()
        assert row("dagger")["running"] == 0
    finally:
        gate.touch()
        run.wait(timeout=10)
    assert run.states() == {"wait": "succeeded"}
    assert row("local")["running"] == 0


def test_running_counts_each_attempt_once_and_none_after_failures_and_timeouts(tmp_path):
    gate = tmp_path / "go"
    wait = f'for i in $(seq 500); do [ -e "{gate}" ] && exit 0; sleep 0.02; done'
    steps = [Step("a", run=wait), Step("b", run=wait), Step("c", run=wait),
             Step("slow", run="sleep 5", timeout=0.2),
             Step("fails", run="exit 3", retries=1),
             Step("raises", func=lambda a: 1 / 0, needs=["a"])]  # (after the gate)
    run = start_background(Graph("g", steps), executor="local", cache=False, sleep=_no_wait,
                           max_concurrency=len(steps))
    try:
        assert wait_until(lambda: run.states()["fails"] == "failed"), run.status()
        assert wait_until(lambda: run.states()["slow"] == "failed"), run.status()
        assert row("local")["running"] == 3  # a, b and c, waiting at the gate
    finally:
        gate.touch()
        run.wait(timeout=10)
    assert run.states()["raises"] == "failed"
    assert row("local")["running"] == 0


async def _no_wait(_seconds: float) -> None:
    return None


def test_breaker_shows_open_after_it_trips(stub):
    async def no_wait(seconds: float) -> None:
        return None

    breaker_for("dagger", failure_threshold=1, reset_timeout=60)
    stub.fail("drop", match="withExec", times=10)  # the engine keeps dropping the exec
    graph = Graph("g", [Step("a", run="true"), Step("b", run="true")])
    run = graph.run(executor="dagger", cache=False, sleep=no_wait, max_concurrency=1)

    assert run.states() == {"a": "failed", "b": "failed"}
    status = run.status().set_index("step")
    # "a" lost the engine, which opened the breaker; its retry and "b" failed fast.
    assert status.loc["a", "attempts"] == 1
    assert status.loc["b", "attempts"] == 0
    for name in ("a", "b"):
        assert "executor 'dagger' failed 1 times in a row" in status.loc[name, "error"]
    dagger = row("dagger")
    assert dagger["available"] and dagger["breaker"] == "open"
    assert 0 < dagger["retry_in"] <= 60
    assert row("local")["breaker"] == "closed"
