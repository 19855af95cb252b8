"""QA of an ML engineer running workflows in CI: ``dagnb plan`` under ``fail-on-miss``
said ``1 would run`` and exited 0 where the run exits 2 (a dry-run gate passed, then the
run failed); and the stale-read warning said ``run it with --refresh load``, which
``dagnb run`` refused (``--refresh`` takes no step name). Now plan exits 2 with the run's
reason last, and ``--refresh-step NAME`` runs the steps it names again, the option the
warning names."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagnb.cli import main

_REFUSES = "dagnb run would refuse before running anything: "
_FILL = ("fill the cache first (run with cache_mode 'read-write', or pull it), or run with "
         "another cache_mode")


@pytest.fixture
def folder(project: Path) -> Path:
    """A project folder, the current one, with a cache folder of its own."""
    (project / "cache").mkdir()
    return project


def _options(folder: Path) -> list[str]:
    return ["--executor", "local", "--cache-dir", str(folder / "cache")]


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``dagnb plan ARGS``: its exit code and its last line."""
    code = main(["plan", *args])
    return code, capsys.readouterr().out.splitlines()[-1]


def _run_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``dagnb run ARGS``: its exit code and the first line of its error."""
    code = main(["run", *args])
    return code, capsys.readouterr().err.splitlines()[0]


# -- 1. plan exits 2, the run's reason last, where fail-on-miss would refuse the run ---------

@pytest.mark.parametrize("by_setting", [False, True], ids=["option", "DAGNB_CACHE_MODE"])
def test_plan_under_fail_on_miss_exits_2_with_the_runs_reason_then_0_once_cached(
        folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        by_setting: bool) -> None:
    (folder / "wf.yml").write_text("steps:\n  load: {run: echo hi}\n")
    mode = ["--cache-mode", "fail-on-miss"]
    if by_setting:
        monkeypatch.setenv("DAGNB_CACHE_MODE", "fail-on-miss")
        mode = []
    args = ["wf.yml", *_options(folder), *mode]
    reason = f"cache_mode is 'fail-on-miss' and 1 step would run; {_FILL}"
    assert _plan(capsys, *args) == (2, _REFUSES + reason)
    assert _run_error(capsys, *args) == (2, f"dagnb: error: {reason}:")
    assert main(["run", "wf.yml", *_options(folder), "--cache-mode", "read-write"]) == 0
    capsys.readouterr()
    assert _plan(capsys, *args) == (0, "1 of 1 steps cached, none would run")
    assert main(["run", *args]) == 0


def test_plan_counts_the_steps_that_may_run_as_the_run_refuses_them(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "wf.yml").write_text(
        "steps:\n  make: {params: {n: 1}, run: 'echo made > \"$DAGNB_OUT/x\"'}\n"
        "  use: {needs: [make], run: 'cat \"$DAGNB_IN/make/x\"'}\n")
    assert main(["run", "wf.yml", *_options(folder)]) == 0
    capsys.readouterr()
    args = ["wf.yml", *_options(folder), "--cache-mode", "fail-on-miss", "-p", "n=2"]
    reason = f"cache_mode is 'fail-on-miss' and 1 step would run, 1 may run; {_FILL}"
    assert _plan(capsys, *args) == (2, _REFUSES + reason)
    assert _run_error(capsys, *args) == (2, f"dagnb: error: {reason}:")


def test_plan_says_the_fail_on_miss_refusal_before_an_unset_secret_as_the_run_does(
        folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    (folder / "wf.yml").write_text("steps:\n  s: {secrets: [API_TOKEN], run: echo hi}\n")
    args = ["wf.yml", *_options(folder), "--cache-mode", "fail-on-miss"]
    code, last = _plan(capsys, *args)
    assert code == 2 and last.startswith(_REFUSES + "cache_mode is 'fail-on-miss'"), last
    assert _run_error(capsys, *args) == (2, f"dagnb: error: {last.removeprefix(_REFUSES)}:")


# -- 2. --refresh-step NAME, the option the stale-read warning names -------------------------

def _edit_later(path: Path, text: str) -> None:
    """Append ``text`` to ``path``, its time a second past the entries made before."""
    with path.open("a") as file:
        file.write(text)
    later = time.time() + 1
    os.utime(path, (later, later))


def _dagnb(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *args], cwd=folder,
                          capture_output=True, text=True, timeout=120)


def _state(stdout: str, step: str) -> str:
    return next(line.split()[1] for line in stdout.splitlines() if line.split()[:1] == [step])


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_the_command_the_stale_read_warning_names_runs_the_step_again(folder: Path) -> None:
    (folder / "data").mkdir()
    (folder / "data" / "a.csv").write_text("a\nb\n")
    (folder / "um.yml").write_text("steps:\n  load: {run: wc -l data/a.csv}\n")
    command = ["run", "um.yml", *_options(folder)]
    assert _dagnb(folder, *command).returncode == 0
    _edit_later(folder / "data" / "a.csv", "c\n")
    served = _dagnb(folder, *command)
    assert (served.returncode, _state(served.stdout, "load")) == (0, "cached")
    warning = served.stderr.splitlines()[-1]
    assert warning.startswith("dagnb: warning: step 'load' was served from the cache")
    said = warning.rpartition("or run it with ")[2]
    assert said == "--refresh-step load"
    again = _dagnb(folder, *command, *shlex.split(said))
    assert again.returncode == 0, again.stderr
    assert _state(again.stdout, "load") == "succeeded"
    assert "warning" not in again.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_refresh_alone_still_runs_every_step_again_before_or_after_the_file(
        folder: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    (folder / "wf.yml").write_text("steps:\n  a: {run: echo a}\n  b: {run: echo b}\n")
    assert main(["run", "wf.yml", *_options(folder)]) == 0
    argv = (["run", "--refresh", "wf.yml"] if where == "before"
            else ["run", "wf.yml", "--refresh"])
    capsys.readouterr()
    assert main([*argv, *_options(folder)]) == 0
    out = capsys.readouterr().out
    assert (_state(out, "a"), _state(out, "b")) == ("succeeded", "succeeded")


def test_refresh_step_runs_again_only_the_steps_it_names(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "wf.yml").write_text(
        "steps:\n  a: {run: echo a}\n  b: {run: echo b}\n  c: {run: echo c}\n")
    assert main(["run", "wf.yml", *_options(folder)]) == 0
    capsys.readouterr()
    assert main(["run", "wf.yml", "--refresh-step", "a", "--refresh-step", "c",
                 *_options(folder)]) == 0
    out = capsys.readouterr().out
    assert [_state(out, step) for step in "abc"] == ["succeeded", "cached", "succeeded"]


@pytest.mark.parametrize(("argv", "said"), [
    (["--refresh-step", "lod"], "dagnb: error: --refresh-step 'lod' is no step of 'wf.yml'; "
                                "did you mean 'load'? (its steps: load)"),
    (["--refresh", "--refresh-step", "load"],
     "dagnb: error: --refresh runs every step again and --refresh-step load only the steps "
     "it names; give one of them"),
    (["--skip-cache", "--refresh-step", "load"],
     "dagnb: error: --skip-cache runs every step again and --refresh-step load only the steps "
     "it names; give one of them"),
])
def test_a_refresh_step_that_cannot_be_is_one_line(
        folder: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str) -> None:
    (folder / "wf.yml").write_text("steps:\n  load: {run: echo hi}\n")
    assert main(["run", "wf.yml", *argv, *_options(folder)]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err.splitlines()) == ("", [said])


def test_refresh_given_a_step_name_says_the_option_that_takes_one(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "wf.yml").write_text("steps:\n  load: {run: echo hi}\n")
    with pytest.raises(SystemExit) as exited:
        main(["run", "wf.yml", "--refresh", "load"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "dagnb run: error: unrecognized arguments: load (--refresh takes no step name: "
        "--refresh-step load)")


def test_refresh_step_is_refused_for_a_notebook(folder: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "nb.py").write_text("# %%\nx = 1\n")
    assert main(["run", "nb.py", "--refresh-step", "a"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "dagnb: error: --refresh-step applies to workflow files, not to the notebook 'nb.py'; "
        "put --refresh on the %%dagger cells whose steps should run again"]
