"""How the local executor starts and follows a step's process: its folders, its exit
and its output, at the cost of starting the process and little more."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dagnb.executors.local as local
from dagnb import Graph, Step
from dagnb.executors import reaper

pytestmark = pytest.mark.usefixtures("workdir")
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def run(*steps: Step, **options: object):
    return Graph("g", list(steps)).run(cache=False, executor="local", **options)


def test_a_running_step_process_is_waited_for_without_a_thread_of_its_own() -> None:
    names: list[str] = []

    async def look() -> None:
        await asyncio.sleep(0.3)  # "s" is running by then
        names.extend(thread.name for thread in threading.enumerate())

    result = run(Step("s", run="sleep 0.8"), Step("look", func=look))
    assert result.ok
    assert names and not [name for name in names if "waitpid" in name], names


def test_without_pidfds_a_thread_waits_and_exit_codes_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    result = run(Step("ok", run="echo fine"), Step("bad", run="exit 3"),
                 Step("killed", run="kill -9 $$"))
    status = result.status().set_index("step")
    assert result.states() == {"ok": "succeeded", "bad": "failed", "killed": "failed"}
    assert status.loc["bad", "exit_code"] == 3
    assert status.loc["killed", "exit_code"] == -9
    assert result.logs("ok")["line"].tolist() == ["fine"]


def test_output_keeps_its_lines_whatever_the_chunks() -> None:
    long = "x" * 300_000  # more than one read of a pipe
    command = ("printf 'a\\nb\\n'; head -c 300000 /dev/zero | tr '\\0' x; echo; "
               "printf 'err' >&2; printf 'tail'")
    result = run(Step("s", run=command))
    assert result.logs("s", stream="stdout")["line"].tolist() == ["a", "b", long, "tail"]
    assert result.logs("s", stream="stderr")["line"].tolist() == ["err"]


def test_a_steps_folders_are_made_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    make = local.make_step_folders

    def recorded(*args: object, **kwargs: object) -> None:
        threads.append(threading.current_thread().name)
        make(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "make_step_folders", recorded)
    assert run(Step("a", run='test -d "$DAGNB_OUT" && test -d "$DAGNB_IN"')).ok
    assert len(threads) == 1 and threads[0].startswith("dagnb-start")


def test_every_step_has_its_own_folders_and_params_file() -> None:
    result = run(
        Step("a", run='ls -A "$DAGNB_OUT" "$DAGNB_IN"; cat "$DAGNB_PARAMS"'),
        Step("b", run='ls "$DAGNB_IN"; cat "$DAGNB_PARAMS"', needs=["a"]),
        Step("c", run='cat "$DAGNB_PARAMS"', params={"n": 1}),
        Step("d", run='cat "$DAGNB_PARAMS"'),
    )
    assert result.ok
    workspace = Path(result.workspace)
    for name in "abcd":
        made = {p.name for p in (workspace / name).iterdir()}
        assert {"in", "out", "params.json"} <= made, made
    assert result.logs("a")["line"].tolist()[-1] == "{}"
    assert result.logs("b")["line"].tolist() == ["a", "{}"]
    assert "".join(result.logs("c")["line"]) == '{ "n": 1}'
    assert result.logs("d")["line"].tolist() == ["{}"]


def test_a_step_that_writes_its_params_file_changes_no_other_steps() -> None:
    """Each step reads a params file of its own, even with no params."""
    scribble = 'cat "$DAGNB_PARAMS"; echo scribbled > "$DAGNB_PARAMS"'
    result = run(*(Step(f"s{i}", run=scribble) for i in range(4)), max_concurrency=1)
    workspace = Path(result.workspace)
    inodes = {os.stat(workspace / f"s{i}" / "params.json").st_ino for i in range(4)}
    assert len(inodes) == 4
    assert all(result.logs(f"s{i}")["line"].tolist() == ["{}"] for i in range(4))


def test_a_retried_step_without_params_still_reads_them(workdir: Path) -> None:
    marker = workdir / "tried"
    command = f'cat "$DAGNB_PARAMS"; test -e {marker} || {{ touch {marker}; exit 3; }}'
    step = Step("flaky", run=command, retries={"max_retries": 1, "retry_on": [3]})

    async def no_sleep(seconds: float) -> None:
        return None

    result = run(Step("first", run="true"), step, max_concurrency=1, sleep=no_sleep)
    assert result.ok
    assert result.logs("flaky")["line"].tolist() == ["{}", "{}"]


@linux
def test_the_sweep_does_not_read_the_pids_it_is_told_to_skip() -> None:
    token = reaper.new_token()
    env = {**os.environ, reaper.TOKEN_VARIABLE: token}
    skipped = subprocess.Popen(["sleep", "30"], env=env)
    tagged = subprocess.Popen(["sleep", "30"], env=env)
    try:
        for process in (skipped, tagged):  # (forked, not exec'd yet: the parent's environ)
            _wait_for_exec(process.pid, token)
        killed = reaper.kill_tagged([token], skip={skipped.pid})
        assert killed == {tagged.pid}
        assert tagged.wait(5) == -9 and skipped.poll() is None
    finally:
        skipped.kill()
        tagged.kill()
        skipped.wait()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_step_tokens_are_unique_in_a_process_and_not_shared_with_a_forked_child() -> None:
    tokens = [reaper.new_token() for _ in range(2000)]
    assert len(set(tokens)) == len(tokens)
    assert all(len(token) == 24 and int(token, 16) >= 0 for token in tokens)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, then gone without pytest's cleanup
        os.write(write, " ".join(reaper.new_token() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0
    child = os.read(read, 1000).decode().split()
    os.close(read)
    parent = [reaper.new_token() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent + tokens)
    assert {token[:16] for token in child} != {token[:16] for token in parent}


def _wait_for_exec(pid: int, token: str, seconds: float = 5.0) -> None:
    """Until the process's environment holds ``token`` (it has exec'd its command)."""
    deadline = time.monotonic() + seconds
    while token.encode() not in Path(f"/proc/{pid}/environ").read_bytes():
        assert time.monotonic() < deadline, f"process {pid} never started its command"
        time.sleep(0.005)


@linux
def test_the_last_pid_handed_out_is_read_afresh_each_time() -> None:
    first = reaper._last_pid()
    process = subprocess.Popen(["true"])
    process.wait()
    assert first is not None and reaper._last_pid() >= process.pid > first


def test_the_executor_itself_makes_a_hand_made_tasks_folders_and_params(tmp_path: Path) -> None:
    from dagnb.executors.base import Task
    from dagnb.executors.local import LocalExecutor

    lines: list[str] = []
    command = 'cat "$DAGNB_PARAMS"; echo; test -d "$DAGNB_OUT" && test -d "$DAGNB_IN"'
    step = Step("a", run=command, params={"n": 2})
    task = Task(step=step, attempt=1, inputs={}, secrets={}, base_dir=tmp_path,
                log=lambda stream, line: lines.append(line), out_dir=tmp_path / "o" / "out",
                in_dir=tmp_path / "i" / "in", params_file=tmp_path / "p" / "params.json")
    outcome = asyncio.run(LocalExecutor().execute(task))
    assert outcome.exit_code == 0, lines
    assert "".join(lines) == '{ "n": 2}'


@linux
def test_a_step_stopped_while_its_process_starts_leaves_no_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagnb.runtime.prepare import start_background
    from dagnb.testing import wait_until

    entered = threading.Event()
    make = local.make_step_folders

    def slow(*args: object, **kwargs: object) -> None:
        entered.set()
        time.sleep(0.5)  # the run is cancelled meanwhile; the process starts after
        make(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "make_step_folders", slow)
    marker = "31.4159"
    run = start_background(Graph("g", [Step("s", run=f"sleep {marker}")]),
                           executor="local", cache=False)
    assert entered.wait(10)
    run.cancel()
    run.wait(10)
    assert run.states() == {"s": "cancelled"}
    time.sleep(0.6)  # the process has started by now, and been killed
    assert wait_until(lambda: not _running(marker), timeout=3), _running(marker)


def _running(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (zombies have none)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and int(name) != os.getpid():
                found.append(int(name))
    return found


@pytest.mark.skipif(not os.supports_bytes_environ, reason="a bytes environment (POSIX)")
def test_a_steps_environment_is_the_hosts_as_it_is_now_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's environment is decoded once while it is unchanged: a change between
    runs, or between two steps of one run, reaches the next step; a value that is not
    UTF-8 arrives as it was; another step's secret does not, the step's own does."""
    monkeypatch.setenv("DAGNB_TEST_FIRST", "one")
    monkeypatch.setitem(os.environb, b"DAGNB_TEST_RAW", b"caf\xe9")  # Latin-1, not UTF-8
    show = ('printf "%s|%s|%s|%s\\n" "$DAGNB_TEST_FIRST" "$DAGNB_TEST_RAW" '
            '"${MINE:+mine}" "${THEIRS:+theirs}"')  # (a secret's value is masked in logs)
    first = run(Step("show", run=f"{show} | od -An -tx1"))
    assert first.ok
    shown = " ".join(" ".join(first.logs("show")["line"]).split())
    assert shown.startswith("6f 6e 65 7c 63 61 66 e9 7c 7c 0a"), shown  # one|caf\xe9||

    monkeypatch.setenv("DAGNB_TEST_FIRST", "two")  # changed since the last run
    monkeypatch.setenv("MINE", "secret-a")
    monkeypatch.setenv("THEIRS", "secret-b")

    def change() -> None:
        os.environ["DAGNB_TEST_FIRST"] = "three"  # between two steps of one run

    second = run(
        Step("before", run=show, secrets=["MINE"]),
        Step("change", func=change, needs=["before"]),
        Step("after", run=show, secrets=["THEIRS"], needs=["change"]),
        max_concurrency=1,
    )
    assert second.ok
    assert second.logs("before")["line"].tolist() == ["two|caf\ufffd|mine|"]
    assert second.logs("after")["line"].tolist() == ["three|caf\ufffd||theirs"]


def test_a_replaced_os_environ_is_the_one_a_step_sees() -> None:
    """A test (or a tool) that swaps ``os.environ`` for another mapping: the step sees
    that mapping, its additions and its removals, not the process's own environment."""
    from unittest import mock

    os.environ["DAGNB_TEST_HIDDEN"] = "hidden"
    try:
        swapped = {k: v for k, v in os.environ.items() if k != "DAGNB_TEST_HIDDEN"}
        swapped["DAGNB_TEST_FLAG"] = "on"
        show = 'echo "${DAGNB_TEST_FLAG:-unset} ${DAGNB_TEST_HIDDEN:-gone}"'
        with mock.patch.object(os, "environ", swapped):
            result = run(Step("s", run=show))
    finally:
        del os.environ["DAGNB_TEST_HIDDEN"]
    assert result.ok
    assert result.logs("s")["line"].tolist() == ["on gone"]


def test_a_tasks_folders_as_text_are_its_paths_and_make_the_runs_folder(tmp_path: Path) -> None:
    """What a process start takes (text, no Path made) names the very folders the Task's
    Paths name, made or given, and makes the run's folder first, as the Paths do."""
    from dagnb.executors.base import Task

    made: list[int] = []

    def task(**given: Any) -> Task:
        return Task(step=Step("a", run="true"), attempt=1, inputs={}, secrets={},
                    base_dir=tmp_path, log=lambda stream, line: None,
                    make_folder=lambda: made.append(1), **given)

    texts = task(step_dir=f"{tmp_path}/run/a").folder_texts()
    assert made == [1]
    paths = task(step_dir=f"{tmp_path}/run/a")
    assert texts == (str(paths.out_dir), str(paths.in_dir), str(paths.params_file))
    given = task(out_dir=tmp_path / "o", in_dir=tmp_path / "i", params_file=tmp_path / "p.json")
    assert given.folder_texts() == (f"{tmp_path}/o", f"{tmp_path}/i", f"{tmp_path}/p.json")
    env = task(step_dir=f"{tmp_path}/run/a").env
    assert (env["DAGNB_OUT"], env["DAGNB_IN"], env["DAGNB_PARAMS"]) == texts
