"""What run folders keep once their run ended: a stored step's params, links and emptied
output folder go (the cache holds what it made), a failed step's logs stay; and pruning
bounds the folders' bytes, the newest kept first, never a live run's."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.cli import main
from dagnb.runtime import history

STEPS = 30


def _runs(workdir: Path) -> Path:
    return workdir / ".dagnb_cache" / ".runs"


def _inodes(folder: Path) -> int:
    return sum(len(names) + len(folders) for _, folders, names in os.walk(folder))


def _disk_bytes(folder: Path) -> int:
    """What the folder takes on disk, as du counts it (blocks, links not followed)."""
    paths = [folder, *(Path(top, name) for top, folders, names in os.walk(folder)
                       for name in [*folders, *names])]
    return sum(path.lstat().st_blocks * 512 for path in paths)


def _no_random_prune(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_draw", lambda: 1.0)  # only a prune a run owes


def test_a_run_whose_steps_were_all_stored_leaves_a_small_folder_after_the_next_run(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_random_prune(monkeypatch)
    graph = Graph("many", [Step("root", run="echo root; echo data > $DAGNB_OUT/f"),
                           *(Step(f"s{i}", run=f"echo line {i}", needs=["root"])
                             for i in range(STEPS))])
    run = graph.run(executor="local", max_concurrency=8)
    assert run.ok
    folder = _runs(workdir) / run.id
    before, inodes = _disk_bytes(folder), _inodes(folder)
    assert inodes > 4 * STEPS  # (each: its folder, params.json, in/, its link, out/)
    assert Graph("next", [Step("n", run="true")]).run(executor="local").ok  # it prunes
    after = _disk_bytes(folder)
    assert after * 10 < before, (before, after)
    assert _inodes(folder) <= 3  # (.size, .uses, and nothing else)
    # what the finished run hands its caller still reads: lines and files from the cache
    assert run.logs("s7")["line"].tolist() == ["line 7"]
    assert (run.outputs("root") / "f").read_text() == "data\n"


FAILING = """\
steps:
  ok: {run: 'echo fine'}
  flaky:
    run: 'echo "try $DAGNB_ATTEMPT"; [ "$DAGNB_ATTEMPT" -gt 1 ]'
    retries: 1
  bad:
    run: 'echo "the detail of why" >&2; exit 3'
    needs: [ok]
"""


def test_a_failed_steps_logs_stay_readable_after_the_prune_its_stored_steps_go(
        workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _no_random_prune(monkeypatch)
    (workdir / "wf.yml").write_text(FAILING)
    assert main(["run", "wf.yml", "--executor", "local"]) == 1
    assert Graph("next", [Step("n", run="true")]).run(executor="local").ok  # it prunes
    (folder,) = [p for p in _runs(workdir).iterdir() if p.is_dir() and (p / "bad").is_dir()]
    assert not (folder / "ok").exists()  # stored: nothing of it is read from here
    assert sorted(p.name for p in (folder / "flaky").iterdir()) == ["logs-1.jsonl"]
    capsys.readouterr()
    assert main(["logs", "wf.yml", "bad"]) == 0
    assert "the detail of why" in capsys.readouterr().out
    assert main(["logs", "wf.yml", "flaky"]) == 0  # failed attempt here, then the entry's
    assert capsys.readouterr().out.split() == ["──", "attempt", "1", "──", "try", "1",
                                               "──", "attempt", "2", "──", "try", "2"]


def _folder_of(runs: Path, name: str, size: int, *, finished: bool = True) -> Path:
    folder = runs / name
    (folder / "step").mkdir(parents=True)
    (folder / "step" / "logs-1.jsonl").write_bytes(b"x" * size)
    if finished:
        _finished(runs, name)
    return folder


def _finished(runs: Path, name: str) -> None:
    """The record a run writes as it ends (a live run's folder has none yet)."""
    history._append_record(runs / history.RECORDS_NAME, {"run": name, "states": {}})


def test_the_size_bound_prunes_the_oldest_folders_beyond_it_and_never_a_live_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "KEEP_RUNS_BYTES", 350_000, raising=False)
    runs = tmp_path / ".runs"
    folders = [_folder_of(runs, f"2026-{i}", 100_000, finished=i != 1) for i in range(6)]
    live = os.open(folders[1], os.O_RDONLY)  # as a run going on holds its lease
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        removed = history.prune(runs)
    finally:
        os.close(live)
    _finished(runs, "2026-1")
    # the newest three fit (with their folders' own blocks); the older go, but the live one
    assert sorted(p.name for p in removed) == ["2026-0", "2026-2"]
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["2026-1", "2026-3", "2026-4",
                                                                    "2026-5"]
    # the newest finished folder is kept whatever its size: the last run's logs
    monkeypatch.setattr(history, "KEEP_RUNS_BYTES", 1, raising=False)
    assert sorted(p.name for p in history.prune(runs)) == ["2026-1", "2026-3", "2026-4"]
    assert [p.name for p in runs.iterdir() if p.is_dir()] == ["2026-5"]



QUIET = "steps:\n  quiet: {run: 'echo said', cache: false}\n"
PRUNED = "or the folder was pruned since (the newest 20 runs' folders are kept, up to 1 GiB)"


def _quiet_run_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(folder)
    (folder / "wf.yml").write_text(QUIET)
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    (made,) = (path for path in _runs(folder).iterdir() if path.is_dir())
    (_runs(folder) / "29991231-000000-000-000001").mkdir()  # a newer run, < KEEP_RUNS
    _finished(_runs(folder), "29991231-000000-000-000001")
    return made


def test_logs_of_an_unstored_step_whose_folder_the_size_bound_took_says_it_may_be_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    made = _quiet_run_folder(tmp_path, monkeypatch)
    assert history.prune(_runs(tmp_path), max_bytes=1) == [made]  # (the newest stays)
    capsys.readouterr()
    assert main(["logs", "wf.yml", "quiet"]) == 1
    assert PRUNED in capsys.readouterr().err


def test_logs_of_an_unstored_step_with_an_older_folder_left_says_it_printed_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    made = _quiet_run_folder(tmp_path, monkeypatch)
    (_runs(tmp_path) / "19700101-000000-000-000001").mkdir()  # no prune takes a newer one
    shutil.rmtree(made)  # (as if the run never made it) and keeps an older one
    capsys.readouterr()
    assert main(["logs", "wf.yml", "quiet"]) == 0
    err = capsys.readouterr().err
    assert err.endswith("it printed nothing\n") and PRUNED not in err


def test_the_size_bound_takes_no_lease_and_leaves_a_run_with_no_record_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a run that just made its folder takes its lease a moment later: a prune that took
    # it first, to see whether the run was live, left the run unleased, and wrote a
    # size note into the live folder; and a finished folder it held while trimming it
    # looked live to another run, whose --refresh then kept its new result unstored)
    runs = tmp_path / ".runs"
    _folder_of(runs, "2026-1", 10)
    _folder_of(runs, "2026-2", 10)
    just_made = _folder_of(runs, "2026-3", 10, finished=False)
    leased = []
    monkeypatch.setattr(history, "_lease", lambda folder: leased.append(folder.name))
    monkeypatch.setattr(history, "KEEP_RUNS", 3)  # (no folder past the count to remove)
    assert history.prune(runs, max_bytes=1) == [runs / "2026-1"]
    assert leased == [] and just_made.is_dir()
    assert not (just_made / history.SIZE_NAME).exists()
