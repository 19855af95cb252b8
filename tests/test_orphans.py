"""No process outlives its step or its run, whatever way the step ends (issue #13, 5).

Each step below starts a process that escapes its process group (``setsid``, a
double-forking daemon, a plain background child) and writes its pid to a file; the
step waits for that file so the process surely exists before the step ends. After the
run, that pid must be gone: killed, and reaped if it is this process's to reap.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.executors import reaper
from dagnb.runtime.prepare import start_background
from dagnb.testing import terminal_signals, wait_until

pytestmark = [
    pytest.mark.usefixtures("workdir"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and prctl"),
]

_WAIT_FOR_PID = 'while [ ! -s "{file}" ]; do sleep 0.01; done'
# a double-forking daemon that closes its output, as daemons do
_DAEMON = (
    "import os, sys, time\n"
    "if os.fork(): sys.exit(0)\n"
    "os.setsid()\n"
    "if os.fork(): os._exit(0)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "os.close(0); os.close(1); os.close(2)\n"
    "time.sleep(300)\n"
)


def escaping(kind: str, file: Path) -> str:
    """Shell text that starts a process of ``kind`` writing its pid to ``file``."""
    starts = {
        "background": f'sleep 300 > /dev/null 2>&1 & echo $! > "{file}"',
        "setsid": f"setsid sh -c 'echo $$ > \"{file}\"; exec sleep 300' > /dev/null 2>&1 &",
        "setsid holding the pipes": f"setsid sh -c 'echo $$ > \"{file}\"; exec sleep 300' &",
        "daemon": f"python3 -c {_quote(_DAEMON)} '{file}'",
    }
    return f"{starts[kind]}\n{_WAIT_FOR_PID.format(file=file)}\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def pid_in(file: Path) -> int:
    assert wait_until(lambda: file.exists() and file.read_text().strip(), timeout=10), (
        "the escaping process never started"
    )
    return int(file.read_text())


def gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie of this process (another's
    zombie, init's, is its parent's to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state == "Z" and int(ppid) != os.getpid()


def left_behind(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"


KINDS = ["background", "setsid", "setsid holding the pipes", "daemon"]


@pytest.mark.parametrize("kind", KINDS)
def test_what_a_successful_step_started_dies_with_it(kind: str, workdir: Path) -> None:
    file = workdir / "pid"
    run = Graph("g", [Step("s", run=escaping(kind, file), timeout=20)]).run(
        executor="local", cache=False
    )
    pid = pid_in(file)
    assert run.states() == {"s": "succeeded"}
    assert wait_until(lambda: gone(pid), timeout=3), left_behind(pid)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("kind", ["setsid", "daemon"])
def test_a_step_timeout_kills_what_left_the_group(kind: str, workdir: Path) -> None:
    file = workdir / "pid"
    text = escaping(kind, file) + "sleep 300\n"
    run = Graph("g", [Step("s", run=text, timeout=1)]).run(executor="local", cache=False)
    pid = pid_in(file)
    assert run.states() == {"s": "failed"}
    assert wait_until(lambda: gone(pid), timeout=3), left_behind(pid)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_the_run_timeout_kills_what_left_the_group(workdir: Path) -> None:
    file = workdir / "pid"
    graph = Graph("g", [Step("s", run=escaping("setsid", file) + "sleep 300\n")])
    run = graph.run(executor="local", cache=False, timeout=1)
    pid = pid_in(file)
    assert run.states() == {"s": "cancelled"}
    assert wait_until(lambda: gone(pid), timeout=3), left_behind(pid)


def test_cancel_kills_what_left_the_group(workdir: Path) -> None:
    file = workdir / "pid"
    graph = Graph("g", [Step("s", run=escaping("daemon", file) + "sleep 300\n")])
    run = start_background(graph, executor="local", cache=False)
    pid = pid_in(file)
    run.cancel()
    run.wait(10)
    assert run.states() == {"s": "cancelled"}
    assert wait_until(lambda: gone(pid), timeout=3), left_behind(pid)


def test_this_process_is_a_subreaper_only_while_a_step_process_runs(workdir: Path) -> None:
    libc = ctypes.CDLL(None)
    flag = ctypes.c_int(-1)

    def subreaper() -> int:
        libc.prctl(37, ctypes.byref(flag), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
        return flag.value

    seen: list[int] = []
    graph = Graph("g", [Step("s", run="sleep 0.3"),
                        Step("look", func=lambda: seen.append(subreaper()))])
    run = start_background(graph, executor="local", cache=False)
    run.wait(10)
    assert run.ok and seen == [1]  # "look" ran while "s" was running
    assert subreaper() == 0


def test_a_process_with_another_token_is_left_alone(workdir: Path) -> None:
    other = subprocess.Popen(["sleep", "300"], env={**os.environ,
                                                    reaper.TOKEN_VARIABLE: "someone-else"})
    try:
        run = Graph("g", [Step("s", run="true")]).run(executor="local", cache=False)
        assert run.ok and other.poll() is None
        assert reaper.kill_tagged(["someone-else"]) == {other.pid}
        assert other.wait(5) == -signal.SIGKILL
    finally:
        other.kill()
        other.wait()


def test_the_pids_looked_at_wrap_around_pid_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "_last_pid", lambda: 5)
    monkeypatch.setattr(reaper.os, "listdir", lambda path: ["3", "5", "6", "900", "self"])
    assert sorted(reaper._candidates(800)) == [3, 5, 900]  # handed out after 800, then 1..5
    assert list(reaper._candidates(3)) == [4, 5]  # few new ones: tried one by one
    assert list(reaper._candidates(5)) == []
    assert sorted(reaper._candidates(None)) == [3, 5, 6, 900]


# -- Python steps called inline --------------------------------------------------------
def short_sleeps(progress: list[int]):
    def slow() -> int:
        for i in range(300):  # 30 s in short sleeps
            progress.append(i)
            time.sleep(0.1)
        return 1

    return slow


def stopped(progress: list[int]) -> bool:
    count = len(progress)
    time.sleep(0.3)
    return len(progress) == count


def test_an_inline_python_step_stops_at_its_timeout() -> None:
    progress: list[int] = []
    begun = time.monotonic()
    run = Graph("g", [Step("slow", func=short_sleeps(progress), timeout=0.5)]).run(
        executor="local", cache=False
    )
    assert time.monotonic() - begun < 2
    assert run.states() == {"slow": "failed"}
    assert "ran past its timeout of 0.5 s" in run.status().loc[0, "error"]
    assert stopped(progress)


def test_an_inline_python_step_stops_at_the_run_timeout() -> None:
    progress: list[int] = []
    graph = Graph("g", [Step("slow", func=short_sleeps(progress)),
                        Step("after", func=lambda slow: slow, needs=["slow"])])
    begun = time.monotonic()
    run = graph.run(executor="local", cache=False, timeout=0.5)
    assert time.monotonic() - begun < 2
    assert run.states() == {"slow": "cancelled", "after": "cancelled"}
    assert "the run's timeout of 0.5 s was reached" in run.status().loc[0, "error"]
    assert stopped(progress)


def test_a_step_timeout_does_not_reach_the_next_inline_step() -> None:
    graph = Graph("g", [Step("quick", func=lambda: 1, timeout=0.2),
                        Step("later", func=lambda quick: time.sleep(0.4) or quick,
                             needs=["quick"])])
    run = graph.run(executor="local", cache=False)
    assert run.states() == {"quick": "succeeded", "later": "succeeded"}


# -- the command line: Ctrl-C, twice, SIGTERM, SIGHUP -----------------------------------
def cli_run(workdir: Path, text: str) -> subprocess.Popen[str]:
    lines = "".join(f"      {line}\n" for line in text.splitlines())
    (workdir / "w.yml").write_text(f"steps:\n  s:\n    run: |\n{lines}")
    return subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--no-cache",
                             "--executor", "local"], cwd=workdir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=terminal_signals)


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_dagnb_run_kills_what_left_the_group(number: int, workdir: Path) -> None:
    file = workdir / "pid"
    child = cli_run(workdir, escaping("daemon", file) + "sleep 300")
    pid = pid_in(file)
    child.send_signal(number)
    _, err = child.communicate(timeout=10)
    assert child.returncode == 128 + number, err
    assert wait_until(lambda: gone(pid), timeout=2), left_behind(pid)


@pytest.mark.slow
def test_a_second_ctrl_c_kills_steps_that_ignore_sigterm_at_once(workdir: Path) -> None:
    file, escaped = workdir / "pid", workdir / "escaped"
    stubborn = (f"trap '' TERM INT\n{escaping('setsid', escaped)}"
                f"echo $$ > \"{file}\"\nwhile true; do sleep 0.05; done")
    child = cli_run(workdir, stubborn)
    pids = [pid_in(file), pid_in(escaped)]
    child.send_signal(signal.SIGINT)
    time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    begun = time.monotonic()
    _, err = child.communicate(timeout=10)
    assert time.monotonic() - begun < 2
    assert child.returncode == 128 + signal.SIGINT, err
    assert wait_until(lambda: all(gone(pid) for pid in pids), timeout=1), [
        left_behind(pid) for pid in pids
    ]


# -- the process that runs the steps dies first: a watcher kills what they left ----------
@pytest.mark.slow
def test_dagnb_run_killed_leaves_no_step_process(workdir: Path) -> None:
    file, escaped = workdir / "pid", workdir / "escaped"
    child = cli_run(workdir, f'{escaping("setsid", escaped)}echo $$ > "{file}"\n'
                             "sleep 300; echo never\n")
    pids = [pid_in(file), pid_in(escaped)]  # the step's shell, and one that left its group
    pids += wait_until(lambda: [pid for pid in _children_of(pids[0]) if pid not in pids],
                       timeout=5)  # the shell's sleep
    try:
        child.kill()  # (SIGKILL: dagnb run has no say)
        child.communicate(timeout=10)
        assert len(pids) == 3
        assert wait_until(lambda: all(gone(pid) for pid in pids), timeout=3), [
            left_behind(pid) for pid in pids
        ]
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# (dagnb run, its step's process started and the watcher not told yet: here held there)
_TOLD_LATE = """
import pathlib, sys, time
from dagnb.executors import reaper
told = reaper.StepProcesses.set_group
def late(self, pgid):
    pathlib.Path(sys.argv[1]).write_text(str(pgid))
    time.sleep(300)
reaper.StepProcesses.set_group = late
from dagnb.cli import main
sys.exit(main(["run", "w.yml", "--no-cache", "--executor", "local"]))
"""


@pytest.mark.slow
def test_dagnb_run_killed_as_its_first_step_starts_leaves_no_step_process(
        workdir: Path) -> None:
    """Killed between starting its first step's process and telling the watcher of it
    (starting the watcher, 15 ms, more on a busy machine), dagnb run left the step's
    processes running for good: 5 times in 37 beside busy loops. The watcher is told of
    the step before its process starts now, and kills by its token what it has of it."""
    file, told = workdir / "pid", workdir / "told"
    (workdir / "w.yml").write_text(f'steps:\n  s:\n    run: |\n      echo $$ > "{file}"\n'
                                   "      sleep 300; echo never\n")
    child = subprocess.Popen([sys.executable, "-c", _TOLD_LATE, str(told)], cwd=workdir,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(told.exists, timeout=20), child.communicate(timeout=1)
        pids = [pid_in(file)]
        pids += wait_until(lambda: _children_of(pids[0]), timeout=5)  # (its sleep)
    finally:
        child.kill()  # (SIGKILL: dagnb run has no say)
        child.communicate(timeout=10)
    try:
        assert wait_until(lambda: all(gone(pid) for pid in pids), timeout=3), [
            left_behind(pid) for pid in pids if not gone(pid)]
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


_LISTED = """
import os, signal, subprocess, sys
from dagnb.executors.watcher import Watcher
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # (as some programs do: a dead watcher is no kill)
watcher = Watcher("DAGNB_STEP_TOKEN", 0.3)
def start(token):
    step = subprocess.Popen(["sleep", "300"], start_new_session=True)
    watcher.add(token, step.pid)
    print(step.pid, flush=True)
    return step
def kill_the_watcher():
    for pid in open(f"/proc/self/task/{os.getpid()}/children").read().split():
        if b"watcher.py" in open(f"/proc/{pid}/cmdline", "rb").read():
            os.kill(int(pid), signal.SIGKILL)
            os.waitpid(int(pid), 0)
start("ended").kill()
watcher.drop("ended")
start("first")
if sys.argv[1] == "again":  # its watcher is killed: the next step starts another
    kill_the_watcher()
    start("second")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("case", ["once", "again"])
def test_the_groups_listed_with_the_watcher_die_when_their_starter_does(case: str) -> None:
    done = subprocess.run([sys.executable, "-c", _LISTED, case], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr
    _, *running = (int(pid) for pid in done.stdout.split())  # (the first one ended)
    try:
        assert len(running) == (2 if case == "again" else 1)
        assert wait_until(lambda: all(gone(pid) for pid in running), timeout=3), [
            left_behind(pid) for pid in running
        ]
    finally:
        for pid in running:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
