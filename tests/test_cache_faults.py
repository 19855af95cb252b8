"""Faults met by real processes on a cache folder: one this process may not write, a full
disk, another process's eviction. Each must cost at most a recompute and say so in one
line, never a failed step or a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="runs a child as 'nobody' (mode bits bind only non-root users)",
)

UNWRITABLE = """
import json, os, sys, warnings
import dagnb
from dagnb import Graph, Step

memory = dagnb.Memory(sys.argv[1])

@memory.cache
def small(x):
    return x + 1

@memory.cache
def big(x):
    return b"z" * 100_000 + bytes([x])

def graph(n):
    made = Graph("ro", [Step("make", run='echo hi > "$DAGNB_OUT/a.txt"'),
                        Step("use", run='cat "$DAGNB_IN/make/a.txt"', needs=["make"]),
                        Step("new", run="echo " + str(n))])
    made.step(lambda: {"n": n}, name="value")
    return made

# Python's own library is under /root here, out of nobody's reach: a first run as root
# fills the cache and imports every module a run needs, then the process becomes nobody.
with dagnb.testing.isolated(cache_directory=sys.argv[1]):
    graph(1).run(executor="local").raise_for_status()
small(1), big(1)
memory.store.close()
os.setgid(65534); os.setuid(65534)
with dagnb.testing.isolated(cache_directory=sys.argv[1]), \\
        warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")  # as a script sees them: each text once
    run = graph(2).run(executor="local")
    said_by_run = [str(w.message) for w in caught]
    caught.clear()
    values = [small(1), small(2), small(3), len(big(1)), len(big(2)), len(big(3))]
    print(json.dumps({"states": run.states(), "value": run.result("value"),
                      "run_warnings": said_by_run, "values": values,
                      "memory_warnings": [str(w.message) for w in caught]}))
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder that user 'nobody' can reach (pytest's own are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="dagnb-nobody-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@needs_root
def test_a_cache_nobody_may_write_serves_hits_and_runs_misses_uncached(shared: Path) -> None:
    # root's cache, read by nobody: the new step and the new calls run and are not stored
    (shared / "script.py").write_text(UNWRITABLE)
    done = subprocess.run([sys.executable, "script.py", str(shared / "cache")], cwd=shared,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["states"] == {"make": "cached", "use": "cached", "new": "succeeded",
                              "value": "succeeded"}
    assert said["value"] == {"n": 2}
    assert said["run_warnings"] == [
        f"cache folder {str(shared / 'cache')!r} cannot be written (a read-only mount, or "
        "no write permission); this run only reads it, as cache_mode 'read-only' does"]
    assert said["values"] == [2, 3, 4, 100_001, 100_001, 100_001]
    # one text per function (the temporary file's name is left out): shown once each
    assert sorted(said["memory_warnings"]) == [
        f"__main__.{name}: the call ran but was not cached: cache "
        f"{str(shared / 'cache')!r} cannot be written (Permission denied)"
        for name in ("big", "small")]
