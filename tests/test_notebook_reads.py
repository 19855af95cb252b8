"""How a notebook run orders the cells reading variables other cells' steps publish
(:func:`dagnb.workflows.published.notebook_reads`), and what it says where it cannot."""

from __future__ import annotations

import pytest

from dagnb import Graph, Step
from dagnb.workflows.published import PUBLISHED_AS, notebook_reads


def cells(source: str, steps: dict[str, tuple[str, str]],
          needs: dict[str, tuple[str, ...]] | None = None) -> Graph:
    """A graph of steps whose functions share one namespace, as a notebook's cells do:
    ``steps`` is name -> (the function of ``source`` it runs, the variable it publishes)."""
    scope: dict = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), scope)
    graph = Graph("notebook")
    for name, (func, variable) in steps.items():
        setattr(scope[func], PUBLISHED_AS, (variable,))
        graph.add(Step(name, func=scope[func], needs=(needs or {}).get(name, ())))
    return graph


def reads_of(graph: Graph) -> tuple[dict, dict]:
    found = notebook_reads(graph, lambda variable: True, frozenset(graph.names))
    return found.ordered, found.unordered


LOOP_OF_THREE = """
x = y = z = 1
def a(): return z + 1
def b(): return x + 1
def c(): return y + 1
"""


def test_a_loop_of_three_reads_orders_none_of_its_steps_and_says_so_once_for_each() -> None:
    graph = cells(LOOP_OF_THREE, {"a": ("a", "x"), "b": ("b", "y"), "c": ("c", "z")})
    ordered, unordered = reads_of(graph)
    said = ("step 'a' reads z from 'c', 'c' reads y from 'b', 'b' reads x from 'a': none is "
            "ordered after another, each reads the value the notebook holds; give one "
            "--needs the step it reads from")
    assert ordered == {}
    assert unordered == {"a": (said,), "b": (said,), "c": (said,)}


def test_a_loop_closed_by_a_declared_need_is_the_needs_order_and_says_nothing() -> None:
    """a --needs c: c reads y from b, b reads x from a; the need orders them (a step after
    the reader publishes the variable, read as the notebook holds it, as before)."""
    graph = cells(LOOP_OF_THREE.replace("return z + 1", "return 1"),
                  {"c": ("c", "z"), "b": ("b", "y"), "a": ("a", "x")}, needs={"a": ("c",)})
    ordered, unordered = reads_of(graph)
    assert unordered == {}
    assert len(ordered) == 1 and ordered.keys() <= {"b", "c"}


FIGURE_EIGHT = """
x = y = v = w = 1
def a(): return y
def b(): return x + w
def c(): return y
def d(): return 0
def e(): return v
"""


def test_two_loops_sharing_a_step_are_each_said_and_the_rest_still_ordered() -> None:
    """a <-> b <-> c (b reads a's x and c's w), and e reads d's v: only e is ordered."""
    graph = cells(FIGURE_EIGHT, {"a": ("a", "x"), "b": ("b", "y"), "c": ("c", "w"),
                                 "d": ("d", "v"), "e": ("e", "z")})
    ordered, unordered = reads_of(graph)
    assert ordered == {"e": {"v": "d"}}
    assert set(unordered) == {"a", "b", "c"}
    assert len(unordered["b"]) == 2 and all("neither is ordered" in line
                                            for line in unordered["b"])


@pytest.mark.parametrize("calls", ["f()", "g()"])
def test_a_loop_read_through_helpers_calling_each_other_is_found_without_recursing(
        calls: str) -> None:
    source = f"""
x = y = 1
def f(n=1): return y if n > 3 else g(n + 1)
def g(n=1): return f(n + 1)
def a(): return {calls}
def b(): return x
"""
    graph = cells(source, {"a": ("a", "x"), "b": ("b", "y")})
    ordered, unordered = reads_of(graph)
    assert ordered == {} and set(unordered) == {"a", "b"}
