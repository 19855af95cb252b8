"""A run's checks look at its selected steps through what the graph keeps of them
(:mod:`dagnb.runtime.selection`) until a step changes: each check still refuses a
step that changed since the last run, and what the environment holds (a secret's
value) is read again on every run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dagnb import Graph, Step
from dagnb.errors import ExecutorUnavailable, InvalidStepError, SecretError
from dagnb.runtime import selection


def _run(graph: Graph, folder: Path, *targets: str) -> Any:
    return graph.run(list(targets) or None, executor="local", cache=False,
                     cache_directory=folder)


def test_a_graph_keeps_several_derived_values_and_a_copy_keeps_its_own() -> None:
    graph = Graph("g", [Step("a", func=lambda: 1)])
    made: list[str] = []

    def make(key: str) -> Any:
        return lambda: made.append(key) or key

    for _ in range(3):  # two keys asked in turn: each made once
        assert graph.derived("x", make("x")) == "x"
        assert graph.derived("y", make("y")) == "y"
    assert made == ["x", "y"]
    other = copy.copy(graph)
    other.add(Step("b", func=lambda: 2))
    assert other.derived("x", make("x")) == "x"
    assert made == ["x", "y", "x"]  # the copy changed: made again for it
    assert graph.derived("x", make("x")) == "x"
    assert made == ["x", "y", "x"]  # the original did not


@pytest.mark.parametrize(("changed", "error", "words"), [
    (Step("a", func=lambda: 1, secrets=["S78_SECRET"], params={"p": "s78-secret-value"}),
     InvalidStepError, "holds the value of secret 'S78_SECRET'"),
    (Step("a", run="echo hi", services=["db"]), ExecutorUnavailable, "binds services"),
    (Step("a", run="echo hi", mounts={"missing-78.txt": "/data/m.txt"}), InvalidStepError,
     "mounts 'missing-78.txt', which does not exist"),
    (Step("a", func=lambda: 1, retries={"attempts": 3}), InvalidStepError,
     "retry setting 'attempts' is not known"),
    (Step("a", func=lambda: 1, secrets=["S78_UNSET"]), SecretError,
     "needs secret 'S78_UNSET'"),
    (Step("a", func=lambda: 1, executor="dagger"), ExecutorUnavailable,
     "executor 'dagger' is needed for step 'a'"),
])
def test_each_check_sees_a_step_that_changed_since_the_last_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: Step,
        error: type[Exception], words: str) -> None:
    monkeypatch.setenv("S78_SECRET", "s78-secret-value")
    monkeypatch.delenv("S78_UNSET", raising=False)
    for name in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.delenv(name, raising=False)  # (no engine to be found)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    graph = Graph("g", [Step("a", func=lambda: 1), Step("db", run="true")])
    for _ in range(2):  # the selection's facts kept by the graph
        assert _run(graph, tmp_path).ok
    graph.replace(changed)
    with pytest.raises(error, match=words):
        _run(graph, tmp_path)


def test_secret_values_are_read_on_every_run_the_other_steps_secrets_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        ) -> None:
    """Step ``show`` prints its own secret and the secret of step ``other``, which the
    run does not select: both are masked, whatever they are set to at each run."""
    import os

    def show() -> None:
        print(os.environ["S78_OWN"], os.environ["S78_OTHER"])

    graph = Graph("g", [Step("show", func=show, secrets=["S78_OWN"]),
                        Step("other", func=lambda: 1, secrets=["S78_OTHER"])])
    for own, other in (("own-value-one", "other-value-one"),
                       ("own-value-two", "other-value-two")):
        monkeypatch.setenv("S78_OWN", own)
        monkeypatch.setenv("S78_OTHER", other)
        run = _run(graph, tmp_path, "show")
        assert run.states() == {"show": "succeeded"}
        lines = " ".join(run.logs("show")["line"])
        assert own not in lines and other not in lines, lines
        assert lines.count("***") >= 2, lines


def test_a_run_looks_over_its_steps_once_until_a_step_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, ...]] = []
    original = selection.Selection.__init__

    def counted(self: selection.Selection, graph: Graph, order: Any) -> None:
        made.append(tuple(order))
        original(self, graph, order)

    monkeypatch.setattr(selection.Selection, "__init__", counted)
    graph = Graph("g", [Step("a", func=lambda: 1), Step("b", func=lambda a: a + 1, needs=["a"])])
    for _ in range(3):
        assert _run(graph, tmp_path).result("b") == 2
        assert _run(graph, tmp_path, "a").states() == {"a": "succeeded"}
    assert made == [("a", "b"), ("a",)]  # one per selection
    graph.replace(Step("b", func=lambda a: a + 10, needs=["a"]))
    assert _run(graph, tmp_path).result("b") == 11
    assert made == [("a", "b"), ("a",), ("a", "b")]


def test_states_list_the_runs_steps_first_in_its_order_then_any_other() -> None:
    from dagnb.runtime.events import EventLog

    log = EventLog()
    log.emit("state", "extra", state="queued")
    log.emit("state", "b", state="succeeded")
    log.emit("state", "a", state="running")
    states = log.states(["a", "b", "c"])
    assert list(states.items()) == [("a", "running"), ("b", "succeeded"), ("c", "pending"),
                                    ("extra", "queued")]
    assert list(log.states().items()) == [("extra", "queued"), ("b", "succeeded"),
                                          ("a", "running")]
