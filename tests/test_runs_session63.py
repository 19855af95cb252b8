"""Runs as the run history sees them: ``only_failed`` with no run recorded runs every step
and says so (as ``dagnb run --only-failed`` does); a run killed before it ended (SIGKILL,
power lost) is read as killed, its steps run again; a step's exception whose ``str()``
raises is still the one its status row names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.runtime import history
from dagnb.testing import wait_until


def dagnb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _rows(stdout: str) -> dict[str, str]:
    """Step -> state, from ``dagnb run``'s status table."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: row[1] for row in rows[1:] if len(row) > 1 and row[0] != "run"
            and row[1] in ("succeeded", "cached", "failed", "skipped", "cancelled")}


def _dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _runs(workdir: Path) -> Path:
    return workdir / ".dagnb_cache" / ".runs"


def _lines(path: Path) -> list[str]:
    """A log's lines, blank ones (each append starts a new line) left out."""
    return [line for line in path.read_text().splitlines() if line.strip()]


# -- only_failed with no run recorded ---------------------------------------------------
def test_only_failed_with_no_run_recorded_runs_every_step_and_says_why(
        workdir: Path) -> None:
    """graph.run(only_failed=True) with no earlier run recorded ran nothing and reported
    success; dagnb run --only-failed runs every step then: the API does too, saying so."""
    graph = Graph("fresh", [Step("a", func=lambda: 1),
                            Step("b", func=lambda a: a + 1, needs=["a"])])
    with pytest.warns(UserWarning, match=r"only_failed: no run of graph 'fresh'.* is "
                      r"recorded in .*, so every step runs"):
        run = graph.run(only_failed=True, executor="local")
    assert run.states() == {"a": "succeeded", "b": "succeeded"}
    assert run.result("b") == 2


def test_only_failed_with_no_run_recorded_runs_every_step_its_targets_select(
        workdir: Path) -> None:
    graph = Graph("fresh", [Step("a", run="true"), Step("b", run="true", needs=["a"]),
                            Step("c", run="true")])
    with pytest.warns(UserWarning, match="every step the targets or tags select runs"):
        run = graph.run("b", only_failed=True, executor="local")
    assert run.states() == {"a": "succeeded", "b": "succeeded"}


def test_only_failed_after_a_run_says_nothing_of_a_first_run(workdir: Path) -> None:
    """Once a run is recorded, only_failed reads it, without the first run's line."""
    graph = Graph("fresh", [Step("a", run="true"), Step("b", run="exit 3", needs=["a"])])
    assert graph.run(executor="local").failed == ["b"]
    again = Graph("fresh", [Step("a", run="true"), Step("b", run="exit 3", needs=["a"])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert again.run(only_failed=True, executor="local").states() == {
            "a": "cached", "b": "failed"}


def test_dagnb_run_only_failed_with_no_run_recorded_says_every_step_runs(
        tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'echo a'}\n  b: {run: 'echo b', "
                                     "needs: [a]}\n")
    first = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert _rows(first.stdout) == {"a": "succeeded", "b": "succeeded"}
    assert ("--only-failed: no run of wf.yml is recorded in "
            f"{str(tmp_path / '.dagnb_cache')!r}, so every step runs") in first.stderr


# -- a run killed before it ended -------------------------------------------------------
_V1 = "steps:\n  first: {run: 'echo first'}\n  slow: {run: 'echo v1', needs: [first]}\n" \
      "  after: {run: 'echo after', needs: [slow]}\n"
_V2 = _V1.replace("'echo v1'", "'touch started; test -e fixed || sleep 60; echo slow done'")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_run_killed_by_sigkill_is_read_as_killed_and_only_failed_runs_it_again(
        tmp_path: Path) -> None:
    """A SIGKILLed run left no record: --only-failed then read the run before it (all
    succeeded) and said there was nothing to re-run, and dagnb history did not list it."""
    (tmp_path / "wf.yml").write_text(_V1)
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    (tmp_path / "wf.yml").write_text(_V2)
    killed = subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", "wf.yml",
                               "--executor", "local"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (tmp_path / "started").exists(), timeout=60)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    (tmp_path / "fixed").touch()
    again = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _rows(again.stdout) == {"first": "cached", "slow": "succeeded",
                                   "after": "cached"}, again.stdout  # (same output)
    listed = dagnb("history", "wf.yml", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[-2:] == ["killed", "params"]
    assert len(rows) == 3 and "killed (started " in rows[1], listed.stdout
    # (two of its steps killed: first had come from the cache before, its folder's .uses says)
    assert rows[1].split()[-1] == "2"
    assert [row.split()[-1] for row in (rows[0], rows[2])] == ["0", "0"]


def test_a_run_notes_its_start_and_its_record_supersedes_it(workdir: Path) -> None:
    """One short line as the run starts (its process and steps); ended, its record is
    what counts: no killed run is read, in this process or once it has gone."""
    graph = Graph("noted", [Step("a", run="true")])
    run = graph.run(executor="local")
    [line] = _lines(_runs(workdir) / history.STARTED_NAME)
    start = json.loads(line)
    assert (start["run"], start["steps"], start["pid"]) == (run.id, ["a"], os.getpid())
    _as_if_of(workdir, _dead_pid())
    assert history.last_states(workdir / ".dagnb_cache", "noted") == {"a": "succeeded"}
    assert len(history.recorded_runs(workdir / ".dagnb_cache")[0]) == 1


def test_a_read_only_run_notes_no_start(workdir: Path) -> None:
    Graph("ro", [Step("a", run="true")]).run(executor="local", cache_mode="read-only")
    assert not (_runs(workdir) / history.STARTED_NAME).exists()


def _as_if_of(workdir: Path, pid: int, host: str | None = None, days_ago: float = 0) -> None:
    """Make every noted start that of process ``pid`` (of ``host``: this one's), started
    ``days_ago`` earlier than noted."""
    path = _runs(workdir) / history.STARTED_NAME
    starts = [json.loads(line) for line in _lines(path)]
    for start in starts:
        start.update(pid=pid, host=host or start["host"],
                     started=start["started"] - days_ago * 86400)
    path.write_text("".join(json.dumps(start) + "\n" for start in starts))


def _killed_before_its_record(workdir: Path, name: str = "cut") -> str:
    """A run of a failed and an unfinished step, then one started whose record was never
    written (as if SIGKILLed): its id."""
    graph = Graph(name, [Step("a", run="true"), Step("b", run="exit 3", needs=["a"])])
    graph.run(executor="local")
    folder = history.RunFolder(workdir / ".dagnb_cache", "20261204-000000-000-killed",
                               origin=history.graph_origin())
    folder.begin(name, ["a", "b"])
    return folder.run_id


def test_a_started_run_with_no_record_whose_process_is_gone_is_read_as_killed(
        workdir: Path) -> None:
    killed = _killed_before_its_record(workdir)
    cache = workdir / ".dagnb_cache"
    assert history.last_states(cache, "cut") == {"a": "succeeded", "b": "failed"}  # (live)
    _as_if_of(workdir, _dead_pid())
    assert history.last_states(cache, "cut") == {"a": "killed", "b": "killed"}
    runs, total = history.recorded_runs(cache)
    assert (runs[-1]["run"], runs[-1]["killed"], total) == (killed, True, 2)
    assert history.recorded_runs(cache, "cut")[0][-1]["states"] == {
        "a": "killed", "b": "killed"}


def test_a_started_run_of_another_host_is_taken_for_live(workdir: Path) -> None:
    """Its pid means nothing here: no run is taken for killed that may be going on."""
    _killed_before_its_record(workdir)
    _as_if_of(workdir, _dead_pid(), host="elsewhere")
    assert history.last_states(workdir / ".dagnb_cache", "cut") == {
        "a": "succeeded", "b": "failed"}


def test_a_started_run_of_another_host_is_taken_for_killed_after_days(workdir: Path) -> None:
    """A CI job's container, killed at its time limit, never read as killed: its start
    line stayed, and its run was taken for live forever."""
    killed = _killed_before_its_record(workdir)
    _as_if_of(workdir, _dead_pid(), host="elsewhere", days_ago=history.FOREIGN_RUN_DAYS + 0.1)
    runs = history.recorded_runs(workdir / ".dagnb_cache")[0]
    assert [(r["run"], r["states"]) for r in runs if r.get("killed")] == [
        (killed, {"a": "killed", "b": "killed"})]
    history.prune(_runs(workdir))
    assert not any(killed in line for line in _lines(_runs(workdir) / history.STARTED_NAME))


def test_only_failed_in_python_runs_again_the_steps_of_a_killed_run(workdir: Path) -> None:
    _killed_before_its_record(workdir)
    _as_if_of(workdir, _dead_pid())
    again = Graph("cut", [Step("a", run="true"), Step("b", run="true", needs=["a"])])
    assert again.run(only_failed=True, executor="local").states() == {
        "a": "cached", "b": "succeeded"}


def test_a_prune_writes_a_killed_runs_record_and_drops_the_lines_of_ended_runs(
        workdir: Path) -> None:
    killed = _killed_before_its_record(workdir)
    _as_if_of(workdir, _dead_pid())
    live = history.RunFolder(workdir / ".dagnb_cache", "20261204-000001-000-live",
                             origin=history.graph_origin())
    live.begin("cut", ["a"])  # (this process's: live)
    history.prune(_runs(workdir))
    started = _lines(_runs(workdir) / history.STARTED_NAME)
    assert [json.loads(line)["run"] for line in started] == [live.run_id]
    records = _lines(_runs(workdir) / history.RECORDS_NAME)
    assert [json.loads(line)["run"] for line in records][-1] == killed
    assert json.loads(records[-1])["states"] == {"a": "killed", "b": "killed"}
    history.prune(_runs(workdir))  # (recorded once)
    assert (_runs(workdir) / history.RECORDS_NAME).read_text().count(killed) == 1
    assert history.last_states(workdir / ".dagnb_cache", "cut") == {
        "a": "killed", "b": "killed"}


def test_noting_a_start_costs_a_run_little(workdir: Path) -> None:
    """The one line a run appends as it starts (measured: about 12 µs; a 1-step run's
    fixed cost is some 300 µs): well under a millisecond, even on a busy machine."""
    folder = history.RunFolder(workdir / ".dagnb_cache", "20261204-000002-000-cost")
    folder.begin("cost", ["a"])  # (the log made, and kept open, as by a first run)
    took = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(100):
            folder.begin("cost", ["a"])
        took.append((time.perf_counter() - began) / 100)
    assert min(took) < 1e-3


# -- an exception whose str() raises ----------------------------------------------------
class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str broke")


def _raises_bad_str() -> None:
    raise BadStr()


def test_a_steps_exception_whose_str_raises_is_named_in_its_status_row(workdir: Path) -> None:
    """The status said ``RuntimeError: str broke`` (dagnb's own error making the line),
    with no exit code; its log said BadStr, as a traceback shows it."""
    run = Graph("exc", [Step("bad", func=_raises_bad_str),
                        Step("next", run="true", needs=["bad"])]).run(executor="local")
    row = run.status_rows()["bad"]
    assert (row["state"], row["exit_code"]) == ("failed", 1)
    assert row["error"] == "BadStr: <str() failed: RuntimeError>"
    assert run.states()["next"] == "skipped"
    assert list(run.logs("bad").line)[-1].endswith("BadStr: <exception str() failed>")
    assert history.last_states(workdir / ".dagnb_cache", "exc") == {
        "bad": "failed", "next": "skipped"}
    with pytest.raises(Exception, match="'bad' failed"):
        run.raise_for_status()


# -- a run waiting for another run's step keeps what it restored -------------------------
_WAITED = """\
name: waited
steps:
  up:
    run: head -c 30000 /dev/urandom > "$DAGNB_OUT/data.bin"
  mid:
    run: >-
      touch "{started}"; for i in $(seq 600); do [ -e "{release}" ] && break; sleep 0.05;
      done; echo m > "$DAGNB_OUT/m"
  down:
    needs: [up, mid]
    run: wc -c < "$DAGNB_IN/up/data.bin"; cat "$DAGNB_IN/mid/m"
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_prune_while_a_run_waits_for_another_runs_step_keeps_what_it_restored(
        workdir: Path) -> None:
    """Run B restored `up`, then waited for `mid`, which run A computed: B listed no use
    yet, so a prune removed `up` and B's `down` failed on its missing input."""
    started = workdir / "mid-started"
    release = workdir / "mid-release"  # mid runs till the prune is done (a sleep 4 was not)
    (workdir / "wf.yml").write_text(_WAITED.format(started=started, release=release),
                                    encoding="utf-8")
    dagnb = [sys.executable, "-m", "dagnb"]
    subprocess.run([*dagnb, "run", "wf.yml", "--target", "up"], cwd=workdir, check=True,
                   capture_output=True)
    computing = subprocess.Popen([*dagnb, "run", "wf.yml", "--target", "mid"], cwd=workdir,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting = subprocess.Popen([*dagnb, "run", "wf.yml"], cwd=workdir, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)  # (B restored `up` and waits for `mid`)
        pruned = subprocess.run([*dagnb, "cache", "prune", "--max-entries", "0"], cwd=workdir,
                                capture_output=True, text=True, check=False)
        release.touch()
        out, err = waiting.communicate(timeout=60)
    finally:
        computing.wait(timeout=60)
    assert pruned.returncode == 0, pruned.stderr
    assert waiting.returncode == 0, out + err
    assert "down  succeeded" in out
