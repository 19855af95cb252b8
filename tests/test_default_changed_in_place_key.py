"""A helper's default argument that is a list of the module's (``def scale(x,
weights=WEIGHTS)``) counted by its content as first hashed: changed in place
(``helpers.WEIGHTS[0] = 5``), the step calling the helper was served the result of the
old weights. It is hashed again at a step's key, as a closure's value is; a default the
function fills itself (``memo={}``) is state it keeps, and counts as first hashed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dagnb

HELPERS = """\
WEIGHTS = [2]
def scale(x, weights=WEIGHTS):
    return x * weights[0]
def remembered(x, memo={}):
    memo[x] = x
    return x * len(memo)
class Stats:
    def __init__(self):
        self.calls = 0
    def note(self):
        self.calls += 1
def _fill(memo, x):
    memo.setdefault(x, x)
    return memo[x]
def counted(x, stats=Stats()):
    stats.note()  # (bookkeeping through a method: the result does not read it)
    return 2 * x
def looked_up(x, memo={}):
    return _fill(memo, x)  # (filled through another function)
"""


@pytest.fixture
def helpers(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    (workdir / "dflt_inplace_helpers.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(workdir))
    import dflt_inplace_helpers
    yield dflt_inplace_helpers
    del sys.modules["dflt_inplace_helpers"]


def _states(graph: dagnb.Graph) -> dict[str, tuple[str, object]]:
    run = graph.run(executor="local")
    return {name: (state, run.result(name)) for name, state in run.states().items()}


def test_a_default_list_changed_in_place_runs_the_step_again(helpers: object):
    def b() -> int:
        return helpers.scale(10)  # type: ignore[attr-defined]

    graph = dagnb.Graph("g", [dagnb.Step("b", func=b)])
    assert _states(graph) == {"b": ("succeeded", 20)}
    assert _states(graph) == {"b": ("cached", 20)}
    helpers.WEIGHTS[0] = 5  # type: ignore[attr-defined]
    assert _states(graph) == {"b": ("succeeded", 50)}  # (was: cached 20)
    assert _states(graph) == {"b": ("cached", 50)}


def test_a_default_the_function_fills_itself_does_not_run_the_step_again(helpers: object):
    def c() -> int:
        return helpers.remembered(3)  # type: ignore[attr-defined]

    graph = dagnb.Graph("g", [dagnb.Step("c", func=c)])
    assert _states(graph) == {"c": ("succeeded", 3)}
    assert _states(graph) == {"c": ("cached", 3)}


def test_a_default_made_in_the_def_and_changed_through_a_call_is_the_functions_state(
        helpers: object):
    def d() -> int:
        return helpers.counted(21)  # type: ignore[attr-defined]

    def e() -> int:
        return helpers.looked_up(21)  # type: ignore[attr-defined]

    graph = dagnb.Graph("g", [dagnb.Step("d", func=d), dagnb.Step("e", func=e)])
    assert _states(graph) == {"d": ("succeeded", 42), "e": ("succeeded", 21)}
    assert _states(graph) == {"d": ("cached", 42), "e": ("cached", 21)}  # (was: succeeded)
