"""The children an interrupted Python step started are stopped, and reaped if the call
that started them left them to no one (Linux: :mod:`dagnb.executors.children`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dagnb.executors import children

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def state_of(pid: int) -> str | None:
    """The process's state letter (``Z``: a zombie), None once it is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


def test_a_stopped_child_no_one_waits_for_is_reaped() -> None:
    """As when the interrupt lands in ``subprocess.Popen()`` after its fork: no Popen
    waits for the child, which stayed a zombie of the kernel (seen in /proc: state Z,
    the kernel its parent) until the kernel ended."""
    thread = threading.get_native_id()
    before = children.snapshot(thread)
    assert before is not None
    pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], os.environ)  # (no one waits)
    try:
        stopped = children.started_since(thread, before)
        assert [process.pid for process in stopped] == [pid]
        children.stop(stopped, grace=0.3, reap_after=0.1)
        assert state_of(pid) is None
    finally:
        if state_of(pid) is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_the_waiter_of_a_stopped_child_reaps_it_and_sees_how_it_ended() -> None:
    """A Popen waiting for the child reaps it itself: its return code is the signal
    that stopped the child, not the 0 a child reaped by another would give it."""
    thread = threading.get_native_id()
    before = children.snapshot(thread)
    assert before is not None
    process = subprocess.Popen(["sleep", "30"])
    stopped = children.started_since(thread, before)
    waiter = threading.Thread(target=process.wait)
    waiter.start()
    children.stop(stopped, grace=0.3, reap_after=0.5)
    waiter.join(5)
    assert process.returncode == -signal.SIGTERM
    assert state_of(process.pid) is None
