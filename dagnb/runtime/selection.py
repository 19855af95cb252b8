"""What a run's checks look at in its selected steps, gathered in one pass and kept by
the graph until a step changes (:meth:`~dagnb.model.graph.Graph.derived`): a notebook
runs the same steps again and again, and ten passes over a 1,000-step selection (which
mount, retry oddly, take params, declare secrets, name an executor, bind services)
cost each run 0.6 to 1.5 ms, most of its preparation. Steps are frozen, so the facts
hold until the graph's steps change; values read from the environment (a secret's) are
read on every run, never kept here."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from dagnb.model.graph import Graph
from dagnb.model.step import Step
from dagnb.runtime.scheduler import Links, step_links

__all__ = ["Selection", "selection_of"]


class Selection:
    """The selected steps of a graph (``steps``: name -> step, in the run's order) and
    the few of them each check of a run looks at; shared by the runs of the same steps,
    so none of it may be changed."""

    __slots__ = ("_links", "binding", "executors", "graph_secret_steps", "mounting",
                 "odd_retries", "others_secret_names", "secret_steps", "steps", "valued")

    def __init__(self, graph: Graph, order: Sequence[str]) -> None:
        steps = self.steps = graph.steps_of(order)
        chosen = steps.values()
        self.mounting = [step.name for step in chosen if step.mounts]
        # (an int is always a valid retry count: the rest is checked on every run)
        self.odd_retries = [step for step in chosen
                            if step.retries is not None and not isinstance(step.retries, int)]
        self.valued = [step for step in chosen if step.params or step.env]
        self.secret_steps: dict[str, Step] = {step.name: step for step in chosen
                                              if step.secrets}
        self.executors = frozenset(step.executor for step in chosen)
        self.binding = [step.name for step in chosen if step.services]
        self._links: Links | None = None
        self.graph_secret_steps = [step for step in graph if step.secrets]
        self.others_secret_names = sorted({name for step in self.graph_secret_steps
                                           if step.name not in steps
                                           for name in step.secrets})

    def links(self) -> Links:
        """The links between the selected steps (:func:`step_links`, no ``after``)."""
        if self._links is None:
            self._links = step_links(list(self.steps), self.steps, None)
        return self._links

    def executors_named(self, default: Any) -> set[Any]:
        """The executors the selected steps run on, ``default`` for those naming none."""
        return {named or default for named in self.executors}

    def others_secrets(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The secrets that the graph's steps outside the selection declare, as set now."""
        return {name: environ[name] for name in self.others_secret_names if name in environ}


def selection_of(graph: Graph, order: Sequence[str]) -> Selection:
    """The :class:`Selection` of ``order``'s steps, made once until the graph changes."""
    key: Hashable = ("selection", tuple(order))
    return graph.derived(key, lambda: Selection(graph, order))
