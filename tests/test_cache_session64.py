"""``dagnb cache prune`` says how many entries it kept because a run going on now uses
them: the limits given may not hold after it, and the user was told nothing of why."""

from __future__ import annotations

import fcntl
import itertools
import os
from pathlib import Path

import pytest

from dagnb.cache.store import Store
from dagnb.cli import main
from dagnb.cli.cache import _size


def _on_disk(location: Path) -> str:
    """What the entries left in ``location`` take on disk, as prune prints it."""
    store = Store(location, read_only=True)
    return _size(sum(store.disk_bytes(store.iter_entries())))


def _live_run_reading(store: Store, step: str, key: str) -> int:
    """A live run (its folder leased) whose step ``down`` has entry ``step/key`` as
    input: the lease, to close when the run ends."""
    run = store.location / ".runs" / "20261205-120000-000-abcdef"
    (run / "down" / "in").mkdir(parents=True)
    os.symlink(store.lookup(step, key, touch=False).out_dir, run / "down" / "in" / step)
    store.close()
    lease = os.open(run, os.O_RDONLY)
    fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lease


def test_prune_says_it_kept_the_entries_a_live_run_uses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "c")
    out = store.scratch_dir("up")
    (out / "data.txt").write_text("data")
    store.save("up", "k1", out_dir=out)
    store.save("idle", "k2", out_dir=None, inline={"json": 2})
    lease = _live_run_reading(store, "up", "k1")
    try:
        assert main(["cache", "prune", "--max-entries", "0",
                     "--cache-dir", str(tmp_path / "c")]) == 0
        out_text = capsys.readouterr().out
        assert out_text.startswith("removed 1 cache entry from ")
        left = _on_disk(tmp_path / "c")  # (its file and its meta.json)
        assert out_text.rstrip().endswith(
            f"1 cache entry left, {left} (1 cache entry over the limits kept: a run going on "
            "now uses them)"), out_text
    finally:
        os.close(lease)
    assert main(["cache", "prune", "--max-entries", "0", "--cache-dir", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("0 cache entries left, 0B")


def test_prune_says_nothing_kept_when_others_went_in_place_of_what_a_live_run_uses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The limit held: another entry went in place of the one a live run uses."""
    ticks = itertools.count(1)
    store = Store(tmp_path / "c", clock=lambda: float(next(ticks)))
    for step in ("a", "b", "c"):  # (a used first: the oldest)
        out = store.scratch_dir(step)
        (out / "data.txt").write_text(step)
        store.save(step, "k", out_dir=out)
    lease = _live_run_reading(store, "a", "k")
    try:
        assert main(["cache", "prune", "--max-entries", "2",
                     "--cache-dir", str(tmp_path / "c")]) == 0
    finally:
        os.close(lease)
    said = capsys.readouterr().out.rstrip()
    left = _on_disk(tmp_path / "c")
    assert said.startswith("removed 1 cache entry from ") and said.endswith(
        f"2 cache entries left, {left}"), said
    assert sorted(entry.step for entry in Store(tmp_path / "c").iter_entries()) == ["a", "c"]
