"""explain of a step whose mounted folder changed named the folder alone ("input data
changed"); it now names the files that changed, added or removed (the first five, then
how many more), from a small listing its entry keeps of the folder's files. A folder of
too many files to list says how many it has; an entry saved before the listing was kept
explains as it did; keys are the same with or without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import keys

WORKFLOW = """\
name: ex
steps:
  count:
    run: cat data/*.txt | wc -l
    mounts: {data: /data}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("contents of a\n")
    (tmp_path / "data" / "b.txt").write_text("contents of b\n")
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _dagnb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh process each, as a user's commands are."""
    return subprocess.run([sys.executable, "-m", "dagnb", *args, "--executor", "local"],
                          cwd=cwd, capture_output=True, text=True, check=False)


def _graph(folder: str = "data") -> dagnb.Graph:
    graph = dagnb.Graph("ex")
    graph.add(dagnb.Step("count", run=f"ls {folder} | wc -l", mounts={folder: "/data"}))
    return graph


def _run(graph: dagnb.Graph, cache: Path) -> None:
    run = graph.run(cache_directory=cache, executor="local")
    assert run.ok, run.states()


def _explain(graph: dagnb.Graph, cache: Path) -> list[str]:
    return graph.explain("count", cache_directory=cache, executor="local")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_explain_and_plan_name_the_files_that_changed(project: Path) -> None:
    assert _dagnb("run", "wf.yml", cwd=project).returncode == 0
    with (project / "data" / "b.txt").open("a") as file:
        file.write("c\n")
    (project / "data" / "new.txt").write_text("x\n")
    (project / "data" / "a.txt").unlink()
    said = "input data changed: b.txt changed, new.txt added, a.txt removed"
    explained = _dagnb("explain", "wf.yml", "count", cwd=project)
    assert explained.stdout.splitlines() == [said], explained
    planned = _dagnb("plan", "wf.yml", cwd=project).stdout
    assert said in planned, planned
    assert "contents of" not in explained.stdout + planned  # (names and digests only)


def test_five_files_are_named_and_the_rest_counted(project: Path) -> None:
    cache = project / "cache"
    data = project / "data"
    for number in range(1, 9):
        (data / f"f{number}.txt").write_text("old\n")
    (data / "sub").mkdir()
    (data / "sub" / "deep.txt").write_text("old\n")
    _run(_graph(), cache)
    for number in range(1, 9):
        (data / f"f{number}.txt").write_text("new\n")
    (data / "sub" / "deep.txt").write_text("new\n")
    assert _explain(_graph(), cache) == [
        "input data changed: f1.txt changed, f2.txt changed, f3.txt changed, "
        "f4.txt changed, f5.txt changed, and 4 more"]
    (data / "a.txt").unlink()
    _run(_graph(), cache)
    (data / "sub" / "deep.txt").write_text("newer\n")
    assert _explain(_graph(), cache) == ["input data changed: sub/deep.txt changed"]


def test_a_folder_of_too_many_files_says_how_many(project: Path) -> None:
    cache = project / "cache"
    data = project / "data"
    for number in range(keys.LISTED_FILES - 1):  # (with a.txt and b.txt: one past the cap)
        (data / f"n{number:03}.txt").write_text(f"{number}\n")
    _run(_graph(), cache)
    (data / "a.txt").write_text("changed\n")
    assert _explain(_graph(), cache) == [
        "input data changed (101 files; too many to name which)"]
    (data / "c.txt").write_text("added\n")
    assert _explain(_graph(), cache) == [
        "input data changed (102 files, 101 before; too many to name which)"]


def test_a_listed_folder_grown_past_the_cap_says_how_many(project: Path) -> None:
    cache = project / "cache"
    _run(_graph(), cache)
    for number in range(keys.LISTED_FILES):
        (project / "data" / f"n{number:03}.txt").write_text(f"{number}\n")
    assert _explain(_graph(), cache) == [
        "input data changed (102 files, 2 before; too many to name which)"]


def test_a_change_no_file_shows_names_the_folder_alone(project: Path) -> None:
    cache = project / "cache"
    _run(_graph(), cache)
    (project / "data" / "empty").mkdir()  # (counts in the key; holds no file)
    assert _explain(_graph(), cache) == ["input data changed"]


def test_an_entry_saved_without_the_listing_explains_as_before(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = project / "cache"
    listed = keys.step_key(_graph()["count"], upstream_digests={}, base_dir=project)
    made_before = keys._mount_digest

    def unlisted(*args: object, **kwargs: object) -> tuple[str, None]:
        return made_before(*args, **kwargs)[0], None  # type: ignore[arg-type]

    with monkeypatch.context() as patched:  # (an entry as a dagnb before the listing saves it)
        patched.setattr(keys, "_mount_digest", unlisted)
        old = keys.step_key(_graph()["count"], upstream_digests={}, base_dir=project)
        _run(_graph(), cache)
    assert old.digest == listed.digest  # the listing is no part of the key
    assert "files:mount:data" in listed.describe
    assert "files:mount:data" not in old.describe
    (project / "data" / "b.txt").write_text("changed\n")
    assert _explain(_graph(), cache) == ["input data changed"]


def test_a_step_that_mounts_nothing_keeps_no_listing(project: Path) -> None:
    plain = keys.step_key(dagnb.Step("count", run="true"), upstream_digests={},
                          base_dir=project)
    single = keys.step_key(dagnb.Step("count", run="true", mounts={"data/a.txt": "/a"}),
                           upstream_digests={}, base_dir=project)
    assert not [label for label in (*plain.describe, *single.describe)
                if label.startswith("files:")]
