"""A script's Memory functions in two checkouts of one project (a teammate's, CI's, on
one shared cache) are named alike: by the script's path within the project (the nearest
folder above it holding ``.git`` or ``pyproject.toml``), so the second checkout's call is
a hit; two scripts of one name in two folders of a project stay apart, and a script in
no project is named by its absolute path, as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_memory_session64 import _run, _runs, _scripts


def _checkouts(tmp_path: Path, top: str, relative: str) -> list[Path]:
    scripts = _scripts(tmp_path, f"alice/proj/{relative}", f"ci/build-7/{relative}")
    for checkout in ("alice/proj", "ci/build-7"):
        mark = tmp_path / checkout / top
        mark.mkdir() if top == ".git" else mark.write_text("[project]\nname = 'p'\n")
    return scripts


@pytest.mark.parametrize("top", [".git", "pyproject.toml"])
def test_two_checkouts_of_a_project_share_a_script_s_entries(tmp_path, top):
    mine, theirs = _checkouts(tmp_path, top, "jobs/train.py")
    cache = tmp_path / "shared-cache"
    name, stored = _run(mine, cache, "call")
    assert stored and _runs(mine) == 1
    assert _run(theirs, cache, "call") == (name, True)
    assert _runs(theirs) == 0  # a hit: the teammate's call did not run
    assert name.startswith("__main__-train-")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_two_scripts_of_one_name_in_one_project_stay_apart(tmp_path):
    first, second = _scripts(tmp_path, "proj/a/train.py", "proj/b/train.py")
    (tmp_path / "proj" / ".git").mkdir()
    cache = tmp_path / "cache"
    one, _ = _run(first, cache, "call")
    two, _ = _run(second, cache, "call")
    assert one != two and (_runs(first), _runs(second)) == (1, 1)
    assert _run(first, cache, "clear") == (one, False)
    assert _run(second, cache, "none") == (two, True)  # the other's is kept


def test_copies_of_a_script_in_no_project_are_two_scripts(tmp_path):
    first, second = _scripts(tmp_path, "x/train.py", "y/train.py")
    cache = tmp_path / "cache"
    assert _run(first, cache, "call")[0] != _run(second, cache, "call")[0]
    assert (_runs(first), _runs(second)) == (1, 1)
