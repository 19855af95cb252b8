"""A drawing of a graph, its nodes coloured by the state of the last run.

:class:`DagView` renders SVG with Graphviz's ``dot`` program when it is installed (called
as a subprocess: no Python dependency), and a text tree otherwise. Notebooks show the
SVG (``_repr_svg_``) or, without ``dot``, the tree in a ``<pre>`` (``_repr_html_``);
``repr()`` is always the text tree.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from dagnb.views.layout import layout_svg
from dagnb.views.live import STATE_COLOURS

if TYPE_CHECKING:
    from dagnb.model.graph import Graph

__all__ = ["DOT_MAX_STEPS", "DagView", "dot_source", "text_tree"]

_DOT_TIMEOUT = 20.0
# Graphviz's time grows faster than the steps: 0.3 s for 2,000, 2.4 s for 5,000, 8 s for
# 10,000, past its timeout at 20,000 (then dagnb's own layout drew it, 20 s late); dagnb's
# takes 0.3 s for 20,000. Above this many steps, it draws at once.
DOT_MAX_STEPS = 2_000


def _states(graph: Graph) -> dict[str, str]:
    run = graph.last_run
    return run.states() if run is not None else {}


def dot_source(graph: Graph, states: dict[str, str] | None = None) -> str:
    """The graph in Graphviz's DOT language, one node per step, edges need -> step."""
    states = _states(graph) if states is None else states
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="sans-serif", '
             'fontcolor=white, color="#424242"];']
    for step in graph:
        state = states.get(step.name, "")
        colour = STATE_COLOURS.get(state, "#607d8b")
        label = step.name + (f"\\n{state}" if state else "")
        lines.append(f'  {_quote(step.name)} [label="{label}", fillcolor="{colour}", '
                     f'tooltip="{step.kind}: {state or "not run"}"];')
    for step in graph:
        lines += [f"  {_quote(need)} -> {_quote(step.name)};" for need in step.needs]
    lines.append("}")
    return "\n".join(lines)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_tree(graph: Graph, states: dict[str, str] | None = None) -> str:
    """Steps in run order, each under the steps it needs, with its last state."""
    states = _states(graph) if states is None else states
    if not len(graph):
        return f"graph {graph.name!r}: no steps yet"
    lines = [f"graph {graph.name!r} ({len(graph)} step{'' if len(graph) == 1 else 's'})"]
    try:
        order = graph.order()
    except Exception:  # a cycle or a missing need: list the steps as they are
        order = graph.names
    for name in order:
        step = graph[name]
        state = f" [{states[name]}]" if name in states else ""
        needs = f"  <- {', '.join(step.needs)}" if step.needs else ""
        lines.append(f"  {name}{state}{needs}")
    return "\n".join(lines)


def render_svg(dot: str) -> str | None:
    """SVG text from ``dot -Tsvg``, or None when ``dot`` is missing or fails."""
    program = shutil.which("dot")
    if program is None:
        return None
    try:
        done = subprocess.run([program, "-Tsvg"], input=dot, capture_output=True, text=True,
                              timeout=_DOT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and "<svg" in done.stdout else None


class DagView:
    """A graph drawing: SVG (by Graphviz when installed, else dagnb's layout), and a text tree.

    Parameters
    ----------
    graph
        The graph to draw.
    states
        Each step's state to colour it by; by default those of ``graph.last_run``.
    """

    def __init__(self, graph: Graph, states: dict[str, str] | None = None) -> None:
        self.graph = graph
        self.states = _states(graph) if states is None else states
        self.dot = dot_source(graph, self.states)
        self.text = text_tree(graph, self.states)
        self._svg: str | bool | None = False  # False: not rendered yet

    @property
    def svg(self) -> str:
        """The SVG drawing: Graphviz's where ``dot`` works (for up to ``DOT_MAX_STEPS``
        steps), else dagnb's own layout."""
        if self._svg is False:
            drawn = render_svg(self.dot) if len(self.graph) <= DOT_MAX_STEPS else None
            self._svg = drawn or layout_svg(self.graph, self.states, STATE_COLOURS)
        return self._svg  # type: ignore[return-value]

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return self.text
