"""Ctrl-C on a ``graph.run()`` whose Python step holds the loop in one long C call stops
that run only: another run's steps go on. The KeyboardInterrupt names the step still in
its call, and the next run says it waits for it rather than hang silently."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

SCRIPT = """
import pathlib, signal, sys, time
import dagnb
from dagnb.executors import loop
from dagnb.runtime.prepare import start_background

loop.run_sync.__kwdefaults__["grace"] = 0.5  # (Ctrl-C's grace, 3 s, made short)

def fit():
    for _ in range(500):  # (the run's shell step started first: it must be killed too)
        if pathlib.Path("own.pid").exists():
            break
        time.sleep(0.01)
    pathlib.Path("fit-started").touch()
    time.sleep(3)  # one C call: no interrupt lands before it returns
    return 1

background = start_background(
    dagnb.Graph("bg", [dagnb.Step("etl", run="sleep 2.5; echo etl-done")]), cache_mode="off")
signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job ignores it)
try:
    dagnb.Graph("fg", [dagnb.Step("own", run="echo $$ > own.pid; exec sleep 30"),
                       dagnb.Step("fit", func=fit)]).run(cache_mode="off")
except KeyboardInterrupt as interrupt:
    print("interrupt:", interrupt, flush=True)
    stat = pathlib.Path(f"/proc/{pathlib.Path('own.pid').read_text().strip()}/stat")
    print("own step:", "gone" if not stat.exists() or ") Z" in stat.read_text() else "alive")
dagnb.Graph("next", [dagnb.Step("quick", func=lambda: 5)]).run(cache_mode="off")
background.wait()
print("background:", background.states()["etl"], background.logs("etl").line.tolist())
"""


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The script's output, SIGINT sent once ``fit`` is in its call."""
    workdir = tmp_path_factory.mktemp("ctrl_c")
    (workdir / "script.py").write_text(SCRIPT)
    child = subprocess.Popen([sys.executable, "script.py"], cwd=workdir, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (workdir / "fit-started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # (into its sleep: an interrupt before it would stop the step)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    return SimpleNamespace(out=out, err=err, returncode=child.returncode)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_ctrl_c_past_the_grace_leaves_another_runs_step_running(interrupted) -> None:
    """It SIGKILLed every run's steps: the background run's failed with exit code -9."""
    assert interrupted.returncode == 0, interrupted.err
    assert "background: succeeded ['etl-done']" in interrupted.out, interrupted.out


def test_ctrl_c_past_the_grace_kills_the_interrupted_runs_own_steps(interrupted) -> None:
    assert "own step: gone" in interrupted.out, interrupted.out


def test_the_interrupt_names_the_step_still_in_its_call(interrupted) -> None:
    assert ("interrupt: Python step 'fit' did not stop: a long call outside Python (C code) "
            "cannot be interrupted; it holds dagnb's loop until its call returns"
            ) in interrupted.out, interrupted.out


def test_the_next_run_says_once_that_it_waits_for_that_call(interrupted) -> None:
    line = "dagnb: waiting for step 'fit' of an interrupted run, still in its call"
    assert interrupted.err.count(line) == 1, interrupted.err
