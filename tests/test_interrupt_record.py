"""An interrupted run is recorded and reported, even when a Python step holds the loop
thread in one long C call past Ctrl-C's grace (the run's own task can then record
nothing before the process exits)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dagnb
from dagnb.runtime import history
from dagnb.runtime.events import EventLog
from dagnb.runtime.prepare import prepare
from dagnb.views.progress import ProgressPrinter

ONE_LONG_C_CALL = """
import pathlib, time

def fit():
    pathlib.Path("fit-started").touch()
    time.sleep(30)  # one C call: no interrupt lands before it returns
    return 1
"""


def records(workdir: Path) -> list[dict]:
    log = workdir / ".dagnb_cache" / ".runs" / history.RECORDS_NAME
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_ctrl_c_past_the_grace_of_a_python_step_in_a_c_call_records_the_run_cancelled(
        workdir: Path) -> None:
    """The record was written only by the run's task, which the step held: no record,
    and --only-failed read the run before as the last and found nothing to re-run."""
    (workdir / "steps.py").write_text(ONE_LONG_C_CALL)
    (workdir / "w.yml").write_text("name: held\nsteps:\n  fit: {python: 'steps.py:fit'}\n"
                                   "  report: {needs: [fit], run: 'echo done'}\n")
    child = subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", "w.yml",
                              "--executor", "local"], cwd=workdir, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (workdir / "fit-started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    began = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=20)
    assert child.returncode == 128 + signal.SIGINT, err
    assert time.monotonic() - began < 10, "it waited for the step's call to return"
    assert [r["states"] for r in records(workdir)] == [
        {"fit": "cancelled", "report": "cancelled"}]  # one record, not two
    assert "Python step 'fit' did not stop" in err and "were stopped" not in err
    assert "(held): 2 cancelled" in out  # the summary, under the status table


def test_a_run_given_up_on_is_recorded_once_when_its_task_ends_later(workdir: Path) -> None:
    """The waiting thread records the run as it gives up; the task, let go once the
    step's call returns (a script that goes on after the KeyboardInterrupt), adds none."""
    graph = dagnb.Graph("later", [dagnb.Step("a", run="true"), dagnb.Step("b", run="true")])
    run, _ = prepare(graph, executor="local")
    run.events.emit("state", "a", 1, state="succeeded")
    run.abandon(held=False)
    assert run.status_rows()["b"]["state"] == "cancelled" and not run.left_running
    run.finish()  # (as the task ends)
    assert [r["states"] for r in records(workdir)] == [{"a": "succeeded", "b": "cancelled"}]


def test_the_bar_of_an_interrupted_run_counts_no_cancelled_step_as_done() -> None:
    """The bar read 3/3, full, after Ctrl-C: cancelled steps counted as done."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, events = Terminal(), EventLog()
    printer = ProgressPrinter(screen, min_interval=0)
    printer.on_event(events.emit("run", None, state="started", steps=3))
    printer.on_event(events.emit("state", "a", 1, state="succeeded"))
    for name in ("slow", "after"):
        printer.on_event(events.emit("state", name, 1, state="cancelled"))
    printer.finish()
    assert screen.getvalue().split("\r")[-1].startswith("[" + "#" * 8 + "." * 16 + "] 1/3")


def _sleeps_on_a_worker() -> None:
    """(a stand-in: abandon() never calls it)"""


def _sleeps_in_c() -> None:
    """(a stand-in: abandon() never calls it)"""


def test_only_the_step_in_the_call_holding_the_loop_is_named_left_in_c_code(
        workdir: Path, monkeypatch) -> None:
    """After Ctrl-C every running Python step was named stuck "in C code", a dask step
    merely running on a worker too: only the one whose call holds the loop thread is."""
    from dagnb.executors import loop
    from dagnb.runtime.run import CANCELLED, LEFT_IN_A_CALL

    graph = dagnb.Graph("held", [dagnb.Step("remote", func=_sleeps_on_a_worker),
                                 dagnb.Step("fit", func=_sleeps_in_c)])
    run, _ = prepare(graph, executor="local")
    for name in ("remote", "fit"):
        run.events.emit("state", name, 1, state="running")
    monkeypatch.setattr(loop, "held_function", lambda: _sleeps_in_c)
    run.abandon(held=True)
    rows = run.status_rows()
    assert run.left_running == ["fit"]
    assert (rows["fit"]["error"], rows["remote"]["error"]) == (LEFT_IN_A_CALL, CANCELLED)


def _asks_what_holds_the_loop() -> bool:
    from dagnb.executors import loop

    return loop.held_function() is _asks_what_holds_the_loop


def test_a_python_steps_call_on_the_loop_thread_is_known_by_its_function(workdir: Path):
    graph = dagnb.Graph("ask", [dagnb.Step("ask", func=_asks_what_holds_the_loop)])
    run = graph.run(executor="local", cache=False)
    assert run.result("ask") is True
    from dagnb.executors import loop

    assert loop.held_function() is None  # (once the call has left)
