"""executor="dask": Python steps on a real dask.distributed LocalCluster (2 worker
processes, one thread each), shell steps on this machine, one cache."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.errors import ConfigError, InvalidStepError, WorkflowError
from dagnb.executors import dask as dask_executor
from dagnb.model.results import PUBLISHED_AS
from dagnb.notebook.cells import cell_function
from dagnb.runtime.prepare import start_background
from dagnb.testing import wait_until
from dagnb.workflows.loader import load

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster for the module: starting one takes seconds. Its workers inherit
    a secret, as workers started from a notebook inherit the notebook's environment.

    Tests here kill workers: a killed worker that is not back within dask's
    lost-worker-timeout (15 s) is dropped from the cluster for good, its nanny closed,
    which on CI's loaded machine left the module one worker (2026-12-07: a restart
    took longer). Here it may take as long as a test's timeout."""
    import dask

    with pytest.MonkeyPatch.context() as patch, dask.config.set(
            {"distributed.deploy.lost-worker-timeout": "120s"}):
        patch.setenv("DASK_OTHER_TOKEN", "inherited-secret")
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local:
            yield local


@pytest.fixture
def on_dask(cluster, workdir: Path):
    """This test's context runs dask steps on the module's cluster; its client is closed
    after."""
    dagnb.configure(dask_scheduler=cluster.scheduler_address)
    yield workdir
    dask_executor.close()


def count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def ticker(ticks: Path):
    """A step that writes a tick every 0.1 s for a minute."""
    def tick() -> None:
        for i in range(600):
            with open(ticks, "a") as handle:
                handle.write(f"{i}\n")
            time.sleep(0.1)
    return tick


def stops_ticking(ticks: Path, within: float = 2.0) -> bool:
    """The tick file stops growing within ``within`` seconds (and stays still)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = count(ticks)
        time.sleep(0.5)
        if count(ticks) == before:
            return True
    return False


def _graph_on(executor: str, steps: list[Step]) -> Graph:
    """The steps on ``executor`` (a run takes no executor='dask': its commands cannot)."""
    return Graph("g", [step.replace(executor=executor) for step in steps])


def test_a_graph_mixing_shell_and_dask_steps_runs_caches_and_reruns_cached(on_dask):
    executions = on_dask / "executions.txt"

    def enrich(fetch):
        with open(executions, "a") as handle:
            handle.write("enrich\n")
        text = (fetch / "raw.txt").read_text().strip()
        (dagnb.current().out_dir / "enriched.txt").write_text(text.upper())
        return {"length": len(text)}

    def summarize(enrich):
        with open(executions, "a") as handle:
            handle.write("summarize\n")
        return enrich["length"] * 10

    graph = Graph("mixed", [
        Step("fetch", run=f'echo fetch >> {executions}; echo hello > "$DAGNB_OUT/raw.txt"'),
        Step("enrich", func=enrich, needs=["fetch"], executor="dask"),
        Step("summarize", func=summarize, needs=["enrich"], executor="dask"),
        Step("report", needs=["enrich"],
             run=f'echo report >> {executions}; cat "$DAGNB_IN/enrich/enriched.txt"'),
    ])
    first = graph.run(executor="local")
    assert set(first.states().values()) == {"succeeded"}, first.status()
    assert first.result("summarize") == 50
    assert "HELLO" in first.logs("report")["line"].tolist()
    assert sorted(executions.read_text().split()) == ["enrich", "fetch", "report", "summarize"]

    again = graph.run(executor="local")
    assert set(again.states().values()) == {"cached"}, again.status()
    assert again.result("summarize") == 50
    assert (again.outputs("enrich") / "enriched.txt").read_text() == "HELLO"  # from the cache
    assert count(executions) == 4  # nothing ran a second time


def test_python_steps_run_in_the_cluster_s_worker_processes(cluster, on_dask):
    def where() -> tuple[int, int]:
        return os.getpid(), os.getppid()

    run = Graph("g", [Step("where", func=where, executor="dask", cache=False)]).run()
    pid, parent = run.result("where")
    with distributed.Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
    assert pid != os.getpid()
    assert parent in workers  # the step's process is a child of a dask worker


def test_print_output_reaches_the_run_logs_with_secrets_masked_and_others_withheld(
    on_dask, monkeypatch
):
    monkeypatch.setenv("DASK_TEST_TOKEN", "s3cr3t-value")

    def chatty() -> str:
        import sys

        print("hello from the worker")
        print("token is", os.environ["DASK_TEST_TOKEN"])
        print("a warning", file=sys.stderr)
        return os.environ.get("DASK_OTHER_TOKEN", "withheld")

    step = Step("chatty", func=chatty, executor="dask", secrets=["DASK_TEST_TOKEN"], cache=False)
    other = Step("other", run="true", secrets=["DASK_OTHER_TOKEN"], cache=False)
    run = Graph("g", [step, other]).run(executor="local")
    assert run.result("chatty") == "withheld"  # another step's secret, though inherited
    logs = run.logs("chatty")
    assert logs[logs.stream == "stdout"]["line"].tolist() == [
        "hello from the worker", "token is ***"
    ]
    assert logs[logs.stream == "stderr"]["line"].tolist() == ["a warning"]


def test_lines_sent_as_they_come_are_masked_before_they_reach_the_scheduler(
        cluster, on_dask, monkeypatch):
    """The scheduler keeps its last events, for any client of it to read."""
    monkeypatch.setenv("DASK_TEST_TOKEN", "s3cr3t-value")

    def leaks() -> None:
        print("token is", os.environ["DASK_TEST_TOKEN"], flush=True)
        time.sleep(0.5)  # (sent as it runs, not with its result only)

    step = Step("leaks", func=leaks, executor="dask", secrets=["DASK_TEST_TOKEN"], cache=False)
    run = Graph("g", [step]).run()
    assert run.logs("leaks")["line"].tolist() == ["token is ***"]
    with distributed.Client(cluster) as client:
        sent = str(client.get_events(dask_executor._LINES))
    assert "token is ***" in sent and "s3cr3t" not in sent


def test_stdout_and_stderr_lines_keep_the_order_they_were_printed_in(on_dask):
    """They came grouped by stream: the step's stdout, then its stderr."""
    def chatty() -> None:
        import subprocess

        print("first")
        print("a warning", file=sys.stderr)
        print("second")
        sys.stdout.flush()
        subprocess.run(["echo", "from a subprocess"], check=True)
        time.sleep(0.3)  # (a turn: a line written below Python goes a turn after it came)
        print("last", file=sys.stderr)

    run = Graph("g", [Step("chatty", func=chatty, executor="dask", cache=False)]).run()
    logs = run.logs("chatty")
    assert list(zip(logs.stream, logs.line, strict=True)) == [
        ("stdout", "first"), ("stderr", "a warning"), ("stdout", "second"),
        ("stdout", "from a subprocess"), ("stderr", "last")]


def test_a_failing_step_fails_with_its_traceback_tail(on_dask):
    def broken() -> None:
        raise ValueError("the input is malformed")

    run = Graph("g", [Step("broken", func=broken, executor="dask", cache=False)]).run()
    assert run.states() == {"broken": "failed"}
    assert "ValueError: the input is malformed" in run.status_rows()["broken"]["error"]
    lines = run.logs("broken", stream="stderr")["line"].tolist()
    assert lines[0] == "Traceback (most recent call last):"
    assert any("in broken" in line and __file__ in line for line in lines)
    assert 'raise ValueError("the input is malformed")' in "\n".join(lines)
    assert lines[-1] == "ValueError: the input is malformed"


def test_async_steps_run_and_a_step_that_exits_fails_with_its_exit_code(on_dask):
    async def fetch() -> int:
        import asyncio

        await asyncio.sleep(0.01)
        return 5

    def leave() -> None:
        import sys

        print("leaving", file=sys.stderr)
        sys.exit(3)

    run = Graph("g", [Step("fetch", func=fetch, executor="dask", cache=False),
                      Step("leave", func=leave, executor="dask", cache=False)]).run()
    assert run.result("fetch") == 5
    assert run.states()["leave"] == "failed"
    assert run.status_rows()["leave"]["error"] == "exit code 3: leaving"


@pytest.mark.parametrize("code", [0, 3])
def test_a_step_that_ends_its_process_with_os_exit_fails_and_runs_again_next_time(
        on_dask, code):
    """os._exit() ends the step's process mid-step, without Python's cleanup: no result
    exists, and its exit code of 0 made it a success the cache served to the next run."""
    runs = on_dask / "runs.txt"

    def leave() -> int:
        with open(runs, "a") as handle:
            handle.write("ran\n")
        print("half done", file=sys.stderr, flush=True)
        os._exit(code)

    graph = Graph("g", [Step("leave", func=leave, executor="dask"),
                        Step("after", func=lambda leave: leave, needs=["leave"],
                             executor="dask")])
    started = time.monotonic()
    for run in (graph.run(), graph.run()):
        row = run.status_rows()["leave"]
        assert (row["state"], row["cached"], row["exit_code"]) == ("failed", False, code)
        assert row["error"] == (
            f"step 'leave': its process on the dask worker exited with code {code} before "
            "returning a result (os._exit() or a native exit() ends it so); end the step "
            "by returning, raising or sys.exit() instead")
        assert run.states()["after"] == "skipped"
        logged = run.logs()
        assert logged[logged["step"] == "leave"]["line"].tolist() == ["half done"]
    assert count(runs) == 2  # not served from the cache: it ran again
    assert time.monotonic() - started < 20  # its worker lives on: no lost-worker retries


def test_sys_exit_in_a_dask_step_ends_it_as_on_the_local_executor(on_dask):
    """sys.exit() ends a step as it ends a script, on either executor: 0 (or none)
    succeeds with no result, a text fails with status 1 and is printed."""
    def done_early() -> None:
        sys.exit(0)

    def complain() -> None:
        sys.exit("no input today")

    def after(done_early: Path) -> bool:
        return isinstance(done_early, Path)  # (no result: its folder, as a shell step's)

    steps = [Step("done_early", func=done_early), Step("complain", func=complain),
             Step("after", func=after, needs=["done_early"])]
    local, remote = (_graph_on(name, steps).run(cache=False) for name in ("local", "dask"))
    for run in (local, remote):
        assert run.states() == {"done_early": "succeeded", "complain": "failed",
                                "after": "succeeded"}, run.status_rows()
        assert run.result("after") is True
        assert run.status_rows()["complain"]["error"] == "exit code 1: no input today"


def test_a_cell_with_outputs_ended_by_sys_exit_0_fails_and_stores_nothing_on_dask(
        on_dask, workdir):
    """A --python cell's step with --outputs that sys.exit(0)s before assigning them
    succeeded with no result, published as None and cached; it fails, as on local."""
    def cell() -> int:
        sys.exit(0)

    setattr(cell, PUBLISHED_AS, ("rows",))
    for executor in ("local", "dask"):
        graph = _graph_on(executor, [Step("load", func=cell)])
        for _ in range(2):  # (the second is no cache hit: nothing was stored)
            run = graph.run(cache_directory=workdir / executor)
            row = run.status_rows()["load"]
            assert (row["state"], row["cached"]) == ("failed", False), row
            assert row["error"] == (
                "step 'load': the cell ended (sys.exit(0)) before assigning its --outputs "
                "'rows'; nothing was stored: assign them before sys.exit(), or raise to "
                "fail the step")


def test_an_output_a_cell_did_not_reach_fails_in_its_words_on_dask_as_on_local(on_dask):
    """It failed with an UnboundLocalError pointing at a `return u` the user never wrote."""
    cell = cell_function("s", "if flag:\n    u = 1\n", (), ("u",), {}, params=("flag",))
    for executor in ("local", "dask"):
        graph = _graph_on(executor, [Step("s", func=cell, params={"flag": False})])
        row = graph.run(cache=False).status_rows()["s"]
        assert (row["state"], row["error"]) == ("failed", (
            "step 's': --outputs 'u' was not assigned: the cell's code did not reach an "
            "assignment to it; assign it on every path (u = None first, say)")), row


class Enough(BaseException):
    """A BaseException of the user's (not an Exception: ``except Exception`` lets it by)."""


def test_a_dask_step_raising_a_base_exception_fails_with_its_line_as_on_local(on_dask):
    """It read "its process on the dask worker exited with code 1 before returning a
    result (os._exit() ...)", and KeyboardInterrupt "exit code -2: ..."."""
    def stop() -> None:
        raise Enough("enough for today")

    def interrupted() -> None:
        raise KeyboardInterrupt("pressed")

    async def stop_later() -> None:
        raise Enough("enough later")

    steps = [Step(f.__name__, func=f) for f in (stop, interrupted, stop_later)]
    local, remote = (_graph_on(name, steps).run(cache=False) for name in ("local", "dask"))
    for run in (local, remote):  # (local names a BaseException's module: endswith)
        rows = run.status_rows()
        assert {name: (row["state"], row["exit_code"]) for name, row in rows.items()} == {
            "stop": ("failed", 1), "interrupted": ("failed", 1),
            "stop_later": ("failed", 1)}, run
        assert rows["stop"]["error"].endswith("Enough: enough for today")
        assert rows["interrupted"]["error"] == "KeyboardInterrupt: pressed"
        assert rows["stop_later"]["error"].endswith("Enough: enough later")
        assert _step_lines(run, "stop")[-1].endswith("Enough: enough for today")


def _step_lines(run, step: str) -> list[str]:
    logged = run.logs()
    return logged[logged["step"] == step]["line"].tolist()


def test_a_step_past_its_timeout_is_stopped_on_the_worker(on_dask):
    ticks = on_dask / "ticks.txt"
    step = Step("tick", func=ticker(ticks), executor="dask", timeout=1.5, cache=False)
    run = Graph("g", [step]).run()
    assert run.states() == {"tick": "failed"}
    assert "timeout" in run.status_rows()["tick"]["error"]
    assert count(ticks) > 0
    assert stops_ticking(ticks)


def test_a_dask_step_ends_as_its_function_returns_though_a_thread_it_started_runs_on(
        on_dask):
    """The child joined the non-daemon threads the step left running before it exited, so
    the step ran on past its return, and its timeout then threw its result away. They
    are killed with the child now; its exit work (atexit) still runs."""
    ticks, done = on_dask / "ticks.txt", on_dask / "atexit.txt"

    def leaves_a_thread() -> str:
        import atexit

        atexit.register(done.write_text, "ran")
        threading.Thread(target=ticker(ticks)).start()  # a minute of ticks
        return "returned"

    step = Step("t", func=leaves_a_thread, executor="dask", timeout=4, cache=False)
    started = time.monotonic()
    run = Graph("g", [step]).run()
    assert run.states() == {"t": "succeeded"}, run.status()
    assert run.result("t") == "returned"
    assert time.monotonic() - started < 3.5
    assert done.read_text() == "ran"
    assert stops_ticking(ticks)


def test_a_cancelled_dask_step_stops(on_dask):
    ticks = on_dask / "ticks.txt"
    step = Step("tick", func=ticker(ticks), executor="dask", cache=False)
    run = start_background(Graph("g", [step]), executor="local")
    assert wait_until(lambda: count(ticks) >= 3, timeout=20)
    run.cancel()
    run.wait(10)
    assert run.states() == {"tick": "cancelled"}
    assert stops_ticking(ticks)


def hangs_after_printing() -> None:
    print("connecting to db...", flush=True)
    print("query sent", flush=True)
    while True:
        time.sleep(0.1)


def test_a_dask_step_past_its_timeout_keeps_what_it_printed(on_dask):
    """Its lines came only with its report, which a stopped step never sends: the run
    said that it printed nothing."""
    step = Step("hang", func=hangs_after_printing, executor="dask", timeout=3, cache=False)
    run = Graph("g", [step]).run()
    assert run.states() == {"hang": "failed"}
    assert "timeout" in run.status_rows()["hang"]["error"]
    assert run.logs("hang")["line"].tolist() == ["connecting to db...", "query sent"]


def _set_unbuffered(value: str | None) -> str | None:
    """On a worker: set (None: unset) PYTHONUNBUFFERED; its value before."""
    before = os.environ.pop("PYTHONUNBUFFERED", None)
    if value is not None:
        os.environ["PYTHONUNBUFFERED"] = value
    return before


def test_a_dask_step_past_its_timeout_keeps_lines_printed_without_flush(cluster, on_dask):
    """A file's 8 kB buffer held them in the step's process until it ended."""
    with distributed.Client(cluster) as client:  # (as a worker started by hand has it)
        before = client.run(_set_unbuffered, None)
    try:
        run = Graph("g", [Step("hang", func=hangs_printing_without_flush, executor="dask",
                               timeout=3, cache=False)]).run()
    finally:
        with distributed.Client(cluster) as client:
            for worker, value in before.items():
                client.run(_set_unbuffered, value, workers=[worker])
    assert run.logs("hang")["line"].tolist() == ["connecting to db...", "not flushed"]


def hangs_printing_without_flush() -> None:
    print("connecting to db...")
    print("not flushed", file=sys.stderr)
    while True:
        time.sleep(0.1)


def test_a_cancelled_dask_step_keeps_what_it_printed(on_dask):
    step = Step("hang", func=hangs_after_printing, executor="dask", cache=False)
    run = start_background(Graph("g", [step]), executor="local")
    assert wait_until(lambda: len(run.logs("hang")) == 2, timeout=20)  # (as they come)
    run.cancel()
    run.wait(10)
    assert run.states() == {"hang": "cancelled"}
    assert run.logs("hang")["line"].tolist() == ["connecting to db...", "query sent"]


def test_a_stopped_step_whose_lines_never_came_says_they_were_lost(on_dask, monkeypatch):
    monkeypatch.setattr(dask_executor, "_LAST_WORDS", 0.5)
    monkeypatch.setattr(dask_executor._Cluster, "_heard", lambda self, event: None)
    step = Step("hang", func=hangs_after_printing, executor="dask", timeout=2, cache=False)
    run = Graph("g", [step]).run()
    assert run.logs("hang")["line"].tolist() == [
        "dagnb: anything step 'hang' printed was lost with it: its dask worker sent no "
        "last lines within 0.5 s of its stop"]


def test_retries_run_the_step_again_on_dask(on_dask, clock):
    attempts = on_dask / "attempts.txt"

    def flaky() -> int:
        with open(attempts, "a") as handle:
            handle.write(f"{os.getppid()}\n")
        if count(attempts) < 2:
            raise RuntimeError("first attempt fails")
        return count(attempts)

    step = Step("flaky", func=flaky, executor="dask", retries=1, cache=False)
    run = Graph("g", [step]).run(sleep=clock.async_sleep)
    assert run.states() == {"flaky": "succeeded"}, run.status()
    assert run.result("flaky") == 2
    first = run.logs("flaky", stream="stderr")
    assert first[first.attempt == 1]["line"].tolist()[-1] == "RuntimeError: first attempt fails"
    assert os.getpid() not in {int(pid) for pid in attempts.read_text().split()}


def test_a_steps_connection_error_is_retried_but_not_counted_by_the_dask_breaker(
        on_dask, clock):
    from dagnb.retry.breaker import breaker_for

    breaker = breaker_for("dask", failure_threshold=2)

    def fetch() -> None:
        raise ConnectionError("db down")

    run = Graph("g", [Step("fetch", func=fetch, executor="dask", cache=False)]).run(
        sleep=clock.async_sleep)
    fetched = run.status_rows()["fetch"]
    assert fetched["attempts"] == 3  # transient: still retried
    assert fetched["exit_code"] == 1  # it raised, as a step out of retries on the local one
    assert (breaker.state, breaker.failures) == ("closed", 0)


def test_two_cpu_bound_steps_run_at_the_same_time(on_dask):
    def busy() -> tuple[float, float]:
        begun = time.time()
        while time.time() - begun < 1.5:
            sum(range(1000))
        return begun, time.time()

    graph = Graph("g", [Step(name, func=busy, executor="dask", cache=False)
                        for name in ("one", "two")])
    run = graph.run()
    (start_one, end_one), (start_two, end_two) = run.result("one"), run.result("two")
    assert max(start_one, start_two) < min(end_one, end_two)  # the intervals overlap


def test_functions_defined_in_a_notebook_run_on_dask_and_show_their_cell_in_tracebacks(
    cluster, shell
):
    dagnb.configure(dask_scheduler=cluster.scheduler_address)
    shell.run_cell("SCALE = 7\n"
                   "def scaled(x):\n    return x * SCALE\n"
                   "def grow():\n    return scaled(6)\n"
                   "def fail():\n    raise KeyError('missing column')\n")
    grow, fail = shell.user_ns["grow"], shell.user_ns["fail"]
    run = Graph("nb", [Step("grow", func=grow, executor="dask", cache=False),
                       Step("fail", func=fail, executor="dask", cache=False)]).run()
    dask_executor.close()
    assert run.result("grow") == 42
    lines = run.logs("fail", stream="stderr")["line"].tolist()
    assert "    raise KeyError('missing column')" in lines  # the cell's line, read here
    assert not any("<dynamic-code>" in line for line in lines)


def test_a_python_cell_runs_on_dask_and_a_shell_cell_there_is_refused(cluster, shell):
    from IPython.core.error import UsageError

    dagnb.configure(dask_scheduler=cluster.scheduler_address)
    shell.run_cell("import os")
    shell.run_cell_magic("dagger", "where --python --executor dask --outputs v",
                         "v = os.getpid()\n")
    dask_executor.close()
    assert shell.user_ns["v"] != os.getpid()
    with pytest.raises(UsageError, match="executor='dask' runs Python functions only"):
        shell.run_cell_magic("dagger", "build --executor dask", "echo hi\n")


def test_a_function_that_does_not_pickle_fails_with_the_fix(on_dask):
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            pass

    run = Graph("g", [Step("locked", func=locked, executor="dask", cache=False)]).run()
    assert run.states() == {"locked": "failed"}
    error = run.status_rows()["locked"]["error"]
    assert "cannot be sent to dask workers" in error
    assert "lock" in error


def test_a_step_from_a_package_the_workers_lack_fails_naming_it_and_the_fix(
        on_dask, monkeypatch):
    import importlib
    import sys

    # installed on this machine only (the workers started before): a library, whose
    # code does not travel with the step as the project's own modules' does
    lib = on_dask / "lib"
    (lib / "dagnb_client_only-1.0.dist-info").mkdir(parents=True)
    (lib / "dagnb_client_only.py").write_text("def fit():\n    return 42\n")
    monkeypatch.syspath_prepend(str(lib))
    try:
        fit = importlib.import_module("dagnb_client_only").fit
        run = Graph("g", [Step("fit", func=fit, executor="dask", retries=0)]).run()
    finally:
        sys.modules.pop("dagnb_client_only", None)
    error = run.status_rows()["fit"]["error"]
    assert run.states() == {"fit": "failed"}
    assert "No module named 'dagnb_client_only'" in error
    assert "install 'dagnb_client_only' on the workers" in error
    assert "register_pickle_by_value(dagnb_client_only)" in error


def test_the_executor_table_shows_dask(cluster, on_dask):
    Graph("g", [Step("noop", func=lambda: None, executor="dask", cache=False)]).run()
    row = dagnb.executors.status().set_index("name").loc["dask"]
    assert row["available"] and row["capabilities"] == "python, queues"
    assert cluster.scheduler_address in row["reason"]


def test_without_distributed_a_dask_step_fails_with_the_install_command(
    workdir, monkeypatch
):
    monkeypatch.setattr(dask_executor, "_installed", lambda: False)
    run = Graph("g", [Step("fit", func=lambda: 1, executor="dask", cache=False)]).run()
    assert run.states() == {"fit": "failed"}
    assert run.status_rows()["fit"]["error"].endswith("pip install 'dagnb[dask]'")


def test_a_shell_step_on_dask_is_refused_with_the_fix():
    with pytest.raises(InvalidStepError, match=r"executor='dask' runs Python functions only; "
                                               r"give it executor='local' or 'dagger'"):
        Step("build", run="make", executor="dask")


def test_a_run_on_dask_is_refused_in_one_line_as_the_setting_is(workdir):
    """Documented nowhere, it was taken, and its shell steps failed mid-run."""
    graph = Graph("g", [Step("fit", func=lambda: 1), Step("build", run="echo hi",
                                                           needs=["fit"])])
    with pytest.raises(ConfigError, match=(
            r"^run\(\): executor = 'dask' is not valid; expected 'auto', 'local' or 'dagger' "
            r"\(give the Python steps to send to dask executor='dask'\)$")):
        graph.run(executor="dask")


def test_a_workflow_file_runs_python_steps_on_dask(on_dask):
    (on_dask / "steps.py").write_text("import os\n\ndef where():\n    return os.getpid()\n")
    (on_dask / "flow.yml").write_text(
        "steps:\n"
        "  where:\n    python: steps.py:where\n    executor: dask\n    cache: false\n"
    )
    graph = load(on_dask / "flow.yml")
    assert graph["where"].executor == "dask"
    run = graph.run()
    assert run.states() == {"where": "succeeded"}, run.status()
    assert run.result("where") != os.getpid()


def test_a_workflow_steps_modules_class_passes_between_steps_on_dask(on_dask):
    # registered in sys.modules (so pickle finds its classes), the module is still one a
    # worker cannot import: its code travels with the function
    (on_dask / "steps.py").write_text(
        "class Point:\n    def __init__(self, x):\n        self.x = x\n\n"
        "def make():\n    return Point(2)\n\n"
        "def use(make):\n    assert isinstance(make, Point), type(make)\n    return make.x\n")
    (on_dask / "flow.yml").write_text(
        "defaults: {executor: dask}\nsteps:\n  make: {python: 'steps.py:make'}\n"
        "  use: {python: 'steps.py:use', needs: [make]}\n")
    run = load(on_dask / "flow.yml").run()
    assert run.states() == {"make": "succeeded", "use": "succeeded"}, run.status()
    assert run.result("use") == 2


def test_values_keep_their_type_and_writability_between_dask_steps(on_dask):
    """Arrays travel as views of their frames, bytes as frames of their own (over 1 MB,
    sent ahead of the task): what the next step and the run get is as it was, a
    read-only array read-only (its flag is in its pickle, so in the keys after it)."""
    import numpy as np

    def frozen():
        array = np.arange(10.0)
        array.flags.writeable = False
        return array

    def seen(array, frozen, raw, buffer) -> list:
        array[0] = 7.0  # (a copy of the client's: changed on the worker only)
        return [array.flags.writeable, frozen.flags.writeable, float(array[1:].sum()),
                type(raw).__name__, len(raw), type(buffer).__name__, buffer[:2]]

    graph = Graph("values", [
        Step("array", func=lambda: np.arange(300_000.0), executor="dask"),
        Step("frozen", func=frozen, executor="dask"),
        Step("raw", func=lambda: b"r" * 2_000_000, executor="dask"),
        Step("buffer", func=lambda: bytearray(b"ab"), executor="dask"),
        Step("seen", func=seen, needs=["array", "frozen", "raw", "buffer"], executor="dask"),
    ])
    run = graph.run()
    assert set(run.states().values()) == {"succeeded"}, run.status()
    assert run.result("seen") == [True, False, float(np.arange(300_000.0).sum()),
                                  "bytes", 2_000_000, "bytearray", bytearray(b"ab")]
    assert run.result("array").flags.writeable and run.result("array")[0] == 0.0
    assert not run.result("frozen").flags.writeable
    assert type(run.result("raw")) is bytes and type(run.result("buffer")) is bytearray
    again = graph.run()
    assert set(again.states().values()) == {"cached"}, again.status()


def test_a_large_payload_waits_for_a_worker_as_a_task_does(workdir, monkeypatch):
    """A cluster with no worker yet (an adaptive one, starting): a step whose payload is
    over 1 MB waits in the queue for a worker as a small one does. Sent ahead of its
    task, it waited only for the client's connection timeout (2 s here), then failed
    (an attempt spent, as a transient error: minutes of a cluster starting spend them all)."""
    monkeypatch.setattr(dask_executor, "_CONNECT_TIMEOUT", 2.0)
    with distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as empty:
        dagnb.configure(dask_scheduler=empty.scheduler_address)
        later = threading.Timer(4.0, empty.scale, args=(1,))
        try:
            later.start()
            run = Graph("late", [
                Step("big", func=lambda: b"b" * 2_000_000),
                Step("size", func=lambda big: len(big), needs=["big"], executor="dask"),
            ]).run(timeout=60)
        finally:
            later.cancel()
            dask_executor.close()
    assert run.states()["size"] == "succeeded", run.status()
    assert run.result("size") == 2_000_000
    row = run.status().set_index("step").loc["size"]
    assert row["attempts"] == 1  # (not a failed attempt, retried as a transient error)


def test_a_workflow_file_with_a_shell_step_on_dask_is_refused(workdir):
    (workdir / "flow.yml").write_text("steps:\n  build:\n    run: make\n    executor: dask\n")
    with pytest.raises(WorkflowError, match="executor='dask' runs Python functions only"):
        load(workdir / "flow.yml")


def alive(pid: int) -> bool:
    """The process runs (a zombie waiting to be reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_scheduler_address_that_accepts_but_never_answers_fails_fast(
        workdir, monkeypatch):
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # connections queue, unanswered
    monkeypatch.setattr(dask_executor, "_CONNECT_TIMEOUT", 1.0)
    address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    dagnb.configure(dask_scheduler=address)
    run = start_background(Graph("g", [Step("f", func=lambda: 1, executor="dask")]))
    try:
        run.wait(15)
    finally:
        silent.close()  # (resets the queued connection a hung client waits on)
        run.wait(15)
        dask_executor.close()
    row = run.status_rows()["f"]
    assert row["state"] == "failed", row
    assert f"cannot reach the scheduler {address!r}" in row["error"]
    assert "DAGNB_DASK_SCHEDULER" in row["error"]
    assert row["duration_s"] < 10


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_step_dies_with_its_worker(cluster, on_dask):
    ticks = on_dask / "ticks.txt"

    def tick() -> None:
        scratch = os.path.dirname(os.readlink("/proc/self/fd/1"))  # its stdout's folder
        while True:
            with open(ticks, "a") as handle:
                handle.write(f"{os.getpid()} {os.getppid()} {scratch}\n")
            time.sleep(0.1)

    step = Step("tick", func=tick, executor="dask", cache=False, retries=0)
    run = start_background(Graph("g", [step]), executor="local")
    try:
        assert wait_until(lambda: count(ticks) >= 2, timeout=20)
        child, worker, scratch = ticks.read_text().split()[:3]
        assert os.path.isdir(scratch)
        os.kill(int(worker), signal.SIGKILL)
        assert wait_until(lambda: not alive(int(child)), timeout=3)
    finally:
        run.cancel()
        run.wait(10)
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
    # the step's files were in the killed worker's folder, removed by the one after it
    # (in the system's temporary folder they would stay until the machine restarts)
    assert wait_until(lambda: not os.path.exists(scratch), timeout=10), scratch


def test_a_step_whose_worker_dies_is_retried_in_an_empty_folder_not_rerun_by_dask(
        cluster, on_dask, clock):
    starts = on_dask / "starts.txt"

    def write_parts() -> list[str]:
        out = dagnb.current().out_dir
        (out / f"part-{os.getpid()}.csv").write_text("rows\n")
        with open(starts, "a") as handle:
            handle.write(f"{os.getppid()}\n")
        if count(starts) == 1:
            time.sleep(30)  # its worker is killed meanwhile
        return sorted(os.listdir(out))

    step = Step("parts", func=write_parts, executor="dask")
    run = start_background(Graph("g", [step]), executor="local", sleep=clock.async_sleep)
    try:
        assert wait_until(lambda: count(starts) == 1, timeout=20)
        os.kill(int(starts.read_text().split()[0]), signal.SIGKILL)
        run.wait(30)
    finally:
        run.cancel()
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
    row = run.status_rows()["parts"]
    assert (row["state"], row["attempts"]) == ("succeeded", 2), run.status()
    assert len(run.result("parts")) == 1  # the lost run's part is not among its outputs
    stored = sorted(p.name for p in run.outputs("parts").glob("part-*"))
    assert stored == run.result("parts")
    retried = [e.data["error"] for e in run.events if e.kind == "retry"]
    assert len(retried) == 1 and "the worker running it died" in retried[0], retried


LOST = ("step 'victim' was lost on the dask cluster: the worker running it died (killed, "
        "or out of memory); it runs again as a new attempt if its retries allow")


@pytest.fixture
def scheduler_log():
    """The records the scheduler (in this process: a LocalCluster's) logs, filters passed."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("distributed.scheduler")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def kill_holders_before_the_task(monkeypatch, killed: Path) -> None:
    """Kill the worker holding a payload sent ahead of its task, before the task goes."""
    submit = dask_executor._Cluster.submit

    def kill_then_submit(self, payload, key, marker, began, heard):
        if not killed.exists() and not isinstance(payload, list):
            killed.touch()
            holders = list(self.client.who_has([payload])[payload.key])
            for pid in self.client.run(os.getpid, workers=holders).values():
                os.kill(pid, signal.SIGKILL)
        return submit(self, payload, key, marker, began, heard)

    monkeypatch.setattr(dask_executor._Cluster, "submit", kill_then_submit)


@pytest.mark.parametrize(("size", "when"), [
    pytest.param(10, "running", id="input-in-task"),
    pytest.param(2_000_000, "running", id="input-sent-ahead"),  # (over 1 MB)
    # the worker holding that input dies before the task starts
    pytest.param(2_000_000, "waiting", id="input-sent-ahead-task-waiting"),
])
def test_a_worker_death_reads_and_is_retried_the_same_with_an_input_sent_ahead_or_not(
        cluster, on_dask, clock, monkeypatch, scheduler_log, size, when):
    killed = on_dask / "killed"

    def victim(data: bytes) -> int:
        if not killed.exists():  # ("running": its worker is killed as it runs, once)
            killed.touch()
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(30)
        return len(data)

    if when == "waiting":
        kill_holders_before_the_task(monkeypatch, killed)
    graph = Graph("g", [Step("data", func=lambda: b"d" * size, cache=False),
                        Step("victim", func=victim, needs=["data"], executor="dask",
                             cache=False, retries=1)])
    started = time.monotonic()
    run = start_background(graph, executor="local", sleep=clock.async_sleep)
    try:
        run.wait(30)
    finally:
        run.cancel()
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
    row = run.status_rows()["victim"]
    assert (row["state"], row["attempts"]) == ("succeeded", 2), run.status()
    assert run.result("victim") == size
    retried = [e.data["error"] for e in run.events if e.kind == "retry"]
    assert retried == [LOST]
    assert time.monotonic() - started < 15
    assert wait_until(lambda: not cluster.scheduler.tasks, timeout=5), cluster.scheduler.tasks
    # the scheduler's own error about the lost input (its key) is not in the log
    assert not [r for r in scheduler_log if "scattered" in r.getMessage()]


def test_the_scheduler_still_logs_lost_data_that_is_not_only_steps_inputs() -> None:
    import logging

    def kept(keys: str) -> bool:
        text = f"Removing worker 'tcp://w' caused the cluster to lose scattered data, " \
               f"which can't be recovered: {{{keys}}} (stimulus_id='x')"
        record = logging.LogRecord("distributed.scheduler", logging.ERROR, "", 0, text, (), None)
        return dask_executor._not_lost_inputs(record)

    assert not kept("'dagnb-a-1-0123456789ab-input', 'dagnb-b-2-0123456789ab-input'")
    assert kept("'list-5d14126b8fd0433292523fcba0c708a2'")  # a user's own
    assert kept("'dagnb-a-1-0123456789ab-input', 'list-5d14126b8fd0'")


def test_a_failed_dask_step_leaves_nothing_of_its_input_on_the_cluster(cluster, on_dask):
    def fails(data: bytes) -> None:
        raise ValueError("no good")

    run = Graph("g", [Step("data", func=lambda: b"d" * 2_000_000, cache=False),
                      Step("fails", func=fails, needs=["data"], executor="dask",
                           retries=0)]).run()
    assert run.states()["fails"] == "failed"
    # (the run keeps the error; its traceback kept the task and its 2 MB input)
    assert wait_until(lambda: not cluster.scheduler.tasks, timeout=5), cluster.scheduler.tasks


def starts_sleep(**popen: object):
    """A step that starts ``sleep 30`` in the background and returns its pid."""
    def background() -> int:
        import subprocess

        return subprocess.Popen(["sleep", "30"], **popen).pid
    return background


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_step_that_leaves_a_process_running_ends_when_it_returns_and_kills_it(on_dask):
    started = time.monotonic()
    step = Step("background", func=starts_sleep(), executor="dask", cache=False, timeout=20)
    run = Graph("g", [step]).run()
    assert run.states() == {"background": "succeeded"}, run.status()
    assert time.monotonic() - started < 10  # not waiting for the sleep's end of output
    assert wait_until(lambda: not alive(run.result("background")), timeout=3)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_process_a_step_started_in_a_new_session_is_killed_and_frees_the_worker(on_dask):
    escaping = starts_sleep(start_new_session=True)
    step = Step("escape", func=escaping, executor="dask", cache=False, timeout=5)
    run = Graph("g", [step]).run()
    assert run.states() == {"escape": "succeeded"}, run.status()
    assert wait_until(lambda: not alive(run.result("escape")), timeout=3)

    def after() -> int:
        return 2

    steps = [Step(name, func=after, executor="dask", cache=False, timeout=5)
             for name in ("one", "two")]  # two at once: one per worker, none stuck
    assert set(Graph("g2", steps).run().states().values()) == {"succeeded"}


@pytest.mark.slow
def test_without_a_scheduler_a_local_cluster_starts_once_and_closes(workdir, monkeypatch):
    monkeypatch.delenv("DAGNB_DASK_SCHEDULER", raising=False)

    def where() -> int:
        return os.getppid()

    graph = Graph("g", [Step("where", func=where, executor="dask", cache=False)])
    first, second = graph.run().result("where"), graph.run().result("where")
    cluster = dagnb.config.context().peek("dask")
    workers = cluster.client.run(os.getpid)
    assert len(workers) == 2
    assert {first, second} <= set(workers.values())  # one cluster served both runs
    dask_executor.close()
    assert cluster.local.status.name == "closed"
    assert dagnb.config.context().peek("dask") is None


def test_a_dask_step_runs_in_its_workdir_or_fails_when_it_is_not_here(on_dask):
    import os

    (on_dask / "src" / "pkg").mkdir(parents=True)

    def where() -> str:
        return os.getcwd()

    run = Graph("g", [
        Step("mapped", func=where, workdir="/workspace/pkg", mounts={"src": "/workspace"},
             executor="dask", cache=False),
        Step("missing", func=where, workdir="build", executor="dask", cache=False),
    ]).run()
    assert run.states() == {"mapped": "succeeded", "missing": "failed"}
    assert run.result("mapped") == str(on_dask / "src" / "pkg")
    assert "workdir 'build' is not a folder" in run.status_rows()["missing"]["error"]


def contract_seen() -> dict:
    """What a step finds through $DAGNB_PARAMS and $DAGNB_IN (None where unset)."""
    import json
    import os
    from pathlib import Path

    with open(os.environ["DAGNB_PARAMS"], encoding="utf-8") as handle:
        params = json.load(handle)
    folder = os.environ.get("DAGNB_IN")
    if folder is None:
        return {"params": params, "in": None}
    found = {name: Path(folder, name, "u.txt").read_text() for name in os.listdir(folder)}
    return {"params": params, "in": found}


def test_a_dask_step_finds_its_params_file_and_upstream_outputs_as_on_local(on_dask):
    def made_on_dask() -> None:
        (dagnb.current().out_dir / "u.txt").write_text("D")

    run = Graph("g", [
        Step("shell", run='printf S > "$DAGNB_OUT/u.txt"', cache=False),
        Step("dask", func=made_on_dask, executor="dask", cache=False),
        Step("check", func=contract_seen, needs=["shell", "dask"], params={"n": 3},
             executor="dask", cache=False),
    ]).run()
    assert run.result("check") == {"params": {"n": 3}, "in": {"shell": "S", "dask": "D"}}


def test_a_worker_without_the_run_folder_gets_its_params_and_no_dagnb_in(
        on_dask, monkeypatch):
    # as on a cluster of other machines: the folders made here are not there
    monkeypatch.setattr(dask_executor, "_make_folders", lambda task: None)
    run = Graph("g", [
        Step("shell", run="true", cache=False),
        Step("check", func=contract_seen, needs=["shell"], params={"n": 3},
             executor="dask", cache=False),
    ]).run()
    assert run.result("check") == {"params": {"n": 3}, "in": None}


UNGUARDED = """\
import dagnb

def square():
    return 7 * 7

print("body runs in", __name__, flush=True)
run = dagnb.Graph("g", [dagnb.Step("square", func=square, executor="dask")]).run()
print("states", run.states(), run.status()["error"].iloc[0], flush=True)
"""


@pytest.mark.slow
def test_a_script_with_no_main_guard_fails_in_one_line_rather_than_hang(tmp_path, monkeypatch):
    """Each LocalCluster worker imports the script again (spawn) and would run the graph
    there too, waiting on the key the script holds: a hang, with the cache on."""
    import subprocess
    import sys

    monkeypatch.delenv("DAGNB_DASK_SCHEDULER", raising=False)
    (tmp_path / "script.py").write_text(UNGUARDED)
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90)
    assert "states {'square': 'failed'}" in done.stdout, done.stdout + done.stderr
    assert 'needs it under if __name__ == "__main__":' in done.stdout
    assert "a run started while a worker process imported your script again" in done.stderr


def test_a_step_whose_downstream_step_has_no_executor_succeeds_and_that_one_fails(
    workdir, monkeypatch
):
    # storing 'a' asks how 'b' reads it (from memory in this process, or from disk):
    # the question made b's executor, and its error failed 'a' and skipped 'b'
    monkeypatch.setattr(dask_executor, "_installed", lambda: False)
    graph = Graph("g", [Step("a", func=lambda: 1),
                        Step("b", func=lambda a: a + 1, needs=["a"], executor="dask")])
    run = graph.run()
    assert run.states() == {"a": "succeeded", "b": "failed"}
    assert "pip install 'dagnb[dask]'" in run.status().set_index("step").loc["b", "error"]


def one() -> int:
    return 1


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_cluster(port: int = 0):
    """A LocalCluster of one in-process worker: quick to start and to close."""
    return distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                    dashboard_address=":0", scheduler_port=port)


def test_a_client_found_closed_is_replaced_and_the_next_run_succeeds(on_dask):
    graph = Graph("g", [Step("one", func=one, executor="dask", cache=False)])
    assert graph.run().result("one") == 1
    first = dagnb.config.context().peek("dask")
    first.client.close()  # as dask closes it 10 s after losing its scheduler
    run = graph.run()
    assert run.states() == {"one": "succeeded"}, run.status()
    assert dagnb.config.context().peek("dask") is not first


def test_a_restarted_scheduler_serves_the_next_run_and_a_gone_one_fails_it_in_a_line(
        workdir, monkeypatch):
    monkeypatch.setattr(dask_executor, "_CONNECT_TIMEOUT", 1.0)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dagnb.configure(dask_scheduler=address)
    graph = Graph("g", [Step("one", func=one, executor="dask", cache=False)])
    try:
        with tiny_cluster(port):
            assert graph.run().result("one") == 1
        dagnb.config.context().peek("dask").client.close()  # (dask does, 10 s later)
        gone = graph.run().status_rows()["one"]
        assert gone["state"] == "failed", gone
        assert f"cannot reach the scheduler {address!r}" in gone["error"]
        assert "\n" not in gone["error"]
        with tiny_cluster(port):  # started again at its address
            again = graph.run()
    finally:
        dask_executor.close()
    assert again.states() == {"one": "succeeded"}, again.status()


def test_a_scheduler_lost_mid_run_fails_its_steps_in_a_line_saying_so(
        workdir, monkeypatch, caplog):
    """Each step said that it 'was lost ... scheduler-connection-lost', was retried into
    a FutureCancelledError, and the rows ended reading that dask had failed 8 times in
    a row and that the steps printed nothing; dask's reconnect error was in the output."""
    monkeypatch.setattr(dask_executor, "_CONNECT_TIMEOUT", 1.0)  # (dask's reconnect too)

    started = str(workdir / "started")

    def slow() -> None:
        print("working", flush=True)
        open(started, "w").close()
        time.sleep(30)

    def close_once_a_step_printed() -> None:  # (a fixed delay: on a loaded machine the
        wait_until(lambda: os.path.exists(started), timeout=20)  # cluster went first)
        time.sleep(0.5)
        local.close()

    local = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     dashboard_address=":0")  # (a thread would run on)
    address = local.scheduler_address
    dagnb.configure(dask_scheduler=address)
    steps = [Step(f"s{i}", func=slow, executor="dask", cache=False) for i in range(3)]
    closing = threading.Thread(target=close_once_a_step_printed)
    try:
        closing.start()
        begun = time.monotonic()
        run = Graph("g", steps).run()
        took = time.monotonic() - begun
    finally:
        closing.join()
        dask_executor.close()
    assert took < 12, took  # (the close: 4 s and more)
    for row in run.status_rows().values():
        assert row["state"] == "failed", run.status()
        assert re.search(f"the Dask scheduler at {address} is unreachable "
                         r"\(lost at \d\d:\d\d:\d\d\)", row["error"]), row["error"]
    # (the step the one worker took printed; which one it took is dask's choice: on a
    # loaded machine s0 waited and said so first)
    taken = [lines for lines in (run.logs(step.name)["line"].tolist() for step in steps)
             if "working" in lines]
    assert os.path.exists(started)
    assert taken and all("is unreachable" in lines[-1] for lines in taken)  # (not 'nothing')
    assert not [r for r in caplog.records if "Failed to reconnect" in r.getMessage()]


def test_a_default_local_cluster_whose_client_closed_is_connected_to_again(
        workdir, monkeypatch):
    monkeypatch.delenv("DAGNB_DASK_SCHEDULER", raising=False)
    local = tiny_cluster()
    monkeypatch.setattr(distributed, "LocalCluster", lambda **_: local)  # (dagnb's own)
    graph = Graph("g", [Step("one", func=one, executor="dask", cache=False)])
    try:
        assert graph.run().result("one") == 1
        dagnb.config.context().peek("dask").client.close()
        run = graph.run()
        assert run.states() == {"one": "succeeded"}, run.status()
        assert dagnb.config.context().peek("dask").local is local  # kept, not restarted
    finally:
        dask_executor.close()
    assert local.status.name == "closed"


def test_a_new_dask_scheduler_setting_sends_the_next_steps_to_that_cluster(workdir):
    graph = Graph("g", [Step("one", func=one, executor="dask", cache=False)])
    with tiny_cluster() as first, tiny_cluster() as second:
        try:
            dagnb.configure(dask_scheduler=first.scheduler_address)
            assert graph.run().result("one") == 1
            old = dagnb.config.context().peek("dask")
            dagnb.configure(dask_scheduler=second.scheduler_address)
            run = graph.run()
        finally:
            dask_executor.close()
        assert run.states() == {"one": "succeeded"}, run.status()
        assert "dagnb-one" in first.scheduler.task_prefixes
        assert "dagnb-one" in second.scheduler.task_prefixes  # (not the first one again)
        assert old.client.status == "closed"  # dagnb's client; the cluster is the user's
        assert first.status.name == "running"


def test_time_waiting_for_a_free_worker_is_not_counted_against_a_step_s_timeout(on_dask):
    def nap() -> None:
        time.sleep(2.0)

    # 1.5 s for a step's own start on a loaded machine; the one that waits for a worker
    # would need 4 s and more if the wait counted
    graph = Graph("g", [Step(name, func=nap, executor="dask", timeout=3.5, cache=False,
                             retries=False) for name in ("a", "b", "c")])
    run = graph.run()  # three steps, two workers: one waits for the first to end
    assert set(run.states().values()) == {"succeeded"}, run.status()
    started = sorted(row["started"] for row in run.status_rows().values())
    assert started[2] - started[1] > 1.0  # when a worker took it, not when it was sent


def test_a_scheduler_changed_during_a_run_keeps_its_running_step_then_closes_the_client(
        workdir):
    def nap() -> int:
        time.sleep(1.5)
        return 2

    graph = Graph("g", [Step("nap", func=nap, executor="dask", cache=False)])
    with tiny_cluster() as first, tiny_cluster() as second:
        try:
            dagnb.configure(dask_scheduler=first.scheduler_address)
            run = start_background(graph)
            assert wait_until(lambda: run.states()["nap"] == "running", timeout=20)
            old = dagnb.config.context().peek("dask")
            dagnb.configure(dask_scheduler=second.scheduler_address)
            assert Graph("h", [Step("one", func=one, executor="dask")]).run().result("one") == 1
            run.wait(20)
            assert run.result("nap") == 2  # (not cancelled by the switch)
            assert wait_until(lambda: old.client.status == "closed", timeout=10)
        finally:
            dask_executor.close()


def test_a_step_no_worker_takes_says_so_once_and_stops_at_the_run_s_timeout(workdir):
    """Its timeout starts when a worker takes it: with none, the run's timeout bounds it,
    and its log says why it waits (it waited silently, forever without a run timeout)."""
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        dagnb.configure(dask_scheduler=empty.scheduler_address)
        try:
            begun = time.monotonic()
            run = Graph("g", [Step("w", func=lambda: 1, executor="dask", timeout=1,
                                   cache=False, retries=False)]).run(timeout=4)
            took = time.monotonic() - begun
        finally:
            dask_executor.close()
    row = run.status_rows()["w"]
    assert row["state"] == "cancelled" and took < 10, (took, run.status())
    assert row["started"] is None and row["attempts"] == 0  # it never ran
    lines = [line for line in run.logs("w")["line"] if "waiting for a free dask worker" in line]
    assert len(lines) == 1, run.logs("w")
    assert lines[0].startswith("dagnb: step 'w' is waiting") and "timeout starts" in lines[0]


def test_a_worker_that_logs_no_start_event_still_has_the_step_s_timeout_enforced(
        workdir, monkeypatch):
    """A worker with an older dagnb (the task is pickled by reference) logs no event as
    it starts the task: the scheduler, asked, says a worker runs it, and the timeout
    starts then (it never did: the step ran with no timeout)."""
    monkeypatch.setattr(distributed.Worker, "log_event", lambda *args, **kwargs: None)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as local:
        dagnb.configure(dask_scheduler=local.scheduler_address)
        try:
            begun = time.monotonic()
            # (the timeout lands some 4 s in, the scheduler asked once a second until a
            # worker's heartbeat says it runs the step: 5.2 s on CI's loaded machine)
            run = Graph("g", [Step("nap", func=lambda: time.sleep(8), executor="dask",
                                   timeout=1, cache=False, retries=False)]).run(timeout=30)
            took = time.monotonic() - begun
        finally:
            dask_executor.close()
    assert run.states() == {"nap": "failed"}, run.status()
    assert "timeout" in run.status_rows()["nap"]["error"]
    assert took < 7, took  # (not the nap's 8 s: the timeout cut it short)


def test_a_memory_call_on_a_worker_keeps_the_run_s_secrets_out_of_its_cache(on_dask,
                                                                           monkeypatch):
    """A dagnb.Memory function called in a dask step that declares a secret, or by a
    thread the step left running, wrote the secret in clear into its cache: the step's
    process on the worker knew no secret of the run (this process remembers them, the
    worker's did not). It knows its step's now, and the registry's the workers inherited
    (no step declares it), as this process knows the run's."""
    secret = "sk-live-4f9a8b7c6d5e"
    monkeypatch.setenv("DASK_TEST_TOKEN", secret)
    dagnb.configure(container_credentials={"username": "u", "password_env": "DASK_OTHER_TOKEN"})
    memo = on_dask / "memo"

    def use() -> int:
        import threading

        memory = dagnb.Memory(memo)

        @memory.cache
        def session(url, token):
            return {"url": url, "auth": "Bearer " + token}

        @memory.cache
        def length(url, token):
            return len(url) + len(token)

        token = os.environ["DASK_TEST_TOKEN"]

        def later() -> None:  # (outside the step's context: a thread does not inherit it)
            session("http://later", token)
            length("http://later", token)

        thread = threading.Thread(target=later)
        thread.start()
        length("http://registry", os.environ["DASK_OTHER_TOKEN"])
        thread.join()  # (one left running is killed as the step returns)
        return len(session("http://now", token)["auth"]) + length("http://now", token)

    step = Step("use", func=use, executor="dask", secrets=["DASK_TEST_TOKEN"], cache=False,
                timeout=60)
    run = Graph("g", [step]).run()
    assert run.ok, run.status()
    assert run.result("use") == len("Bearer ") + len(secret) + len("http://now") + len(secret)
    held = [str(p) for p in memo.rglob("*") if p.is_file()
            and any(value in p.read_bytes() for value in (b"sk-live-4f9a", b"inherited-secret"))]
    assert held == []
    assert list(memo.rglob("*")), "the calls without the secret in their result are cached"
    # each call holding it warned, naming it: the step's as on the local executor, the
    # thread's as a call outside a step does
    lines = run.logs("use").line.tolist()
    warned = [line for line in lines if "holds the value of secret 'DASK_TEST_TOKEN'" in line]
    assert len(warned) == 2, lines
    assert sum("stays known until the process ends" in line for line in warned) == 1, lines


# A script's cached method, of a class of its own (__main__: cloudpickle sends it by
# value), called here, then on the workers of the cluster at argv[2], twice each.
CACHED_METHOD = """
import os, sys
import dagnb
from distributed import Client

CALLS = sys.argv[1] + "/calls"
memory = dagnb.Memory(sys.argv[1] + "/memo")

class Model:
    def __init__(self, w):
        self.w = w

    def predict(self, x):
        with open(CALLS, "a") as handle:
            handle.write(f"{x}\\n")
        return self.w * x

if __name__ == "__main__":
    predict = memory.cache(Model(2.0).predict)
    here = [predict(x) for x in range(2)]
    with Client(sys.argv[2]) as client:
        for _ in range(2):  # (the worker keeps the class: a method sent again reads it)
            there = client.gather(client.map(predict, range(3), pure=False))
    print(here, there)
"""


def test_a_cached_method_of_a_script_s_class_hits_on_dask_workers_what_it_stored_here(
        cluster, tmp_path):
    """The workers hashed the method's class without its source (sent by value, it has
    none there), and the globals its class read apart from the method's once it came
    again: they ran the calls this process had stored, and again the ones they had."""
    (tmp_path / "script.py").write_text(CACHED_METHOD)
    done = subprocess.run(
        [sys.executable, "script.py", str(tmp_path), cluster.scheduler_address],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[0] == "[0.0, 2.0] [0.0, 2.0, 4.0]"
    assert sorted((tmp_path / "calls").read_text().split()) == ["0", "1", "2"]



def test_a_variable_the_key_counts_is_the_one_the_step_reads_on_the_worker(
        cluster, on_dask, monkeypatch):
    # the workers started before it was set here: they would read their own (none)
    def region() -> str:
        return os.environ.get("DASK_KEYED_REGION", "unset")

    graph = Graph("g", [Step("r", func=region, executor="dask")])
    monkeypatch.setenv("DASK_KEYED_REGION", "eu")
    first = graph.run()
    assert (first.states(), first.result("r")) == ({"r": "succeeded"}, "eu")
    monkeypatch.setenv("DASK_KEYED_REGION", "ap")
    second = graph.run()
    assert (second.states(), second.result("r")) == ({"r": "succeeded"}, "ap")
    assert graph.run().states() == {"r": "cached"}
    monkeypatch.delenv("DASK_KEYED_REGION")
    with distributed.Client(cluster) as client:  # (the workers' own: unset for the step)
        client.run(os.environ.__setitem__, "DASK_KEYED_REGION", "worker-own")
        try:
            third = graph.run()
        finally:
            client.run(os.environ.pop, "DASK_KEYED_REGION", None)
    assert (third.states(), third.result("r")) == ({"r": "succeeded"}, "unset")
