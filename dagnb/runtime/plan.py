"""Looking ahead without running: which steps the cache would skip, and why a step runs;
and ``warm``, which fills the cache ahead of a later run.

``plan`` walks the selected steps in order and computes each key as the runner would,
from the upstream entries' output digests. A step keyed on what a step that runs makes
first (an upstream's output; a notebook cell's variable a step that runs publishes)
cannot be known to hit before that has run: a run keys it on what comes out, and an
upstream remade the same leaves its key as it was (early cut-off). It *may run* when
an entry of it matches every other part of its key, else it surely runs, and the plan
says why. A step reading the variable of a cached publisher is keyed on that entry's
result (:mod:`dagnb.runtime.reads`), as a run keys it. With caching off (the
``cache_mode`` setting, or the one a run is given) every step would run, and each row
says so and where ``off`` came from.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb.cache import session_store
from dagnb.cache.explain import explain_changes
from dagnb.cache.remote import RemoteBackend
from dagnb.cache.steps import StepCache
from dagnb.cache.store import only_reading
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
    from dagnb.cache.keys import StepKey
    from dagnb.cache.store import Store
    from dagnb.model.graph import Graph
    from dagnb.model.step import Step
    from dagnb.runtime.run import Run

__all__ = ["cached_steps", "explain", "misses", "plan", "plan_rows", "warm"]

PLAN_COLUMNS = ["step", "cached", "key", "reason"]
# a row's state (plan_rows' "state"): restored, surely run, or run unless what an upstream
# that runs makes comes out the same (early cut-off: then its key is that of an entry)
CACHED, WILL_RUN, MAY_RUN = "cached", "will run", "may run"
NEVER_CACHED = "it runs every time: the step has cache=False"
NEW_SESSION = ("cache: session: this session has no entry of it yet (each dagnb run, each "
               "kernel, is a new session)")
_NOT_MADE = "not made yet"  # what keys a step in place of an input the run makes first
_OFF = "it runs every time: caching is off"


class _Walk:
    """One look ahead over the steps in a run's order: each step's row, and the output
    digest it leaves its dependents (None: made by the run, so unknown now)."""

    __slots__ = ("base_dir", "cache", "digests", "entries", "glance", "graph", "reads",
                 "states")

    def __init__(self, graph: Graph, cache: StepCache, reads: PublishedReads | None,
                 glance: bool) -> None:
        self.graph, self.cache, self.reads = graph, cache, reads
        self.glance = glance
        self.base_dir = (graph.base_dir or Path.cwd()).resolve()
        self.digests: dict[str, str | None] = {}
        self.states: dict[str, str] = {}  # step -> CACHED, WILL_RUN or MAY_RUN
        self.entries: dict[str, Entry] = {}  # step -> the entry a run would restore it from

    def row(self, name: str) -> dict[str, Any]:
        """The step's row (the steps it reads from walked already)."""
        step = self.graph[name]
        row = self._not_looked_up(step) or self._looked_up(step)
        entry = row.get("_entry")
        if entry is not None:
            self.entries[name] = entry
        self.digests[name] = entry.output_digest if entry is not None else None
        self.states[name] = row["state"]
        return row

    def _not_looked_up(self, step: Step) -> dict[str, Any] | None:
        """The row of a step that runs whatever the cache holds: no key to look up."""
        if not self.cache.enabled_for(step):
            return _row(step.name, WILL_RUN, NEVER_CACHED)
        if step.cache == "session" and _new_in_session(step.name):
            return _row(step.name, WILL_RUN, NEW_SESSION)
        return None

    def _looked_up(self, step: Step) -> dict[str, Any]:
        read = self.reads.variables.get(step.name, {}) if self.reads is not None else {}
        unknown = self._unknown(step, read)
        try:
            key = self._key(step, read, unknown)
        except (UnfingerprintableVariable, StepFailed) as exc:
            # it will run uncached, as the run says (or a cached result it reads is unreadable)
            return _row(step.name, WILL_RUN, str(exc))
        except Exception:
            if not unknown:
                raise
            # its key_fn or a mount may need what an upstream makes: its key is made once
            # that has run, and may then be found
            return _row(step.name, MAY_RUN, _may_run(unknown, self.states))
        if unknown:
            return self._after_unknown(step, key, unknown)
        entry = self.cache.peek(step, key, metadata_only=self.glance)
        if entry is not None and self.cache.expired(step, entry):  # (a run misses it)
            reason, entry = "its cache entry has expired", None
        else:
            reason = "cached" if entry is not None else _first(self.cache.explain(step, key))
        return {**_row(step.name, CACHED if entry is not None else WILL_RUN, reason),
                "key": key.short, "_key": key, "_entry": entry}

    def _unknown(self, step: Step, read: dict[str, str]) -> dict[str, str]:
        """The components of the step's key that a step the run runs makes, each with
        that step: an upstream's output (``upstream:load``), a variable it publishes
        (``var:rows``, which ``load`` makes anew)."""
        unknown = {f"upstream:{n}": n for n in step.needs if self.digests.get(n) is None}
        unknown.update({f"var:{variable}": maker for variable, maker in read.items()
                        if maker in self.digests and self.digests[maker] is None})
        return unknown

    def _key(self, step: Step, read: dict[str, str], unknown: dict[str, str]) -> StepKey:
        """The step's key, what the run makes before it stood for by :data:`_NOT_MADE`."""
        values = (_published_values(self.graph, self.cache, self.reads, read, self.entries)
                  if read else None)
        anew = {v: _NOT_MADE for v in read if f"var:{v}" in unknown}
        if anew:
            values = {**(values or {}), **anew}
        upstream = {n: self.digests[n] or _NOT_MADE for n in step.needs}
        return self.cache.key(step, upstream, self.base_dir, values)

    def _after_unknown(self, step: Step, key: StepKey, unknown: dict[str, str]
                       ) -> dict[str, Any]:
        """A step whose key takes what the run makes first: it may come from the cache
        (early cut-off: remade the same, it keys the same), if an entry of it that has
        not expired matches every other part of its key, or if a store URL, whose
        entries are not listed, may hold one; else it surely runs, and why (the other
        parts' changes, or no entry yet)."""
        store = _store_of(self.cache, step)
        if type(store.backend) is RemoteBackend or any(  # (lists its local tier alone)
                _matches(entry, key, unknown) and not self.cache.expired(step, entry)
                for entry in store.iter_entries(step.name)):
            return _row(step.name, MAY_RUN, _may_run(unknown, self.states))
        changes = explain_changes(store, step.name, key,
                                  mask=self.cache.mask if self.cache.mask else None,
                                  max_age=self.cache.ttl_of(step), workflow=self.cache.workflow)
        # (an unknown part changed waits on the run; one added or removed never matches)
        reasons = [change.message for change in changes
                   if change.component not in unknown or change.change != "changed"]
        reasons = reasons or ["its cache entry has expired"]  # (the one that matched)
        return {**_row(step.name, WILL_RUN, reasons[0]), "_reasons": reasons}


def _new_in_session(step: str) -> bool:
    """Whether this process's session store holds no entry of ``step`` (a ``dagnb``
    command's never does: each is a new session; a kernel's once the step ran there)."""
    return next(iter(session_store().iter_entries(step)), None) is None


def _walk(graph: Graph, names: list[str], cache: StepCache,
          reads: PublishedReads | None = None, glance: bool = True) -> list[dict[str, Any]]:
    """A row per step: whether a run would restore it, its key, why. ``glance``: a store
    URL's entries seen by their metadata alone (a plan, which downloads nothing); else
    whole, as a run is served them (a run's own checks: ``fail-on-miss``)."""
    walk = _Walk(graph, cache, reads, glance)
    return [walk.row(name) for name in names]


def _row(step: str, state: str, reason: str) -> dict[str, Any]:
    """A row with no key: one of a step not looked up, or not known to hit."""
    return {"step": step, "cached": state == CACHED, "key": None, "reason": reason,
            "state": state}


def _store_of(cache: StepCache, step: Step) -> Store:
    """Where a run looks ``step`` up (as :class:`StepCache` picks it)."""
    return session_store() if step.cache == "session" else cache.store


def _matches(entry: Entry, key: StepKey, unknown: dict[str, str]) -> bool:
    """Whether ``entry``'s key is ``key`` but for the ``unknown`` components, which it
    has: what the run makes may key it (an entry without one never can)."""
    old = entry.meta.get("components")
    if not isinstance(old, dict) or not all(name in old for name in unknown):
        return False
    new = key.components
    return all(old.get(name) == new.get(name)
               for name in old.keys() | new.keys() if name not in unknown)


def _may_run(unknown: dict[str, str], states: dict[str, str]) -> str:
    """``may run: runs if make's result changes (make will run)``."""
    inputs = [f"{maker}'s result" if component.startswith("upstream:")
              else f"{component.partition(':')[2]} (made by {maker})"
              for component, maker in unknown.items()]
    makers = ", ".join(f"{maker} {states[maker]}" for maker in dict.fromkeys(unknown.values()))
    return f"{MAY_RUN}: runs if {' or '.join(inputs)} changes ({makers})"


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
    ``explain`` gives; counts nothing. A step that may run (``may run: ...``) is one:
    ``fail-on-miss`` refuses as soon as one step surely runs, and there is one before
    each such step (the step that makes what it is keyed on, or one before that).
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
    """:func:`plan`'s rows as dicts of :data:`PLAN_COLUMNS` and ``state`` (:data:`CACHED`,
    :data:`WILL_RUN` or :data:`MAY_RUN`; no pandas: the CLI prints them); the key is
    None for a step whose key cannot be known before a run. With ``cache_mode`` (None:
    the setting) ``off``, every step runs, and its reason says so."""
    graph.validate()
    off = _caching_off(cache_mode)
    if off is not None:  # (a run looks nothing up: every step runs)
        return [_row(name, WILL_RUN, off) for name in _selected(graph, targets, reads)]
    cache = _looking(graph, cache_directory, executor)
    with only_reading("plan"):
        rows = _walk(graph, _selected(graph, targets, reads), cache, reads)
    return [{column: row[column] for column in (*PLAN_COLUMNS, "state")} for row in rows]


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
    with only_reading("explain"):
        rows = _walk(graph, _selected(graph, step, reads), cache, reads)
        row = next(row for row in rows if row["step"] == step)
        if "_key" not in row:
            return row.get("_reasons", [row["reason"]])
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
