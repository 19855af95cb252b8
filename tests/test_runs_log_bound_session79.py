"""Runs that make no folder of their own (a step that prints nothing and writes no
file) still keep the runs logs bounded: once the records log passes
``_PRUNE_LOG_BYTES``, a drawn run's end compacts it. That prune had been handed the
logs' folder as text, which ``prune`` cannot join paths to: the ``TypeError`` was
swallowed as housekeeping, and a kernel's or a script's logs grew by two lines a run,
for ever (2.4 MB of records and 3.2 MB of start lines after 12,000 runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.runtime import history


def _quiet(**_: object) -> int:
    return 1


def test_runs_that_make_no_folder_compact_a_records_log_grown_past_its_bound(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_PRUNE_LOG_BYTES", 2_000)
    graph = Graph("quiet", [Step("a", func=_quiet)])
    runs = workdir / ".dagnb_cache" / ".runs"
    monkeypatch.setattr(history, "_draw", lambda: 1.0)  # none drawn: the log grows
    ids = [graph.run(cache=False, executor="local").id for _ in range(history._COMPACT_AT + 5)]
    records = runs / history.RECORDS_NAME
    grown = records.stat().st_size
    assert not any(p.is_dir() for p in runs.iterdir())  # (no run made its folder)
    assert grown > history._PRUNE_LOG_BYTES
    monkeypatch.setattr(history, "_draw", lambda: 0.0)  # the next run is drawn
    last = graph.run(cache=False, executor="local")
    assert records.stat().st_size < grown
    kept = [r["run"] for r in history._logged(records)]
    assert kept[-1] == last.id
    assert len(kept) <= history.KEEP_RUNS + 1  # the newest (and the workflow's newest)
    assert ids[0] not in kept
    started = (runs / history.STARTED_NAME).read_text()
    assert ids[0] not in started  # the start lines of ended runs went too


def test_a_records_log_under_its_bound_is_left_as_it_is(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_draw", lambda: 0.0)  # every run drawn
    graph = Graph("quiet", [Step("a", func=_quiet)])
    ids = [graph.run(cache=False, executor="local").id for _ in range(5)]
    records = workdir / ".dagnb_cache" / ".runs" / history.RECORDS_NAME
    assert [r["run"] for r in history._logged(records)] == ids
