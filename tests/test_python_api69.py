"""The Python API says what a step's function will not be given: a defaulted parameter
named after a step (no need is inferred from it), and a param it takes no parameter for."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import dagnb

pytestmark = pytest.mark.usefixtures("workdir")

DEFAULTED = ("step 'b': its parameter 'a' has a default, so it does not get step 'a''s "
             "result; add needs=['a'] to pass it, or rename the parameter")


def defaulted_graph() -> dagnb.Graph:
    graph = dagnb.Graph("g")

    @graph.step
    def a() -> int:
        return 5

    @graph.step
    def b(a: int | None = None) -> tuple[str, int | None]:
        return ("got", a)

    return graph


def test_a_defaulted_parameter_named_after_a_step_is_warned_of_at_run_naming_the_line(
) -> None:
    graph = defaulted_graph()
    with pytest.warns(UserWarning) as caught:
        run = graph.run()
    said = [w for w in caught if "has a default" in str(w.message)]
    assert [str(w.message) for w in said] == [DEFAULTED]
    assert Path(said[0].filename).name == Path(__file__).name  # (the user's line)
    assert run.result("b") == ("got", None)  # (the inference rule stays)
    with warnings.catch_warnings():  # (once: the graph did not change since)
        warnings.simplefilter("error")
        graph.run()


def test_plan_warns_of_it_too() -> None:
    with pytest.warns(UserWarning, match="its parameter 'a' has a default"):
        defaulted_graph().plan()


def test_no_warning_when_the_step_is_needed_or_no_step_has_the_name() -> None:
    graph = defaulted_graph()
    graph.replace(graph["b"].replace(needs=("a",)))
    other = dagnb.Graph("h")

    @other.step
    def c(a: int = 1) -> int:
        return a

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert graph.run().result("b") == ("got", 5)
        assert other.run().result("c") == 1


def load(n: int = 1) -> int:
    return n


def test_a_param_the_function_does_not_take_is_warned_of_with_the_close_name() -> None:
    graph = dagnb.Graph("g", [dagnb.Step("load", func=load, params={"nn": 2})])
    with pytest.warns(UserWarning) as caught:
        run = graph.run()
    said = [str(w.message) for w in caught if "'nn'" in str(w.message)]
    assert len(said) == 1
    assert said[0].startswith("step 'load': param 'nn' is not a parameter of load()")
    assert "did you mean 'n'?" in said[0]
    assert run.result("load") == 1


def test_a_function_with_kwargs_takes_any_param_unwarned() -> None:
    def load_any(n: int = 1, **rest: int) -> int:
        return n

    graph = dagnb.Graph("g", [dagnb.Step("load", func=load_any, params={"nn": 2})])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert graph.run().result("load") == 1
