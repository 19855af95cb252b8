"""Running graphs: a run's fixed cost, shell steps, scheduling, and cold cached re-runs.

    python benchmarks/bench_runner.py [--quick] [--sizes 1000,10000]

- run_fixed_cost           a 1-step graph, cache off, vs dask.threaded.get of a 1-task
                           graph (<= 2; dask's synchronous get shown for information)
- run_fixed_cost_back_to_back  the same, 2,500 runs a trial with no collection between
                           them, as a kernel's cells run (information: each trial above
                           starts just collected, and dagnb's first look at its frozen
                           heap after a collection walks nothing)
- loop_wake_round_trip     a call from another thread into dagnb's loop and back, vs
                           the same on asyncio's own loop (information: the eventfd)
- shell_steps_cache_off    200 steps running ``true``, 8 at once, per step, vs asyncio
                           starting the same ``bash -c true`` with pipes, 8 at once (<= 1.2)
- shell_steps_cache_on     the same first run with the cache on (new folder each; <= 1.2)
- shell_steps_cache_off_in_memory  the cache-off run with its folders in memory (/dev/shm):
                           the steps' three folders and params file each, without the
                           disk (information: what the two figures above owe the disk)
- scheduling_chain_N       N no-op Python steps, step i needs step i-1, cache off, per
                           step, vs dask's get_sync of the same tasks (<= 1.0)
- scheduling_fanout_N      one root, N steps that need it, one gather (<= 1.0)
- cold_rerun_N             a fully cached run of an N-step chain in a fresh process, per
                           step, vs graphlib ordering the chain and a joblib hit per step,
                           also in a fresh process (<= 0.5)
- cold_rerun_flatness      per step at the largest size vs the smallest (<= 1.2)
- memory_held_after_failed_runs  a fresh process runs a graph 40 times whose step
                           fails, given the step before's 10 MB result, each run let go
                           of as the next starts (a notebook's failing cell run again):
                           the results still held at the end, vs the same runs with
                           ``gc.collect()`` after each (the floor: nothing left for the
                           collector) (<= 1.5; a target of this project's own)
- memory_grew_after_failed_runs  the process's resident set's growth over those runs,
                           the same two ways (information)

Sizes default to 1,000 and 10,000; add 100000 with ``--sizes 1000,10000,100000`` (its
cache fill alone takes minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path

import workloads
from harness import (
    BENCH_DIR,
    MIN_ROUNDS,
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

SHELL_STEPS, SHELL_CONCURRENCY = 200, 8
HELD_RUNS = 40  # runs of memory_held's fresh process
FIXED_REPEAT = 20
BACK_TO_BACK = 2_500  # runs a trial of run_fixed_cost_back_to_back: about a second
LONG_TRIAL_STEPS = 100_000  # scheduling trials this long take MIN_ROUNDS rounds
WAKE_REPEAT = 200


def fixed_cost(tmp: Path, rounds: int) -> None:
    """What a run costs beyond its steps: one no-op step, the cache off."""
    import dask.local
    import dask.threaded

    import dagnb

    graph = dagnb.Graph("one", [dagnb.Step("a", func=workloads.noop)])
    folder = tmp / "fixed"  # one folder: old runs pile up and get pruned, as in real use
    tasks = {"a": (workloads.noop,)}
    samples = interleave(
        {
            "dagnb": timed(lambda: graph.run(cache=False, cache_directory=folder,
                                             executor="local"), repeat=FIXED_REPEAT),
            "threaded": timed(lambda: dask.threaded.get(tasks, "a"), repeat=FIXED_REPEAT),
            "sync": timed(lambda: dask.local.get_sync(tasks, "a"), repeat=FIXED_REPEAT),
        },
        rounds,
    )
    report(Figure("run_fixed_cost", samples["dagnb"], samples["threaded"],
                  "dask.threaded.get", 2.0, note=f"(1-step graph, {FIXED_REPEAT} runs a trial)"))
    report(Figure("run_fixed_cost_vs_sync", samples["dagnb"], samples["sync"],
                  "dask get_sync", None))
    compare("run_fixed_cost_back_to_back",
            timed(lambda: graph.run(cache=False, cache_directory=folder, executor="local"),
                  repeat=BACK_TO_BACK),
            timed(lambda: dask.threaded.get(tasks, "a"), repeat=BACK_TO_BACK),
            "dask.threaded.get", None, MIN_ROUNDS,
            note=f"({BACK_TO_BACK:,} runs a trial, no collection between them)")
    wake_round_trip(rounds)


def memory_held(rounds: int) -> None:
    """What runs let go of still hold, and how much the process grows, when their step
    fails: each is freed by reference counting, or waits for a full collection (rare
    while runs go on: a notebook re-running a failing cell grew by each run's data)."""
    samples = interleave(
        {"dagnb": child("held_after_failed_runs", False, HELD_RUNS),
         "floor": child("held_after_failed_runs", True, HELD_RUNS)},
        rounds,
    )
    floor = "each run collected (gc.collect())"
    note = f"({HELD_RUNS} runs, fresh process each, a 10 MB result a run)"
    for key, name, target in (("held", "memory_held_after_failed_runs", 1.5),
                              ("grew", "memory_grew_after_failed_runs", None)):
        report(Figure(name, column(samples["dagnb"], key), column(samples["floor"], key),
                      floor, target, note=note, unit="B"))


def wake_round_trip(rounds: int) -> None:
    """A call from another thread into the loop and back, on the loop dagnb makes for its
    thread (woken through an eventfd) and on asyncio's own (a socket pair): every run a
    script or a notebook starts crosses it (information)."""
    import concurrent.futures
    import threading

    from dagnb.executors.wakeup import new_loop

    loops = {"dagnb": new_loop(), "asyncio": asyncio.new_event_loop()}
    threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in loops.values()]
    for thread in threads:
        thread.start()

    def round_trips(loop: asyncio.AbstractEventLoop) -> Trial:
        def once() -> None:
            answered: concurrent.futures.Future[None] = concurrent.futures.Future()
            loop.call_soon_threadsafe(answered.set_result, None)
            answered.result()

        return timed(once, repeat=WAKE_REPEAT)

    try:
        compare("loop_wake_round_trip", round_trips(loops["dagnb"]),
                round_trips(loops["asyncio"]), "asyncio's own loop", None, rounds,
                note=f"(call_soon_threadsafe and back, {WAKE_REPEAT} a trial)")
    finally:
        for loop, thread in zip(loops.values(), threads, strict=True):
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def shell_steps(tmp: Path, rounds: int, memory: Path) -> None:
    """Steps that start a process: dagnb's local executor against bare asyncio."""
    import dagnb

    graph = dagnb.Graph("shell", [
        dagnb.Step(f"s{i}", run="true") for i in range(SHELL_STEPS)
    ])
    numbers = itertools.count()
    options = {"executor": "local", "max_concurrency": SHELL_CONCURRENCY}

    def run(cache: bool, where: Path = tmp) -> float:
        folder = where / f"shell-{next(numbers)}"  # cache on: a first run, each step runs
        start = time.perf_counter()
        done = graph.run(cache=cache, cache_directory=folder, **options)
        seconds = time.perf_counter() - start
        assert set(done.states().values()) == {"succeeded"}, done.states()
        return seconds / SHELL_STEPS

    samples = interleave(
        {
            "off": lambda: run(False),
            "on": lambda: run(True),
            "asyncio": timed(lambda: asyncio.run(_spawn_all(SHELL_STEPS)), per=SHELL_STEPS),
            "in_memory": lambda: run(False, memory),
        },
        rounds,
        all_cpus=True,  # 8 processes at once: on one CPU they would wait for each other
    )
    peer = f"asyncio, {SHELL_CONCURRENCY} at once"
    for cache in ("off", "on"):
        report(Figure(f"shell_steps_cache_{cache}", samples[cache], samples["asyncio"], peer,
                      1.2, note=f"(per step, {SHELL_STEPS} x `true`)"))
    report(Figure("shell_steps_cache_off_in_memory", samples["in_memory"], samples["asyncio"],
                  peer, None, note=f"(per step; {SHELL_STEPS} steps' folders in {memory.parent})"))


async def _spawn_all(count: int) -> None:
    """``bash -c true`` ``count`` times, as the local executor starts a step: its own
    session, stdin closed, stdout and stderr read to the end."""
    limit = asyncio.Semaphore(SHELL_CONCURRENCY)

    async def one() -> None:
        async with limit:
            process = await asyncio.create_subprocess_exec(
                "bash", "-c", "true", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await asyncio.gather(process.stdout.read(), process.stderr.read())
            await process.wait()

    await asyncio.gather(*(one() for _ in range(count)))


def scheduling(tmp: Path, rounds: int, sizes: list[int]) -> None:
    """The scheduler alone: no-op steps, the cache off, against dask's get_sync. A trial
    of ``LONG_TRIAL_STEPS`` steps or more lasts seconds and swings little: those sizes
    take the fewest rounds (the 15 of 100,000 steps took four minutes)."""
    import dask.local

    for n in sizes:
        rounds_here = MIN_ROUNDS if n >= LONG_TRIAL_STEPS else rounds
        shapes = (
            ("chain", workloads.chain_graph(n), workloads.chain_dask(n)),
            ("fanout", workloads.fanout_graph(n), workloads.fanout_dask(n)),
        )
        for shape, graph, tasks in shapes:
            keys, steps = list(tasks), len(tasks)
            folder = tmp / f"scheduling-{shape}-{n}"
            compare(
                f"scheduling_{shape}_{n}",
                timed(lambda g=graph, f=folder, s=steps: g.run(
                    cache=False, cache_directory=f, executor="local", max_concurrency=s),
                    per=steps),
                timed(lambda t=tasks, k=keys: dask.local.get_sync(t, k), per=steps),
                "dask get_sync", 1.0, rounds_here, note="(per step)",
            )


def cold_reruns(tmp: Path, rounds: int, sizes: list[int]) -> None:
    """Fully cached re-runs in fresh processes, and how the cost per step grows.

    Each size has a cache of its own, filled by its chain: the figure is the cost of a
    graph's re-run as the graph grows. A fresh process also pays for what it reads of
    the cache whatever the graph (dagnb: the keys files of every entry there), so the
    smallest chain is also timed in the largest cache, for information.
    """
    def location(lib: str, n: int) -> str:
        return str(tmp / f"rerun-{lib}-{n}")

    for n in sizes:
        for lib in (DAGNB, JOBLIB):
            run_child("rerun_fill", lib, location(lib, n), n)
    # every size's trials in the same rounds: the flatness is then a ratio per round
    # too (its medians from rounds minutes apart read 0.95 to 1.37 with no change)
    samples = interleave({f"{lib}-{n}": child("rerun_cold", lib, location(lib, n), n)
                          for n in sizes for lib in (DAGNB, JOBLIB)}, rounds)
    for n in sizes:
        report(Figure(f"cold_rerun_{n}", samples[f"{DAGNB}-{n}"], samples[f"{JOBLIB}-{n}"],
                      "graphlib + a joblib hit per step", 0.5,
                      note="(per step, fresh process each)"))
    if len(sizes) > 1:
        low, high = min(sizes), max(sizes)
        report(Figure(f"cold_rerun_flatness_{low}_to_{high}", samples[f"{DAGNB}-{high}"],
                      samples[f"{DAGNB}-{low}"], f"dagnb at {low} steps", 1.2,
                      note="(per step at the largest size over the smallest, same rounds)"))
        compare(f"cold_rerun_{low}_in_the_{high}_cache",
                child("rerun_cold", DAGNB, location(DAGNB, high), low),
                child("rerun_cold", JOBLIB, location(JOBLIB, high), low),
                "graphlib + a joblib hit per step", None, rounds,
                note=f"(per step; a cache of {high:,} entries: what a fresh process reads)")


def sizes_option(text: str) -> list[int]:
    """``1000,10000`` -> [1000, 10000]."""
    return sorted(int(part) for part in text.split(",") if part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 9")
    parser.add_argument("--sizes", type=sizes_option, default=[1000, 10000],
                        help="step counts for scheduling and cold re-runs (default 1000,10000)")
    args = parser.parse_args()
    print(machine_note())
    print(byte_compiled(BENCH_DIR.parent / "dagnb"))
    rounds = 5 if args.quick else 9
    with scratch() as (disk, memory):
        fixed_cost(disk, rounds)
        shell_steps(disk, 5, memory)
        scheduling(disk, 5, args.sizes)
        cold_reruns(memory, 5, args.sizes)
    memory_held(5)


if __name__ == "__main__":
    main()
