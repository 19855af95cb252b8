"""``dagnb logs`` under NO_COLOR (https://no-color.org): a step's own colour codes left
out on a terminal, the stored log kept as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dagnb.cli import main

COLOURED = "steps:\n  paint: {run: \"printf '\\\\033[31mred\\\\033[0m plain\\\\n'\"}\n"


@pytest.fixture
def painted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
    """A run of a step printing a red word, in ``tmp_path`` (made the current folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    (tmp_path / "wf.yml").write_text(COLOURED)
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    capsys.readouterr()


def _logs_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # (capsys's stdout)
    assert main(["logs", "wf.yml", "paint"]) == 0
    return capsys.readouterr().out


@pytest.mark.usefixtures("painted")
def test_logs_on_a_terminal_leave_out_a_steps_colour_under_no_color(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert _logs_on_a_terminal(monkeypatch, capsys) == "red plain\n"
    monkeypatch.delenv("NO_COLOR")  # (the stored log keeps its colour)
    assert _logs_on_a_terminal(monkeypatch, capsys) == "\x1b[31mred\x1b[0m plain\x1b[0m\n"


@pytest.mark.usefixtures("painted")
def test_an_empty_no_color_keeps_colour_and_a_pipe_shows_escapes_as_before(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NO_COLOR", "")  # (no-color.org: set and not empty)
    assert _logs_on_a_terminal(monkeypatch, capsys) == "\x1b[31mred\x1b[0m plain\x1b[0m\n"
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(["logs", "wf.yml", "paint"]) == 0
    assert capsys.readouterr().out == "\\x1b[31mred\\x1b[0m plain\n"


FAILING = "steps:\n  paint: {run: \"printf '\\\\033[31mred\\\\033[0m plain\\\\n'; exit 3\"}\n"


@pytest.mark.parametrize(("no_color", "shown"), [
    ("1", "red plain"), ("", "\x1b[31mred\x1b[0m plain\x1b[0m")], ids=["set", "empty"])
def test_a_failed_runs_tail_on_a_terminal_leaves_out_colour_under_no_color(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        no_color: str, shown: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", no_color)
    (tmp_path / "wf.yml").write_text(FAILING)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # (capsys's stdout)
    assert main(["run", "wf.yml", "--executor", "local"]) == 1
    tail = [line for line in capsys.readouterr().out.splitlines() if "plain" in line]
    assert [line.strip() for line in tail] == [shown]
