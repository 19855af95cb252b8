"""A run's start line names its process by pid and by when that process started: a pid
used again since by another process (a long-lived machine's, a container's that starts
each job as the same pid) no longer keeps a killed run read as live."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from dagnb import Graph, Step
from dagnb.runtime import history


def _started(workdir: Path) -> Path:
    return workdir / ".dagnb_cache" / ".runs" / history.STARTED_NAME


def _killed_before_its_record(workdir: Path) -> str:
    """A run recorded (``a`` succeeded, ``b`` failed), then one noted as started whose
    record was never written (as if SIGKILLed): its id."""
    Graph("cut", [Step("a", run="true"), Step("b", run="exit 3", needs=["a"])]).run(
        executor="local")
    folder = history.RunFolder(workdir / ".dagnb_cache", "20261205-000000-000-killed",
                               origin=history.graph_origin())
    folder.begin("cut", ["a", "b"])
    return folder.run_id


def _as_if_of(workdir: Path, pid: int, since: int | None) -> None:
    """Make the noted starts that of process ``pid``, started at ``since``."""
    path = _started(workdir)
    starts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for start in starts:
        start.update(pid=pid, since=since)
    path.write_text("".join(json.dumps(start) + "\n" for start in starts))


def test_a_start_line_names_when_its_process_started(workdir: Path) -> None:
    _killed_before_its_record(workdir)
    lines = [json.loads(line) for line in _started(workdir).read_text().splitlines()
             if line.strip()]
    with open(f"/proc/{os.getpid()}/stat", "rb") as file:
        began = int(file.read().rsplit(b")", 1)[-1].split()[19])
    assert {(line["pid"], line["since"]) for line in lines} == {(os.getpid(), began)}


def test_a_run_whose_pid_another_live_process_has_now_is_read_as_killed(
        workdir: Path) -> None:
    cache = workdir / ".dagnb_cache"
    _killed_before_its_record(workdir)
    other = subprocess.Popen(["sleep", "30"])
    try:
        _, began = history._process_state(other.pid)
        assert began is not None
        _as_if_of(workdir, other.pid, began)  # (its own start: live)
        assert history.last_states(cache, "cut") == {"a": "succeeded", "b": "failed"}
        _as_if_of(workdir, other.pid, began - 100)  # (one before it, with that pid)
        assert history.last_states(cache, "cut") == {"a": "killed", "b": "killed"}
        _as_if_of(workdir, other.pid, None)  # (an older version's line: read as before)
        assert history.last_states(cache, "cut") == {"a": "succeeded", "b": "failed"}
    finally:
        other.kill()
        other.wait()


def test_a_run_of_an_earlier_process_with_this_one_s_pid_is_read_as_killed(
        workdir: Path) -> None:
    """This process's own pid is live, but not for a line noted by a process that
    started at another time."""
    cache = workdir / ".dagnb_cache"
    killed = _killed_before_its_record(workdir)
    assert history.last_states(cache, "cut") == {"a": "succeeded", "b": "failed"}  # (ours)
    _as_if_of(workdir, os.getpid(), history._own_start() - 1)
    assert history.last_states(cache, "cut") == {"a": "killed", "b": "killed"}
    history.prune(cache / ".runs")
    records = [json.loads(line) for line in
               (cache / ".runs" / history.RECORDS_NAME).read_text().splitlines()
               if line.strip()]
    (record,) = [r for r in records if r["run"] == killed]
    assert record["states"] == {"a": "killed", "b": "killed"}
    assert not {"pid", "since", "host", "steps", "started"} & record.keys()
