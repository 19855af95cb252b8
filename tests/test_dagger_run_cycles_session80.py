"""A run of steps on the Dagger executor is freed as it is let go of, through the real
dagger-io client against the stub engine: dagger-io raises a failed exec's ExecError
from the transport's error in a frame that holds it, and its retrying (tenacity's)
keeps a cancel in a frame of the cancel's own traceback; both tracebacks held the
executor's frames, the step's task, and so the run and its steps' results, until a full
pass of the collector (see ``dagnb.executors.dagger.executor._untangled``). The executor
also kept the step's own error in a local as it raised it (a Python step that raised,
an engine that dropped the connection): a cycle through its frame."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import pytest
from test_run_cycles_session80 import RUNS, alive_after, boom, result

import dagnb
from dagnb import Step

pytest_plugins = ["dagger_stub.fixtures"]


@pytest.mark.parametrize("command", [
    Step("exec", run="echo oops >&2; exit 3", retries=0),
    Step("exec", run="sleep 3; echo done", timeout=0.3, retries=0),
    Step("exec", func=boom),
], ids=["a failed exec", "an exec past its timeout", "a Python step that raised"])
@pytest.mark.parametrize("cache", [False, True], ids=["cache-off", "cache-on"])
def test_a_dagger_run_is_freed_by_reference_counting(
        stub: Any, tmp_path: Path, collector_off: None, command: Step, cache: bool) -> None:
    graph = dagnb.Graph("cycles", [Step("made", func=result, executor="local"), command])
    runs = []
    for _ in range(RUNS):
        run = graph.run(executor="dagger", cache=cache, cache_directory=tmp_path / "cache")
        assert run.states()["exec"] == "failed", run.states()
        runs.append(weakref.ref(run))
        del run
    alive = alive_after(2.0, runs[:-1])  # (the stub's threads let go of a query's objects)
    assert not alive, f"{len(alive)} of {RUNS - 1} Dagger runs let go of are still alive"


def test_a_dagger_run_whose_engine_dropped_the_connection_is_freed_too(
        stub: Any, tmp_path: Path, collector_off: None) -> None:
    """A dropped connection is a transport error (a TransientError of the step's): its
    traceback, and the errors it came from, are dropped as the step's error is made."""
    graph = dagnb.Graph("cycles", [Step("made", func=result, executor="local"),
                                   Step("exec", run="echo hello")])
    runs = []
    for _ in range(RUNS):
        stub.fail("drop", match="withExec", times=2)  # (the SDK tries a query twice)
        run = graph.run(executor="dagger", cache=False, cache_directory=tmp_path / "cache",
                        enable_retry=False)  # (a transient error is retried otherwise)
        assert run.states()["exec"] == "failed", run.states()
        assert "lost the Dagger engine" in run.status_rows()["exec"]["error"]
        runs.append(weakref.ref(run))
        del run
    alive = alive_after(2.0, runs[:-1])
    assert not alive, f"{len(alive)} of {RUNS - 1} Dagger runs let go of are still alive"
