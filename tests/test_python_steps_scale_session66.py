"""Loading a workflow of many Python steps reads and parses their module once, not once
per step (a 5,000-step file of a 3,000-line module took six minutes), and reads it again
when it is edited: a notebook kernel loads its workflows again and again."""

from __future__ import annotations

import ast
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb import WorkflowError

STEPS = "import os\nimport scale_helper\n\n\ndef work(n=0):\n    return scale_helper.BASE + n\n"
AN_HOUR = 3600 * 10**9


@pytest.fixture
def scale_helper() -> Any:
    """Forgets the ``scale_helper`` module the steps import, before and after."""
    sys.modules.pop("scale_helper", None)
    yield
    sys.modules.pop("scale_helper", None)


@pytest.fixture
def bytecode_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python writes ``.pyc`` files, as it does for users (CI's environment may not)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def _workflow(folder: Path, steps: int, module: str = STEPS) -> Path:
    """``wf.yml`` of ``steps`` chained steps calling ``steps.py:work``, whose helper
    ``scale_helper.py`` is beside it."""
    folder.mkdir(exist_ok=True)
    (folder / "steps.py").write_text(module)
    (folder / "scale_helper.py").write_text("BASE = 100\n")
    lines = ["steps:"]
    for i in range(steps):
        lines.append(f"  s{i}: {{python: 'steps.py:work', params: {{n: {i}}}"
                     + (f", needs: [s{i - 1}]" if i else "") + "}")
    (folder / "wf.yml").write_text("\n".join(lines) + "\n")
    return folder / "wf.yml"


def _written_an_hour_ago(*files: Path) -> None:
    """Files not just written (a just-written file is read at each ask for a moment: a
    write in the same tick of the filesystem's clock could keep its stat)."""
    for file in files:
        old = file.stat().st_mtime_ns - AN_HOUR
        os.utime(file, ns=(old, old))


@pytest.mark.usefixtures("workdir", "scale_helper")
def test_a_200_step_workflow_reads_and_parses_its_module_and_helper_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _workflow(tmp_path / "many", 200)
    steps, helper = path.parent / "steps.py", path.parent / "scale_helper.py"
    _written_an_hour_ago(steps, helper)
    reads: Counter[str] = Counter()
    parses: Counter[str] = Counter()
    read_bytes, parse = Path.read_bytes, ast.parse

    def counting_read(self: Path) -> bytes:
        reads[self.name] += 1
        return read_bytes(self)

    def counting_parse(source: Any, *args: Any, **kwargs: Any) -> ast.AST:
        text = source.decode() if isinstance(source, bytes) else source
        parses.update(name for name, body in (("steps.py", STEPS), ("scale_helper.py",
                      "BASE = 100\n")) if text == body)
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(ast, "parse", counting_parse)
    graph = dagnb.load(path)
    assert graph["s199"].func(n=1) == 101
    # (each file: its digest, then its imports; the old code read steps.py twice a step)
    assert reads["steps.py"] <= 2 and reads["scale_helper.py"] <= 2, reads
    assert parses == {"steps.py": 1, "scale_helper.py": 1}, parses


@pytest.mark.usefixtures("workdir", "scale_helper", "bytecode_written")
def test_a_module_edited_at_once_in_the_same_tick_and_size_is_run_again(tmp_path: Path) -> None:
    path = _workflow(tmp_path / "edited", 3)
    assert dagnb.load(path)["s2"].func(n=1) == 101
    steps = path.parent / "steps.py"
    steps.write_text(STEPS.replace("BASE + n", "BASE - n"))  # (same size, just after)
    assert dagnb.load(path)["s2"].func(n=1) == 99


@pytest.mark.usefixtures("workdir", "scale_helper", "bytecode_written")
def test_a_module_edited_within_its_filesystem_s_clock_tick_is_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem of coarse timestamps: an edit just after a load, at the same size,
    leaves the file's stat as it was (frozen here); its text is compared again."""
    path = _workflow(tmp_path / "tick", 3)
    steps = (path.parent / "steps.py").resolve()  # (the path dagnb stats)
    assert dagnb.load(path)["s2"].func(n=1) == 101
    before, stat = steps.stat(), Path.stat
    steps.write_text(STEPS.replace("BASE + n", "BASE - n"))
    monkeypatch.setattr(Path, "stat", lambda self, **kw: before if self == steps
                        else stat(self, **kw))
    assert dagnb.load(path)["s2"].func(n=1) == 99


@pytest.mark.usefixtures("workdir", "scale_helper", "bytecode_written")
def test_a_module_edited_after_a_load_with_its_old_mtime_put_back_is_run_again(
        tmp_path: Path) -> None:
    path = _workflow(tmp_path / "touched", 3)
    steps = path.parent / "steps.py"
    _written_an_hour_ago(steps)
    assert dagnb.load(path)["s2"].func(n=1) == 101
    mtime = steps.stat().st_mtime_ns
    steps.write_text(STEPS.replace("BASE + n", "BASE * n"))  # (same size; a checkout's
    os.utime(steps, ns=(mtime, mtime))                       # old mtime: its ctime tells)
    assert dagnb.load(path)["s2"].func(n=1) == 100


@pytest.mark.usefixtures("workdir", "scale_helper")
def test_an_import_added_by_an_edit_is_checked_against_another_folder_s_module(
        tmp_path: Path) -> None:
    dagnb.load(_workflow(tmp_path / "a", 2))  # (its scale_helper is the process's now)
    alone = STEPS.replace("import scale_helper\n", "").replace("scale_helper.BASE", "100")
    second = _workflow(tmp_path / "b", 2, alone)
    assert dagnb.load(second)["s1"].func(n=1) == 101
    (second.parent / "steps.py").write_text(STEPS)
    with pytest.raises(WorkflowError, match=r"steps\.py imports 'scale_helper', the module "
                       r".*b/scale_helper\.py' beside it, but .*a/scale_helper\.py'"):
        dagnb.load(second)
