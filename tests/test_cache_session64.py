"""``dagnb cache prune`` says how many entries it kept because a run going on now uses
them: the limits given may not hold after it, and the user was told nothing of why."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from dagnb.cache.store import Store
from dagnb.cli import main


def test_prune_says_it_kept_the_entries_a_live_run_uses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "c")
    out = store.scratch_dir("up")
    (out / "data.txt").write_text("data")
    store.save("up", "k1", out_dir=out)
    store.save("idle", "k2", out_dir=None, inline={"json": 2})
    run = tmp_path / "c" / ".runs" / "20261205-120000-000-abcdef"
    (run / "down" / "in").mkdir(parents=True)
    os.symlink(store.lookup("up", "k1").out_dir, run / "down" / "in" / "up")
    store.close()
    lease = os.open(run, os.O_RDONLY)
    fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the run is live
    try:
        assert main(["cache", "prune", "--max-entries", "0",
                     "--cache-dir", str(tmp_path / "c")]) == 0
        out_text = capsys.readouterr().out
        assert out_text.startswith("removed 1 cache entry from ")
        assert out_text.rstrip().endswith(
            "1 cache entry left, 4B (1 cache entry a run going on now uses kept: a later "
            "prune removes them once it ends)"), out_text
    finally:
        os.close(lease)
    assert main(["cache", "prune", "--max-entries", "0", "--cache-dir", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("0 cache entries left, 0B")
