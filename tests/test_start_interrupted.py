"""A Ctrl-C that lands as a background run starts (a kernel's interrupt, in the moment
the run's task is handed to the loop) stops the run: its first step may be running
already, and no one else would stop it."""

from __future__ import annotations

import time

import pytest

import dagnb
from dagnb.executors import loop
from dagnb.runtime.prepare import start_background

pytestmark = pytest.mark.usefixtures("workdir")


def test_a_ctrl_c_as_the_run_is_handed_to_the_loop_stops_its_running_step(monkeypatch):
    handed = loop.TaskFuture.start

    def handed_then_interrupted(future):
        handed(future)
        deadline = time.monotonic() + 10  # the loop thread starts the step meanwhile:
        while not _printed(begun) and time.monotonic() < deadline:  # (its first line,
            time.sleep(0.01)  # not a fixed wait: a loaded machine took longer than 0.5 s)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.TaskFuture, "start", handed_then_interrupted)
    begun = []
    graph = dagnb.Graph("g", [dagnb.Step("slow", run="echo started; sleep 30")])
    with pytest.raises(KeyboardInterrupt):
        start_background(graph, before_start=begun.append, cache=False, executor="local")
    monkeypatch.undo()
    run = begun[0]
    run.wait(timeout=10)
    assert run.states() == {"slow": "cancelled"}
    assert run.logs("slow")["line"].tolist() == ["started"]  # (it was running)


def _printed(begun: list) -> bool:
    """Whether the run handed over has printed a line yet."""
    return bool(begun) and any(event.kind == "log" for event in begun[0].events)
