"""Looking ahead without running: which steps the cache would skip, and why a step runs;
and ``warm``, which fills the cache ahead of a later run.

``plan`` walks the selected steps in order and computes each key as the runner would,
from the upstream entries' output digests. A step whose upstream would run cannot be
known to hit (its input is not made yet), so it is reported as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.cache.steps import StepCache
from dagnb.config import settings
from dagnb.errors import UnfingerprintableVariable
from dagnb.executors import Executor, container_steps
from dagnb.model.contract import known_secret_values
from dagnb.runtime.frames import as_text

if TYPE_CHECKING:
    import pandas as pd

    from dagnb.model.graph import Graph
    from dagnb.runtime.run import Run

__all__ = ["cached_steps", "explain", "misses", "plan", "warm"]

PLAN_COLUMNS = ["step", "cached", "key", "reason"]
NEVER_CACHED = "it runs every time: the step has cache=False"


def _walk(graph: Graph, names: list[str], cache: StepCache) -> list[dict[str, Any]]:
    base_dir = (graph.base_dir or Path.cwd()).resolve()
    digests: dict[str, str | None] = {}
    rows = []
    for name in names:
        step = graph[name]
        waiting = [n for n in step.needs if digests.get(n) is None]
        if waiting:
            digests[name] = None
            rows.append(
                {
                    "step": name,
                    "cached": False,
                    "key": None,
                    "reason": f"runs after {', '.join(waiting)}, which will run",
                }
            )
            continue
        if not cache.enabled_for(step):  # it runs whatever the cache holds: no key to look up
            digests[name] = None
            rows.append({"step": name, "cached": False, "key": None, "reason": NEVER_CACHED})
            continue
        try:
            key = cache.key(step, {n: digests[n] for n in step.needs}, base_dir)  # type: ignore[misc]
        except UnfingerprintableVariable as exc:  # it will run uncached, as the run says
            digests[name] = None
            rows.append({"step": name, "cached": False, "key": None, "reason": str(exc)})
            continue
        entry = cache.peek(step, key)
        expired = entry is not None and cache.expired(step, entry)
        if expired:  # (a run misses it: its ttl passed)
            entry = None
        digests[name] = entry.output_digest if entry is not None else None
        reason = ("cached" if entry is not None else "its cache entry has expired"
                  if expired else _first(cache.explain(step, key)))
        rows.append(
            {
                "step": name,
                "cached": entry is not None,
                "key": key.short,
                "reason": reason,
                "_key": key,
                "_entry": entry,
            }
        )
    return rows


def _first(lines: list[str]) -> str:
    return lines[0] if lines else "will run"


def cached_steps(graph: Graph, names: list[str], cache: StepCache) -> set[str]:
    """The steps among ``names`` (in order, with their upstream) that a run with
    ``cache`` would restore rather than run."""
    return {
        row["step"]
        for row in _walk(graph, names, cache)
        if row["cached"] and cache.lookup(graph[row["step"]], row["_key"]) is not None
    }


def misses(graph: Graph, names: list[str], cache: StepCache) -> list[tuple[str, str]]:
    """The steps among ``names`` (in order, with their upstream) that a run with
    ``cache`` would execute, each with the first reason ``explain`` gives; counts nothing.
    """
    found = []
    for row in _walk(graph, names, cache):
        step, entry = graph[row["step"]], row.get("_entry")
        if entry is None:
            reason: str | None = (row["reason"].splitlines()[0] if row["reason"]
                                  else "it is not cached")
        else:
            reason = cache.passed_over(step, entry)
        if reason is not None:
            found.append((row["step"], reason))
    return found


def _looking(graph: Graph, cache_directory: str | Path | None,
             executor: str | Executor | None) -> StepCache:
    """The cache as ``plan`` and ``explain`` read it: whatever the ``cache_mode``
    setting, looking ahead writes nothing; the graph's secrets are masked, as a run
    masks them; the keys are those of a run with ``executor`` (a container run's differ)."""
    config = settings()
    secrets = [*known_secret_values(graph), *config.credential_secrets().values()]
    return StepCache(cache_directory, mode="read-only", secrets=secrets,
                     in_container=container_steps(executor or config.executor))


def plan(
    graph: Graph,
    targets: Iterable[str] | str | None = None,
    *,
    cache_directory: str | Path | None = None,
    executor: str | Executor | None = None,
) -> pd.DataFrame:
    """What a run would do now: one row per step with cached (True/False) and why;
    ``executor`` as a run's (default: the setting)."""
    graph.validate()
    rows = _walk(graph, graph.select(targets), _looking(graph, cache_directory, executor))
    import pandas as pd

    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    frame["cached"] = frame["cached"].astype(bool)  # (no steps: still bool, so ~p.cached works)
    return as_text(frame, ("step", "key", "reason"))


def explain(graph: Graph, step: str, *, cache_directory: str | Path | None = None,
            executor: str | Executor | None = None) -> list[str]:
    """Why ``step`` would run (or that it is cached), in sentences; ``executor`` as a
    run's (default: the setting)."""
    graph.validate()
    cache = _looking(graph, cache_directory, executor)
    rows = _walk(graph, graph.select(step), cache)
    row = rows[-1]
    if "_key" not in row:
        return [row["reason"]]
    return cache.explain(graph[step], row["_key"])


def warm(graph: Graph, targets: Iterable[str] | str | None = None, **options: Any) -> Run:
    """Fill the cache for the selected steps (runs what is missing); returns the Run.

    A run with the cache on whatever the settings say; also ``graph.warm(...)``.
    """
    options.pop("cache", None)
    options.pop("cache_mode", None)
    return graph.run(targets, cache_mode="read-write", **options)
