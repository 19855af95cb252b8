"""Cancelling a run stops an in-process Python step that is blocking dagnb's loop."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.executors import loop
from dagnb.runtime import history
from dagnb.runtime.prepare import start_background
from dagnb.testing import wait_until

pytestmark = pytest.mark.usefixtures("workdir")


def sleeper(progress: list[int], cleanup: list[str] | None = None, swallow: bool = False):
    def slow() -> int:
        try:
            for i in range(300):  # 30 s in short sleeps: interruptible between them
                progress.append(i)
                try:
                    time.sleep(0.1)
                except Exception:  # user code catching Exception must not eat the interrupt
                    if swallow:
                        continue
                    raise
        except KeyboardInterrupt:
            if cleanup is not None:
                cleanup.append("cleaned up")
            raise
        return 1

    return slow


def started(progress: list[int]) -> None:
    deadline = time.monotonic() + 10
    while not progress and time.monotonic() < deadline:
        time.sleep(0.01)
    assert progress, "the step never started"


def test_cancel_stops_a_running_python_step_within_a_second() -> None:
    progress: list[int] = []
    cleanup: list[str] = []
    run = start_background(Graph("g", [Step("slow", func=sleeper(progress, cleanup, True),
                                            cache=False)]), executor="local")
    started(progress)
    begun = time.monotonic()
    run.cancel()
    run.wait(5)
    assert time.monotonic() - begun < 1
    assert run.states() == {"slow": "cancelled"}
    assert cleanup == ["cleaned up"]
    count = len(progress)
    time.sleep(0.3)
    assert len(progress) == count  # it really stopped


def test_cancelling_a_run_in_a_python_step_starts_no_step_queued_beside_it() -> None:
    progress: list[int] = []
    ran: list[str] = []
    graph = Graph("g", [Step("slow", func=sleeper(progress), cache=False),
                        Step("beside", func=lambda: ran.append("beside"), cache=False)])
    run = start_background(graph, executor="local")
    started(progress)
    run.cancel()
    run.wait(5)
    assert ran == []
    assert run.states() == {"slow": "cancelled", "beside": "cancelled"}


def test_the_next_run_starts_at_once_after_a_cancel() -> None:
    progress: list[int] = []
    run = start_background(Graph("g", [Step("slow", func=sleeper(progress), cache=False)]),
                           executor="local")
    started(progress)
    run.cancel()
    begun = time.monotonic()
    after = Graph("h", [Step("echo", run="echo hi")]).run(executor="local", cache=False)
    assert after.ok and time.monotonic() - begun < 1


def test_cancelling_another_run_leaves_a_running_step_alone() -> None:
    progress: list[int] = []
    first = start_background(Graph("a", [Step("slow", func=sleeper(progress), cache=False)]),
                             executor="local")
    started(progress)
    second = start_background(Graph("b", [Step("quick", func=lambda: 1, cache=False)]),
                              executor="local")
    second.cancel()
    count = len(progress)
    time.sleep(0.3)
    assert len(progress) > count and not first.done
    first.cancel()
    first.wait(5)
    second.wait(5)
    assert first.states() == {"slow": "cancelled"}


def test_cancels_racing_the_end_of_steps_leave_the_loop_working() -> None:
    for attempt in range(60):
        graph = Graph("r", [Step(f"s{i}", func=lambda: sum(range(2000)), cache=False)
                            for i in range(5)])
        run = start_background(graph, executor="local")
        time.sleep((attempt % 6) * 0.0005)
        run.cancel()
        run.wait(5)
    assert not loop._inline.fired and loop._inline.owner is None
    assert Graph("ok", [Step("f", func=lambda: 2)]).run(executor="local", cache=False).ok


def test_ctrl_c_during_graph_run_stops_a_python_step(workdir: Path) -> None:
    script = (
        "import time, dagnb\n"
        "def slow():\n"
        "    open('started', 'w').close()\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "g = dagnb.Graph('i', [dagnb.Step('slow', func=slow)])\n"
        "try:\n"
        "    g.run(cache=False, executor='local')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', g.last_run.states(), flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-u", "-c", script], cwd=workdir,
                             env=os.environ.copy(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (workdir / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    begun = time.monotonic()
    out, err = child.communicate(timeout=10)
    assert time.monotonic() - begun < 2
    assert "interrupted {'slow': 'cancelled'}" in out, err


def test_an_interrupt_landing_as_the_step_returns_leaves_no_stale_state(monkeypatch):
    """The async KeyboardInterrupt can land at leave()'s first bytecode, before its own
    guard: the call still ends as Interrupted and the next inline call is not hit."""
    inline_call = type(loop._inline)
    real_leave = inline_call.leave
    hits = []

    def leave_hit_at_entry(self):
        if not hits:
            hits.append(1)
            raise loop._Interrupt  # as if fire() landed right here
        return real_leave(self)

    async def inline_twice():
        token = loop._owner.set(object())
        try:
            monkeypatch.setattr(inline_call, "leave", leave_hit_at_entry)
            with pytest.raises(loop.Interrupted):
                loop.call_interruptibly(lambda: 1, {})
            monkeypatch.setattr(inline_call, "leave", real_leave)
            assert loop._inline.owner is None and not loop._inline.fired
            return loop.call_interruptibly(lambda: 2, {})  # not interrupted
        finally:
            loop._owner.reset(token)

    assert loop.run_sync(inline_twice()) == 2


CANCEL_RAISES = """
import asyncio, gc, os, sys, tempfile, time
import dagnb
from dagnb.runtime import history
from dagnb.runtime.prepare import start_background
from dagnb.testing import isolated

async def stubborn():
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise RuntimeError("cleanup failed with " + os.environ["TOK"])

with isolated(cache_directory=tempfile.mkdtemp()):
    graph = dagnb.Graph("g", [dagnb.Step("s", func=stubborn, timeout=30, secrets=["TOK"])])
    run = start_background(graph, executor="local", cache=False)
    time.sleep(0.5)
    run.cancel()
    run.wait(10)
    print(run.states()["s"])
    del run
    gc.collect()
"""


def test_a_step_that_raises_as_it_is_cancelled_leaves_nothing_unmasked_on_stderr(tmp_path):
    script = tmp_path / "cancel_raises.py"
    script.write_text(CANCEL_RAISES)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "TOK": "tok-ABCDEF-123456"})
    assert done.stdout.strip() == "cancelled", done.stdout + done.stderr
    assert "tok-ABCDEF" not in done.stderr and "never retrieved" not in done.stderr, done.stderr


CANCEL_AS_THREADS_START = """
import sys, tempfile, threading, time
import dagnb
from dagnb.runtime.prepare import start_background
from dagnb.testing import isolated

born = []

def spawning():
    while True:  # (a pool's workers, a log flusher: threads a step starts)
        thread = threading.Thread(target=born.append, args=(1,))
        thread.start()
        thread.join()

sys.unraisablehook = lambda raised: print("raised in a new thread:", raised.exc_type.__name__)
with isolated(cache_directory=tempfile.mkdtemp()):
    for attempt in range(300):
        count = len(born)
        graph = dagnb.Graph("g", [dagnb.Step("spawn", func=spawning, cache=False)])
        run = start_background(graph, executor="local")
        while len(born) < count + 1 + attempt % 7:  # (cancels at varied points)
            time.sleep(0.0002)
        run.cancel()
        run.wait(5)
        assert run.states() == {"spawn": "cancelled"}, (attempt, run.states())
    print("cancelled", attempt + 1)
"""


def test_a_cancel_as_a_step_starts_threads_stops_the_step_not_a_new_thread(tmp_path):
    """Before 3.12, a thread being born has its starter's ident, so the interrupt sent to
    the loop thread could land in a thread the step was starting: that thread died at
    birth, the step waited for it forever and the loop with it (a subprocess, therefore;
    lost in about 1 cancel of 50 before the fix)."""
    script = tmp_path / "cancel_as_threads_start.py"
    script.write_text(CANCEL_AS_THREADS_START)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=90)
    assert done.stdout.strip() == "cancelled 300", done.stdout + done.stderr[-2000:]


TWO_PYTHON_STEPS = """
import time

def first():
    open("first-started", "w").close()
    while True:
        time.sleep(0.05)

def second():
    open("second-started", "w").close()
    time.sleep(5)
"""


def test_ctrl_c_during_a_python_step_starts_no_other_step(workdir: Path) -> None:
    """The interrupted step waits on the loop for its cancel; a step queued beside it
    must not start meanwhile (it did, held the loop past the grace and lost the record)."""
    (workdir / "steps.py").write_text(TWO_PYTHON_STEPS)
    (workdir / "w.yml").write_text("name: two\nsteps:\n  first: {python: 'steps.py:first'}\n"
                                   "  second: {python: 'steps.py:second'}\n")
    child = subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", "w.yml",
                              "--executor", "local"], cwd=workdir, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (workdir / "first-started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=20)
    assert child.returncode == 128 + signal.SIGINT, err
    assert not (workdir / "second-started").exists(), err
    states = history.last_states(workdir / ".dagnb_cache", "two", (workdir / "w.yml").resolve())
    assert states == {"first": "cancelled", "second": "cancelled"}, err


CUT_SHORT = """
import os

def train():
    rc = os.system("touch started; [ -e release ] || sleep 20")
    return {"rc": rc}
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="a terminal signals a group on POSIX")
def test_ctrl_c_in_a_terminal_stores_no_result_a_python_step_got_cut_short(
        workdir: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground group, and so the command a
    Python step runs with os.system (which ignores SIGINT in dagnb while it runs): the
    step returned what the killed command left, and it was stored as a success."""
    (workdir / "steps.py").write_text(CUT_SHORT)
    (workdir / "w.yml").write_text("name: cut\nsteps:\n  train: {python: 'steps.py:train'}\n")
    command = [sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--executor", "local"]
    child = subprocess.Popen(command, cwd=workdir, text=True, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (workdir / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(child.pid, signal.SIGINT)  # (as the terminal does: the whole group)
    _, err = child.communicate(timeout=20)
    assert child.returncode == 128 + signal.SIGINT, err
    workflow = (workdir / "w.yml").resolve()
    assert history.last_states(workdir / ".dagnb_cache", "cut", workflow) == {
        "train": "cancelled"}
    (workdir / "release").touch()
    again = subprocess.run(command, cwd=workdir, text=True, capture_output=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert history.last_states(workdir / ".dagnb_cache", "cut", workflow) == {
        "train": "succeeded"}  # ran again: nothing was stored


def dagnb_run(workdir: Path, workflow: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", workflow,
                             "--executor", "local"], cwd=workdir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ctrl_c_while_waiting_for_another_runs_step_exits_at_once(workdir: Path) -> None:
    """The second run waits on the key's lock that the first holds while it runs the
    step; Ctrl-C stops the wait (a thread blocked on the lock held the exit up until the
    other run's step ended)."""
    (workdir / "w.yml").write_text("name: shared\nsteps:\n"
                                   "  long: {run: 'touch started; sleep 120'}\n")
    children = [dagnb_run(workdir, "w.yml")]
    try:
        deadline = time.monotonic() + 20
        while not (workdir / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = dagnb_run(workdir, "w.yml")
        children.append(second)
        assert second.stdout is not None
        said = second.stdout.readline()
        assert "long waiting for another run computing it" in said, said
        second.send_signal(signal.SIGINT)
        _, err = second.communicate(timeout=20)  # the first run's step lasts 120 s
        assert second.returncode == 128 + signal.SIGINT, err
        assert "Traceback" not in err, err
        ran = history.last_states(workdir / ".dagnb_cache", "shared", (workdir / "w.yml").resolve())
        assert ran == {"long": "cancelled"}
    finally:
        for child in children:  # the first run first: its step holds the lock
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
            child.communicate(timeout=20)


def test_the_runs_timeout_in_a_python_step_starts_no_step_queued_beside_it() -> None:
    """The run's timeout interrupts the step computing inline; the loop turns it gives
    before the cancel arrives start no step (as after a cancel)."""
    progress: list[int] = []
    ran: list[str] = []
    graph = Graph("g", [Step("slow", func=sleeper(progress), cache=False),
                        Step("beside", func=lambda: ran.append("beside"), cache=False)])
    run = graph.run(executor="local", timeout=0.5)
    assert progress and ran == [], ran
    assert run.states()["beside"] != "succeeded"


def test_a_ctrl_c_as_the_task_starts_cancels_it_and_waits_for_its_cleanup(monkeypatch) -> None:
    """Ctrl-C can land just after the loop was handed the task (the loop thread ran it,
    a run printed 'waiting', before the main thread reached its wait): the task is
    cancelled and cleans up all the same (it ran on unwatched, killed at exit)."""
    cleaned: list[bool] = []
    running = threading.Event()

    async def work() -> None:
        try:
            running.set()
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    started_for_real = loop.TaskFuture.start

    def start_then_interrupted(self: loop.TaskFuture) -> loop.TaskFuture:
        started_for_real(self)
        assert running.wait(10)  # (the loop thread runs it before this thread goes on)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.TaskFuture, "start", start_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop.run_sync(work())
    assert cleaned == [True]


def test_a_ctrl_c_before_the_task_was_handed_over_ends_at_once(monkeypatch) -> None:
    def interrupted(self: loop.TaskFuture) -> loop.TaskFuture:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.TaskFuture, "start", interrupted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no coroutine left never awaited)
        begun = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            loop.run_sync(asyncio.sleep(30))
        took = time.monotonic() - begun  # (the collection after it aside: a loaded
        gc.collect()  #                     machine's full suite made it 1.9 s)
    assert took < 1  # (not the 3 s grace for a task that never came)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children"),
                    reason="a thread's children are listed on Linux only")
@pytest.mark.parametrize(("script", "options"), [
    ("echo $$ > {pid}; exec sleep 30", {}),  # the child itself
    ("sleep 30 & echo $! > {pid}; wait", {"capture_output": True}),  # its child holds the
], ids=["child", "grandchild-holding-the-pipe"])  #                        pipe being read
def test_a_timeout_stops_what_a_python_step_started_not_what_an_earlier_step_left(
        tmp_path: Path, script: str, options: dict) -> None:
    """A Python step waiting for a child takes the interrupt only when the child ends: the
    processes the step started are stopped, the server an earlier step left is not."""
    pid_file = tmp_path / "pid"
    servers: list[subprocess.Popen[bytes]] = []

    def server() -> int:
        servers.append(subprocess.Popen(["sleep", "60"]))  # left running on purpose
        return servers[0].pid

    def wait_for_child(server: int) -> None:
        subprocess.run(["sh", "-c", script.format(pid=pid_file)], **options)

    graph = Graph("g", [Step("server", func=server, cache=False),
                        Step("long", func=wait_for_child, needs=["server"], cache=False)])
    begun = time.monotonic()
    run = graph.run(executor="local", timeout=1)
    server_pid = run.result("server")
    try:
        assert time.monotonic() - begun < 4
        assert run.states() == {"server": "succeeded", "long": "cancelled"}
        started = int(pid_file.read_text())  # stopped within the grace (SIGTERM, then
        assert wait_until(lambda: not running(started), timeout=2)  # SIGKILL 0.3 s on)
        assert running(server_pid)
    finally:
        servers[0].kill()
        servers[0].wait()


_FORKED = r"""
import json, multiprocessing, threading, time
from concurrent.futures import ThreadPoolExecutor
from dagnb import Graph, Step
from dagnb.executors import loop

def busy():
    for _ in range(300):  # 3 s in short sleeps: interruptible between them
        time.sleep(0.01)
    return 1

def runs(_=None):
    try:
        quick = Graph("g", [Step("hello", func=lambda: 1)]).run(executor="local", cache=False)
        began = time.monotonic()
        timed = Graph("t", [Step("busy", func=busy)]).run(executor="local", cache=False,
                                                         timeout=0.3)
        return [quick.states(), timed.states(), time.monotonic() - began < 2]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

def child(queue):
    with ThreadPoolExecutor(2) as pool:  # (a child's first threads get its parent's idents)
        queue.put(list(pool.map(runs, range(2))))

if __name__ == "__main__":
    found = {"parent": runs()}
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    found["child"] = queue.get(timeout=60)
    process.join()
    dagnb_loop, thread = loop.get_loop(), loop._thread
    dagnb_loop.call_soon_threadsafe(dagnb_loop.stop)
    thread.join()
    after = []
    worker = threading.Thread(target=lambda: after.append(runs()))  # (the dead one's ident)
    worker.start()
    worker.join()
    found["after the loop stopped"] = after[0]
    print(json.dumps(found))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_runs_work_in_a_forked_child_and_after_the_loop_thread_ended(tmp_path: Path) -> None:
    """The loop thread was told by its ident, which a thread made after it ended is
    given again (a forked child's first threads, whose parent's loop is not there): a
    run from one was refused as made from dagnb's own loop. And in a forked child a
    timeout did not stop an inline step: the watchdog thread was the parent's."""
    script = tmp_path / "forked.py"
    script.write_text(_FORKED)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = [{"hello": "succeeded"}, {"busy": "cancelled"}, True]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "parent": expected, "child": [expected, expected], "after the loop stopped": expected}


_FORKED_FROM_A_STEP = r"""
import json, multiprocessing, time
from dagnb import Graph, Step

def slow():
    for _ in range(100):  # 1 s in short sleeps, past the forking step's timeout
        time.sleep(0.01)
    return 1

def child(queue):
    run = Graph("inner", [Step("slow", func=slow)]).run(executor="local", cache=False)
    queue.put(run.states())

def outer():
    process = multiprocessing.get_context("fork").Process(target=child, args=(queue,))
    process.start()
    processes.append(process)
    return 1

if __name__ == "__main__":
    queue, processes = multiprocessing.get_context("fork").Queue(), []
    run = Graph("outer", [Step("outer", func=outer, timeout=0.5)]).run(
        executor="local", cache=False)
    found = queue.get(timeout=30)
    processes[0].join()
    print(json.dumps([run.states(), found]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_a_run_in_a_child_forked_by_a_python_step_starts_a_loop_of_its_own(tmp_path: Path):
    """A child forked by a step running on dagnb's loop thread has that thread for its
    main one: it took it for alive and sent its run to the parent's loop, which nothing
    runs there, and waited for ever (refused as made from the loop, before that). Its
    run is its own: not cancelled at the deadline of the step that forked it."""
    script = tmp_path / "forked.py"
    script.write_text(_FORKED_FROM_A_STEP)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [{"outer": "succeeded"},
                                                        {"slow": "succeeded"}]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_a_wait_leaves_the_sigint_handler_os_system_and_wakeup_fd_as_it_found_them() -> None:
    """What the wait for a run puts in place is taken back after it, and the signals that
    came meanwhile reach the wakeup fd set before it (asyncio's loop reads its own)."""
    import socket

    handler, system = signal.getsignal(signal.SIGINT), os.system
    before_r, before_w = socket.socketpair()
    before_w.setblocking(False)
    marks: list[int] = []
    old = signal.set_wakeup_fd(before_w.fileno())
    try:
        with pytest.raises(KeyboardInterrupt), loop.interrupts_marked(
                lambda: marks.append(1), "the run"):
            assert os.system is not system
            assert loop.interrupt_arrived("the run", time.monotonic()) is False
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(1)  # (the handler raises before this ends)
        assert marks == [1]
        assert signal.getsignal(signal.SIGINT) is handler and os.system is system
        assert signal.set_wakeup_fd(before_w.fileno()) == before_w.fileno()
        assert before_r.recv(16) == bytes([signal.SIGINT])  # handed on
        assert loop.interrupt_arrived("the run", time.monotonic()) is False  # (no wait now)
    finally:
        signal.set_wakeup_fd(old)
        before_r.close()
        before_w.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux's /proc")
def test_a_sigint_sent_but_not_yet_taken_is_seen() -> None:
    """The stop button's SIGINT may wait for the main thread to be scheduled while the
    step whose child it killed returns: the scheduler then sees it pending, from the
    loop's thread too, and leaves each thread's mask as it found it."""
    script = ("import os, signal, threading\n"
              "from dagnb.executors.loop import sigint_pending\n"
              "def blocked():\n"
              "    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
              "print(sigint_pending(), blocked())\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])\n"
              "before = sigint_pending()\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "seen = []\n"
              "thread = threading.Thread(target=lambda: seen.append(sigint_pending()))\n"
              "thread.start(); thread.join()\n"
              "print(before, sigint_pending(), seen[0], blocked())\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])\n"
              "print(sigint_pending(), blocked())\n")
    assert _printed(script) == ["False", "False", "False", "True", "True", "True", "False",
                                "False"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux's /proc")
def test_the_look_for_a_pending_sigint_takes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The look reads; it does not block and unblock SIGINT (``sigpending`` sees only
    what a thread blocks): unblocking took a pending one into the loop's thread, and the
    main thread, not woken, ran Python's handler at its next line, in an idle kernel's
    next cell (KeyboardInterrupt there)."""
    def no_mask_change(*args: object) -> None:
        raise AssertionError(f"the look changed a signal mask: {args}")

    monkeypatch.setattr(loop._signal, "pthread_sigmask", no_mask_change)
    monkeypatch.setattr(signal, "pthread_sigmask", no_mask_change)
    assert loop.sigint_pending() is False


def test_a_command_in_a_group_of_its_own_is_not_looked_for_in_the_queue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGINT to this process's group cannot cut short a command the local executor
    runs (it leads a group of its own): its attempts' ends skip the look at the signal
    queue (26 µs a shell step); an in-process Python step's still look."""
    looks: list[str] = []
    monkeypatch.setattr(loop, "sigint_pending", lambda: looks.append("look") and False)

    def python_step() -> int:
        return subprocess.run(["sleep", "0.01"], check=True).returncode

    done = Graph("g", [Step("command", run="sleep 0.01"),
                       Step("python", func=python_step, needs=["command"])]).run(
        cache=False, executor="local")
    assert done.states() == {"command": "succeeded", "python": "succeeded"}
    assert looks == ["look"]  # (the Python step's attempt; none for the command's)


def _printed(script: str) -> list[str]:
    """The words ``script`` prints, run by this Python in a process of its own."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_a_run_nobody_waits_for_sees_the_sigints_that_overlap_its_attempt_and_no_other() -> None:
    """A background run's attempt looks for the SIGINTs that came while it ran, whether
    a wait for another run held the wakeup fd too and let it go first or last; the fd
    is given back after the last hold, with the signals that came meanwhile."""
    import socket

    handler = signal.getsignal(signal.SIGINT)
    before_r, before_w = socket.socketpair()
    before_w.setblocking(False)
    old = signal.set_wakeup_fd(before_w.fileno())
    signal.signal(signal.SIGINT, lambda *_: None)  # (as the kernel's idle one: nothing)
    run = object()
    try:
        loop.hold_wakeup()
        loop.watch_unwaited(run)
        seen = loop.unwaited_attempt(run)
        assert seen is not None and loop.unwaited_attempt(object()) is None
        began = time.monotonic() - 1
        assert not loop.interrupted_unwaited(seen, began)
        with loop.interrupts_marked(lambda: None, "a waited run"):
            loop.release_wakeup()  # (the background run ended during the wait)
        assert signal.set_wakeup_fd(before_w.fileno()) == before_w.fileno()  # given back
        loop.hold_wakeup()
        subprocess.run(["true"], check=True)  # (seen's attempt starts a process)
        quiet = loop.unwaited_attempt(run)  # (one that starts none)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        assert loop.interrupted_unwaited(seen, began)  # (overlapped it)
        assert not loop.interrupted_unwaited(quiet, began)  # (no process of it to kill)
        assert not loop.interrupted_unwaited(loop.unwaited_attempt(run), began)  # (did not)
        loop.release_wakeup()
        assert before_r.recv(16) == bytes([signal.SIGINT])  # handed on
    finally:
        loop.unwatch_unwaited(run)
        signal.signal(signal.SIGINT, handler)
        signal.set_wakeup_fd(old)
        before_r.close()
        before_w.close()


@pytest.mark.skipif(os.name != "posix", reason="a command's death by a signal: POSIX")
def test_an_os_system_command_killed_by_sigint_marks_the_attempt_of_a_run_nobody_waits_for(
) -> None:
    """C's system() ignores SIGINT in the whole process while its command runs, so the
    stop button that killed a background step's command was seen by nothing. os.system
    is wrapped while such a run goes, whatever waits begin and end around it, and given
    back after the last."""
    system, run, other = os.system, object(), object()
    try:
        loop.watch_unwaited(run)
        attempt = loop.unwaited_attempt(run)
        assert attempt is not None and os.system is not system
        began = time.monotonic()
        assert os.system("exit 3") >> 8 == 3
        assert not loop.interrupted_unwaited(attempt, began)
        os.system("kill -INT $$")  # (its shell dies of SIGINT, as the button kills it)
        assert loop.interrupted_unwaited(attempt, began)
        assert not loop.interrupted_unwaited(loop.unwaited_attempt(run), began)  # (a new one)
        with loop.interrupts_marked(lambda: None, "a waited run"):
            loop.unwatch_unwaited(run)  # (the background run ended during the wait)
            assert os.system is not system
        assert os.system is system
        with loop.interrupts_marked(lambda: None, "a waited run"):
            loop.watch_unwaited(other)  # (one began during the wait, and outlived it)
        assert os.system is not system
        loop.unwatch_unwaited(other)
        assert os.system is system
    finally:
        loop.unwatch_unwaited(run)
        loop.unwatch_unwaited(other)
        os.system = system
