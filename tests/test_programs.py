"""The shell of a step's shell text is looked up on PATH once, and started from there,
without changing which program runs (see dagnb.executors.programs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.executors import programs
from dagnb.executors.programs import start_program

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX scripts on PATH")


def tool(folder: Path, says: str) -> Path:
    """An executable ``tool`` in ``folder`` that prints ``says``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "tool"
    script.write_text(f"#!/bin/sh\necho {says}\n")
    script.chmod(0o755)
    return script


def output(path: str, **options: object) -> str:
    child = start_program(["tool"], env={"PATH": path}, stdout=subprocess.PIPE, **options)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    return out.decode().strip()


def test_the_program_found_once_is_started_from_there(tmp_path: Path) -> None:
    path = f"{tmp_path / 'first'}{os.pathsep}{tmp_path / 'second'}"
    tool(tmp_path / "second", "second")
    assert output(path) == "second"
    tool(tmp_path / "first", "first")  # earlier on PATH, after the lookup: not seen
    assert output(path) == "second"
    assert output(f"{path}{os.pathsep}") == "first"  # another PATH: looked up anew


def test_a_program_gone_since_it_was_found_is_searched_for_again(tmp_path: Path) -> None:
    path = f"{tmp_path / 'first'}{os.pathsep}{tmp_path / 'second'}"
    found = tool(tmp_path / "first", "first")
    tool(tmp_path / "second", "second")
    assert output(path) == "first"
    found.unlink()
    assert output(path) == "second"  # not FileNotFoundError
    found.write_text("not a program")  # there again, and no longer starts
    assert output(path) == "second"


def test_what_is_found_stays_bounded_however_many_paths_a_process_meets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool(tmp_path / "bin", "found")
    monkeypatch.setattr(programs, "_found", {})
    for index in range(programs._FOUND_LIMIT + 50):
        path = f"{tmp_path / 'bin'}{os.pathsep}{tmp_path / str(index)}"
        assert programs._program("tool", path) == str(tmp_path / "bin" / "tool")
    assert 0 < len(programs._found) <= programs._FOUND_LIMIT


def test_a_relative_folder_on_path_is_the_steps_working_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from this process's folder, ``bin/tool`` would be missed and the absolute
    folder's tool run instead."""
    monkeypatch.chdir(tmp_path)
    tool(tmp_path / "step" / "bin", "own")
    tool(tmp_path / "elsewhere", "elsewhere")
    path = f"bin{os.pathsep}{tmp_path / 'elsewhere'}"
    assert output(path, cwd=tmp_path / "step") == "own"


def test_a_program_a_steps_argv_names_is_looked_up_at_each_start(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier step may put it (a newer one) on PATH for the next."""
    tool(workdir / "later", "system")
    early = workdir / "early"
    monkeypatch.setenv("PATH", f"{early}{os.pathsep}{workdir / 'later'}{os.pathsep}"
                               f"{os.environ['PATH']}")
    install = f"mkdir -p {early} && printf '#!/bin/sh\\necho installed\\n' > {early}/tool" \
              f" && chmod +x {early}/tool"
    result = Graph("g", [
        Step("before", run=["tool"]),
        Step("install", run=install, needs=["before"]),
        Step("after", run=["tool"], needs=["install"]),
    ]).run(cache=False, executor="local")
    assert result.ok
    assert result.logs("before")["line"].tolist() == ["system"]
    assert result.logs("after")["line"].tolist() == ["installed"]
