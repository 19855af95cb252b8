"""Orphans left per way a step ends (issue #13, problem 5): counts, not timings.

Each trial runs a fresh ``dagnb run`` (or, for ``cancel()``, a fresh Python process)
whose step starts the processes that a step leaves behind in real life, each writing
its pid to a file: a background child in the step's group (``sleep &``), a ``setsid``
child, a double-forking daemon that closes its output. The step waits until all have
started, then ends as the path says (exits, runs into a timeout, gets a signal, ...).
Once dagnb has exited, a trial's orphans are those of its processes still running 2 s
later. A path's line reads ``path: orphans 0 of 5 trials`` (trials with any orphan) and
how many processes survived in all.

    python benchmarks/trials_orphans.py              # 5 trials a path, about 3 minutes
    python benchmarks/trials_orphans.py -n 10 --only 'ctrl|daemon'

The last line times an inline (synchronous) Python step with ``timeout=1`` that would
run 8 s, and says how it was reported.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DAEMON = (
    "import os, sys, time\n"
    "if os.fork(): sys.exit(0)\n"
    "os.setsid()\n"
    "if os.fork(): os._exit(0)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "os.close(0); os.close(1); os.close(2)\n"
    "time.sleep(300)\n"
)
STARTS = {
    "group": 'sleep 300 > /dev/null 2>&1 & echo $! > "$PIDS/group"',
    "setsid": "setsid sh -c 'echo $$ > \"$PIDS/setsid\"; exec sleep 300' > /dev/null 2>&1 &",
    "daemon": "python3 -c \"$DAEMON\" \"$PIDS/daemon\"",
}
STUBBORN = "trap '' TERM INT\necho $$ > \"$PIDS/main\"\nwhile true; do sleep 0.05; done"


@dataclass
class Path_:
    """One way a step ends: what its step starts, how it ends, and how dagnb is stopped."""

    kinds: tuple[str, ...]
    tail: str = "sleep 300"  # after its children started: keeps running unless "" (ends)
    step_timeout: float | None = None
    args: tuple[str, ...] = ()
    signals: tuple[int, ...] = ()  # sent to dagnb once the children have started
    via_cancel: bool = False


ALL = ("group", "setsid", "daemon")
PATHS = {
    "Ctrl-C": Path_(ALL, signals=(signal.SIGINT,)),
    "second Ctrl-C (50 ms apart, step traps SIGTERM/SIGINT)": Path_(
        ALL, tail=STUBBORN, signals=(signal.SIGINT, signal.SIGINT)),
    "SIGTERM": Path_(ALL, signals=(signal.SIGTERM,)),
    "SIGHUP": Path_(ALL, signals=(signal.SIGHUP,)),
    "SIGKILL (dagnb run gets no say; step traps SIGTERM/SIGINT)": Path_(
        ALL, tail=STUBBORN, signals=(signal.SIGKILL,)),
    "step timeout": Path_(ALL, step_timeout=1),
    "run timeout": Path_(ALL, args=("--timeout", "1")),
    "cancel()": Path_(ALL, via_cancel=True),
    "step success, background child": Path_(("group",), tail=""),
    "step success, setsid child": Path_(("setsid",), tail=""),
    "step success, double-fork daemon": Path_(("daemon",), tail=""),
}

CANCEL = """
import sys, time
from pathlib import Path
from dagnb.runtime.prepare import start_background
from dagnb.workflows.loader import load
run = start_background(load('w.yml'), executor='local', cache=False)
pids = Path(sys.argv[1])
while not all((pids / kind).exists() for kind in sys.argv[2:]):
    time.sleep(0.01)
run.cancel()
run.wait(30)
print(run.states())
"""


def workflow(path: Path_) -> str:
    lines = [STARTS[kind] for kind in path.kinds]
    waits = " ".join(f'"$PIDS/{kind}"' for kind in path.kinds)
    lines.append(f"for f in {waits}; do while [ ! -s \"$f\" ]; do sleep 0.01; done; done")
    lines += path.tail.splitlines()
    body = "".join(f"      {line}\n" for line in lines)
    limit = f"    timeout: {path.step_timeout}\n" if path.step_timeout else ""
    return f"steps:\n  s:\n{limit}    run: |\n{body}"


def trial(path: Path_, folder: Path) -> int:
    """Run one trial in ``folder``; the number of its processes still running after."""
    pids = folder / "pids"
    pids.mkdir()
    (folder / "w.yml").write_text(workflow(path))
    env = {**os.environ, "PIDS": str(pids), "DAEMON": DAEMON}
    if path.via_cancel:
        argv = [sys.executable, "-c", CANCEL, str(pids), *path.kinds]
    else:
        argv = [sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--no-cache",
                "--executor", "local", *path.args]
    dagnb = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    watched = path.kinds + (("main",) if path.tail == STUBBORN else ())
    expected = [pids / kind for kind in watched]
    _wait(lambda: all(f.exists() and f.read_text().strip() for f in expected), 30)
    for number, sig in enumerate(path.signals):
        if number:
            time.sleep(0.05)
        dagnb.send_signal(sig)
    try:
        dagnb.wait(60)
    except subprocess.TimeoutExpired:
        dagnb.kill()
        dagnb.wait()
    started = [int(f.read_text()) for f in pids.iterdir() if f.read_text().strip()]
    _wait(lambda: not any(map(_running, started)), 2)
    survivors = [pid for pid in started if _running(pid)]
    for pid in survivors:  # do not let one trial's orphans bother the next
        os.kill(pid, signal.SIGKILL)
    return len(survivors)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(done: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def inline_timeout() -> str:
    """How an inline Python step with timeout=1 that would run 8 s ends."""
    script = (
        "import time, dagnb\n"
        "def f():\n"
        "    for _ in range(80):\n"
        "        time.sleep(0.1)\n"
        "g = dagnb.Graph('t', [dagnb.Step('f', func=f, timeout=1)])\n"
        "begun = time.monotonic()\n"
        "run = g.run(executor='local', cache=False)\n"
        "print(f'{time.monotonic() - begun:.1f}', run.states()['f'], '|',"
        " run.status().loc[0, 'error'])\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-c", script], cwd=folder, text=True,
                              capture_output=True, timeout=60)
    head, _, error = done.stdout.strip().partition(" | ")
    seconds, state = [*head.split(), "?", "?"][:2]
    return (f"inline Python step, timeout=1, 8 s of work: ran {seconds} s, "
            f"reported {state} ({error or done.stderr.strip()[-200:]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="trials per path (default 5)")
    parser.add_argument("--only", default="", help="a regular expression on path names")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("trials_orphans.py counts processes through /proc: Linux only")
    print(f"# {args.n} trials a path; each trial's step starts: "
          "group = sleep &, setsid = setsid child, daemon = double fork, main = the step")
    for name, path in PATHS.items():
        if args.only and not re.search(args.only, name, re.IGNORECASE):
            continue
        counts = []
        for _ in range(args.n):
            with tempfile.TemporaryDirectory() as folder:
                counts.append(trial(path, Path(folder)))
        bad = sum(1 for count in counts if count)
        watched = path.kinds + (("main",) if path.tail == STUBBORN else ())
        print(f"{name}: orphans {bad} of {args.n} trials "
              f"({sum(counts)} of {args.n * len(watched)} processes left; watched: "
              f"{', '.join(watched)})", flush=True)
    if not args.only or re.search(args.only, "inline", re.IGNORECASE):
        print(inline_timeout())


if __name__ == "__main__":
    main()
