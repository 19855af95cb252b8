"""`%dagger cache stats` counts a notebook's `dagnb.Memory` calls as its steps': a Memory
counts in a store of its own, and the stats read the steps' store (4 misses read as 0,
a hit rate of 1.0, no session hits, and hits only once written)."""

from __future__ import annotations

import pytest


def test_cache_stats_counts_a_memorys_misses_and_hits_this_session(shell):
    shell.run_cell("import dagnb\nmemory = dagnb.Memory('.dagnb_cache')\n"
                   "@memory.cache\ndef plus_one(x):\n    return x + 1\n")
    assert shell.run_cell("for _ in range(3):\n    [plus_one(i) for i in range(4)]").success
    stats = shell.run_line_magic("dagger", "cache stats")
    (name,) = [step for step in stats.index if step.endswith("plus_one")]
    row = stats.loc[name]
    assert row[["entries", "misses", "session_hits", "hits"]].tolist() == [4, 4, 8, 8]
    assert row["hit_rate"] == pytest.approx(2 / 3)
