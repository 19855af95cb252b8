"""Workflows of one project share a cache folder and step names (``extract`` in sales.yml
and in hr.yml): ``dagnb cache clear --step extract`` took both workflows' entries, and
``cache list`` could not tell them apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main


def _two_workflows_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("sales", "hr"):
        (tmp_path / f"{name}.yml").write_text(
            f"name: {name}\nsteps:\n  extract:\n    run: echo {name} > $DAGNB_OUT/d\n"
            "  load:\n    run: echo loaded\n    needs: [extract]\n")
        assert main(["run", f"{name}.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    return tmp_path / ".dagnb_cache"


def _listed(capsys, *options: str) -> list[list[str]]:
    assert main(["cache", "list", *options]) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines()]


def _steps_of(rows: list[list[str]]) -> list[tuple[str, str]]:
    """(step, workflow) of each row of a listing with a workflow column."""
    return [(row[0], row[-1]) for row in rows[1:]]


def test_the_list_shows_each_entrys_workflow_where_there_are_several(tmp_path, monkeypatch,
                                                                     capsys):
    _two_workflows_cached(tmp_path, monkeypatch, capsys)
    rows = _listed(capsys)
    assert rows[0][-1] == "workflow"
    assert sorted(_steps_of(rows)) == [("extract", "hr"), ("extract", "sales"),
                                       ("load", "hr"), ("load", "sales")]
    only_hr = _listed(capsys, "--workflow", "hr")
    assert "workflow" not in only_hr[0]  # (one workflow: no column)
    assert len(only_hr) == 3


def test_clearing_a_step_of_several_workflows_names_them_and_keeps_every_entry(
        tmp_path, monkeypatch, capsys):
    cache = _two_workflows_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", "clear", "--step", "extract"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"dagnb: error: --step 'extract': the cache in '{cache}' holds its "
                     "entries of 2 workflows (hr, sales); add the workflow's, e.g. "
                     "--workflow hr, or --workflow hr --workflow sales for all")
    assert len(_listed(capsys)) == 5  # (nothing removed)


def test_clearing_one_workflows_step_keeps_the_others(tmp_path, monkeypatch, capsys):
    cache = _two_workflows_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", "clear", "--step", "extract", "--workflow", "hr"]) == 0
    assert capsys.readouterr().out == (
        f"removed 1 cache entry of step 'extract' of workflow 'hr' from {cache}\n")
    assert sorted(_steps_of(_listed(capsys))) == [("extract", "sales"), ("load", "hr"),
                                                  ("load", "sales")]
    assert main(["plan", "sales.yml"]) == 0
    assert "none would run" in capsys.readouterr().out


def test_a_workflow_name_with_no_entry_is_refused_naming_those_there(tmp_path, monkeypatch,
                                                                      capsys):
    cache = _two_workflows_cached(tmp_path, monkeypatch, capsys)
    for action in ("list", "clear"):
        assert main(["cache", action, "--step", "extract", "--workflow", "hr.yml"]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error == (f"dagnb: error: --workflow 'hr.yml': no entry of a workflow of that "
                         f"name in '{cache}'; its entries are of 'hr', 'sales' (a workflow's "
                         "name is its name: field, or its file's name without .yml)")
    assert len(_listed(capsys)) == 5


def test_a_step_of_one_workflow_clears_as_before(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text("name: w\nsteps:\n  a:\n    run: echo a\n")
    assert main(["run", "w.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["cache", "clear", "--step", "a"]) == 0
    assert capsys.readouterr().out.startswith("removed 1 cache entry of step 'a' from ")


def test_a_notebooks_clear_of_its_step_keeps_a_workflow_files_step_of_that_name(
        shell, workdir: Path, capsys):
    (workdir / "sales.yml").write_text("name: sales\nsteps:\n  load:\n    run: echo sales\n")
    assert main(["run", "sales.yml", "--executor", "local"]) == 0
    shell.run_cell_magic("dagger", "load", "echo notebook\n")
    capsys.readouterr()
    assert shell.run_line_magic("dagger", "cache clear load") == "removed 1 cache entry of 'load'"
    rows = _listed(capsys)
    assert [row[0] for row in rows[1:]] == ["load"]  # (sales' own, kept)
    assert main(["plan", "sales.yml"]) == 0
    assert "none would run" in capsys.readouterr().out


def test_a_workflow_alone_clears_its_entries_and_all_with_it_is_refused(
        tmp_path, monkeypatch, capsys):
    cache = _two_workflows_cached(tmp_path, monkeypatch, capsys)
    assert main(["cache", "clear", "--all", "--workflow", "hr"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "dagnb: error: --all clears every entry; give it alone, or --workflow NAME without it")
    assert main(["cache", "clear", "--workflow", "hr"]) == 0
    assert capsys.readouterr().out == f"removed 2 cache entries of workflow 'hr' from {cache}\n"
    assert len(_listed(capsys)) == len(_listed(capsys, "--workflow", "sales")) == 3  # (sales')
