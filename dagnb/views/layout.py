"""A graph drawn as SVG in pure Python, for machines without Graphviz.

A small layered layout in the Sugiyama style, enough for pipelines of a few hundred steps:
each step goes in the column of its longest chain of upstream steps (so every edge points
right), the steps of a column are ordered by the mean position of their neighbours over a
few sweeps (fewer crossings), and edges are curves between box sides. Written here rather
than taken from a package: the well-kept layout libraries either need Graphviz's binaries
(pydot, pygraphviz) or bring far more than this needs; these ~100 lines have no
dependency, and ``dot`` is still used where it is installed.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagnb.model.graph import Graph

__all__ = ["Box", "layout", "layout_svg"]

_CHAR_WIDTH = 7.2  # px per character of the 12 px sans-serif label
_BOX_HEIGHT = 38
_ROW_GAP = 14
_COLUMN_GAP = 48
_MARGIN = 10
_SWEEPS = 4
_NOT_RUN = "#607d8b"


class Box:
    """Where one step is drawn: its column, and its box's left, top, width and height."""

    __slots__ = ("column", "height", "left", "name", "top", "width")

    def __init__(self, name: str, column: int, width: float) -> None:
        self.name, self.column, self.width, self.height = name, column, width, _BOX_HEIGHT
        self.left = self.top = 0.0

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def middle(self) -> float:
        return self.top + self.height / 2


def _columns(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's column: one more than the furthest column among what it needs."""
    column: dict[str, int] = {}
    for name in order:
        column[name] = 1 + max((column[n] for n in needs[name] if n in column), default=-1)
    return column


def _ordered(columns: list[list[str]], needs: Mapping[str, Sequence[str]]) -> None:
    """Order each column by the mean row of its upstream neighbours (barycentres), in place."""
    downstream: dict[str, list[str]] = {n: [] for column in columns for n in column}
    for name, ups in needs.items():
        for up in ups:
            downstream.setdefault(up, []).append(name)
    for sweep in range(_SWEEPS):
        forward = sweep % 2 == 0
        sequence = columns[1:] if forward else columns[-2::-1]
        neighbours = needs if forward else downstream
        row = {n: i for c in columns for i, n in enumerate(c)}
        for column in sequence:
            column.sort(key=lambda n: _mean([row[m] for m in neighbours.get(n, ()) if m in row],
                                            row[n]))
            # (its new rows, for the next column: the whole map made again per column
            # cost a 3,000-step chain 7 s)
            row.update((n, i) for i, n in enumerate(column))


def _mean(values: list[int], default: float) -> float:
    return sum(values) / len(values) if values else default


def layout(graph: Graph) -> dict[str, Box]:
    """A box per step: columns left to right in run order, rows ordered to cross little."""
    names = list(graph.names)
    needs = {name: tuple(graph[name].needs) for name in names}
    try:
        order = graph.order()
    except Exception:  # a cycle or a missing need: draw the steps as they are
        order = names
    column_of = _columns(order, needs)
    columns: list[list[str]] = [[] for _ in range(max(column_of.values(), default=-1) + 1)]
    for name in order:
        columns[column_of[name]].append(name)
    _ordered(columns, needs)
    return _placed(columns, graph)


def _placed(columns: list[list[str]], graph: Graph) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    tallest = max((len(c) for c in columns), default=0) * (_BOX_HEIGHT + _ROW_GAP)
    left = float(_MARGIN)
    for index, column in enumerate(columns):
        width = max(_label_width(graph, n) for n in column)
        top = _MARGIN + (tallest - len(column) * (_BOX_HEIGHT + _ROW_GAP)) / 2
        for row, name in enumerate(column):
            box = boxes[name] = Box(name, index, width)
            box.left, box.top = left, top + row * (_BOX_HEIGHT + _ROW_GAP)
        left += width + _COLUMN_GAP
    return boxes


def _label_width(graph: Graph, name: str) -> float:
    return max(len(name), 10) * _CHAR_WIDTH + 20


def layout_svg(graph: Graph, states: Mapping[str, str], colours: Mapping[str, str]) -> str:
    """The graph as an SVG document: boxes coloured by state, arrows from need to step."""
    boxes = layout(graph)
    width = max((b.right for b in boxes.values()), default=0) + _MARGIN
    height = max((b.top + b.height for b in boxes.values()), default=0) + _MARGIN
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
             'font-family="sans-serif" font-size="12">',
             '<defs><marker id="dagnb-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" '
             'fill="#616161"/></marker></defs>']
    for name, box in boxes.items():
        parts += [_edge(boxes[up], box) for up in graph[name].needs if up in boxes]
    for name, box in boxes.items():
        state = states.get(name, "")
        parts.append(_node(box, state, colours.get(state, _NOT_RUN)))
    parts.append("</svg>")
    return "\n".join(parts)


def _edge(source: Box, target: Box) -> str:
    x1, y1, x2, y2 = source.right, source.middle, target.left, target.middle
    bend = (x2 - x1) / 2
    return (f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
            f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" stroke="#616161" '
            'marker-end="url(#dagnb-arrow)"/>')


def _node(box: Box, state: str, colour: str) -> str:
    name = html.escape(box.name)
    caption = html.escape(state or "not run")
    x = box.left + box.width / 2
    return (f'<g class="node" data-step="{name}" data-state="{caption}">'
            f"<title>{name}: {caption}</title>"
            f'<rect x="{box.left:.1f}" y="{box.top:.1f}" width="{box.width:.1f}" '
            f'height="{box.height}" rx="6" fill="{colour}" stroke="#424242"/>'
            f'<text x="{x:.1f}" y="{box.top + 16:.1f}" text-anchor="middle" fill="white">'
            f"{name}</text>"
            f'<text x="{x:.1f}" y="{box.top + 30:.1f}" text-anchor="middle" fill="white" '
            f'font-size="10">{caption}</text></g>')
