"""Scheduler overhead: 10,000 no-op Python steps, dagnb vs dask's synchronous scheduler.

Both run the same shapes in the same process, caching off:
  chain   step i needs step i-1
  fanout  one root, 10,000 steps that need it, one gather that needs them all

Prints microseconds per step for each and the ratio dagnb/dask (target <= 1.0), then
a fully cached re-run of the chain (target <= 30 us per step).

    python benchmarks/bench_runner.py [--steps N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable

import dask

import dagnb
from dagnb.cache.steps import wait_for_flushes


def noop(*_args: object, **_kwargs: object) -> int:
    return 1


def chain_graph(n: int) -> dagnb.Graph:
    graph = dagnb.Graph("chain")
    graph.add(dagnb.Step("s0", func=noop))
    for i in range(1, n):
        graph.add(dagnb.Step(f"s{i}", func=noop, needs=(f"s{i - 1}",)))
    return graph


def fanout_graph(n: int) -> dagnb.Graph:
    graph = dagnb.Graph("fanout")
    graph.add(dagnb.Step("root", func=noop))
    for i in range(n):
        graph.add(dagnb.Step(f"s{i}", func=noop, needs=("root",)))
    graph.add(dagnb.Step("gather", func=noop, needs=tuple(f"s{i}" for i in range(n))))
    return graph


def chain_dask(n: int) -> dict:
    tasks: dict = {"s0": (noop,)}
    for i in range(1, n):
        tasks[f"s{i}"] = (noop, f"s{i - 1}")
    return tasks


def fanout_dask(n: int) -> dict:
    tasks: dict = {"root": (noop,)}
    for i in range(n):
        tasks[f"s{i}"] = (noop, "root")
    tasks["gather"] = (noop, *[f"s{i}" for i in range(n)])
    return tasks


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        wait_for_flushes()  # the last run's hit counts are written off the clock
        gc.collect()  # each contender starts with the same clean heap
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_shape(name: str, graph: dagnb.Graph, tasks: dict, repeat: int) -> None:
    steps = len(graph)
    keys = list(tasks)
    dagnb_s = best_of(repeat, lambda: graph.run(cache=False, executor="local",
                                                max_concurrency=steps))
    dask_s = best_of(repeat, lambda: dask.get(tasks, keys, scheduler="sync"))
    assert graph.last_run is not None and graph.last_run.ok
    ours, theirs = dagnb_s / steps * 1e6, dask_s / steps * 1e6
    print(f"{name}: dagnb {ours:.1f} us/step  dask.get {theirs:.1f} us/step  "
          f"ratio {ours / theirs:.2f} (target <= 1.0)")


def measure_cached_rerun(n: int, repeat: int) -> None:
    graph = dagnb.Graph("cached")
    graph.add(dagnb.Step("s0", run="true"))
    for i in range(1, n):
        graph.add(dagnb.Step(f"s{i}", run="true", needs=(f"s{i - 1}",)))
    graph.run(executor="local", max_concurrency=8)  # fill the cache (real processes)
    seconds = best_of(repeat, lambda: graph.run(executor="local"))
    assert graph.last_run is not None and all(
        state == "cached" for state in graph.last_run.states().values()
    )
    print(f"cached_rerun: {seconds / n * 1e6:.1f} us/step for {n} steps, all cached "
          "(target <= 30)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--cached-steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        dagnb.configure(cache_directory=os.path.join(tmp, "cache"))
        measure_shape("chain", chain_graph(args.steps), chain_dask(args.steps), args.repeat)
        measure_shape("fanout", fanout_graph(args.steps), fanout_dask(args.steps), args.repeat)
        measure_cached_rerun(args.cached_steps, args.repeat)
        wait_for_flushes()
        os.chdir("/")


if __name__ == "__main__":
    main()
