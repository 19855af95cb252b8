"""The processes an in-process Python step started die when the process running it is
SIGKILLed (a ``dagnb run`` or a script calling ``Graph.run`` killed with ``kill -9``):
they ran on, re-parented to init, as the watcher knew the tokens of shell steps only.
What a finished run's step left running on purpose, and what the user started between
runs, live on: the token is in the environment while a run with Python steps runs, and
held only then."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dagnb.testing import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="processes are found by their token in /proc")

# A script that runs a graph whose Python step starts a child (``subprocess.run``: it
# waits for it) after an earlier run whose step left one running on purpose and one the
# script itself started between the two runs; each writes its pid to a file.
_SCRIPT = """
import os, subprocess, sys
from pathlib import Path
import dagnb

folder = Path(sys.argv[1])

def leaves_a_server():
    server = subprocess.Popen(["sleep", "301"])
    (folder / "left").write_text(str(server.pid))

def waits_for_its_child():
    subprocess.run(["sh", "-c", f'echo $$ > "{folder}/child.tmp"; '
                    f'mv "{folder}/child.tmp" "{folder}/child"; exec sleep 302'])

dagnb.Graph("first", [dagnb.Step("serve", func=leaves_a_server)]).run(
    cache=False, executor="local")
own = subprocess.Popen(["sleep", "303"])  # the user's own, between runs
(folder / "own").write_text(str(own.pid))
assert "DAGNB_STEP_TOKEN" not in os.environ  # (only while a run runs)
dagnb.Graph("second", [dagnb.Step("spawn", func=waits_for_its_child)]).run(
    cache=False, executor="local")
"""


def _gone(pid: int) -> bool:
    """Neither running nor a zombie waiting for this process (init reaps its own)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state == "Z" and int(ppid) != os.getpid()


def _pid_in(file: Path) -> int:
    assert wait_until(file.exists, timeout=30), f"{file.name} never written"
    return int(file.read_text())


def test_a_python_steps_child_dies_when_the_script_running_it_is_killed(
        workdir: Path) -> None:
    script = workdir / "runs.py"
    script.write_text(_SCRIPT)
    with open(workdir / "err", "wb") as err:  # (a file: the sleeps would hold a pipe)
        runner = subprocess.Popen([sys.executable, str(script), str(workdir)],
                                  cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
    pids: dict[str, int] = {}
    try:
        for name in ("left", "own", "child"):
            pids[name] = _pid_in(workdir / name)
    finally:
        runner.kill()  # (SIGKILL: nothing of the script runs)
        runner.wait(timeout=10)
    try:
        assert runner.returncode == -signal.SIGKILL, (workdir / "err").read_text()
        assert wait_until(lambda: _gone(pids["child"]), timeout=5), (
            "the running step's child outlived the process that ran the step")
        # what the finished step left on purpose, and the script's own: not the watcher's
        assert not _gone(pids["left"]) and not _gone(pids["own"])
    finally:
        for pid in pids.values():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
