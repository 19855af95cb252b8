"""``dagnb.testing``: the fresh context, the hand-moved clock, the fake executor, wait_until."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step, StepFailed, TransientError
from dagnb.executors import get_executor
from dagnb.executors.base import SIMULATED, Outcome
from dagnb.retry.breaker import breaker_for
from dagnb.testing import Clock, FakeExecutor, isolated, wait_until


def run(steps: list[Step], engine: FakeExecutor, clock: Clock, **options) -> dagnb.Run:
    return Graph("g", steps).run(executor=engine, cache=False, sleep=clock.async_sleep, **options)


# -- isolated ---------------------------------------------------------------------------
def test_isolated_gives_fresh_objects_and_puts_the_old_ones_back(workdir):
    def objects() -> tuple[object, ...]:
        return dagnb.settings(), get_executor("local"), breaker_for("local")

    outer = objects()
    with isolated() as fresh:
        inner = objects()
        assert all(a is not b for a, b in zip(outer, inner, strict=True))
        assert {"settings", "executors", "breakers"} <= set(fresh.names())
    assert all(a is b for a, b in zip(outer, objects(), strict=True))


def test_isolated_applies_settings_inside_only():
    with isolated(max_retries=3, executor="local"):
        assert (dagnb.settings().max_retries, dagnb.settings().executor) == (3, "local")
        assert dagnb.config.origins()["max_retries"] == "argument"
    assert dagnb.settings().max_retries == 0


def test_isolated_caches_in_a_temporary_folder_not_in_the_projects(project):
    (project / "dagnb.yaml").write_text("workflow_defaults:\n  cache_directory: .dagnb_cache\n")
    with isolated():
        scratch = Path(dagnb.settings().cache_directory)
        run = Graph("g", [Step("a", run="echo hi")]).run(executor="local")
        assert run.ok and scratch.is_dir() and not scratch.is_relative_to(project)
    assert not (project / ".dagnb_cache").exists()
    assert list(run.logs("a")["line"]) == ["hi"]  # (read after the block: kept till exit)
    with isolated():
        assert Path(dagnb.settings().cache_directory) != scratch  # (each block its own)
    with isolated(cache_directory=project / "mine"):
        assert dagnb.settings().cache_directory == str(project / "mine")


def test_isolated_refuses_a_bad_setting_like_configure():
    before = dagnb.settings()
    with pytest.raises(dagnb.ConfigError, match="unknown key 'max_retrys'; did you mean"), \
            isolated(max_retrys=3):
        pass
    assert dagnb.settings() is before


# -- Clock -------------------------------------------------------------------------------
def test_clock_is_moved_by_hand_and_by_its_sleeps():
    clock = Clock(now=10.0)
    assert clock() == 10.0 and clock.advance(5) == 15.0
    clock.now += 1
    clock.sleep(2)
    asyncio.run(clock.async_sleep(3))
    assert clock() == 21.0 and clock.slept == [2, 3]


# -- FakeExecutor ------------------------------------------------------------------------
def test_fake_executor_follows_its_script_through_retries(workdir):
    clock = Clock()
    engine = FakeExecutor().script("a", TransientError("blip"), 0).script("b", 3)
    result = run([Step("a", run="true"), Step("b", run="true")], engine, clock,
                 max_concurrency=1)
    assert result.states() == {"a": "succeeded", "b": "failed"}
    assert engine.calls == ["a", "a", "b"]
    assert result.status().set_index("step").loc["b", "exit_code"] == 3
    assert len(clock.slept) == 1  # the one transient retry, without waiting


def test_fake_executor_returns_a_scripted_outcome_and_raises_a_scripted_error(workdir):
    engine = FakeExecutor().script("a", Outcome(exit_code=0, result=42))
    engine.script("b", StepFailed("b: bad input"))
    result = run([Step("a", run="true"), Step("b", run="true")], engine, Clock())
    assert result.result("a") == 42
    assert result.states()["b"] == "failed" and "bad input" in result.status()["error"][1]


def test_fake_executor_down_trips_the_breaker_of_its_name(workdir):
    breaker = breaker_for("engine", failure_threshold=2)
    engine = FakeExecutor("engine", up=False)
    result = run([Step("a", run="true")], engine, Clock(), retries={"max_retries": 5})
    assert result.states() == {"a": "failed"}
    assert breaker.state == "open" and engine.calls == ["a", "a"]  # the 3rd failed fast
    assert "executor 'engine' failed 2 times in a row" in result.status()["error"][0]


def test_fake_executor_is_always_available_and_says_why():
    engine = FakeExecutor(capabilities=["shell"])
    assert engine.availability().available and "test double" in engine.availability().reason
    assert engine.capabilities == frozenset({"shell", SIMULATED}) and engine.name == "fake"


def test_a_fake_executors_outcomes_are_never_served_to_a_real_run(tmp_path):
    graph = Graph("g")

    @graph.step
    def answer() -> int:
        return 42

    graph.add(Step("train", run='echo real > "$DAGNB_OUT/model.txt"', needs=["answer"]))
    with isolated(cache_directory=tmp_path / "cache"):
        faked = graph.run(executor=FakeExecutor())
        real = graph.run(executor="local")
    assert faked.states() == real.states() == {"answer": "succeeded", "train": "succeeded"}
    assert "test double" in faked.not_stored["train"]
    assert real.result("answer") == 42
    assert (real.outputs("train") / "model.txt").read_text() == "real\n"


# -- wait_until --------------------------------------------------------------------------
def test_wait_until_returns_the_first_true_value_without_sleeping_more():
    clock, answers = Clock(), iter([0, "", "ready", "late"])
    assert wait_until(lambda: next(answers), clock=clock, sleep=clock.sleep) == "ready"
    assert clock.slept == [0.01, 0.01]


def test_wait_until_gives_up_after_the_timeout_with_the_last_value():
    clock = Clock()
    assert wait_until(lambda: None, timeout=1, interval=0.25, clock=clock,
                      sleep=clock.sleep) is None
    assert clock.slept == [0.25] * 4


def test_importing_dagnb_testing_loads_no_notebook_packages():
    code = ("import sys, dagnb.testing; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'IPython', 'ipywidgets'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
