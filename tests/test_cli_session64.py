"""A day with YAML workflows from a terminal: what `dagnb plan` shows after an edit, a
step's `python:` over the defaults' `run`, and `dagnb logs` of a step whose cache entry
another workflow file stored again."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.workflows.loader import load

SCRIPT = ("    run: |\n"
          "      echo one\n"
          "      echo {word} > \"$DAGNB_OUT/w.txt\"\n"
          "      echo three\n")


def _ran_then_edited(folder: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """wf.yml, its step run, then one line of its command edited (in ``folder``, made
    the current one)."""
    monkeypatch.chdir(folder)
    wf = folder / "wf.yml"
    wf.write_text("steps:\n  build:\n" + SCRIPT.format(word="two"))
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    wf.write_text("steps:\n  build:\n" + SCRIPT.format(word="deux"))
    capsys.readouterr()


def test_plan_after_editing_a_multi_line_step_says_command_changed_in_one_readable_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # (the row held the whole diff, each line break shown as \n: unreadable, and as long
    # as the script)
    _ran_then_edited(tmp_path, monkeypatch, capsys)
    assert main(["plan", "wf.yml", "--executor", "local"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("build"))
    assert row.endswith("command changed (dagnb explain wf.yml build shows the diff)")
    assert "\\n" not in row


def test_explain_still_prints_the_diff_that_plan_leaves_to_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _ran_then_edited(tmp_path, monkeypatch, capsys)
    assert main(["explain", "wf.yml", "build", "--executor", "local"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("command changed\n--- cached\n+++ now\n")
    assert "+echo deux > \"$DAGNB_OUT/w.txt\"" in out


def test_a_step_s_python_replaces_the_defaults_run_as_its_other_fields_do(
        tmp_path: Path) -> None:
    # (it was refused: "needs exactly one of run or python", of a step that gave one)
    (tmp_path / "steps.py").write_text("def fit():\n    return 42\n")
    wf = tmp_path / "wf.yml"
    wf.write_text("defaults:\n  run: echo default\n"
                  "steps:\n  shell: {}\n  fit: {python: steps.py:fit}\n")
    graph = load(wf)
    assert graph["shell"].run == "echo default"
    assert graph["fit"].func is not None and graph["fit"].func() == 42
    assert graph["fit"].run is None


def _run_id(out: str) -> str:
    """The id in `dagnb run`'s summary line, ``run <id> (<name>): ...``."""
    return next(line.split()[1] for line in out.splitlines() if line.startswith("run "))


def test_logs_of_a_step_whose_entry_another_workflow_stored_again_names_that_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # (it said "dagnb logs y/wf.yml a shows the newest run's": the command just given,
    # which said this again)
    monkeypatch.chdir(tmp_path)
    for folder in ("x", "y"):  # two files, one cache folder, one step of one key
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "wf.yml").write_text("steps:\n  a: {run: 'echo same'}\n")
    assert main(["run", "x/wf.yml", "--executor", "local"]) == 0
    assert main(["run", "y/wf.yml", "--executor", "local"]) == 0  # a, from x's entry
    capsys.readouterr()
    assert main(["run", "x/wf.yml", "--executor", "local", "--refresh"]) == 0
    refreshed = _run_id(capsys.readouterr().out)
    assert main(["logs", "y/wf.yml", "a"]) == 1
    err = capsys.readouterr().err
    assert f"by run {refreshed} of x/wf.yml" in err
    assert err.rstrip().endswith(f"dagnb logs x/wf.yml a --run {refreshed} shows those")
    assert main(["logs", "x/wf.yml", "a", "--run", refreshed]) == 0
    assert capsys.readouterr().out == "same\n"


@pytest.mark.parametrize("reference, said", [
    ("nothere.py:fit", "python 'nothere.py:fit' names 'nothere.py', which is not a file in "),
    ("steps.py:fitt", "steps.py has no function 'fitt'; did you mean 'fit'?"),
    ("steps.py", "python 'steps.py' is not FILE.py:FUNCTION; write it like python: "
                 "steps.py:fit"),
    # (a dotted module path, as other tools name a function: its file and function)
    ("steps.load", "python 'steps.load' is not FILE.py:FUNCTION; write it like python: "
                   "steps.py:load"),
    ("pkg.steps.fit", "write it like python: pkg/steps.py:fit"),
    # (a module named as an entry point names it: its file then said as the fix)
    ("steps:fit", "names 'steps', which is not a file in {d!r}; name its file: python: "
                  "steps.py:fit"),
    ("pkg.steps:fit", "name its file: python: pkg/steps.py:fit"),
    ("nothere:fit", "names 'nothere', which is not a file in {d!r}; check the path"),
    # (a misspelt file names the one beside it, in the folder the reference gave)
    ("step.py:fit", "names 'step.py', which is not a file in {d!r}; did you mean python: "
                    "steps.py:fit?"),
    ("pkg/stepz.py:fit", "did you mean python: pkg/steps.py:fit?"),
    ("nofolder/step.py:fit", "which is not a file in {d!r}; check the path"),
])
def test_a_python_reference_that_names_nothing_says_what_is_wrong_and_the_fix(
        tmp_path: Path, reference: str, said: str) -> None:
    # (a missing file was said to be a reference not of the form FILE.py:FUNCTION, and a
    # misspelt function named no close one)
    from dagnb.errors import DagnbError

    (tmp_path / "steps.py").write_text("def fit():\n    return 42\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "steps.py").write_text("def fit():\n    return 42\n")
    wf = tmp_path / "wf.yml"
    wf.write_text(f"steps:\n  fit: {{python: '{reference}'}}\n")
    with pytest.raises(DagnbError) as refused:
        load(wf).run(executor="local", cache=False)
    assert said.format(d=str(tmp_path)) in str(refused.value), str(refused.value)


def test_a_python_reference_with_spaces_around_its_colon_is_read(tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text("def fit():\n    return 42\n")
    wf = tmp_path / "wf.yml"
    wf.write_text("steps:\n  fit: {python: 'steps.py : fit'}\n")
    run = load(wf).run(executor="local", cache=False)
    assert run.result("fit") == 42
