"""The work both contenders do, importable from the benchmark process and its children.

Cached functions live here, not in ``__main__``, so that a fresh process started by
`harness.child` finds the very entries (same module, same name, same source) that
another process wrote. Functions ending in ``_cold`` or ``_fill`` run in a child: they
import what they need first, then time only the work, and return JSON.

Only dagnb's public API is used (Graph, Step, Memory), so that these scripts keep
working while its internals change.
"""

from __future__ import annotations

import sys
import time
from typing import Any

DAGNB, JOBLIB = "dagnb", "joblib"
FRAME_ROWS = 1_000_000


# -- the functions that get cached -------------------------------------------------------
def small(x: int, name: str) -> int:
    """A function of two small arguments: the cache's cost is all there is."""
    return x + len(name)


def frame_sum(df: Any) -> float:
    return float(df["a"].sum())


def noop(*_args: object, **_kwargs: object) -> int:
    return 1


def value(i: int) -> int:
    """A step result that differs per step, so that each step has its own entry."""
    return i * 2


def make_frame() -> Any:
    """The same 1e6 x 4 float DataFrame in every process."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame(np.random.default_rng(0).random((FRAME_ROWS, 4)), columns=list("abcd"))


def cached(lib: str, location: str, func: Any) -> Any:
    """``func`` wrapped by dagnb's or joblib's Memory at ``location``."""
    if lib == DAGNB:
        import dagnb

        return dagnb.Memory(location).cache(func)
    import joblib

    return joblib.Memory(location, verbose=0).cache(func)


class Payload(bytearray):
    """A step's big result (a bytearray, weakly referable): alive as long as its run."""


PAYLOAD_BYTES = 10 << 20


def payload() -> Payload:
    return Payload(PAYLOAD_BYTES)


def fails(load: Any) -> None:
    raise ValueError(f"no ({len(load)} bytes)")


# -- graphs ---------------------------------------------------------------------------
def chain_graph(n: int, name: str = "chain") -> Any:
    """Step i needs step i-1."""
    import dagnb

    graph = dagnb.Graph(name)
    graph.add(dagnb.Step("s0", func=noop))
    for i in range(1, n):
        graph.add(dagnb.Step(f"s{i}", func=noop, needs=(f"s{i - 1}",)))
    return graph


def fanout_graph(n: int) -> Any:
    """One root, n steps that need it, one gather that needs them all."""
    import dagnb

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


def chain_needs(n: int) -> dict[str, tuple[str, ...]]:
    """The chain as graphlib wants it: node -> predecessors."""
    return {f"s{i}": ((f"s{i - 1}",) if i else ()) for i in range(n)}


# -- run in a fresh process -----------------------------------------------------------
def import_time(modules: list[str]) -> dict[str, Any]:
    """Seconds to import ``modules``, and which heavy packages came along."""
    start = time.perf_counter()
    for module in modules:
        __import__(module)
    seconds = time.perf_counter() - start
    heavy = sorted({"pandas", "numpy", "IPython", "ipywidgets"} & set(sys.modules))
    return {"seconds": seconds, "heavy": heavy}


def memory_fill(lib: str, location: str, start: int, count: int) -> int:
    """Compute ``small(i, "abc")`` for ``count`` values of i, so that they are stored."""
    func = cached(lib, location, small)
    for i in range(start, start + count):
        func(i, "abc")
    return count


def memory_cold(lib: str, location: str, start: int, count: int) -> dict[str, float]:
    """In a fresh process, its modules loaded by a call elsewhere: the first call here
    (Memory made, function wrapped, called; and those two parts, ``setup`` and
    ``call``) and the mean of the ``count - 1`` calls after it, each with different
    arguments."""
    warm_up(lib, location)
    begin = time.perf_counter()
    func = cached(lib, location, small)
    wrapped = time.perf_counter()
    func(start, "abc")
    first = time.perf_counter()
    for i in range(start + 1, start + count):
        func(i, "abc")
    end = time.perf_counter()
    return {"first": first - begin, "setup": wrapped - begin, "call": first - wrapped,
            "rest": (end - first) / max(count - 1, 1)}


def first_result(lib: str, location: str, start: int) -> float:
    """In a fresh process: from ``import`` to the first hit's result, whatever the
    library loads on import or on first use."""
    begin = time.perf_counter()
    __import__(lib)
    cached(lib, location, small)(start, "abc")
    return time.perf_counter() - begin


def warm_up(lib: str, location: str) -> None:
    """Load what the library loads on import and on first use, with a call on a folder
    beside ``location``: module loading has figures of its own (start-up), and would
    otherwise be counted in the first call of whichever library loads lazily."""
    cached(lib, f"{location}-warm-up", small)(-1, "warm-up")


def frame_fill(lib: str, location: str) -> int:
    cached(lib, location, frame_sum)(make_frame())
    return 1


def frame_cold(lib: str, location: str) -> float:
    """In a fresh process: the first hit on the 1e6 x 4 DataFrame."""
    df = make_frame()
    warm_up(lib, location)
    cached(lib, f"{location}-warm-up", frame_sum)(df.head(10))
    begin = time.perf_counter()
    cached(lib, location, frame_sum)(df)
    return time.perf_counter() - begin


def rerun_fill(lib: str, location: str, n: int) -> int:
    """Run the n-step chain once, so that every step is stored."""
    if lib == DAGNB:
        run = chain_graph(n, "cold").run(cache_directory=location, executor="local")
        assert run.ok, run.states()
        return n
    func = cached(lib, location, noop)
    for node in chain_needs(n):
        func(node)
    return n


def rerun_cold(lib: str, location: str, n: int) -> float:
    """In a fresh process: seconds per step of a fully cached run of the n-step chain.

    dagnb: ``graph.run()`` of the chain (built before the clock). The peer, the least a
    cached re-run must do: graphlib orders the same chain (built before the clock) and
    each step is a joblib hit. Both first make a call on another folder (`warm_up`),
    so that module loading is not spread over the steps.
    """
    warm_up(lib, location)
    if lib == DAGNB:
        chain_graph(1, "warm-up").run(cache_directory=f"{location}-warm-up", executor="local")
        graph = chain_graph(n, "cold")
        begin = time.perf_counter()
        run = graph.run(cache_directory=location, executor="local")
        seconds = time.perf_counter() - begin
        states = set(run.states().values())
        assert states == {"cached"}, f"not all cached: {states!r}"
        return seconds / n
    import graphlib

    import joblib

    needs = chain_needs(n)
    begin = time.perf_counter()
    func = joblib.Memory(location, verbose=0).cache(noop)
    sorter = graphlib.TopologicalSorter(needs)
    sorter.prepare()
    while sorter.is_active():
        for node in sorter.get_ready():
            func(node)
            sorter.done(node)
    return (time.perf_counter() - begin) / n


def held_after_failed_runs(collect: bool, runs: int) -> dict[str, float]:
    """In a fresh process, ``runs`` runs of a graph whose step fails, given the 10 MB
    result of the step before it, each run let go of as the next starts (a notebook's
    cell run again); with ``collect``, ``gc.collect()`` after each (the floor: nothing
    left for the collector). What is still held at the end: the results alive, in
    bytes, and how much the process grew (its resident set, after a first run)."""
    import gc
    import weakref

    import dagnb

    graph = dagnb.Graph("held", [
        dagnb.Step("load", func=payload, cache=False),
        dagnb.Step("boom", func=fails, needs=("load",), cache=False, retries=0),
    ])
    graph.run(executor="local")  # (modules loaded, the loop started: not counted)
    gc.collect()
    before = _resident_bytes()
    results = []
    for _ in range(runs):
        run = graph.run(executor="local")
        assert run.states() == {"load": "succeeded", "boom": "failed"}, run.states()
        results.append(weakref.ref(run.result("load")))
        del run
        if collect:
            gc.collect()
    held = sum(ref() is not None for ref in results) * PAYLOAD_BYTES
    return {"held": float(held), "grew": float(_resident_bytes() - before)}


def _resident_bytes() -> int:
    """This process's resident set (Linux's /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) * 1024
