"""Every figure of issue #16, each as a ratio to a named peer, with its target.

    python benchmarks/run_all.py [--quick] [--sizes 1000,10000,100000] [--only REGEX] [--all-cpus]

Each line reads ``name: dagnb X, peer P Y, ratio R (median of N), target <= T met|MISSED
[min ...]``; the last line counts the targets met. ``--quick`` takes 5 rounds of every
figure instead of 9 for the cheap ones (15 for a run's fixed cost, first runs,
scheduling and the widget; the expensive ones always take 5), and leaves out the
100,000-step figures. Step counts for scheduling and cold re-runs default to the
issue's 1,000, 10,000 and 100,000 (filling the 100,000-step caches takes two minutes;
``--sizes 1000,10000`` leaves them out). Trials run on one CPU, but for the shell
steps' (``--all-cpus``: wherever the scheduler puts them). See README.md for what
each peer is and why.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path

import bench_cache
import bench_runner
import bench_startup
import bench_widgets
import harness
from harness import BENCH_DIR, byte_compiled, disk_note, machine_note, scratch, summary

ISSUE_SIZES = [1_000, 10_000, 100_000]  # step counts the issue names for its flat figures
QUICK_SIZES = [1_000, 10_000]


def groups(args: argparse.Namespace, disk: Path, memory: Path) -> dict[str, Callable[[], object]]:
    """The figures in the order of the issue's table, by group name (for ``--only``)."""
    cheap, heavy = (5 if args.quick else 9), 5
    # a 1-step run lasts a fraction of a millisecond and crosses threads twice: its
    # trials swing more than others', and 15 rounds (a second in all) steady the median
    handoffs = 5 if args.quick else 15
    # trials that swing in phases on both sides, by up to a half (first runs with the
    # cache on, scheduling, the widget's 0.4 s runs): medians of 5 or 9 rounds read on
    # both sides of a target that medians of 21 rounds meet; README.md gives the figures
    swinging = 5 if args.quick else 15
    return {
        "import": lambda: bench_startup.import_figures(cheap),
        "cli_run": lambda: bench_startup.run_figure(disk, cheap, args.baseline),
        "memory_hits": lambda: bench_cache.memory_hits(memory, cheap),
        "memory_large": lambda: bench_cache.memory_hits_large(memory, heavy),
        "memory_misses": lambda: bench_cache.memory_misses(disk, cheap),
        "first_run": lambda: bench_cache.first_run(disk, swinging, memory),
        "cold_rerun": lambda: bench_runner.cold_reruns(memory, heavy, args.sizes),
        "fixed_cost": lambda: bench_runner.fixed_cost(disk, handoffs),
        "memory_held": lambda: bench_runner.memory_held(heavy),
        # (a shell trial's length moves with the disk's from one to the next: 9 rounds)
        "shell": lambda: bench_runner.shell_steps(disk, cheap, memory),
        "scheduling": lambda: bench_runner.scheduling(disk, swinging, args.sizes),
        "frame": lambda: bench_cache.frame_hits(memory, heavy),
        "remote": lambda: bench_cache.remote_cache(disk, heavy),
        "widgets": lambda: (bench_widgets.widget_overhead(100_000, swinging),
                            bench_widgets.notebook_size()),
    }


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, its step counts filled in (the issue's three; ``--quick``
    spares the 100,000-step caches' fill)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of every figure")
    parser.add_argument("--sizes", type=bench_runner.sizes_option, default=None,
                        help="step counts for scheduling and cold re-runs (default "
                             "1000,10000,100000; 1000,10000 with --quick)")
    parser.add_argument("--only", default="", help="run the groups whose name matches")
    parser.add_argument("--baseline", default=bench_startup.BASELINE,
                        help="the commit `dagnb run` is compared to")
    parser.add_argument("--all-cpus", action="store_true",
                        help="let the scheduler place every thread (default: one CPU)")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else ISSUE_SIZES
    return args


def main() -> None:
    args = options()
    harness.PIN = not args.all_cpus
    print(machine_note(), flush=True)
    print(cpus_note(), flush=True)
    print(byte_compiled(BENCH_DIR.parent / "dagnb"), flush=True)
    started = time.perf_counter()
    with scratch() as (disk, memory):
        print(disk_note(disk), flush=True)
        for name, figures in groups(args, disk, memory).items():
            if re.search(args.only, name):
                begin = time.perf_counter()
                figures()
                print(f"#   ({name}: {time.perf_counter() - begin:.0f} s)", flush=True)
        print(disk_note(disk).replace("# ", "# at the end, ", 1))
    print(summary())
    print(machine_note().replace("# ", "# at the end: ", 1).split(";")[0]
          + f"; {time.perf_counter() - started:.0f} s in all")


def cpus_note() -> str:
    """Where the trials run (see `harness.one_cpu`)."""
    if not harness.PIN:
        return "# trials on every CPU, wherever the scheduler puts each thread (--all-cpus)"
    return ("# trials on one CPU, every contender on the same (harness.one_cpu), but for the "
            "shell steps' (8 at once); --all-cpus to lift that")


if __name__ == "__main__":
    main()
