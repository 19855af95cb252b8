"""An entry a live run hands its steps is not replaced or removed under them.

A step reads its upstream through ``$DAGNB_IN/<up>``, a link to the entry's folder:
a ``--refresh`` or a ttl expiry in another process must leave that folder as it was
while the run is live (the new result is not stored, and the refresh says so). And two
writers of one key: a save that meets the other's swap window is still a save.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagnb.cache import StepKey, Store
from dagnb.cache.housekeeping import RUN_USES, RUNS_STARTED

# ------------------------------------------------------------------ end to end (processes)

# ``down`` reads a.txt, says so, waits for the test's go, then reads b.txt for a while:
# every version of up it met, and reads that found no file, go to report.json
_WORKFLOW = """\
name: live63
steps:
  up:{ttl}
    run: |
      T=$(python3 -c 'import uuid;print(uuid.uuid4().hex)')
      echo "$T" > "$DAGNB_OUT/a.txt"
      head -c 200000 /dev/zero > "$DAGNB_OUT/big.bin"
      echo "$T" > "$DAGNB_OUT/b.txt"
  down:
    needs: [up]
    run: |
      python3 - <<'PY'
      import json, os, time
      d = os.path.join(os.environ["DAGNB_IN"], "up")
      a = open(os.path.join(d, "a.txt")).read().strip()
      open("{marks}/reading", "w").close()
      end = time.time() + 60
      while not os.path.exists("{marks}/go") and time.time() < end:
          time.sleep(0.02)
      seen, missing = {{a}}, 0
      end = time.time() + 0.5
      while time.time() < end:
          try:
              seen.add(open(os.path.join(d, "b.txt")).read().strip())
          except FileNotFoundError:
              missing += 1
      b = open(os.path.join(d, "b.txt")).read().strip()
      report = {{"a": a, "b": b, "versions": len(seen), "missing": missing}}
      open("{marks}/report.json", "w").write(json.dumps(report))
      open(os.path.join(os.environ["DAGNB_OUT"], "pair.txt"), "w").write(a + " " + b)
      PY
"""


def _dagnb(*args: str) -> list[str]:
    return [sys.executable, "-m", "dagnb", *args]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _wait_for(path: Path, reader: subprocess.Popen[str], seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        if reader.poll() is not None:
            out, err = reader.communicate()
            pytest.fail(f"run B ended before its step read: {out}\n{err}")
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Any]:
    marks = tmp_path / "marks"
    marks.mkdir()

    def make(ttl: str | None = None) -> tuple[Path, Path, Path]:
        text = _WORKFLOW.format(ttl="" if ttl is None else f"\n    ttl: {ttl}",
                                marks=marks)
        (tmp_path / "wf.yml").write_text(text)
        return tmp_path / "wf.yml", tmp_path / "cc", marks

    yield make


def _start_reader(workflow: Path, cache: Path) -> subprocess.Popen[str]:
    """Run B, whole: ``up`` from the cache, ``down`` reading it until told to go."""
    return subprocess.Popen(_dagnb("run", str(workflow), "--cache-dir", str(cache)),
                            cwd=workflow.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(reader: subprocess.Popen[str], marks: Path) -> tuple[str, dict[str, Any]]:
    (marks / "go").touch()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, out + err
    return out, json.loads((marks / "report.json").read_text())


def _assert_one_version(out: str, report: dict[str, Any]) -> None:
    """Run B's step saw one version of up, whole, and B served up from the cache."""
    assert report["versions"] == 1 and report["missing"] == 0, report
    assert report["a"] == report["b"], report
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    assert lines["up"][1] == "cached" and lines["down"][1] == "succeeded", out


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_refresh_in_another_process_leaves_a_live_runs_input_whole(project: Any) -> None:
    workflow, cache, marks = project()
    cwd = workflow.parent
    filled = _run(_dagnb("run", str(workflow), "--cache-dir", str(cache), "--target", "up"), cwd)
    assert filled.returncode == 0, filled.stderr
    reader = _start_reader(workflow, cache)
    try:
        _wait_for(marks / "reading", reader)
        refresh = _run(_dagnb("run", str(workflow), "--cache-dir", str(cache), "--refresh",
                              "--target", "up"), cwd)
    finally:
        out, report = _finish(reader, marks)
    _assert_one_version(out, report)
    assert refresh.returncode == 0, refresh.stderr
    assert "its new result was not stored" in refresh.stderr, refresh.stderr
    assert f"in use by a live run (pid {reader.pid}); a later run stores it" in refresh.stderr
    # once B ended, a refresh stores again
    later = _run(_dagnb("run", str(workflow), "--cache-dir", str(cache), "--refresh",
                        "--target", "up"), cwd)
    assert later.returncode == 0 and "not stored" not in later.stderr, later.stderr
    assert not list((cache / ".scratch").glob(".tmp-*")), "the unstored folder was left"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_an_expired_input_of_a_live_run_is_not_removed_nor_replaced(project: Any) -> None:
    workflow, cache, marks = project(ttl="4s")
    cwd = workflow.parent
    filled = _run(_dagnb("run", str(workflow), "--cache-dir", str(cache), "--target", "up"), cwd)
    assert filled.returncode == 0, filled.stderr
    expired_at = time.monotonic() + 4.5
    reader = _start_reader(workflow, cache)
    try:
        _wait_for(marks / "reading", reader)
        time.sleep(max(0.0, expired_at - time.monotonic()))
        again = _run(_dagnb("run", str(workflow), "--cache-dir", str(cache), "--target", "up"), cwd)
    finally:
        out, report = _finish(reader, marks)
    _assert_one_version(out, report)
    assert again.returncode == 0, again.stderr
    assert "up " in again.stdout and "succeeded" in again.stdout, again.stdout  # (a miss)
    assert f"in use by a live run (pid {reader.pid})" in again.stderr, again.stderr


# ------------------------------------------------------------------ in process


def _key(n: int) -> StepKey:
    digest = f"{n:032x}"
    return StepKey(digest, {"format": "f", "params": digest}, {"params": str(n)})


def _save(store: Store, step: str, k: StepKey, content: str | None, **kwargs: Any) -> Any:
    """A folder entry (a file in out/), or with ``content`` None a packed one."""
    if content is None:
        return store.save(step, k, out_dir=None, inline={"json": 1}, **kwargs)
    out = store.scratch_dir(step)
    (out / "file.txt").write_text(content)
    return store.save(step, k, out_dir=out, **kwargs)


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[Any]:
    """Make a live run (a leased folder under .runs) that lists the given entries."""
    held: list[int] = []

    def make(store: Store, *uses: tuple[str, str]) -> None:
        runs = store.location / ".runs"
        folder = runs / "r63"
        folder.mkdir(parents=True)
        (folder / RUN_USES).write_text("".join(f"{s}\t{k}\n" for s, k in uses))
        (runs / RUNS_STARTED).write_text(json.dumps({"run": "r63", "pid": 4242}) + "\n")
        descriptor = os.open(folder, os.O_RDONLY)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        held.append(descriptor)

    yield make
    for descriptor in held:
        os.close(descriptor)


def test_a_save_over_a_folder_a_live_run_reads_returns_its_result_unstored(
        tmp_path: Path, live_run: Any) -> None:
    store = Store(tmp_path / "cache")
    old = _save(store, "up", _key(1), "old")
    live_run(store, ("up", _key(1).digest))
    with pytest.warns(UserWarning, match=r"'up': its new result was not stored: entry "
                      r"up/0{12} in use by a live run \(pid 4242\)"):
        new = _save(store, "up", _key(1), "new", refresh=True)
    assert (new.out_dir / "file.txt").read_text() == "new"  # the caller has its result
    assert (old.out_dir / "file.txt").read_text() == "old"  # the reader's, untouched
    assert (Store(tmp_path / "cache").lookup("up", _key(1)).out_dir / "file.txt"
            ).read_text() == "old"


def test_a_packed_save_over_a_folder_a_live_run_reads_keeps_the_folder(
        tmp_path: Path, live_run: Any) -> None:
    store = Store(tmp_path / "cache")
    old = _save(store, "up", _key(2), "old")
    live_run(store, ("up", _key(2).digest))
    with pytest.warns(UserWarning, match="not stored"):
        new = _save(store, "up", _key(2), None)
    assert new.result() == 1
    assert (old.out_dir / "file.txt").read_text() == "old"
    assert (Store(tmp_path / "cache").lookup("up", _key(2)).out_dir / "file.txt"
            ).read_text() == "old"


def test_a_folder_save_over_a_packed_entry_spares_the_folder_a_live_run_reads(
        tmp_path: Path, live_run: Any) -> None:
    store = Store(tmp_path / "cache")
    old = _save(store, "up", _key(3), None)
    unpacked = old.out_dir  # (made as a run's step asks for it)
    live_run(store, ("up", _key(3).digest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (stored: the packed one's folder is its own)
        _save(store, "up", _key(3), "new", refresh=True)
    assert unpacked.is_dir() and (unpacked / "result.json").exists()
    assert (Store(tmp_path / "cache").lookup("up", _key(3)).out_dir / "file.txt"
            ).read_text() == "new"


@pytest.mark.parametrize("packed", [False, True])
def test_an_expired_entry_a_live_run_reads_is_a_miss_left_in_place(
        tmp_path: Path, live_run: Any, packed: bool) -> None:
    now = [1000.0]
    store = Store(tmp_path / "cache", clock=lambda: now[0])
    old = _save(store, "up", _key(4), None if packed else "old", ttl=10)
    folder = old.out_dir
    live_run(store, ("up", _key(4).digest))
    now[0] += 11
    assert store.lookup("up", _key(4)) is None
    assert folder.is_dir()
    assert Store(tmp_path / "cache").peek("up", _key(4)) is not None


def test_an_expired_entry_no_live_run_reads_is_removed(tmp_path: Path) -> None:
    now = [1000.0]
    store = Store(tmp_path / "cache", clock=lambda: now[0])
    _save(store, "up", _key(5), "old", ttl=10)
    now[0] += 11
    assert store.lookup("up", _key(5)) is None
    assert Store(tmp_path / "cache").peek("up", _key(5)) is None


def test_a_save_meeting_another_writers_swap_window_is_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other writer moved the entry aside and renames its own in 50 ms later: the
    save re-reads it then, it does not say it vanished."""
    store = Store(tmp_path / "cache")
    _save(store, "up", _key(6), "first")
    backend = store.backend
    write = backend.write
    target = backend.root / "up" / _key(6).digest
    aside = tmp_path / "aside"

    def write_then_swap(*args: Any, **kwargs: Any) -> Any:
        done = write(*args, **kwargs)
        os.rename(target, aside)  # (the other writer's "old moved aside")
        threading.Timer(0.05, os.rename, (aside, target)).start()
        return done

    monkeypatch.setattr(backend, "write", write_then_swap)
    entry = _save(store, "up", _key(6), "second")
    assert (entry.out_dir / "file.txt").read_text() == "second"
    shutil.rmtree(aside, ignore_errors=True)
