"""The records log of a cache folder whose runs have many steps: a 100,000-step run's
record is 9 MB, and keeping 20 of them made every drawn prune read, parse and rewrite
180 MB (2 s of a cached re-run that cost 5). Compaction keeps the newest records that
fit in ``_COMPACT_BYTES`` (and the newest of each workflow), and reads what a record is
a run of from the head of its line, not by parsing the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.runtime import history


def _record(graph: str, finished: float, steps: int, source: str | None = None) -> dict:
    workflow = {"source": source} if source else {"origin": "script.py"}
    return {"run": f"r{finished:g}", "graph": graph, **workflow, "finished": finished,
            "states": {f"s{i}": "cached" for i in range(steps)}}


def _kept(log: Path) -> list[tuple[str, float]]:
    return [(r["graph"], r["finished"]) for r in map(json.loads, log.read_text().split())]


def test_compaction_keeps_the_newest_records_that_fit_and_each_workflows_newest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_COMPACT_BYTES", 50_000)
    log = tmp_path / history.RECORDS_NAME
    history._append_record(log, _record("small", 0, 1))
    for i in range(1, 6):  # some 20 KB each: two fit
        history._append_record(log, _record("big", i, 1_200))
    history._append_record(log, _record("other", 6, 2_000, source="q.yml"))  # 34 KB
    history.prune(tmp_path, keep=4)
    assert _kept(log) == [("small", 0), ("big", 5), ("other", 6)]


def test_the_newest_record_is_kept_whatever_its_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_COMPACT_BYTES", 1_000)
    log = tmp_path / history.RECORDS_NAME
    for i in range(3):
        history._append_record(log, _record("big", i, 500))
    history._append_record(log, _record("small", 3, 1))
    monkeypatch.setattr(history, "_COMPACT_AT", 1)
    history.prune(tmp_path, keep=20)
    assert _kept(log) == [("big", 2), ("small", 3)]  # ("big", 2): its workflow's newest


def test_runs_records_are_compacted_parsing_one_a_workflow(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a record is a run of is in its line's head, as dagnb writes it: of a
    workflow's, its newest alone is parsed (to be sure it is whole); a torn line (a
    crash mid-record) and one written otherwise (an older version) are parsed."""
    graph = Graph("many", [Step(f"s{i}", func=lambda: 1) for i in range(3)])
    runs = workdir / ".dagnb_cache" / ".runs"
    for _ in range(3):
        assert graph.run(cache=False, executor="local").ok
    log = runs / history.RECORDS_NAME
    with open(log, "a") as handle:
        handle.write('\n{"graph": "older", "finished": 1.0, "states": {}}\n{"run":"x","gra')
    parsed: list[bytes] = []
    real = history._parsed
    monkeypatch.setattr(history, "_parsed", lambda line: parsed.append(line) or real(line))
    monkeypatch.setattr(history, "_COMPACT_AT", 1)
    history.prune(runs, keep=2)
    assert sum(b'"graph":"many"' in line for line in parsed) == 1  # of three
    assert {line[:15] for line in parsed} == {b'{"run":"x","gra', b'{"graph": "olde',
                                              b'{"run":"' + graph.last_run.id[:7].encode()}
    kept = [r["graph"] for r in map(json.loads, log.read_text().splitlines())]
    assert kept == ["many", "older"]  # the newest two whole ones


def _line(run: str, graph: str, size: int = 1) -> dict:
    return {"run": run, "graph": graph, "origin": "s.py", "finished": 1.0,
            "states": {f"s{i}": "failed" for i in range(size)}}


def _runs(log: Path) -> list[str]:
    return [r["run"] for r in map(json.loads, log.read_text().split())]


def test_a_big_record_left_out_leaves_the_older_small_ones_and_those_of_kept_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(A review's finding: the first record that did not fit ended the taking, and the
    small records of runs whose folders are kept went: their logs could not be read,
    and the prune's size bound took those folders for live ones.)"""
    monkeypatch.setattr(history, "_COMPACT_BYTES", 10_000)
    log = tmp_path / history.RECORDS_NAME
    for run, graph, size in (("r1", "small", 1), ("r2", "small", 1), ("r3", "big", 800),
                             ("r4", "big", 800), ("r5", "small", 1)):
        history._append_record(log, _line(run, graph, size))  # (a big one: 12 KB)
    (tmp_path / "r1").mkdir()  # a run's folder, kept
    history.prune(tmp_path, keep=4)
    # r5, r2: of the newest four, those that fit (r3, r4 do not); r4: its workflow's
    # newest; r1: its folder's
    assert _runs(log) == ["r1", "r2", "r4", "r5"]


def test_a_record_torn_just_after_a_brace_does_not_hide_its_workflows_newest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line cut short just after ``}`` (a full disk, a kill mid-write) has the head
    and the end of a whole one: taken for its workflow's newest, it dropped the record
    --only-failed and dagnb logs read."""
    monkeypatch.setattr(history, "_COMPACT_AT", 1)
    log = tmp_path / history.RECORDS_NAME
    history._append_record(log, _line("w1", "W"))
    for i in range(3):
        history._append_record(log, _line(f"o{i}", "other"))
    whole = history._COMPACT(_line("w2", "W") | {"errors": {"s0": "boom"}})
    with open(log, "a") as handle:
        handle.write(whole[:whole.index(',"errors"')] + "\n")  # ends with the states' }
    history.prune(tmp_path, keep=2)
    assert _runs(log) == ["w1", "o1", "o2"]
    assert history.last_states(tmp_path.parent, "W") is None  # (another folder's)
