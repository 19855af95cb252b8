"""``dagnb plan`` and ``dagnb explain``: what a run of a workflow file would do, and why a
step would run, told without running or writing anything, and borne out by the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_cli import dagnb

from dagnb.cli import main

WORKFLOW = """\
steps:
  make:
    params: {count: 3}
    run: 'cp "$DAGNB_PARAMS" "$DAGNB_OUT/params.json"'
  total:
    needs: [make]
    run: 'wc -c < "$DAGNB_IN/make/params.json" > "$DAGNB_OUT/size.txt"'
  side:
    tags: [cheap]
    run: 'echo side'
"""


@pytest.fixture
def workflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``wf.yml`` in the working folder, and the options that key it as a local run on a
    cache of its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    (tmp_path / "cache").mkdir()
    return ["wf.yml", "--executor", "local", "--cache-dir", str(tmp_path / "cache")]


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, list[str]], str]:
    """``dagnb plan ARGS``: its rows by step (the cells after the name), its last line."""
    assert main(["plan", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:2] == ["step", "cached"]))
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in lines[header + 1:-1]}
    return rows, lines[-1]


def _ran(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    """``dagnb run ARGS``: each step's state."""
    assert main(["run", *args]) == 0
    states = {}
    for line in capsys.readouterr().out.splitlines():
        cells = line.split()
        if len(cells) > 1 and cells[0] in ("make", "total", "side"):
            states[cells[0]] = cells[1]
    return states


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file()}


def test_a_plan_of_an_empty_cache_says_each_step_would_run_and_why(workflow, capsys):
    rows, last = _plan(capsys, *workflow)
    assert rows["make"][0] == "False" and "no entry yet for step 'make'" in rows["make"][2]
    assert rows["total"] == ["False", "-", "no entry yet for step 'total'"]
    assert last == "0 of 3 steps cached, 3 would run"


def test_the_plan_is_what_the_run_then_does_and_plan_writes_nothing(workflow, capsys,
                                                                    tmp_path):
    assert set(_ran(capsys, *workflow).values()) == {"succeeded"}
    cache = tmp_path / "cache"
    before = _files(cache)
    planned = dagnb("plan", *workflow, "-p", "count=5", cwd=tmp_path)  # (a process that
    assert planned.returncode == 0, planned.stderr  # ends: what it defers is written then)
    assert _files(cache) == before  # no hit counted, no entry, no journal line
    rows, last = _plan(capsys, *workflow, "-p", "count=5")
    assert rows["make"][0] == "False"
    assert "params changed: {'count': 3} → {'count': 5}" in rows["make"][2]
    assert rows["total"][0] == "False" and rows["side"][:1] == ["True"]
    assert last == "1 of 3 steps cached, 1 would run, 1 may run (if an upstream's result changes)"
    states = _ran(capsys, *workflow, "-p", "count=5")
    assert states == {"make": "succeeded", "total": "succeeded", "side": "cached"}
    rows, last = _plan(capsys, *workflow, "-p", "count=5")
    assert {row[0] for row in rows.values()} == {"True"}
    assert last == "3 of 3 steps cached, none would run"


def test_target_and_tag_narrow_the_plan_to_what_they_select(workflow, capsys):
    rows, _ = _plan(capsys, *workflow, "--target", "total")
    assert list(rows) == ["make", "total"]
    rows, last = _plan(capsys, *workflow, "--tag", "cheap")
    assert list(rows) == ["side"]
    assert last == "0 of 1 steps cached, 1 would run"


def test_explain_says_what_changed_since_the_entry_or_that_it_is_cached(workflow, capsys):
    _ran(capsys, *workflow)
    assert main(["explain", *workflow[:1], "make", *workflow[1:]]) == 0
    assert capsys.readouterr().out == "entry found: it is cached\n"
    assert main(["explain", *workflow[:1], "make", *workflow[1:], "-p", "count=4"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "params given: count=4 for make", "params changed: {'count': 3} → {'count': 4}"]
    assert main(["explain", *workflow[:1], "total", *workflow[1:], "-p", "count=4"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "may run: runs if make's result changes (make will run)")


def test_a_secret_s_value_never_shows_in_a_plan_or_an_explanation(workflow, capsys,
                                                                   monkeypatch, tmp_path):
    monkeypatch.setenv("TOKEN", "hunter2-very-secret")
    wf = tmp_path / "wf.yml"
    wf.write_text("steps:\n  a: {run: 'echo hello', secrets: [TOKEN]}\n")
    _ran(capsys, *workflow)
    wf.write_text("steps:\n  a: {run: 'echo hunter2-very-secret', secrets: [TOKEN]}\n")
    rows, _ = _plan(capsys, *workflow)
    assert rows["a"][2] == "command changed echo hello → echo ***"
    assert main(["explain", *workflow[:1], "a", *workflow[1:]]) == 0
    assert capsys.readouterr().out == "command changed echo hello → echo ***\n"


@pytest.mark.parametrize(("argv", "says"), [
    (["explain", "wf.yml", "nope"], "no step named 'nope' in the graph; its steps are make"),
    (["plan", "wf.yml", "-p", "nope=1"], "no step of 'wf.yml' has a param 'nope'"),
    (["plan", "wf.yml", "--cache-dir", "typo"], "--cache-dir 'typo': there is no folder"),
    (["plan", "nb.ipynb"], "dagnb plan reads workflow files, and 'nb.ipynb' is a notebook"),
    (["explain", "nb.ipynb", "a"], "open it and run %dagger cache explain NAME there"),
])
def test_bad_input_is_one_line_naming_it(workflow, capsys, argv, says):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dagnb: error: ") and says in lines[0]


def test_plan_prints_without_pandas(workflow, tmp_path):
    from test_cli import _imports_pandas

    assert not _imports_pandas(["plan", *workflow], tmp_path)


def test_a_plan_of_no_cache_folder_yet_makes_none(tmp_path, monkeypatch, capsys):
    """The configured folder before a first run: every step would run, and no folder
    is made (plan reads the cache, never writes it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    rows, last = _plan(capsys, "wf.yml", "--executor", "local")
    assert set(rows) == {"make", "total", "side"}
    assert last == "0 of 3 steps cached, 3 would run"
    assert os.listdir(tmp_path) == ["wf.yml"]


def test_explain_compares_a_step_with_its_own_workflows_entry_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Two workflows share a cache folder, each with a step ``build``: a one-word edit of
    wb's was explained against wa's entry, the newest of the two that each differ by
    their command alone."""
    monkeypatch.chdir(tmp_path)
    options = ["--executor", "local", "--cache-dir", str(tmp_path / "cache")]
    (tmp_path / "wb.yml").write_text("name: wb\nsteps:\n  build: {run: echo B}\n")
    (tmp_path / "wa.yml").write_text("name: wa\nsteps:\n  build: {run: echo A}\n")
    assert main(["run", "wb.yml", *options]) == 0
    assert main(["run", "wa.yml", *options]) == 0  # (the newer entry)
    (tmp_path / "wb.yml").write_text("name: wb\nsteps:\n  build: {run: echo B2}\n")
    capsys.readouterr()
    assert main(["explain", "wb.yml", "build", *options]) == 0
    assert capsys.readouterr().out == "command changed echo B → echo B2\n"
