"""The runner on the local executor: the step contract, concurrency, failures,
cancellation, timeouts, secrets and the frames."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb import Graph, InvalidStepError, SecretError, Step
from dagnb.executors import get_executor
from dagnb.runtime.frames import LOG_COLUMNS, STATUS_COLUMNS
from dagnb.runtime.prepare import start_background
from dagnb.testing import FakeExecutor, wait_until

pytestmark = pytest.mark.usefixtures("workdir")


def run(graph: Graph, **options: object) -> dagnb.Run:
    options.setdefault("cache", False)
    options.setdefault("executor", "local")
    return graph.run(**options)  # type: ignore[arg-type]


def test_files_pass_through_out_and_in() -> None:
    graph = Graph("files", [
        Step("make", run='echo 41 > "$DAGNB_OUT/n.txt"'),
        Step("add", run='echo $(( $(cat "$DAGNB_IN/make/n.txt") + 1 )) > "$DAGNB_OUT/n.txt"',
             needs=["make"]),
    ])
    result = run(graph)
    assert result.ok
    assert (result.outputs("add") / "n.txt").read_text().strip() == "42"


def test_params_reach_the_step_as_file_and_variables() -> None:
    graph = Graph("p", [Step(
        "show", params={"rows": 3, "name": "x y", "cols": [1, 2]},
        run='echo "$DAGNB_PARAM_ROWS|$DAGNB_PARAM_NAME|$DAGNB_PARAM_COLS"; cat "$DAGNB_PARAMS"',
    )])
    lines = run(graph).logs("show")["line"].tolist()
    assert lines[0] == "3|x y|[1, 2]"
    assert '"rows": 3' in "".join(lines)


def test_a_param_too_long_for_a_variable_is_in_the_params_file_only() -> None:
    ids = list(range(100_000, 120_000))  # 140 KB as JSON: over Linux's 128 KiB a variable
    graph = Graph("big", [Step(
        "count", params={"ids": ids, "n": 2},
        run='python3 -c "import json, os; print(len(json.load(open(os.environ[\'DAGNB_PARAMS\']))'
            '[\'ids\']), sorted(k for k in os.environ if \'_PARAM_\' in k))"',
    )])
    result = run(graph)
    assert result.states() == {"count": "succeeded"}, result.status()["error"][0]
    assert result.logs("count")["line"].tolist() == ["20000 ['DAGNB_PARAM_N']"]


def test_python_steps_receive_upstream_results_sync_and_async() -> None:
    graph = Graph("py")

    @graph.step
    def numbers() -> list[int]:
        print("making numbers")
        return [1, 2, 3]

    @graph.step
    async def total(numbers: list[int]) -> int:
        await asyncio.sleep(0)
        return sum(numbers)

    @graph.step(params={"factor": 10})
    def scaled(total: int, factor: int) -> int:
        return total * factor

    result = run(graph)
    assert result.result("scaled") == 60
    assert result.logs("numbers")["line"].tolist() == ["making numbers"]


def test_shell_step_output_reaches_python_step_as_a_folder() -> None:
    graph = Graph("mix", [Step("write", run='echo hello > "$DAGNB_OUT/greeting.txt"')])
    graph.step(lambda write: (write / "greeting.txt").read_text().strip(), name="read",
               needs=["write"])
    assert run(graph).result("read") == "hello"


def test_an_in_process_python_step_sees_its_env_while_it_runs(monkeypatch) -> None:
    """As on dask, which shares its cache key: it never saw it, and each executor was
    served the other's result. The process's own variables come back afterwards (and
    one it did not have goes), however the step ended; a shell step started meanwhile
    sees none of them."""
    monkeypatch.delenv("STEP_T_MODE", raising=False)
    monkeypatch.setenv("STEP_T_KEEP", "host")
    env = {"STEP_T_MODE": "fast", "STEP_T_KEEP": "step"}

    def seen() -> str:
        time.sleep(0.1)  # (holds the loop while the shell steps start)
        return f"{os.environ.get('STEP_T_MODE')} {os.environ['STEP_T_KEEP']}"

    def fails() -> None:
        raise ValueError(os.environ["STEP_T_MODE"])

    def spins() -> None:
        while os.environ["STEP_T_MODE"]:
            pass

    shells = [Step(f"s{i}", run='echo "${STEP_T_MODE-unset} $STEP_T_KEEP"') for i in range(3)]
    graph = Graph("env", [Step("f", func=seen, env=env), *shells,
                          Step("g", func=fails, env=env),
                          Step("t", func=spins, env=env, timeout=0.1)])
    result = run(graph, max_concurrency=5)
    assert result.result("f") == "fast step"
    assert [result.logs(s.name)["line"].tolist() for s in shells] == [["unset host"]] * 3
    assert result.states()["g"] == "failed" and "ValueError: fast" in result.status(
        ).set_index("step").loc["g", "error"]
    assert result.states()["t"] == "failed"
    assert "STEP_T_MODE" not in os.environ and os.environ["STEP_T_KEEP"] == "host"


def test_an_async_in_process_step_with_env_is_refused_in_one_line() -> None:
    """Between its awaits the other steps run on the loop: they would see its env (a
    shell step started meanwhile, inherit it); it ran without it, as if it had none."""
    async def seen() -> str | None:
        return os.environ.get("STEP_T_MODE")

    result = run(Graph("env", [Step("f", func=seen, env={"STEP_T_MODE": "fast"})]))
    assert result.states() == {"f": "failed"}
    assert result.status().loc[0, "error"] == (
        "step 'f' is an async Python step with env, which the local executor cannot set for "
        "it alone (the steps beside it on the loop would see it); make it a plain function, "
        "pass the values as params, or run it with executor='dask'")
    assert "STEP_T_MODE" not in os.environ


def test_failure_skips_dependents_and_independent_branches_finish() -> None:
    graph = Graph("fail", [
        Step("bad", run="echo broken >&2; exit 3"),
        Step("after", run="true", needs=["bad"]),
        Step("later", run="true", needs=["after"]),
        Step("alone", run="echo fine"),
    ])
    result = run(graph)
    states = result.states()
    assert states == {"bad": "failed", "alone": "succeeded", "after": "skipped",
                      "later": "skipped"}
    row = result.status().set_index("step").loc["bad"]
    assert row["exit_code"] == 3 and row["error"] == "exit code 3: broken"
    assert not result.ok and result.failed == ["bad"]


def test_a_step_skipped_through_a_chain_names_the_step_between() -> None:
    """``later`` read only "upstream step 'bad' failed", though it needs ``after``, not
    ``bad``; a step needing both is named as a direct dependent."""
    graph = Graph("chain", [
        Step("bad", run="exit 3"),
        Step("after", run="true", needs=["bad"]),
        Step("later", run="true", needs=["after"]),
        Step("both", run="true", needs=["later", "bad"]),
    ])
    errors = run(graph).status().set_index("step")["error"]
    assert errors["after"] == "upstream step 'bad' failed"
    assert errors["later"] == "upstream step 'bad' failed (through after)"
    assert errors["both"] == "upstream step 'bad' failed"


def test_a_step_started_after_another_waits_for_it_without_needing_it() -> None:
    """``after`` (the notebook's: a cell reading a variable another step publishes) is
    ordering only: a target brings the step in, its failure skips, its result is no
    argument and its key no part of the other's; it is no option of ``graph.run``."""
    ended: list[str] = []

    def first() -> int:
        time.sleep(0.2)  # (the other would have run beside it)
        ended.append("first")
        return 1

    def started(graph: Graph, targets: Any = None, cache: bool = False, **after: Any) -> Any:
        return start_background(graph, targets, executor="local", cache=cache,
                                after=after).wait(30)

    graph = Graph("after", [Step("late", func=lambda: ended.append("late")),
                            Step("first", func=first)])
    result = started(graph, "late", late=["first"])
    assert (result.order, ended) == (["first", "late"], ["first", "late"])
    assert started(graph, cache=True).states() == {"late": "succeeded", "first": "succeeded"}
    again = started(graph, cache=True, late=("first",))  # (the same keys)
    assert again.states() == {"first": "cached", "late": "cached"}
    failing = Graph("after", [Step("late", func=lambda: 2), Step("first", run="exit 3")])
    assert started(failing, late=["first"]).states() == {"first": "failed", "late": "skipped"}
    with pytest.raises(dagnb.StepNotFoundError, match="'frist'"):
        started(graph, late=["frist"])
    with pytest.raises(dagnb.CycleError, match=r"(late -> first|first -> late) -> \w+; remove"):
        started(graph, late=["first"], first=["late"])
    with pytest.raises(dagnb.ConfigError, match="unknown option 'after'"):
        graph.run(after={"late": ["first"]})


def test_an_errors_line_is_bounded_and_says_how_much_more_the_logs_hold() -> None:
    def huge() -> None:
        raise ValueError("v" * 100_000)

    graph = Graph("long", [
        Step("shell", run="python3 -c \"import sys; sys.stderr.write('x' * 200000 + '\\n')\"; "
                          "exit 1"),
        Step("python", func=huge),
    ])
    result = run(graph)
    rows = result.status_rows()
    assert rows["shell"]["error"] == ("exit code 1: " + "x" * 500 + "… (199500 characters "
                                      "more; see the step's logs)")
    assert rows["python"]["error"].startswith("ValueError: " + "v" * 100)
    assert len(rows["python"]["error"]) < 700 and "characters more" in rows["python"]["error"]
    with pytest.raises(dagnb.RunFailed) as failed:
        result.raise_for_status()
    assert max(map(len, failed.value.details)) < 700
    assert len(result.logs("shell", stream="stderr")["line"][0]) == 200_000  # all kept


def test_python_exception_is_a_failed_step_with_its_traceback_in_stderr() -> None:
    graph = Graph("exc")

    @graph.step
    def broken() -> None:
        raise ValueError("bad value 7")

    result = run(graph)
    assert result.status().loc[0, "error"] == "ValueError: bad value 7"
    stderr = result.logs("broken", stream="stderr")["line"].tolist()
    assert stderr[0] == "Traceback (most recent call last):" and "bad value 7" in stderr[-1]
    assert not any("dagnb/executors" in line for line in stderr)


@pytest.mark.parametrize(("error", "shown"), [
    (KeyboardInterrupt(), "KeyboardInterrupt"), (KeyError(), "KeyError"),
    (AssertionError(), "AssertionError"), (KeyError("x"), "KeyError: 'x'")])
def test_an_exception_with_no_message_is_its_type_alone(error, shown) -> None:
    graph = Graph("exc")

    @graph.step
    def broken() -> None:
        raise error

    assert run(graph).status().loc[0, "error"] == shown  # not 'KeyError: '


def test_fail_fast_stops_everything() -> None:
    graph = Graph("ff", [Step("bad", run="exit 1"), Step("slow", run="sleep 30")])
    started = time.monotonic()
    result = run(graph, fail_fast=True)
    assert time.monotonic() - started < 5
    assert result.states() == {"bad": "failed", "slow": "cancelled"}


def test_fail_fast_starts_no_step_that_waited_for_a_slot(tmp_path: Path) -> None:
    """The slot the failed step gave back went to the next step waiting before the run
    was stopped: a deploy step could start after the failure."""
    marker = tmp_path / "deployed"
    graph = Graph("ff", [Step("bad", run="exit 1"),
                         Step("deploy", run=f"touch {marker}")])
    result = run(graph, fail_fast=True, max_concurrency=1)
    assert result.states() == {"bad": "failed", "deploy": "cancelled"}
    row = result.status().set_index("step").loc["deploy"]
    assert row["attempts"] == 0 and "failed (fail_fast)" in row["error"]
    assert not marker.exists()


def test_a_failed_steps_error_is_what_the_terminal_left_of_a_redrawn_line() -> None:
    """A progress bar redrawn with carriage returns, then the error on the same line:
    the error said ``downloading 10%``, the first part."""
    graph = Graph("bar", [Step("get", run="printf 'downloading 10%%\\rdownloading 99%%\\r"
                                          "ERROR: checksum mismatch\\n' >&2; exit 1")])
    result = run(graph)
    assert result.status().loc[0, "error"] == "exit code 1: ERROR: checksum mismatch"


def test_a_step_binding_services_off_dagger_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    """Its upstream step ran first, then it failed; the message spoke Python only."""
    marker = tmp_path / "a-ran"
    graph = Graph("svc", [Step("a", run=f"touch {marker}"),
                          Step("b", run="echo b", needs=["a"], services=["postgres"])])
    with pytest.raises(dagnb.ExecutorUnavailable, match=(
            r"^step 'b' binds services \['postgres'\], which need the Dagger executor, and "
            r"it would run on this machine; run it on Dagger \(executor: dagger on the "
            r"step, --executor dagger, or executor='dagger'\)$")):
        run(graph)
    assert not marker.exists()


def test_four_one_second_sleeps_run_concurrently() -> None:
    graph = Graph("par", [Step(f"s{i}", run="sleep 1") for i in range(4)])
    started = time.monotonic()
    result = run(graph, max_concurrency=4)
    elapsed = time.monotonic() - started
    assert result.ok and elapsed < 1.8, elapsed


def test_steps_a_python_step_releases_still_run_concurrently() -> None:
    async def nap() -> int:
        await asyncio.sleep(1)
        return 1

    graph = Graph("fan", [Step("root", func=lambda: 1)]
                  + [Step(f"nap{i}", func=nap, needs=["root"]) for i in range(3)]
                  + [Step(f"sh{i}", run="sleep 1", needs=["root"]) for i in range(3)])
    started = time.monotonic()
    result = run(graph, max_concurrency=6)
    assert result.ok and time.monotonic() - started < 1.8


def test_a_fan_out_of_plain_python_steps_runs_in_one_task() -> None:
    tasks: list[int] = []

    def where() -> None:
        tasks.append(id(asyncio.current_task()))

    graph = Graph("fan1", [Step("root", func=where)]
                  + [Step(f"s{i}", func=where, needs=["root"]) for i in range(50)])
    assert run(graph, max_concurrency=51).ok and len(set(tasks)) == 1


def test_max_concurrency_limits_steps_at_once() -> None:
    graph = Graph("lim", [Step(f"s{i}", run="sleep 0.3") for i in range(4)])
    started = time.monotonic()
    run(graph, max_concurrency=2)
    assert time.monotonic() - started >= 0.55


def test_max_concurrency_holds_where_a_step_releases_several() -> None:
    graph = Graph("diamond", [Step("a", run="true"),
                              Step("b", run="sleep 0.3", needs=["a"]),
                              Step("c", run="sleep 0.3", needs=["a"]),
                              Step("d", run="true", needs=["b", "c"])])
    started = time.monotonic()
    assert run(graph, max_concurrency=1).ok
    assert time.monotonic() - started >= 0.55


def _unique_sleep() -> str:
    """A sleep command no other process has (pgrep finds exactly ours)."""
    return f"sleep 100.{random.randrange(10**6):06d}"


def _processes_with(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return out.split()


def test_cancel_kills_the_process_group_within_a_second() -> None:
    marker = _unique_sleep()
    graph = Graph("cancel", [Step("long", run=f"{marker} & {marker}; wait")])
    background = start_background(graph, cache=False, executor="local")
    assert wait_until(lambda: _processes_with(marker)), "the step never started"
    cancelled_at = time.monotonic()
    background.cancel()
    background.wait(timeout=5)
    assert time.monotonic() - cancelled_at < 1.0
    assert background.states() == {"long": "cancelled"}
    assert _processes_with(marker) == []


def test_step_timeout_stops_the_step() -> None:
    marker = _unique_sleep()
    graph = Graph("to", [Step("long", run=marker, timeout=0.5)])
    started = time.monotonic()
    result = run(graph)
    assert time.monotonic() - started < 1.5
    assert result.states() == {"long": "failed"}
    assert "ran past its timeout of 0.5 s" in result.status().loc[0, "error"]
    assert _processes_with(marker) == []


def stubborn(keeps_running: float) -> Callable[[], Any]:
    """An async step that swallows its cancel, then runs on for ``keeps_running`` s."""
    async def ignore_the_cancel() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            print("ignored the cancel")
        await asyncio.sleep(keeps_running)
        return "finished"
    return ignore_the_cancel


def _sleeps_in_c() -> int:
    time.sleep(1.5)  # (one C call: the timeout's stop lands when it returns)
    return 1


def _loops() -> None:
    while True:
        pass


def test_a_python_step_held_in_c_past_its_timeout_is_said_to_be_stopped_late() -> None:
    """``time.sleep(8)`` with a 2 s timeout was "ran past its timeout of 2 s and was
    stopped", though it slept the 8 s, and its whole call took them."""
    result = run(Graph("to", [Step("nap", func=_sleeps_in_c, timeout=0.3)]))
    error = result.status().loc[0, "error"]
    assert re.fullmatch(r"step 'nap' ran past its timeout of 0\.3 s and was stopped "
                        r"1\.[5-9] s in, when a call into C code returned \(such a call, "
                        r"time\.sleep say, cannot be cut short: what it did is done\)", error)
    looped = run(Graph("to", [Step("spin", func=_loops, timeout=0.3)]))
    assert looped.status().loc[0, "error"] == ("step 'spin' ran past its timeout of 0.3 s "
                                               "and was stopped")  # (between two bytecodes)


@pytest.mark.parametrize("keeps_running", [0, 5])
def test_an_async_step_that_swallows_its_cancel_still_times_out(keeps_running) -> None:
    graph = Graph("to", [Step("stubborn", func=stubborn(keeps_running), timeout=0.5)])
    started = time.monotonic()
    result = run(graph)
    assert time.monotonic() - started < 3  # not held by the orphaned coroutine
    assert result.states() == {"stubborn": "failed"}
    assert "ran past its timeout of 0.5 s" in result.status().loc[0, "error"]
    assert result.logs("stubborn")["line"].tolist() == ["ignored the cancel"]


def test_an_executor_that_swallows_the_cancel_and_answers_still_times_out() -> None:
    from dagnb.executors.base import Outcome
    from dagnb.testing import FakeExecutor

    class SwallowsTheCancel(FakeExecutor):
        async def execute(self, task: Any) -> Outcome:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
            return Outcome(exit_code=0)

    graph = Graph("to", [Step("answers", run="true", timeout=0.5)])
    result = run(graph, executor=SwallowsTheCancel())
    assert result.states() == {"answers": "failed"}
    assert "ran past its timeout of 0.5 s" in result.status().loc[0, "error"]


def test_run_timeout_cancels_what_is_left() -> None:
    graph = Graph("rt", [Step("a", run="sleep 30"), Step("b", run="true", needs=["a"])])
    result = run(graph, timeout=0.5)
    assert result.states() == {"a": "cancelled", "b": "cancelled"}
    assert "timeout of 0.5 s" in result.status().loc[0, "error"]


def _sleepy() -> None:
    for _ in range(300):  # 30 s in short sleeps: an interrupt lands between two
        time.sleep(0.1)


def test_a_python_step_stopped_by_the_run_timeout_is_cancelled_with_its_reason() -> None:
    graph = Graph("rtp", [Step("a", func=_sleepy), Step("b", func=lambda: 1, needs=["a"])])
    result = run(graph, timeout=0.5)
    assert result.states() == {"a": "cancelled", "b": "cancelled"}
    assert result.status()["error"].tolist() == ["the run's timeout of 0.5 s was reached"] * 2


def test_fail_fast_stops_a_python_step_and_the_run_returns() -> None:
    graph = Graph("ffp", [Step("bad", func=lambda: 1 / 0), Step("slow", run="sleep 30"),
                          Step("after", func=lambda: 1, needs=["slow"])])
    started = time.monotonic()
    result = run(graph, fail_fast=True)
    assert time.monotonic() - started < 5
    assert result.states() == {"bad": "failed", "slow": "cancelled", "after": "cancelled"}
    assert result.status()["error"].tolist()[1:] == ["stopped after step 'bad' failed "
                                                     "(fail_fast)"] * 2


def test_states_are_those_of_the_status_table_for_every_ending() -> None:
    graph = Graph("ends", [Step("ok", func=lambda: 1), Step("bad", func=lambda: 1 / 0),
                           Step("skipped", func=lambda: 1, needs=["bad"])])
    result = run(graph)
    table = result.status()
    assert result.states() == dict(zip(table["step"], table["state"], strict=True))
    assert result.states() == {"ok": "succeeded", "bad": "failed", "skipped": "skipped"}


def test_no_full_collection_pass_runs_while_a_run_does() -> None:
    import gc

    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    graph = Graph("gc", [Step("look", func=lambda: seen.append(gc.get_threshold()))])
    assert run(graph).ok
    assert seen[0][:2] == before[:2] and seen[0][2] >= 1 << 30  # gens 0 and 1 as they were
    assert gc.get_threshold() == before


def test_a_long_run_lets_full_collection_passes_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    from dagnb.runtime import prepare

    monkeypatch.setattr(prepare, "FULL_PASSES_AFTER", 0.05)
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    async def late() -> None:
        await asyncio.sleep(0.3)
        seen.append(gc.get_threshold())

    assert run(Graph("long", [Step("late", func=late)])).ok
    assert seen == [before] and gc.get_threshold() == before


def test_runs_that_overlap_back_to_back_let_full_passes_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit counts from when the first live run froze the heap, not per run: runs
    that keep overlapping, each shorter than it, do not hold full passes off for ever."""
    import gc

    from dagnb.runtime import prepare
    from dagnb.runtime.prepare import start_background

    monkeypatch.setattr(prepare, "FULL_PASSES_AFTER", 1.0)
    before = gc.get_threshold()
    # The first run ends before the limit; the second starts while it is live and
    # looks 1.2 s after the freeze: past the limit, but 0.7 s into its own run.
    first = start_background(Graph("first", [Step("a", run="sleep 0.8")]), cache=False,
                             executor="local")
    time.sleep(0.5)
    seen: list[tuple[int, int, int]] = []

    async def late() -> None:
        await asyncio.sleep(0.7)
        seen.append(gc.get_threshold())

    second = start_background(Graph("second", [Step("late", func=late)]), cache=False,
                              executor="local")
    assert second.wait().ok and first.wait().ok
    assert seen == [before] and gc.get_threshold() == before


def test_garbage_frozen_as_a_run_began_is_collected_once_full_passes_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What was garbage as the heap froze is not kept for as long as runs go on: once
    full passes run again, it is collected while the run is still live."""
    import gc
    import weakref

    from dagnb.runtime import prepare

    monkeypatch.setattr(prepare, "FULL_PASSES_AFTER", 0.05)

    class Cycle:
        me: object = None

    cycle = Cycle()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    gc.collect()  # (still held: now among the oldest objects, which only full passes see)
    del cycle  # garbage as the run begins and freezes the heap
    seen: list[tuple[bool, int]] = []

    async def late() -> None:
        await asyncio.sleep(0.3)  # (past the limit: full passes may run again)
        gc.collect()
        seen.append((gone() is None, gc.get_freeze_count()))

    assert run(Graph("long", [Step("late", func=late)])).ok
    assert seen == [(True, 0)]


def test_secrets_are_masked_and_missing_ones_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "s3cr3t-value")
    graph = Graph("sec", [Step("use", secrets=["API_TOKEN"],
                               run='echo "token=$API_TOKEN"; echo "$API_TOKEN" >&2; exit 1')])
    result = run(graph)
    lines = result.logs("use")["line"].tolist()
    assert lines and all("s3cr3t-value" not in line for line in lines)
    assert "token=***" in lines
    assert "s3cr3t-value" not in str(result.status().to_dict())
    monkeypatch.delenv("API_TOKEN")
    with pytest.raises(SecretError, match=r"step 'use' needs secret 'API_TOKEN', which is not set"):
        run(graph)


def test_a_step_found_cached_that_must_run_after_all_fails_without_its_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that comes from the cache needs no secret; one the run found cached
    whose entry is gone by the time it starts (a clear meanwhile) must run, and fails
    naming the secret rather than run without it."""
    import dagnb.runtime.plan

    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setattr(dagnb.runtime.plan, "misses", lambda *args: [])  # (all "cached")
    graph = Graph("sec", [Step("use", secrets=["API_TOKEN"], run='echo "t=$API_TOKEN"'),
                          Step("free", run="echo free")])
    result = run(graph, cache=True)
    assert result.states() == {"use": "failed", "free": "succeeded"}
    assert result.status_rows()["use"]["error"] == (
        "step 'use' needs secret 'API_TOKEN', which is not set in the environment; set it "
        "(export API_TOKEN=...) before running")
    assert result.logs("use").empty  # (it never started)


def test_a_mount_that_does_not_exist_is_an_error_before_anything_runs(workdir: Path) -> None:
    graph = Graph("m", [Step("a", run="touch ran", mounts={"data/raw": "/data"})])
    with pytest.raises(InvalidStepError, match=r"step 'a' mounts 'data/raw', which does not exist"):
        run(graph)
    assert not (workdir / "ran").exists()


def test_a_mount_under_the_home_folder_is_read_there(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~/data`` is where the key and a container's upload read it; the check before a run
    looked for a folder '~' in the workflow's folder, and refused every such mount."""
    home = workdir / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "raw.csv").write_text("1\n")
    monkeypatch.setenv("HOME", str(home))
    graph = Graph("m", [Step("a", run="true", mounts={"~/data": "/data"})])
    assert run(graph, cache=True).states() == {"a": "succeeded"}
    assert run(graph, cache=True).states() == {"a": "cached"}
    (home / "data" / "raw.csv").write_text("2\n")
    assert run(graph, cache=True).states() == {"a": "succeeded"}
    missing = Graph("m", [Step("a", run="true", mounts={"~/gone": "/data"})])
    with pytest.raises(InvalidStepError, match=re.escape(f"which does not exist ({home}/gone)")):
        run(missing)


def test_frames_have_the_documented_columns() -> None:
    graph = Graph("cols", [Step("a", run="echo out; echo err >&2")])
    result = run(graph)
    status, logs = result.status(), result.logs()
    assert list(status.columns) == STATUS_COLUMNS
    assert list(logs.columns) == LOG_COLUMNS
    assert status.loc[0, "executor"] == "local" and status.loc[0, "attempts"] == 1
    assert status.loc[0, "duration_s"] >= 0
    assert set(logs["stream"]) == {"stdout", "stderr"}
    assert result.logs(stream="stderr")["line"].tolist() == ["err"]
    assert result.logs(tail=1)["line"].tolist()[-1] in {"out", "err"}


@pytest.mark.parametrize("stream", ["out", "STDOUT", "err"])
def test_logs_of_a_mistyped_stream_is_refused_rather_than_empty(stream: str) -> None:
    result = run(Graph("streams", [Step("a", run="echo out; echo err >&2")]))
    expected = rf"stream='{stream}' is not valid; expected 'stdout', 'stderr' or None"
    with pytest.raises(dagnb.ConfigError, match=expected):
        result.logs("a", stream=stream)


@pytest.mark.parametrize("tail", [-1, 1.5, True])
def test_logs_of_a_negative_or_odd_tail_is_refused_and_tail_zero_is_no_lines(tail: Any) -> None:
    result = run(Graph("tails", [Step("a", run="echo out")]))
    with pytest.raises(dagnb.ConfigError, match=r"tail=.* expected a whole number >= 0 or None"):
        result.logs("a", tail=tail)
    assert result.logs("a", tail=0).empty
    assert result.logs("a", tail=None)["line"].tolist() == ["out"]


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The machine's zone is New York's (never UTC, whatever the season)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_frames_times_are_aware_in_the_local_zone_and_compare_with_each_other(
        new_york: None) -> None:
    result = run(Graph("tz", [Step("a", run="echo hi")]), cache=True)
    status, logs, entries = result.status(), result.logs(), dagnb.cache.entries("a")
    started, printed = status.loc[0, "started"], logs.loc[0, "time"]
    local = datetime.fromtimestamp(started.timestamp()).astimezone().utcoffset()
    assert started.utcoffset() == printed.utcoffset() == local != timedelta(0)
    assert entries.loc[0, "created"].utcoffset() == local
    assert len(entries[entries["created"] >= status["started"].min()]) == 1  # no TypeError
    assert status["started"].dtype == logs["time"].dtype == entries["created"].dtype


def test_a_step_that_printed_nothing_has_logs_of_the_same_dtypes() -> None:
    result = run(Graph("q", [Step("quiet", run="true"), Step("loud", run="echo hi")]))
    quiet, loud = result.logs("quiet"), result.logs("loud")
    assert quiet.empty and list(quiet.columns) == LOG_COLUMNS
    assert quiet.dtypes.to_dict() == loud.dtypes.to_dict()


def test_frames_are_pure_functions_of_the_event_log() -> None:
    graph = Graph("pure", [Step("a", run="echo 1"), Step("b", run="echo 2", needs=["a"])])
    result = run(graph)
    replay = dagnb.runtime.frames.status_frame(list(result.events), result.order)
    assert replay.equals(result.status())


def test_status_shows_a_missing_text_as_none_under_pandas_2_and_3() -> None:
    graph = Graph("text", [Step("ok", run="echo 1"), Step("bad", run="exit 3")])
    frame = run(graph).status().set_index("step")
    for column in ("state", "executor", "image", "error"):
        assert frame[column].dtype == object, column  # (pandas 3 would infer str: NaN)
    assert frame.loc["ok", "error"] is None and frame.loc["ok", "image"] is None
    assert frame.loc["bad", "error"].startswith("exit code 3")


def test_only_failed_reruns_what_did_not_succeed(workdir: Path) -> None:
    flag = workdir / "ok"
    graph = Graph("again", [
        Step("first", run="echo first"),
        Step("flaky", run=f"test -e {flag}", needs=["first"]),
        Step("last", run="echo last", needs=["flaky"]),
    ])
    assert graph.run(executor="local").states()["last"] == "skipped"
    flag.touch()
    second = graph.run(only_failed=True, executor="local")
    assert second.states() == {"first": "cached", "flaky": "succeeded", "last": "succeeded"}


def _failing_b() -> Graph:
    return Graph("narrow", [
        Step("a", run="echo a"),
        Step("b", run="exit 1", needs=["a"]),
        Step("c", run="echo c", tags=["quick"]),
        Step("d", run="echo d", needs=["b"]),
    ])


@pytest.mark.parametrize("fresh", [False, True], ids=["same-graph", "new-graph"])
def test_only_failed_with_targets_or_tags_reruns_only_what_they_need(fresh: bool) -> None:
    """Targets or tags narrow only_failed: b failed, but c does not need it, so re-running
    c's failures runs nothing (b ran again, failing the run); d, skipped, needs b. A new
    graph object reads the run history (as a new process does), the same one its last run."""
    for selection, expected in [
        ({"targets": "c"}, {}),
        ({"tags": "quick"}, {}),
        ({"targets": ["d"]}, {"a": "cached", "b": "failed", "d": "skipped"}),
    ]:
        graph = _failing_b()
        assert graph.run(executor="local").failed == ["b"]
        again = (_failing_b() if fresh else graph).run(
            only_failed=True, executor="local", **selection)
        assert again.states() == expected, selection


def test_only_failed_after_a_run_of_other_steps_still_reruns_what_failed_before(
        workdir: Path) -> None:
    """A run of some steps leaves the others' states as the runs before left them: after
    b failed, a run of target c (or one that re-ran nothing) was the last run, and
    only_failed then ran nothing, though b had never succeeded."""
    flag = workdir / "ok"
    graph = Graph("later", [Step("a", run="echo a"), Step("b", run=f"test -e {flag}",
                                                           needs=["a"]),
                            Step("c", run="echo c")])
    assert graph.run(executor="local").failed == ["b"]
    assert graph.run(targets="c", only_failed=True, executor="local").states() == {}
    assert graph.run(targets="c", executor="local").states() == {"c": "cached"}
    flag.touch()
    again = graph.run(only_failed=True, executor="local")
    assert again.states() == {"a": "cached", "b": "succeeded"}
    assert graph.run(only_failed=True, executor="local").states() == {}


def test_arun_works_from_another_event_loop() -> None:
    graph = Graph("a", [Step("x", run="echo from-async")])
    result = asyncio.run(graph.arun(cache=False, executor="local"))
    assert result.logs("x")["line"].tolist() == ["from-async"]


def test_prints_outside_steps_are_not_captured(capsys: pytest.CaptureFixture[str]) -> None:
    graph = Graph("pr")
    graph.step(lambda: print("inside"), name="talk")
    seen = threading.Event()

    def chatter() -> None:
        print("outside")
        seen.set()

    run(graph)
    chatter()
    assert seen.is_set() and "outside" in capsys.readouterr().out


def test_each_run_stands_in_for_the_stdout_of_its_time() -> None:
    """The routing streams are kept for the next run; one over a stream replaced since
    (a notebook's, a test's capture) stands in for the new one, and gives it back."""
    import io

    graph = Graph("out")
    streams: list[object] = []
    graph.step(lambda: streams.append(sys.stdout) or print("inside"), name="talk")
    first, second = io.StringIO(), io.StringIO()
    for stream in (first, second, second):
        with contextlib.redirect_stdout(stream):
            assert run(graph).logs("talk")["line"].tolist() == ["inside"]
            assert sys.stdout is stream
            print("outside")
    assert [getattr(s, "_fallback", None) for s in streams] == [first, second, second]
    assert streams[1] is streams[2]  # (made once for the same stream)
    assert first.getvalue() == second.getvalue().replace("outside\n", "", 1) == "outside\n"


def test_no_orphans_and_env_of_the_host_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_ONLY", "kept")
    graph = Graph("env", [Step("e", run='echo "$HOST_ONLY $DAGNB_STEP"', env={"X": 1})])
    assert run(graph).logs("e")["line"].tolist() == ["kept e"]
    assert os.environ["HOST_ONLY"] == "kept"


def test_ctrl_c_cancels_the_run_and_kills_its_processes(workdir: Path) -> None:
    marker = _unique_sleep()
    script = (
        "import dagnb\n"
        "g = dagnb.Graph('i', [dagnb.Step('long', run='sleep $MARK')])\n"
        "try:\n"
        "    g.run(cache=False, executor='local')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', g.last_run.states())\n"
    )
    env = {**os.environ, "MARK": marker.split()[1]}  # the marker is not in the script's argv
    child = subprocess.Popen([sys.executable, "-c", script], cwd=workdir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: _processes_with(marker), timeout=10), "the step never started"
    child.send_signal(signal.SIGINT)
    # (a bound on a hang, not a speed: the 5 s it was timed out while CI's other legs ran)
    out, err = child.communicate(timeout=30)
    assert "interrupted {'long': 'cancelled'}" in out, err
    assert _processes_with(marker) == []


def test_bad_max_concurrency_is_one_line() -> None:
    graph = Graph("c", [Step("a", run="true")])
    with pytest.raises(dagnb.ConfigError, match=r"max_concurrency=0 must be a whole number >= 1"):
        run(graph, max_concurrency=0)


def test_an_executor_that_is_no_executor_is_refused_in_one_line_before_the_run() -> None:
    graph = Graph("e", [Step("a", run="true")])
    assert graph.run(executor="local").ok  # cached now: the run needs no executor
    message = (r"^executor 3 \(type int\) is not an executor; use 'auto', 'local', "
               r"'dagger' or 'dask', or an Executor instance$")
    with pytest.raises(dagnb.ExecutorUnavailable, match=message):  # (every step failed)
        graph.run(executor=3)
    with pytest.raises(dagnb.ExecutorUnavailable, match=message):
        get_executor(3)  # type: ignore[arg-type]
    assert graph.last_run is not None and graph.last_run.ok  # no run started
    assert run(graph, executor=FakeExecutor()).ok  # one made by the caller is an Executor


def test_a_cache_directory_that_is_no_path_is_one_line() -> None:
    graph = Graph("c", [Step("a", run="true")])
    with pytest.raises(dagnb.ConfigError, match=r"^cache_directory=3 \(type int\) is not a "
                       r"folder; use a path or a store URL such as 's3://bucket/prefix'$"):
        graph.run(cache_directory=3)


@pytest.mark.parametrize("leftover", [
    "{marker} &",  # a background child holding the step's output pipes
    "{marker} >/dev/null 2>&1 &",  # one that let go of them
])
def test_no_process_outlives_a_finished_step(leftover: str) -> None:
    marker = _unique_sleep()
    script = leftover.format(marker=marker) + "\necho done"
    started = time.monotonic()
    graph = Graph("left", [Step("bg", run=script)])
    finished = run(graph, cache=False)
    assert finished.states() == {"bg": "succeeded"}
    assert finished.logs("bg")["line"].tolist() == ["done"]
    assert time.monotonic() - started < 5  # not held by the child's open pipes
    assert wait_until(lambda: _processes_with(marker) == [], timeout=2)


def test_a_timeout_kills_children_even_after_the_main_process_exited() -> None:
    marker = _unique_sleep()
    graph = Graph("t", [Step("bg", run=f"{marker} & sleep 3; exit 0", timeout=1)])
    started = time.monotonic()
    finished = run(graph, cache=False)
    assert finished.states() == {"bg": "failed"}
    assert time.monotonic() - started < 3
    assert wait_until(lambda: _processes_with(marker) == [], timeout=2)


def test_a_step_that_calls_sys_exit_ends_as_a_script_would_and_the_run_goes_on() -> None:
    def leave() -> None:
        print("leaving", file=sys.stderr)
        sys.exit(3)

    def complain() -> None:
        sys.exit("no input today")

    def done_early() -> None:
        sys.exit()

    def after(done_early: None) -> int:
        return 7

    class Stop(BaseException):
        pass

    def stop() -> None:
        raise Stop("not an Exception")

    run = Graph("g", [Step("leave", func=leave, cache=False),
                      Step("complain", func=complain, cache=False),
                      Step("done_early", func=done_early, cache=False),
                      Step("after", func=after, needs=("done_early",), cache=False),
                      Step("stop", func=stop, cache=False)]).run()
    assert run.states() == {"leave": "failed", "complain": "failed",
                            "done_early": "succeeded", "after": "succeeded", "stop": "failed"}
    assert run.status_rows()["stop"]["error"] == "Stop: not an Exception"
    rows = run.status_rows()
    assert rows["leave"]["error"] == "exit code 3: leaving"
    assert rows["complain"]["error"] == "exit code 1: no input today"
    assert run.result("after") == 7
    assert Graph("g2", [Step("again", func=lambda: 1, cache=False)]).run().result("again") == 1


def test_a_python_step_that_holds_the_loop_does_not_time_out_the_steps_beside_it() -> None:
    """An in-process Python step computes on dagnb's loop thread: the time it holds it
    is not the other steps' (their processes could not even be read meanwhile)."""
    def spin() -> int:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pass
        return 1

    def slow_python() -> int:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # (its own time counts: stopped at 1 s)
            pass
        return 2

    run = Graph("g", [Step("quick", run="echo quick", timeout=1.0, cache=False),
                      Step("spin", func=spin, cache=False),
                      Step("later", func=lambda: 3, timeout=1.0, cache=False),
                      Step("own", func=slow_python, timeout=1.0, cache=False)]).run(
        executor="local", max_concurrency=4)
    assert run.states() == {"quick": "succeeded", "spin": "succeeded", "later": "succeeded",
                            "own": "failed"}, run.status_rows()
    assert "timeout of 1 s" in run.status_rows()["own"]["error"]


def test_async_steps_and_the_steps_own_keyboard_interrupt_end_only_their_step() -> None:
    async def leave_async() -> None:
        sys.exit(4)

    async def interrupt_async() -> None:
        raise KeyboardInterrupt("the step's own")

    def interrupt_sync() -> None:
        raise KeyboardInterrupt("the step's own")

    def code(value: object) -> Callable[[], None]:
        def leave() -> None:
            sys.exit(value)
        return leave

    steps = [Step("leave_async", func=leave_async, cache=False),
             Step("interrupt_async", func=interrupt_async, cache=False),
             Step("interrupt_sync", func=interrupt_sync, cache=False),
             Step("wraps", func=code(256), cache=False),
             Step("negative", func=code(-9), cache=False),
             Step("true", func=code(True), cache=False)]
    run = Graph("g", steps).run()
    rows = run.status_rows()
    assert run.states() == {"leave_async": "failed", "interrupt_async": "failed",
                            "interrupt_sync": "failed", "wraps": "succeeded",
                            "negative": "failed", "true": "failed"}, rows
    assert rows["leave_async"]["error"] == "exit code 4"
    assert rows["interrupt_sync"]["error"] == "KeyboardInterrupt: the step's own"
    assert (rows["negative"]["exit_code"], rows["true"]["exit_code"]) == (247, 1)
    assert Graph("g2", [Step("again", func=lambda: 1, cache=False)]).run().result("again") == 1


def test_a_step_whose_outputs_take_long_to_store_does_not_time_out_the_others(monkeypatch):
    """Storing a step's outputs (hashing gigabytes) holds the loop thread as a Python
    step does: a shell step beside it keeps its own timeout."""
    from dagnb.cache.steps import StepCache

    real_save = StepCache.save

    def slow_save(self, step, *args, **kwargs):
        if step.name == "big":
            time.sleep(1.5)  # (as hashing a few GB would, on the loop thread)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(StepCache, "save", slow_save)
    run = Graph("g", [Step("big", run="true"),
                      Step("timed", run="sleep 0.3", timeout=1.0)]).run(
        executor="local", max_concurrency=2)
    assert run.states() == {"big": "succeeded", "timed": "succeeded"}, run.status_rows()


@pytest.mark.parametrize("odd", ['mkfifo "$DAGNB_OUT/pipe"', 'ln -s /dev/zero "$DAGNB_OUT/z"',
                                 'ln -s nowhere "$DAGNB_OUT/broken"'])
def test_an_output_that_is_not_a_file_or_folder_is_not_stored_and_nothing_hangs(odd):
    with pytest.warns(UserWarning, match="is not a file or a folder"):
        run = Graph("g", [Step("odd", run=odd)]).run(executor="local", timeout=20)
    assert run.states() == {"odd": "succeeded"}


@pytest.mark.parametrize(("retries", "attempts"), [(True, 3), (False, 1)])
def test_retries_true_and_false_are_accepted_as_retry_policy_reads_them(
        retries: bool, attempts: int) -> None:
    def flaky() -> None:
        raise ConnectionError("down")  # transient: retried unless retries are off

    graph = Graph("r", [Step("flaky", func=flaky, retries=retries, circuit_breaker=False)])
    status = run(graph, sleep=lambda _: asyncio.sleep(0)).status()
    assert status.loc[0, "attempts"] == attempts


_CYCLES_LEFT = r"""
import gc, sys
from dagnb import Graph, Step

def noop():
    return 1

def cycles_left(steps):
    graph = Graph("g", [Step(f"s{i}", func=noop) for i in range(steps)])
    graph.run(executor="local", cache=False)  # (once first: what a first run keeps)
    gc.collect()
    gc.disable()
    try:
        graph.run(executor="local", cache=False)
        return gc.collect()
    finally:
        gc.enable()

print((cycles_left(220) - cycles_left(20)) / 200)
"""


def test_the_objects_of_a_python_step_need_no_garbage_collection(tmp_path: Path) -> None:
    """Each step's log file, display sink and their callbacks are freed as it ends, not
    left in cycles for the GC, whose passes over them cost a no-op step 8% more. (In a
    process of its own: the garbage of what other tests left running counts here.)"""
    done = subprocess.run([sys.executable, "-c", _CYCLES_LEFT], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    per_step = float(done.stdout.split()[-1])
    assert per_step < 6  # the run's events and results (4); 25 before


def test_only_failed_reads_the_history_for_a_step_that_has_not_run_in_this_process(
        workdir: Path) -> None:
    """b failed in another process (a graph object of its own here); a run of target c
    in this one made it the last run, and only_failed then went by this process's runs
    alone, which never had b: nothing ran. The history says b failed."""
    flag = workdir / "ok"

    def graph() -> Graph:
        return Graph("elsewhere", [Step("a", run="echo a"),
                                   Step("b", run=f"test -e {flag}", needs=["a"]),
                                   Step("c", run="echo c")])

    assert graph().run(executor="local").failed == ["b"]  # (the other process)
    here = graph()
    assert here.run(targets="c", executor="local").states() == {"c": "cached"}
    flag.touch()
    assert here.run(only_failed=True, executor="local").states() == {
        "a": "cached", "b": "succeeded"}


def test_a_runs_html_escapes_the_graph_name_a_workflow_file_gave() -> None:
    """A workflow file's `name:` went into the Run's HTML raw: displaying the run ran the
    file author's HTML (an <img onerror=...>)."""
    graph = Graph("<img src=x onerror=alert(1)>", [Step("s", run="echo s")])
    shown = graph.run(cache=False, executor="local")._repr_html_()
    assert "<img" not in shown and "&lt;img src=x onerror=alert(1)&gt;" in shown


def test_a_runs_repr_says_its_id_name_and_counts_once() -> None:
    # (it said them twice: <Run ID 'g': run ID (g): 1 succeeded, 1 failed>)
    done = run(Graph("g", [Step("a", run="true"), Step("b", run="false")]))
    assert repr(done) == f"<Run {done.id} 'g': 1 succeeded, 1 failed>"
    assert done.summary() == f"run {done.id} (g): 1 succeeded, 1 failed"
