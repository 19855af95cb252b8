"""Cache hot paths, dagnb against joblib, measured side by side in one run.

    python benchmarks/bench_cache.py [--quick]

Lines printed:

- memory_hit_small      a cache hit of a function of two small arguments (target >= 4x)
- memory_hit_df_1e6x4   a hit with a 1e6-row x 4-column float DataFrame argument (>= 10x)
- dir_recheck_2000_files  re-digest of an unchanged 2,000-file tree (stat cache) vs hashing
- full_hash_throughput  hashing a big file vs only reading it (target >= 50%)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Memory as JoblibMemory

from dagnb import fingerprint
from dagnb.cache.memory import Memory


def per_call(func: Callable[[], Any], repeat: int) -> float:
    """Best of 3 runs of the mean seconds per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            func()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def small(x: int, name: str) -> int:
    return x + len(name)


def frame_sum(df: pd.DataFrame) -> float:
    return float(df["a"].sum())


def memory_hits(tmp: Path, quick: bool) -> None:
    dagnb_memory = Memory(str(tmp / "dagnb"))
    joblib_memory = JoblibMemory(str(tmp / "joblib"), verbose=0)
    ours, theirs = dagnb_memory.cache(small), joblib_memory.cache(small)
    ours(1, "abc")  # fill both caches
    theirs(1, "abc")
    repeat = 2000 if quick else 20000
    a = per_call(lambda: ours(1, "abc"), repeat)
    b = per_call(lambda: theirs(1, "abc"), repeat // 10)
    report("memory_hit_small", a * 1e6, b * 1e6, "us", 4)

    rows = 1_000_000
    df = pd.DataFrame(np.random.default_rng(0).random((rows, 4)), columns=list("abcd"))
    ours, theirs = dagnb_memory.cache(frame_sum), joblib_memory.cache(frame_sum)
    ours(df)
    theirs(df)
    repeat = 3 if quick else 10
    a = per_call(lambda: ours(df), repeat)
    b = per_call(lambda: theirs(df), repeat)
    report("memory_hit_df_1e6x4", a * 1e3, b * 1e3, "ms", 10)


def report(name: str, ours: float, theirs: float, unit: str, target: float) -> None:
    ratio = theirs / ours
    print(
        f"{name}: dagnb {ours:.1f} {unit}  joblib {theirs:.1f} {unit}  "
        f"ratio {ratio:.1f}x (target >= {target:g}x)"
    )


def directory_recheck(tmp: Path) -> None:
    root = tmp / "tree"
    old = time.time() - 3600  # outside the racy window, as a tree that is not being edited
    for index in range(2000):
        folder = root / f"d{index % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{index:04d}.bin"
        path.write_bytes(os.urandom(4096))
        os.utime(path, (old, old))
    fingerprint.configure_stat_cache(tmp / "stat-cache.json")
    full = per_call(lambda: fingerprint.path_digest(root, use_stat_cache=False), 3)
    fingerprint.path_digest(root)  # warm the stat cache
    before = fingerprint.counters["files_hashed"]
    recheck = per_call(lambda: fingerprint.path_digest(root), 5)
    hashed = fingerprint.counters["files_hashed"] - before
    print(
        f"dir_recheck_2000_files: recheck {recheck * 1e3:.1f} ms vs full hash "
        f"{full * 1e3:.1f} ms, ratio {full / recheck:.1f}x ({hashed} files read on recheck)"
    )


def throughput(tmp: Path, quick: bool) -> None:
    size = (64 if quick else 512) << 20
    path = tmp / "big.bin"
    with open(path, "wb") as handle:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            handle.write(block)

    def read_only() -> None:
        buffer = bytearray(fingerprint.CHUNK_SIZE)
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass

    read_only()  # page cache warm for both
    read = per_call(read_only, 2)
    hashed = per_call(lambda: fingerprint.path_digest(path, use_stat_cache=False), 2)
    mb = size / 1e6
    print(
        f"full_hash_throughput: {mb / hashed:.0f} MB/s vs read {mb / read:.0f} MB/s "
        f"= {100 * read / hashed:.0f}% (target >= 50%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagnb-bench-") as folder:
        tmp = Path(folder)
        memory_hits(tmp, args.quick)
        directory_recheck(tmp)
        throughput(tmp, args.quick)
    fingerprint.configure_stat_cache(None)


if __name__ == "__main__":
    main()
