"""The DAG view: SVG through Graphviz's dot when installed, a text tree otherwise."""

from __future__ import annotations

import shutil

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.views.picture import DagView, dot_source, text_tree


@pytest.fixture
def graph(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dagnb.cache.set_default_location(tmp_path / ".dagnb_cache")
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
    assert view._repr_html_() is None


def test_text_fallback_without_graphviz(graph, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    view = DagView(graph)
    assert view._repr_svg_() is None
    assert view._repr_html_().startswith("<pre class='dagnb-tree'>graph &#x27;flow&#x27;")


def test_broken_dot_falls_back(graph, monkeypatch):
    monkeypatch.setattr("dagnb.views.picture._DOT_TIMEOUT", 0.000001)
    assert DagView(graph).svg is None or "<svg" in DagView(graph).svg
