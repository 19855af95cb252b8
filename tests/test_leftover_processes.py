"""What a local step leaves running as its command ends: a writer killed mid-file fails
the step (its outputs would be passed on, and cached, cut short), a server that wrote
nothing there does not; a daemon that escaped both its group and its token no longer
keeps its step running through the pipes it holds; a step a signal ended says which."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Step

pytestmark = [
    pytest.mark.usefixtures("workdir"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]

# a writer of 300 rows, 10 ms apart, still writing when the step's command ends (and
# after the moments given it to end by itself)
_WRITER = ("python3 -c 'import os, time\n"
           "with open(os.environ[\"DAGNB_OUT\"] + \"/data.csv\", \"w\") as f:\n"
           "    for i in range(300):\n"
           "        f.write(f\"row{i}\\n\"); f.flush(); time.sleep(0.01)\n'")
_COUNT = Step("count", run='wc -l < "$DAGNB_IN/export/data.csv"', needs=["export"])


def _run(*steps: Step) -> object:
    return Graph("g", list(steps)).run(executor="local")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("output", ["", " > /dev/null 2>&1"],
                         ids=["holding the pipes", "output redirected"])
def test_a_writer_left_running_fails_its_step_rather_than_pass_on_a_cut_file(
        output: str) -> None:
    export = Step("export", run=f"{_WRITER}{output} &\necho launched\nsleep 0.3\n")
    for _ in range(2):  # (nothing stored: the second run runs it again)
        run = _run(export, _COUNT)
        assert run.states() == {"export": "failed", "count": "skipped"}  # type: ignore[attr-defined]
        error = run.status().set_index("step").loc["export", "error"]  # type: ignore[attr-defined]
        assert "data.csv" in error and "python3" in error and "'wait'" in error, error


@pytest.mark.parametrize("output", ["", " > /dev/null 2>&1"],
                         ids=["holding the pipes", "output redirected"])
def test_a_server_left_running_that_wrote_no_output_is_stored(output: str) -> None:
    serve = Step("serve", run=f'sleep 30{output} &\necho done > "$DAGNB_OUT/result.txt"\n')
    assert _run(serve).states() == {"serve": "succeeded"}  # type: ignore[attr-defined]
    assert _run(serve).states() == {"serve": "cached"}  # type: ignore[attr-defined]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_daemon_that_escaped_holding_the_output_does_not_keep_its_step_running(
        workdir: Path) -> None:
    file = workdir / "pid"
    daemon = Step("daemon", timeout=3,
                  run=f'setsid env -i /bin/sleep 311 & echo $! > "{file}"\necho started\n')
    try:
        began = time.monotonic()
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            run = Graph("g", [daemon]).run(executor="local", cache=False)
        took = time.monotonic() - began
        pid = int(file.read_text())
        assert run.states() == {"daemon": "succeeded"}
        assert took < 2.5, took
        assert run.logs("daemon")["line"].tolist() == ["started"]
        lines = [str(w.message) for w in said if "left its process group" in str(w.message)]
        assert len(lines) == 1 and f"pid {pid}, sleep" in lines[0], lines
        assert "> daemon.log 2>&1 &" in lines[0]
    finally:
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize(("command", "said"), [
    ("kill -9 $$", "killed by signal 9, SIGKILL: out of memory, or killed from outside"),
    ("kill -TERM $$", "stopped by signal 15, SIGTERM"),
])
def test_a_step_a_signal_ended_says_which_signal(command: str, said: str) -> None:
    run = Graph("g", [Step("s", run=f"echo before >&2\n{command}")]).run(
        executor="local", cache=False)
    status = run.status().set_index("step")
    code = -int(said.split("signal ")[1].split(",")[0])
    assert status.loc["s", "exit_code"] == code  # (as the OS gives it: retry_on reads 137)
    assert status.loc["s", "error"] == f"exit code {code} ({said}): before"
    assert run.logs("s")["line"].tolist() == ["before"]  # (the step's own lines alone)


# what a step leaves that ends by itself, or never writes: no writer cut short (QA: the
# first version failed these, taking a descriptor held open, or a line written as a
# process ended on its own, for a file cut short)
_SERVER_STOPPED_BY_THE_STEP = (
    "python3 -c 'import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print(\"bye\", flush=True), sys.exit(0)))\n"
    "print(\"up\", flush=True); time.sleep(30)\n' > \"$DAGNB_OUT/server.log\" 2>&1 &\n"
    "PID=$!; sleep 0.3; kill $PID\n")


@pytest.mark.parametrize("command", [
    'exec > "$DAGNB_OUT/all.log" 2>&1\necho hi\nsleep 30 &\n',
    _SERVER_STOPPED_BY_THE_STEP,
    'exec > >(tee "$DAGNB_OUT/build.log") 2>&1\necho building\n'
    'echo done > "$DAGNB_OUT/result.txt"\n',
], ids=["a descriptor held, never written", "a server the step stopped", "a log through tee"])
def test_what_ends_by_itself_or_never_writes_is_no_writer_cut_short(command: str) -> None:
    for attempt in range(3):  # (each a first run: the races, if any, get three chances)
        step = Step("build", run=command, params={"attempt": attempt})
        run = _run(step)
        assert run.states() == {"build": "succeeded"}, run.status().to_dict()  # type: ignore[attr-defined]
