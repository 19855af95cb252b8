"""A step's lines reach its log file within a moment while it runs (not when a buffer
fills, nor only as the step ends), without a flush a line; and ``dagnb logs`` of a run
killed before it ended (``kill -9``) shows the lines that reached the file, saying the
run was killed, not nothing, nor "no run by that id had step"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb.cli import main
from dagnb.runtime import history
from dagnb.runtime.logfile import FLUSH_AFTER_S, LogFile
from dagnb.testing import wait_until


def _dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


# -- the file, as the step prints -----------------------------------------------------
def test_a_line_reaches_the_file_soon_though_the_step_prints_no_more(tmp_path: Path) -> None:
    """It stayed in the buffer (8 KB) until the step ended: a run killed meanwhile lost it."""
    log = LogFile(tmp_path / "logs-1.jsonl")
    try:
        log.write_line(time.time(), 1, "stdout", "start")
        assert wait_until(lambda: b'"start"' in log.path.read_bytes(), timeout=10)
    finally:
        log.close()


class _CountingHandle:
    """A log file's handle that counts its flushes."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.flushes = handle, 0

    def write(self, text: str) -> int:
        return self.handle.write(text)

    def flush(self) -> None:
        self.flushes += 1
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def test_a_chatty_step_is_flushed_a_few_times_a_second_not_each_line(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "logs-1.jsonl")
    log.write_line(time.time(), 1, "stdout", "0")
    counting = _CountingHandle(log._handle)
    log._handle = counting  # type: ignore[assignment]
    began = time.monotonic()
    try:
        for number in range(1, 20_001):
            log.write_line(time.time(), 1, "stdout", str(number))
            if number % 2000 == 0:
                time.sleep(0.05)
        took = time.monotonic() - began
        assert wait_until(lambda: log.path.read_bytes().endswith(b'"20000"}\n'), timeout=10)
    finally:
        log.close()
    assert counting.flushes <= took / FLUSH_AFTER_S + 3  # (each at least a pause apart)


# -- dagnb logs of a killed run -------------------------------------------------------
_SLOW = """\
name: slow
steps:
  slowstep:
    run: |
      echo "start"
      sleep 60
"""


def _run_id(cache: Path) -> str:
    (folder,) = [path for path in (cache / ".runs").iterdir() if path.name[:1].isdigit()]
    return folder.name


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_of_a_run_killed_by_sigkill_shows_what_its_step_printed(
        tmp_path: Path) -> None:
    """The file stayed empty for the whole run; then the killed run's lines: none, exit 0,
    or "no run of 'wf.yml' ... by that id had step" (exit 2)."""
    (tmp_path / "wf.yml").write_text(_SLOW)
    cache = tmp_path / ".dagnb_cache"
    killed = subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", "wf.yml",
                               "--executor", "local"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        logged = lambda: b'"start"' in b"".join(  # noqa: E731
            path.read_bytes() for path in cache.glob(".runs/*/slowstep/logs-1.jsonl"))
        assert wait_until(logged, timeout=30)  # (its step goes on: the line is there)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    run_id = _run_id(cache)
    for asked in (["--run", run_id], []):
        shown = subprocess.run([sys.executable, "-m", "dagnb.cli", "logs", "wf.yml",
                                "slowstep", *asked], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)
        assert (shown.returncode, shown.stdout) == (0, "start\n"), shown.stderr
        assert f"run {run_id} was killed before it ended" in shown.stderr


def _killed_run(tmp_path: Path, lines: list[str]) -> str:
    """A run of wf.yml noted as started, whose process is gone with no record (as one
    SIGKILLed), its step ``a`` having written ``lines`` to its log file: its id."""
    graph = dagnb.load(tmp_path / "wf.yml")
    cache = tmp_path / ".dagnb_cache"
    folder = history.RunFolder(cache, "20991231-000000-000-killed",
                               source=graph.workflow_file)
    folder.begin(graph.name, ["a"])
    started = cache / ".runs" / history.STARTED_NAME
    starts = [json.loads(line) for line in started.read_text().splitlines() if line.strip()]
    for start in starts:
        start["pid"] = _dead_pid()
    started.write_text("".join(json.dumps(start) + "\n" for start in starts))
    if lines:
        log = LogFile(cache / ".runs" / folder.run_id / "a" / "logs-1.jsonl")
        for line in lines:
            log.write_line(time.time(), 1, "stdout", line)
        log.close()
    return folder.run_id


@pytest.fixture
def workflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text("name: w\nsteps:\n  a: {run: 'echo hello'}\n")
    return tmp_path


def test_logs_of_a_killed_run_by_its_id(workflow: Path, capsys) -> None:
    killed = _killed_run(workflow, ["one", "two"])
    assert main(["logs", "wf.yml", "a", "--run", killed]) == 0
    said = capsys.readouterr()
    assert said.out == "one\ntwo\n"
    assert f"run {killed} was killed before it ended" in said.err


def test_logs_of_a_killed_run_whose_step_left_no_line_say_so(workflow: Path, capsys) -> None:
    killed = _killed_run(workflow, [])
    assert main(["logs", "wf.yml", "a", "--run", killed]) == 0
    said = capsys.readouterr()
    assert said.out == ""
    assert f"run {killed} was killed before it ended, and step 'a' left no lines" in said.err


def test_the_newest_run_killed_before_the_step_printed_gives_way_to_the_one_before(
        workflow: Path, capsys) -> None:
    """As a re-run killed after its cached steps: they wrote no line there."""
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    killed = _killed_run(workflow, [])
    assert main(["logs", "wf.yml", "a"]) == 0
    said = capsys.readouterr()
    assert said.out == "hello\n"
    assert f"run {killed}, the newest that had step 'a', was killed" in said.err
