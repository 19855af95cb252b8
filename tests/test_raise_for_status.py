"""Run.raise_for_status(), graph.run(raise_on_failure=...) and the magics that raise
RunFailed after a run whose steps did not all succeed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dagnb
import dagnb.notebook.widgets
from dagnb import Graph, RunFailed, Step
from dagnb.notebook.session import get_session

pytestmark = pytest.mark.usefixtures("workdir")


def broken_graph() -> Graph:
    return Graph("g", [
        Step("ok", run="echo fine"),
        Step("broken", run="echo partial\necho 'bad thing' >&2\nexit 3"),
        Step("after", run="echo never", needs=["broken"]),
    ])


def test_raise_for_status_returns_the_run_when_every_step_succeeded() -> None:
    run = Graph("g", [Step("ok", run="echo fine")]).run(executor="local", cache=False)
    assert run.raise_for_status() is run


def test_raise_for_status_names_failed_and_skipped_steps_with_rows_and_stderr() -> None:
    run = broken_graph().run(executor="local", cache=False)
    with pytest.raises(RunFailed, match=r"steps 'broken' failed, 'after' skipped") as info:
        run.raise_for_status()
    error = info.value
    assert error.states == {"broken": "failed", "after": "skipped"}
    shown = error._render_traceback_()
    assert shown[0].split() == ["step", "state", "exit", "error"]
    assert shown[1].split()[:3] == ["broken", "failed", "3"]
    assert shown[2].split()[:2] == ["after", "skipped"]
    assert shown[3:5] == ["── broken failed; last lines of stderr ──", "bad thing"]
    assert shown[-1].startswith(f"RunFailed: run {run.id}: steps 'broken' failed")
    assert not any(line.split()[0] == "ok" for line in shown[1:3])


def test_a_script_s_traceback_ends_with_why_the_steps_failed(tmp_path) -> None:
    """Outside IPython nothing reads the details: the message carries them, so a CI log
    shows the exit code and the stderr tail under the traceback, and the notebook's one
    RunFailed line stays one line."""
    script = tmp_path / "pipeline.py"
    script.write_text("from dagnb import Graph, Step\n"
                      "Graph('g', [Step('a', run=\"echo 'FATAL: table missing' >&2; exit 3\")]"
                      ").run(executor='local', cache=False, raise_on_failure=True)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "DAGNB_CONFIG": "none"})
    assert done.returncode == 1
    last = done.stderr.splitlines()
    at = next(i for i, line in enumerate(last) if line.startswith("dagnb.errors.RunFailed: "))
    assert last[at].endswith("step 'a' failed; the status rows and stderr tails say why")
    assert last[at + 2].split()[:4] == ["a", "failed", "3", "exit"]
    assert last[at + 3:] == ["── a failed; last lines of stderr ──", "FATAL: table missing"]
    with pytest.raises(RunFailed) as info:
        broken_graph().run(executor="local", cache=False, raise_on_failure=True)
    assert info.value._render_traceback_()[-1].count("\n") == 0


def test_graph_run_raises_only_when_asked() -> None:
    assert not broken_graph().run(executor="local", cache=False).ok
    with pytest.raises(RunFailed, match="'broken' failed"):
        broken_graph().run(executor="local", cache=False, raise_on_failure=True)


def test_arun_raises_when_asked() -> None:
    import asyncio

    with pytest.raises(RunFailed, match="'broken' failed"):
        asyncio.run(broken_graph().arun(executor="local", cache=False, raise_on_failure=True))


def test_run_failed_is_a_dagnb_error_exported_from_the_package() -> None:
    assert issubclass(dagnb.RunFailed, dagnb.DagnbError)
    assert "RunFailed" in dagnb.__all__


# -- the magics -----------------------------------------------------------------------
def test_failing_cell_raises_once_showing_rows_and_stderr_without_frames(shell, capsys):
    result = shell.run_cell("%%dagger broken\necho partial\necho 'bad thing' >&2\nexit 3\n")
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, RunFailed)
    # its stderr shows once, as it came: the error does not repeat it (a text-mode view)
    assert err.count("bad thing") == 1 and "last lines of stderr" not in out, (out, err)
    assert "RunFailed: run " in out and "step 'broken' failed" in out
    assert "the status rows and its output above say why" in out
    assert "Traceback" not in out + err and "dagnb/" not in out + err
    assert get_session().last_run.failed == ["broken"]


def test_line_run_raises_and_results_of_good_steps_are_still_published(shell):
    shell.run_cell_magic("dagger", "good --python --outputs v --define-only", "v = 5\n")
    shell.run_cell_magic("dagger", "bad --no-cache --define-only", "exit 1\n")
    with pytest.raises(RunFailed, match="step 'bad' failed"):
        shell.run_line_magic("dagger", "run")
    assert shell.user_ns["v"] == 5


def test_setting_raise_on_failure_false_keeps_failures_as_data(shell):
    dagnb.configure(raise_on_failure=False)
    try:
        shell.run_cell_magic("dagger", "bad --no-cache", "exit 1\n")
    finally:
        dagnb.configure(raise_on_failure=True)
    assert get_session().last_run.failed == ["bad"]


def test_background_cell_does_not_raise(shell):
    shell.run_cell_magic("dagger", "bad --no-cache --background", "exit 1\n")
    assert get_session().last_run.wait(10).failed == ["bad"]
