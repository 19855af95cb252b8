"""The figures of issue 13 (nothing lost, nothing leaked), from the same kinds of trial.

    python benchmarks/trials_durability.py            # every figure, about 5 min
    python benchmarks/trials_durability.py --quick    # smaller counts, about 1.5 min
    python benchmarks/trials_durability.py --only 'kill|disk'

Groups: ``kill`` (SIGKILL of ``dagnb run`` at random times: corrupt entries served, next
run repaired), ``writers`` (2-4 processes running one workflow on one cache: each step
ran once), ``disk`` (a full 8 MB tmpfs: outputs lost, tracebacks), ``damage`` (every kind
of cache damage: served, rebuilt), ``secrets`` (leaks per vector), ``hostile`` (rc, lines
of stderr, time, peak memory), ``rss`` (peak RSS for a step printing 1 GB, live and
replayed from the cache). Each figure is one line. Needs root for the tmpfs and the
mode-bit trials (they are reported as skipped otherwise).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAGNB = [sys.executable, "-m", "dagnb.cli"]


def say(group: str, text: str) -> None:
    print(f"{group}: {text}", flush=True)


def _test_module(name: str) -> Any:
    """A module of tests/ (its cases are the trials' cases)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="dagnb-trials-"))
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)  # rmtree recurses per level


def measured(command: list[str], cwd: Path, timeout: float = 120) -> dict[str, Any]:
    """Run ``command`` in a fresh wrapper process: rc, stderr, seconds, peak RSS (MB)."""
    wrapper = ("import resource, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "print(p.returncode, time.perf_counter() - t,"
               " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.stderr.write(p.stderr)\n")
    try:
        done = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": "timeout", "stderr": "", "seconds": timeout, "rss_mb": 0}
    rc, seconds, rss = done.stdout.split()
    return {"rc": int(rc), "stderr": done.stderr, "seconds": float(seconds),
            "rss_mb": int(rss) // 1024}


# ---------------------------------------------------------------- SIGKILL trials

CRASH_WORKFLOW = """
name: crash
steps:
{steps}
"""
CRASH_STEP = """  s{i}:
    run: 'head -c {size} /dev/urandom > "$DAGNB_OUT/data.bin"; seq 1 {lines}; sleep 0.0{i}'
"""


def _crash_workflow(folder: Path) -> Path:
    rng = random.Random(13)
    steps = "".join(CRASH_STEP.format(i=i, size=rng.randrange(1_000, 3_000_000),
                                      lines=rng.randrange(1, 5_000)) for i in range(8))
    path = folder / "crash.yml"
    path.write_text(CRASH_WORKFLOW.format(steps=steps))
    return path


def _served_corrupt(cache: Path) -> tuple[int, int]:
    """(entries served, of which corrupt) by a fresh reader of ``cache``."""
    from dagnb.cache import Store

    served = corrupt = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = Store(cache)
        for step in store.backend.names():
            for key in store.backend.names(step):
                entry = store.lookup(step, key, touch=False)
                if entry is None:
                    continue
                served += 1
                try:
                    whole = entry.verify() and sum(1 for _ in entry.iter_logs()) >= 1
                except Exception:
                    whole = False
                corrupt += not whole
    return served, corrupt


def trial_kill(trials: int) -> None:
    with scratch() as folder:
        workflow, cache = _crash_workflow(folder), folder / "cache"
        rng = random.Random(1)
        served = corrupt = repaired = 0
        for trial in range(trials):
            extra = ["--refresh"] if trial % 2 else []  # replacing entries: the save window
            process = subprocess.Popen([*DAGNB, "run", str(workflow), "--cache-dir", str(cache),
                                        "--executor", "local", *extra], cwd=folder,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
            time.sleep(rng.uniform(0.3, 2.5))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            counts = _served_corrupt(cache)
            served, corrupt = served + counts[0], corrupt + counts[1]
            again = subprocess.run([*DAGNB, "run", str(workflow), "--cache-dir", str(cache),
                                    "--executor", "local"], cwd=folder, capture_output=True)
            repaired += again.returncode == 0 and _served_corrupt(cache) == (8, 0)
        say("kill", f"{trials} SIGKILLs of `dagnb run` at random times (0.3-2.5 s, half of "
                    f"them refreshing): {served} entries served after them, {corrupt} corrupt; "
                    f"next run repaired {repaired}/{trials}")


# ---------------------------------------------------------------- concurrent writers

def _writers_workflow(folder: Path, counter: Path) -> Path:
    steps = []
    for i in range(8):
        needs = f"\n    needs: [w{i - 1}]" if i % 2 else ""
        steps.append(f"  w{i}:{needs}\n    run: 'echo w{i} >> {counter}; sleep 0.2; "
                     f"echo w{i} > \"$DAGNB_OUT/x\"'\n")
    path = folder / "writers.yml"
    path.write_text("name: writers\nsteps:\n" + "".join(steps))
    return path


def trial_writers(rounds: int) -> None:
    for processes in (2, 3, 4):
        exact = 0
        for _ in range(rounds):
            with scratch() as folder:
                counter = folder / "ran.txt"
                workflow = _writers_workflow(folder, counter)
                command = [*DAGNB, "run", str(workflow), "--cache-dir", str(folder / "cache"),
                           "--executor", "local"]
                running = [subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                           for _ in range(processes)]
                codes = [p.wait() for p in running]
                ran = counter.read_text().split()
                exact += codes == [0] * processes and sorted(ran) == [f"w{i}" for i in range(8)]
        say("writers", f"{processes} processes, one workflow of 8 steps, one cache: every step "
                       f"ran exactly once and every process succeeded in {exact}/{rounds} trials")


# ---------------------------------------------------------------- full disk

def _mount(folder: Path, options: str) -> bool:
    folder.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _disk_run(cache: Path, step: Any) -> tuple[Any, list[str], str | None]:
    from dagnb import Graph
    from dagnb.testing import isolated

    with isolated(cache_directory=str(cache)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run = Graph("disk", [step]).run(executor="local")
        except Exception as exc:  # a traceback: what must not happen
            return None, [], f"{type(exc).__name__}: {exc}"
        return run, [str(w.message) for w in caught], None


def trial_disk(sizes: list[int]) -> None:
    from dagnb import Step

    with scratch() as folder:
        results: dict[str, int] = {"succeeded": 0, "cached": 0, "failed": 0}
        lost = tracebacks = warned = 0
        for index, kb in enumerate(sizes):
            disk = folder / f"d{index}"
            if not _mount(disk, "size=8m"):
                say("disk", "skipped: this process cannot mount a tmpfs")
                return
            try:
                step = Step("big", run=f'head -c {kb * 1024} /dev/zero > "$DAGNB_OUT/b"; '
                                       "seq 1 2000")
                run, caught, error = _disk_run(disk / "cache", step)
                if error:
                    tracebacks += 1
                    continue
                state = run.states()["big"]
                results[state] = results.get(state, 0) + 1
                warned += bool(caught)
                if state in ("succeeded", "cached"):
                    out = run.outputs("big") / "b"
                    lost += not out.exists() or out.stat().st_size != kb * 1024
            finally:
                subprocess.run(["umount", "-l", str(disk)], check=False)
        say("disk", f"8 MB tmpfs, a step writing {sizes[0]}-{sizes[-1]} KB and 2,000 lines "
                    f"({len(sizes)} sizes): {results}; outputs lost 0 expected, got {lost}; "
                    f"tracebacks {tracebacks}; runs with a warning {warned}")
        _inodes(folder)


def _inodes(folder: Path) -> None:
    from dagnb import Step

    states, tracebacks = [], 0
    for inodes in range(10, 44, 2):
        disk = folder / f"i{inodes}"
        if not _mount(disk, f"size=8m,nr_inodes={inodes}"):
            return
        try:
            step = Step("many", run='for i in 1 2 3 4 5 6; do echo $i > "$DAGNB_OUT/f$i"; done')
            run, _, error = _disk_run(disk / "cache", step)
            tracebacks += error is not None
            states.append(run.states()["many"] if run else "traceback")
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    tally = {s: states.count(s) for s in sorted(set(states))}
    say("disk", f"inodes exhausted (tmpfs of 10-42 inodes, a step making 6 files): {tally}; "
                f"tracebacks {tracebacks}")


# ---------------------------------------------------------------- damage

def trial_damage() -> None:
    from dagnb.testing import isolated

    damage = _test_module("test_cache_damage")
    for kind, (hurt, _rebuilt) in damage.DAMAGE.items():
        with scratch() as folder:
            cache = folder / ".dagnb_cache"
            with isolated(cache_directory=str(cache)):
                damage._graph().run(executor="local").raise_for_status()
            hurt(cache)
            with isolated(cache_directory=str(cache)), warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                try:
                    run = damage._graph().run(executor="local")
                    bad = (run.result("value") != {"n": 1}
                           or (run.outputs("make") / "a.txt").read_text() != "hello"
                           or run.logs("use")["line"].tolist() != ["hello"])
                    ran = sorted(n for n, s in run.states().items() if s == "succeeded")
                    outcome = f"served {int(bad)}, rebuilt {len(ran)} ({', '.join(ran) or '-'})"
                except Exception as exc:
                    outcome = f"EXCEPTION {type(exc).__name__}: {exc}"
        say("damage", f"{kind}: {outcome}")
    _damage_as_nobody(damage)


def _damage_as_nobody(damage: Any) -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        say("damage", "mode 000 / read-only cache: skipped (needs root to become 'nobody')")
        return
    for kind in ("mode 000 on an entry", "read-only cache"):
        folder = Path(tempfile.mkdtemp(prefix="dagnb-nobody-"))
        try:
            folder.chmod(0o777)
            cache = folder / "cache"
            damage._chown_tree(folder, 65534)
            damage._as_nobody(folder, cache)
            if kind == "mode 000 on an entry":
                damage._entry(cache, "make").chmod(0)
            else:
                damage._chown_tree(cache, 0)
                for path, dirs, _ in os.walk(cache):
                    for name in [path, *(os.path.join(path, d) for d in dirs)]:
                        os.chmod(name, 0o555)
            again = damage._as_nobody(folder, cache)
            ran = sorted(n for n, s in again["states"].items() if s == "succeeded")
            say("damage", f"{kind} (as user nobody): served {int(again['value'] != {'n': 1})}, "
                          f"rebuilt {len(ran)} ({', '.join(ran) or '-'}); states "
                          f"{again['states']}; {len(again['warnings'])} warning(s)")
        except AssertionError as exc:
            say("damage", f"{kind}: TRACEBACK {str(exc).splitlines()[0]}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- secrets

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
       "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----")
TOKEN = "tok-5f1d2c3b4a59687766554433"
PY = "python3 -c"
SHELL_VECTORS = {
    "PEM printed whole": 'printf "%s\\n" "$KEY"',
    "PEM as base64": 'printf "%s" "$KEY" | base64 -w0; echo',
    "PEM URL-encoded": f"{PY} 'import os, urllib.parse; print(urllib.parse.quote(os.environ[\"KEY\"], safe=\"\"))'",  # noqa: E501
    "PEM as JSON": f"{PY} 'import os, json; print(json.dumps(os.environ[\"KEY\"]))'",
    "PEM as repr": f"{PY} 'import os; print(repr(os.environ[\"KEY\"]))'",
    "token on stderr": 'echo "token=$TOKEN" >&2',
    "token in an error": 'echo "failed with $TOKEN" >&2; exit 3',
}


def _secret_forms() -> list[str]:
    inner = PEM.splitlines()[1:3]
    return [*inner, base64.b64encode(PEM.encode()).decode()[:40],
            urllib.parse.quote(inner[0], safe=""), TOKEN]


def _leaks(run: Any, cache: Path) -> int:
    texts = [repr(e.data) for e in run.events] + run.logs()["line"].tolist()
    texts += [p.read_text(errors="replace") for p in cache.rglob("*.json*") if p.is_file()]
    return sum(form in text for text in texts for form in _secret_forms())


def trial_secrets() -> None:
    from dagnb import Graph, Step
    from dagnb.testing import isolated

    os.environ.update(KEY=PEM, TOKEN=TOKEN)
    for vector, command in SHELL_VECTORS.items():
        with scratch() as folder, isolated(cache_directory=str(folder / "c")):
            run = Graph("s", [Step("s", run=command, secrets=("KEY", "TOKEN"),
                                   retries={"max_retries": 0})]).run(executor="local")
            say("secrets", f"declared, {vector}: {_leaks(run, folder / 'c')} leaks")
    with scratch() as folder, isolated(cache_directory=str(folder / "c")):
        run = Graph("s", [Step("uses", run="true", secrets=("KEY", "TOKEN")),
                          Step("other", run='echo "[$KEY][$TOKEN]"')]).run(executor="local")
        say("secrets", f"a step echoing secrets another step declares: "
                       f"{_leaks(run, folder / 'c')} leaks (it sees "
                       f"{run.logs('other')['line'].tolist()})")
    _python_secrets()


def _python_secrets() -> None:
    import logging

    from dagnb import Graph
    from dagnb.testing import isolated

    handler_made_before = logging.StreamHandler(sys.stderr)

    def printed() -> None:
        print(os.environ["TOKEN"])

    def logged() -> None:
        logging.getLogger("trial").addHandler(handler_made_before)
        logging.getLogger("trial").warning("token %s", os.environ["TOKEN"])

    for name, func in (("Python print", printed), ("Python logging handler", logged)):
        with scratch() as folder, isolated(cache_directory=str(folder / "c")):
            graph = Graph("p")
            graph.step(func, name="p", secrets=("TOKEN",))
            run = graph.run(executor="local")
            say("secrets", f"declared, {name}: {_leaks(run, folder / 'c')} leaks in logs, "
                           "events and the cache" + (" (a handler made before the run "
                           "writes to the terminal, uncaptured)" if func is logged else ""))


# ---------------------------------------------------------------- hostile inputs

def trial_hostile() -> None:
    hostile = _test_module("test_hostile_inputs")
    with scratch() as folder:
        for case, (text, _) in sorted(hostile.CASES.items()):
            (folder / "w.yml").write_text(text)
            for command in ("validate", "run"):
                _hostile_line(f"{case} ({command})", [*DAGNB, command, "w.yml"], folder)
        (folder / "bad.yml").write_bytes(b"steps:\n  a:\n    run: echo \xff\xfe\n")
        _hostile_line("non-UTF-8 YAML", [*DAGNB, "validate", "bad.yml"], folder)
        os.mkfifo(folder / "fifo.yml")
        _hostile_line("FIFO as workflow", [*DAGNB, "validate", "fifo.yml"], folder)
        _hostile_line("/dev/zero as workflow", [*DAGNB, "validate", "/dev/zero"], folder)
        _hostile_mounts(folder)


def _hostile_line(label: str, command: list[str], folder: Path) -> None:
    result = measured(command, folder, timeout=60)
    lines = result["stderr"].count("\n")
    tb = " TRACEBACK" if "Traceback" in result["stderr"] else ""
    say("hostile", f"{label}: rc {result['rc']}, {lines} line(s), {result['seconds']:.2f} s, "
                   f"peak {result['rss_mb']} MB{tb}")


def _hostile_mounts(folder: Path) -> None:
    dag = folder / "dag"
    dag.mkdir()
    (dag / "d18").mkdir()
    (dag / "d18" / "leaf").write_text("x")
    for level in range(17, -1, -1):
        (dag / f"d{level}").mkdir()
        for link in "ab":
            (dag / f"d{level}" / link).symlink_to(dag / f"d{level + 1}")
    deep = folder / "deep"
    deep.mkdir()
    for _ in range(1200):  # os.makedirs would recurse once per level
        deep = deep / "d"
        deep.mkdir()
    (folder / "loop").symlink_to(folder / "loop")
    for label, host in (("symlink DAG of 18 levels as a mount", "dag/d0"),
                        ("1,200-deep folder as a mount", "deep"),
                        ("self-looping symlink as a mount", "loop")):
        (folder / "m.yml").write_text(
            f"steps:\n  a:\n    run: echo hi\n    mounts:\n      {host}: /data\n")
        _hostile_line(label, [*DAGNB, "run", "m.yml", "--executor", "local"], folder)


# ---------------------------------------------------------------- memory

RSS_RUN = """
import sys
import dagnb
from dagnb import Graph, Step
dagnb.configure(cache_directory=sys.argv[1])
mb, width = int(sys.argv[2]), int(sys.argv[3])
fold = f" | fold -w {width - 1}" if width else ""  # width 0: one line
step = Step("big", run=f"head -c {mb}000000 /dev/zero | tr '\\\\0' x" + fold)
run = Graph("big", [step]).run(executor="local")
lines = sum(1 for _ in run.logs("big", tail=1)["line"])
print(run.states()["big"], lines)
"""


def trial_rss(megabytes: int, width: int = 1_000) -> None:
    """Peak RSS of a whole ``dagnb`` process whose step prints ``megabytes`` in lines of
    ``width`` bytes (the time per line, not per byte, dominates: 100-byte lines take
    about 10 times as long)."""
    with scratch() as folder:
        for label in ("live", "cached replay"):
            result = measured([sys.executable, "-c", RSS_RUN, str(folder / "c"),
                               str(megabytes), str(width)], folder, timeout=900)
            say("rss", f"a step printing {megabytes:,} MB in {width:,}-byte lines, {label}: "
                       f"peak RSS {result['rss_mb']} MB (whole process), "
                       f"{result['seconds']:.1f} s, rc {result['rc']}")
        long = measured([sys.executable, "-c", RSS_RUN,
                         str(folder / "c2"), "100", "0"], folder, timeout=300)
        say("rss", f"one 100 MB line: {long['seconds']:.1f} s, peak RSS {long['rss_mb']} MB")


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 1.5 min)")
    parser.add_argument("--only", default="", help="a regular expression of groups to run")
    options = parser.parse_args()
    quick = options.quick
    groups: dict[str, Callable[[], None]] = {
        "kill": lambda: trial_kill(12 if quick else 50),
        "writers": lambda: trial_writers(1 if quick else 3),
        "disk": lambda: trial_disk(list(range(7_000, 8_400, 400 if quick else 100))),
        "damage": trial_damage,
        "secrets": trial_secrets,
        "hostile": trial_hostile,
        "rss": lambda: trial_rss(100 if quick else 1_000),
    }
    print(f"# load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, "
          f"{'quick' if quick else 'full'} run", flush=True)
    for name, group in groups.items():
        if not options.only or re.search(options.only, name):
            started = time.perf_counter()
            group()
            print(f"# {name} took {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
