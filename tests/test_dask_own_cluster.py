"""dagnb's own LocalCluster (no dask_scheduler set) keeps its workers: one that dask
dropped for good, killed and not back within its lost-worker-timeout, is started again
as the next step is sent, and the step runs instead of waiting in the queue for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

# A fresh process (its own LocalCluster, as a script or notebook gets without a scheduler
# set) runs a step on dask, then SIGKILLs both workers with dask's lost-worker-timeout
# at 0 s, as a restart slower than it (15 s by default, on a loaded machine) is treated:
# the cluster drops both. The next step must still run.
DROPPED = """
import os, signal, sys, time
import dask
import dagnb
from dagnb import Graph, Step
from dagnb.executors import dask as dask_executor

def pid():
    return os.getpid()

if __name__ == "__main__":
    dagnb.configure(cache_directory=sys.argv[1])
    first = Graph("first", [Step("a", func=pid, executor="dask")]).run(cache=False)
    first.raise_for_status()
    cluster = dask_executor._cluster()
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
        for worker in cluster.client.run(os.getpid).values():
            os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while cluster.local.workers and time.monotonic() < deadline:
            time.sleep(0.1)
    print("left", len(cluster.local.workers))
    second = Graph("second", [Step("b", func=pid, executor="dask", timeout=60)]).run(cache=False)
    print("state", second.states()["b"])
    while len(cluster.local.workers) < 2 and time.monotonic() < deadline + 60:
        time.sleep(0.1)
    print("workers", len(cluster.local.workers))
    logged = second.logs()
    for line in logged[logged["step"] == "b"]["line"]:
        print("log", line)
"""


RESTARTED = "log dagnb: dask's LocalCluster had dropped 2 of its 2 workers"


def said_by(script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lines ``script`` printed, run in a fresh process with no dask_scheduler set
    (dagnb starts its own LocalCluster there)."""
    monkeypatch.delenv("DAGNB_DASK_SCHEDULER", raising=False)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.mark.slow  # a LocalCluster starts, loses both workers, starts them again
def test_workers_the_cluster_dropped_for_good_are_started_again_for_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = said_by(DROPPED, tmp_path, monkeypatch)
    assert "left 0" in said, said  # dask dropped both: what the fix is for
    assert "state succeeded" in said, said
    assert "workers 2" in said, said
    assert any(line.startswith(RESTARTED) for line in said), said


# The same, the workers dropped while a step waits in the queue for one: both are
# taken by steps that sleep (no retries, so nothing is sent again), then killed. (A
# worker restarted fast may take the waiting step before dask drops it: the step, begun,
# is then rescheduled with no worker left, and must not wait for ever either.)
WAITING = """
import os, signal, sys, time
import dask
import dagnb
from dagnb import Graph, Step
from dagnb.executors import dask as dask_executor
from dagnb.runtime.prepare import start_background

def sleeps():
    time.sleep(60)

def quick():
    return os.getpid()

if __name__ == "__main__":
    dagnb.configure(cache_directory=sys.argv[1])
    Graph("warm", [Step("w", func=quick, executor="dask")]).run(cache=False).raise_for_status()
    cluster = dask_executor._cluster()
    busy = start_background(Graph("busy", [Step("a", func=sleeps, executor="dask"),
                                           Step("b", func=sleeps, executor="dask")]),
                            cache=False, enable_retry=False, timeout=40)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(busy.states().values()) != {"running"}:
        time.sleep(0.05)
    run = start_background(Graph("waits", [Step("c", func=quick, executor="dask")]),
                           cache=False, enable_retry=False, timeout=40)
    while time.monotonic() < deadline and run.states()["c"] != "queued":
        time.sleep(0.05)
    time.sleep(0.5)  # (sent: in the scheduler's queue, both workers busy)
    print("before", sorted({**busy.states(), **run.states()}.items()), flush=True)
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
        for worker in cluster.client.run(os.getpid).values():
            os.kill(worker, signal.SIGKILL)
        while cluster.local.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        print("left", len(cluster.local.workers), flush=True)
        killed = time.monotonic()
        run.wait()
        busy.wait()
    print("state", run.states()["c"], "in", round(time.monotonic() - killed), "s")
    following = Graph("next", [Step("d", func=quick, executor="dask", timeout=60)])
    print("next", following.run(cache=False, enable_retry=False).states()["d"])
    settled = time.monotonic() + 20  # (its worker list reads 0 for a moment as it scales)
    while len(cluster.local.workers) < 2 and time.monotonic() < settled:
        time.sleep(0.1)
    print("workers", len(cluster.local.workers))
    for each in (busy, run):
        for line in each.logs()["line"]:
            print("log", line)
"""


@pytest.mark.slow
def test_workers_dropped_while_a_step_waits_for_one_are_started_again_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = said_by(WAITING, tmp_path, monkeypatch)
    assert "before [('a', 'running'), ('b', 'running'), ('c', 'queued')]" in said, said
    assert "left 0" in said, said
    # c ran on the workers started again; or (the race above) it ended as lost with its
    # worker, as a step whose worker died does. Either way, not stuck till the run's
    # timeout, and the cluster has its workers back for what comes next.
    ended = next(line for line in said if line.startswith("state "))
    state, seconds = ended.split()[1], int(ended.split()[3])
    assert state in ("succeeded", "failed") and seconds < 60, said
    # and the cluster runs what comes next: a worker started again and lost with c (the
    # race above, seen in CI) leaves it one until a restart 60 s on, not none
    assert "next succeeded" in said, said
    workers = int(next(line for line in said if line.startswith("workers ")).split()[1])
    assert workers >= 1, said
    # (said once, by the step that saw it first)
    assert len([line for line in said if line.startswith(RESTARTED)]) == 1, said


# One worker dropped and started again, then the other one dropped: the next step sent
# starts it again at once (it waited for a minute after the first restart, the cluster
# at one worker meanwhile).
ONE_THEN_THE_OTHER = """
import os, signal, sys, time
import dask
import dagnb
from dagnb import Graph, Step
from dagnb.executors import dask as dask_executor

def pid():
    return os.getpid()

def drop(cluster, pid):
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(cluster.local.workers) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)

def back(cluster):
    deadline = time.monotonic() + 30
    while len(cluster.local.workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(cluster.local.workers)

if __name__ == "__main__":
    dagnb.configure(cache_directory=sys.argv[1])
    step = lambda name: Graph(name, [Step(name, func=pid, executor="dask", timeout=60)])
    step("a").run(cache=False).raise_for_status()
    cluster = dask_executor._cluster()
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
        first, other = cluster.client.run(os.getpid).values()
        drop(cluster, first)
        print("b", step("b").run(cache=False).states()["b"], flush=True)
        print("back", back(cluster), flush=True)
        drop(cluster, other)
        print("left", len(cluster.local.workers), flush=True)
        begun = time.monotonic()
        print("c", step("c").run(cache=False).states()["c"], flush=True)
        print("back", back(cluster), "in", round(time.monotonic() - begun), "s", flush=True)
"""


@pytest.mark.slow
def test_a_second_worker_dropped_soon_after_a_first_is_started_again_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = said_by(ONE_THEN_THE_OTHER, tmp_path, monkeypatch)
    assert said[:4] == ["b succeeded", "back 2", "left 1", "c succeeded"], said
    back, seconds = said[4].split()[1], int(said[4].split()[3])
    assert back == "2" and seconds < 20, said  # (not the minute after b's restart)
