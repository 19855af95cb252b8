"""QA of a YAML workflow author (session 69): ``dagnb plan`` refuses what the run would
refuse before running anything; YAML 1.1 dates and booleans where text was meant, and
``parameters:`` typos, get a one-line fix; an unknown option gets its command's usage and
a "did you mean"."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.executors.base import Availability
from dagnb.executors.dagger import connection

# -- 1. plan exits 2, saying why, where the run would refuse before its first step ---------

_REFUSES = "dagnb run would refuse before running anything: "


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setattr(connection, "detect", lambda: Availability(
        False, "no Dagger engine found: install the dagger CLI"))
    (tmp_path / "cache").mkdir()
    return tmp_path


def _plan_and_run(folder: Path, capsys: pytest.CaptureFixture[str], text: str,
                  *options: str) -> tuple[int, str, int, str]:
    """``dagnb plan`` then ``dagnb run`` of ``text``: each one's exit code, plan's last
    line and the run's error."""
    (folder / "wf.yml").write_text(text)
    args = ["wf.yml", "--cache-dir", str(folder / "cache"), *options]
    planned = main(["plan", *args])
    last = capsys.readouterr().out.splitlines()[-1]
    ran = main(["run", *args])
    return planned, last, ran, (capsys.readouterr().err.splitlines() or [""])[-1]


@pytest.mark.parametrize(("text", "options", "said"), [
    ("steps:\n  report:\n    secrets: [API_TOKEN]\n    run: echo hi\n", ["--executor", "local"],
     "step 'report' needs secret 'API_TOKEN', which is not set"),
    ("steps:\n  s:\n    executor: dagger\n    run: echo hi\n", [],
     "executor 'dagger' is needed for step 's' but no Dagger engine found"),
    ("steps:\n  s:\n    services: [db]\n    run: echo hi\n", ["--executor", "local"],
     "step 's' binds services ['db'], which need the Dagger executor"),
])
def test_plan_exits_2_with_the_runs_refusal(folder: Path, capsys: pytest.CaptureFixture[str],
                                            text: str, options: list[str], said: str) -> None:
    planned, last, ran, error = _plan_and_run(folder, capsys, text, *options)
    assert (planned, ran) == (2, 2)
    assert last.startswith(_REFUSES + said), last
    assert error == f"dagnb: error: {last.removeprefix(_REFUSES)}"


def test_plan_of_a_cached_step_needs_no_secret(folder: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    text = "steps:\n  report:\n    secrets: [API_TOKEN]\n    run: echo hi\n"
    monkeypatch.setenv("API_TOKEN", "t0ken-value-here")
    assert _plan_and_run(folder, capsys, text, "--executor", "local")[:3:2] == (0, 0)
    monkeypatch.delenv("API_TOKEN")
    assert main(["plan", "wf.yml", "--executor", "local", "--cache-dir", "cache"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 of 1 steps cached, none would run"


# -- 2.-4. what YAML 1.1 reads as no text, and parameters: typos, said in one line ---------

def _validate_error(folder: Path, capsys: pytest.CaptureFixture[str], text: str) -> str:
    (folder / "wf.yml").write_text(text)
    assert main(["validate", "wf.yml"]) == 2
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize(("text", "said"), [
    ("steps:\n  s:\n    env: {START: 2024-01-01}\n    run: echo hi\n",
     "step 's': env START: 2024-01-01 reads as a date in YAML; quote it: \"2024-01-01\""),
    ("steps:\n  s:\n    params: {run_date: 2024-01-01}\n    run: echo hi\n",
     "step 's': params run_date: 2024-01-01 reads as a date in YAML; quote it: \"2024-01-01\""),
    ("parameters:\n  run_date: {type: str, default: 2024-01-01}\nsteps:\n  s:\n"
     "    params: {run_date: \"2024-01-01\"}\n    run: echo hi\n",
     "parameter 'run_date': default: 2024-01-01 reads as a date in YAML; "
     "quote it: \"2024-01-01\""),
    ("steps:\n  s:\n    run: [echo, 2024-01-01T10:00:00Z]\n",
     "step 's': run[1]: 2024-01-01T10:00:00Z reads as a date and time in YAML; "
     "quote it: \"2024-01-01T10:00:00Z\""),
    ("steps:\n  on:\n    run: echo on\n  off:\n    needs: [on]\n    run: echo off\n",
     "step name on reads as true in YAML; quote it: \"on\" (and where a step needs it)"),
    ("steps:\n  - name: no\n    run: echo no\n",
     "step name no reads as false in YAML; quote it: \"no\" (and where a step needs it)"),
    ("parameters:\n  group_by: {type: flaot, default: 1.5}\nsteps:\n  s:\n"
     "    params: {group_by: 1.5}\n    run: echo hi\n",
     "parameter 'group_by': type 'flaot' is not one of ('str', 'int', 'float', 'bool', "
     "'list'); did you mean 'float'?"),
    ("parameters:\n  group_by: {type: str, defualt: region}\nsteps:\n  s:\n"
     "    params: {group_by: region}\n    run: echo hi\n",
     "parameter 'group_by': unknown key 'defualt'; did you mean 'default'?"),
])
def test_yaml_misreadings_and_parameter_typos_say_the_fix(
        folder: Path, capsys: pytest.CaptureFixture[str], text: str, said: str) -> None:
    assert _validate_error(folder, capsys, text) == f"dagnb: error: wf.yml: {said}"


def test_quoted_dates_and_names_are_valid(folder: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    (folder / "wf.yml").write_text(
        'parameters:\n  day: {type: str, default: "2024-01-01"}\nsteps:\n  "on":\n'
        '    env: {START: "2024-01-01"}\n    params: {day: "2024-01-01"}\n    run: echo hi\n')
    assert main(["validate", "wf.yml"]) == 0, capsys.readouterr().err


# -- 5. an unknown option: its command's usage, and the option meant ------------------------

@pytest.mark.parametrize(("args", "said"), [
    (["run", "wf.yml", "--tags", "ingest"],
     "dagnb run: error: unrecognized arguments: --tags ingest (did you mean --tag?)"),
    (["plan", "wf.yml", "--no-cache"],
     "dagnb plan: error: unrecognized arguments: --no-cache (did you mean --cache-mode off?)"),
    (["plan", "wf.yml", "--bogus"], "dagnb plan: error: unrecognized arguments: --bogus"),
    # (an option cut short was taken for the one it begins: --only ran --only-failed)
    (["run", "wf.yml", "--only", "a"],
     "dagnb run: error: unrecognized arguments: --only a (to run some steps, name them after "
     "the file, or give --target STEP; --only-failed runs those that did not succeed last "
     "time)"),
    (["run", "wf.yml", "--exec", "local"],
     "dagnb run: error: unrecognized arguments: --exec local (did you mean --executor?)"),
])
def test_unknown_option_gets_its_commands_usage(capsys: pytest.CaptureFixture[str],
                                                args: list[str], said: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    error = capsys.readouterr().err
    assert exited.value.code == 2
    assert error.startswith(f"usage: dagnb {args[0]} [-h]"), error
    assert error.splitlines()[-1] == said
