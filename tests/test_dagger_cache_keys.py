"""A step's result made on the host is never served to a run in a container, and the
other way round: the key of a step the run executes in a container says so.

Through the real dagger-io client against the stub engine, which runs each exec on this
machine: the step prints whether it sees the container's ``/dagnb/out``.
"""

from __future__ import annotations

import pytest

import dagnb
from dagnb import CacheMissError, Step
from dagnb.cache import step_key

pytest_plugins = ["dagger_stub.fixtures"]
pytestmark = pytest.mark.usefixtures("workdir")

WHERE = 'if [ -e /dagnb/out ]; then echo container; else echo host; fi'


def where_graph() -> dagnb.Graph:
    return dagnb.Graph("k", [Step("where", image="python:3.9-slim", run=WHERE)])


def ran(run: dagnb.Run) -> tuple[str, bool, list[str]]:
    row = run.status().iloc[0]
    return row["executor"], bool(row["cached"]), run.logs()["line"].tolist()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_host_result_is_not_served_to_a_container_run(stub, tmp_path):
    graph, cache = where_graph(), tmp_path / "cache"
    assert ran(graph.run(executor="local", cache_directory=cache)) == ("local", False, ["host"])
    assert ran(graph.run(executor="dagger", cache_directory=cache)) == (
        "dagger", False, ["container"])
    assert len(stub.engine.exec_log) == 1
    # each result is served to its own kind of run, and the engine runs nothing more
    assert ran(graph.run(executor="dagger", cache_directory=cache))[1:] == (True, ["container"])
    assert ran(graph.run(executor="local", cache_directory=cache))[1:] == (True, ["host"])
    assert len(stub.engine.exec_log) == 1


def test_plan_explain_and_fail_on_miss_use_the_container_key(stub, tmp_path):
    graph, cache = where_graph(), tmp_path / "cache"
    graph.run(executor="local", cache_directory=cache)
    assert graph.plan(executor="dagger", cache_directory=cache)["cached"].tolist() == [False]
    assert graph.plan(executor="local", cache_directory=cache)["cached"].tolist() == [True]
    assert graph.explain("where", executor="dagger", cache_directory=cache) == [
        "it ran on this machine; this run runs it in a container"]
    with pytest.raises(CacheMissError, match="this run runs it in a container"):
        graph.run(executor="dagger", cache_directory=cache, cache_mode="fail-on-miss")
    assert not stub.engine.exec_log
    dagnb.configure(executor="dagger")  # the setting: what a run without executor= uses
    graph.run(cache_directory=cache)
    assert graph.plan(cache_directory=cache)["cached"].tolist() == [True]


def test_a_container_result_is_not_served_to_a_host_run(stub, tmp_path):
    graph, cache = where_graph(), tmp_path / "cache"
    assert ran(graph.run(executor="dagger", cache_directory=cache))[1:] == (False, ["container"])
    assert graph.explain("where", executor="local", cache_directory=cache) == [
        "it ran in a container; this run runs it on this machine"]
    assert ran(graph.run(executor="local", cache_directory=cache)) == ("local", False, ["host"])


def test_a_run_whose_container_steps_are_cached_needs_no_engine(stub, tmp_path, monkeypatch):
    graph, cache = where_graph(), tmp_path / "cache"
    graph.run(executor="dagger", cache_directory=cache)
    for name in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert ran(graph.run(executor="dagger", cache_directory=cache))[1:] == (True, ["container"])


def test_only_a_container_run_adds_to_the_key(tmp_path):
    step = Step("s", image="alpine", run="true")
    host = step_key(step, upstream_digests={}, base_dir=tmp_path)
    assert step_key(step, upstream_digests={}, base_dir=tmp_path, container=False) == host
    boxed = step_key(step, upstream_digests={}, base_dir=tmp_path, container=True)
    assert boxed.digest != host.digest
    assert set(boxed.components) - set(host.components) == {"runs_in"}


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_an_executors_own_default_image_is_in_the_key_of_an_image_less_step(stub, tmp_path):
    """A step with no image runs in the executor's default image: one made with
    python:3.11-slim, then python:3.13-slim, served the 3.11 result to the 3.13 run."""
    from dagnb.executors.dagger.executor import DEFAULT_IMAGE, DaggerExecutor

    graph = dagnb.Graph("k", [Step("which", run="echo hi")])
    cache = tmp_path / "cache"
    first = graph.run(executor=DaggerExecutor(default_image="python:3.11-slim"),
                      cache_directory=cache)
    assert graph.explain("which", executor=DaggerExecutor(default_image="python:3.13-slim"),
                         cache_directory=cache) == [
        "the executor's default image changed: python:3.11-slim → python:3.13-slim"]
    runs = [first, *(graph.run(executor=DaggerExecutor(default_image="python:3.13-slim"),
                               cache_directory=cache) for _ in range(2))]
    assert [bool(run.status()["cached"].iloc[0]) for run in runs] == [False, False, True]
    # dagnb's own default, named or made by hand, keeps the keys it had
    named = graph.run(executor="dagger", cache_directory=cache)
    made = graph.run(executor=DaggerExecutor(default_image=DEFAULT_IMAGE), cache_directory=cache)
    assert [bool(run.status()["cached"].iloc[0]) for run in (named, made)] == [False, True]
    # a step naming its image is keyed by it alone
    own = dagnb.Graph("k", [Step("which", run="echo hi", image="alpine:3.20")])
    for image in ("python:3.11-slim", "python:3.13-slim"):
        own.run(executor=DaggerExecutor(default_image=image), cache_directory=cache)
    assert len(stub.engine.exec_log) == 4
