"""What is written outside steps while a run masks (a thread a step started, the
notebook's own prints during a background run): masked by whole lines, a thread's
unfinished line held until it ends. Nothing of it may be lost, reordered within a
thread, shown in clear, or block a writer (see dagnb.executors.capture)."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dagnb.executors import capture
from dagnb.executors.capture import capturing
from dagnb.model.masking import MIN_LINE, Masker

SECRET = "sk-live-9f8e7d6c5b4a"


def _mask(*secrets: str) -> Masker:
    return Masker(secrets or (SECRET,), words_below=MIN_LINE)


def _in_thread(target) -> None:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


def test_a_line_held_when_the_run_ends_is_shown_where_it_was_going(monkeypatch):
    """A cell redirecting ``sys.stdout`` (``%%capture``, ``redirect_stdout``) as a
    background run ended: the routing streams were found through ``sys.stdout``, so a
    thread's unfinished line held by the one replaced was never shown."""
    term = io.StringIO()
    monkeypatch.setattr(sys, "stdout", term)
    run = capturing(_mask())
    run.__enter__()
    _in_thread(lambda: print(f"progress 50% {SECRET}", end=""))
    assert term.getvalue() == ""  # (held: its line did not end)
    with contextlib.redirect_stdout(io.StringIO()) as cell:
        run.__exit__(None, None, None)
    assert (term.getvalue(), cell.getvalue()) == ("progress 50% ***", "")


def test_a_write_racing_the_end_of_the_run_is_shown(monkeypatch):
    """A write that saw the run masking, then waited for the held lines as the run
    ended, was held after the run showed them: never shown."""
    class SlowTerminal(io.StringIO):
        def write(self, text: str) -> int:
            time.sleep(0.0002)
            return super().write(text)

    for _ in range(20):
        term = SlowTerminal()
        monkeypatch.setattr(sys, "stdout", term)
        written, stop = [0], threading.Event()
        run = capturing(_mask())
        run.__enter__()
        out = sys.stdout

        def dots(out=out, written=written, stop=stop) -> None:
            while not stop.is_set():
                out.write(".")
                written[0] += 1
                if written[0] % 50 == 0:
                    out.write("\n")

        thread = threading.Thread(target=dots)
        thread.start()
        time.sleep(0.01)
        run.__exit__(None, None, None)
        time.sleep(0.005)
        stop.set()
        thread.join()
        assert term.getvalue().count(".") == written[0]


def test_a_run_ending_holds_on_the_lines_another_run_still_masks(monkeypatch):
    """Two background runs: as one ended, every thread's unfinished line was shown, and
    a secret of the other streamed across it was shown in two clear pieces. It is held
    on, masked with the run that ended (whose secret is then masked though its line had
    not ended)."""
    term = io.StringIO()
    monkeypatch.setattr(sys, "stdout", term)
    run_b, run_a = capturing(_mask()), capturing(_mask("other-secret-xyz"))
    run_b.__enter__()
    run_a.__enter__()
    out, halfway, go_on = sys.stdout, threading.Event(), threading.Event()

    def stream() -> None:
        for piece in ("A: other-secret", "-xyz, B: ", SECRET[:10]):
            out.write(piece)
        halfway.set()
        go_on.wait(10)
        for piece in (SECRET[10:], "\n"):
            out.write(piece)

    thread = threading.Thread(target=stream)
    thread.start()
    assert halfway.wait(10)
    run_a.__exit__(None, None, None)
    go_on.set()
    thread.join()
    run_b.__exit__(None, None, None)
    assert term.getvalue() == "A: ***, B: ***\n"  # (A's masked as A ended, B's at its end)


def test_a_stream_closed_before_the_run_ends_leaves_no_run_masking(monkeypatch):
    """Showing a held line at the run's end raised (a closed stream), before the run's
    mask was taken away: every later line of the process was masked and held."""
    term = io.StringIO()
    monkeypatch.setattr(sys, "stdout", term)
    with capturing(_mask()):
        _in_thread(lambda: print("partial", end=""))
        term.close()
    assert (capture._masks, capture._users, sys.stdout) == ((), 0, term)


_LOGGING_BOTH_WAYS = r"""
import io, logging, sys, threading
from dagnb.executors.capture import capturing
from dagnb.model.masking import Masker

class StreamToLogger:
    def write(self, text):
        if text.strip():
            logging.getLogger("print").warning(text.rstrip())
        return len(text)

    def flush(self):
        pass

sys.stderr, sys.stdout = io.StringIO(), StreamToLogger()
done = {"prints": 0, "logs": 0}

def prints():
    for i in range(3000):
        print("line", i)
        done["prints"] += 1

def logs():
    for i in range(3000):
        logging.getLogger("lib").warning("warning %d", i)
        done["logs"] += 1

with capturing(Masker(["s3cr3t-token"], words_below=6)):
    handler = logging.StreamHandler()  # (one lock for both loggers; to the routing stderr)
    for name in ("print", "lib"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).propagate = False
    threads = [threading.Thread(target=f) for f in (prints, logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
sys.__stdout__.write(repr(done))
"""


def test_a_stream_that_logs_and_a_log_handler_that_prints_do_not_deadlock(tmp_path: Path):
    """The routing stream wrote to the stream it replaced holding its own lock: one that
    logs (``sys.stdout = StreamToLogger``) took logging's lock under it, as a thread
    logging to ``sys.stderr`` held logging's lock and waited for the routing stream's."""
    script = tmp_path / "both_ways.py"
    script.write_text(_LOGGING_BOTH_WAYS)
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the two threads deadlocked")
    assert (done.returncode, done.stdout) == (0, "{'prints': 3000, 'logs': 3000}"), done.stderr


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timer here")
def test_a_signal_handler_printing_in_the_middle_of_a_write_loses_nothing(monkeypatch):
    """A handler that prints re-entered the write it interrupted, between taking the
    thread's held line and putting it back: the interrupted write's text was lost."""
    term = io.StringIO()
    monkeypatch.setattr(sys, "stdout", term)
    before = signal.signal(signal.SIGALRM, lambda *_: print("S"))
    try:
        with capturing(_mask()):
            out = sys.stdout
            signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
            for _ in range(300_000):
                out.write("a")
            signal.setitimer(signal.ITIMER_REAL, 0)
            out.write("\n")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    shown = term.getvalue()
    assert shown.count("a") == 300_000 and shown.count("S") > 0


_FORKED_FROM_A_THREAD = r"""
import multiprocessing, sys, threading
from dagnb.executors.capture import capturing
from dagnb.model.masking import Masker

def child():
    print("child: done", end="", flush=True)  # (its last line: no newline)

if __name__ == "__main__":
    with capturing(Masker(["s3cr3t-token"], words_below=6)):
        def step_thread():
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            process.join()
        thread = threading.Thread(target=step_thread)
        thread.start()
        thread.join()
        print(" parent")
"""


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_child_forked_from_a_thread_shows_its_last_line(tmp_path: Path):
    """The main thread, whose unfinished line a flush shows, was the one of the import:
    a child forked from another thread (a step's) has that thread for its main one, and
    its last line, flushed before it exits, was lost."""
    script = tmp_path / "forked.py"
    script.write_text(_FORKED_FROM_A_THREAD)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout) == (0, "child: done parent\n"), done.stderr
