"""Memory stays bounded whatever a step prints (issue 13, problem 8): lines stream to a
file, the event log keeps a bounded head, a hit replays its file lazily, long lines cost
linear time."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from dagnb import Graph, Step
from dagnb.cache import Store
from dagnb.runtime import events
from dagnb.runtime.prepare import start_background
from dagnb.testing import isolated

pytestmark = pytest.mark.usefixtures("workdir")


def _log_events(run, step: str) -> int:
    return sum(1 for e in run.events if e.kind == "log" and e.step == step)


def test_a_step_that_prints_more_than_memory_keeps_is_read_back_whole(monkeypatch):
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 100)
    graph = Graph("many", [Step("loud", run="seq 1 5000; echo oops >&2")])
    first = graph.run(executor="local").raise_for_status()
    assert _log_events(first, "loud") == 100
    assert first.events.spilled("loud") == 4_901
    lines = first.logs("loud")["line"].tolist()
    assert lines[:3] == ["1", "2", "3"] and len(lines) == 5001
    assert first.logs("loud", stream="stderr")["line"].tolist() == ["oops"]
    assert first.logs("loud", tail=2)["line"].tolist()[-1] in ("5000", "oops")
    again = graph.run(executor="local")
    assert again.states() == {"loud": "cached"}
    assert _log_events(again, "loud") == 100
    assert again.logs("loud")["line"].tolist() == lines


def test_the_logs_of_every_step_read_a_cached_step_back_whole(monkeypatch):
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 100)
    graph = Graph("many", [Step("loud", run="seq 1 500"), Step("quiet", run="true")])
    graph.run(executor="local").raise_for_status()
    again = graph.run(executor="local")
    assert again.states() == {"loud": "cached", "quiet": "cached"}
    assert len(again.logs()) == 500 and len(again.logs(tail=600)) == 500


def test_a_cached_step_s_lines_can_be_read_while_they_are_replayed(monkeypatch):
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 10)
    graph = Graph("many", [Step("loud", run="seq 1 50")])
    graph.run(executor="local").raise_for_status()
    started, seen, runs = threading.Event(), [], []

    def read_back(event) -> None:  # (in the loop thread, as the replay emits each line)
        if event.kind == "log" and event.step == "loud" and event.data["line"] == "20":
            assert started.wait(20)
            seen.append(len(runs[0].logs("loud")))  # past the 10 kept: read from its file

    runs.append(start_background(graph, executor="local", on_event=read_back))
    started.set()
    run = runs[0].wait(20)
    assert run.states() == {"loud": "cached"}
    assert seen == [50]


def test_a_failed_step_names_its_last_stderr_lines_however_long_its_log(monkeypatch):
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 10)
    run = Graph("f", [Step("bad", run="seq 1 1000 >&2; exit 3")]).run(executor="local")
    assert run.states() == {"bad": "failed"}
    assert run.status_rows()["bad"]["error"] == "exit code 3: 1000"
    assert run.logs("bad", stream="stderr", tail=2)["line"].tolist() == ["999", "1000"]


def _quiet() -> int:
    return 1


def test_a_silent_step_leaves_no_log_file_and_no_empty_run_folder(workdir: Path):
    graph = Graph("quiet")
    graph.step(_quiet, name="q")
    run = graph.run(executor="local")
    assert not (workdir / ".dagnb_cache" / "q").exists()  # a record of a pack: no folder
    entry = Store(workdir / ".dagnb_cache").newest("q")
    assert entry.meta["log_lines"] == 0 and entry.logs() == []
    assert sorted(p.name for p in entry.path.iterdir()) == ["meta.json", "out"]  # made
    assert not (workdir / ".dagnb_cache" / ".runs" / run.id / "q").exists()


def test_each_attempt_writes_its_own_lines_and_the_entry_keeps_the_last(workdir: Path):
    marker = workdir / "tried"
    step = Step("flaky", retries={"max_retries": 1, "backoff_factor": 0},
                run=f'echo try; if [ ! -e {marker} ]; then touch {marker}; exit 1; fi')
    run = Graph("r", [step]).run(executor="local")
    assert run.states() == {"flaky": "succeeded"}
    entry_logs = Path(Store(workdir / ".dagnb_cache").newest("flaky").log_file)
    assert [json.loads(line)["attempt"] for line in entry_logs.read_text().splitlines()] == [2]


RSS_SCRIPT = """
import resource, sys
import dagnb
from dagnb import Graph, Step
dagnb.configure(cache_directory=sys.argv[1])
graph = Graph("big", [Step("big", run="head -c 60000000 /dev/zero | tr '\\\\0' x | fold -w 99")])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
state = graph.run(executor="local").states()["big"]
print(state, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow  # several seconds: on CI's main leg only
def test_sixty_megabytes_of_output_cost_little_memory_live_and_replayed(tmp_path):
    def grown() -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "c")],
                              capture_output=True, text=True, timeout=300)
        state, megabytes = done.stdout.split()
        return state, int(megabytes)

    live, replayed = grown(), grown()
    assert live[0] == "succeeded" and replayed[0] == "cached"
    assert live[1] < 60 and replayed[1] < 60, (live, replayed)  # was 6.7x the output


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_hundred_megabyte_line_takes_linear_time():
    from dagnb.executors.capture import capturing

    graph = Graph("long", [Step("shell", run="head -c 100000000 /dev/zero | tr '\\0' x")])

    def python_line() -> None:
        for _ in range(20_000):
            sys.stdout.write("y" * 1_000)  # 20 MB written a bit at a time

    graph.step(python_line, name="python", cache=False)
    started = time.perf_counter()
    with isolated(), capturing():
        run = graph.run(executor="local").raise_for_status()
    assert time.perf_counter() - started < 10
    assert len(run.logs("shell")["line"][0]) == 100_000_000
    assert len(run.logs("python")["line"][0]) == 20_000_000


@pytest.mark.parametrize("line", ["plain", 'quote " and \\ back', "tab\tnew\u2028line é ☃ \x00",
                                  "\ud800 lone surrogate"])
def test_a_line_record_is_the_json_dumps_would_write(tmp_path: Path, line: str):
    from dagnb.runtime.logfile import LogFile

    fast, slow = LogFile(tmp_path / "fast.jsonl"), LogFile(tmp_path / "slow.jsonl")
    fast.write_line(1764400000.123456, 2, "stderr", line)
    slow.write({"time": 1764400000.123456, "attempt": 2, "stream": "stderr", "line": line})
    fast.close(), slow.close()
    written = (tmp_path / "fast.jsonl").read_bytes()
    assert written == (tmp_path / "slow.jsonl").read_bytes()
    assert json.loads(written)["line"] == line


_printed, _release = threading.Event(), threading.Event()


def _chatty() -> None:
    for i in range(1_000):
        print(f"line {i}")
    _printed.set()
    _release.wait(20)


def test_a_running_step_past_the_kept_head_shows_its_last_printed_line(monkeypatch):
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 100)
    _printed.clear(), _release.clear()
    run = start_background(Graph("live", [Step("chatty", func=_chatty, cache=False)]),
                           executor="local")
    try:
        assert _printed.wait(20)
        assert run.states() == {"chatty": "running"}
        assert run.logs("chatty", tail=1)["line"].tolist() == ["line 999"]
        assert len(run.logs("chatty")) == 1_000
    finally:
        _release.set()
        run.wait(20)
    assert run.states() == {"chatty": "succeeded"}
    assert run.logs("chatty", tail=1)["line"].tolist() == ["line 999"]


def test_flush_is_safe_on_a_file_never_opened_or_closed_and_keeps_its_error(tmp_path: Path):
    from dagnb.runtime.logfile import LogFile

    silent = LogFile(tmp_path / "silent.jsonl")
    silent.flush()
    assert not silent.path.exists() and silent.error is None
    log = LogFile(tmp_path / "log.jsonl")
    log.write_line(1.0, 1, "stdout", "one")
    log.flush()
    assert json.loads(log.path.read_text())["line"] == "one"
    log.close()
    log.flush()
    full = LogFile(tmp_path / "full.jsonl")
    full.write_line(1.0, 1, "stdout", "one")
    full._handle = open("/dev/full", "w")  # noqa: SIM115  # a disk with no room left
    full.write_line(1.0, 1, "stdout", "two")
    full.flush()
    assert isinstance(full.error, OSError)
    full.close()


_attempts: list[int] = []


def _loud_then_quiet() -> int:
    _attempts.append(1)
    if len(_attempts) == 1:
        for i in range(500):
            print(f"first {i}")
        raise RuntimeError("once")
    return 1  # the retry prints nothing: it makes no file, the first one's stays listed


def test_lines_of_an_earlier_attempt_are_read_back_when_the_last_printed_nothing(monkeypatch):
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 100)
    _attempts.clear()
    graph = Graph("retry", [Step("flaky", func=_loud_then_quiet, retries=1, cache=False)])
    run = graph.run(executor="local", sleep=_no_wait).raise_for_status()
    lines = run.logs("flaky")
    assert lines["line"].tolist()[:500] == [f"first {i}" for i in range(500)]
    assert set(lines["attempt"]) == {1}
    step_dir = Path(run.workspace_text) / "flaky"
    assert sorted(p.name for p in step_dir.iterdir()) == ["logs-1.jsonl"]


async def _no_wait(_seconds: float) -> None:
    return None


def test_the_tail_of_log_files_is_read_from_their_ends(tmp_path: Path):
    """What the views show of a step past the kept lines: the last records, across an
    earlier attempt's file, however small the blocks read back."""
    from dagnb.runtime import logfile

    paths = [tmp_path / "logs-1.jsonl", tmp_path / "logs-2.jsonl"]
    for number, path in enumerate(paths, 1):
        path.write_text("".join(json.dumps({"attempt": number, "line": f"{number}:{i}"}) + "\n"
                                for i in range(50)))
    lines = [r["line"] for r in logfile.tail_records(paths, 52)]
    assert lines == ["1:48", "1:49", *(f"2:{i}" for i in range(50))]
    assert [r["line"] for r in logfile._file_tail(paths[1], 3, block=7)] == ["2:47", "2:48",
                                                                            "2:49"]
    assert logfile.tail_records([tmp_path / "missing.jsonl"], 5) == []
    mixed = tmp_path / "logs-3.jsonl"  # a stream's lines far back, a line longer than a block
    mixed.write_text("".join(json.dumps({"stream": stream, "line": line}) + "\n" for stream, line
                             in [("stderr", "e" * 40), *(("stdout", str(i)) for i in range(30)),
                                 ("stderr", "late")]) + '{"stream": "std')  # (torn: running)
    assert [r["line"] for r in logfile._file_tail(mixed, 2, block=7, stream="stderr")] == [
        "e" * 40, "late"]
    assert [r["line"] for r in logfile._file_tail(mixed, 2, block=7, stream="stdout")] == [
        "28", "29"]
    assert len(logfile.tail_records([mixed], 50, stream="stdout")) == 30


def test_a_tail_of_a_long_log_is_the_full_read_s_last_rows_read_from_the_end(
        monkeypatch, workdir: Path):
    """``logs(step, tail=N)`` reads back from the end of the step's files, across every
    attempt's, a stream's own lines too: the same rows, dtypes and times as the last N of
    the full read, without reading every record (which took a second a 100,000)."""
    from dagnb.runtime import run as run_module

    monkeypatch.setattr(events, "LOG_LINES_KEPT", 10)
    marker = workdir / "tried"
    step = Step("flaky", retries={"max_retries": 1, "backoff_factor": 0}, cache=False,
                run=f"seq 1 30; echo once >&2; [ -e {marker} ] || "
                    f"{{ touch {marker}; seq 100 120 >&2; exit 1; }}; seq 200 240")
    run = Graph("r", [step]).run(executor="local")
    assert run.states() == {"flaky": "succeeded"}
    assert len(list((Path(run.workspace_text) / "flaky").glob("logs-*.jsonl"))) == 2
    full = {stream: run.logs("flaky", stream=stream) for stream in (None, "stdout", "stderr")}
    assert len(full[None]) == 30 + 1 + 21 + 30 + 1 + 41

    def every_record(paths):
        raise AssertionError("read every record for a tail")

    monkeypatch.setattr(run_module, "read_records", every_record)
    for stream, lines in full.items():
        for tail in (1, 3, 22, 60, 124, 1_000):
            expected = lines.tail(tail).reset_index(drop=True)
            pd.testing.assert_frame_equal(run.logs("flaky", stream=stream, tail=tail),
                                          expected)
    assert run.logs("flaky", stream="stderr", tail=3)["attempt"].tolist() == [1, 1, 2]
    assert run.logs("flaky", tail=0).empty
