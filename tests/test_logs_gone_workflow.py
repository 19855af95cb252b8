"""``dagnb logs`` of a workflow file renamed or removed since its runs: ``dagnb history
old.yml --run RUN`` named ``dagnb logs old.yml s --run RUN`` for a failed step's lines,
and that command refused the file as missing, though the runs record it; now it reads
them from the records, as history does, saying the file is gone."""

from __future__ import annotations

import re

import pytest

from dagnb.cli import main

FAILING = "steps:\n  s:\n    run: |\n      echo hello-from-s\n      exit 1\n"


def _dagnb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("gone", ["renamed", "removed"])
def test_logs_of_a_gone_workflow_file_read_its_run_records(tmp_path, monkeypatch, capsys,
                                                            gone):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yml").write_text(FAILING)
    code, out, _ = _dagnb(capsys, "run", "old.yml", "--executor", "local")
    assert code == 1
    run_id = re.search(r"^run (\S+) \(old\)", out, re.M).group(1)
    if gone == "renamed":
        (tmp_path / "old.yml").rename(tmp_path / "new.yml")
    else:
        (tmp_path / "old.yml").unlink()
    _, told, _ = _dagnb(capsys, "history", "old.yml", "--run", run_id)
    command = f"dagnb logs old.yml s --run {run_id}"
    assert command in told
    code, out, err = _dagnb(capsys, *command.split()[1:])
    assert (code, out) == (0, "hello-from-s\n")
    assert err == (f"dagnb: old.yml is gone (renamed or removed since); step 's' read from "
                   f"its run records: its lines in run {run_id}\n")
    assert _dagnb(capsys, "logs", "old.yml", "s")[1] == "hello-from-s\n"


def test_logs_of_a_file_never_run_here_is_still_refused_as_missing(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yml").write_text(FAILING)
    _dagnb(capsys, "run", "old.yml", "--executor", "local")
    code, _, err = _dagnb(capsys, "logs", "olf.yml", "s")
    assert code == 2
    assert err == ("dagnb: error: workflow file 'olf.yml' does not exist; did you mean "
                   "'old.yml'?\n")
