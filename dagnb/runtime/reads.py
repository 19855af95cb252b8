"""Steps that start after others without needing them: a notebook's readers.

A ``--python`` cell reading a variable another cell's step publishes (``total`` reads
``rows``, ``load``'s ``--outputs``) starts after that step in a notebook run, which
publishes it as it ends: ordering only, not a need, so the reader's key sees the
variable (``var:rows``) and not the publisher's output digest. Looking ahead (a plan,
``fail-on-miss``, the notebook's stale marks) has to see that order too: a reader whose
publisher runs cannot know its key before it, and one whose publisher is cached reads
that entry's result, not what the notebook holds now. :class:`PublishedReads` carries
what the notebook knows of both; this module also places the steps in that order.
"""

from __future__ import annotations

import dataclasses
import graphlib
import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dagnb.errors import CycleError

if TYPE_CHECKING:
    from dagnb.model.graph import Graph

__all__ = ["AS_IT_IS", "PublishedReads", "checked_after", "with_after"]

# What PublishedReads.value gives when the notebook's variable needs no other value: it
# holds that entry's result already, or a run publishes nothing under it
AS_IT_IS: Any = object()

# (publisher, variable, key of the publisher's cache entry, a loader of its result) ->
# what the variable holds once the publisher, served from that entry, is published
ValueOf = Callable[[str, str, str, Callable[[], Any]], Any]


@dataclasses.dataclass(frozen=True)
class PublishedReads:
    """What a notebook's steps read of the variables its other steps publish.

    Attributes
    ----------
    variables
        Reader -> {variable: the step publishing it, which the reader starts after}.
    value
        ``value(publisher, variable, entry_key, load)``: the value ``variable`` reads
        once ``publisher``, served from cache entry ``entry_key``, is published;
        ``load()`` gives that entry's result (a large one is read from disk: called
        only when the notebook does not hold it already), :data:`AS_IT_IS` when the
        notebook's value stands.
    unordered
        Step -> why a variable it reads starts it after no step, a line each (a variable
        several steps publish, a loop of reads): what a run or plan of the step says.
    """

    variables: Mapping[str, Mapping[str, str]]
    value: ValueOf
    unordered: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def after(self) -> dict[str, tuple[str, ...]]:
        """Reader -> the steps it starts after."""
        return {name: tuple(dict.fromkeys(read.values()))
                for name, read in self.variables.items()}

    def unordered_in(self, steps: Iterable[str]) -> list[str]:
        """The lines of ``unordered`` for ``steps`` (a run's, a plan's), each once."""
        if not self.unordered:  # (most notebooks)
            return []
        return list(dict.fromkeys(line for name in steps
                                  for line in self.unordered.get(name, ())))


def checked_after(graph: Graph, after: Mapping[str, Iterable[str]] | None
                  ) -> dict[str, tuple[str, ...]]:
    """``after`` as tuples, each name a step of the graph (else StepNotFoundError)."""
    checked = {}
    for name, first in (after or {}).items():
        first = tuple(dict.fromkeys(first))
        if first:
            graph.steps_of((name, *first))  # (an unknown name: "did you mean")
            checked[name] = first
    return checked


def with_after(graph: Graph, order: list[str], after: Mapping[str, tuple[str, ...]]
               ) -> list[str]:
    """``order`` with the steps its steps start after (and what those need), each one
    placed after what it needs and starts after, else in the graph's order."""
    first: dict[str, tuple[str, ...]] = {}  # step -> what it needs and starts after
    stack = list(order)
    while stack:
        name = stack.pop()
        if name not in first:
            first[name] = tuple(dict.fromkeys((*graph[name].needs, *after.get(name, ()))))
            stack.extend(first[name])
    return _sorted_by(first, {name: i for i, name in enumerate(graph.order())})


def _sorted_by(first: Mapping[str, tuple[str, ...]], position: Mapping[str, int]) -> list[str]:
    """Kahn's algorithm over ``first``, the ready step earliest in ``position`` first; a
    cycle (``after`` closing one) is a CycleError naming it, as graphlib finds it."""
    unmet = {name: len(before) for name, before in first.items()}
    dependents: dict[str, list[str]] = {}
    for name, before in first.items():
        for earlier in before:
            dependents.setdefault(earlier, []).append(name)
    ready = [(position[name], name) for name, count in unmet.items() if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        name = heapq.heappop(ready)[1]
        ordered.append(name)
        for child in dependents.get(name, ()):
            unmet[child] -= 1
            if unmet[child] == 0:
                heapq.heappush(ready, (position[child], child))
    if len(ordered) < len(first):
        try:
            graphlib.TopologicalSorter(first).prepare()
        except graphlib.CycleError as exc:
            raise CycleError(list(reversed(exc.args[1]))) from None
    return ordered
