"""executor="dask" on a real LocalCluster (2 worker processes, one thread each): what a
step started dies with its worker; a Ctrl-C of ``dagnb run`` ends with dagnb's words
only; a line a step's output ends without a newline masks a secret's start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_dask_executor

from dagnb import Graph, Step
from dagnb.executors import dask as dask_executor
from dagnb.runtime.prepare import start_background
from dagnb.testing import terminal_signals, wait_until

distributed = pytest.importorskip("distributed")

TOKEN = "sk-live-Abc123XyZ987qwe"
LINUX = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


cluster = test_dask_executor.cluster  # (the fixtures that module starts its cluster with)
on_dask = test_dask_executor.on_dask


def alive(pid: int) -> bool:
    """The process runs (a zombie waiting to be reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@LINUX
def test_the_processes_a_dask_step_started_die_with_its_killed_worker(cluster, on_dask):
    pids = on_dask / "pids.txt"

    def spawn() -> None:
        kept = subprocess.Popen(["sleep", "300"])
        escaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
        pids.write_text(f"{os.getppid()} {kept.pid} {escaped.pid}")  # (the worker first)
        time.sleep(300)

    step = Step("spawn", func=spawn, executor="dask", cache=False, retries=0)
    run = start_background(Graph("g", [step]), executor="local")
    try:
        assert wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 3,
                          timeout=20)
        worker, *started = map(int, pids.read_text().split())
        assert all(alive(pid) for pid in started)
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: not any(alive(pid) for pid in started), timeout=5), started
    finally:
        run.cancel()
        run.wait(10)
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)


@LINUX
@pytest.mark.slow
def test_ctrl_c_of_dagnb_run_with_a_dask_step_running_prints_no_traceback(
        cluster, tmp_path):
    """A local step held in a C call holds the run's loop (it starts once the dask step
    runs on its worker: ``pause`` waits for that, as a second on a loaded machine was not
    always enough to send it): dagnb exits without it, and the dask client closed at exit
    cancels the dask step still running."""
    (tmp_path / "steps.py").write_text(
        "import pathlib, time\n\n"
        "def held():\n    pathlib.Path('held-started').touch()\n    time.sleep(60)\n\n"
        "def remote():\n    pathlib.Path('remote-started').touch()\n"
        "    for _ in range(600):\n        time.sleep(0.1)\n")
    until_remote = "for _ in $(seq 600); do [ -e remote-started ] && break; sleep 0.1; done"
    (tmp_path / "w.yml").write_text(
        "steps:\n  remote: {python: 'steps.py:remote', executor: dask}\n"
        f"  pause: {{run: '{until_remote}'}}\n"
        "  held: {python: 'steps.py:held', needs: [pause]}\n")
    env = {**os.environ, "DAGNB_DASK_SCHEDULER": cluster.scheduler_address}
    child = subprocess.Popen(
        [sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--no-cache"], cwd=tmp_path,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=terminal_signals)
    started = [tmp_path / "held-started", tmp_path / "remote-started"]
    try:
        if not wait_until(lambda: all(path.exists() for path in started), timeout=60):
            child.kill()
            pytest.fail(f"the steps did not start: {child.communicate()}")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130, err
    assert "remote" in out and "cancelled" in out
    assert "Traceback" not in err and "tornado" not in err, err


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_secret_s_start_on_a_line_cut_off_at_the_end_is_masked(cluster, on_dask,
                                                                 monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)

    def streamed() -> int:
        print("Authorization: Bearer " + os.environ["API_TOKEN"][:14], end="", flush=True)
        return 1

    step = Step("streamed", func=streamed, executor="dask", secrets=["API_TOKEN"],
                cache=False)
    run = Graph("g", [step]).run()
    assert run.logs("streamed")["line"].tolist() == ["Authorization: Bearer ***"]
    shown = [event.data["line"] for event in run.events if event.kind == "log"]
    assert shown == ["Authorization: Bearer ***"]
    assert [str(path) for path in on_dask.rglob("*") if path.is_file()
            and TOKEN[:7].encode() in path.read_bytes()] == []
    with distributed.Client(cluster) as client:
        sent = str(client.get_events(dask_executor._LINES))
    assert "Bearer ***" in sent and TOKEN[:7] not in sent
