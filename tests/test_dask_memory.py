"""A large value passing between dask steps costs the client about its own size: it
used to be copied on the way back from the worker, again into the next step's payload,
and again through the scheduler (7 to 8 times the value at the peak)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

SIZE = 32_000_000

# A fresh process (its own LocalCluster, as a notebook gets without a scheduler set) runs
# make -> length, both on dask, cache on, and prints its peak of traced memory above
# what it held before, over the value's size: for an array, then for bytes.
PEAKS = f"""
import os, sys, tracemalloc
import numpy as np
import dagnb
from dagnb import Graph, Step

def array():
    return np.random.default_rng(0).random({SIZE} // 8)

def raw():
    return os.urandom({SIZE})

def length(made):
    return len(made)

def peak(make):
    graph = Graph(make.__name__, [Step("made", func=make, executor="dask"),
                                  Step("length", func=length, needs=["made"],
                                       executor="dask")])
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    graph.run().raise_for_status()
    return (tracemalloc.get_traced_memory()[1] - held) / {SIZE}

dagnb.configure(cache_directory=sys.argv[1])
Graph("warm", [Step("one", func=lambda: 1, executor="dask")]).run().raise_for_status()
tracemalloc.start()
print(round(peak(array), 2), round(peak(raw), 2))
"""


@pytest.mark.slow  # several seconds: a LocalCluster starts, 64 MB pass through it
def test_a_large_result_passed_between_dask_steps_costs_about_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGNB_DASK_SCHEDULER", raising=False)
    done = subprocess.run([sys.executable, "-c", PEAKS, str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    array, raw = map(float, done.stdout.split())
    assert array < 1.5, array  # the array itself (1.0): its frames are its memory
    assert raw < 2.5, raw  # bytes are rebuilt from the frame that brought them (2.0)


def test_frames_are_the_values_memory_and_keep_its_writability() -> None:
    import numpy as np

    from dagnb.executors import wire

    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    raw = b"r" * 100
    frames = wire.pack([np.arange(5.0), frozen, raw, {"k": 1}])
    assert frames[5] is raw  # bytes travel as themselves (after two pickles and a view)
    # as a transport may hand them back: all read-only, or all writable
    for arrived in ([bytes(f) for f in frames], [bytearray(f) for f in frames]):
        array, still, back, small = wire.unpack(arrived)
        assert array.tolist() == [0, 1, 2, 3, 4] and array.flags.writeable
        assert not still.flags.writeable and back == raw and small == {"k": 1}
    arrived = [bytearray(f) for f in frames]
    array = wire.unpack(arrived)[0]
    assert np.shares_memory(array, np.frombuffer(arrived[2], dtype="u1"))  # no copy
