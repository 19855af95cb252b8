"""Micro-benchmark of key computation alone: no run, no store, no event loop.

    python benchmarks/bench_keys.py [--steps 1000] [--rounds 7]

- step_key_chain_cold    ``step_key`` of each step of the cold re-run chain
                         (``Step(f"s{i}", func=noop, needs=(f"s{i-1}",))``), each Step new
                         to the process, as in a fresh process's run, per step
- step_key_chain_again   the same Steps keyed a second time (a re-run in one process)
- step_key_params        ``Step(f"s{i}", func=value, params={"i": i})`` (the first run), new
- memory_call_key        a Memory call's key components and digest, ``small(i, "abc")``

Each figure prints the median and the minimum over the rounds, ``gc.collect()`` before
each round. Key digests are not compared here: tests/test_key_pins.py does that.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from workloads import noop, small, value

from dagnb.cache import key_digest, step_key
from dagnb.cache.call_keys import CallKeys
from dagnb.model.step import Step

_ROUND = iter(range(1 << 30))


def fresh(name: str) -> str:
    """A name no earlier round used: what is memoized per (equal) Step cannot help."""
    return f"r{next(_ROUND)}{name}"


def chain(n: int) -> list[Step]:
    prefix = fresh("")
    return [Step(f"{prefix}s0", func=noop)] + [
        Step(f"{prefix}s{i}", func=noop, needs=(f"{prefix}s{i - 1}",)) for i in range(1, n)
    ]


def keyed(steps: list[Step]) -> Callable[[], None]:
    """Key every step, its upstream digest made up (as the runner passes one)."""
    base = Path.cwd()
    upstream = [{name: "0" * 32 for name in step.needs} for step in steps]

    def work() -> None:
        for step, digests in zip(steps, upstream, strict=True):
            step_key(step, upstream_digests=digests, base_dir=base)

    return work


def call_keys(n: int) -> Callable[[], None]:
    keys = CallKeys(small, ())

    def work() -> None:
        for i in range(n):
            key_digest(keys.components((i, "abc"), {}))

    return work


def measure(name: str, rounds: int, n: int, setup: Callable[[], Callable[[], None]]) -> None:
    """Per-item seconds of ``setup()``'s work, a fresh setup each round."""
    times = []
    for _ in range(rounds):
        work = setup()
        gc.collect()
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) / n)
    print(f"{name}: median {statistics.median(times) * 1e6:.2f} us, "
          f"min {min(times) * 1e6:.2f} us (per item, {n} items, {rounds} rounds)")


def again(n: int) -> Callable[[], None]:
    work = keyed(chain(n))
    work()
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = args.steps, args.rounds
    keyed(chain(2))()  # modules and the function's code digest, outside the clock
    measure("step_key_chain_cold", rounds, n, lambda: keyed(chain(n)))
    measure("step_key_chain_again", rounds, n, lambda: again(n))
    measure("step_key_params", rounds, n, lambda: keyed(
        [Step(fresh(f"s{i}"), func=value, params={"i": i}) for i in range(n)]))
    measure("memory_call_key", rounds, n, lambda: call_keys(n))


if __name__ == "__main__":
    main()
