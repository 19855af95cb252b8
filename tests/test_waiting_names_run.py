"""A run waiting for another run's step names that run's process and id (it said only
``waiting for another run computing it``: with the other one hung, nothing told what to
kill); and a failed run's footer names its own run in the ``dagnb logs`` command (it
showed the lines of the run that waited for it and then ran the step)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dagnb.testing import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the lock's holder is found in /proc")

_STEP = """name: shared
steps:
  slow:
    run: |
      echo "run by $$"
      touch started
      while [ ! -f release ]; do sleep 0.05; done
      if [ -e fail ]; then rm fail; echo failing >&2; exit 1; fi
"""


def dagnb(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dagnb.cli", *args], cwd=workdir,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run_id(output: str) -> str:
    found = re.search(r"^run (\S+) \(shared\): ", output, re.MULTILINE)
    assert found is not None, output
    return found.group(1)


def _two_runs(workdir: Path) -> tuple[int, str, str]:
    """The pid and output of a run of the step, and the output of one started while the
    first runs it (its first line read at once: said as it starts to wait)."""
    (workdir / "w.yml").write_text(_STEP)
    first = dagnb(workdir, "run", "w.yml", "--executor", "local")
    try:
        assert wait_until((workdir / "started").exists, timeout=30), first.communicate()
        second = dagnb(workdir, "run", "w.yml", "--executor", "local")
        assert second.stdout is not None
        waiting = second.stdout.readline()
    finally:
        (workdir / "release").touch()
    return (first.pid, first.communicate(timeout=60)[0],
            waiting + second.communicate(timeout=60)[0])


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_run_waiting_for_another_names_its_process_and_run(workdir: Path) -> None:
    pid, first, second = _two_runs(workdir)
    waiting = second.splitlines()[0]
    assert waiting.endswith(f"slow waiting for another run computing it (pid {pid}, "
                            f"run {_run_id(first)})"), waiting


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_failed_runs_footer_names_it_not_the_run_that_ran_the_step_after(
        workdir: Path) -> None:
    (workdir / "fail").touch()  # the first run's attempt fails; the second's succeeds
    _, failed, succeeded = _two_runs(workdir)
    assert "slow succeeded" in succeeded, succeeded
    footer = re.search(r"\((dagnb logs [^)]*)\) ──", failed)
    assert footer is not None, failed
    assert f"--run {_run_id(failed)}" in footer.group(1)
    shown = subprocess.run([sys.executable, "-m", "dagnb.cli",
                            *shlex.split(footer.group(1))[1:]],
                           cwd=workdir, text=True, capture_output=True, timeout=60)
    ran_by = re.search(r"run by \d+", failed)
    assert ran_by is not None and ran_by.group(0) in shown.stdout, shown
    assert "failing" in shown.stdout, shown  # the failed attempt's lines, not the other's
