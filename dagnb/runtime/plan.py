"""Looking ahead without running: which steps the cache would skip, and why a step runs;
and ``warm``, which fills the cache ahead of a later run.

``plan`` walks the selected steps in order and computes each key as the runner would,
from the upstream entries' output digests. A step whose upstream would run cannot be
known to hit (its input is not made yet), so it is reported as such; so is a notebook
cell's step reading a variable a step that runs publishes, and one whose publisher is
cached is keyed on that entry's result (:mod:`dagnb.runtime.reads`), as a run keys it.
With caching off (the ``cache_mode`` setting, or the one a run is given) every step
would run, and each row says so and where ``off`` came from.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.cache.steps import StepCache
from dagnb.config import ARGUMENT, check_cache_mode, origins, settings
from dagnb.errors import StepFailed, UnfingerprintableVariable
from dagnb.executors import Executor, container_steps
from dagnb.model.contract import known_secret_values
from dagnb.model.results import NO_RESULT
from dagnb.runtime.frames import as_text
from dagnb.runtime.reads import AS_IT_IS, PublishedReads, with_after

if TYPE_CHECKING:
    import pandas as pd

    from dagnb.cache.entry import Entry
    from dagnb.model.graph import Graph
    from dagnb.model.step import Step
    from dagnb.runtime.run import Run

__all__ = ["cached_steps", "explain", "misses", "plan", "plan_rows", "warm"]

PLAN_COLUMNS = ["step", "cached", "key", "reason"]
NEVER_CACHED = "it runs every time: the step has cache=False"
_OFF = "it runs every time: caching is off"


def _walk(graph: Graph, names: list[str], cache: StepCache,
          reads: PublishedReads | None = None, glance: bool = True) -> list[dict[str, Any]]:
    """A row per step: whether a run would restore it, its key, why. ``glance``: a store
    URL's entries seen by their metadata alone (a plan, which downloads nothing); else
    whole, as a run is served them (a run's own checks: ``fail-on-miss``)."""
    base_dir = (graph.base_dir or Path.cwd()).resolve()
    digests: dict[str, str | None] = {}
    entries: dict[str, Entry] = {}  # step -> the entry a run would restore it from
    rows = []
    for name in names:
        step = graph[name]
        waiting = [n for n in step.needs if digests.get(n) is None]
        read = reads.variables.get(name, {}) if reads is not None else {}
        anew = {variable: maker for variable, maker in read.items()
                if maker in digests and digests[maker] is None}
        if waiting or anew:
            digests[name] = None
            reason = (f"runs after {', '.join(waiting)}, which will run" if waiting
                      else _made_anew(anew))
            rows.append({"step": name, "cached": False, "key": None, "reason": reason})
            continue
        if not cache.enabled_for(step):  # it runs whatever the cache holds: no key to look up
            digests[name] = None
            rows.append({"step": name, "cached": False, "key": None, "reason": NEVER_CACHED})
            continue
        try:
            values = _published_values(graph, cache, reads, read, entries) if read else None
            key = cache.key(step, {n: digests[n] for n in step.needs}, base_dir,  # type: ignore[misc]
                            values)
        except (UnfingerprintableVariable, StepFailed) as exc:  # it will run uncached, as
            digests[name] = None  # the run says (or a cached result it reads is unreadable)
            rows.append({"step": name, "cached": False, "key": None, "reason": str(exc)})
            continue
        entry = cache.peek(step, key, metadata_only=glance)
        expired = entry is not None and cache.expired(step, entry)
        if expired:  # (a run misses it: its ttl passed)
            entry = None
        digests[name] = entry.output_digest if entry is not None else None
        if entry is not None:
            entries[name] = entry
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


def _made_anew(anew: dict[str, str]) -> str:
    """``runs after load: reads rows, which load makes anew`` (its key needs their value)."""
    makers = list(dict.fromkeys(anew.values()))
    parts = [f"reads {', '.join(v for v, m in anew.items() if m == maker)}, which {maker} "
             "makes anew" for maker in makers]
    return f"runs after {', '.join(makers)}: {'; '.join(parts)}"


def _published_values(graph: Graph, cache: StepCache, reads: PublishedReads | None,
                      read: dict[str, str], entries: dict[str, Entry]) -> dict[str, Any]:
    """What the variables a step reads will hold when it runs: each published from the
    cache entry its publisher is restored from (read from it only when the notebook does
    not hold that result already); those of a publisher outside the plan as they are."""
    values: dict[str, Any] = {}
    for variable, maker in read.items():
        entry = entries.get(maker)
        if entry is not None and reads is not None:
            load = functools.partial(_result_of, cache, graph[maker], entry)
            value = reads.value(maker, variable, entry.key, load)
            if value is not AS_IT_IS:
                values[variable] = value
    return values


def _result_of(cache: StepCache, step: Step, entry: Entry) -> Any:
    """The result a run would publish from ``entry`` (None for none): one in a file of
    a store URL's entry is downloaded for it into the tier, as a run would (a plan's look
    downloads no other output)."""
    whole = cache.with_files(step, entry)
    if whole is None:  # (the store's copy, seen whole only now, is damaged or gone)
        raise StepFailed(f"the store's entry of step {step.name!r}, whose result this "
                         "step reads, cannot be downloaded: both run", step=step.name)
    value = cache.restore(step, whole).get()
    return None if value is NO_RESULT else value


def _first(lines: list[str]) -> str:
    return lines[0] if lines else "will run"


def cached_steps(graph: Graph, names: list[str], cache: StepCache,
                 reads: PublishedReads | None = None) -> set[str]:
    """The steps among ``names`` (in order, with their upstream and the steps they
    start after) that a run with ``cache`` would restore rather than run."""
    return {
        row["step"]
        for row in _walk(graph, names, cache, reads)
        if row["cached"] and cache.lookup(graph[row["step"]], row["_key"]) is not None
    }


def misses(graph: Graph, names: list[str], cache: StepCache,
           reads: PublishedReads | None = None) -> list[tuple[str, str]]:
    """The steps among ``names`` (in order, with their upstream and the steps they
    start after) that a run with ``cache`` would execute, each with the first reason
    ``explain`` gives; counts nothing.
    """
    found = []
    for row in _walk(graph, names, cache, reads, glance=False):
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
    secrets = [*known_secret_values(graph),
               *config.credential_secrets(cache_directory).values()]
    return StepCache(cache_directory, mode="read-only", secrets=secrets,
                     in_container=container_steps(executor or config.executor),
                     workflow=graph.name)


def plan(
    graph: Graph,
    targets: Iterable[str] | str | None = None,
    *,
    cache_directory: str | Path | None = None,
    executor: str | Executor | None = None,
    reads: PublishedReads | None = None,
) -> pd.DataFrame:
    """What a run would do now: one row per step with cached (True/False) and why;
    ``executor`` as a run's (default: the setting); ``reads``: a notebook's, whose
    readers a run starts after the steps they read (see :mod:`dagnb.runtime.reads`)."""
    rows = plan_rows(graph, targets, cache_directory=cache_directory, executor=executor,
                     reads=reads)
    import pandas as pd

    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    frame["cached"] = frame["cached"].astype(bool)  # (no steps: still bool, so ~p.cached works)
    return as_text(frame, ("step", "key", "reason"))


def plan_rows(
    graph: Graph,
    targets: Iterable[str] | str | None = None,
    *,
    cache_directory: str | Path | None = None,
    executor: str | Executor | None = None,
    reads: PublishedReads | None = None,
    cache_mode: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`plan`'s rows as dicts of :data:`PLAN_COLUMNS` (no pandas: the CLI prints
    them); the key is None for a step whose key cannot be known before a run. With
    ``cache_mode`` (None: the setting) ``off``, every step runs, and its reason says so."""
    graph.validate()
    off = _caching_off(cache_mode)
    if off is not None:  # (a run looks nothing up: every step runs)
        return [{"step": name, "cached": False, "key": None, "reason": off}
                for name in _selected(graph, targets, reads)]
    cache = _looking(graph, cache_directory, executor)
    rows = _walk(graph, _selected(graph, targets, reads), cache, reads)
    return [{column: row[column] for column in PLAN_COLUMNS} for row in rows]


def _caching_off(cache_mode: str | None) -> str | None:
    """Why every step would run when the run's ``cache_mode`` (None: the setting) is
    ``off``, naming where that came from; None when the run would look the cache up
    (``read-only`` and ``fail-on-miss`` look it up as ``read-write`` does)."""
    if cache_mode is not None:
        off = check_cache_mode(cache_mode) == "off"
        return f"{_OFF} (cache_mode 'off' asked for)" if off else None
    if settings().cache_mode != "off":
        return None
    origin = origins().get("cache_mode", "")
    where = "dagnb.configure()" if origin == ARGUMENT else origin
    return f"{_OFF} (cache_mode 'off' from {where})"


def explain(graph: Graph, step: str, *, cache_directory: str | Path | None = None,
            executor: str | Executor | None = None,
            reads: PublishedReads | None = None,
            cache_mode: str | None = None) -> list[str]:
    """Why ``step`` would run (or that it is cached), in sentences; ``executor`` as a
    run's (default: the setting); ``reads`` and ``cache_mode`` as :func:`plan_rows`'."""
    graph.validate()
    off = _caching_off(cache_mode)
    if off is not None:
        _selected(graph, step, reads)  # (an unknown name refused, as with caching on)
        return [off]
    cache = _looking(graph, cache_directory, executor)
    rows = _walk(graph, _selected(graph, step, reads), cache, reads)
    row = next(row for row in rows if row["step"] == step)
    if "_key" not in row:
        return [row["reason"]]
    return cache.explain(graph[step], row["_key"])


def _selected(graph: Graph, targets: Iterable[str] | str | None,
              reads: PublishedReads | None) -> list[str]:
    """The steps a run of ``targets`` has, in its order (with the steps they start
    after: a notebook's run brings the steps whose variables they read)."""
    order = graph.select(targets)
    after = reads.after if reads is not None else None
    return with_after(graph, order, after) if after else order


def warm(graph: Graph, targets: Iterable[str] | str | None = None, **options: Any) -> Run:
    """Fill the cache for the selected steps (runs what is missing); returns the Run.

    A run with the cache on whatever the settings say; also ``graph.warm(...)``.
    """
    options.pop("cache", None)
    options.pop("cache_mode", None)
    return graph.run(targets, cache_mode="read-write", **options)
