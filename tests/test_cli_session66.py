"""QA fixes of the dagnb command: `dagnb logs` of a step that was not stored, the params
line of a run narrowed by --target, what a cache age takes, --max-concurrency's name,
where a steps module raised as it was imported, and the transient retries' floor."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.retry.policy import RetryPolicy
from dagnb.runtime.history import KEEP_RUNS


def _run(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         text: str, *options: str) -> None:
    """wf.yml of ``text`` in ``folder`` (made the current one), run once."""
    monkeypatch.chdir(folder)
    (folder / "wf.yml").write_text(text)
    assert main(["run", "wf.yml", "--executor", "local", *options]) == 0
    capsys.readouterr()


# -- 1. dagnb logs of a step that was not stored ---------------------------------------

QUIET = ("steps:\n"
         "  quiet: {run: 'true', cache: false}\n"
         "  stored: {run: 'true'}\n")


def test_logs_of_a_silent_step_with_cache_false_says_it_printed_nothing_and_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # (it said the lines were kept with a cache entry, exit 1, and offered a Python line
    # that would run the step again: nothing was stored)
    _run(tmp_path, monkeypatch, capsys, QUIET)
    assert main(["logs", "wf.yml", "quiet"]) == 0  # (as a stored step that printed nothing)
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.startswith("dagnb: step 'quiet' succeeded in run ")
    assert said.err.endswith(", not stored in the cache (it has cache: false); it printed "
                             "nothing\n")
    assert "replays" not in said.err and "kept with its entry" not in said.err


def test_logs_of_a_silent_step_not_stored_for_its_secret_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOK", "s3cr3t-value-66")
    (tmp_path / "steps.py").write_text("import os\n\ndef leak():\n"
                                       "    return os.environ['TOK']\n")
    with pytest.warns(UserWarning, match="'leak' ran but was not cached"):
        _run(tmp_path, monkeypatch, capsys,
             "steps:\n  leak: {python: 'steps.py:leak', secrets: [TOK]}\n")
    assert main(["logs", "wf.yml", "leak"]) == 0
    err = capsys.readouterr().err
    assert "not stored in the cache (caching was off for that run" in err
    assert "one holding a secret's value" in err and err.endswith("; it printed nothing\n")
    assert "s3cr3t-value-66" not in err


def test_logs_of_a_step_not_stored_whose_run_folder_is_gone_says_its_lines_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, monkeypatch, capsys, QUIET)
    runs = tmp_path / ".dagnb_cache" / ".runs"
    for folder in (path for path in runs.iterdir() if path.is_dir()):
        shutil.rmtree(folder)  # (as a prune does, when newer runs' folders fill its quota)
    for newer in range(KEEP_RUNS):
        (runs / f"29991231-000000-000-{newer:06d}").mkdir()
    assert main(["logs", "wf.yml", "quiet"]) == 1  # (as a stored step whose entry is gone)
    err = capsys.readouterr().err
    assert "(it has cache: false), and that run has no folder in" in err
    assert "or the folder was pruned since" in err and err.count("\n") == 1


def test_logs_of_a_step_not_stored_that_printed_shows_its_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, monkeypatch, capsys, "steps:\n  loud: {run: 'echo hello', cache: false}\n")
    assert main(["logs", "wf.yml", "loud"]) == 0
    said = capsys.readouterr()
    assert (said.out, said.err) == ("hello\n", "")


# -- 2. the params given, of a run narrowed by --target ---------------------------------

PIPELINE = ("steps:\n"
            "  load: {run: 'true'}\n"
            "  convert: {needs: [load], params: {currency: EUR}, run: 'true'}\n"
            "  summarize: {needs: [load], params: {digits: 2}, run: 'true'}\n"
            "  report: {needs: [summarize], params: {currency: EUR}, run: 'true'}\n")


def test_a_param_no_selected_step_takes_is_warned_of_and_named_for_no_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # (the line said `currency="GBP" for convert`, a step that did not run, and nothing
    # warned that the param changed nothing)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(PIPELINE)
    assert main(["run", "wf.yml", "--executor", "local", "--target", "summarize",
                 "-p", "currency=GBP", "-p", "digits=3"]) == 0
    said = capsys.readouterr()
    warning = [line for line in said.err.splitlines() if "warning" in line]
    assert warning == ["dagnb: warning: --param currency (taken by convert, report) reaches "
                       "no step that --target summarize selects: it changes nothing in this "
                       "run"]
    assert said.out.splitlines()[-1] == ('params given: currency="GBP" (no step of this run '
                                         'takes it); digits=3 for summarize')


def test_the_params_line_names_only_the_selected_steps_that_take_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(PIPELINE)
    assert main(["run", "wf.yml", "--executor", "local", "--target", "report",
                 "-p", "currency=GBP"]) == 0
    said = capsys.readouterr()
    assert "warning" not in said.err
    assert said.out.splitlines()[-1] == 'params given: currency="GBP" for report'
    assert main(["plan", "wf.yml", "--executor", "local", "--tag", "none"]) == 2  # (a typo)
    capsys.readouterr()
    assert main(["plan", "wf.yml", "--executor", "local", "--target", "convert",
                 "-p", "digits=4"]) == 0
    said = capsys.readouterr()
    assert "--param digits (taken by summarize) reaches no step that --target convert" in said.err
    assert said.out.splitlines()[0] == "params given: digits=4 (no step of this run takes it)"


# -- 3. what a cache age takes -----------------------------------------------------------

@pytest.mark.parametrize(("args", "option"), [
    (["clear", "--older-than", "1x"], "--older-than"),
    (["prune", "--max-age", "1x"], "--max-age"),
])
def test_a_cache_age_that_is_no_duration_is_told_what_the_option_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], args: list[str], option: str) -> None:
    # (it said "use seconds or a number with ms, s, ...", and a bare 30 is then refused)
    monkeypatch.chdir(tmp_path)
    assert main(["cache", *args]) == 2
    assert capsys.readouterr().err == (
        f"dagnb: error: {option} '1x' is not a duration; use a number with a unit such as "
        "2w (weeks), 30d (days), 12h (hours), 10m (minutes), 30s (seconds) or 500ms\n")


def test_a_bare_number_of_seconds_is_still_refused_as_an_age(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["cache", "clear", "--older-than", "30"]) == 2
    assert "--older-than 30 has no unit; write 30d (days)" in capsys.readouterr().err


# -- 4. --max-concurrency is named as the command line has it ---------------------------

@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_max_concurrency_below_one_is_said_with_the_options_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], value: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'true'}\n")
    with pytest.raises(SystemExit) as stopped:
        main(["run", "wf.yml", f"--max-concurrency={value}"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(f"argument --max-concurrency: {value} must be a whole number >= 1\n")
    assert "max_concurrency=" not in err and not (tmp_path / ".dagnb_cache").exists()


# -- 5. where a steps module raised as it was imported ----------------------------------

@pytest.mark.parametrize(("files", "where"), [
    ({"steps.py": "def f():\n    return 1\n\nZ = 1 / 0\n"}, "(steps.py, line 4)"),
    ({"steps.py": "import helper\n\ndef f():\n    return 1\n",
      "helper.py": "X = 1\nY = X / 0\n"}, "(helper.py, line 2)"),
])
def test_an_error_importing_a_steps_module_says_the_file_and_line_that_raised_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], files: dict[str, str], where: str) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "wf.yml").write_text("steps:\n  a: {python: 'steps.py:f'}\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # (the module's folder is put on it)
    monkeypatch.delitem(sys.modules, "helper", raising=False)
    assert main(["validate", "wf.yml"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: wf.yml: step 'a': python 'steps.py:f': importing steps.py failed "
        f"(ZeroDivisionError: division by zero {where}); fix the module\n")


# -- 6. the transient errors' retries are a floor, as the README says -------------------

@pytest.mark.parametrize(("retries", "attempts"), [(0, 3), (1, 3), (2, 3), (3, 4),
                                                   (False, 1)])
def test_a_retries_count_is_a_floor_for_transient_errors_not_added_to_them(
        retries: int | bool, attempts: int) -> None:
    policy = RetryPolicy.from_value(retries)
    assert 1 + policy.retries_for(ConnectionError("down")) == attempts
