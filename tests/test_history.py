"""The run history on disk: run records, lazy run folders, and pruning that leaves
live runs alone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from threading import current_thread

import pytest

from dagnb import Graph, Step
from dagnb.runtime import history
from dagnb.runtime.prepare import prepare, start_background

pytestmark = pytest.mark.usefixtures("workdir")


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def runs_folder(workdir: Path) -> Path:
    return workdir / ".dagnb_cache" / ".runs"


def run_names(workdir: Path) -> set[str]:
    return {p.name for p in runs_folder(workdir).iterdir() if p.is_dir()}


def test_a_run_records_its_final_states_in_its_folder(workdir: Path) -> None:
    graph = Graph("rec", [Step("ok", run="true"), Step("bad", run="exit 3")])
    run = graph.run(cache=False, executor="local")
    record = json.loads((run.workspace / history.RECORD_NAME).read_text())
    assert record["graph"] == "rec"
    assert record["states"] == {"ok": "succeeded", "bad": "failed"}


def test_only_failed_in_a_new_graph_object_reads_the_last_run_from_disk(workdir: Path) -> None:
    def build() -> Graph:
        flag = workdir / "fixed"
        return Graph("disk", [
            Step("good", run="true"),
            Step("shaky", run=f"test -f {flag}"),
        ])

    assert build().run(executor="local").failed == ["shaky"]
    (workdir / "fixed").write_text("")
    again = build().run(only_failed=True, executor="local")  # as a new process would
    assert again.states() == {"shaky": "succeeded"}


def test_the_run_folder_is_made_only_when_needed(workdir: Path) -> None:
    graph = Graph("lazy", [Step("a", run="true")])
    prepare(graph, cache=False, executor="local")  # validated, never run
    assert not runs_folder(workdir).exists()


def test_every_event_reaches_on_event_from_the_first(workdir: Path) -> None:
    seen: list[tuple[str, str | None]] = []
    graph = Graph("ev", [Step("a", run="true")])
    graph.run(cache=False, executor="local", on_event=lambda e: seen.append((e.kind, e.step)))
    assert seen[0] == ("run", None) and ("state", "a") in seen and seen[-1] == ("run", None)


def test_pruning_keeps_the_newest(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"2026-{i}").mkdir()
    removed = history.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["2026-0", "2026-1", "2026-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-3", "2026-4"]


def test_one_run_in_slack_prunes_and_in_a_thread_off_the_hot_path(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pruned: list[str] = []
    monkeypatch.setattr(history, "prune", lambda runs: pruned.append(current_thread().name))
    one_in = history.PRUNE_SLACK + 1
    monkeypatch.setattr(history, "_draw", iter([1.5 / one_in, 0.5 / one_in]).__next__)
    graph = Graph("two", [Step("a", run="true")])
    graph.run(cache=False, executor="local")
    graph.run(cache=False, executor="local")
    wait_until(lambda: len(pruned) == 1)
    assert pruned == ["dagnb-prune"]


def test_pruning_leaves_a_live_runs_folder_alone(workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "KEEP_RUNS", 1)
    monkeypatch.setattr(history, "PRUNE_SLACK", 0)  # every run prunes as it ends
    release = workdir / "release"
    waiting = f"for i in $(seq 600); do [ -f {release} ] && exit 0; sleep 0.05; done; exit 1"
    long = start_background(Graph("long", [Step("wait", run=waiting)]),
                            cache=False, executor="local")
    wait_until(lambda: runs_folder(workdir).exists())  # its step has started
    try:
        for _ in range(3):  # each ends by pruning down to the newest folder
            assert Graph("short", [Step("s", run="true")]).run(cache=False,
                                                               executor="local").ok
        wait_until(lambda: len(run_names(workdir)) <= 2)  # the live one and the newest
        assert long.id in run_names(workdir)
    finally:
        release.write_text("")
        assert long.wait(30).ok
    assert Graph("short", [Step("s", run="true")]).run(cache=False, executor="local").ok
    wait_until(lambda: long.id not in run_names(workdir))  # ended: an old run like any


def test_a_finished_runs_folder_is_not_leased_again(workdir: Path) -> None:
    run = Graph("done", [Step("a", run="true")]).run(cache=False, executor="local")
    folder = run.workspace  # read after the run: must not hold the folder as live
    assert history.prune(folder.parent, keep=0) == [folder]
