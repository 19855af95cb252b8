"""A YAML author's slips that loaded as another workflow or failed only when run (QA pass
on workflow files): a step or a ``needs:`` indented under ``params:``, a ``workdir``
that is no folder, and YAML syntax errors that named no fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import dagnb
from dagnb.cli import main
from dagnb.executors.base import Availability
from dagnb.executors.dagger import connection


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder, where no Dagger engine is found: steps run on this machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(connection, "detect", lambda: Availability(False, "none in tests"))
    return tmp_path


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line error of ``dagnb ARGV``, which must exit 2 having run nothing."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    return captured.err.removeprefix("dagnb: error: ").removesuffix("\n")


def refused_by_validate_and_run(capsys: pytest.CaptureFixture[str], name: str) -> str:
    said = refused(capsys, "validate", name)
    assert refused(capsys, "run", name, "--no-cache") == said
    return said


# -- 1. a step, or needs, indented under params ------------------------------------------
STEP_UNDER_PARAMS = """\
steps:
  train:
    run: echo train
    params:
      epochs: 3
      evaluate:          # meant to be a step
        needs: [train]
        run: exit 1
"""


def test_a_step_indented_under_params_is_refused(here, capsys):
    (here / "wf.yml").write_text(STEP_UNDER_PARAMS)
    assert refused_by_validate_and_run(capsys, "wf.yml") == (
        "wf.yml: step 'train': param 'evaluate' holds a mapping with run, a step's field: "
        "it looks like a step indented under params; move it under steps:, at the "
        "indentation of 'train'")


def test_a_python_step_under_the_defaults_params_is_refused(here, capsys):
    (here / "wf.yml").write_text("defaults:\n  params:\n    fit: {python: 'steps.py:fit'}\n"
                                 "steps:\n  a: {run: echo a}\n")
    assert refused_by_validate_and_run(capsys, "wf.yml") == (
        "wf.yml: defaults: param 'fit' holds a mapping with python, a step's field: it "
        "looks like a step indented under params; move it under steps:, at the indentation "
        "of the steps")


@pytest.mark.parametrize(("spelling", "value"), [("needs", "[a]"), ("depends_on", "a")])
def test_needs_indented_under_params_is_refused(here, capsys, spelling, value):
    (here / "wf.yml").write_text(f"steps:\n  a:\n    run: echo a\n  b:\n    run: echo b\n"
                                 f"    params:\n      {spelling}: {value}\n")
    assert refused_by_validate_and_run(capsys, "wf.yml") == (
        f"wf.yml: step 'b': param {spelling!r} ({value}) names steps of this file: it looks "
        f"like the step's {spelling} indented under params; move {spelling}: out of "
        "params:, to the indentation of params:")


def test_ordinary_params_still_load_and_run(here, capsys):
    (here / "wf.yml").write_text(
        "steps:\n  a:\n    run: echo ok\n    params:\n"
        "      model: {lr: 0.1, layers: [2, 3]}\n      image: python:3.12-slim\n"
        "      needs: [not-a-step]\n      mlflow: {experiment: x}\n")
    assert main(["validate", "wf.yml"]) == 0
    assert capsys.readouterr().out == "wf.yml: 1 step, valid\n"
    assert main(["run", "wf.yml", "--no-cache"]) == 0


# -- 2. a workdir that is no folder --------------------------------------------------------
def test_a_workdir_that_is_no_folder_is_refused_as_the_run_said(here, capsys):
    """validate refuses what the run fails on (as it does a mount's missing path); the
    file still loads (``%dagger load``: a cell may make the folder before the run)."""
    (here / "wf.yml").write_text("steps:\n  a: {run: pwd, workdir: nope/dir}\n")
    assert refused(capsys, "validate", "wf.yml") == (
        f"wf.yml: step 'a': its workdir 'nope/dir' is not a folder of this machine "
        f"({here / 'nope/dir'}), and no mount of the step maps it here; create it, or fix "
        "the path (a step that runs on this machine runs in a folder of it)")
    assert main(["run", "wf.yml", "--no-cache"]) == 1
    assert "its workdir 'nope/dir' is not a folder of this machine" in capsys.readouterr().out
    assert dagnb.load(here / "wf.yml")["a"].workdir == "nope/dir"
    (here / "nope" / "dir").mkdir(parents=True)
    assert main(["validate", "wf.yml"]) == 0


def test_a_local_steps_workdir_is_refused_even_with_an_engine(here, capsys, monkeypatch):
    monkeypatch.setattr(connection, "detect", lambda: Availability(True, "an engine"))
    (here / "wf.yml").write_text("steps:\n  a: {run: pwd, workdir: nope, executor: local}\n")
    assert refused(capsys, "validate", "wf.yml").startswith(
        "wf.yml: step 'a': its workdir 'nope' is not a folder of this machine")


def test_workdirs_a_run_can_find_still_load(here, capsys, monkeypatch):
    """A mount maps it; a container makes it; a step it needs makes it."""
    (here / "src" / "pkg").mkdir(parents=True)
    (here / "wf.yml").write_text(
        "steps:\n"
        "  mapped: {run: pwd, workdir: /workspace/pkg, mounts: {src: /workspace}}\n"
        "  boxed: {run: pwd, workdir: /not/here, executor: dagger}\n"
        "  make: {run: mkdir -p made}\n"
        "  made: {run: pwd, workdir: made, needs: [make]}\n")
    assert main(["validate", "wf.yml"]) == 0
    (here / "wf.yml").write_text("steps:\n  a: {run: pwd, workdir: later}\n")
    monkeypatch.setattr(connection, "detect", lambda: Availability(True, "an engine"))
    assert main(["validate", "wf.yml"]) == 0  # (auto may put it in a container)


def test_a_mapped_workdir_runs_there(here, capsys):
    (here / "src" / "pkg").mkdir(parents=True)
    (here / "wf.yml").write_text("steps:\n  make: {run: mkdir -p made}\n"
                                 "  a: {run: pwd, workdir: /workspace/pkg, "
                                 "mounts: {src: /workspace}, needs: [make]}\n"
                                 "  b: {run: pwd, workdir: made, needs: [make]}\n")
    assert main(["run", "wf.yml", "--no-cache", "--executor", "local"]) == 0


# -- 3. YAML syntax errors name their fix --------------------------------------------------
@pytest.mark.parametrize(("text", "error"), [
    ("steps:\n  a:\n\trun: echo a\n",
     "line 3: YAML does not parse (found character '\\t' that cannot start any token); "
     "indent with spaces, not tabs"),
    ("steps:\n  a:\n    run: echo a\n---\nsteps:\n  b:\n    run: echo b\n",
     "line 4: YAML does not parse (but found another document); a workflow file is one "
     "YAML document: remove this '---' (or split the file in two, one workflow each)"),
    ('steps:\n  a:\n    run: echo "lu: x"\n',
     "line 3: YAML does not parse (mapping values are not allowed here); a ': ' in a plain "
     "value starts a mapping; quote the whole value (run: 'echo \"lu: x\"') or write it as "
     "a block (run: |, the text on the lines below)"),
])
def test_a_syntax_error_names_its_fix(here, capsys, text, error):
    (here / "wf.yml").write_text(text)
    assert refused_by_validate_and_run(capsys, "wf.yml") == f"wf.yml, {error}"
