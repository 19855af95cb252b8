"""The engine's progress output lands in the run's folder as ``engine.log``, masked.

The stub engine has no session process, so one test starts a stand-in ``dagger`` CLI
(``_EXPERIMENTAL_DAGGER_CLI_BIN``): the real dagger-io client runs it as ``BIN session``,
reads its connection line, and pipes its stderr (the engine's progress) to the
connection's ``log_output``.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import dagger
import pytest

import dagnb
from dagnb import Step
from dagnb.executors.dagger import connection
from dagnb.executors.dagger.enginelog import EngineLog
from dagnb.executors.loop import run_sync

pytest_plugins = ["dagger_stub.fixtures"]
pytestmark = pytest.mark.usefixtures("workdir")

SECRET = "s3cr3t-engine-value-42"
FAKE_CLI = '''#!%(python)s
"""A `dagger session` stand-in: progress on stderr, the stub's address on stdout."""
import json, os, sys, threading, time

def say(text):
    sys.stderr.write(text + "\\n")
    sys.stderr.flush()

say("engine: session started")
print(json.dumps({"port": int(os.environ["FAKE_PORT"]),
                  "session_token": os.environ["FAKE_TOKEN"]}), flush=True)

def progress():
    while True:
        say("progress: exec with API_TOKEN=" + os.environ.get("API_TOKEN", ""))
        time.sleep(0.05)

threading.Thread(target=progress, daemon=True).start()
sys.stdin.read()  # the SDK closes stdin to end the session
'''


def engine_log_of(run: dagnb.Run, workdir: Path) -> Path:
    return workdir / ".dagnb_cache" / ".runs" / run.id / "engine.log"


@pytest.fixture
def session_cli(stub, tmp_path, monkeypatch):
    """The SDK starts its session with the stand-in CLI (connected to the stub)."""
    cli = tmp_path / "fake-dagger"
    cli.write_text(FAKE_CLI % {"python": sys.executable})
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    for name in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("FAKE_PORT", str(stub.port))
    monkeypatch.setenv("FAKE_TOKEN", stub.token)
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_CLI_BIN", str(cli))
    monkeypatch.setenv("API_TOKEN", SECRET)
    run_sync(connection.aclose())
    yield cli
    run_sync(connection.aclose())


def test_the_sessions_progress_goes_to_the_runs_engine_log_with_secrets_masked(
        session_cli, workdir):
    step = Step("hello", run="sleep 0.3; echo hi", secrets=["API_TOKEN"])
    run = dagnb.Graph("logged", [step]).run(executor="dagger", cache=False)
    assert run.ok, run.status()
    text = engine_log_of(run, workdir).read_text()
    assert "engine: session started" in text
    assert "progress: exec with API_TOKEN=***" in text
    assert SECRET not in text


def test_the_connection_passes_the_stream_and_each_run_gets_its_file(stub, workdir):
    assert connection._config(dagger).log_output is connection.engine_log()
    run = dagnb.Graph("plain", [Step("hello", run="true")]).run(executor="dagger", cache=False)
    path = engine_log_of(run, workdir)
    assert path.exists()  # under `dagger run` (as here) the engine's progress is the TUI's
    connection.engine_log().write("between runs: dropped\n")
    assert "dropped" not in path.read_text()


def test_lines_go_to_every_attached_run_masked_and_the_file_closes_after_its_last_step(
        tmp_path):
    log = EngineLog()
    first, second = tmp_path / "run1", tmp_path / "run2"
    with log.attached(first, [SECRET]), log.attached(first), log.attached(second):
        log.writelines([f"token {SECRET}\n", "pulled alpine\n"])
    log.write("after the runs\n")
    for folder in (first, second):
        assert (folder / "engine.log").read_text() == "token ***\npulled alpine\n"
    assert not log._files  # closed
    assert log.fileno is not None and not _has_fileno(log)  # the SDK must pipe it


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError):
        return False
    return True


def test_a_folder_that_cannot_take_the_file_does_not_fail_the_step(tmp_path, caplog):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    log = EngineLog()
    with log.attached(blocked):
        log.write("dropped\n")
    assert "the engine's output is not kept" in caplog.text


FAILING_CLI = '''#!/bin/sh
echo "connect: starting engine" >&2
echo "Error: failed to start engine: Cannot connect to the Docker daemon at \\
unix:///var/run/docker.sock (as $API_TOKEN)" >&2
echo "Run 'dagger --help' for usage." >&2
exit 1
'''


def test_an_engine_that_cannot_start_is_named_by_the_clis_own_words(
        stub, tmp_path, monkeypatch, make_task):
    # The SDK's SessionError says only that the command exited: it keeps no copy of
    # a stderr it pipes to log_output, so the reason was in engine.log alone.
    from dagnb.errors import ExecutorUnavailable
    from dagnb.executors.dagger.executor import DaggerExecutor

    cli = tmp_path / "failing-dagger"
    cli.write_text(FAILING_CLI)
    cli.chmod(0o755)
    for name in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_CLI_BIN", str(cli))
    monkeypatch.setenv("API_TOKEN", SECRET)
    run_sync(connection.aclose())
    task = make_task(Step("hello", run="true", secrets=["API_TOKEN"]),
                     secrets={"API_TOKEN": SECRET})
    with pytest.raises(ExecutorUnavailable) as raised:
        run_sync(DaggerExecutor().execute(task))
    engine_log = Path(task.step_dir).parent / "engine.log"
    assert str(raised.value) == (
        "executor 'dagger' could not start an engine: failed to start engine: Cannot "
        "connect to the Docker daemon at unix:///var/run/docker.sock (as ***) (the dagger "
        f"CLI's output is in {engine_log})")
    assert "Run 'dagger --help' for usage." in engine_log.read_text()


def test_the_reason_is_the_last_error_line_else_the_last_line(tmp_path):
    log = EngineLog()
    begun = log.begin_session()
    log.writelines(["pulling\n", "error: no space left on device\n", "bye\n"])
    assert log.reason(begun) == "no space left on device"
    begun = log.begin_session()
    log.writelines(["killed\n", "\n"])
    assert log.reason(begun) == "killed"
