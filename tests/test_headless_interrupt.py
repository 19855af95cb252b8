"""`dagnb run NOTEBOOK` stopped by Ctrl-C or SIGTERM while a step runs ends as a YAML run
does: exit 128 + the signal, the status table, one line on stderr (no traceback), and
`-o` written with the cells that ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat as nbf
import pytest

pytestmark = pytest.mark.slow


def _notebook(folder: Path) -> Path:
    """A quick step, then one that marks that it started (its pid) and sleeps, then one
    that must not run."""
    cells = ["%load_ext dagnb",
             "%%dagger quick\necho quick done",
             f"%%dagger slow --needs quick\necho $$ > {folder / 'started'}\nsleep 60",
             f"%%dagger after --needs slow\ntouch {folder / 'after_ran'}"]
    path = folder / "nb.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell(c) for c in cells]), path)
    return path


def _started_step(folder: Path, child: subprocess.Popen[str]) -> int:
    """The pid of the slow step's shell, once it has started."""
    marker = folder / "started"
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text().strip()):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the slow step did not start"
        time.sleep(0.1)
    return int(marker.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("number", "group"), [(signal.SIGINT, False),
                                               (signal.SIGTERM, False),
                                               (signal.SIGINT, True)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-to-the-group"])
def test_a_signal_mid_step_stops_the_notebook_run_cleanly(tmp_path: Path, number: int,
                                                         group: bool) -> None:
    """It crashed: nbclient's own handler shut the kernel down mid-cell, and dagnb died in
    a 50-line traceback (DeadKernelError, then an AssertionError), exit 1, no table and no
    `-o` file."""
    _notebook(tmp_path)
    env = {**os.environ, "DAGNB_CONFIG": "none"}
    child = subprocess.Popen(
        [sys.executable, "-m", "dagnb.cli", "run", "nb.ipynb", "-o", "out.ipynb",
         "--executor", "local"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=group)
    try:
        step = _started_step(tmp_path, child)
        if group:  # (as a terminal's Ctrl-C: the whole foreground group)
            os.killpg(child.pid, number)
        else:
            child.send_signal(number)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + number, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "dagnb: interrupted; running steps were stopped"
    assert len(err.strip().splitlines()) <= 2, err  # (at most one line from the kernel)
    table = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.split()[:1] in (["quick"], ["slow"], ["after"])}
    assert table == {"quick": "succeeded", "slow": "cancelled", "after": "not"}, out
    executed = nbf.read(tmp_path / "out.ipynb", as_version=4)
    shown = ["".join(o.get("text", "") for o in cell.outputs) for cell in executed.cells]
    assert "quick done" in shown[1]
    assert executed.cells[3].outputs == [] and not (tmp_path / "after_ran").exists()
    _wait_gone(step)


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while not _gone(pid):
        assert time.monotonic() < deadline, "the step's shell still runs"
        time.sleep(0.1)


def test_ctrl_c_cancels_a_background_run_rather_than_wait_for_it(tmp_path: Path) -> None:
    """The summary waited for the --background run to end (a minute here) before the
    table showed, the step `succeeded`."""
    cells = ["%load_ext dagnb",
             f"%%dagger bg --background\necho $$ > {tmp_path / 'started'}\nsleep 60",
             "import time\ntime.sleep(60)"]
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell(c) for c in cells]),
              tmp_path / "nb.ipynb")
    child = subprocess.Popen(
        [sys.executable, "-m", "dagnb.cli", "run", "nb.ipynb", "--executor", "local"],
        cwd=tmp_path, env={**os.environ, "DAGNB_CONFIG": "none"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        step = _started_step(tmp_path, child)
        time.sleep(0.5)  # (the next cell's sleep under way: the interrupt stops that cell)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGINT, err
    assert err.strip().splitlines()[-1] == "dagnb: interrupted; running steps were stopped"
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("bg ")] == [
        ["bg", "cancelled"]], out
    _wait_gone(step)
