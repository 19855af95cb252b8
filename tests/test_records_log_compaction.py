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


def test_a_runs_record_is_compacted_without_being_parsed(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a record is a run of is in its line's head, as dagnb writes it; a torn line
    (a crash mid-record) and one written otherwise (an older version) are parsed."""
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
    assert [line[:15] for line in parsed] == [b'{"graph": "olde', b'{"run":"x","gra']
    kept = [r["graph"] for r in map(json.loads, log.read_text().splitlines())]
    assert kept == ["many", "older"]  # the newest two whole ones
