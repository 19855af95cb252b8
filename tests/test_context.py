"""Process-wide objects live in the current context: a swapped context starts clean."""

from __future__ import annotations

import threading

import dagnb
from dagnb import Graph, Step
from dagnb.config import Context, context, use_context
from dagnb.executors import get_executor, loop
from dagnb.executors.dagger import connection
from dagnb.notebook.session import get_session
from dagnb.runtime.prepare import start_background
from dagnb.testing import isolated, wait_until


def test_context_makes_each_object_once_and_forgets_on_pop():
    made = []
    fresh = Context()
    assert fresh.get("x", lambda: made.append(1) or "one") == "one"
    assert fresh.get("x", lambda: "two") == "one" and made == [1]
    assert fresh.peek("y") is None and fresh.names() == ["x"]
    assert fresh.pop("x") == "one" and fresh.get("x", lambda: "two") == "two"


def test_use_context_swaps_the_whole_context_and_restores_it():
    outer = context()
    with use_context() as inner:
        assert context() is inner is not outer
    assert context() is outer


def test_auto_choice_is_made_and_said_once_per_context(monkeypatch, capsys):
    monkeypatch.setattr(connection, "pick_auto", lambda: ("local", "no engine here"))
    assert get_executor("auto") is get_executor("auto") is get_executor("local")
    with isolated():
        assert get_executor("auto").name == "local"
    said = capsys.readouterr().err.splitlines()
    assert said == ["dagnb: no Dagger engine found (no dagger CLI on PATH, no "
                    "DAGGER_SESSION_PORT); steps run on this machine"] * 2


def test_running_steps_are_counted_in_the_context_that_started_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gate = tmp_path / "go"
    step = Step("wait", run=f'for i in $(seq 500); do [ -e "{gate}" ] && exit 0; sleep 0.02; done')
    run = start_background(Graph("g", [step]), executor="local", cache=False)
    try:
        assert wait_until(lambda: _running("local") == 1), run.status()
        with isolated():
            assert _running("local") == 0
            gate.touch()
            run.wait(timeout=10)  # the step ends while another context is current
            assert _running("local") == 0
    finally:
        gate.touch()
        run.wait(timeout=10)
    assert run.states() == {"wait": "succeeded"} and _running("local") == 0


def _running(name: str) -> int:
    frame = dagnb.executors.status().set_index("name")
    return int(frame.loc[name, "running"])


def test_a_fresh_context_has_a_fresh_session_bound_to_the_namespace():
    namespace: dict[str, object] = {}
    session = get_session(namespace)
    session.define(Step("a", run="true"))
    assert get_session() is session and session.namespace is namespace
    with isolated():
        other = get_session()
        assert other is not session and other.graph.names == []
    assert get_session() is session and session.graph.names == ["a"]


def test_the_loop_thread_outlives_a_context_swap(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = loop.get_loop()
    with isolated(executor="local"):
        run = Graph("g", [Step("a", run="echo hi")]).run(cache=False)
        assert run.ok and loop.get_loop() is before
    assert Graph("g", [Step("b", run="true")]).run(executor="local", cache=False).ok
    assert loop.get_loop() is before
    assert [t.name for t in threading.enumerate()].count("dagnb-loop") == 1
