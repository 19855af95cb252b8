"""``dagnb plan`` and ``dagnb explain`` of a step whose entry at its current key is
damaged (a file of it changed after it was stored): the entry is named damaged, as the
run says, never "no entry yet", nor an older entry's differences, which did not change."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_files import workflow_in

from dagnb.cli import main

WORKFLOW = """\
steps:
  a:
    params: {n: 1}
    run: 'echo hi > "$DAGNB_OUT/a.txt"'
"""


@pytest.fixture
def workflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return workflow_in(tmp_path, monkeypatch, WORKFLOW)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    assert main(["run", *args]) == 0
    capsys.readouterr()


def _damage(cache: Path) -> None:
    """Change the output file of the one entry of ``a`` there is."""
    (out_file,) = cache.glob("a/*/out/a.txt")
    out_file.write_text("bye\n")


def _reason(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``dagnb plan ARGS``: the reason of step a's row."""
    assert main(["plan", *args]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.split()[:1] == ["a"])
    return row.split(None, 3)[3]


def _explained(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["explain", *args]) == 0
    return capsys.readouterr().out


def test_plan_and_explain_say_the_entry_is_damaged_and_name_the_file(workflow, capsys,
                                                                     tmp_path):
    _run(capsys, *workflow)
    _damage(tmp_path / "cache")
    reason = _reason(capsys, *workflow)
    assert "no entry yet" not in reason
    assert "is damaged" in reason and "out/a.txt" in reason
    assert reason.endswith("it will run again")
    explained = _explained(capsys, workflow[0], "a", *workflow[1:])
    assert explained.splitlines() == [reason]


def test_an_older_entry_of_the_step_is_no_reason_when_the_current_one_is_damaged(
        workflow, capsys, tmp_path):
    _run(capsys, *workflow, "-p", "n=2")
    _damage(tmp_path / "cache")  # (the entry of n=2, the only one yet)
    _run(capsys, *workflow)  # an entry of n=1: the closest left when n=2's is damaged
    reason = _reason(capsys, *workflow, "-p", "n=2")
    assert "params changed" not in reason
    assert "is damaged" in reason and "out/a.txt" in reason
    explained = _explained(capsys, workflow[0], "a", *workflow[1:], "-p", "n=2")
    assert "params changed" not in explained and "is damaged" in explained


def test_a_fail_on_miss_run_says_the_entry_is_damaged(workflow, capsys, tmp_path):
    _run(capsys, *workflow)
    _damage(tmp_path / "cache")
    with pytest.warns(UserWarning) as warned:  # (the folder is writable: not read-only)
        assert main(["run", *workflow, "--cache-mode", "fail-on-miss"]) == 2
    assert [str(w.message).partition("; ")[2] for w in warned if "is damaged" in str(
        w.message)] == ["left in place (a fail-on-miss run's look ahead does not change the "
                        "cache; a run writing to it sets it aside), treated as a miss"]
    (why,) = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("  a: ")]  # (the refusal's line for the step)
    assert "is damaged" in why and "out/a.txt" in why

