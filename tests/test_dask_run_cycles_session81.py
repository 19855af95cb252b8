"""executor="dask" on a real LocalCluster: a run is freed as it is let go of, whatever
its dask steps did (see test_run_cycles_session80): a step that raised, and one whose
worker was killed under it (the executor's loss, raised from a local of its frame, then
retried). Both held the run until a full pass of the collector while tenacity kept its
last turn's state (undo ``_untied`` in dagnb.retry.policy to see them fail)."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

import pytest
import test_dask_executor
from test_run_cycles_session80 import Result, alive_after, boom, result

from dagnb import Graph, Step
from dagnb.testing import wait_until

distributed = pytest.importorskip("distributed")

cluster = test_dask_executor.cluster  # (the fixtures that module starts its cluster with)
on_dask = test_dask_executor.on_dask
RUNS = 3


def killed_under(starts: Path):
    """A step that notes its worker's pid, then waits to be killed with it (the attempt
    after returns at once)."""
    def wait_for_the_kill() -> None:
        import time

        if starts.exists():  # (the attempt after the kill: dask's loss is retried)
            return
        with open(starts, "a") as handle:
            handle.write(f"{os.getppid()}\n")
        time.sleep(60)
    return wait_for_the_kill


def killer_of(starts: Path):
    """What kills the worker of the step :func:`killed_under` made, once it started."""
    def kill_its_worker() -> None:
        assert wait_until(lambda: starts.exists() and starts.read_text().strip(), timeout=30)
        os.kill(int(starts.read_text().split()[0]), 9)
    return kill_its_worker


def run_of(graph: Graph, during=None):
    """The run of ``graph``, with ``during`` called while its steps run."""
    holder: dict[str, object] = {}
    thread = threading.Thread(target=lambda: holder.update(run=graph.run(executor="local")))
    thread.start()
    if during is not None:
        during()
    thread.join(60)
    run = holder.pop("run")
    assert run.states()["made"] == "succeeded", run.states()
    assert isinstance(run.result("made"), Result)
    return run


def test_a_run_whose_dask_step_raised_is_freed_by_reference_counting(
        on_dask: Path, collector_off: None) -> None:
    graph = Graph("dask-fails", [Step("made", func=result, cache=False),
                                 Step("boom", func=boom, executor="dask", retries=0,
                                      cache=False)])
    runs = []
    for _ in range(RUNS):
        run = run_of(graph)
        assert run.states()["boom"] == "failed", run.states()
        runs.append(weakref.ref(run))
        del run
    alive = alive_after(3.0, runs[:-1])  # (the last is the graph's last_run)
    assert not alive, f"{len(alive)} of {RUNS - 1} runs let go of are still alive"


def test_a_run_whose_dask_worker_died_under_its_step_is_freed_by_reference_counting(
        cluster, on_dask: Path, collector_off: None) -> None:
    runs = []
    for number in range(2):
        starts = on_dask / f"starts-{number}.txt"
        graph = Graph("dask-killed", [
            Step("made", func=result, cache=False),
            Step("victim", func=killed_under(starts), executor="dask", retries=0,
                 cache=False)])

        try:
            run = run_of(graph, killer_of(starts))
        finally:
            with distributed.Client(cluster) as client:
                client.wait_for_workers(2, timeout=30)
        # (a worker's death is the cluster's: retried whatever the step's retries say)
        row = run.status_rows()["victim"]
        assert (row["state"], row["attempts"]) == ("succeeded", 2), run.status()
        runs.append(weakref.ref(run))
        del run, graph
    alive = alive_after(3.0, runs[:1])  # (the second's graph is gone too: both may go)
    assert not alive, "the first run, its worker killed, is still alive"
