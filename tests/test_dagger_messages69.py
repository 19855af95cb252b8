"""The Dagger executor's messages and round trips after a QA pass by a Dagger expert: a
timed-out step's output the engine kept, a wrong session token, the queries a run
sends, and the image digest of a failed step. Through the real dagger-io client and
the stub engine (tests/dagger_stub)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import dagnb
from dagnb import Step
from dagnb.errors import StepFailed
from dagnb.executors.dagger import connection
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync
from dagnb.views.progress import failure_tails

pytest_plugins = ["dagger_stub.fixtures"]
pytestmark = pytest.mark.usefixtures("workdir")

WITHHELD = re.compile(
    r"^dagnb: the Dagger engine returned none of the output of step 'slow': it hands a "
    r"command's output over when the command ends, and this one was stopped before; what "
    r"it printed as it ran is in (?P<where>.+)$")


def run(executor: DaggerExecutor, task):
    return run_sync(executor.execute(task))


def new_session() -> None:
    """Close the connection, so that the next step opens a session of its own."""
    run_sync(connection.aclose())


# -- a step stopped before its command ended ------------------------------------------


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_timed_out_step_says_the_engine_returned_none_of_its_output(stub):
    """Before: "...ran past its timeout of 1 s and was stopped; it printed nothing",
    although it printed 'started': the engine hands output over only at the end."""
    dagnb.Graph("warm", [Step("warm", run="true")]).run(executor="dagger", cache=False)
    graph = dagnb.Graph("t", [Step("slow", run="echo started; sleep 30", timeout=1,
                                   retries=0)])
    done = graph.run(executor="dagger", cache=False, raise_on_failure=False)
    assert done.states() == {"slow": "failed"}
    tails = "\n".join(failure_tails(done, lambda name: f"dagnb logs {name}"))
    assert "printed nothing" not in tails
    [line] = done.logs("slow", stream="stderr")["line"].tolist()
    assert line in tails
    # Under a session of `dagger run` (DAGGER_SESSION_PORT), its view shows the output.
    assert WITHHELD.match(line)["where"] == (
        "the view of the `dagger run` it ran under (or its Dagger Cloud trace)")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_stopped_step_points_to_the_run_s_engine_log(stub, make_task, monkeypatch):
    """A session the SDK started with the dagger CLI writes its progress, the step's
    lines among them, to the run's engine.log: the step's log names that file."""
    executor = DaggerExecutor()
    run(executor, make_task(Step("warm", run="true")))  # the session, opened
    monkeypatch.delenv("DAGGER_SESSION_PORT")  # (as with the CLI: the open session stays)
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_CLI_BIN", "/usr/bin/false")
    task = make_task(Step("slow", run="echo started; sleep 30", timeout=0.8))
    with pytest.raises(asyncio.TimeoutError):  # (3.10's is not the builtin)
        run_sync(_timed_out(executor, task, 0.8))
    [(stream, line)] = task.log.lines
    engine_log = Path(task.step_dir).parent / "engine.log"
    assert (stream, WITHHELD.match(line)["where"]) == (
        "stderr", f"{engine_log}, the engine's log of this run")
    assert engine_log.is_file()  # (opened for the run's first Dagger step)


async def _timed_out(executor: DaggerExecutor, task, seconds: float) -> None:
    await asyncio.wait_for(executor.execute(task), seconds)


# -- a wrong session token --------------------------------------------------------------


def test_a_refused_session_token_fails_at_once_naming_the_variable(stub, monkeypatch):
    """Before: retried as transient (three attempts), then "could not connect to the
    Dagger engine: ... '401 Unauthorized' for url ..."."""
    new_session()
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "wrong-tok-5150")
    done = dagnb.Graph("t", [Step("a", run="echo a")]).run(
        executor="dagger", cache=False, raise_on_failure=False)
    row = done.status_rows()["a"]
    assert (row["state"], row["attempts"], stub.unauthorized) == ("failed", 1, 1)
    assert row["error"] == (
        f"could not connect to the Dagger session on 127.0.0.1:{stub.port} "
        "(DAGGER_SESSION_PORT): it refused DAGGER_SESSION_TOKEN (401 Unauthorized); set "
        "DAGGER_SESSION_TOKEN to that session's token (`dagger run` sets it for the "
        "command it runs), or unset DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN so that "
        "dagnb starts an engine with the dagger CLI")
    assert "wrong-tok-5150" not in row["error"]


# -- round trips --------------------------------------------------------------------------


def test_a_two_step_run_sends_eleven_queries(stub):
    """Before: fourteen; the engine's version was asked twice (by the SDK on connecting,
    then by dagnb), and each step's stdout and stderr were a query each."""
    new_session()
    stub.queries.clear()
    graph = dagnb.Graph("q", [Step("a", run="echo a"),
                              Step("b", run="echo b", needs=["a"])])
    done = graph.run(executor="dagger", cache=False)
    assert done.logs()["line"].tolist() == ["a", "b"]
    texts = stub.texts()
    assert len(texts) == 11, texts
    # introspection, version, the image's user and digest, the empty folder's ID; per
    # step: the exec (sync), its stdout and stderr, its export; a's folder's ID for b
    assert len([t for t in texts if t.startswith("{\n  version")]) == 1
    output = [t for t in texts if "stdout" in t or "stderr" in t]
    assert len(output) == 2
    assert all("stdout: stdout" in t and "stderr: stderr" in t for t in output)


# -- the image of a failed step ---------------------------------------------------------


def fails():
    raise ValueError("bad input row 42")


def test_a_failed_exec_names_the_image_digest_it_ran_as_a_succeeded_one_does(
        stub, make_task):
    """Before: a failed step's image_ref was None, although the digest was resolved for
    it: the status showed the tag only, a succeeded step's the digest."""
    executor = DaggerExecutor()
    ran = run(executor, make_task(Step("ok", run="true")))
    assert "@sha256:" in ran.image_ref
    exited = run(executor, make_task(Step("exits", run="exit 3")))
    assert (exited.exit_code, exited.image_ref) == (3, ran.image_ref)
    with pytest.raises(StepFailed, match="bad input row 42") as raised:
        run(executor, make_task(Step("raises", func=fails)))
    assert raised.value.image_ref == ran.image_ref


def _raises_bad() -> None:
    raise ValueError("bad")


def test_a_failed_steps_status_row_names_the_image_digest_as_a_succeeded_one(stub):
    """The row of a step that failed in its container showed the tag alone, though the
    engine had resolved the digest it ran (a succeeded step's row showed it)."""
    image = "python:3.12-slim"
    done = dagnb.Graph("images", [
        Step("ok", run="true", image=image),
        Step("exits", run="exit 3", image=image, retries=0),
        Step("raises", func=_raises_bad, image=image, retries=0),
    ]).run(executor="dagger", cache=False, raise_on_failure=False)
    rows = done.status_rows()
    assert done.states() == {"ok": "succeeded", "exits": "failed", "raises": "failed"}
    assert "@sha256:" in rows["ok"]["image"], rows["ok"]
    assert [rows[name]["image"] for name in ("exits", "raises")] == [rows["ok"]["image"]] * 2
