"""The tagging of what in-process Python steps start (``children_tagged``, once a run),
in the ways a run goes: each script below runs graphs in a process of its own, which
is then SIGKILLed (a ``dagnb run`` or a kernel killed), and the processes its steps
started must die with it, those started outside a run must not.

- A step that puts ``os.environ`` back from a copy (``mock.patch.dict``) set the token
  again as a copy: it stayed after the run, and every later run took it for another
  dagnb's and tagged nothing.
- A ``dagnb run`` started by a Python step: its watcher carried the step's token, and
  was killed with it, before it killed that run's own steps.
- A child a Python step forked (``multiprocessing``), not exec'd, has no token in
  ``/proc``: it is told to the watcher as it is forked.
- A watcher that could not start for now (no descriptor left) failed the run, or was
  never started again; an error as the first run began left no later run tagged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dagnb.testing import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="processes are found by their token in /proc")

# the start of every script: ``started(name)`` is a command that writes its pid to the
# file ``name`` of the folder (argv[1]) and sleeps
_PRELUDE = """
import os, subprocess, sys
from pathlib import Path
import dagnb

folder = Path(sys.argv[1])

def started(name):
    return ["sh", "-c", f'echo $$ > "{folder}/{name}.tmp"; '
            f'mv "{folder}/{name}.tmp" "{folder}/{name}"; exec sleep 321']

def run(name, func):
    dagnb.Graph(name, [dagnb.Step(name, func=func)]).run(cache=False, executor="local")
"""


def _gone(pid: int) -> bool:
    """Neither running nor a zombie waiting for this process (init reaps its own)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state == "Z" and int(ppid) != os.getpid()


def _killed_while_running(script: str, folder: Path, names: list[str]) -> dict[str, int]:
    """Run ``script`` until the processes ``names`` wrote their pids, SIGKILL it; their
    pids (the caller kills those left)."""
    (folder / "script.py").write_text(_PRELUDE + script)
    with open(folder / "err", "wb") as err:  # (a file: the sleeps would hold a pipe)
        runner = subprocess.Popen([sys.executable, str(folder / "script.py"), str(folder)],
                                  cwd=folder, stdout=err, stderr=err)
    pids: dict[str, int] = {}
    try:
        for name in names:
            file = folder / name
            assert wait_until(lambda file=file: file.exists() or runner.poll() is not None,
                              timeout=30), f"{name} never written"
            assert file.exists(), (folder / "err").read_text()
            pids[name] = int(file.read_text())
    finally:
        runner.kill()
        runner.wait(timeout=10)
    return pids


@contextlib.contextmanager
def _killed_after(pids: dict[str, int]):  # type: ignore[no-untyped-def]
    try:
        yield
    finally:
        for pid in pids.values():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_a_step_putting_os_environ_back_from_a_copy_leaves_later_runs_tagged(
        workdir: Path) -> None:
    script = """
from unittest import mock

def patches():
    with mock.patch.dict(os.environ, {"SOME": "1"}):  # back from a copy as it ends
        pass

run("patches", patches)
(folder / "left").write_text(repr(os.environ.get("DAGNB_STEP_TOKEN")))
subprocess.run(["sh", "-c", f'echo "${{DAGNB_STEP_TOKEN-}}" > "{folder}/inherited"'])
run("spawns", lambda: subprocess.run(started("child")))
"""
    pids = _killed_while_running(script, workdir, ["child"])
    with _killed_after(pids):
        assert (workdir / "left").read_text() == "None", "the token stayed after the run"
        assert (workdir / "inherited").read_text() == "\n"
        assert wait_until(lambda: _gone(pids["child"]), timeout=5), (
            "a later run's step's child outlived the process that ran the step")


def test_a_dagnb_run_a_python_step_started_kills_its_steps_as_both_die(
        workdir: Path) -> None:
    script = """
inner = f'''
import dagnb
dagnb.Graph("inner", [dagnb.Step("sh", run={started("child")[2]!r})]).run(
    cache=False, executor="local")
'''
run("outer", lambda: subprocess.run([sys.executable, "-c", inner]))
"""
    pids = _killed_while_running(script, workdir, ["child"])
    with _killed_after(pids):  # (the outer watcher kills the inner dagnb, its own the step)
        assert wait_until(lambda: _gone(pids["child"]), timeout=5), (
            "the inner run's step outlived both dagnb processes")


@pytest.mark.parametrize(("failing", "error"), [
    ("socket.socketpair", "OSError(errno.EMFILE, 'Too many open files')"),
    ("subprocess.Popen", "OSError(errno.EMFILE, 'Too many open files')"),
    ("ctypes.c_void_p", "MemoryError()"),  # (in the reaper: as the entry is put in place)
])
def test_a_watcher_that_cannot_start_for_now_leaves_later_runs_tagged(
        workdir: Path, failing: str, error: str) -> None:
    script = f"""
import ctypes, errno, socket
from dagnb.executors import reaper, watcher

module, name = {failing!r}.split(".")
real = getattr(sys.modules[module], name)
failed = []

def fails_once_for_dagnb(*args, **kwargs):  # (the others' calls go through)
    caller = sys._getframe(1).f_globals["__name__"]
    if not failed and caller in (watcher.__name__, reaper.__name__):
        failed.append(True)
        raise {error}
    return real(*args, **kwargs)

setattr(sys.modules[module], name, fails_once_for_dagnb)
try:
    run("first", lambda: None)
except BaseException as raised:
    (folder / "first").write_text(repr(raised))
assert failed
run("spawns", lambda: subprocess.run(started("child")))
"""
    pids = _killed_while_running(script, workdir, ["child"])
    with _killed_after(pids):
        if "OSError" in error:  # (no watcher for now fails no run)
            assert not (workdir / "first").exists(), (workdir / "first").read_text()
        assert wait_until(lambda: _gone(pids["child"]), timeout=5), (
            "a later run's step's child outlived the process that ran the step")


def test_a_board_not_mapped_leaves_no_descriptor_open(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmap

    from dagnb.executors.watcher import Watcher

    def no_memory(*args: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", no_memory)
    watcher = Watcher("DAGNB_REVIEW_TOKEN", 0.3)
    before = set(os.listdir("/proc/self/fd"))
    watcher._open_board()
    assert watcher._board is None
    assert set(os.listdir("/proc/self/fd")) == before


def test_overlapping_and_interrupted_runs_tag_only_while_one_runs(workdir: Path) -> None:
    """Not bugs, kept as guards: a run interrupted (Ctrl-C) leaves nothing tagged; a run
    ending while another still runs leaves the other's steps tagged."""
    script = """
import asyncio, signal, threading, time

def long():
    for _ in range(3000):
        time.sleep(0.01)

threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    run("interrupted", long)
except KeyboardInterrupt:
    pass
subprocess.Popen(started("after"))  # between runs: the user's own

begun = threading.Event()

async def spans():  # (async: the loop is free for the other run meanwhile)
    begun.set()
    while not (folder / "go").exists():
        await asyncio.sleep(0.01)
    await asyncio.create_subprocess_exec(*started("overlap"))
    await asyncio.sleep(300)

thread = threading.Thread(target=run, args=("long", spans), daemon=True)
thread.start()
begun.wait()
run("short", lambda: None)
(folder / "go").write_text("")
thread.join()
"""
    pids = _killed_while_running(script, workdir, ["after", "overlap"])
    with _killed_after(pids):
        assert wait_until(lambda: _gone(pids["overlap"]), timeout=5)
        assert not _gone(pids["after"]), "the user's own process was killed"


def test_a_forked_child_of_a_python_step_dies_with_the_process(workdir: Path) -> None:
    """Forked, not exec'd: its /proc environment is the one this process started with,
    without the token. What a child forked in an ended run leaves running lives on."""
    script = """
import multiprocessing, time

fork = multiprocessing.get_context("fork")

def sleeps(name):
    (folder / f"{name}.tmp").write_text(str(os.getpid()))
    os.rename(folder / f"{name}.tmp", folder / name)
    time.sleep(321)

def leaves():
    fork.Process(target=sleeps, args=("left",)).start()

def forks():
    process = fork.Process(target=sleeps, args=("child",))
    process.start()
    process.join()

run("leaves", leaves)  # a child forked in a run that ended: left running on purpose
fork.Process(target=sleeps, args=("own",)).start()  # between runs: the user's own
run("forks", forks)
"""
    pids = _killed_while_running(script, workdir, ["left", "own", "child"])
    with _killed_after(pids):
        assert wait_until(lambda: _gone(pids["child"]), timeout=5), (
            "the running step's forked child outlived the process that ran the step")
        assert not _gone(pids["left"]) and not _gone(pids["own"])


def test_a_forked_child_tells_the_token_held_as_it_was_forked() -> None:
    """The child tells its token after the fork, and the board is shared: read there, it
    could be the next run's by then (a process forked between two runs was killed with
    the second: the suite's own run caught it). The token is the one held at the fork."""
    import copy
    import socket

    from dagnb.executors.watcher import Watcher

    watcher = Watcher("DAGNB_REVIEW_TOKEN", 0.3)
    watcher._open_board()
    assert watcher._board is not None
    ours, theirs = socket.socketpair()
    with ours, theirs:
        watcher.hold(b"")  # forked between two runs: the child's copy holds none
        child = copy.copy(watcher)
        watcher.hold(b"a" * 24)  # the next run starts before the child tells
        child._tell_forked(ours)
        watcher.hold(b"b" * 24)  # forked in a run
        child = copy.copy(watcher)
        watcher.hold(b"")  # which ends before the child tells
        child._tell_forked(ours)
        ours.shutdown(socket.SHUT_WR)
        told = theirs.recv(4096).decode()
    assert told.count("\n") == 1 and told.endswith(f" {'b' * 24}\n"), told


def test_a_fully_cached_run_starts_no_watcher(workdir: Path) -> None:
    """The watcher (a process of its own, 10 ms of CPU) is started by the first Python
    step called: a re-run served from the cache calls none, and starts nothing."""
    (workdir / "script.py").write_text(_PRELUDE + """
run = dagnb.Graph("cached", [dagnb.Step("a", func=lambda: 1)]).run(
    cache_directory=folder / "cache", executor="local")
children = [p for f in Path("/proc/self/task").glob("*/children") for p in f.read_text().split()]
print(run.states()["a"], len(children))
""")
    runs = [subprocess.run([sys.executable, "script.py", str(workdir)], cwd=workdir,
                           capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs == [["succeeded", "1"], ["cached", "0"]], runs  # (the first: its watcher)


def test_a_python_step_after_cached_ones_has_its_children_tagged(workdir: Path) -> None:
    """Tagged from the first step called, not the run's first step: one served from the
    cache before it leaves it tagged all the same."""
    script = """
graph = lambda: dagnb.Graph("mixed", [
    dagnb.Step("a", func=lambda: 1),
    dagnb.Step("b", func=lambda a: subprocess.run(started("child")) if spawn else a,
               needs=["a"], cache=False)])
spawn = False
graph().run(cache_directory=folder / "cache", executor="local")
spawn = True
run = graph().run(cache_directory=folder / "cache", executor="local")
"""
    pids = _killed_while_running(script, workdir, ["child"])
    with _killed_after(pids):
        assert wait_until(lambda: _gone(pids["child"]), timeout=5), (
            "a Python step's child, after a cached step, outlived the process")
