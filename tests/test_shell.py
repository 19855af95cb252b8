"""Shell text stops at its first failing command, the same on every executor."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

import dagnb
from dagnb import Step
from dagnb.errors import InvalidStepError
from dagnb.executors.shell import container_argv, host_argv

# The stub engine fixtures (stub, dagger_stub); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]

pytestmark = pytest.mark.usefixtures("workdir")

MIDDLE_FAILS = "echo one\npython3 -c 'import sys; sys.exit(4)'\necho three"
PIPE_FAILS = "false | cat\necho after"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("executor", ["local", "dagger"])
@pytest.mark.parametrize("text", [MIDDLE_FAILS, PIPE_FAILS], ids=["middle", "pipe"])
def test_a_failing_command_fails_the_step(stub, executor, text):
    run = dagnb.Graph("sh", [Step("multi", run=text)]).run(executor=executor, cache=False)
    status = run.status().iloc[0]
    assert status["state"] == "failed", run.status()
    assert run.logs("multi")["line"].tolist() == (["one"] if text == MIDDLE_FAILS else [])


@pytest.mark.parametrize("executor", ["local", "dagger"])
def test_errexit_false_carries_on_and_bash_runs_on_both(stub, executor):
    text = MIDDLE_FAILS + '\n[[ -n "$BASH_VERSION" ]] && echo bash'
    run = dagnb.Graph("sh", [Step("lax", run=text, errexit=False)]).run(
        executor=executor, cache=False)
    assert run.states() == {"lax": "succeeded"}
    assert run.logs("lax")["line"].tolist() == ["one", "three", "bash"]


def _only_sh(tmp_path) -> dict[str, str]:
    """An environment whose PATH has sh and python3 but no bash (a slim image)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    # the interpreter itself: `command -v python3` can name a pyenv shim, a bash script
    tools = {"sh": shutil.which("sh"), "python3": os.path.realpath(sys.executable)}
    for tool, path in tools.items():
        os.symlink(path, folder / tool)
    return {"PATH": str(folder)}


def test_without_bash_a_container_falls_back_to_sh_e(tmp_path):
    env = _only_sh(tmp_path)
    strict = subprocess.run(container_argv(Step("s", run=MIDDLE_FAILS)), env=env,
                            capture_output=True, text=True)
    assert (strict.returncode, strict.stdout) == (4, "one\n")
    lax = subprocess.run(container_argv(Step("s", run=MIDDLE_FAILS, errexit=False)), env=env,
                         capture_output=True, text=True)
    assert (lax.returncode, lax.stdout) == (0, "one\nthree\n")


def test_the_argvs(monkeypatch, tmp_path):
    assert host_argv(Step("s", run="x")) == ["bash", "-e", "-o", "pipefail", "-c", "x"]
    assert host_argv(Step("s", run="x", errexit=False)) == ["bash", "-c", "x"]
    monkeypatch.setenv("PATH", _only_sh(tmp_path)["PATH"])
    assert host_argv(Step("s", run="x")) == ["sh", "-e", "-c", "x"]
    assert container_argv(Step("s", run="x"))[-2:] == ["dagnb", "x"]
    with pytest.raises(InvalidStepError, match="errexit 'no' must be True or False"):
        Step("s", run="x", errexit="no")


def test_a_workdir_that_is_not_here_fails_its_step_and_touches_nothing(workdir):
    (workdir / "data.csv").write_text("precious")
    run = dagnb.Graph("wd", [Step("clean", workdir="build", run="rm -f ./*.csv")]).run(
        executor="local", cache=False)
    assert run.states() == {"clean": "failed"}
    error = run.status_rows()["clean"]["error"]
    assert "workdir 'build' is not a folder of this machine" in error and "\n" not in error
    assert (workdir / "data.csv").read_text() == "precious"


def test_a_mount_maps_a_container_workdir_even_where_this_machine_has_that_path(
        workdir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("host_has_it")  # (an absolute path that exists)
    (workdir / "build").mkdir()
    step = Step("mapped", workdir=str(elsewhere), mounts={"build": str(elsewhere)}, run="pwd")
    run = dagnb.Graph("wd", [step]).run(executor="local", cache=False)
    assert run.logs("mapped")["line"].tolist() == [str(workdir / "build")]


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_the_deepest_mount_that_holds_a_workdir_maps_it(workdir, order):
    for name in "ab":
        (workdir / name).mkdir()
        (workdir / name / f"from_{name}.txt").write_text("")
    mounts = {name: {"a": "/w", "b": "/w/sub"}[name] for name in order}
    (workdir / "a" / "sub").mkdir()
    step = Step("nested", workdir="/w/sub", mounts=mounts, run="ls")
    run = dagnb.Graph("wd", [step]).run(executor="local", cache=False)
    assert run.logs("nested")["line"].tolist() == ["from_b.txt"]


def test_a_python_step_whose_workdir_is_not_here_fails_too(workdir):
    ran = []
    step = Step("py", workdir="build", func=lambda: ran.append(1))
    run = dagnb.Graph("wd", [step]).run(executor="local", cache=False)
    assert run.states() == {"py": "failed"} and ran == []
    assert "workdir 'build' is not a folder" in run.status_rows()["py"]["error"]


def test_a_workdir_runs_where_it_is_here_or_where_a_mount_maps_it(workdir):
    (workdir / "build").mkdir()
    (workdir / "src" / "pkg").mkdir(parents=True)
    steps = [Step("rel", workdir="build", run="pwd"),
             Step("mapped", workdir="/workspace/pkg", mounts={"src": "/workspace"}, run="pwd")]
    run = dagnb.Graph("wd", steps).run(executor="local", cache=False)
    assert run.states() == {"rel": "succeeded", "mapped": "succeeded"}
    assert run.logs("rel")["line"].tolist() == [str(workdir / "build")]
    assert run.logs("mapped")["line"].tolist() == [str(workdir / "src" / "pkg")]


def test_a_command_naming_a_mounts_container_path_fails_saying_mounts_are_read_here(workdir):
    (workdir / "transform.py").write_text("print('transformed')\n")
    step = Step("t", run="python3 /src/transform.py",
                mounts={"transform.py": "/src/transform.py"})
    run = dagnb.Graph("m", [step]).run(executor="local", cache=False)
    error = run.status_rows()["t"]["error"]
    assert run.states() == {"t": "failed"}
    assert "exit code 2" in error and "\n" not in error
    assert ("no file is put at its container path: the command names /src/transform.py "
            "(mount 'transform.py'); use the host path") in error
    fixed = dagnb.Graph("m", [dataclasses.replace(step, run="python3 transform.py")]).run(
        executor="local", cache=False)
    assert fixed.states() == {"t": "succeeded"}


@pytest.mark.parametrize("command", ["exit 3", "python3 /srcs/x.py; exit 3",
                                     "cat a/src/x; exit 3"])
def test_a_failure_that_names_no_container_path_gets_no_mount_hint(workdir, command):
    run = dagnb.Graph("m", [Step("t", run=command, mounts={".": "/src"})]).run(
        executor="local", cache=False)
    error = run.status_rows()["t"]["error"]
    assert error.startswith("exit code") and "container path" not in error
