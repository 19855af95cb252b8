"""The notebook's session: one graph per kernel, its last run, results in the namespace.

``%%dagger`` cells and the graph builder add steps to the same :class:`Session` graph;
runs use the process-wide settings (``dagnb.configure`` or ``%dagger config``), hence one
cache store and one executor per kernel. After a run, each step's result is in the
user namespace as ``_dagger[NAME]`` (a shell step's is the Path of its output folder),
and the ``--outputs`` variables of ``--python`` cells under their own names.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

from dagnb.cache import store_for
from dagnb.config import context
from dagnb.model.graph import Graph
from dagnb.model.step import Step
from dagnb.runtime.prepare import start_background
from dagnb.runtime.run import Run

__all__ = ["RESULTS_NAME", "Session", "get_session", "notebook_summary"]

RESULTS_NAME = "_dagger"
_RECENT_IMAGES = 10


class Session:
    """One kernel's graph, its last run, and where results are published.

    Parameters
    ----------
    namespace
        The user namespace results go to (``shell.user_ns``); a fresh dict if None.
    name
        The graph's name.
    """

    def __init__(self, namespace: MutableMapping[str, Any] | None = None,
                 name: str = "notebook") -> None:
        self.namespace = namespace if namespace is not None else {}
        self.graph = Graph(name)
        self.outputs: dict[str, tuple[str, ...]] = {}  # --outputs of --python cells
        self.recent_images: list[str] = []
        self.latest: dict[str, dict[str, Any]] = {}  # step -> its row in the latest run

    @property
    def last_run(self) -> Run | None:
        """The most recent run of the session graph."""
        return self.graph.last_run

    def define(self, step: Step, outputs: Iterable[str] = ()) -> Step:
        """Add ``step`` to the graph, or replace the step of that name."""
        self.graph.replace(step)
        self.outputs[step.name] = tuple(outputs)
        if step.image:
            images = [step.image, *(i for i in self.recent_images if i != step.image)]
            self.recent_images = images[:_RECENT_IMAGES]
        return step

    def start(self, targets: Iterable[str] | str | None = None, *,
              background: bool = True, **options: Any) -> Run:
        """Start a run of the session graph and return at once.

        With ``background`` (the default, used by the widget's buttons) a waiting
        thread publishes the results to the namespace when the run ends; otherwise the
        caller waits and calls :meth:`publish` itself.
        """
        run = start_background(self.graph, targets, **options)
        if background:
            threading.Thread(target=self._publish_later, args=(run,), daemon=True,
                             name="dagnb-publish").start()
        return run

    def _publish_later(self, run: Run) -> None:
        try:
            self.publish(run.wait())
        except Exception as exc:  # a thread has nobody to raise to
            warnings.warn(f"dagnb: results of run {run.id} were not published to the "
                          f"namespace: {exc}", stacklevel=1)

    def publish(self, run: Run) -> dict[str, Any]:
        """Put the results of the run's finished steps into the namespace."""
        results = self.namespace.setdefault(RESULTS_NAME, {})
        self._remember_rows(run)
        for name, state in run.states().items():
            if state not in ("succeeded", "cached"):
                continue
            value = run.result(name)
            results[name] = value if value is not None else _outputs_or_none(run, name)
            self._publish_outputs(name, value)
        return results

    def _remember_rows(self, run: Run) -> None:
        for row in run.status().to_dict("records"):
            self.latest[row["step"]] = {k: _plain(v) for k, v in row.items()}

    def _publish_outputs(self, name: str, value: Any) -> None:
        outputs = self.outputs.get(name, ())
        if len(outputs) == 1:
            self.namespace[outputs[0]] = value
        elif outputs and isinstance(value, dict):
            for key in outputs:
                self.namespace[key] = value.get(key)

    def clear_cache(self, step: str | None = None) -> int:
        """Remove entries (of one step) from the configured cache; how many."""
        return store_for().clear(step)

    def reset(self) -> None:
        """Forget the graph, the last run and the published results."""
        self.graph = Graph(self.graph.name)
        self.outputs.clear()
        self.latest.clear()
        self.namespace.pop(RESULTS_NAME, None)


def _plain(value: Any) -> Any:
    """A JSON-friendly cell of a status row (pandas' NA and numpy scalars included)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None if isinstance(value, float) and value != value else value
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def notebook_summary(session: Session | None = None) -> str:
    """Every step's row from its latest run, in graph order, as JSON (``dagnb run NB``)."""
    session = session or get_session()
    rows = [session.latest.get(name, {"step": name, "state": "not run"})
            for name in session.graph.order()]
    return json.dumps(rows)


def _outputs_or_none(run: Run, name: str) -> Path | None:
    try:
        return run.outputs(name)
    except Exception:
        return None


def get_session(namespace: MutableMapping[str, Any] | None = None) -> Session:
    """The session of the current context (created on first use, bound to ``namespace``).

    A fresh context (``dagnb.testing.isolated()``) starts a fresh session; ``%dagger
    reset`` keeps the object and empties it (:meth:`Session.reset`).
    """
    session = context().get("session", lambda: Session(namespace))
    if namespace is not None and session.namespace is not namespace:
        session.namespace = namespace
    return session
