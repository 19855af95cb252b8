"""explain of a step whose default argument is a module's constant: the code reads the
same after the constant changed, so it said only "code changed"; it now shows the
defaults' values (text by its type alone where no mask can hide a secret in it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STEPS = 'import lib.fmt\n\n\ndef dflt(x=lib.fmt.K, token=lib.fmt.TOKEN):\n    return x\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "fmt.py").write_text("K = 1\nTOKEN = 'hunter2-not-shown'\n")
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "k.yml").write_text("steps:\n  d:\n    python: steps.py:dflt\n")
    return tmp_path


def _dagnb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh process each, as a user's commands are (the module read anew)."""
    return subprocess.run([sys.executable, "-m", "dagnb", *args, "--executor", "local"],
                          cwd=cwd, capture_output=True, text=True, check=False)


def test_explain_shows_a_default_argument_whose_value_changed(project: Path) -> None:
    assert _dagnb("run", "k.yml", cwd=project).returncode == 0
    (project / "lib" / "fmt.py").write_text("K = 2\nTOKEN = 'hunter2-not-shown'\n")
    out = _dagnb("explain", "k.yml", "d", cwd=project).stdout
    assert "-# defaults: x=1, token=<str>" in out, out
    assert "+# defaults: x=2, token=<str>" in out, out
    assert "hunter2" not in out
    assert not [p for p in (project / ".dagnb_cache").rglob("*")
                if p.is_file() and b"hunter2" in p.read_bytes()]
