"""The run history on disk: run records, lazy run folders, and pruning that leaves
live runs alone."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.runtime import history
from dagnb.runtime.events import EventLog
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


def test_a_run_records_its_final_states_in_the_records_log(workdir: Path) -> None:
    graph = Graph("rec", [Step("ok", run="true"), Step("bad", run="exit 3")])
    run = graph.run(cache=False, executor="local")
    lines = (runs_folder(workdir) / history.RECORDS_NAME).read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["run"] == run.id and record["graph"] == "rec"
    assert record["states"] == {"ok": "succeeded", "bad": "failed"}
    assert history.last_states(workdir / ".dagnb_cache", "rec") == record["states"]


def test_a_run_of_python_steps_that_write_no_file_makes_no_run_folder(workdir: Path) -> None:
    def write(name: str) -> None:
        from dagnb import current

        (current().out_dir / "f.txt").write_text(name)

    quiet = Graph("quiet", [Step("a", func=lambda: 1)]).run(cache=False, executor="local")
    assert quiet.ok and run_names(workdir) == set()
    wrote = Graph("wrote", [Step("b", func=lambda: write("b"))]).run(cache=False,
                                                                      executor="local")
    assert (wrote.outputs("b") / "f.txt").read_text() == "b"
    assert run_names(workdir) == {wrote.id}


def test_records_of_older_runs_in_their_folders_are_still_read(workdir: Path) -> None:
    folder = runs_folder(workdir) / "20260101-000000-000-abcdef"
    folder.mkdir(parents=True)
    (folder / history.RECORD_NAME).write_text(
        json.dumps({"graph": "old", "finished": 1.0, "states": {"a": "failed"}}))
    assert history.last_states(workdir / ".dagnb_cache", "old") == {"a": "failed"}


@pytest.mark.parametrize("finished", ['"2026-12-04 14:00"', "[1]", "true", "NaN", "Infinity"])
def test_a_record_whose_finished_is_no_time_sorts_as_the_oldest(
        tmp_path: Path, finished: str) -> None:
    """One record with text there (a hand edit, another tool) failed every reader of the
    log, dagnb history and --only-failed, on a TypeError comparing it with a number."""
    log = tmp_path / ".runs" / history.RECORDS_NAME
    history._append_record(log, {"run": "r1", "graph": "g", "finished": 0.5,
                                 "states": {"a": "failed"}})
    with open(log, "a") as handle:
        handle.write(f'{{"run": "r2", "graph": "g", "finished": {finished}, '
                     '"states": {"a": "succeeded"}, "params": {"n": 2}}\n')
    history._append_record(log, {"run": "r3", "graph": "g", "finished": 3.0,
                                 "states": {"b": "failed"}})
    every, _total = history.recorded_runs(tmp_path)
    assert [r["run"] for r in every] == ["r2", "r1", "r3"]
    assert [r["run"] for r in history.recorded_runs(tmp_path, "g")[0]] == ["r2", "r1", "r3"]
    assert history.last_states(tmp_path, "g") == {"a": "failed", "b": "failed"}
    assert history.last_params(tmp_path, "g") == {}
    assert history.last_run_of(tmp_path, "g", None, "b") == history.StepInRun("r3", "failed",
                                                                              None)
    assert history.finished_at(every[0]) is None


def test_pruning_compacts_the_log_keeping_each_graphs_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "_COMPACT_AT", 3)
    log = tmp_path / history.RECORDS_NAME
    for i, graph in enumerate(["g", "h", "h", "h", "h"]):
        history._append_record(log, {"graph": graph, "finished": float(i), "states": {}})
    with open(log, "a") as handle:
        handle.write('{"graph": "torn", "fini')  # a crash mid-record spoils only itself
    history._append_record(log, {"graph": "h", "finished": 9.0, "states": {"x": "failed"}})
    history.prune(tmp_path, keep=2)
    kept = [json.loads(line) for line in log.read_text().splitlines() if line]
    assert [(r["graph"], r["finished"]) for r in kept] == [("g", 0.0), ("h", 4.0), ("h", 9.0)]
    assert history.last_states(tmp_path.parent, "h") is None  # another cache folder


def test_last_states_of_a_workflow_file_are_its_own_runs_then_records_naming_no_file(
    tmp_path: Path,
) -> None:
    log = tmp_path / ".runs" / history.RECORDS_NAME
    q3, q4 = tmp_path / "q3.yml", tmp_path / "q4.yml"
    history._append_record(log, {"graph": "etl", "finished": 1.0, "states": {"old": "failed"}})
    history._append_record(log, {"graph": "etl", "source": str(q3), "finished": 2.0,
                                 "states": {"a": "failed"}})
    history._append_record(log, {"graph": "etl", "source": str(q4), "finished": 3.0,
                                 "states": {"a": "succeeded"}})
    assert history.last_states(tmp_path, "etl", q3) == {"old": "failed", "a": "failed"}
    assert history.last_states(tmp_path, "etl", q4) == {"old": "failed", "a": "succeeded"}
    assert history.last_states(tmp_path, "etl") == {"old": "failed"}  # a graph of no file


def test_pruning_keeps_the_newest_record_of_each_workflow_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "_COMPACT_AT", 2)
    log = tmp_path / history.RECORDS_NAME
    for i, source in enumerate(["q3.yml", "q4.yml", "q4.yml", "q4.yml"]):
        history._append_record(log, {"graph": "etl", "source": source, "finished": float(i),
                                     "states": {}})
    history.prune(tmp_path, keep=1)
    kept = [json.loads(line) for line in log.read_text().splitlines() if line]
    assert [(r["source"], r["finished"]) for r in kept] == [("q3.yml", 0.0), ("q4.yml", 3.0)]


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


def test_one_run_in_slack_prunes_in_a_thread_while_it_runs_done_before_it_returns(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pruned: list[tuple[str, bool]] = []
    release = workdir / "release"

    def prune(runs: Path) -> None:  # the step still runs: it waits for the file
        pruned.append((threading.current_thread().name, release.exists()))

    monkeypatch.setattr(history, "prune", prune)
    one_in = history.PRUNE_SLACK + 1
    monkeypatch.setattr(history, "_draw", iter([1.5 / one_in, 0.5 / one_in]).__next__)
    waiting = f"for i in $(seq 600); do [ -f {release} ] && exit 0; sleep 0.01; done; exit 1"
    graph = Graph("two", [Step("a", run="true")])
    graph.run(cache=False, executor="local")
    assert pruned == []  # drawn out
    run = start_background(Graph("two", [Step("a", run=waiting)]), cache=False,
                           executor="local")
    wait_until(lambda: len(pruned) == 1)  # while its step runs
    release.write_text("")
    assert run.wait(30).ok
    assert pruned == [("dagnb-prune", False)]
    assert "dagnb-prune" not in {t.name for t in threading.enumerate()}  # joined


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
        assert len(run_names(workdir)) == 2  # the live one and the newest
        assert long.id in run_names(workdir)
    finally:
        release.write_text("")
        assert long.wait(30).ok
    assert Graph("short", [Step("s", run="true")]).run(cache=False, executor="local").ok
    assert long.id not in run_names(workdir)  # ended: an old run like any


def test_a_finished_runs_folder_is_not_leased_again(workdir: Path) -> None:
    run = Graph("done", [Step("a", run="true")]).run(cache=False, executor="local")
    folder = run.workspace  # read after the run: must not hold the folder as live
    assert history.prune(folder.parent, keep=0) == [folder]


def test_a_run_that_made_no_folder_starts_no_prune(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pruned: list[Path] = []
    monkeypatch.setattr(history, "prune", pruned.append)
    monkeypatch.setattr(history, "_draw", lambda: 0.0)  # every run that may prune does
    assert Graph("py", [Step("a", func=lambda: 1)]).run(cache=False, executor="local").ok
    assert Graph("sh", [Step("s", run="true")]).run(cache=False, executor="local").ok
    assert pruned == [runs_folder(workdir)]


def test_a_record_appended_after_the_log_was_rewritten_or_removed_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "_COMPACT_AT", 1)
    log = tmp_path / ".runs" / history.RECORDS_NAME
    for i in range(3):  # the log is kept open between appends
        history._append_record(log, {"graph": f"g{i}", "finished": float(i), "states": {}})
    history.prune(tmp_path / ".runs", keep=1)  # rewritten and renamed into place
    history._append_record(log, {"graph": "after", "finished": 9.0, "states": {"a": "failed"}})
    assert history.last_states(tmp_path, "after") == {"a": "failed"}
    shutil.rmtree(tmp_path / ".runs")
    history._append_record(log, {"graph": "again", "finished": 10.0, "states": {}})
    assert [json.loads(line)["graph"] for line in log.read_text().split()] == ["again"]


def test_a_prune_never_brings_back_a_cache_folder_removed_as_it_opens_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal (a TemporaryDirectory left right after its run) lands between the
    prune's look and its open: the prune must neither make the log again nor its
    folders, which would also stop the removal with "Directory not empty"."""
    cache = tmp_path / "cache"
    log = cache / ".runs" / history.RECORDS_NAME
    history._append_record(log, {"graph": "g", "finished": 1.0, "states": {}})
    real_open = os.open

    def removed_first(path: object, *args: object, **kwargs: object) -> int:
        if os.fspath(path) == os.fspath(log):  # type: ignore[arg-type]
            shutil.rmtree(cache, ignore_errors=True)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(history.os, "open", removed_first)
    assert history.prune(cache / ".runs", keep=1) == []
    assert not cache.exists()


def test_a_record_goes_to_the_log_that_replaced_the_open_one_while_it_kept_a_link(
    tmp_path: Path,
) -> None:
    """As on a network file system, where a file replaced from another host lives on
    under a ``.nfs`` name: the open log still has a link, yet is no longer the log."""
    log = tmp_path / ".runs" / history.RECORDS_NAME
    history._append_record(log, {"graph": "before", "finished": 1.0, "states": {}})
    os.link(log, tmp_path / "old-log")  # the replaced file keeps a link
    replacement = tmp_path / "new-log"
    replacement.write_text("")
    os.replace(replacement, log)
    history._append_record(log, {"graph": "after", "finished": 2.0, "states": {}})
    assert [json.loads(line)["graph"] for line in log.read_text().split()] == ["after"]


def test_only_failed_reads_each_steps_latest_state_not_only_the_newest_runs(
        workdir: Path) -> None:
    """A step that failed stays failed after later runs of other steps (a notebook's
    cells, a CLI run of one target): a restarted kernel or a new process runs it again."""
    def build() -> Graph:
        flag = workdir / "fixed"
        return Graph("latest", [Step("shaky", run=f"test -f {flag}"),
                                Step("other", run="true")])

    assert build().run(["shaky"], executor="local").failed == ["shaky"]
    assert build().run(["other"], executor="local").failed == []
    (workdir / "fixed").write_text("")
    again = build().run(only_failed=True, executor="local")  # as a new process would
    assert again.states() == {"shaky": "succeeded"}


def test_a_listener_that_raises_changes_no_step_state(workdir: Path) -> None:
    """A view that fails (a progress printer whose stdout closed) is dropped with one
    warning; the steps go on as if it had not been there."""
    def broken(event: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    graph = Graph("loud", [Step("a", run="true"), Step("b", run="true", needs=["a"])])
    with pytest.warns(UserWarning, match="raised BrokenPipeError") as caught:
        run = graph.run(cache=False, executor="local", on_event=broken)
    assert run.states() == {"a": "succeeded", "b": "succeeded"}
    assert len(caught) == 1
    records = (runs_folder(workdir) / history.RECORDS_NAME).read_text().splitlines()
    assert json.loads(records[-1])["states"] == {"a": "succeeded", "b": "succeeded"}


def test_the_other_listeners_still_hear_after_one_raised() -> None:
    log, heard = EventLog(), []
    log.subscribe(lambda event: 1 / 0)
    log.subscribe(lambda event: heard.append(event.step))
    with pytest.warns(UserWarning, match="ZeroDivisionError"):
        log.emit("state", "a", state="running")
    log.emit("state", "b", state="running")  # the raiser, dropped, is not called again
    assert heard == ["a", "b"]


def test_only_failed_reruns_the_steps_a_cut_short_run_never_finished(workdir: Path) -> None:
    """Pending, queued or running in the record: the run ended before them (its process
    stopped), so they are not done, as failed ones are not."""
    states = {"done": "succeeded", "hit": "cached", "waiting": "pending", "next": "queued",
              "midway": "running"}
    log = runs_folder(workdir) / history.RECORDS_NAME
    log.parent.mkdir(parents=True)
    history._append_record(log, {"run": "r1", "graph": "cut", "finished": 1.0, "states": states})
    graph = Graph("cut", [Step(name, run="true") for name in states])
    again = graph.run(only_failed=True, executor="local")
    assert sorted(again.states()) == ["midway", "next", "waiting"]


_SHORT_PROCESS = """
import sys
from dagnb import Graph, Step
from dagnb.runtime import history
graph = Graph("g", [Step("s", run="echo x > $DAGNB_OUT/f", cache=False)])
history._draw = lambda: 1.0  # no prune ...
for _ in range(history.KEEP_RUNS + 5):
    graph.run(executor="local")
history._draw = lambda: 0.0  # ... until the last run, right before the process ends
graph.run(executor="local")
"""


def test_a_first_run_of_a_python_chain_with_the_cache_on_makes_no_run_folder(
        workdir: Path) -> None:
    # each result goes on in memory: listing the entries for eviction made a folder per
    # run and wrote a line per step, a third of a Python step's cost on a first run
    graph = Graph("chain", [Step("a", func=lambda: 1)])
    graph.step(lambda a: a + 1, name="b")
    graph.step(lambda b: b + 1, name="c")
    run = graph.run(executor="local")
    assert run.result("c") == 3 and run_names(workdir) == set()
    # a shell step reads its upstream Python step's entry from disk: listed before it starts
    mixed = Graph("mixed", [Step("d", func=lambda: 4),
                            Step("e", run='cat "$DAGNB_IN/d/result.json"', needs=["d"])])
    done = mixed.run(executor="local")
    assert done.ok and run_names(workdir) == {done.id}
    uses = (runs_folder(workdir) / done.id / ".uses").read_text().splitlines()
    assert [line.split("\t")[0] for line in uses if "\t" in line] == ["d", "e"]
    assert [line for line in uses if "\t" not in line] == ["+d", "+e"]  # (stored by it)
    # a result too big for a pack gets a folder, which a step may read by its path
    # (dagnb.current().inputs): listed as well
    big = Graph("big", [Step("f", func=lambda: "x" * 300_000)])
    big.step(lambda f: len(f), name="g")
    ran = big.run(executor="local")
    assert ran.result("g") == 300_000 and ran.id in run_names(workdir)
    uses = (runs_folder(workdir) / ran.id / ".uses").read_text().splitlines()
    assert [line.split("\t")[0] for line in uses if "\t" in line] == ["f", "g"]


def test_a_short_process_prunes_before_it_ends(workdir: Path) -> None:
    """``dagnb run`` ends right after its run: the prune it drew still happens."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _SHORT_PROCESS], cwd=workdir, check=True,
                   timeout=120)
    runs = workdir / ".dagnb_cache" / ".runs"
    assert len([p for p in runs.iterdir() if p.is_dir()]) == history.KEEP_RUNS


def test_run_ids_are_unique_sort_by_start_and_are_not_shared_with_a_forked_child() -> None:
    from dagnb.runtime.prepare import _new_run_id

    ids = [_new_run_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
    assert [i[:19] for i in ids] == sorted(i[:19] for i in ids)  # to the millisecond
    stamp = time.strftime("%Y%m%d-%H%M%S")
    assert ids[-1][:15] <= stamp and len(ids[-1]) == len("20261201-150440-170-f51d14")
    if not hasattr(os, "fork"):
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then gone without pytest's cleanup
        os.write(write, " ".join(_new_run_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0
    child = os.read(read, 1000).decode().split()
    os.close(read)
    parent = [_new_run_id() for _ in range(3)]
    assert len(child) == 3
    assert {i[-6:] for i in child}.isdisjoint(i[-6:] for i in parent)


def test_a_second_caller_of_make_returns_once_the_kept_uses_are_written(tmp_path, monkeypatch):
    """The run folder took its lease before writing the uses kept so far to ``.uses``,
    and make() returns at once, unlocked, once leased: a step's thread asking then for
    its inputs could read an entry that no ``.uses`` listed yet for an eviction to
    leave alone."""
    folder = history.RunFolder(tmp_path, "20260101-000000-000-abcdef")
    folder.note_use("up", "k" * 64)
    writing = threading.Event()
    start_uses = history.RunFolder._start_uses

    def slow_start_uses(self: history.RunFolder, *args: object, **kwargs: object) -> None:
        writing.set()
        time.sleep(0.2)  # (an open and a write, on a slow disk)
        start_uses(self, *args, **kwargs)

    monkeypatch.setattr(history.RunFolder, "_start_uses", slow_start_uses)
    first = threading.Thread(target=folder.make)
    first.start()
    assert writing.wait(5)
    folder.make()  # (another thread's, as the first writes)
    uses = folder.path / history.RUN_USES
    listed = uses.read_text() if uses.exists() else None
    first.join()
    assert listed == f"up\t{'k' * 64}\n"
