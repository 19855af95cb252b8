"""The DAG view: SVG through Graphviz's dot when installed, a text tree otherwise."""

from __future__ import annotations

import itertools
import random
import shutil
from xml.etree import ElementTree

import pytest

from dagnb import Graph, Step
from dagnb.views.layout import layout, layout_svg
from dagnb.views.picture import DagView, dot_source, text_tree


@pytest.fixture
def graph(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    graph = Graph("flow")
    graph.replace(Step("fetch", run="echo f"))
    graph.replace(Step("clean", run="exit 1", needs=("fetch",)))
    graph.replace(Step("report", run="echo r", needs=("clean",)))
    return graph


def test_text_tree_before_and_after_a_run(graph):
    assert text_tree(graph) == ("graph 'flow' (3 steps)\n  fetch\n  clean  <- fetch\n"
                                "  report  <- clean")
    graph.run(executor="local")
    assert text_tree(graph) == ("graph 'flow' (3 steps)\n  fetch [succeeded]\n"
                                "  clean [failed]  <- fetch\n  report [skipped]  <- clean")


def test_a_graph_of_one_step_says_one_step():
    assert text_tree(Graph("one", [Step("a", run="true")])) == "graph 'one' (1 step)\n  a"


def test_empty_graph():
    assert repr(DagView(Graph("empty"))) == "graph 'empty': no steps yet"


def test_dot_source_colours_nodes_by_state(graph):
    graph.run(executor="local")
    dot = dot_source(graph)
    assert '"fetch" [label="fetch\\nsucceeded", fillcolor="#2e7d32"' in dot
    assert '"clean" [label="clean\\nfailed", fillcolor="#c62828"' in dot
    assert '"fetch" -> "clean";' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_svg_with_graphviz(graph):
    view = DagView(graph)
    svg = view._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and ">fetch<" in svg


def test_without_graphviz_the_picture_is_dagnbs_own_svg(graph, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    graph.run(executor="local")
    svg = DagView(graph)._repr_svg_()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    ElementTree.fromstring(svg)  # well-formed XML
    assert '<g class="node" data-step="fetch" data-state="succeeded">' in svg
    assert 'data-step="clean" data-state="failed"' in svg and 'fill="#c62828"' in svg
    assert svg.count('class="edge"') == 2


def _fifty_steps() -> Graph:
    rng = random.Random(7)
    graph = Graph("fifty")
    for i in range(50):
        needs = tuple(f"step_{j:02d}" for j in rng.sample(range(i), min(i, rng.randint(0, 3))))
        graph.add(Step(f"step_{i:02d}", run="true", needs=needs))
    return graph


def test_the_layout_of_fifty_steps_is_readable():
    graph = _fifty_steps()
    boxes = layout(graph)
    assert sorted(boxes) == sorted(graph.names)
    for step in graph:  # every arrow points right: upstream columns come first
        assert all(boxes[need].right < boxes[step.name].left for need in step.needs)
    placed = sorted(boxes.values(), key=lambda b: (b.left, b.top))
    for a, b in itertools.pairwise(placed):  # no two boxes overlap
        assert a.left != b.left or a.top + a.height <= b.top
    svg = layout_svg(graph, {}, {})
    root = ElementTree.fromstring(svg)
    width, height = float(root.get("width")), float(root.get("height"))
    assert all(b.right <= width and b.top + b.height <= height for b in boxes.values())
    assert svg.count('class="node"') == 50


def test_barycentre_ordering_uncrosses_a_simple_case():
    graph = Graph("x")
    for name in ("a", "b"):
        graph.add(Step(name, run="true"))
    graph.add(Step("from_b", run="true", needs=("b",)))
    graph.add(Step("from_a", run="true", needs=("a",)))
    boxes = layout(graph)
    assert (boxes["from_a"].top < boxes["from_b"].top) == (boxes["a"].top < boxes["b"].top)


def test_broken_dot_falls_back(graph, monkeypatch):
    monkeypatch.setattr("dagnb.views.picture._DOT_TIMEOUT", 0.000001)
    assert DagView(graph).svg is None or "<svg" in DagView(graph).svg


def test_a_graph_past_what_graphviz_draws_in_time_is_drawn_by_dagnb_at_once(
        graph, monkeypatch):
    called = []
    monkeypatch.setattr("dagnb.views.picture.render_svg", lambda dot: called.append(dot))
    monkeypatch.setattr("dagnb.views.picture.DOT_MAX_STEPS", 2)  # (3 steps: past it)
    svg = DagView(graph)._repr_svg_()
    assert called == [] and svg.startswith("<svg") and 'data-step="report"' in svg
    monkeypatch.setattr("dagnb.views.picture.DOT_MAX_STEPS", 3)  # (3 steps: Graphviz's)
    DagView(graph)._repr_svg_()
    assert len(called) == 1
