"""An in-process Python step that changes the process's working folder leaves it as it
was for the steps after it: they would run elsewhere on a fresh cache than on a warm
one, where that step does not run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Step


def graph_in(tmp_path: Path) -> Graph:
    exports = tmp_path / "exports"

    def export() -> str:
        exports.mkdir(exist_ok=True)
        os.chdir(exports)
        return "ok"

    def load(export: str) -> str:
        return os.getcwd()

    return Graph("folders", [Step("export", func=export),
                             Step("load", func=load, needs=["export"])])


def test_a_step_that_changes_folder_leaves_the_next_one_where_the_run_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = graph_in(tmp_path).run(cache=False, executor="local")
    assert run.ok
    assert run.result("load") == str(tmp_path)
    assert os.getcwd() == str(tmp_path)
    said = [str(w.message) for w in caught if "working folder" in str(w.message)]
    assert said == [f"step 'export' changed the working folder to "
                    f"{str(tmp_path / 'exports')!r}; dagnb changed it back to "
                    f"{str(tmp_path)!r}, as a later step would not see it once 'export' "
                    "comes from the cache; give paths from a folder instead of changing "
                    "to it, or change back before the step returns"]


def test_a_cached_run_and_a_fresh_one_see_the_same_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = graph_in(tmp_path).run(cache_directory=cache, executor="local")
        second = graph_in(tmp_path).run(cache_directory=cache, executor="local")
    assert first.ok and second.ok
    assert first.result("load") == second.result("load") == str(tmp_path)


def test_a_folder_changed_between_runs_is_where_the_next_run_s_steps_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder a run's steps go back to is looked at again at each run (a notebook's
    cell may change folder between two): not the one the last run's steps ran in."""
    def here() -> str:
        return os.getcwd()

    graph = Graph("where", [Step("here", func=here)])
    for folder in (tmp_path / "one", tmp_path / "two"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (no step changed folder: nothing to say)
            run = graph.run(cache=False, executor="local")
        assert run.result("here") == str(folder) == os.getcwd()
