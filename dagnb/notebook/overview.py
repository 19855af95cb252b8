"""Views of the notebook, not of the last cell: every step the session knows, and its runs.

``%dagger status`` lists each step of the session's graph with the row of its latest run
(whichever cell ran it), ``never run`` for a step defined but not run yet (noted when a run
would restore it: stored before a restart), ``stale``
for one whose inputs changed since (its key is no longer in the cache: ``%dagger plan``
says why), and ``uncached`` for one whose result was not stored though nothing changed
(``--no-cache``, a result that cannot be pickled). ``%dagger logs NAME`` reads the
latest run that had the step, and ``%dagger history`` lists every run of the session.
A ``--background`` run is in all three from its start (its steps queued, running).

Each answer is a DataFrame with the same columns and dtypes whether it has rows or not
(``status[["step", "state"]]`` works in a new session); an empty one shows a sentence
instead of a bare header, blank ``image`` and ``note`` columns are left out of what the
status shows (not of the frame), and times show as local clock times.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from dagnb.checks import listed
from dagnb.errors import DagnbError
from dagnb.notebook.unready import missing_variables
from dagnb.runtime.frames import as_text
from dagnb.views.live import as_terminal_left

if TYPE_CHECKING:
    import pandas as pd

    from dagnb.notebook.session import Session
    from dagnb.runtime.reads import PublishedReads

__all__ = ["HISTORY_COLUMNS", "STATUS_COLUMNS", "history", "left_aligned", "name_a_step",
           "notebook_logs", "notebook_states", "notebook_status", "run_steps_frame", "shown"]

STATUS_COLUMNS = ["step", "state", "cached", "attempts", "exit_code", "duration_s", "executor",
                  "image", "error", "note"]
HISTORY_COLUMNS = ["run", "started", "steps", "unfinished", "succeeded", "cached", "failed",
                   "skipped", "cancelled"]
RUN_STEPS_COLUMNS = ["step", "state", "entry", "why"]
_DONE = ("succeeded", "cached")


def _names(session: Session) -> list[str]:
    try:
        return session.graph.order()
    except DagnbError:  # a cycle or a missing upstream: the steps as defined
        return list(session.graph.names)


def _not_fresh(session: Session, names: list[str], reads: Callable[[], PublishedReads],
               ) -> dict[str, tuple[str | None, str]]:
    """Steps that ended well but that a run now would not restore from the cache, with
    (state, note): ``stale`` when their inputs changed since (the cache holds an entry of
    theirs under another key, or an upstream step is stale), ``uncached`` when no result
    of theirs was stored (``--no-cache``, a result that cannot be pickled, a variable
    that cannot be fingerprinted), though nothing changed; None (the latest state holds)
    for one that runs again only because an upstream result was not stored. A step this
    kernel never ran whose result a run would restore (stored before a restart, or by
    ``dagnb run NOTEBOOK``) stays ``never run``, with a note saying so."""
    done = [n for n in names if session.latest.get(n, {}).get("state") in _DONE]
    found = _stored_before(session, [n for n in names if n not in session.latest], reads)
    if not done:
        return found
    try:
        plan = session.plan(done, reads=reads())  # (as a %dagger run would go)
    except DagnbError:
        return found
    rerun = {row.step for row in plan.itertuples() if not row.cached}
    after = reads().after
    for row in plan.itertuples():  # in order: upstream steps first
        if row.step in rerun and row.step in done:
            found[row.step] = _why_not_fresh(session, row, rerun, found, after)
    return found


def _stored_before(session: Session, never: list[str], reads: Callable[[], PublishedReads],
                   ) -> dict[str, tuple[str | None, str]]:
    """The steps of ``never`` (not run in this session) that a run would restore from
    the cache, each with the note saying so; none when they cannot be planned (its own
    plan: one that fails leaves the others' states as they were)."""
    if not never:
        return {}
    try:
        plan = session.plan(never, reads=reads())
    except DagnbError:
        return {}
    return {row.step: (None, STORED_BEFORE) for row in plan.itertuples()
            if row.cached and row.step in never}


STORED_BEFORE = "an earlier run stored its result: a run restores it, without running it"


def _why_not_fresh(session: Session, row: Any, rerun: set[str],
                   found: dict[str, tuple[str | None, str]],
                   after: dict[str, tuple[str, ...]]) -> tuple[str | None, str]:
    """(state, note) of a step that ended well but would run again (see _not_fresh); the
    steps whose variables it reads (``after``) count as its upstream: it runs after them."""
    step = session.graph[row.step]
    upstream = [n for n in dict.fromkeys((*step.needs, *after.get(row.step, ())))
                if n in rerun]
    if isinstance(row.key, str) or not upstream:  # its own key looked up, or not computable
        if not step.cache:
            return "uncached", "--no-cache: its result is never stored"
        why = getattr(session.step_runs.get(row.step), "not_stored", {}).get(row.step)
        if not isinstance(row.key, str):  # (its run's words, without the step's name)
            return "uncached", f"not stored: {why or row.reason}"
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
    return {name: state for name, (state, _) in
            _states_and_notes(session, _once(session.published_reads)).items()}


def _once(published_reads: Callable[[], PublishedReads]) -> Callable[[], PublishedReads]:
    """``published_reads``, worked out at most once in a view (a few ms each time)."""
    return functools.cache(published_reads)


def _states_and_notes(session: Session, reads: Callable[[], PublishedReads],
                      ) -> dict[str, tuple[str, str | None]]:
    session.refresh()  # (a background run's steps as they are now)
    names = _names(session)
    not_fresh = _not_fresh(session, names, reads)
    shown = {}
    for name in names:
        state, note = not_fresh.get(name, (None, None))
        shown[name] = (state or session.latest.get(name, {}).get("state", "never run"), note)
    return shown


NO_STEPS_YET = "no steps yet: define one with a %%dagger cell"  # (status's and plan's)


def notebook_status(session: Session) -> pd.DataFrame:
    """One row per step of the session (see the module docstring); no rows, shown as a
    sentence, when it has none."""
    import pandas as pd

    reads = _once(session.published_reads)
    rows = [{**session.latest.get(n, {"step": n}), "state": state, "note": note}
            for n, (state, note) in _states_and_notes(session, reads).items()]
    read = None
    for row in rows:
        if row["state"] not in ("succeeded", "uncached"):
            read = read if read is not None else _published_reads(reads)
            row["note"] = (_waiting_for(session, row["step"], read.get(row["step"], {}))
                           or _skipped_before(session, row) or row["note"])
    frame = pd.DataFrame(rows).reindex(columns=STATUS_COLUMNS)
    frame["cached"] = frame["cached"].eq(True)  # (missing: not cached)
    frame["attempts"] = pd.to_numeric(frame["attempts"]).fillna(0).astype("int64")
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    frame["duration_s"] = frame["duration_s"].astype("float64")
    as_text(frame, ("step", "state", "executor", "image", "error", "note"))
    # a column of blanks is clutter when shown (image: a local notebook), but code reads
    # status["note"] in any session: it stays in the frame
    return shown(frame, empty=NO_STEPS_YET, hide_blank=("image", "note"))


def _skipped_before(session: Session, row: Mapping[str, Any]) -> str | None:
    """The note of a step skipped because an upstream step failed, once every step it
    needs has ended well since (its error names a failure the table no longer shows)."""
    if row["state"] != "skipped":
        return None
    needs = session.graph[row["step"]].needs if row["step"] in session.graph else ()
    if not needs or any(session.latest.get(n, {}).get("state") not in _DONE for n in needs):
        return None
    return (f"{', '.join(needs)} ended well since it was skipped; run its cell "
            "(or %dagger run) to run it")


def _published_reads(reads: Callable[[], PublishedReads]) -> Mapping[str, Mapping[str, str]]:
    """Step -> {variable: the step publishing it} (none for a graph that cannot order)."""
    try:
        return reads().variables
    except DagnbError:
        return {}


def _waiting_for(session: Session, name: str, published: Mapping[str, str]) -> str | None:
    """``needs variable `scale` (cell 2 of pipeline.ipynb)`` for a Python step whose code
    reads notebook variables that do not exist yet (a kernel that just started); not one
    a step publishes (``published``), which the step's run runs first."""
    missing = [(variable, place) for variable, place
               in missing_variables(session.graph, session.namespace, name)
               if variable not in published]
    if not missing:
        return None
    return "needs variable " + ", ".join(
        f"`{variable}` ({place or 'not defined yet'})" for variable, place in missing)


def notebook_logs(session: Session, name: str, **options: Any) -> pd.DataFrame | str:
    """The step's lines in the latest run that had it (run or replayed from the cache);
    no rows, shown as a sentence, when it printed nothing; a sentence when it has not run
    (there is no run to read)."""
    session.graph[name]  # an unknown name: StepNotFoundError with "did you mean"
    session.refresh()
    run = session.step_runs.get(name)
    if run is None:
        return (f"step {name!r} has not run in this session yet; run its cell or %dagger run"
                + _before_this_session(name))
    frame = run.logs(name, **options)
    stream = options.get("stream")  # (a step that printed on the other stream alone)
    on = "" if stream is None else f" on {stream}"
    if run.states().get(name) == "cached":  # (its lines are the storing run's, replayed)
        said = (f"step {name!r} came from the cache in run {run.id}; the run that stored "
                f"its entry printed nothing{on}")
    else:
        said = f"step {name!r} printed nothing{on} in run {run.id}"
    return left_aligned(frame, empty=said)


def _before_this_session(step: str) -> str:
    """Where the lines of ``step`` in the newest recorded run of this notebook before
    this session are (a restart, yesterday's run, ``dagnb run NOTEBOOK``): what the
    terminal's ``dagnb logs`` shows of them; "" when no run of it is recorded."""
    from dagnb.runtime.history import graph_origin, last_run_of

    origin = graph_origin()
    if origin is None:
        return ""
    found = last_run_of(_records_folder(), "notebook", None, step, origin=origin)
    if found is None:
        return ""
    how = _ENDED.get(found.state, f"it ended {found.state}")
    said = f"; {how} in run {found.run}, before this session"
    if found.state in ("skipped", "pending"):  # (it printed nothing there)
        return said
    return f"{said}: !dagnb logs {_shown_file(origin)} {step} --run {found.run} shows its lines"


_ENDED = {"failed": "it failed", "succeeded": "it succeeded", "cached": "it came from the cache",
          "skipped": "it was skipped", "cancelled": "it was cancelled",
          "killed": "its run was killed"}


def _records_folder() -> Any:
    from dagnb.cache import local_folder

    return local_folder(None)


def _shown_file(path: str) -> str:
    """A notebook's path as a command names it: relative to here when it is below."""
    import os
    import shlex

    relative = os.path.relpath(path)
    return shlex.quote(path if relative.startswith("..") else relative)


def name_a_step(session: Session) -> str:
    """The line asking ``%dagger logs`` for a step: the graph's steps, the failed ones
    of their latest runs said."""
    names = _names(session)
    if not names:
        return f"%dagger logs NAME: {NO_STEPS_YET}"
    failed = [name for name in names if name in session.step_runs
              and session.step_runs[name].states().get(name) == "failed"]
    said = (f"; {listed([repr(name) for name in failed])} failed in its latest run"
            if failed else "")
    return f"%dagger logs NAME: name the step whose lines to show, one of {listed(names)}{said}"


def left_aligned(frame: pd.DataFrame, empty: str = "no lines") -> pd.DataFrame:
    """The same frame, displayed with its text left-aligned (log lines read as lines)."""
    return shown(frame, empty=empty, left=True)


def history(session: Session) -> pd.DataFrame:
    """Every run of the session: id, when, which steps, how many have not finished yet
    (``unfinished``: a --background run still going) and how each of the others ended."""
    import pandas as pd

    session.refresh()
    frame = pd.DataFrame(session.runs, columns=HISTORY_COLUMNS)
    frame["started"] = frame["started"].astype(_time_dtype(pd))  # (no runs: still times)
    counts = HISTORY_COLUMNS[3:]
    frame[counts] = frame[counts].astype("int64")
    as_text(frame, ("run", "steps"))
    return shown(frame, empty="no run yet in this session" + _runs_before_this_session())


def _runs_before_this_session() -> str:
    """What ``dagnb history`` lists of this notebook's runs before this session (a
    restart): said after "no run yet in this session" when there are some."""
    from dagnb.runtime.history import graph_origin, recorded_runs

    origin = graph_origin()
    if origin is None:
        return ""
    runs = recorded_runs(_records_folder(), "notebook", None, origin=origin)[0]
    if not runs:
        return ""
    many = f"{len(runs)} runs" if len(runs) > 1 else "1 run"
    return (f"; {many} of this notebook before it: !dagnb history {_shown_file(origin)} "
            "lists them")


def run_steps_frame(session: Session, given: str) -> pd.DataFrame:
    """``%dagger history --run RUN``: the steps of one run, of this session or one
    recorded before in the cache folder (a unique start or end of its id will do): how
    each ended, its cache entry, why it did not end well. A run still going shows its
    steps as they stand."""
    import pandas as pd

    from dagnb.cache.location import local_folder
    from dagnb.runtime.history import recorded_runs, run_id_meant, run_steps

    session.refresh()
    live = dict(session.live)
    records = {record.get("run"): record for record in recorded_runs(local_folder())[0]}
    wanted = run_id_meant(given, [*live, *records])
    if wanted in live:
        rows = _live_steps(live[wanted])
    elif wanted in records:
        rows = run_steps(records[wanted])
    else:
        raise DagnbError(f"--run {given!r}: no run of that id in this session, nor "
                         f"recorded in {str(local_folder())!r}; %dagger history lists "
                         "this session's runs")
    blank_as_none = [{name: value or None for name, value in row.items()} for row in rows]
    frame = pd.DataFrame(blank_as_none, columns=RUN_STEPS_COLUMNS)  # (None: hidden if all)
    as_text(frame, RUN_STEPS_COLUMNS)
    return shown(frame, empty=f"run {wanted} had no steps", hide_blank=("entry", "why"),
                 left=True)


def _live_steps(run: Any) -> list[dict[str, str]]:
    """The steps of a run still going, as :func:`run_steps` gives a recorded run's."""
    return [{"step": name, "state": row["state"], "entry": "",
             "why": row.get("error") or ""} for name, row in run.status_rows().items()]


def _time_dtype(pd: Any) -> Any:
    """The dtype of every frame's times (dagnb.cache.housekeeping.local_times)."""
    from dagnb.cache.housekeeping import local_zone

    return pd.DatetimeTZDtype("us", local_zone())


def shown(frame: pd.DataFrame, *, empty: str, hide_blank: tuple[str, ...] = (),
          left: bool = False) -> pd.DataFrame:
    """The same frame, every column kept, displayed (text and HTML) as a person reads it:
    the sentence ``empty`` when it has no rows (an empty frame, not a string, so code
    that slices it works in any session), columns among ``hide_blank`` left out when
    every value is missing, times as local clock times (the offset, the same on every
    row, is clutter), text left-aligned when ``left``."""
    frame = _display_class()(frame)
    frame._shown_as = {"empty": empty, "hide_blank": hide_blank, "left": left}
    return frame


@functools.cache
def _display_class() -> type[pd.DataFrame]:
    import pandas as pd

    class Shown(pd.DataFrame):
        _metadata: ClassVar[list[str]] = ["_shown_as"]  # (an attribute, not a column)

        @property
        def _constructor(self) -> type[pd.DataFrame]:
            return pd.DataFrame  # a slice or a computation is a plain frame again

        def __repr__(self) -> str:
            options, frame = self._shown_as, _readable(self)
            if not len(frame):
                return options["empty"]
            if not options["left"]:
                with _whole_notes():
                    return repr(frame)
            limits = _row_limits(len(frame))
            shown_rows = _shown_rows(frame, limits)
            widths = {c: int(shown_rows[c].map(_cut).str.len().max()) for c in frame.columns}
            formatters = {c: (lambda w: lambda v: f"{_cut(v):<{w}}")(widths[c])
                          for c in frame.columns}
            text = frame.to_string(index=False, justify="left", formatters=formatters,
                                   **limits)
            return "\n".join(row.rstrip() for row in text.splitlines())  # (the last column's)

        def _repr_html_(self) -> str | None:
            options, frame = self._shown_as, _readable(self)
            if not len(frame):
                return f"<p>{html.escape(options['empty'])}</p>"
            if not options["left"]:
                with _whole_notes():
                    return frame._repr_html_()
            limits = _row_limits(len(frame))
            text = frame.to_html(index=False, justify="left", max_rows=limits.get("min_rows"),
                                 show_dimensions=bool(limits),
                                 formatters=dict.fromkeys(frame.columns, _cut))
            return text.replace("<td>", "<td style='text-align:left'>")

    return Shown


def _whole_notes() -> Any:
    """pandas' display, its values shown up to :data:`SHOWN_CHARACTERS` rather than
    its 50 (a status note, an error, a plan's reason cut there lost what to do: "its
    inputs changed since it ran (%dagger plan ..."); a wider setting of the user's holds."""
    import pandas as pd

    width = pd.get_option("display.max_colwidth")
    wider = width is None or width >= SHOWN_CHARACTERS
    return pd.option_context("display.max_colwidth", width if wider else SHOWN_CHARACTERS)


def _row_limits(rows: int) -> dict[str, Any]:
    """The rows a frame of ``rows`` shows, as pandas' own repr does: all up to
    ``display.max_rows``, else the first and last of ``display.min_rows``, with its size
    (a step's 50,000 log lines put 20 MB into the cell and the saved notebook)."""
    import pandas as pd

    most = pd.get_option("display.max_rows")
    if most is None or rows <= most:
        return {}
    return {"max_rows": most, "min_rows": pd.get_option("display.min_rows") or most,
            "show_dimensions": True}


SHOWN_CHARACTERS = 500  # of a value in a left-aligned frame (a log line can be megabytes)


def _cut(value: Any) -> str:
    """A value as a left-aligned frame shows it: its first :data:`SHOWN_CHARACTERS` (the
    frame holds it whole); a line a progress bar redrew (``10%\\r50%\\r100%``) as a
    terminal shows it, its last drawing (each ``\\r`` broke the table's rows)."""
    text = str(value)
    if "\r" in text:
        text = as_terminal_left(text)  # (as the live view shows it)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}… ({len(text) - SHOWN_CHARACTERS} characters more)"


def _shown_rows(frame: pd.DataFrame, limits: Mapping[str, Any]) -> pd.DataFrame:
    """The rows ``to_string`` shows with ``limits`` (its first and last halves of
    ``min_rows``; one more each way, to be safe): each column is padded to the widest
    of those alone (one long line elsewhere padded every row shown to its width)."""
    if not limits:
        return frame
    half = limits["min_rows"] // 2 + 1
    return frame.iloc[list(range(half)) + list(range(len(frame) - half, len(frame)))]


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A plain copy of ``frame`` to display: blank hidden columns out, times local."""
    import pandas as pd

    plain = pd.DataFrame(frame)
    hidden = [c for c in frame._shown_as["hide_blank"]
              if c in plain and plain[c].isna().all()]
    plain = plain.drop(columns=hidden)
    for column in plain.select_dtypes("datetimetz").columns:
        plain[column] = plain[column].dt.tz_localize(None)  # the wall clock, no offset
    return plain
