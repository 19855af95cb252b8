"""``dagnb logs --run RUN`` of a step whose cache entry was stored again under the same key
since (a ``--refresh``, an expired ttl): the lines there now are a later run's, and are
not shown as RUN's; the run's record notes which version of the entry it used."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagnb.runtime.history import RECORDS_NAME, RunFolder

STAMPED = """\
steps:
  s:
    run: echo "printed at $(date +%s%N)"
"""

EXPIRING = """\
steps:
  s:
    ttl: 1s
    run: echo "printed at $(date +%s%N)"
"""


def dagnb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagnb", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _records(cache_dir: Path) -> list[dict]:
    """The run records in ``cache_dir``, oldest first."""
    text = (cache_dir / ".runs" / RECORDS_NAME).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _two_runs_storing_the_step(tmp_path: Path, workflow: str, *second: str) -> list[str]:
    """Run ``workflow`` twice (the second with ``second``'s options), each storing step
    ``s`` under the same key; the ids of the two runs."""
    (tmp_path / "wf.yml").write_text(workflow)
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    if not second:  # (the ttl: the first entry expired before the second run)
        time.sleep(1.2)
    assert dagnb("run", "wf.yml", "--executor", "local", *second, cwd=tmp_path).returncode == 0
    records = _records(tmp_path / ".dagnb_cache")
    assert [r["states"]["s"] for r in records] == ["succeeded", "succeeded"]
    assert records[0]["entries"] == records[1]["entries"]  # (the same key, stored again)
    return [r["run"] for r in records]


def _assert_first_runs_lines_are_said_gone(tmp_path: Path, first: str, second: str) -> None:
    newest = dagnb("logs", "wf.yml", "s", "--run", second, cwd=tmp_path)
    assert newest.returncode == 0, newest.stderr
    assert newest.stdout.startswith("printed at ") and newest.stdout.count("\n") == 1
    old = dagnb("logs", "wf.yml", "s", "--run", first, cwd=tmp_path)
    assert (old.returncode, old.stdout) == (1, ""), old.stdout  # (not the second run's line)
    assert old.stderr.count("\n") == 1, old.stderr
    assert old.stderr.startswith(f"dagnb: step 's' succeeded in run {first}, but its lines "
                                 "are gone: its cache entry was stored again at ")
    assert old.stderr.endswith(f"by run {second} (a --refresh, an expired ttl, or a cleared "
                               f"cache since); dagnb logs wf.yml s --run {second} shows "
                               "those\n"), old.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_logs_of_a_run_whose_entry_a_refresh_stored_again_says_its_lines_are_gone(tmp_path):
    first, second = _two_runs_storing_the_step(tmp_path, STAMPED, "--refresh")
    _assert_first_runs_lines_are_said_gone(tmp_path, first, second)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_logs_of_a_run_whose_entry_expired_and_was_stored_again_says_its_lines_are_gone(
        tmp_path):
    first, second = _two_runs_storing_the_step(tmp_path, EXPIRING)
    _assert_first_runs_lines_are_said_gone(tmp_path, first, second)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_logs_of_a_run_served_the_entry_still_shows_the_lines_of_the_run_that_stored_it(
        tmp_path):
    (tmp_path / "wf.yml").write_text(STAMPED)
    for _ in range(2):  # (the second: served from the cache, the same version)
        assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    first, second = (r["run"] for r in _records(tmp_path / ".dagnb_cache"))
    shown = [dagnb("logs", "wf.yml", "s", "--run", run, cwd=tmp_path) for run in (first, second)]
    assert [done.returncode for done in shown] == [0, 0], shown[1].stderr
    assert shown[0].stdout == shown[1].stdout and shown[0].stdout.startswith("printed at ")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_record_written_before_runs_noted_the_entry_version_reads_as_before(tmp_path):
    first, second = _two_runs_storing_the_step(tmp_path, STAMPED, "--refresh")
    cache = tmp_path / ".dagnb_cache"
    older = [{k: v for k, v in r.items() if k != "entry_created"} for r in _records(cache)]
    log = cache / ".runs" / RECORDS_NAME
    log.write_text("".join(f"{json.dumps(r)}\n" for r in older))
    old = dagnb("logs", "wf.yml", "s", "--run", first, cwd=tmp_path)
    newest = dagnb("logs", "wf.yml", "s", "--run", second, cwd=tmp_path)
    assert old.returncode == 0 and old.stdout == newest.stdout  # (no version to check)


def test_the_record_notes_the_created_time_of_each_entry_used(tmp_path):
    folder = RunFolder(tmp_path, "20261204-000000-000-abcdef")
    folder.note_use("up", "k" * 64, created=1_700_000_000.25)
    folder.note_use("down", "d" * 64, created=1_700_000_001.5)
    folder.note_use("down", "d" * 64)  # (noted again, its version not known: none kept)
    folder.close({"up": "succeeded", "down": "cached"}, "graph")
    (record,) = _records(tmp_path)
    assert record["entry_created"] == {"up": 1_700_000_000.25}
    assert record["entries"] == {"up": "k" * 64, "down": "d" * 64}
