"""What a run keeps of the runs before it: the links between its steps, made once per
graph and selection until a step changes, and the result file a command downstream
of a Python step reads."""

from __future__ import annotations

import json
from pathlib import Path

from dagnb import Graph, Step


def test_a_graph_keeps_what_it_derived_until_a_step_changes() -> None:
    graph = Graph("g", [Step("a", func=lambda: 1)])
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return len(made)

    assert graph.derived("k", make) == 1
    assert graph.derived("k", make) == 1  # kept
    assert graph.derived("other", make) == 2  # another key: made again
    graph.add(Step("b", func=lambda: 2))
    assert graph.derived("other", make) == 3  # a step added
    graph.replace(Step("b", func=lambda: 3))
    assert graph.derived("other", make) == 4  # a step replaced
    graph.remove("b")
    assert graph.derived("other", make) == 5  # a step removed
    assert graph.derived("other", make) == 5


def _ran(run: object) -> list[str]:
    return [event.step for event in run.events  # type: ignore[attr-defined]
            if event.kind == "state" and event.data["state"] == "running"]


def test_runs_again_count_their_own_needs_and_follow_a_step_that_changed(
        tmp_path: Path) -> None:
    """The links a run kept are copied, not counted down in place: each run waits for
    every need again; and a step given another need waits for it from the next run."""
    graph = Graph("g", [Step("a", func=lambda: "a"), Step("b", func=lambda: "b"),
                        Step("c", func=lambda a: a + "c", needs=["a"])])
    for _ in range(3):
        run = graph.run(executor="local", cache=False, cache_directory=tmp_path)
        assert run.states() == dict.fromkeys("abc", "succeeded")
        assert run.result("c") == "ac"
    graph.replace(Step("c", func=lambda b: b + "c", needs=["b"]))
    run = graph.run(executor="local", cache=False, cache_directory=tmp_path)
    assert run.states() == dict.fromkeys("abc", "succeeded")
    assert run.result("c") == "bc"
    assert _ran(run).index("b") < _ran(run).index("c")
    run = graph.run(["a"], executor="local", cache=False, cache_directory=tmp_path)
    assert run.states() == {"a": "succeeded"}  # another selection: its own links


def test_a_command_downstream_of_a_python_step_still_reads_its_result(
        tmp_path: Path) -> None:
    """A run of Python steps alone writes no result file for commands; one with a
    command downstream does, each run."""
    graph = Graph("g", [Step("py", func=lambda: {"n": 7}),
                        Step("cmd", run="cat $DAGNB_IN/py/result.json > $DAGNB_OUT/seen",
                             needs=["py"])])
    for _ in range(2):
        run = graph.run(executor="local", cache=False, cache_directory=tmp_path)
        assert run.states() == {"py": "succeeded", "cmd": "succeeded"}
        assert json.loads((run.outputs("cmd") / "seen").read_text()) == {"n": 7}
