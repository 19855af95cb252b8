"""Views of the notebook, not of the last cell: every step the session knows, and its runs.

``%dagger status`` lists each step of the session's graph with the row of its latest run
(whichever cell ran it), ``never run`` for a step defined but not run yet, ``stale``
for one whose inputs changed since (its key is no longer in the cache: ``%dagger plan``
says why), and ``uncached`` for one whose result was not stored though nothing changed
(``--no-cache``, a result that cannot be pickled). ``%dagger logs NAME`` reads the
latest run that had the step, and ``%dagger history`` lists every run of the session.
A ``--background`` run is in all three from its start (its steps queued, running).
Empty answers are sentences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagnb.errors import DagnbError
from dagnb.notebook.unready import missing_variables
from dagnb.runtime.frames import as_text

if TYPE_CHECKING:
    import pandas as pd

    from dagnb.notebook.session import Session

__all__ = ["STATUS_COLUMNS", "history", "notebook_logs", "notebook_states", "notebook_status"]

STATUS_COLUMNS = ["step", "state", "cached", "attempts", "exit_code", "duration_s", "executor",
                  "image", "error", "note"]
_DONE = ("succeeded", "cached")


def _names(session: Session) -> list[str]:
    try:
        return session.graph.order()
    except DagnbError:  # a cycle or a missing upstream: the steps as defined
        return list(session.graph.names)


def _not_fresh(session: Session, names: list[str]) -> dict[str, tuple[str | None, str]]:
    """Steps that ended well but that a run now would not restore from the cache, with
    (state, note): ``stale`` when their inputs changed since (the cache holds an entry of
    theirs under another key, or an upstream step is stale), ``uncached`` when no result
    of theirs was stored (``--no-cache``, a result that cannot be pickled, a variable
    that cannot be fingerprinted), though nothing changed; None (the latest state holds)
    for one that runs again only because an upstream result was not stored."""
    done = [n for n in names if session.latest.get(n, {}).get("state") in _DONE]
    if not done:
        return {}
    try:
        plan = session.graph.plan(done)
    except DagnbError:
        return {}
    rerun = {row.step for row in plan.itertuples() if not row.cached}
    found: dict[str, tuple[str | None, str]] = {}
    for row in plan.itertuples():  # in order: upstream steps first
        if row.step in rerun and row.step in done:
            found[row.step] = _why_not_fresh(session, row, rerun, found)
    return found


def _why_not_fresh(session: Session, row: Any, rerun: set[str],
                   found: dict[str, tuple[str | None, str]]) -> tuple[str | None, str]:
    """(state, note) of a step that ended well but would run again (see _not_fresh)."""
    step = session.graph[row.step]
    upstream = [n for n in step.needs if n in rerun]
    if isinstance(row.key, str) or not upstream:  # its own key looked up, or not computable
        if not step.cache:
            return "uncached", "--no-cache: its result is never stored"
        if not isinstance(row.key, str):
            return "uncached", f"not stored: {row.reason}"
        why = getattr(session.step_runs.get(row.step), "not_stored", {}).get(row.step)
        if why is not None:  # (its latest run said why)
            return "uncached", f"not stored: {why}"
        if _has_entries(row.step):
            return "stale", "its inputs changed since it ran (%dagger plan says why)"
        return "uncached", "no stored result for it now (its entry was removed, or expired)"
    if any(found.get(n, ("stale", ""))[0] == "stale" for n in upstream):
        return "stale", f"upstream {', '.join(upstream)} changed since it ran"
    return None, f"runs again after {', '.join(upstream)}, whose result is not stored"


def _has_entries(name: str) -> bool:
    from dagnb.cache import store_for

    return store_for().newest(name, include_expired=True) is not None


def notebook_states(session: Session) -> dict[str, str]:
    """Each step's latest state, ``never run``, ``stale`` or ``uncached`` (what the graph
    picture colours)."""
    return {name: state for name, (state, _) in _states_and_notes(session).items()}


def _states_and_notes(session: Session) -> dict[str, tuple[str, str | None]]:
    session.refresh()  # (a background run's steps as they are now)
    names = _names(session)
    not_fresh = _not_fresh(session, names)
    shown = {}
    for name in names:
        state, note = not_fresh.get(name, (None, None))
        shown[name] = (state or session.latest.get(name, {}).get("state", "never run"), note)
    return shown


def notebook_status(session: Session) -> pd.DataFrame | str:
    """One row per step of the session (see the module docstring); a sentence when empty."""
    import pandas as pd

    if not len(session.graph):
        return "no steps yet: define one with a %%dagger cell"
    rows = [{**session.latest.get(n, {"step": n}), "state": state, "note": note}
            for n, (state, note) in _states_and_notes(session).items()]
    for row in rows:
        if row["state"] not in ("succeeded", "uncached"):
            row["note"] = _waiting_for(session, row["step"]) or row["note"]
    frame = pd.DataFrame(rows).reindex(columns=STATUS_COLUMNS)
    frame["cached"] = frame["cached"].eq(True)  # (missing: not cached)
    frame["attempts"] = pd.to_numeric(frame["attempts"]).fillna(0).astype("int64")
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    as_text(frame, ("step", "state", "executor", "image", "error", "note"))
    blank = [c for c in ("image", "note") if frame[c].isna().all()]
    return frame.drop(columns=blank)  # no column of blanks (image: a local notebook)


def _waiting_for(session: Session, name: str) -> str | None:
    """``needs variable `scale` (cell 2 of pipeline.ipynb)`` for a Python step whose code
    reads notebook variables that do not exist yet (a kernel that just started)."""
    missing = missing_variables(session.graph, session.namespace, name)
    if not missing:
        return None
    return "needs variable " + ", ".join(
        f"`{variable}` ({place or 'not defined yet'})" for variable, place in missing)


def notebook_logs(session: Session, name: str, **options: Any) -> pd.DataFrame | str:
    """The step's lines in the latest run that had it (run or replayed from the cache)."""
    session.graph[name]  # an unknown name: StepNotFoundError with "did you mean"
    session.refresh()
    run = session.step_runs.get(name)
    if run is None:
        return f"step {name!r} has not run in this session yet; run its cell or %dagger run"
    frame = run.logs(name, **options)
    return left_aligned(frame) if len(frame) else f"step {name!r} printed nothing in run {run.id}"


def left_aligned(frame: pd.DataFrame) -> pd.DataFrame:
    """The same frame, displayed with its text left-aligned (log lines read as lines)."""
    import pandas as pd

    class LeftAligned(pd.DataFrame):
        @property
        def _constructor(self) -> type[pd.DataFrame]:
            return pd.DataFrame  # a slice or a computation is a plain frame again

        def __repr__(self) -> str:
            widths = {c: int(self[c].astype(str).str.len().max()) for c in self.columns}
            formatters = {c: (lambda w: lambda v: f"{v!s:<{w}}")(widths[c])
                          for c in self.columns}
            return self.to_string(index=False, justify="left", formatters=formatters)

        def _repr_html_(self) -> str:
            html = self.to_html(index=False, justify="left")
            return html.replace("<td>", "<td style='text-align:left'>")

    return LeftAligned(frame)


def history(session: Session) -> pd.DataFrame | str:
    """Every run of the session: id, when, which steps, how each ended."""
    import pandas as pd

    session.refresh()
    if not session.runs:
        return "no run yet in this session"
    return pd.DataFrame(session.runs)
