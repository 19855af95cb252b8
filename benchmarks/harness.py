"""Side-by-side measurement: dagnb against a named peer, interleaved, medians.

Every benchmark in this folder measures through here, so that all figures obey the
same rules (see README.md):

- contenders run interleaved in one process run, A, B, A, B..., one *trial* each per
  round, so that a load spike or a CPU-frequency change hits both alike;
- ``gc.collect()`` before each trial, and the same repeat count inside each trial;
- the trials run on one CPU (`one_cpu`), the same for every contender, unless a figure
  is about processes running at once (``all_cpus=True``);
- at least 5 rounds; the median and the minimum are both printed, the ratio is the
  median of the per-round ratios, and a judged figure says in how many rounds its
  ratio was within the target (a miss in most rounds is not a miss by chance);
- a *cold* figure runs each trial in a fresh Python process (`child` / `wall`), a
  *warm* one in this process (`timed`);
- the clock stops when the call returns; work a contender deferred to a background
  thread is waited for (`settle`) off the clock, before the next trial starts.

A trial is any callable returning seconds per unit of work (per call, per step...).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "Figure",
    "Trial",
    "child",
    "column",
    "compare",
    "disk_note",
    "interleave",
    "machine_note",
    "one_cpu",
    "report",
    "run_child",
    "scratch",
    "settle",
    "summary",
    "timed",
    "wall",
]

BENCH_DIR = Path(__file__).resolve().parent
MIN_ROUNDS = 5
PIN = True  # run_all.py --all-cpus turns it off: the scheduler then places every thread

Trial = Callable[[], Any]  # seconds per unit, or a dict of such figures (see `column`)

_figures: list[Figure] = []


@dataclass
class Figure:
    """One printed comparison: dagnb's samples against a peer's, with a target ratio.

    The ratio is the median of the per-round ratios: a round's two trials ran back to
    back and saw alike load, so their ratio is steadier than either time. Samples that
    were not taken in the same rounds (``paired=False``) give the ratio of the medians.
    """

    name: str
    ours: list[float]
    peer: list[float]
    peer_name: str
    target: float | None  # dagnb/peer must be at most this; None: shown for information
    note: str = ""
    paired: bool = True
    unit: str = "s"  # what the samples count: seconds, or "B" (bytes)

    @property
    def ratio(self) -> float:
        if not self.paired:
            return statistics.median(self.ours) / statistics.median(self.peer)
        return statistics.median(a / b for a, b in zip(self.ours, self.peer, strict=True))

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    @property
    def rounds_met(self) -> int | None:
        """In how many rounds dagnb's trial was within the target of the peer's (None:
        no target, or trials not taken in the same rounds)."""
        if self.target is None or not self.paired:
            return None
        return sum(a / b <= self.target for a, b in zip(self.ours, self.peer, strict=True))

    def _ratio_text(self) -> str:
        """Two decimals, or as many more as it takes not to round across the target
        (0.2504 shown as 0.25 beside MISSED reads as a contradiction)."""
        for decimals in range(2, 7):
            text = f"{self.ratio:.{decimals}f}"
            if self.target is None or (float(text) <= self.target) == self.met:
                break
        return text

    def line(self) -> str:
        """``name: dagnb X, peer Y, ratio R (median of N), target T met|MISSED [min ...;
        within target in k of N rounds]``."""
        ours, peer = statistics.median(self.ours), statistics.median(self.peer)
        verdict = "(information)" if self.target is None else (
            f"target <= {self.target:g} {'met' if self.met else 'MISSED'}"
        )
        low_ours, low_peer = min(self.ours), min(self.peer)
        show = _show_bytes if self.unit == "B" else _show_seconds
        rounds = self.rounds_met
        within = "" if rounds is None else f"; within target in {rounds} of {len(self.ours)} rounds"
        text = (
            f"{self.name}: dagnb {show(ours)}, peer {self.peer_name} {show(peer)}, "
            f"ratio {self._ratio_text()} (median of {len(self.ours)}), {verdict}"
            f"  [min {show(low_ours)} / {show(low_peer)} = {low_ours / low_peer:.2f}{within}]"
        )
        return f"{text}  {self.note}" if self.note else text


def _show_seconds(seconds: float) -> str:
    """Seconds in the unit that gives 3 significant digits."""
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _show_bytes(count: float) -> str:
    """Bytes in MB (2**20), 3 significant digits."""
    return f"{count / (1 << 20):.3g} MB"


def interleave(
    trials: Mapping[str, Trial], rounds: int, *, all_cpus: bool = False
) -> dict[str, list[Any]]:
    """Run each trial once per round, in the given order, gc.collect() before each and
    `settle` after each (off the clock), on one CPU (`one_cpu`) unless ``all_cpus``."""
    if rounds < MIN_ROUNDS:
        raise ValueError(f"rounds={rounds!r} is too few to take a median; use >= {MIN_ROUNDS}")
    samples: dict[str, list[Any]] = {name: [] for name in trials}
    with one_cpu(PIN and not all_cpus):
        for _ in range(rounds):
            for name, trial in trials.items():
                gc.collect()
                samples[name].append(trial())
                settle()
    return samples


@contextlib.contextmanager
def one_cpu(enabled: bool = True) -> Iterator[int | None]:
    """Run every thread of this process, and the processes they start, on one CPU (the
    highest this process may use; Linux), and let them back on all of them after.

    A virtual machine's CPUs slow down one at a time, by up to a half for seconds, as
    the host's other work lands on them (measured here: one pinned busy loop per vCPU,
    one ran 1.5x slower for 2.5 s while the other did not). dagnb runs a graph on its
    loop thread while a peer like dask's get_sync runs on the calling thread, and the
    scheduler puts the two on different CPUs: a slow spell then hit one contender for
    rounds on end (dagnb at 1,000 no-op steps: 20 µs a step, then 31-35 for 13 rounds,
    dask unchanged). On one CPU a slow spell hits both alike, as interleaving means."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    _set_cpus({cpu})
    try:
        yield cpu
    finally:
        _set_cpus(allowed)


def _set_cpus(cpus: set[int]) -> None:
    """Every thread's CPUs (``sched_setaffinity(0)`` sets the calling thread's only, and
    dagnb's loop thread, started earlier, keeps its own; threads and processes started
    later take their starter's)."""
    try:
        threads = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for thread in threads:
        with contextlib.suppress(OSError):  # (a thread that ended meanwhile)
            os.sched_setaffinity(thread, cpus)


def timed(func: Callable[[], Any], repeat: int = 1, per: int = 1) -> Trial:
    """A warm trial: ``func`` called ``repeat`` times; seconds per ``repeat * per`` units."""

    def trial() -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            func()
        return (time.perf_counter() - start) / (repeat * per)

    return trial


def child(function: str, *args: Any, key: str | None = None) -> Trial:
    """A cold trial: ``workloads.<function>(*args)`` in a fresh interpreter.

    The function measures itself (after loading what it needs) and returns seconds, or a dict of
    figures from which ``key`` picks one (no key: the whole dict, see `column`).
    """

    def trial() -> Any:
        result = run_child(function, *args)
        return result if key is None else float(result[key])

    return trial


def column(samples: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """One figure out of trials that each returned several."""
    return [float(sample[key]) for sample in samples]


def run_child(function: str, *args: Any) -> Any:
    """Call ``workloads.<function>(*args)`` in a new process and return its JSON answer."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import workloads; "
        "print(json.dumps(getattr(workloads, sys.argv[2])(*json.loads(sys.argv[3]))))"
    )
    argv = [sys.executable, "-c", code, str(BENCH_DIR), function, json.dumps(args)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"workloads.{function}{tuple(args)!r} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wall(argv: Sequence[str], cwd: str | Path, env: Mapping[str, str] | None = None) -> Trial:
    """A cold trial timed from outside: the wall time of a whole command."""

    def trial() -> float:
        start = time.perf_counter()
        done = subprocess.run(
            list(argv), cwd=cwd, env=None if env is None else {**os.environ, **env},
            capture_output=True, text=True, check=False,
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)!r} failed:\n{done.stdout}{done.stderr}")
        return seconds

    return trial


@contextlib.contextmanager
def scratch() -> Iterator[tuple[Path, Path]]:
    """Two temporary folders: ``(disk, memory)``.

    Figures that write entries (misses, first runs) use the disk one: writing durably
    is part of what they measure. Figures that only read entries (hits, cached re-runs)
    use the memory one (/dev/shm when there is one), where reads cost what they cost from
    the page cache anyway, and the cache fill before them takes seconds, not minutes.
    """
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="dagnb-bench-") as disk, \
            tempfile.TemporaryDirectory(prefix="dagnb-bench-", dir=shm) as memory:
        yield Path(disk), Path(memory)


def settle() -> None:
    """Wait for work an older dagnb deferred to background threads (hit counts), off the
    clock; dagnb now writes them as the run ends, so there is nothing to wait for.

    Looked up by name: when the hook is gone, there is simply nothing to wait for.
    """
    for module_name in ("dagnb.cache.steps", "dagnb.cache"):
        module = sys.modules.get(module_name)
        wait = getattr(module, "wait_for_flushes", None)
        if wait is not None:
            wait()
            return


def report(figure: Figure) -> Figure:
    """Print a figure's line and keep it for the summary."""
    _figures.append(figure)
    print(figure.line(), flush=True)
    return figure


def compare(
    name: str,
    ours: Trial,
    peer: Trial,
    peer_name: str,
    target: float | None,
    rounds: int,
    note: str = "",
) -> Figure:
    """Interleave dagnb's trial with the peer's and report the figure."""
    samples = interleave({"dagnb": ours, "peer": peer}, rounds)
    return report(Figure(name, samples["dagnb"], samples["peer"], peer_name, target,
                         note=note))


def machine_note() -> str:
    """The load the figures were taken under: they are only comparable side by side."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"# {os.cpu_count()} cores, load average {load} (1/5/15 min); Python "
        f"{sys.version.split()[0]}. Absolute times move with the load; the ratios, "
        "taken from interleaved trials, are what to compare."
    )


def byte_compiled(tree: Path) -> str:
    """Byte-compile the Python modules under ``tree`` (as ``pip install`` does for the
    peers' packages) and say so: where ``PYTHONDONTWRITEBYTECODE`` is set, an editable
    install is compiled from source in every fresh process, which start-up figures
    would count against dagnb alone."""
    import compileall

    compileall.compile_dir(str(tree), quiet=2, force=False)
    unset = "set" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "not set"
    return (f"# {tree.name} byte-compiled first, as pip does for the peers' packages "
            f"(PYTHONDONTWRITEBYTECODE is {unset} here)")


def disk_note(folder: Path, count: int = 100) -> str:
    """How fast the disk under ``folder`` makes files and folders now (medians of
    ``count``). Figures that make files (first runs: the peer's file per result; shell
    steps: three folders and a file each) move with it, and on a virtual machine it can
    change tenfold within minutes, as its I/O budget empties and refills."""
    probe = Path(tempfile.mkdtemp(prefix="disk-probe-", dir=folder))
    try:
        files, folders = [], []
        for index in range(count):
            path = probe / f"f{index}"
            start = time.perf_counter()
            path.with_suffix(".tmp").write_bytes(b"probe")
            os.replace(path.with_suffix(".tmp"), path)
            files.append(time.perf_counter() - start)
            start = time.perf_counter()
            (probe / f"d{index}").mkdir()
            folders.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return (f"# disk: a file written and renamed in {_us(statistics.median(files))}, "
            f"a folder made in {_us(statistics.median(folders))} (medians of {count})")


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def summary() -> str:
    """How many targets were met, and which were missed."""
    judged = [figure for figure in _figures if figure.target is not None]
    missed = [figure.name for figure in judged if not figure.met]
    text = f"# targets met: {len(judged) - len(missed)} of {len(judged)}"
    return text + (f"; MISSED: {', '.join(missed)}" if missed else "")
