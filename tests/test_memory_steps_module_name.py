"""A ``dagnb.Memory`` function of a workflow's ``python:`` module is stored under a
path-free name, so two checkouts of the workflow on one cache share its entries (each
teammate computed every call again: the name held the digest of the module's path)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
import test_remote_cache as shared
import test_remote_session68 as session68

from dagnb.cache.memory import _step_name
from dagnb.cache.store import Store
from dagnb.cli import main

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
_fresh_clients = session68._fresh_clients  # (autouse: s3fs keeps its clients)

STEPS = '''\
from dagnb import Memory

memory = Memory({memory!r})


@memory.cache
def cube(x):
    with open({marker!r}, "a") as ran:  # (one line per call run, a hit writes none)
        ran.write("ran\\n")
    return x ** 3


def make():
    return cube(3)
'''


def _checkout(folder: Path, memory: Path | str, marker: Path) -> Path:
    folder.mkdir()
    (folder / "msteps.py").write_text(STEPS.format(memory=str(memory), marker=str(marker)))
    (folder / "wf.yml").write_text("name: wf\nsteps:\n  make:\n    python: msteps.py:make\n")
    return folder


def test_two_checkouts_share_a_steps_modules_memory_entries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each checkout runs its step (its own step cache: the step runs in both), whose
    ``cube(3)`` is a miss in the first and a hit in the second."""
    memory, marker = tmp_path / "mem", tmp_path / "ran.txt"
    for name in ("a", "b"):
        monkeypatch.chdir(_checkout(tmp_path / name, memory, marker))
        assert main(["run", "wf.yml", "--executor", "local"]) == 0
    assert marker.read_text() == "ran\n"  # b's call was a hit on a's entry
    assert [name for name in Store(memory).step_names() if "." in name] == [
        "dagnb_steps.msteps.cube"]


def test_a_steps_modules_name_is_its_file_stem_under_dagnb_steps() -> None:
    """The path digest is left out; no step (no dot) nor importable module (none lives
    under dagnb's ``dagnb_steps``) has that name. A module that only looks like one
    keeps its name, and so does a script's function (``__main__-...``: two scripts)."""
    def cube() -> None: ...

    for module, stored in [("dagnb_steps_msteps_6621bb57", "dagnb_steps.msteps.cube"),
                           ("dagnb_steps_my_steps_10e5bc4d", "dagnb_steps.my_steps.cube"),
                           ("dagnb_steps_msteps", "dagnb_steps_msteps.cube"),
                           ("msteps", "msteps.cube")]:
        cube.__module__, cube.__qualname__ = module, "cube"
        assert _step_name(cube) == stored


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_two_checkouts_share_them_on_a_store_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """The QA's case: ``Memory("s3://...")`` (moto's server), each checkout with its own
    local tier (its ``.dagnb_cache``): b downloads a's entry, named once in the store."""
    marker = tmp_path / "ran.txt"
    for name in ("a", "b"):
        monkeypatch.chdir(_checkout(tmp_path / name, url, marker))
        assert main(["run", "wf.yml", "--executor", "local"]) == 0
    assert marker.read_text() == "ran\n"
    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    assert [Path(found).name for found in fs.ls(f"{root}/entries", detail=False)] == [
        "dagnb_steps.msteps.cube"]
