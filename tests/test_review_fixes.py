"""Fixes from a review of a day's commits: a notebook's ``%cd`` (the relative cache
folder pinned at ``%load_ext dagnb``) keeps ``Memory()`` on its steps' cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dagnb
from dagnb.cache.location import local_folder, pin_relative_folder


@pytest.fixture
def notebook_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook's folder, the kernel's working one, with a ``sub`` folder to ``%cd``
    into; the cache folder the default, relative one. (The pin goes with the test's
    fresh context.)"""
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGNB_CACHE_DIRECTORY", raising=False)
    assert dagnb.settings().cache_directory == ".dagnb_cache"
    return tmp_path


def test_memory_with_a_relative_folder_keeps_the_notebooks_cache_after_cd(notebook_folder):
    """The pin was read for steps only: after a %cd a Memory() started a second cache
    in the new folder, where every cached call ran again."""
    pin_relative_folder(notebook_folder)  # (as %load_ext dagnb does)
    os.chdir("sub")  # (as %cd sub does)
    memory = dagnb.Memory()
    assert Path(memory.store.location) == notebook_folder / ".dagnb_cache" == local_folder()
    calls = []

    @memory.cache
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(2) == 4 and double(2) == 4 and calls == [2]
    assert not (notebook_folder / "sub" / ".dagnb_cache").exists()


def test_a_run_after_the_pin_uses_the_pinned_folder_not_the_one_remembered(notebook_folder):
    """A run before %load_ext remembered its working directory's cache folder, and the
    runs after the pin went on using it."""
    graph = dagnb.Graph("g", [dagnb.Step("a", run="true")])
    os.chdir("sub")
    graph.run(executor="local")
    assert (notebook_folder / "sub" / ".dagnb_cache" / ".runs").is_dir()
    pin_relative_folder(notebook_folder)
    graph.run(executor="local")
    assert (notebook_folder / ".dagnb_cache" / ".runs").is_dir()
