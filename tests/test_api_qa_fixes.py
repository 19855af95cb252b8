"""dagnb as a Python library (QA pass 2 of the API): a step's own result.json, params
handed as copies, run.cancel() of a graph.run() or arun() run, and dagnb.current() from
a thread the step started."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_metrics(name: str = "result.json") -> None:
    (dagnb.current().out_dir / name).write_text(json.dumps({"accuracy": 0.93}))


# -- a step's own result.json -----------------------------------------------------------
@pytest.mark.parametrize("returned", [[0, 1, 1], {0: "a tuple key", 1: ()}])
@pytest.mark.parametrize("name", ["result.json", "result.pkl"])
def test_a_step_returning_a_value_beside_its_own_result_file_is_refused(here, returned, name):
    def train():
        _write_metrics(name)
        return returned

    run = Graph("own", [Step("train", func=train)]).run()
    assert run.states() == {"train": "failed"}
    error = run.status().set_index("step").loc["train", "error"]
    assert f"step 'train' wrote {name}, the name dagnb keeps its returned value under" in error
    assert "metrics.json" in error


def test_a_step_returning_none_keeps_its_own_result_json_as_its_result(here):
    def metrics():
        (dagnb.current().out_dir / "result.json").write_text('{"acc":   0.8}')

    def use(metrics):
        return metrics

    graph = Graph("own", [Step("metrics", func=metrics), Step("use", func=use,
                                                              needs=["metrics"])])
    fresh = graph.run()
    assert fresh.result("use") == fresh.result("metrics") == {"acc": 0.8}
    hit = graph.run()
    assert hit.states() == {"metrics": "cached", "use": "cached"}
    assert hit.result("metrics") == {"acc": 0.8}
    assert (hit.outputs("metrics") / "result.json").read_text() == '{"acc":   0.8}'  # as written


def test_a_step_returning_none_with_its_own_result_json_agrees_with_caching_off(here):
    def metrics():
        _write_metrics()

    run = Graph("own", [Step("metrics", func=metrics)]).run(cache_mode="off")
    assert run.result("metrics") == {"accuracy": 0.93}


# -- params handed as copies ------------------------------------------------------------
def test_a_step_changing_its_params_in_place_changes_neither_the_step_nor_the_next_run(here):
    shared = {"lr": 0.1, "layers": [8]}

    def fit(config):
        config.setdefault("epochs", 10)
        config["lr"] *= 10
        config["layers"].append(4)
        return config

    def evaluate(config):
        return dagnb.current().params["config"]["lr"], config["lr"]

    def meddle(config):
        dagnb.current().params["config"]["lr"] = 99
        return config["lr"]

    graph = Graph("params", [Step("fit", func=fit, params={"config": shared}),
                             Step("meddle", func=meddle, params={"config": shared}),
                             Step("evaluate", func=evaluate, params={"config": shared},
                                  needs=["fit", "meddle"])])
    first = graph.run(max_concurrency=1)
    assert first.result("fit") == {"lr": 1.0, "layers": [8, 4], "epochs": 10}
    assert first.result("evaluate") == (0.1, 0.1)
    assert first.result("meddle") == 0.1
    assert shared == {"lr": 0.1, "layers": [8]}
    assert dict(graph["fit"].params) == {"config": {"lr": 0.1, "layers": [8]}}
    assert set(graph.run().states().values()) == {"cached"}


def test_a_large_param_copy_is_equal_and_apart():
    from dagnb.executors.context import param_copy

    rows = [{"x": i, "tags": ["a", "b"]} for i in range(1000)]
    copied = param_copy(rows)
    assert copied == rows
    assert copied is not rows and copied[0] is not rows[0]
    assert copied[0]["tags"] is not rows[0]["tags"]


# -- run.cancel() of a graph.run() or arun() run ----------------------------------------
BUSY_FOR = 6.0  # seconds a busy step would run on uncancelled


def _busy_graph(started: threading.Event) -> Graph:
    def busy():
        started.set()
        until = time.monotonic() + BUSY_FOR
        while time.monotonic() < until:  # pure Python: stopped between two bytecodes
            pass
        return "ran to its end"

    return Graph("busy", [Step("busy", func=busy)])


def _cancelled_at_once(graph: Graph, started: threading.Event) -> float:
    assert started.wait(10)
    began = time.monotonic()
    graph.last_run.cancel()
    return began


def test_run_cancel_stops_the_python_step_of_a_graph_run_in_a_thread(here):
    started = threading.Event()
    graph = _busy_graph(started)
    worker = threading.Thread(target=graph.run, kwargs={"cache_mode": "off"})
    worker.start()
    began = _cancelled_at_once(graph, started)
    worker.join(BUSY_FOR * 2)
    assert time.monotonic() - began < BUSY_FOR / 2
    assert graph.last_run.states() == {"busy": "cancelled"}


def test_run_cancel_stops_the_python_step_of_an_arun(here):
    started = threading.Event()
    graph = _busy_graph(started)

    async def main() -> float:
        running = asyncio.ensure_future(graph.arun(cache_mode="off"))
        began = await asyncio.to_thread(_cancelled_at_once, graph, started)
        await running
        return began

    began = asyncio.run(main())
    assert time.monotonic() - began < BUSY_FOR / 2
    assert graph.last_run.states() == {"busy": "cancelled"}


# -- dagnb.current() from a thread the step started -------------------------------------
def test_current_in_a_thread_the_step_started_says_how_to_reach_the_step(here):
    def pooled():
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: dagnb.current().out_dir).result()

    run = Graph("pooled", [Step("pooled", func=pooled)]).run()
    error = run.status().set_index("step").loc["pooled", "error"]
    assert "does not reach the threads it starts" in error
    assert "contextvars.copy_context().run" in error
