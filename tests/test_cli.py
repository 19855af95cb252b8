"""The dagnb command: run, validate, graph; exit codes and one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dagnb.cli import build_parser, main
from dagnb.runtime import history
from dagnb.testing import terminal_signals, wait_until
from dagnb.workflows.loader import load as dagnb_load

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "workflows" / "example_workflow.yml"


def dagnb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_python_m_dagnb_is_the_command(tmp_path: Path) -> None:
    """Where the script is not on the PATH (no venv activated): as python -m pip is pip."""
    done = subprocess.run([sys.executable, "-m", "dagnb", "validate", str(EXAMPLE)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"{EXAMPLE}: 5 steps, valid\n"), done.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_run_example_prints_the_status_table_then_all_cached(tmp_path: Path) -> None:
    first = dagnb("run", str(EXAMPLE), "--executor", "local", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    table = first.stdout.splitlines()
    header = next(line for line in table if line.split()[:2] == ["step", "state"])
    assert "exit_code" in header
    assert "image" not in header  # the steps name an image, but ran on this machine
    for step in ("generate", "total", "largest", "histogram", "report"):
        assert any(line.split()[:2] == [step, "succeeded"] for line in table), step
    second = dagnb("run", str(EXAMPLE), "--executor", "local", cwd=tmp_path)
    rows = [line.split() for line in second.stdout.splitlines()]
    assert sum(row[:2] == [row[0], "cached"] for row in rows if row) == 5
    assert "5 cached" in second.stdout
    assert "python:3.12-slim" not in second.stdout


def test_plain_progress_lines_when_not_a_tty(tmp_path: Path) -> None:
    done = dagnb("run", str(EXAMPLE), "--no-cache", "--executor", "local", cwd=tmp_path)
    assert "[5/5] report succeeded" in done.stdout


def _run_on_a_terminal(args: list[str], cwd: Path) -> str:
    """What ``dagnb`` writes to a terminal (stdout and stderr both a pty), as read."""
    import pty

    main_fd, child_fd = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "dagnb.cli", *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=child_fd, stderr=child_fd)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # (EIO: the child's end closed)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert process.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def test_a_notice_printed_during_the_bar_starts_a_line_of_its_own(tmp_path: Path) -> None:
    """The local executor's notice of an ignored image comes while the bar is drawn: it
    clears the bar's line rather than run on after ``[....] 0/1`` (as the first run of
    the README's example showed it), and the bar is drawn again under it."""
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'sleep 0.2', image: 'alpine:3'}\n")
    shown = _run_on_a_terminal(["run", "wf.yml", "--executor", "local"], tmp_path)
    lines = [line for line in shown.replace("\r\n", "\n").split("\n") if "ignores images" in line]
    assert len(lines) == 1, shown
    assert lines[0].split("\r")[-1].startswith("dagnb: the local executor"), repr(lines[0])
    # (in no front end's words: it said executor='dagger', Python's, to a command's user)
    assert lines[0].endswith("(a container needs the dagger executor and a Dagger engine)")
    after = shown.split("ignores images", 1)[1]
    assert "] 1/1" in after, repr(shown)  # the bar, drawn again after the notice


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_retry_line_says_which_attempt_of_how_many_and_when(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text("steps:\n  flaky: {run: 'exit 5', retries: 1}\n")
    result = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    retrying = [line for line in result.stdout.splitlines() if "retrying" in line]
    assert len(retrying) == 1, result.stdout  # as the notebook's view words it
    assert re.fullmatch(r"\S+ \[0/1\] flaky retrying 2/2 in \d+\.\d s: exit code 5",
                        retrying[0]), retrying


def test_a_failed_step_exits_1(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text("steps:\n  bad: {run: 'exit 4'}\n")
    result = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    assert result.returncode == 1
    assert "exit code 4" in result.stdout


@pytest.mark.parametrize(("text", "message"), [
    ("steps:\n  a: {run: 'true', needs: [b]}\n  b: {run: 'true', needs: [a]}\n",
     "the steps' needs form a cycle"),
    ("steps:\n  a: {run: 'true', needs: [bb]}\n  b: {run: 'true'}\n",
     "step 'a' needs 'bb', which is not a step; did you mean 'b'?"),
    ("steps:\n  a: {run: 'true', colour: red}\n", "step 'a': unknown key 'colour'"),
    ("steps: [\n", "line 2: YAML does not parse"),
    ("steps:\n  a: {run: 'true', mounts: {nowhere: /data}}\n", "mounts 'nowhere'"),
    ("steps:\n  a: {run: 'true', secrets: [DAGNB_TEST_MISSING]}\n",
     "needs secret 'DAGNB_TEST_MISSING'"),
    ("steps:\n  9a: {run: 'true'}\n", "step name '9a' is not valid"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "wf.yml").write_text(text)
    result = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("count", [3, 25])
def test_a_step_name_it_does_not_know_is_refused_naming_the_steps_it_has(tmp_path, count):
    """`dagnb run long.yml --target nope` and `dagnb logs long.yml nope` said "check the
    step names" without naming one: each, if few, else the closest and how many."""
    names = [f"part_{n:02d}" for n in range(count)]
    (tmp_path / "long.yml").write_text(
        "steps:\n" + "".join(f"  {name}: {{run: 'true'}}\n" for name in names))
    if count <= 20:
        listed, close = f"its steps are {', '.join(names)}", f"its steps: {', '.join(names)}"
    else:
        listed = f"the closest of its {count} steps are "
        close = f"the closest of its {count} steps: part_01, "
    for command in (["run", "long.yml", "--executor", "local", "--target"], ["logs", "long.yml"]):
        refused = dagnb(*command, "nope", cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert refused.stderr.startswith(
            f"dagnb: error: no step named 'nope' in the graph; {listed}"), refused.stderr
        assert len(refused.stderr.split(", ")) == min(count, 5 if count > 20 else count)
        typo = dagnb(*command, "prt_01", cwd=tmp_path)
        assert typo.stderr.startswith("dagnb: error: no step named 'prt_01' in the graph; did "
                                      f"you mean 'part_01'? ({close}"), typo.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_validate_and_graph(tmp_path: Path) -> None:
    valid = dagnb("validate", str(EXAMPLE), cwd=tmp_path)
    assert valid.returncode == 0 and "5 steps, valid" in valid.stdout
    listing = dagnb("graph", str(EXAMPLE), cwd=tmp_path).stdout.splitlines()
    assert listing[0] == "generate"
    assert listing[-1] == "report  <- total, largest, histogram"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_targets_and_tags_select_upstream(tmp_path: Path) -> None:
    pipeline = REPO / "workflows" / "example_pipeline.yml"
    result = dagnb("run", str(pipeline), "--tag", "etl", "--executor", "local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "report" not in {line.split()[0] for line in result.stdout.splitlines()[-8:] if line}
    target = dagnb("run", str(EXAMPLE), "--target", "total", "--executor", "local", cwd=tmp_path)
    names = {line.split()[0] for line in target.stdout.splitlines() if line.strip()}
    assert {"generate", "total"} <= names and "report" not in names


def test_progress_bar_on_a_terminal_redraws_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import dagnb
    from dagnb.runtime.prepare import prepare
    from dagnb.views.progress import ProgressPrinter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("bar", [dagnb.Step(f"s{i}", run="true") for i in range(3)])
    run, _ = prepare(graph, cache=False, executor="local")
    screen = Terminal()
    printer = ProgressPrinter(screen, min_interval=0)
    printer.on_event(run.events.emit("run", None, state="started", steps=len(run.order)))
    for name in run.order:
        printer.on_event(run.events.emit("state", name, 1, state="running"))
        printer.on_event(run.events.emit("state", name, 1, state="succeeded"))
    printer.finish()
    frames = screen.getvalue().split("\r")
    assert frames[-1].startswith("[" + "#" * 24 + "] 3/3")
    assert screen.getvalue().count("\n") == 1  # one line, redrawn in place


def test_a_progress_bar_update_that_comes_too_soon_is_drawn_when_the_interval_ends() -> None:
    import io

    from dagnb.runtime.events import EventLog
    from dagnb.testing import Clock
    from dagnb.views.progress import ProgressPrinter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Timers(list):
        def __call__(self, delay, func):
            self.append((delay, func))
            return self

        def cancel(self) -> None:
            self.clear()

    clock, timers, screen, events = Clock(now=50.0), Timers(), Terminal(), EventLog()
    printer = ProgressPrinter(screen, min_interval=0.1, clock=clock, later=timers)
    printer.on_event(events.emit("run", None, state="started", steps=2))
    printer.on_event(events.emit("state", "a", 1, state="running"))
    clock.now += 0.01
    printer.on_event(events.emit("state", "a", 1, state="succeeded"))
    printer.on_event(events.emit("state", "train", 1, state="running"))  # then a long wait
    assert screen.getvalue().split("\r")[-1].rstrip() == "[" + "." * 24 + "] 0/2 a"
    delay, redraw = timers.pop()
    assert delay == pytest.approx(0.09) and not timers
    clock.now += delay
    redraw()
    assert screen.getvalue().split("\r")[-1].startswith("[" + "#" * 12 + "." * 12 + "] 1/2 train")
    clock.now += 0.01
    printer.on_event(events.emit("state", "train", 1, state="succeeded"))
    assert timers  # a redraw for later, which the end of the run makes needless
    printer.finish()
    assert not timers and screen.getvalue().split("\r")[-1].startswith("[" + "#" * 24 + "] 2/2")
    assert screen.getvalue().count("\n") == 1


@pytest.mark.parametrize("tty", [False, True])
def test_a_stream_that_stops_taking_text_ends_the_printing_quietly(tty: bool) -> None:
    """A retry's line, a state's line or the bar, and the bar's end: the first write that
    fails is the last one tried, and the run's events go on."""
    from dagnb.runtime.events import EventLog
    from dagnb.views.progress import ProgressPrinter

    class Gone:
        writes = 0

        def isatty(self) -> bool:
            return tty

        def write(self, text: str) -> int:
            self.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

    stream, events = Gone(), EventLog()
    printer = ProgressPrinter(stream, min_interval=0)  # type: ignore[arg-type]
    printer.on_event(events.emit("run", None, state="started", steps=1))
    printer.on_event(events.emit("retry", "flaky", 1, next_attempt=2, attempt_limit=2,
                                 delay=0.5, error="exit code 5"))
    printer.on_event(events.emit("state", "flaky", 2, state="running"))
    printer.on_event(events.emit("state", "flaky", 2, state="succeeded"))
    printer.finish()
    assert isinstance(printer.lost, BrokenPipeError) and stream.writes == 1


def test_a_closed_stderr_fails_no_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dagnb run wf.yml 2> >(exit 0)``: the notice of where ``auto`` runs the steps,
    said as the first step asks for its executor, cannot be written; the steps run."""
    from dagnb.executors.dagger import connection

    monkeypatch.setattr(connection, "pick_auto", lambda: ("local", "no engine here"))
    common = [*_workflow_args(tmp_path, monkeypatch, "steps:\n  a: {run: 'echo a'}\n"),
              "--executor", "auto"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the run starts
    closed = open(write_end, "w", buffering=1)  # noqa: SIM115 (closed below)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", closed)
            code = main(["run", *common])
    finally:
        with contextlib.suppress(OSError):  # (what it holds cannot be flushed either)
            closed.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[1/1] a succeeded" in out


def _workflow_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    """``wf.yml`` holding ``text`` in ``tmp_path`` (the working folder now), and the
    options that run it locally on a cache of its own there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(text)
    return ["wf.yml", "--executor", "local", "--cache-dir", str(tmp_path / "cache")]


def test_only_failed_reruns_the_last_failures_read_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagnb.cli import main

    common = _workflow_args(tmp_path, monkeypatch,
                            "steps:\n"
                            "  first: {run: 'echo one'}\n"
                            "  second: {run: 'echo two'}\n"
                            "  shaky: {run: 'test -f fixed', needs: [first]}\n"
                            "  after: {run: 'echo after', needs: [shaky]}\n")
    assert main(["run", *common]) == 1
    capsys.readouterr()
    (tmp_path / "fixed").write_text("")
    assert main(["run", *common, "--only-failed"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] and line.split()[0] in ("first", "second", "shaky", "after")}
    assert rows == {"first": "cached", "shaky": "succeeded", "after": "succeeded"}
    assert main(["run", *common, "--only-failed"]) == 0
    again = capsys.readouterr().out.splitlines()
    assert again == ["dagnb: the last run of 'wf' has no failed, skipped, cancelled or "
                     "unfinished steps; nothing to re-run"]


def test_only_failed_runs_the_steps_no_run_of_the_file_finished_new_renamed_or_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No run recorded yet (CI's retry job on a fresh machine), or the failed step
    renamed since: those steps never finished, so they run; it once ran nothing, exit 0,
    saying the last run had no failed steps."""
    from dagnb.cli import main

    monkeypatch.chdir(tmp_path)
    workflow = tmp_path / "wf.yml"
    workflow.write_text("steps:\n  a: {run: 'echo a'}\n  b: {run: 'exit 3', needs: [a]}\n")
    common = ["wf.yml", "--executor", "local", "--cache-dir", str(tmp_path / "cache")]

    def states(*options: str) -> tuple[int, dict[str, str]]:
        code = main(["run", *common, *options])
        rows = [line.split() for line in capsys.readouterr().out.splitlines()]
        return code, {row[0]: row[1] for row in rows if row[:1] in (["a"], ["b"], ["c"])}

    assert states("--only-failed") == (1, {"a": "succeeded", "b": "failed"})
    workflow.write_text("steps:\n  a: {run: 'echo a'}\n  c: {run: 'echo c', needs: [a]}\n")
    assert states("--only-failed") == (0, {"a": "cached", "c": "succeeded"})
    assert states("--only-failed") == (0, {})  # (nothing to re-run: said in one line)


def test_only_failed_with_a_target_or_tag_reruns_only_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """b failed; c needs nothing of it: --only-failed --target c runs nothing and says so
    (it once ran a, b and c, and b failed the run again); --target b runs a and b."""
    from dagnb.cli import main

    common = _workflow_args(tmp_path, monkeypatch,
                            "steps:\n"
                            "  a: {run: 'echo a'}\n"
                            "  b: {run: 'exit 1', needs: [a]}\n"
                            "  c: {run: 'echo c', tags: [quick]}\n")
    assert main(["run", *common]) == 1
    capsys.readouterr()
    for narrowing in (["--target", "c"], ["--tag", "quick"]):
        assert main(["run", *common, "--only-failed", *narrowing]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "dagnb: the last run of 'wf' has no failed, skipped, cancelled or unfinished "
            f"steps among those {' '.join(narrowing)} select; nothing to re-run"]
    assert main(["run", *common, "--only-failed", "--target", "b"]) == 1
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert [row for row in rows if row[:1] in (["a"], ["b"], ["c"])] == [
        ["a", "cached"], ["b", "failed"]]


_CITY_WORKFLOW = """\
steps:
  load:
    run: 'printf %s "$DAGNB_PARAM_CITY" > "$DAGNB_OUT/city"'
    params: {city: London}
  report:
    run: 'test -f fixed && echo "$(cat "$DAGNB_IN/load/city") $DAGNB_PARAM_CITY" >> seen'
    needs: [load]
    params: {city: London}
  summary:
    run: 'echo "$DAGNB_PARAM_CITY" >> summaries'
    needs: [load]
    params: {city: London}
  other: {run: 'echo other'}
"""


def _rows(stdout: str) -> dict[str, str]:
    names = ("load", "report", "summary", "other")
    return {row[0]: row[1] for row in map(str.split, stdout.splitlines()) if row[:1]
            and row[0] in names}


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_only_failed_runs_the_failed_step_with_the_params_the_last_run_was_given(
    tmp_path: Path,
) -> None:
    """The fix of a step that failed with --param city=Paris is tried with Paris, its
    upstream taken from the cache under Paris' key: not with the file's London, which
    ran load again and reported success for a configuration that never failed."""
    (tmp_path / "wf.yml").write_text(_CITY_WORKFLOW)
    first = dagnb("run", "wf.yml", "--executor", "local", "--param", "city=Paris", cwd=tmp_path)
    assert first.returncode == 1 and _rows(first.stdout)["report"] == "failed", first.stdout
    (tmp_path / "fixed").write_text("")
    again = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _rows(again.stdout) == {"load": "cached", "report": "succeeded"}
    assert (tmp_path / "seen").read_text() == "Paris Paris\n"
    assert again.stderr == "dagnb: --only-failed: using the last run's --param city=Paris\n"
    record = (tmp_path / ".dagnb_cache/.runs/records.jsonl").read_text().split()[-1]
    assert json.loads(record)["params"] == {"city": "Paris"}  # (the next one reads it too)
    done = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, again.stderr)
    assert "nothing to re-run" in done.stdout


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_param_given_with_only_failed_wins_and_runs_what_no_run_with_it_finished(
    tmp_path: Path,
) -> None:
    """summary succeeded with Paris, which is no run with Rome: given city=Rome it runs
    (other, no city, from the cache); back to Paris, only what failed with Paris runs."""
    (tmp_path / "wf.yml").write_text(_CITY_WORKFLOW)
    assert dagnb("run", "wf.yml", "--executor", "local", "-p", "city=Paris",
                 cwd=tmp_path).returncode == 1
    (tmp_path / "fixed").write_text("")
    rome = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", "-p", "city=Rome",
                 cwd=tmp_path)
    assert rome.returncode == 0, rome.stdout + rome.stderr
    assert _rows(rome.stdout) == {"load": "succeeded", "report": "succeeded",
                                  "summary": "succeeded", "other": "cached"}
    assert (tmp_path / "summaries").read_text() == "Paris\nRome\n"
    assert rome.stderr == (
        "dagnb: --only-failed: --param city=Rome given, in place of the last run's Paris; "
        "no run with these params is recorded, so every step runs (those whose inputs are "
        "unchanged come from the cache)\n")
    paris = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", "-p", "city=Paris",
                  cwd=tmp_path)
    assert paris.returncode == 0, paris.stdout + paris.stderr
    assert _rows(paris.stdout) == {"load": "cached", "report": "succeeded"}
    assert (tmp_path / "seen").read_text() == "Rome Rome\nParis Paris\n"
    assert paris.stderr == (
        "dagnb: --only-failed: --param city=Paris given, in place of the last run's Rome; "
        "a step runs unless a run with these params finished it\n")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_only_failed_given_the_files_own_value_retries_a_run_given_no_params(
    tmp_path: Path,
) -> None:
    """A first run given no --param ran with the file's London: --only-failed given
    city=London is that run again, so report runs alone. It said no run with these params
    was recorded, and ran every step."""
    (tmp_path / "wf.yml").write_text(_CITY_WORKFLOW)
    first = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    assert first.returncode == 1 and _rows(first.stdout)["report"] == "failed", first.stdout
    (tmp_path / "fixed").write_text("")
    again = dagnb("run", "wf.yml", "--only-failed", "--executor", "local", "-p",
                  "city=London", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (_rows(again.stdout), again.stderr) == ({"load": "cached", "report": "succeeded"}, "")
    assert (tmp_path / "seen").read_text() == "London London\n"
    assert (tmp_path / "summaries").read_text() == "London\n"  # (summary ran once)


def test_only_failed_reads_records_without_params_and_leaves_out_a_param_gone_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record older versions wrote (no params) is a run given none; a recorded param
    no step declares any more is left out, said, rather than refused as a --param."""
    monkeypatch.chdir(tmp_path)
    workflow = tmp_path / "wf.yml"
    workflow.write_text(_CITY_WORKFLOW)
    runs = tmp_path / ".dagnb_cache/.runs"
    runs.mkdir(parents=True)
    old = {"run": "20240101-000000-000-000000", "graph": "wf", "finished": 1.0,
           "source": str(workflow.resolve()),
           "states": {"load": "succeeded", "report": "failed", "summary": "succeeded",
                      "other": "succeeded"}}
    (runs / "records.jsonl").write_text(json.dumps(old) + "\n")
    (tmp_path / "fixed").write_text("")
    assert main(["run", "wf.yml", "--only-failed", "--executor", "local"]) == 0
    out, err = capsys.readouterr()
    assert (_rows(out), err) == ({"load": "succeeded", "report": "succeeded"}, "")
    assert "params" not in json.loads((runs / "records.jsonl").read_text().split()[-1])
    gone = {**old, "finished": 2.0, "params": {"zone": "eu"}}
    (runs / "records.jsonl").write_text(json.dumps(gone) + "\n")
    assert main(["run", "wf.yml", "--only-failed", "--executor", "local"]) == 0
    out, err = capsys.readouterr()
    assert err == ("dagnb: --only-failed: the last run's --param zone=eu left out (no step of "
                   "wf.yml declares it now); no run with these params is recorded, so every "
                   "step runs (those whose inputs are unchanged come from the cache)\n")
    assert _rows(out) == {"load": "cached", "report": "cached", "summary": "succeeded",
                          "other": "succeeded"}  # (summary and other: no run cached them)


def test_a_param_given_the_value_of_a_secret_is_refused_though_its_steps_do_not_run(
    tmp_path: Path,
) -> None:
    """The run's record keeps the --param values given, for --only-failed: one holding a
    secret's value is refused (exit 2) even when no step declaring it runs, and written
    nowhere."""
    (tmp_path / "w.yml").write_text("steps:\n  load: {run: 'true', params: {city: London}}\n"
                                    "  other: {run: 'true', secrets: [TOKEN]}\n")
    secret = "hunter2-token-value"
    refused = subprocess.run(
        [sys.executable, "-m", "dagnb", "run", "w.yml", "--executor", "local", "--target",
         "other", "--param", f"city={secret}"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**os.environ, "TOKEN": secret})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "'TOKEN'" in refused.stderr and secret not in refused.stdout + refused.stderr
    written = [path for path in tmp_path.rglob("*") if path.is_file()
               and secret.encode() in path.read_bytes()]
    assert written == []


SECRET_STEP = """\
steps:
  fetch:
    secrets: [API_TOKEN]
    run: 'echo "rows for $API_TOKEN" | wc -c > "$DAGNB_OUT/rows.txt"'
  report:
    needs: [fetch]
    run: 'echo "report v1: $(cat "$DAGNB_IN/fetch/rows.txt")"'
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_step_served_from_the_cache_needs_no_secret_and_one_that_runs_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run in a new shell where the token is not exported, or a CI build that has
    none (read-only, fail-on-miss), was refused before anything ran, every step a hit."""
    (tmp_path / "wf.yml").write_text(SECRET_STEP)
    monkeypatch.setenv("API_TOKEN", "tok-9f8e7d6c5b")
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    monkeypatch.delenv("API_TOKEN")
    for mode in ("read-write", "read-only", "fail-on-miss"):
        again = dagnb("run", "wf.yml", "--executor", "local", "--cache-mode", mode,
                      cwd=tmp_path)
        assert (again.returncode, _states(again.stdout)) == (
            0, {"fetch": "cached", "report": "cached"}), again.stderr
    (tmp_path / "wf.yml").write_text(SECRET_STEP.replace("report v1", "report v2"))
    edited = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    assert (edited.returncode, _states(edited.stdout)) == (
        0, {"fetch": "cached", "report": "succeeded"}), edited.stderr
    refused = dagnb("run", "wf.yml", "--executor", "local", "--refresh", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1] == (
        "dagnb: error: step 'fetch' needs secret 'API_TOKEN', which is not set in the "
        "environment; set it (export API_TOKEN=...) before running")


def _states(stdout: str) -> dict[str, str]:
    """The status table's state of each step of SECRET_STEP."""
    return {row[0]: row[1] for row in map(str.split, stdout.splitlines())
            if row[:1] in (["fetch"], ["report"])}


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_secret_written_in_pieces_never_shows_in_the_runs_output(tmp_path: Path) -> None:
    """``dagnb run`` prints progress lines, not the steps' output; a Python step's thread
    prints to its stdout, masked on the way, and a secret it wrote in pieces (a flush and
    a pause between them) was printed in clear. The steps' logs have it masked."""
    (tmp_path / "speak.py").write_text(
        "import os, threading, time\n\n"
        "def speak():\n"
        "    token = os.environ['TOKEN']\n"
        "    print(token[:4], end='', flush=True); time.sleep(0.2); print(token[4:])\n"
        "    def later():\n"
        "        print('thread', token[:4], end='', flush=True); time.sleep(0.2)\n"
        "        print(token[4:])\n"
        "    thread = threading.Thread(target=later)\n"
        "    thread.start()\n"
        "    thread.join()\n")
    (tmp_path / "w.yml").write_text(
        "defaults: {secrets: [TOKEN]}\nsteps:\n  py: {python: 'speak.py:speak'}\n"
        "  sh: {run: 'printf %s \"${TOKEN:0:4}\"; sleep 0.2; printf \"%s\\\\n\" \"${TOKEN:4}\"'}\n")
    secret = "tok-PIECES-8765432"
    done = subprocess.run(
        [sys.executable, "-m", "dagnb", "run", "w.yml", "--executor", "local", "--no-cache"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TOKEN": secret})
    assert done.returncode == 0, done.stdout + done.stderr
    assert secret not in done.stdout + done.stderr and "thread ***" in done.stdout
    logs = "".join(path.read_text() for path in tmp_path.rglob("logs-*.jsonl"))
    assert logs.count("***") == 2 and secret not in logs


def test_a_workflow_of_no_steps_says_so_in_its_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagnb.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yml").write_text("steps: {}\n")
    assert main(["run", "empty.yml", "--executor", "local"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"run \S+ \(empty\): no steps", last), last  # (it ended in ": ")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_only_failed_reads_the_last_run_of_that_file_not_of_its_name(tmp_path: Path) -> None:
    steps = "steps:\n  a: {{run: '{}'}}\n  b: {{run: 'echo b', needs: [a]}}\n"
    (tmp_path / "q3.yml").write_text("name: etl\n" + steps.format("test -f fixed"))
    (tmp_path / "q4.yml").write_text("name: etl\n" + steps.format("true"))
    assert dagnb("run", "q3.yml", "--executor", "local", cwd=tmp_path).returncode == 1
    assert dagnb("run", "q4.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    (tmp_path / "fixed").write_text("")
    again = dagnb("run", "q3.yml", "--only-failed", "--executor", "local", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = {line.split()[0]: line.split()[1] for line in again.stdout.splitlines()
            if line.split()[:1] in (["a"], ["b"])}
    assert rows == {"a": "succeeded", "b": "cached"}  # (q4.yml's b, the same step)


def test_a_fail_on_miss_run_refused_leaves_no_new_cache_folder(tmp_path: Path) -> None:
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: 'true'}\n")
    refused = dagnb("run", "w.yml", "--cache-mode", "fail-on-miss", "--cache-dir", "new/cache",
                    "--executor", "local", cwd=tmp_path)
    assert refused.returncode == 2 and "fail-on-miss" in refused.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_run_and_its_processes_like_ctrl_c(number, tmp_path):
    marker = f"sleep 100.{random.randrange(10**6):06d}"
    (tmp_path / "w.yml").write_text(f"steps:\n  long:\n    run: {marker} & {marker}; wait\n")

    def running() -> list[str]:
        found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
        return found.stdout.split()

    child = subprocess.Popen([sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--no-cache"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=terminal_signals)
    assert wait_until(lambda: len(running()) >= 2, timeout=15), "the step never started"
    child.send_signal(number)
    _, err = child.communicate(timeout=10)
    assert child.returncode == 128 + number, err
    assert "running steps were stopped" in err
    assert wait_until(lambda: running() == [], timeout=2), running()


def test_cache_verify_sets_aside_entries_whose_files_changed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text(
        "steps:\n  a:\n    run: echo aaaa > \"$DAGNB_OUT/a.txt\"\n"
        "  b:\n    run: echo bbbb > \"$DAGNB_OUT/b.txt\"\n")
    assert main(["run", "w.yml"]) == 0
    assert main(["cache", "verify"]) == 0
    assert "verified 2 cache entries" in capsys.readouterr().out
    [written] = tmp_path.glob(".dagnb_cache/a/*/out/a.txt")
    written.write_text("AAAA\n")  # same size, other content: only a re-hash sees it
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("damaged entry: a/") and "no longer match their digest" in out[0]
    assert "verified 2 cache entries" in out[1] and "1 damaged, set aside" in out[1]
    assert main(["run", "w.yml"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["a", "succeeded"] for line in out.splitlines())
    assert any(line.split()[:2] == ["b", "cached"] for line in out.splitlines())


@pytest.mark.parametrize(("change", "said"), [
    ("HELLO\n", "was changed since it was saved"),
    ("hello, longer\n", "is 14 bytes, not the 6 it was saved with"),
    (None, "is missing"),
])
def test_cache_verify_names_the_changed_file_a_link_points_to(tmp_path, change, said):
    """A link listed before the file it points to was named alone: `its file out/link
    was changed` for an edit of out/sub/deep/f.txt."""
    (tmp_path / "w.yml").write_text(
        "steps:\n  make:\n    run: |\n      mkdir -p \"$DAGNB_OUT/sub/deep\"\n"
        "      echo hello > \"$DAGNB_OUT/sub/deep/f.txt\"\n"
        "      ln -s sub/deep/f.txt \"$DAGNB_OUT/link\"\n")
    assert dagnb("run", "w.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    [changed] = tmp_path.glob(".dagnb_cache/make/*/out/sub/deep/f.txt")
    if change is None:
        changed.unlink()
    else:
        changed.write_text(change)
    done = dagnb("cache", "verify", cwd=tmp_path)  # (a fresh process: a hit's checks)
    assert done.returncode == 1, done.stderr
    assert (f"(its file out/sub/deep/f.txt, which its link out/link points to, {said}), "
            "set aside") in done.stdout


def test_cache_verify_counts_what_its_listing_sets_aside(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text("".join(
        f"  {n}:\n    run: echo {n * 4} > \"$DAGNB_OUT/{n}.txt\"\n" for n in "abc")
        .join(["steps:\n", ""]))
    assert main(["run", "w.yml"]) == 0
    [written] = tmp_path.glob(".dagnb_cache/b/*/out/b.txt")
    with written.open("a") as grown:  # another size: what a hit checks already
        grown.write("more")
    capsys.readouterr()
    assert main(["cache", "verify"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("damaged entry: b/")
    assert "verified 3 cache entries" in out and "1 damaged" in out
    assert err == ""  # (each damage one line of the report, no warning with source lines)
    assert main(["cache", "verify"]) == 0  # set aside: the cache is whole again


@pytest.mark.parametrize("given", [".", "typo_cache", "file:///tmp/some-store"])
def test_cache_verify_touches_no_folder_that_is_not_a_cache(tmp_path, monkeypatch, capsys,
                                                            given):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src" / "module").mkdir(parents=True)
    (tmp_path / "src" / "module" / "x.py").write_text("x = 1\n")
    assert main(["cache", "verify", "--cache-dir", given]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dagnb: error: --cache-dir {given!r}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert (tmp_path / "src" / "module" / "x.py").read_text() == "x = 1\n"


def test_cache_verify_with_no_cache_yet_says_so_and_makes_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["cache", "verify"]) == 0
    assert "nothing to verify" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


TWO_STEPS = ("steps:\n  load:\n    run: head -c 3000 /dev/zero > \"$DAGNB_OUT/data.bin\"\n"
             "  report:\n    run: echo done\n    needs: [load]\n")  # (report: a packed entry)


def _on_disk(folder: Path) -> list[str]:
    """The steps of the entries in ``folder``, as a fresh store reads them."""
    from dagnb.cache import Store

    return sorted(Store(folder, read_only=True).entries()["step"])


def _two_steps_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text(TWO_STEPS)
    assert main(["run", "w.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    assert _on_disk(tmp_path / ".dagnb_cache") == ["load", "report"]
    return tmp_path / ".dagnb_cache"


def test_cache_list_clear_a_step_then_prune_to_nothing(tmp_path, monkeypatch, capsys):
    cache = _two_steps_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", "list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["step", "key", "size", "created", "last_used", "expires"]
    assert [row[0] for row in rows[1:]] == ["load", "report"]
    from dagnb.cache import Store
    from dagnb.cli.cache import _size

    on_disk = [row["disk_bytes"] for row in Store(cache).entry_rows(on_disk=True)]
    assert on_disk[0] > 3000  # (3000 bytes of files, and what the disk takes for them)
    assert rows[1][2] == _size(on_disk[0]) and rows[1][-1] == "never"  # (as stats counts)
    assert main(["cache", "clear", "--step", "report"]) == 0
    assert capsys.readouterr().out == f"removed 1 cache entry of step 'report' from {cache}\n"
    assert _on_disk(cache) == ["load"]
    assert main(["cache", "list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["step", "load"]
    assert main(["cache", "prune", "--max-entries", "0"]) == 0
    assert capsys.readouterr().out == (f"removed 1 cache entry from {cache}; "
                                       "0 cache entries left, 0B\n")
    assert _on_disk(cache) == []
    assert main(["cache", "list"]) == 0
    assert capsys.readouterr().out == "no entries\n"


def test_the_text_tables_of_list_and_history_are_laid_out_as_pandas_prints_them() -> None:
    """``dagnb cache list`` and ``dagnb history`` print their tables without pandas: for
    columns of text (spaces, accents, tabs and line breaks, empty cells) and of whole
    numbers (negative, zero, wider and narrower than their names), the very text of
    pandas' ``to_string(index=False)``."""
    import pandas as pd

    from dagnb.cli.cache import text_table

    pick = random.Random(16)
    texts = ["", "a", "run 1", "données", "x\ty", "two\nlines", "r\r", "longer-name.yml"]
    for _ in range(200):
        table: dict[str, list[object]] = {}
        rows = pick.randint(1, 4)
        for number in range(pick.randint(1, 5)):
            name = pick.choice(["n", "steps", "cancelled", "s", "workflow", "id"]) + str(number)
            if pick.random() < 0.5:
                table[name] = [pick.choice([0, 5, -3, 12345, 7]) for _ in range(rows)]
            else:
                table[name] = [pick.choice(texts) for _ in range(rows)]
        assert text_table(table) == pd.DataFrame(table).to_string(index=False), table


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset (POSIX)")
def test_cache_list_reads_as_the_entries_frame_printed_by_pandas(tmp_path, monkeypatch, capsys):
    """``dagnb cache list`` lays its rows out without pandas: the same text as the frame
    of ``Store.entries()`` printed by pandas, times as local clock times (in a zone with
    summer time, on both sides of its change), a never hit entry's last use and an entry
    without expiry said in words, steps in order, entries by creation."""
    import pandas as pd

    import dagnb
    from dagnb.cache import Store

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        # (Paris went from UTC+1 to UTC+2 at 01:00 UTC on 2024-03-31: between the first two)
        clock = iter([1_711_846_000.25, 1_711_847_000.75, 1_711_848_000.5, 1_711_849_000.0])
        memory = dagnb.Memory(tmp_path / "cache")
        now = [0.0]
        memory.store.clock = lambda: now[0]
        for name, ttl in (("b_step", None), ("a_step", "30d")):
            def work(x: int) -> int:
                return x

            work.__qualname__ = name
            cached = memory.cache(work, ttl=ttl)
            for x in (1, 2):
                now[0] = next(clock)
                cached(x)
        now[0] = 1_711_850_000.0
        cached(1)  # a hit
        monkeypatch.chdir(tmp_path)
        assert main(["cache", "list", "--cache-dir", "cache"]) == 0
        listed = capsys.readouterr().out
        store = Store(tmp_path / "cache", read_only=True)
        frame = store.entries()
        on_disk = [row["disk_bytes"] for row in store.entry_rows(on_disk=True)]

        def times(column: pd.Series, missing: str) -> pd.Series:
            shown = column.dt.strftime("%Y-%m-%d %H:%M:%S")
            return shown.where(~(column.isna() | (column.dt.year <= 1970)), missing)

        from dagnb.cli.cache import _size

        expected = pd.DataFrame({
            "step": frame["step"], "key": frame["key"], "size": [_size(size) for size in on_disk],
            "created": times(frame["created"], "-"), "last_used": times(frame["last_used"], "-"),
            "expires": times(frame["expires"], "never"),
        }).to_string(index=False)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert listed == expected + "\n"
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert [row[0].rsplit(".", 1)[1] for row in rows] == ["a_step"] * 2 + ["b_step"] * 2
    assert [row[4] for row in rows[2:]] == ["01:46:40", "03:03:20"]  # winter, then summer time
    assert [row[-2] for row in rows[:2]] == ["2024-04-30"] * 2  # a ttl of 30 days
    assert [row[-1] for row in rows[2:]] == ["never"] * 2
    assert not _imports_pandas(["cache", "list", "--cache-dir", str(tmp_path / "cache")],
                               tmp_path)  # (its import: 0.5 s)


def _imports_pandas(argv: list[str], cwd: Path) -> bool:
    """Whether ``dagnb ARGV``, run in a process of its own, imports pandas."""
    script = (f"import sys\nfrom dagnb.cli import main\nmain({argv!r})\n"
              "print('pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()[-1] == "True"


_DANGLING = ("is", "its", "if", "a", "an", "the", "of", "to", "this", "step's", "when", "alone")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(action.choices for action in parser._actions
                if isinstance(action, argparse._SubParsersAction))


def test_run_validate_and_graph_help_describe_every_option_and_take_notebooks():
    """`dagnb run --help` left --max-concurrency and --executor bare, said the cache
    folder defaults to .dagnb_cache (it is the cache_directory setting), and the
    command's description said YAML workflows only, though run, validate and graph read
    notebooks."""
    parser = build_parser()
    assert "notebooks" in parser.description and "``" not in parser.description
    commands = _subcommands(parser)
    for name in ("run", "validate", "graph"):
        bare = [a.dest for a in commands[name]._actions if not a.help]
        assert bare == [], (name, bare)
    cache_dir = next(a for a in commands["run"]._actions if a.dest == "cache_dir")
    assert "cache_directory setting" in cache_dir.help


def test_run_caches_in_the_cache_directory_setting_as_its_help_says(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # (the config search stops at the repository root)
    (tmp_path / "dagnb.yaml").write_text("workflow_defaults:\n  cache_directory: shared\n")
    (tmp_path / "w.yml").write_text("name: w\nsteps:\n  a:\n    run: echo a\n")
    done = dagnb("run", "w.yml", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "shared").is_dir() and not (tmp_path / ".dagnb_cache").exists()


def test_every_cache_option_help_is_a_whole_phrase(capsys):
    """push --check's help ended '...without it, a file is there if its size is'."""
    actions = _subcommands(_subcommands(build_parser())["cache"])
    for name, parser in actions.items():
        for option in parser._actions:
            last = (option.help or "x").rstrip(")").rsplit(" ", 1)[-1]
            assert last not in _DANGLING, (name, option.help)
    with pytest.raises(SystemExit):
        main(["cache", "push", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "without it, a file counts as there when its size is the one recorded" in text


def test_cache_stats_counts_entries_and_the_hits_recorded(tmp_path, monkeypatch, capsys):
    cache = _two_steps_cached(tmp_path, monkeypatch, capsys)
    assert main(["run", "w.yml", "--executor", "local"]) == 0  # (a hit each)
    capsys.readouterr()
    assert main(["cache", "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["entries", "hits", "size"]
    assert [line.split()[:3] for line in lines[2:4]] == [["load", "1", "1"], ["report", "1", "1"]]
    assert lines[-1] == "not counted: 1 run folder in .runs (the last runs' step folders)"
    from dagnb.cache import Store
    from dagnb.cli.cache import _size

    frame = Store(cache).stats()  # the table is laid out as pandas lays out the frame's
    # (bytes on disk: load's 3000 of output and its meta.json; report's pack record)
    assert frame.loc["load", "bytes"] > 3000 and frame.loc["report", "bytes"] > 0
    assert lines[-2] == f"2 cache entries, {_size(frame['bytes'].sum())} in {cache}"
    expected = frame[["entries", "hits"]].assign(size=frame["bytes"].map(_size)).to_string()
    assert "\n".join(lines[:-2]) == expected
    assert not _imports_pandas(["cache", "stats"], tmp_path)  # (its import: 0.35 s)


@pytest.mark.parametrize("names", [["a"], ["a_step_with_a_long_name", "b"], ["é", "z.y-x"]])
def test_cache_stats_lays_its_table_out_as_pandas_does(names):
    """`dagnb cache stats` prints its table without pandas, as pandas' ``to_string`` of
    the stats frame printed it: short and long step names, wide numbers, each size."""
    import pandas as pd

    from dagnb.cli.cache import _size, stats_table

    rows = {name: {"entries": 10 ** (3 * i), "hits": 7 * i, "bytes": 999 * 1000 ** i}
            for i, name in enumerate(names)}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.Index(frame.index, dtype="str", name="step")
    frame = frame.sort_index()  # (as Store.stats sorts it)
    expected = frame[["entries", "hits"]].assign(size=frame["bytes"].map(_size)).to_string()
    assert stats_table(rows) == expected


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_cache_clear_older_than_removes_the_older_entries_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text(TWO_STEPS)
    assert main(["run", "w.yml", "--executor", "local", "--target", "load"]) == 0
    time.sleep(1.2)
    assert main(["run", "w.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["cache", "clear", "--older-than", "1s"]) == 0
    assert "removed 1 cache entry created more than 1s ago" in capsys.readouterr().out
    assert _on_disk(tmp_path / ".dagnb_cache") == ["report"]


def test_a_bare_cache_clear_removes_nothing_and_asks_for_all(tmp_path, monkeypatch, capsys):
    cache = _two_steps_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", "clear"]) == 2
    assert capsys.readouterr().err == (
        f"dagnb: error: dagnb cache clear removes every entry in {str(cache)!r}; add --all to "
        "confirm, or --step NAME / --older-than AGE\n")
    assert _on_disk(cache) == ["load", "report"]
    assert main(["cache", "clear", "--all"]) == 0
    assert capsys.readouterr().out == f"removed 2 cache entries from {cache}\n"
    assert _on_disk(cache) == []


def test_cache_clear_of_a_step_it_does_not_hold_is_refused(tmp_path, monkeypatch, capsys):
    cache = _two_steps_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", "clear", "--step", "lod"]) == 2
    assert capsys.readouterr().err == (
        f"dagnb: error: --step 'lod': the cache in {str(cache)!r} holds no entries of that "
        "step; did you mean 'load'?\n")
    assert main(["cache", "clear", "--step", "zzz"]) == 2
    assert capsys.readouterr().err.endswith("; it holds entries of load, report\n")
    assert _on_disk(cache) == ["load", "report"]
    assert main(["cache", "clear", "--all"]) == 0
    capsys.readouterr()
    assert main(["cache", "clear", "--step", "lod"]) == 2  # (it said it twice, the same)
    assert capsys.readouterr().err == (  # (the folder's runs had load: the typo's fix)
        f"dagnb: error: --step 'lod': the cache in {str(cache)!r} holds no entries; did you "
        "mean 'load'?\n")


@pytest.mark.parametrize(("args", "message"), [
    (["clear", "--older-than", "banana"], "--older-than 'banana' is not a duration; use "
     "a number with a unit such as 2w (weeks), 30d (days), 12h (hours), 10m (minutes), "
     "30s (seconds) or 500ms"),
    (["prune", "--max-size", "-3"], "--max-size '-3' is not a size; use a number of bytes "
     "(0 or more), or one with a unit as `dagnb cache stats` prints it: 979B, 500K, 1.5M, "
     "10MB, 1GiB (B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, any case; 1K = 1024 bytes)"),
    (["prune", "--max-size", "lots"], "--max-size 'lots' is not a size"),
    (["prune", "--max-entries", "-1"], "--max-entries '-1' is not valid; expected a whole "
     "number >= 0"),
    (["prune", "--max-age", "soon"], "--max-age 'soon' is not a duration"),
    # (a bare number counted seconds: --older-than 30, meant to keep a month, cleared all)
    (["clear", "--older-than", "30"], "--older-than 30 has no unit; write 30d (days), 30h "
     "(hours), 30m (minutes) or 30s (seconds)"),
    (["prune", "--max-age", "7"], "--max-age 7 has no unit; write 7d (days)"),
    (["prune"], "dagnb cache prune needs a limit: --max-size SIZE (such as 1G), --max-entries "
     "N or --max-age AGE (such as 30d)"),
    (["clear", "--all", "--step", "load"], "--all clears every entry; give it alone"),
])
def test_cache_clear_and_prune_bad_values_are_one_line_and_lose_nothing(
        tmp_path, monkeypatch, capsys, args, message):
    cache = _two_steps_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"dagnb: error: {message}") and err.count("\n") == 1
    assert _on_disk(cache) == ["load", "report"]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_cache_prune_reads_the_sizes_cache_stats_prints(tmp_path: Path) -> None:
    """`dagnb cache stats` printed 73B and 2.9K; `prune --max-size 73B` and `1GB` were
    refused, though _size's docstring said --max-size reads what it prints."""
    (tmp_path / "w.yml").write_text(TWO_STEPS)
    assert dagnb("run", "w.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    stats = dagnb("cache", "stats", cwd=tmp_path)
    sizes = {line.split()[0]: line.split()[-1] for line in stats.stdout.splitlines()[2:4]}
    assert sorted(sizes) == ["load", "report"], stats.stdout
    from dagnb.cache import Store
    from dagnb.cache.eviction import parse_size

    on_disk = Store(tmp_path / ".dagnb_cache", read_only=True).stats()["bytes"]
    assert on_disk["load"] > parse_size(sizes["report"]) >= on_disk["report"]  # (rounded)
    for roomy in ("1GB", "1gb", "1GiB"):
        done = dagnb("cache", "prune", "--max-size", roomy, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (0, ""), roomy
    assert _on_disk(tmp_path / ".dagnb_cache") == ["load", "report"]
    done = dagnb("cache", "prune", "--max-size", sizes["report"], cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("removed 1 cache entry")
    assert _on_disk(tmp_path / ".dagnb_cache") == ["report"]


@pytest.mark.parametrize("command", [["clear", "--all"], ["prune", "--max-entries", "0"],
                                     ["list"], ["stats"]])
@pytest.mark.parametrize("given", [".", "typo_cache", "file:///tmp/some-store"])
def test_cache_commands_touch_no_folder_that_is_not_a_cache(tmp_path, command, given):
    """A project folder given as the cache (whose report/ holds entry-like folders), a
    folder that is not there, a store URL: one line, exit 2, every file stays (list and
    stats read a store URL: one that is not there is said so)."""
    entry_like = tmp_path / "report" / ("1" * 32)
    entry_like.mkdir(parents=True)
    (entry_like / "meta.json").write_text("{}")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.py").write_text("x = 1\n")
    done = dagnb("cache", *command, "--cache-dir", given, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    reads_urls = command in (["list"], ["stats"]) and "://" in given
    said = (f"cache {command[0]} {given}: there is no folder" if reads_urls
            else f"--cache-dir {given!r}")
    assert done.stderr.startswith(f"dagnb: error: {said}")
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "src"]
    assert (entry_like / "meta.json").read_text() == "{}"
    assert (tmp_path / "src" / "x.py").read_text() == "x = 1\n"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_cache_push_suggests_the_file_url_of_a_folder_and_refuses_a_memory_store(tmp_path):
    """`dagnb cache push /tmp/store` suggested only s3://... though file:///tmp/store
    works; `dagnb cache push memory://x` said "1 entry copied", exit 0, into memory gone
    as the command exited."""
    (tmp_path / "w.yml").write_text(TWO_STEPS)
    assert dagnb("run", "w.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    store = tmp_path / "store"
    store.mkdir()
    plain = dagnb("cache", "push", str(store), cwd=tmp_path)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1
    suggested = re.search(r"\(dagnb cache push (\S+)\)", plain.stderr)
    assert suggested is not None and suggested.group(1) == store.as_uri(), plain.stderr
    taken = dagnb("cache", "push", suggested.group(1), cwd=tmp_path)
    assert taken.returncode == 0 and "2 entries copied" in taken.stdout, taken.stderr
    for action in ("push", "pull"):
        done = dagnb("cache", action, "memory://x", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == (f"dagnb: error: dagnb cache {action} memory://x: a memory:// "
                               "store is gone when the command exits; name one that lasts "
                               "(file:///path/to/folder, s3://bucket/prefix)\n")
    assert _on_disk(tmp_path / ".dagnb_cache") == ["load", "report"]


@pytest.mark.parametrize("command", [["list"], ["stats"], ["clear", "--all"],
                                     ["prune", "--max-size", "1G"]])
def test_cache_commands_with_no_cache_yet_say_so_and_make_none(tmp_path, monkeypatch, capsys,
                                                                command):
    monkeypatch.chdir(tmp_path)
    assert main(["cache", *command]) == 0
    assert capsys.readouterr().out.startswith(f"no cache at {str(tmp_path / '.dagnb_cache')!r} "
                                              "yet: nothing to ")
    assert list(tmp_path.iterdir()) == []


MERGED = """
defaults: &slow
  timeout: 1m
  retries: 2
steps:
  a: &a
    <<: *slow
    timeout: 2m                # beside a merge: overrides the merged value
    run: echo a
  b:
    <<: *a
    needs: [a]
"""


def test_yaml_merge_keys_load_as_any_yaml_loader_reads_them(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text(MERGED)
    result = dagnb("validate", "--explain", "wf.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "# wf.yml: 2 steps, valid" in result.stdout
    graph = dagnb_load(tmp_path / "wf.yml")
    assert graph["a"].timeout == graph["b"].timeout == 120.0
    assert graph["b"].run == "echo a" and graph["b"].needs == ("a",)


@pytest.mark.parametrize("text", [
    "steps:\n  a: {run: 'true', <<: {timeout: 1m}, run: 'false'}\n",
    "defaults: &d {timeout: 1m}\nsteps:\n  a: {<<: *d, run: 'true'}\n  a: {run: 'true'}\n",
])
def test_a_key_written_twice_beside_a_merge_is_still_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "wf.yml").write_text(text)
    result = dagnb("validate", "wf.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "is given twice in one mapping; rename one" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(("module", "problem"), [
    ("import nonexistent_mod\n", "importing steps.py failed (ModuleNotFoundError: No module "
                                 "named 'nonexistent_mod' (steps.py, line 1)); install what "
                                 "it imports"),
    ("def f(:\n    pass\n", "(steps.py, line 1)); fix the module"),  # wording: Python's
    ("raise RuntimeError('no config')\n", "(RuntimeError: no config (steps.py, line 1)); "
                                           "fix the module"),
    ("import sys\nsys.exit(3)\n", "(SystemExit: 3 (steps.py, line 2)); fix the module"),
])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_python_step_module_that_fails_to_import_is_one_line(
        tmp_path: Path, module: str, problem: str, command: str) -> None:
    (tmp_path / "steps.py").write_text(module + "def f():\n    return 1\n")
    (tmp_path / "wf.yml").write_text("steps:\n  a: {python: 'steps.py:f'}\n")
    result = dagnb(command, "wf.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("dagnb: error: wf.yml: step 'a': python 'steps.py:f': ")
    assert problem in result.stderr and result.stderr.count("\n") == 1


def test_a_python_step_naming_a_file_that_is_not_python_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text("steps:\n  a: {python: '/etc/passwd:f'}\n")
    result = dagnb("validate", "wf.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("dagnb: error: wf.yml: step 'a': python '/etc/passwd:f' names "
                             "'/etc/passwd', which is not a .py file; name a Python module as "
                             "FILE.py:FUNCTION\n")


@pytest.mark.parametrize(("options", "message"), [
    (["-o", "out.ipynb"], "--output 'out.ipynb' applies to notebooks (the executed .ipynb), "
                          "not to the workflow 'wf.yml'; drop it"),
])
def test_notebook_options_are_refused_for_a_yaml_workflow(
        tmp_path: Path, options: list[str], message: str) -> None:
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'touch ran'}\n")
    result = dagnb("run", "wf.yml", *options, "--executor", "local", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / ".dagnb_cache").exists()  # refused before anything ran


@pytest.mark.parametrize(("options", "message"), [
    (["--only-failed"], "--only-failed applies to workflow files, not to the notebook 'nb.py'; "
                        "run it again without it"),
    (["--refresh"], "--refresh applies to workflow files, not to the notebook 'nb.py'; put "
                    "--refresh on the %%dagger cells"),
    (["--skip-cache"], "--skip-cache applies to workflow files"),
    (["--fail-fast"], "--fail-fast applies to workflow files, not to the notebook 'nb.py'; "
                      "drop it: a notebook run stops at the first cell that fails"),
    (["--no-use-circuit-breaker"], "--[no-]use-circuit-breaker applies to workflow files"),
])
def test_workflow_options_a_notebook_cannot_honour_are_refused_before_it_runs(
        tmp_path: Path, options: list[str], message: str) -> None:
    (tmp_path / "nb.py").write_text("# %%\n%load_ext dagnb\n\n# %%\n%%dagger a\ntouch ran\n")
    result = dagnb("run", "nb.py", *options, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / ".dagnb_cache").exists() and not (tmp_path / "ran").exists()


def test_output_cut_short_by_the_reader_is_no_traceback(tmp_path):
    done = subprocess.run(f"{sys.executable} -m dagnb.cli templates show pandas-etl | head -1",
                          shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.count("\n") == 1 and done.stderr == ""


def test_a_warning_is_one_line_with_no_source_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_TOKEN", "tok-9876543210")
    (tmp_path / "w.yml").write_text(
        "steps:\n  a:\n    secrets: [DEMO_TOKEN]\n"
        "    run: printf '%s' \"$DEMO_TOKEN\" > \"$DAGNB_OUT/t\"\n")
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "w.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    warned = [line for line in done.stderr.splitlines() if "warning" in line]
    assert done.returncode == 0 and len(warned) == 1, done.stderr
    assert warned[0].startswith("dagnb: warning: step 'a' ran but was not cached")
    assert "scheduler.py" not in done.stderr and "tok-9876543210" not in done.stderr


def test_a_command_in_a_removed_folder_says_so_in_one_line(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    done = subprocess.run(f"cd {gone} && rmdir {gone} && {sys.executable} -m dagnb.cli config "
                          "show", shell=True, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, (
        "dagnb: error: the current folder no longer exists (removed since the shell entered "
        "it); cd into an existing folder and run the command again\n"))


def test_a_warning_meant_for_a_notebook_is_not_prefixed_twice() -> None:
    from dagnb.cli import _one_line_warning

    said = _one_line_warning(UserWarning("dagnb: run record in '/c/.runs' not written: x"),
                             UserWarning, "history.py", 1)
    assert said == "dagnb: warning: run record in '/c/.runs' not written: x\n"


PIPED = ("steps:\n  quick: {run: echo quick}\n  quick2: {run: echo quick2}\n"
         "  slow: {needs: [quick], run: 'sleep 1; echo done > $DAGNB_OUT/s.txt'}\n"
         "  after: {needs: [slow], run: 'cat $DAGNB_IN/slow/s.txt'}\n")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_run_piped_into_head_runs_every_step_and_records_them(tmp_path):
    """The reader leaves after one line: printing stops, quietly; the run does not."""
    (tmp_path / "w.yml").write_text(PIPED)
    done = subprocess.run(f"{sys.executable} -m dagnb.cli run w.yml --executor local | head -1",
                          shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr
    record = (tmp_path / ".dagnb_cache" / ".runs" / "records.jsonl").read_text().splitlines()[-1]
    assert set(json.loads(record)["states"].values()) == {"succeeded"}, record
    again = dagnb("run", "w.yml", "--only-failed", "--executor", "local", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to re-run" in again.stdout


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_run_whose_stdout_is_full_says_so_in_one_line_and_still_runs(tmp_path):
    (tmp_path / "w.yml").write_text(PIPED)
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--executor",
                               "local"], cwd=tmp_path, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert errors == [errors[0]] and "stdout could not be written (No space left on device)" \
        in errors[0] and "4 succeeded" in errors[0]


SECRET_URL = "s3://AKIAUSER:s3cr3tVALUE@bucket/p"


@pytest.mark.parametrize("command", [["run", "w.yml"], ["cache", "verify"], ["images", "list"],
                                     ["cache", "push", "file:///tmp/x"]])
def test_a_cache_dir_url_with_a_password_is_refused_without_showing_it(tmp_path, command):
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: echo hi}\n")
    done = dagnb(*command, "--cache-dir", SECRET_URL, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("dagnb: error: --cache-dir 's3://***@bucket/p' is not valid; expected "
                           "a URL without user or password; the store library reads "
                           "credentials from the environment or a profile\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.yml"]  # nothing ran or was made


@pytest.mark.parametrize("command", [["run", "w.yml"], ["cache", "pull", "file:///nowhere"]])
def test_a_project_folder_is_refused_as_a_cache_and_its_files_stay(tmp_path, command):
    """--cache-dir . in a project: refused before anything is made there, so that cache
    verify never takes the user's report/ (named like a step) for a damaged entry."""
    notes = tmp_path / "report" / "2024" / "notes.md"
    notes.parent.mkdir(parents=True)
    notes.write_text("my notes\n")
    (tmp_path / "w.yml").write_text("steps:\n  report: {run: 'echo hi > $DAGNB_OUT/r.txt'}\n")
    done = dagnb(*command, "--cache-dir", ".", cwd=tmp_path)
    folder = str(tmp_path.resolve())
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"dagnb: error: cache directory {folder!r} holds other files and is not a dagnb cache "
        "(nothing dagnb makes, such as .runs or .packs, in it); name a new or empty folder, "
        f"such as {folder + '/.dagnb_cache'!r}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "w.yml"]
    assert dagnb("cache", "verify", "--cache-dir", ".", cwd=tmp_path).returncode == 2
    assert notes.read_text() == "my notes\n"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("folder", ["new", "empty"])
def test_a_new_or_empty_cache_folder_becomes_a_cache_run_and_verify_accept(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: 'echo hi > $DAGNB_OUT/a.txt'}\n")
    common = ["--cache-dir", folder, "--executor", "local"]
    assert dagnb("run", "w.yml", *common, cwd=tmp_path).returncode == 0
    again = dagnb("run", "w.yml", *common, cwd=tmp_path)
    assert again.returncode == 0 and "1 cached" in again.stdout, again.stderr
    verified = dagnb("cache", "verify", "--cache-dir", folder, cwd=tmp_path)
    assert verified.returncode == 0 and "all intact" in verified.stdout


def _cache_holding(tmp_path: Path, kind: str) -> None:
    """``tmp_path / 'c'`` as a user may have it: hidden files of theirs only, or a cache
    copied without its hidden folders (entries only)."""
    folder = tmp_path / "c"
    if kind == "entries":
        assert dagnb("run", "w.yml", "--cache-dir", "made", "--executor", "local",
                     cwd=tmp_path).returncode == 0
        shutil.copytree(tmp_path / "made" / "a", folder / "a")
    else:
        folder.mkdir()
        (folder / kind).write_text("*\n")


@pytest.mark.parametrize("kind", [".gitignore", ".DS_Store", "entries"])
def test_a_cache_folder_with_hidden_files_or_entries_only_is_a_cache(tmp_path, kind):
    """Not refused as a project folder: a .gitignore or .DS_Store of the user's, a cache
    copied without its hidden folders (its entries served)."""
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: 'echo hi > $DAGNB_OUT/a.txt'}\n")
    _cache_holding(tmp_path, kind)
    done = dagnb("run", "w.yml", "--cache-dir", "c", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("1 cached" if kind == "entries" else "1 succeeded") in done.stdout


def test_a_read_only_run_takes_any_folder_and_a_project_file_named_like_dagnbs_is_no_cache(
        tmp_path):
    """``images.json`` (dagnb's image pins) is also a common name in a project: beside
    the project's other files it does not make the folder a cache; a read-only run
    writes nothing, so any folder will do."""
    (tmp_path / "w.yml").write_text("steps:\n  report: {run: 'echo hi > $DAGNB_OUT/r.txt'}\n")
    (tmp_path / "images.json").write_text("[]\n")
    (tmp_path / "report").mkdir()
    refused = dagnb("run", "w.yml", "--cache-dir", ".", "--executor", "local", cwd=tmp_path)
    assert refused.returncode == 2 and "holds other files" in refused.stderr
    read_only = dagnb("run", "w.yml", "--cache-dir", ".", "--cache-mode", "read-only",
                      "--executor", "local", cwd=tmp_path)
    assert read_only.returncode == 0, read_only.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.json", "report", "w.yml"]


def test_a_password_holding_a_slash_is_refused_and_never_shown(tmp_path):
    """AWS secret keys hold '/': not encoded, it ended what was taken for the user and
    password, and the URL went through, the key printed in warnings."""
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: echo hi}\n")
    done = dagnb("run", "w.yml", "--cache-dir", "s3://AKIA:wJalr/K7MDENG@bucket/p",
                 cwd=tmp_path)
    assert done.returncode == 2 and "s3://***@bucket/p" in done.stderr
    assert "wJalr" not in done.stderr + done.stdout and "K7MDENG" not in done.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["graph", "w.yml"], ["config", "show"]])
def test_any_command_whose_stdout_is_full_or_closed_ends_in_one_line(tmp_path, command):
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: echo hi}\n")
    argv = [sys.executable, "-m", "dagnb.cli", *command]
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, cwd=tmp_path, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "dagnb: error: No space left on device (writing the output)\n"
    closed = subprocess.run(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, timeout=60,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr


@pytest.mark.parametrize(("field", "message"), [
    ("tags: 5", "step 'a': tags is 5, not a list; write it like tags: [a, b]"),
    ("services: 5", "step 'a': services is 5, not a list; write it like services: [a, b]"),
    ("exclude: 5", "step 'a': exclude is 5, not a list; write it like exclude: ['*.tmp']"),
    ("needs: {a: 1}", "step 'a': needs is a mapping, not a list; write it like needs: [a, b]"),
    ("secrets: {TOKEN: s3cr3t-v4lue}", "step 'a': secrets is a mapping, not a list; write it "
     "like secrets: [API_TOKEN] (the values stay in the environment)"),
])
def test_a_field_of_names_given_no_list_names_the_field(tmp_path, field, message):
    (tmp_path / "t.yml").write_text(f"steps:\n  a:\n    run: echo\n    {field}\n")
    done = dagnb("validate", "t.yml", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"dagnb: error: t.yml: {message}\n"


def test_images_list_of_a_missing_folder_says_so_and_makes_none(tmp_path):
    done = dagnb("images", "list", "--cache-dir", "typo_dir", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("dagnb: error: --cache-dir 'typo_dir': there is no folder ")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "typo_dir").exists()
    (tmp_path / "cache").mkdir()
    listed = dagnb("images", "list", "--cache-dir", "cache", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith(
        f"no pinned images in {str(tmp_path / 'cache' / 'images.json')!r}; with pin_images: "
        "true (dagnb.yaml's workflow_defaults, or DAGNB_PIN_IMAGES=true) a run pins")


def test_a_folder_with_one_entry_like_child_among_a_users_files_is_no_cache(tmp_path):
    """Every child of a would-be step folder must be an entry (the first one listed
    decided: verify then set the user's plots aside), and a copied step folder with a
    stray file of the user's is not entries only."""
    experiments = tmp_path / "v" / "experiments"
    for digit in "1234567":  # (run ids the user's tool names by a hash)
        (experiments / (digit * 32)).mkdir(parents=True)
        (experiments / (digit * 32) / "meta.json").write_text("{}")
    (experiments / "plots").mkdir()
    (experiments / "plots" / "fig.png").write_bytes(b"png")
    done = dagnb("cache", "verify", "--cache-dir", "v", cwd=tmp_path)
    assert done.returncode == 2 and (experiments / "plots" / "fig.png").exists()
    assert not (tmp_path / "v" / ".damaged").exists()


def test_validate_explain_shows_a_python_step_as_written(tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text("def f():\n    return 1\n")
    (tmp_path / "wf.yml").write_text("workflow_defaults: {timeout_seconds: 60}\nsteps:\n"
                                     "  - {name: a, python: 'steps.py:f'}\n"
                                     "  - {name: b, command: echo hi, depends_on: [a]}\n")
    result = dagnb("validate", "--explain", "wf.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  a:\n    python: steps.py:f\n    timeout: 60.0\n" in result.stdout
    assert "  b:\n    run: echo hi\n" in result.stdout


_PARAM_WORKFLOW = (
    "defaults: {params: {rows: 3}}\n"
    "steps:\n"
    "  make: {run: 'seq \"$DAGNB_PARAM_ROWS\" > \"$DAGNB_OUT/n.txt\"'}\n"
    "  count:\n"
    "    needs: [make]\n"
    "    params: {label: a}\n"
    "    run: 'echo \"$DAGNB_PARAM_LABEL $(wc -l < $DAGNB_IN/make/n.txt)\" >> seen'\n"
)


def test_a_workflow_param_given_on_the_command_line_misses_only_the_steps_that_have_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--param label reaches count (its own param), --param rows every step (the
    defaults'): the steps whose value changed run again, the others come from the cache,
    and a value given again (or the file's own, read as the file reads it) hits."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(_PARAM_WORKFLOW)
    seen = tmp_path / "seen"

    def run(*params: str) -> tuple[dict[str, str], str]:
        options = [item for param in params for item in ("--param", param)]
        assert main(["run", "wf.yml", "--executor", "local", *options]) == 0
        lines = capsys.readouterr().out.splitlines()
        states = {line.split()[0]: line.split()[1] for line in lines
                  if line.split()[:1] in (["make"], ["count"])}
        return states, lines[-1]

    assert run("label=x") == ({"make": "succeeded", "count": "succeeded"},
                              'params given: label="x" for count')
    assert run("label=y")[0] == {"make": "cached", "count": "succeeded"}
    assert run("label=x")[0] == {"make": "cached", "count": "cached"}
    assert run("rows=5", "label=x") == ({"make": "succeeded", "count": "succeeded"},
                                        'params given: rows=5 for make, count; label="x" '
                                        "for count")
    assert run("rows=3", "label=x")[0] == {"make": "cached", "count": "cached"}  # the file's 3
    assert seen.read_text() == "x 3\ny 3\nx 5\n"


@pytest.mark.parametrize(("param", "message"), [
    ("rowz=5", "--param 'rowz': no step of 'wf.yml' has a param 'rowz'; its params are "
               "label, rows; did you mean 'rows'?"),
    ("rows5", "--param 'rows5' is not NAME=VALUE; write it like rows=100"),
    ("rows=*.csv", "--param 'rows=*.csv': the value does not read as YAML"),
])
def test_a_workflow_param_no_step_has_or_not_name_value_is_refused_and_nothing_runs(
        tmp_path: Path, param: str, message: str) -> None:
    (tmp_path / "wf.yml").write_text(_PARAM_WORKFLOW)
    for command in ("run", "validate"):
        result = dagnb(command, "wf.yml", "--param", param, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith(f"dagnb: error: {message}")
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / ".dagnb_cache").exists() and not (tmp_path / "seen").exists()


def test_a_param_for_a_workflow_of_no_params_says_where_to_declare_it(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'touch ran'}\n")
    result = dagnb("run", "wf.yml", "-p", "count=10", "--executor", "local", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, (
        "dagnb: error: --param 'count': no step of 'wf.yml' has params; declare it in a "
        "step's params (or under defaults: params:) to set it from the command line\n"))
    assert not (tmp_path / ".dagnb_cache").exists() and not (tmp_path / "ran").exists()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_validate_checks_a_workflow_with_the_params_given(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text(_PARAM_WORKFLOW)
    valid = dagnb("validate", "wf.yml", "-p", "rows=7", cwd=tmp_path)
    assert valid.stdout == "wf.yml: 2 steps, valid\nparams given: rows=7 for make, count\n"
    too_long = dagnb("validate", "wf.yml", "-p", f"rows={'x' * 40_000}", cwd=tmp_path)
    assert too_long.returncode == 2
    assert "step 'make': param 'rows' is too long for $DAGNB_PARAM_ROWS" in too_long.stderr
    (tmp_path / "nb.py").write_text("# %%\n%load_ext dagnb\n\n# %%\n%%dagger a\ntrue\n")
    notebook = dagnb("validate", "nb.py", "-p", "rows=7", cwd=tmp_path)
    assert (notebook.returncode, notebook.stderr) == (2, (
        "dagnb: error: validate --param applies to workflow files; the notebook 'nb.py' reads "
        "its parameters cell when it runs: dagnb run NOTEBOOK --param ...\n"))


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_workflow_param_holding_a_secret_is_refused_and_shown_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_TOKEN", "tok-9876543210")
    (tmp_path / "wf.yml").write_text(
        "steps:\n  a: {run: 'true', secrets: [DEMO_TOKEN], params: {who: me, n: 1}}\n")
    # a run would write it in clear to the step's params file: refused, as validate does
    for command in (["run", "--executor", "local"], ["validate"]):
        ran = dagnb(*command, "wf.yml", "-p", "who=tok-9876543210", cwd=tmp_path)
        assert (ran.returncode, ran.stderr) == (2, (
            "dagnb: error: step 'a': param 'who' holds the value of secret 'DEMO_TOKEN', "
            "which would be written in clear to the step's params file in the cache folder; "
            "read the secret from the environment inside the step instead "
            "(os.environ['DEMO_TOKEN'] in a function, \"$DEMO_TOKEN\" in a command), with "
            "'DEMO_TOKEN' in its secrets\n")), command
    assert not (tmp_path / ".dagnb_cache").exists()
    refused = dagnb("run", "wf.yml", "-p", "n=tok-9876543210: x", cwd=tmp_path)
    assert refused.returncode == 2 and "'n=***: x'" in refused.stderr
    assert "9876543210" not in ran.stdout + ran.stderr + refused.stdout + refused.stderr


def test_a_short_secret_given_as_a_param_is_shown_masked_as_a_word(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret under 6 characters (a PIN) is not refused as a param ('dev' is too
    common), but the line saying which params were given, and the one refusing a value,
    showed it in clear; a longer number holding it is shown as it is."""
    monkeypatch.setenv("DEMO_PIN", "4711")
    (tmp_path / "wf.yml").write_text(
        "steps:\n  a: {run: 'true', secrets: [DEMO_PIN], params: {pin: 0, build: 0}}\n")
    ran = dagnb("run", "--executor", "local", "wf.yml", "-p", "pin=4711", "-p", "build=147112",
                cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1] == "params given: pin=*** for a; build=147112 for a"
    refused = dagnb("run", "wf.yml", "-p", "pin=4711: x", cwd=tmp_path)
    assert refused.returncode == 2 and "'pin=***: x'" in refused.stderr
    assert "=4711" not in ran.stdout + ran.stderr + refused.stdout + refused.stderr


def test_a_workflow_env_value_holding_a_secret_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An env value counts in the step's cache key and reaches a container as a plain
    variable: one written with a secret's value is warned of in one line, and runs."""
    monkeypatch.setenv("DEMO_TOKEN", "tok-9876543210")
    (tmp_path / "wf.yml").write_text(
        "steps:\n  a: {run: 'touch ran', secrets: [DEMO_TOKEN], env: {TOKEN: tok-9876543210}}\n")
    ran = dagnb("run", "--executor", "local", "wf.yml", cwd=tmp_path)
    assert ran.returncode == 0 and (tmp_path / "ran").exists(), ran.stderr
    said = [line for line in ran.stderr.splitlines() if "holds the value" in line]
    assert said == [
        "dagnb: warning: step 'a': env 'TOKEN' holds the value of secret 'DEMO_TOKEN': it "
        "counts in the step's cache key and reaches a container as a plain variable, not a "
        "secret; if it is one, declare TOKEN under the step's secrets (set in the environment), or "
        "build it in the step from $DEMO_TOKEN"], ran.stderr
    assert "9876543210" not in ran.stderr + ran.stdout


_STEPS_MODULE = """\
import json
from pathlib import Path

import dagnb


def load(n: int = 3):
    return list(range(n))


def save(**kwargs):
    Path(__file__).with_name("seen.json").write_text(json.dumps(kwargs))


def read(path="data.json", **read_opts):
    return json.loads('{"a": 1}', **read_opts)  # (options for the reader, as pandas')


def _param(name):
    return dagnb.current().params[name]


def reads_its_params():
    Path(__file__).with_name("seen.json").write_text(json.dumps(_param("run-id")))
"""


@pytest.mark.parametrize("command", [["run", "--executor", "local"], ["validate"]])
def test_a_param_a_python_steps_function_does_not_take_is_warned_of_naming_the_fix(
        tmp_path: Path, command: list[str]) -> None:
    """`nn` meant for load(n) was dropped: the step ran with n's default (rc 0), and
    `-p nn=20` reran it to the same result. A warning, not a refusal: a helper the check
    cannot read (an installed package's) may read it."""
    (tmp_path / "steps.py").write_text(_STEPS_MODULE)
    (tmp_path / "wf.yml").write_text("steps:\n  load: {python: 'steps.py:load', "
                                     "params: {nn: 10, count: 5, run-id: 1}}\n")
    done = dagnb(*command, "wf.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if "warning" in line] == [
        f"dagnb: warning: wf.yml: step 'load': param {name!r} is not a parameter of load() "
        f"in steps.py, which may never see it; {hint}"
        for name, hint in [
            ("nn", "did you mean 'n'? (or read it with dagnb.current().params['nn'])"),
            ("count", "add count to its parameters, or read it with "
                      "dagnb.current().params['count']"),
            ("run-id", "read it with dagnb.current().params['run-id']")]], done.stderr


def test_a_helper_in_an_installed_package_reading_the_params_runs_with_a_warning(
        tmp_path: Path) -> None:
    """The check's walk does not enter installed packages: a step reading its params
    through one was refused (exit 2), though it ran right before."""
    site = tmp_path / "site"
    (site / "corp_lib-1.0.dist-info").mkdir(parents=True)
    (site / "corp_lib-1.0.dist-info" / "METADATA").write_text("Name: corp_lib\nVersion: 1.0\n")
    (site / "corp_lib.py").write_text(
        "import dagnb\n\ndef param(name):\n    return dagnb.current().params[name]\n")
    (tmp_path / "steps.py").write_text(
        "from pathlib import Path\nfrom corp_lib import param\n\ndef job():\n"
        "    Path(__file__).with_name('seen.txt').write_text(param('table'))\n")
    (tmp_path / "wf.yml").write_text(
        "steps:\n  s: {python: 'steps.py:job', params: {table: orders}}\n")
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "--executor", "local",
                           "wf.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(site), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "seen.txt").read_text() == "orders"
    assert [line for line in done.stderr.splitlines() if "warning" in line] == [
        "dagnb: warning: wf.yml: step 's': param 'table' is not a parameter of job() in "
        "steps.py, which may never see it; add table to its parameters, or read it with "
        "dagnb.current().params['table']"]


def test_a_kwargs_function_gets_only_the_params_it_names_and_is_not_warned_of(
        tmp_path: Path) -> None:
    """`**read_opts` got the defaults' `region`, meant for the shell step, and the reader
    raised TypeError; the params a function does not name go to no `**kwargs`. Nor is a
    function whose helper reads dagnb.current().params warned of."""
    (tmp_path / "steps.py").write_text(_STEPS_MODULE)
    (tmp_path / "wf.yml").write_text(
        "defaults: {params: {region: eu}}\nsteps:\n"
        "  extract: {run: 'echo \"$DAGNB_PARAM_REGION\" > \"$DAGNB_OUT/r.txt\"'}\n"
        "  read: {python: 'steps.py:read', params: {path: x.json}}\n"
        "  save: {python: 'steps.py:save', params: {label: a}}\n")
    done = dagnb("run", "--executor", "local", "wf.yml", "-p", "label=b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "seen.json").read_text()) == {}
    assert "warning" not in done.stderr
    (tmp_path / "wf.yml").write_text(
        "steps:\n  read: {python: 'steps.py:reads_its_params', params: {run-id: 8}}\n")
    done = dagnb("run", "--executor", "local", "wf.yml", cwd=tmp_path)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    assert json.loads((tmp_path / "seen.json").read_text()) == 8


def test_a_notebook_param_its_parameters_cell_does_not_assign_is_refused_before_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`dagnb run analysis.py -p rowz=10` ran the notebook with rows=5, rc 0, saying
    nothing; a workflow refuses such a name, and papermill warns."""
    monkeypatch.chdir(tmp_path)
    cells = '# %%\n%load_ext dagnb\n\n# %%\n%%dagger prep --param rows=$rows\ntrue\n'
    (tmp_path / "nb.py").write_text(cells.replace(
        "\n\n# %%\n%%dagger", '\n\n# %% tags=["parameters"]\nrows = 5\nlabel = "x"\n\n'
        "# %%\n%%dagger"))
    assert main(["run", "nb.py", "-p", "rows=7", "-p", "rowz=10"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: --param 'rowz': the parameters cell of 'nb.py' assigns no 'rowz'; "
        "its parameters are label, rows; did you mean 'rows'?\n")
    assert not (tmp_path / ".dagnb_cache").exists()


@pytest.mark.slow
def test_a_notebook_without_a_parameters_cell_takes_the_param_with_a_warning(
        tmp_path: Path) -> None:
    """With no cell tagged `parameters`, `-p` was refused (exit 2), where papermill (and
    dagnb before) put the value in a cell at the top."""
    (tmp_path / "bare.py").write_text("# %%\nprint('rows is', rows)\n")
    done = dagnb("run", "bare.py", "-p", "rows=7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rows is 7" in done.stdout
    assert [line for line in done.stderr.splitlines() if "warning" in line] == [
        "dagnb: warning: --param 'rows': no cell of 'bare.py' is tagged 'parameters', so the "
        "values are set in a cell put at the top, which a later assignment overwrites; tag "
        "the cell that assigns its parameters 'parameters' (papermill's convention)"]


@pytest.mark.slow
def test_a_notebook_text_parameter_keeps_the_text_typed(tmp_path: Path) -> None:
    """`-p version=3.10` for `version = "3.9"` made the number 3.1 (JSON read it)."""
    (tmp_path / "nb.py").write_text(
        '# %% tags=["parameters"]\nversion = "3.9"\nrows = 5\n\n'
        "# %%\nprint('seen', repr(version), repr(rows))\n")
    done = dagnb("run", "nb.py", "-p", "version=3.10", "-p", "rows=7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "seen '3.10' 7" in done.stdout
    done = dagnb("run", "nb.py", "-p", 'version="3.10"', "-p", "rows=7.0", cwd=tmp_path)
    assert "seen '3.10' 7.0" in done.stdout, done.stderr


_TYPED_PARAMS = ("steps:\n  s:\n    params: {text: x, number: 5, f: 2.5}\n"
                 "    run: echo \"[$DAGNB_PARAM_TEXT]\" > \"$DAGNB_OUT/o\"\n")


@pytest.mark.parametrize("given", [
    "3.10", "0755", "yes", "on", "~", "", "2024-01-01", "5", "#alerts", "hello # note",
    "&a x", "!!int 5", " a ", "*.csv", "a: b", "[a, b]", "null", '"unclosed',
])
def test_a_param_the_file_gives_as_text_is_the_text_as_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        given: str) -> None:
    """YAML made 3.10 the number 3.1, 0755 493, yes true, ~ and nothing null, `#alerts`
    null (a comment), `hello # note` hello, `&a x` x, though the file's value is text."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(_TYPED_PARAMS)
    assert main(["validate", "wf.yml", "-p", f"text={given}"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"params given: text={json.dumps(given)} for s", err


@pytest.mark.parametrize(("given", "read"), [('"3.10"', '"3.10"'), ("'3.10'", '"3.10"'),
                                             ('"a # b"', '"a # b"')])
def test_a_quoted_value_for_a_text_param_is_read_as_quoted_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        given: str, read: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(_TYPED_PARAMS)
    assert main(["validate", "wf.yml", "-p", f"text={given}"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"params given: text={read} for s"


@pytest.mark.parametrize(("name", "given", "read"), [
    ("f", "0.50", "0.5"), ("f", "1.0e-4", "0.0001"), ("f", "1.5e+3", "1500.0"),
    ("f", "100.", "100.0"), ("f", "1e-3", "0.001"), ("f", "1E6", "1000000.0"),
    ("number", "3.10", "3.1"), ("number", "0755", "755"),  # (YAML 1.2's, as README says)
    ("number", "yes", '"yes"'), ("number", "~", "null"), ("number", "7", "7"),
    ("number", "[1, 2]", "[1, 2]"), ("number", "abc", '"abc"'), ("number", '"0755"', '"0755"'),
])
def test_a_param_the_file_does_not_give_as_text_reads_as_yaml_as_it_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, given: str, read: str) -> None:
    """`-p f=0.50` (and 1.0e-4, 100.) was refused for a number param: `reads as the
    number 0.5 in YAML`. Read as YAML reads it, as before, with no word."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(_TYPED_PARAMS)
    assert main(["validate", "wf.yml", "-p", f"{name}={given}"]) == 0
    out, err = capsys.readouterr()
    assert (out.splitlines()[-1], err) == (f"params given: {name}={read} for s", "")


def test_a_secret_given_to_a_number_param_is_refused_before_yaml_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`-p number=$API_TOKEN`, a hex token: YAML read it as a number, which the check of
    a param's value did not recognise, so it went in decimal to the params file and the
    line of the params given (a reviewer's find; `[0x...]` too). The text given is
    checked before it is read, and refused as a param holding a secret is."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_TOKEN", "0x1f2e3d4c5b6a7988")
    (tmp_path / "wf.yml").write_text(_TYPED_PARAMS.replace("params:", "secrets: [API_TOKEN]\n"
                                                           "    params:"))
    for command in (["validate", "wf.yml"], ["run", "wf.yml", "--executor", "local"]):
        for given in ("number=0x1f2e3d4c5b6a7988", "number=[0x1f2e3d4c5b6a7988]"):
            assert main([*command, "-p", given]) == 2, (command, given)
            out, err = capsys.readouterr()
            assert err == (
                "dagnb: error: --param 'number' holds the value of secret 'API_TOKEN', which "
                "would be written to the step's params file in the cache folder; read the "
                "secret from the environment inside the step instead "
                "(os.environ['API_TOKEN'] in a function, \"$API_TOKEN\" in a command), "
                "with 'API_TOKEN' in its secrets\n")
            assert str(0x1f2e3d4c5b6a7988) not in out + err
    assert not (tmp_path / ".dagnb_cache").exists()


def test_a_text_param_runs_with_the_text_as_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(_TYPED_PARAMS)
    assert main(["run", "wf.yml", "--executor", "local", "-p", "text=3.10 # v"]) == 0
    outputs = next((tmp_path / ".dagnb_cache").rglob("o"))
    assert outputs.read_text() == "[3.10 # v]\n"


_TEXT_ITEMS = ("steps:\n  s:\n    params: {pythons: ['3.10', '3.11'], images: {lin: '3.10'}, "
               "nums: [1, 2]}\n    run: 'true'\n")


@pytest.mark.parametrize(("name", "given", "read"), [
    ("pythons", "[3.10, 3.12]", '["3.10", "3.12"]'),
    ("pythons", "[yes, ~, 0755, 2024-01-01, a]", '["yes", "~", "0755", "2024-01-01", "a"]'),
    ("pythons", "[1e-3, a]", '["1e-3", "a"]'), ("nums", "[1e-3, 2]", "[0.001, 2]"),
    ("pythons", "['3.10', \"3.12\", !!float 3.14]", '["3.10", "3.12", 3.14]'),
    ("images", "{lin: 3.10, mac: '3.12', win: yes}",
     '{"lin": "3.10", "mac": "3.12", "win": "yes"}'),
    ("nums", "[3.10, 2]", "[3.1, 2]"), ("pythons", "3.10", "3.1"),
    ("images", "[3.10]", "[3.1]"),
])
def test_a_list_or_map_the_file_gives_as_text_items_keeps_them_as_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, given: str, read: str) -> None:
    """`-p 'pythons=[3.10, 3.12]'` for `pythons: ["3.10", "3.11"]` made [3.1, 3.12]: the
    items YAML reads as no text are kept as typed, as a text param's value is; quoted
    or tagged ones, and params the file gives otherwise, read as YAML reads them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(_TEXT_ITEMS)
    assert main(["validate", "wf.yml", "-p", f"{name}={given}"]) == 0
    out, err = capsys.readouterr()
    assert (out.splitlines()[-1], err) == (f"params given: {name}={read} for s", "")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_history_lists_the_recorded_runs_of_every_workflow_or_of_one(
        tmp_path: Path) -> None:
    """Outside a notebook, the runs were only in .runs/records.jsonl: no command listed
    them (%dagger history is the notebook's)."""
    flaky = tmp_path / "flaky.yml"
    flaky.write_text("defaults: {params: {n: 1}}\nsteps:\n  ok: {run: 'true'}\n"
                     "  bad: {run: 'exit 3', needs: [ok]}\n  after: {run: 'true', needs: [bad]}\n")
    assert dagnb("history", cwd=tmp_path).stdout == (
        f"no run recorded in {str(tmp_path / '.dagnb_cache')!r} (dagnb run records each; "
        "--cache-dir names another cache folder)\n")
    dagnb("run", str(EXAMPLE), "--executor", "local", cwd=tmp_path)
    assert dagnb("run", str(flaky), "-p", "n=2", cwd=tmp_path).returncode == 1
    dagnb("run", str(EXAMPLE), "--executor", "local", cwd=tmp_path)
    every = dagnb("history", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    header, *rows = [line.split() for line in every.stdout.splitlines()]
    assert header == ["run", "finished", "workflow", "steps", "succeeded", "cached", "failed",
                      "skipped", "cancelled", "params"]
    assert [row[3:] for row in rows] == [  # (the run id, the date and time before)
        ["example_workflow.yml", "5", "5", "0", "0", "0", "0"],
        ["flaky.yml", "3", "1", "0", "1", "1", "0", '{"n":2}'],
        ["example_workflow.yml", "5", "0", "5", "0", "0", "0"]]
    one = dagnb("history", str(flaky), cwd=tmp_path).stdout.splitlines()
    assert len(one) == 2 and one[1].split()[0] == rows[1][0]
    last = dagnb("history", "--last", "1", cwd=tmp_path).stdout.splitlines()
    assert last[1].split()[0] == rows[2][0]
    assert not _imports_pandas(["history"], tmp_path)  # (its import: 0.5 s)
    assert last[2] == "(the last 1 of 3 runs; --last all shows every one)"
    typo = dagnb("history", "--cache-dir", "nonexist", cwd=tmp_path)
    assert (typo.returncode, typo.stderr) == (2, (
        f"dagnb: error: --cache-dir 'nonexist': there is no folder "
        f"{str(tmp_path / 'nonexist')!r}; name the folder dagnb run caches in (the setting "
        "cache_directory)\n"))
    refused = dagnb("history", "--last", "none", cwd=tmp_path)
    assert (refused.returncode, refused.stderr) == (
        2, "dagnb: error: --last 'none' is not valid; expected a whole number >= 1, or all "
           "(every run)\n")  # (all is taken too: the error says so)


def _padded_with_other_runs(tmp_path: Path, count: int) -> Path:
    """The records log of a real run of wf.yml (its step printing), then ``count`` runs
    of other workflows recorded after it."""
    from dagnb.runtime.history import RECORDS_NAME, _append_record

    (tmp_path / "wf.yml").write_text("steps:\n  talk: {run: 'echo one; echo two'}\n")
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    log = tmp_path / ".dagnb_cache" / ".runs" / RECORDS_NAME
    for i in range(count):
        _append_record(log, {"run": f"other-{i}", "graph": "other", "finished": time.time(),
                             "source": str(tmp_path / f"other{i}.yml"), "states": {"x": "failed"}})
    return log


def _records_parsed(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The run records parsed from now on, by ``json.loads`` or by the history's own
    decoder of log lines (other JSON it reads aside)."""
    given: list[object] = []

    def counting(parse: Any) -> Any:
        def counted(text: str | bytes, *args: object, **kwargs: object) -> object:
            if b'"states"' in (text if isinstance(text, bytes) else text.encode()):
                given.append(text)
            return parse(text, *args, **kwargs)
        return counted

    monkeypatch.setattr(json, "loads", counting(json.loads))
    monkeypatch.setattr(history, "_DECODE", counting(history._DECODE))
    return given


def test_dagnb_history_last_n_parses_only_the_n_records_it_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """With thousands of runs recorded, dagnb history parsed every record to show 20."""
    monkeypatch.chdir(tmp_path)
    _padded_with_other_runs(tmp_path, 300)
    capsys.readouterr()
    parsed = _records_parsed(monkeypatch)
    assert main(["history", "--last", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:-1]] == [f"other-{i}" for i in range(295, 300)]
    assert out[-1] == "(the last 5 of 301 runs; --last all shows every one)"
    assert len(parsed) == 5


def test_dagnb_history_masks_the_secrets_in_the_params_as_dagnb_run_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """dagnb run said code="***", and dagnb history printed {"code":"4711"}: a declared
    secret's value (short, as a PIN) and the registry's, in clear on the terminal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIN", "4711")
    monkeypatch.setenv("REGISTRY_PW", "9z8y")
    (tmp_path / "dagnb.yml").write_text("container_credentials: {username: me, "
                                        "password_env: REGISTRY_PW}\n")
    (tmp_path / "w.yml").write_text("steps:\n  a: {secrets: [PIN], params: {code: '0', "
                                    "note: ''}, run: 'true'}\n")
    assert main(["run", "w.yml", "--executor", "local", "-p", "code=4711",
                 "-p", "note=9z8y"]) == 0
    capsys.readouterr()
    for argv in (["history", "w.yml"], ["history"]):
        assert main(argv) == 0
        row = capsys.readouterr().out.splitlines()[1]
        assert row.endswith('{"code":"***","note":"***"}')


def test_dagnb_history_and_only_failed_take_a_record_whose_finished_is_no_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A run record with text for its end (a hand edit, another tool) failed dagnb history
    and run --only-failed on a TypeError; NaN, or a time past any calendar, its row."""
    from dagnb.runtime.history import RECORDS_NAME

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text("steps:\n  a: {run: 'true'}\n")
    assert main(["run", "w.yml", "--executor", "local"]) == 0
    log = tmp_path / ".dagnb_cache" / ".runs" / RECORDS_NAME
    record = json.loads(log.read_text())
    with open(log, "a") as handle:
        for name, finished in [("text", "2026-12-04 14:00"), ("nan", float("nan")),
                               ("far", 1e300)]:
            handle.write(json.dumps({**record, "run": name, "finished": finished}) + "\n")
    capsys.readouterr()
    for argv in (["history"], ["history", "w.yml"]):
        assert main(argv) == 0
        rows = [row.split() for row in capsys.readouterr().out.splitlines()[1:]]
        # no time: the oldest; 1e300: the newest; neither has a time shown
        assert sorted(row[0] for row in rows[:2]) == ["nan", "text"] and rows[3][0] == "far"
        assert [row[1] for row in [*rows[:2], rows[3]]] == ["w.yml"] * 3
    assert main(["run", "w.yml", "--only-failed", "--executor", "local"]) == 0


def test_dagnb_logs_parses_only_the_records_of_its_workflow_newest_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """dagnb logs parsed every run record (of every workflow) to find the newest run of
    one; now it parses the lines naming the workflow, from the last, up to the first."""
    monkeypatch.chdir(tmp_path)
    _padded_with_other_runs(tmp_path, 300)
    capsys.readouterr()
    parsed = _records_parsed(monkeypatch)
    assert main(["logs", "wf.yml", "talk", "--tail", "1"]) == 0
    assert capsys.readouterr().out == "two\n"
    assert len(parsed) == 1
