"""The listing of the loop thread's children, read as a Python step's call begins, is
read again only when code that may have started a child ran since (Linux).

A chain of quick steps reads it once; another task that ran in between, an event
listener, a call long enough to start a process, or another turn of the loop make the
next call read it again, so the processes started meanwhile are never taken for ones
the interrupted call started (and stopped with it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dagnb import Graph, Step
from dagnb.executors import children
from dagnb.executors import loop as loop_module
from dagnb.executors.wakeup import EventfdLoop

pytestmark = pytest.mark.skipif(
    not Path(f"/proc/self/task/{threading.get_native_id()}/children").exists(),
    reason="this kernel does not list a thread's children (/proc/.../children)")


def _pids(listing: bytes | None) -> set[int]:
    assert listing is not None
    return {int(pid) for pid in listing.split()}


def _spawned() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"])


def _ended(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


class _Task:
    """Stands for an asyncio task (the listing keeps a weak reference to it)."""


def test_a_listing_serves_again_only_in_the_callback_it_was_read_in() -> None:
    thread = threading.get_native_id()
    task, other = _Task(), _Task()
    children.listing_stale()
    first = children.snapshot(thread, 7, task)
    started = [_spawned()]
    try:
        assert children.snapshot(thread, 7, task) == first  # the same callback: served
        children.listing_stale()  # (said after a long call, or a listener)
        assert started[0].pid in _pids(children.snapshot(thread, 7, task))
        for reads_again in (lambda: children.snapshot(thread, 8, task),  # the next turn
                            lambda: children.snapshot(thread, 7, other),  # another task
                            lambda: children.snapshot(thread)):  # no callback known
            started.append(_spawned())
            assert started[-1].pid in _pids(reads_again())
    finally:
        _ended(*started)


def test_only_a_call_too_quick_to_start_a_process_leaves_the_listing_to_serve() -> None:
    def settled(call: Any) -> bool:
        loop_module.call_interruptibly(call, {})
        return children._Listing.turn is not None

    async def calls() -> list[bool]:
        quick = [settled(lambda: None) for _ in range(50)]  # (the first opens the file)
        return [any(quick), settled(lambda: time.sleep(children.SPAWN_FLOOR))]

    assert loop_module.submit(calls()).result(10) == [True, False]


def test_the_loop_counts_its_turns() -> None:
    """The rule above rests on it: a Python that renamed ``_run_once`` would leave the
    count still, and a task's later callbacks would take an old listing for theirs."""
    loop = loop_module.get_loop()
    assert isinstance(loop, EventfdLoop)

    async def turns() -> int:
        return loop.turns  # type: ignore[attr-defined,no-any-return]

    seen = [asyncio.run_coroutine_threadsafe(turns(), loop).result(5) for _ in range(3)]
    assert seen[0] < seen[1] < seen[2]


def test_a_task_that_ran_in_the_same_turn_makes_the_next_call_read_again() -> None:
    """Three tasks step in one turn: a quick call, a child started by plain code (as an
    async step may), then a call whose listing must hold that child."""
    found: dict[str, Any] = {}

    def listing_in_force() -> bytes | None:
        return loop_module._inline.children

    async def quick() -> None:  # (until one is quick: the first opens the file)
        for _ in range(100):
            loop_module.call_interruptibly(lambda: None, {})
            if children._Listing.turn is not None:
                found["quick"] = True
                return

    async def starts() -> None:
        found["child"] = _spawned()

    async def reads() -> None:
        found["turns"] = loop_module.get_loop().turns  # type: ignore[attr-defined]
        found["listing"] = loop_module.call_interruptibly(listing_in_force, {})

    async def all_three() -> int:
        turn = loop_module.get_loop().turns  # type: ignore[attr-defined]
        tasks = [asyncio.ensure_future(step()) for step in (quick, starts, reads)]
        await asyncio.gather(*tasks)
        return turn  # type: ignore[no-any-return]

    began = loop_module.submit(all_three()).result(10)
    try:
        assert found["turns"] == began + 1  # (the three stepped in the same turn)
        assert found.get("quick")  # (its listing would have served in the same callback)
        assert found["child"].pid in _pids(found["listing"])
    finally:
        _ended(found["child"])


def _passes(**_: Any) -> None:
    return None


def test_a_chain_of_quick_steps_reads_the_listing_a_few_times_only(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reads = []
    pread = os.pread

    def counted(fd: int, length: int, offset: int) -> bytes:
        reads.append(fd)
        return pread(fd, length, offset)

    graph = Graph("chain", [Step("s0", func=_passes)] + [
        Step(f"s{i}", func=_passes, needs=[f"s{i - 1}"]) for i in range(1, 200)])
    graph.run(executor="local", cache=False, cache_directory=tmp_path)
    monkeypatch.setattr(os, "pread", counted)
    run = graph.run(executor="local", cache=False, cache_directory=tmp_path)
    monkeypatch.undo()
    assert set(run.states().values()) == {"succeeded"}
    assert 1 <= len(reads) < 50  # (a call the machine held past SPAWN_FLOOR reads again)


def test_a_process_an_event_listener_started_is_not_stopped_with_the_next_step(
        tmp_path: Path) -> None:
    """A listener runs on the loop thread between two steps of a chain: the server it
    starts as the first step succeeds is no child of the second, whose timeout stops
    what the second started only."""
    servers: list[subprocess.Popen[bytes]] = []
    pid_file = tmp_path / "pid"

    def on_event(event: Any) -> None:
        if (event.step, event.data.get("state")) == ("first", "succeeded"):
            servers.append(_spawned())

    def waits(first: None) -> None:
        subprocess.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"])

    quick = [Step(f"q{i}", func=_passes, needs=[f"q{i - 1}"] if i else [], cache=False)
             for i in range(20)]  # (then the first's call is quick: the listing serves)
    graph = Graph("g", [*quick, Step("first", func=_passes, needs=["q19"], cache=False),
                        Step("waits", func=waits, needs=["first"], cache=False)])
    try:
        run = graph.run(executor="local", timeout=1, on_event=on_event,
                        cache_directory=tmp_path / "cache")
        assert run.states()["first"] == "succeeded"
        assert run.states()["waits"] == "cancelled"
        started = int(pid_file.read_text())
        deadline = time.monotonic() + 3
        while _running(started) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _running(started)
        assert servers and _running(servers[0].pid)
    finally:
        _ended(*servers)
