"""``dagnb history --run RUN`` lists the run's steps: how each ended, the cache entry it
used, and why it did not end well (a failed step's error, masked; why one was skipped;
that the run was killed), then the command that shows a failed step's lines. It showed
the run's row again, its counts alone: which step failed, and why, was nowhere to read
once the terminal's output was gone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.runtime import history
from dagnb.testing import wait_until

FAILING = """\
name: failing
steps:
  prep:
    command: echo prep
  boom:
    command: echo about to fail; exit 3
    needs: [prep]
  after:
    command: echo after
    needs: [boom]
"""
TOKEN = "sk-live-Zq81xVb3"
LEAKY = """\
import os
import dagnb


def leak():
    raise ValueError("bad token " + os.environ["TOKEN"] + " and more" * 100)


graph = dagnb.Graph("leaky", [dagnb.Step("a", func=leak, secrets=["TOKEN"])])
graph.run(cache_directory="cache", executor="local")
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(FAILING)
    return tmp_path


def _dagnb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def _steps_table(out: str) -> list[list[str]]:
    """The rows of the steps' table printed under 'the steps of run ...:'."""
    lines = out.split("the steps of run ", 1)[1].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.strip() or line.startswith(("the lines of", "params given")):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def test_a_failed_run_lists_each_step_its_entry_and_why_then_its_logs_command(folder, capsys):
    code, out = _dagnb(capsys, "run", "wf.yml", "--executor", "local", "--cache-dir", "c")
    assert code == 1
    run_id = re.search(r"^run (\S+) \(failing\)", out, re.M).group(1)
    code, out = _dagnb(capsys, "history", "wf.yml", "--cache-dir", "c", "--run", run_id[-6:])
    assert code == 0, out
    rows = _steps_table(out)
    assert rows[0][:2] == ["step", "state"]
    entry = json.loads((folder / "c/.runs/records.jsonl").read_text().splitlines()[-1])
    assert rows[1] == ["prep", "succeeded", entry["entries"]["prep"][:12]]
    assert rows[2] == ["boom", "failed", "exit code 3"]
    assert rows[3] == ["after", "skipped", "upstream step 'boom' failed"]
    hint = f"the lines of 'boom': dagnb logs wf.yml boom --run {run_id} --cache-dir c"
    assert hint in out.splitlines()
    code, out = _dagnb(capsys, *hint.split(": ", 1)[1].split()[1:])  # the command works
    assert code == 0 and "about to fail" in out


def test_a_run_that_ended_well_names_no_logs_command_and_no_blank_why(folder, capsys):
    (folder / "wf.yml").write_text("steps:\n  hello:\n    run: echo hello\n")
    _dagnb(capsys, "run", "wf.yml", "--executor", "local", "--cache-dir", "c")
    code, out = _dagnb(capsys, "run", "wf.yml", "--executor", "local", "--cache-dir", "c")
    run_id = re.search(r"^run (\S+) ", out, re.M).group(1)
    code, out = _dagnb(capsys, "history", "--cache-dir", "c", "--run", run_id)
    assert code == 0
    rows = _steps_table(out)
    assert rows[0] == ["step", "state", "entry"]  # (no step has a why: no column)
    assert rows[1][:2] == ["hello", "cached"] and len(rows) == 2
    assert "dagnb logs" not in out


def test_a_python_step_s_error_is_recorded_masked_and_cut(tmp_path: Path, capsys) -> None:
    (tmp_path / "leaky.py").write_text(LEAKY)
    done = subprocess.run([sys.executable, "leaky.py"], cwd=tmp_path, capture_output=True,
                          text=True, env=os.environ | {"TOKEN": TOKEN}, timeout=120)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "cache/.runs/records.jsonl").read_text()
    assert TOKEN not in log
    error = json.loads(log.splitlines()[-1])["errors"]["a"]
    assert error.startswith("ValueError: bad token *** and more")
    assert len(error) < 400 and error.endswith("see the step's logs)")
    code, out = _dagnb(capsys, "history", "--cache-dir", str(tmp_path / "cache"), "--run",
                       json.loads(log.splitlines()[-1])["run"])
    assert code == 0 and TOKEN not in out
    assert _steps_table(out)[1][:3] == ["a", "failed", error]


def test_a_killed_run_s_steps_say_it_was_killed(folder, capsys):
    (folder / "wf.yml").write_text("name: slow\nsteps:\n  nap:\n    run: sleep 60\n")
    started = folder / "c/.runs" / history.STARTED_NAME
    process = subprocess.Popen(
        [sys.executable, "-m", "dagnb", "run", "wf.yml", "--executor", "local",
         "--cache-dir", "c"], cwd=folder, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: started.is_file() and b'"nap"' in started.read_bytes(),
                          timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    run_id = json.loads(started.read_text().strip().splitlines()[-1])["run"]
    code, out = _dagnb(capsys, "history", "--cache-dir", "c", "--run", run_id)
    assert code == 0, out
    assert _steps_table(out)[1] == ["nap", "killed",
                                    "the run was killed before it ended (its process is gone)"]


@pytest.mark.parametrize("first_cached", [False, True])
def test_a_killed_run_s_steps_that_ended_before_it_say_how(folder, capsys, first_cached):
    """Every step of a killed run read ``killed``, the one that had succeeded (and was
    stored, the next run served it) too: its folder's ``.uses`` says which ended."""
    (folder / "wf.yml").write_text(
        "name: slow\nsteps:\n  first: {run: 'echo one > \"$DAGNB_OUT/1.txt\"'}\n"
        "  nap: {needs: [first], run: 'touch napping; sleep 60'}\n"
        "  last: {needs: [nap], run: 'true'}\n")
    if first_cached:
        assert _dagnb(capsys, "run", "wf.yml", "first", "--executor", "local",
                      "--cache-dir", "c")[0] == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "dagnb", "run", "wf.yml", "--executor", "local",
         "--cache-dir", "c"], cwd=folder, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until((folder / "napping").is_file, timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    started = folder / "c/.runs" / history.STARTED_NAME
    run_id = json.loads(started.read_text().strip().splitlines()[-1])["run"]
    code, out = _dagnb(capsys, "history", "--cache-dir", "c", "--run", run_id)
    assert code == 0, out
    killed = "the run was killed before it ended (its process is gone)"
    assert _steps_table(out)[1:] == [
        ["first", "cached" if first_cached else "succeeded"], ["nap", "killed", killed],
        ["last", "killed", killed]]


@pytest.mark.slow  # (a kernel starts: CI's oldest-Python leg leaves it out)
def test_a_notebook_s_run_lists_its_steps_and_the_logs_command_that_shows_them(
        tmp_path: Path, capsys):
    """dagnb logs used to refuse notebooks, so no command was named for a notebook's run;
    it reads their runs now: the command named shows the failed step's lines."""
    (tmp_path / "nb.py").write_text("# %%\n%load_ext dagnb\n\n# %%\n%%dagger boom\n"
                                    "echo about to fail; exit 4\n")
    done = subprocess.run([sys.executable, "-m", "dagnb", "run", "nb.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    log = (tmp_path / ".dagnb_cache/.runs/records.jsonl").read_text().splitlines()
    run_id = json.loads(log[-1])["run"]
    cache = str(tmp_path / ".dagnb_cache")
    code, out = _dagnb(capsys, "history", "--cache-dir", cache, "--run", run_id)
    assert code == 0
    assert _steps_table(out)[1] == ["boom", "failed", "exit code 4"]
    command = out.splitlines()[-1].split(": ", 1)[1]
    notebook = os.path.relpath(tmp_path / "nb.py")  # (as the command names it)
    assert command == f"dagnb logs {notebook} boom --run {run_id} --cache-dir {cache}"
    code, out = _dagnb(capsys, *command.split()[1:])
    assert (code, out) == (0, "about to fail\n")
