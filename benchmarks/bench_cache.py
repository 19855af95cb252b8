"""The cache, dagnb against joblib (and against no cache), warm and in fresh processes.

    python benchmarks/bench_cache.py [--quick] [--extras] [--only-remote]

- memory_hit_distinct_warm   Memory hits, each call with different small arguments,
                             stored by another process, in a warm process (<= 0.25)
- memory_first_hit_cold      a fresh process, modules loaded by a call on another folder:
                             Memory made, function wrapped, one hit (<= 0.25)
- memory_first_hit_cold_setup / _call  its two parts, timed in the same calls: Memory
                             made and function wrapped, then the call (information)
- memory_hit_distinct_cold   the next 49 hits in that process, each with different
                             arguments (<= 0.25)
- memory_first_hit_cold_20000 / memory_hit_distinct_cold_20000  the same two in caches
                             of 20,000 entries each (information: a fresh dagnb process
                             finds keys through each pack's sealed index)
- memory_first_miss_cold_20000  the first miss of a fresh process there (information:
                             dagnb's adopts the pack, reading its keys file whole)
- memory_first_result_from_import  a fresh process: from ``import`` to the first hit's
                             result, lazy loading included (<= 1.3, the start-up target)
- memory_miss_warm           a miss with small arguments (<= 1.5)
- memory_first_miss_cold     the first miss in a fresh process (<= 1.5)
- first_run_cache_on         a first run of 100 Python steps with the cache on, per step,
                             vs the same run with the cache off plus writing each
                             step's pickled result to its own file (<= 1.5)
- frame_hit_warm / _cold     a hit with a 1e6 x 4 float DataFrame argument (<= 0.1)
- remote_hit_cold_tier       a hit on an S3 store (moto's server on 127.0.0.1, through
                             s3fs) with an empty local tier: the entry is downloaded, vs
                             a hit on a local cache folder (information)
- remote_upload_32MB         saving an entry with one 32 MB file to the S3 store (local
                             tier, hash, blob, manifest) vs s3fs' put_file of the same
                             bytes (<= 1.5); the note gives both throughputs

``--extras`` adds the two file-hashing figures this script has always printed
(dir_recheck_2000_files, full_hash_64MB; they use dagnb.fingerprint directly).
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import workloads
from harness import (
    BENCH_DIR,
    Figure,
    Trial,
    byte_compiled,
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
LARGE = 20_000  # entries of the large caches


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
    cold = "(fresh process each, modules loaded first)"
    for key, name, target, note in (
        ("first", "memory_first_hit_cold", 0.25, cold),
        ("setup", "memory_first_hit_cold_setup", None, "(of it: Memory made, function wrapped)"),
        ("call", "memory_first_hit_cold_call", None, "(of it: the call)"),
        ("rest", "memory_hit_distinct_cold", 0.25, cold),
    ):
        report(Figure(name, column(samples[DAGNB], key), column(samples[JOBLIB], key),
                      "joblib", target, note=note))
    compare("memory_first_result_from_import",
            child("first_result", DAGNB, locations[DAGNB], 0),
            child("first_result", JOBLIB, locations[JOBLIB], 0), "joblib", 1.3, rounds,
            note="(fresh process each: import, Memory, one hit)")


def memory_hits_large(tmp: Path, rounds: int) -> None:
    """The first hit, and the hits after it, in a fresh process, in caches of
    :data:`LARGE` entries (information: how a fresh process's lookups scale)."""
    locations = {lib: str(tmp / f"large-{lib}") for lib in LIBS}
    for lib in LIBS:
        run_child("memory_fill", lib, locations[lib], 0, LARGE)
    samples = interleave(
        {lib: child("memory_cold", lib, locations[lib], 0, COLD_CALLS) for lib in LIBS},
        rounds,
    )
    large = f"(fresh process each, caches of {LARGE:,} entries)"
    for key, name in (("first", f"memory_first_hit_cold_{LARGE}"),
                      ("rest", f"memory_hit_distinct_cold_{LARGE}")):
        report(Figure(name, column(samples[DAGNB], key), column(samples[JOBLIB], key),
                      "joblib", None, note=large))
    fresh = itertools.count(MISS_ARGS)
    compare(f"memory_first_miss_cold_{LARGE}", first_miss(locations[DAGNB], DAGNB, fresh),
            first_miss(locations[JOBLIB], JOBLIB, fresh), "joblib", None, rounds, note=large)


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

    compare("memory_first_miss_cold", first_miss(locations[DAGNB], DAGNB, fresh),
            first_miss(locations[JOBLIB], JOBLIB, fresh), "joblib", 1.5, rounds,
            note="(fresh process each)")


def first_miss(location: str, lib: str, fresh: Iterator[int]) -> Trial:
    """A cold trial: the first call in a fresh process, with arguments never seen."""
    return lambda: run_child("memory_cold", lib, location, next(fresh), 1)["first"]


def first_run(tmp: Path, rounds: int, memory: Path | None = None) -> None:
    """A first run with the cache on against the least a cache must add: the run with
    the cache off, plus each step's pickled result written to its own file (temporary
    name, then renamed). On disk (the target); with ``memory``, also in a folder in
    memory, for information: there making a file costs little, so the figure shows the
    CPU dagnb adds per step, which a disk slow to make files hides."""
    _first_run(tmp, rounds, "first_run_cache_on", 1.5)
    if memory is not None:
        _first_run(memory, rounds, "first_run_cache_on_in_memory", None)


def _first_run(tmp: Path, rounds: int, name: str, target: float | None) -> None:
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

    compare(name, cache_on, cache_off_and_write,
            "cache off + a pickle file per result", target, rounds,
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


REMOTE_MB = 32


def remote_cache(tmp: Path, rounds: int) -> None:
    """A store on S3: a hit that downloads, and an upload, against local and plain s3fs."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("# remote_cache: skipped (pip install 'moto[server]' s3fs)")
        return
    import logging
    import uuid

    from dagnb.cache import RemoteBackend, Store

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        url = f"s3://bench-{uuid.uuid4().hex[:8]}/cache"
        tiers = (tmp / f"tier-{n}" for n in itertools.count())

        def remote_store() -> Store:
            return Store(url, backend=RemoteBackend(url, local=next(tiers)))

        remote_store().backend.remote.fs.mkdir(url.removeprefix("s3://").split("/")[0])
        _remote_hits(tmp, rounds, remote_store)
        _remote_uploads(tmp, rounds, remote_store)
    finally:
        server.stop()


def _remote_hits(tmp: Path, rounds: int, remote_store: object) -> None:
    from dagnb.cache import Store

    local = Store(tmp / "remote-local")
    for store in (local, remote_store()):  # type: ignore[operator]
        out = store.scratch_dir("step")
        (out / "data.bin").write_bytes(os.urandom(1 << 20))
        store.save("step", "k", out_dir=out)

    def hit(make: object) -> Trial:
        def trial() -> float:
            store = make()  # type: ignore[operator]
            start = time.perf_counter()
            entry = store.lookup("step", "k")
            _read(entry.out_dir / "data.bin")
            return time.perf_counter() - start

        return trial

    compare("remote_hit_cold_tier", hit(remote_store),
            hit(lambda: Store(tmp / "remote-local")), "local cache folder", None, rounds,
            note="(a 1 MB output; the remote's local tier empty each time)")


def _remote_uploads(tmp: Path, rounds: int, remote_store: object) -> None:
    store = remote_store()  # type: ignore[operator]
    fs, root = store.backend.remote.fs, store.backend.remote.path
    names = itertools.count()

    def fresh_file() -> Path:
        path = tmp / f"upload-{next(names)}.bin"
        with open(path, "wb") as handle:
            for _ in range(REMOTE_MB):
                handle.write(os.urandom(1 << 20))  # new content: no blob is there yet
        return path

    def dagnb_save() -> float:
        out = store.scratch_dir("big")
        os.replace(fresh_file(), out / "data.bin")
        start = time.perf_counter()
        store.save("big", f"k{next(names)}", out_dir=out)
        return time.perf_counter() - start

    def plain_put() -> float:
        path = fresh_file()
        start = time.perf_counter()
        fs.put_file(str(path), f"{root}/plain/{path.name}")
        seconds = time.perf_counter() - start
        path.unlink()
        return seconds

    samples = interleave({"dagnb": dagnb_save, "peer": plain_put}, rounds)
    mb_s = [REMOTE_MB / statistics.median(samples[k]) for k in ("dagnb", "peer")]
    report(Figure("remote_upload_32MB", samples["dagnb"], samples["peer"],
                  "s3fs put_file", 1.5,
                  note=f"(throughput {mb_s[0]:.0f} vs {mb_s[1]:.0f} MB/s)"))


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
    parser.add_argument("--only-remote", action="store_true", help="only the S3 figures")
    args = parser.parse_args()
    print(machine_note())
    print(byte_compiled(BENCH_DIR.parent / "dagnb"))
    rounds = 5 if args.quick else 9
    with scratch() as (disk, memory):
        if args.only_remote:
            remote_cache(disk, rounds)
            return
        memory_hits(memory, rounds)
        memory_hits_large(memory, 5)
        memory_misses(disk, rounds)
        first_run(disk, rounds, memory)
        frame_hits(memory, 5)
        remote_cache(disk, rounds)
        if args.extras:
            hashing_extras(disk, rounds)


if __name__ == "__main__":
    main()
