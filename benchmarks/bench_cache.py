"""The cache, dagnb against joblib (and against no cache), warm and in fresh processes.

    python benchmarks/bench_cache.py [--quick] [--extras]

- memory_hit_distinct_warm   Memory hits, each call with different small arguments,
                             stored by another process, in a warm process (<= 0.25)
- memory_first_hit_cold      a fresh process, modules loaded by a call on another folder:
                             Memory made, function wrapped, one hit (<= 0.25)
- memory_hit_distinct_cold   the next 49 hits in that process, each with different
                             arguments (<= 0.25)
- memory_first_result_from_import  a fresh process: from ``import`` to the first hit's
                             result, lazy loading included (<= 1.3, the start-up target)
- memory_miss_warm           a miss with small arguments (<= 1.5)
- memory_first_miss_cold     the first miss in a fresh process (<= 1.5)
- first_run_cache_on         a first run of 100 Python steps with the cache on, per step,
                             vs the same run with the cache off plus writing each
                             step's pickled result to its own file (<= 1.5)
- frame_hit_warm / _cold     a hit with a 1e6 x 4 float DataFrame argument (<= 0.1)

``--extras`` adds the two file-hashing figures this script has always printed
(dir_recheck_2000_files, full_hash_64MB; they use dagnb.fingerprint directly).
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import time
from pathlib import Path

import workloads
from harness import (
    Figure,
    Trial,
    child,
    column,
    compare,
    interleave,
    machine_note,
    report,
    run_child,
    scratch,
    timed,
)
from workloads import DAGNB, JOBLIB

LIBS = (DAGNB, JOBLIB)
HITS_PER_TRIAL = 100  # distinct arguments hit once each per warm trial
COLD_CALLS = 50  # calls per fresh process
MISSES_PER_TRIAL = 50
MISS_ARGS = 10**7  # misses use arguments from here up, never stored before
STEPS = 100


def memory_hits(tmp: Path, rounds: int) -> None:
    """Hits over many distinct arguments, stored by another process, warm and cold."""
    locations = {lib: str(tmp / f"memory-{lib}") for lib in LIBS}
    total = 1 + rounds * HITS_PER_TRIAL
    for lib in LIBS:
        run_child("memory_fill", lib, locations[lib], 0, max(total, COLD_CALLS))
    funcs = {lib: workloads.cached(lib, locations[lib], workloads.small) for lib in LIBS}
    for func in funcs.values():
        func(0, "abc")  # this process warm: modules loaded, function checked once

    def distinct(lib: str) -> Trial:
        starts = iter(range(1, total, HITS_PER_TRIAL))

        def hits() -> None:
            start = next(starts)
            for i in range(start, start + HITS_PER_TRIAL):
                funcs[lib](i, "abc")

        return timed(hits, per=HITS_PER_TRIAL)

    compare("memory_hit_distinct_warm", distinct(DAGNB), distinct(JOBLIB), "joblib", 0.25,
            rounds, note=f"({HITS_PER_TRIAL} different arguments per trial)")
    samples = interleave(
        {lib: child("memory_cold", lib, locations[lib], 0, COLD_CALLS) for lib in LIBS},
        rounds,
    )
    for key, name in (("first", "memory_first_hit_cold"), ("rest", "memory_hit_distinct_cold")):
        report(Figure(name, column(samples[DAGNB], key), column(samples[JOBLIB], key),
                      "joblib", 0.25, note="(fresh process each, modules loaded first)"))
    compare("memory_first_result_from_import",
            child("first_result", DAGNB, locations[DAGNB], 0),
            child("first_result", JOBLIB, locations[JOBLIB], 0), "joblib", 1.3, rounds,
            note="(fresh process each: import, Memory, one hit)")


def memory_misses(tmp: Path, rounds: int) -> None:
    """Misses with small arguments never seen before, warm and in a fresh process."""
    locations = {lib: str(tmp / f"miss-{lib}") for lib in LIBS}
    funcs = {lib: workloads.cached(lib, locations[lib], workloads.small) for lib in LIBS}
    fresh = itertools.count(MISS_ARGS)

    def misses(lib: str) -> Trial:
        def batch() -> None:
            for _ in range(MISSES_PER_TRIAL):
                funcs[lib](next(fresh), "abc")

        return timed(batch, per=MISSES_PER_TRIAL)

    for func in funcs.values():
        func(-1, "abc")  # the function's folder and code check are not a per-miss cost
    compare("memory_miss_warm", misses(DAGNB), misses(JOBLIB), "joblib", 1.5, rounds)

    def first_miss(lib: str) -> Trial:
        return lambda: run_child("memory_cold", lib, locations[lib], next(fresh), 1)["first"]

    compare("memory_first_miss_cold", first_miss(DAGNB), first_miss(JOBLIB), "joblib", 1.5,
            rounds, note="(fresh process each)")


def first_run(tmp: Path, rounds: int) -> None:
    """A first run with the cache on against the least a cache must add: the run with
    the cache off, plus each step's pickled result written to its own file (temporary
    name, then renamed)."""
    import dagnb

    graph = dagnb.Graph("first", [
        dagnb.Step(f"s{i}", func=workloads.value, params={"i": i}) for i in range(STEPS)
    ])
    folders = (tmp / f"first-{n}" for n in itertools.count())

    def cache_on() -> float:
        folder = next(folders)
        start = time.perf_counter()
        run = graph.run(cache_directory=folder, executor="local")
        seconds = time.perf_counter() - start
        assert set(run.states().values()) == {"succeeded"}, run.states()
        return seconds / STEPS

    def cache_off_and_write() -> float:
        folder = next(folders)
        start = time.perf_counter()
        graph.run(cache=False, cache_directory=folder, executor="local")
        _write_results(folder / "floor")
        return (time.perf_counter() - start) / STEPS

    compare("first_run_cache_on", cache_on, cache_off_and_write,
            "cache off + a pickle file per result", 1.5, rounds,
            note=f"(per step, {STEPS} Python steps, new cache folder each)")


def _write_results(folder: Path) -> None:
    folder.mkdir()
    for i in range(STEPS):
        path = folder / f"s{i}.pkl"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(pickle.dumps(workloads.value(i)))
        os.replace(temporary, path)


def frame_hits(tmp: Path, rounds: int) -> None:
    """A hit with a 1e6 x 4 DataFrame argument: hashing the argument is the cost."""
    locations = {lib: str(tmp / f"frame-{lib}") for lib in LIBS}
    df = workloads.make_frame()
    funcs = {lib: workloads.cached(lib, locations[lib], workloads.frame_sum) for lib in LIBS}
    for func in funcs.values():
        func(df)
    compare("frame_hit_warm", timed(lambda: funcs[DAGNB](df), repeat=3),
            timed(lambda: funcs[JOBLIB](df), repeat=3), "joblib", 0.1, rounds)
    compare("frame_hit_cold", child("frame_cold", DAGNB, locations[DAGNB]),
            child("frame_cold", JOBLIB, locations[JOBLIB]), "joblib", 0.1, rounds,
            note="(fresh process each)")


def hashing_extras(tmp: Path, rounds: int) -> None:
    """File hashing: a re-check of an unchanged tree, and throughput against reading."""
    from dagnb import fingerprint

    root = tmp / "tree"
    old = time.time() - 3600  # outside the racy window, as a tree that is not being edited
    for index in range(2000):
        path = root / f"d{index % 40:02d}" / f"f{index:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(4096))
        os.utime(path, (old, old))
    fingerprint.configure_stat_cache(tmp / "stat-cache.json")
    fingerprint.path_digest(root)  # warm the stat cache
    compare("dir_recheck_2000_files", lambda: _seconds(fingerprint.path_digest, root),
            lambda: _seconds(fingerprint.path_digest, root, use_stat_cache=False),
            "full hash of the tree", None, rounds)
    big = tmp / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(1 << 20))
    compare("full_hash_64MB", lambda: _seconds(fingerprint.path_digest, big,
                                               use_stat_cache=False),
            lambda: _seconds(_read, big), "reading the file", 2.0, rounds)
    fingerprint.configure_stat_cache(None)


def _seconds(func: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start


def _read(path: Path) -> None:
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 9")
    parser.add_argument("--extras", action="store_true", help="also the file-hashing figures")
    args = parser.parse_args()
    print(machine_note())
    rounds = 5 if args.quick else 9
    with scratch() as (disk, memory):
        memory_hits(memory, rounds)
        memory_misses(disk, rounds)
        first_run(disk, rounds)
        frame_hits(memory, 5)
        if args.extras:
            hashing_extras(disk, rounds)


if __name__ == "__main__":
    main()
