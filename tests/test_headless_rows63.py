"""`dagnb run NOTEBOOK`'s last word on its steps: the final table shows how each step
ended (a --background cell's steps read `pending` there), and `dagnb history` names each
notebook's runs by its file (every notebook's graph is "notebook")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat as nbf
import pytest

from dagnb.runtime import history

_TABLE_HEADER = re.compile(r"^step\s+state\s+cached\s+attempts\b")


def _write_notebook(path: Path, *sources: str) -> Path:
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell("%load_ext dagnb"),
                                         *map(nbf.v4.new_code_cell, sources)]), path)
    return path


def _dagnb(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CONFIG": "none", "DAGNB_EXECUTOR": "local"}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _final_states(stdout: str) -> dict[str, str]:
    """Step -> state, from the status table `dagnb run NOTEBOOK` prints last."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if _TABLE_HEADER.match(line))
    return {line.split()[0]: line.split()[1] for line in lines[start + 1:] if line.strip()}


@pytest.mark.slow
def test_the_final_table_shows_how_a_background_cells_steps_ended(tmp_path: Path) -> None:
    """`a` ran in its cell, then the --background run of `bg` was served it cached: the
    table read `a pending` (the background run's row at its start), and on the second
    run `bg pending` too, though every step ended succeeded or cached."""
    _write_notebook(tmp_path / "bg.ipynb", "%%dagger a\necho a > $DAGNB_OUT/a",
                    "%%dagger bg --background --needs a\necho bg", "print('next cell')")
    first = _dagnb("run", "bg.ipynb", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert _final_states(first.stdout) == {"a": "succeeded", "bg": "succeeded"}
    second = _dagnb("run", "bg.ipynb", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert _final_states(second.stdout) == {"a": "cached", "bg": "cached"}


@pytest.fixture(scope="module")
def two_notebooks_run(tmp_path_factory: pytest.TempPathFactory
                      ) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """sales.ipynb and churn.ipynb, beside each other, each run headless once."""
    folder = tmp_path_factory.mktemp("notebooks")
    runs = []
    for name in ("sales", "churn"):
        _write_notebook(folder / f"{name}.ipynb", f"%%dagger {name}_step\necho {name}")
        runs.append(_dagnb("run", f"{name}.ipynb", cwd=folder))
        assert runs[-1].returncode == 0, runs[-1].stderr
    return folder, runs


@pytest.mark.slow
def test_history_names_each_headless_notebook_run_by_its_file(
        two_notebooks_run: tuple[Path, list[subprocess.CompletedProcess[str]]]) -> None:
    """Both were listed as `notebook`: the headless kernel was not told its file."""
    folder, _ = two_notebooks_run
    listed = _dagnb("history", cwd=folder)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [row[3] for row in rows] == ["sales.ipynb", "churn.ipynb"]


@pytest.mark.slow
def test_history_of_a_notebook_lists_its_runs_alone(
        two_notebooks_run: tuple[Path, list[subprocess.CompletedProcess[str]]],
        tmp_path: Path) -> None:
    """Named as a workflow file is: it was refused, pointing at every run's list."""
    folder, _ = two_notebooks_run
    listed = _dagnb("history", "churn.ipynb", cwd=folder)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [row[3] for row in rows] == ["churn.ipynb"]
    # (by another spelling of its path: through a link to its folder)
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    linked = _dagnb("history", "churn.ipynb", "--cache-dir", str(folder / ".dagnb_cache"),
                    cwd=tmp_path / "link")
    assert [line.split()[3] for line in linked.stdout.splitlines()[1:]] == ["churn.ipynb"]
    _write_notebook(folder / "never.ipynb", "%%dagger never_step\necho never")
    never = _dagnb("history", "never.ipynb", cwd=folder)
    assert never.returncode == 0 and never.stdout.startswith("no run of never.ipynb recorded")
    typo = _dagnb("history", "chrun.ipynb", cwd=folder)
    assert (typo.returncode, typo.stdout) == (2, "")
    assert typo.stderr == ("dagnb: error: notebook 'chrun.ipynb' does not exist; did you mean "
                           "'churn.ipynb'?\n")


def test_history_names_two_notebooks_of_one_name_by_their_paths_from_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As two workflow files of one name are; a script's graph keeps its graph's name."""
    from dagnb.cli.history import _shown_names

    monkeypatch.chdir(tmp_path)
    records = [{"graph": "notebook", "origin": str(tmp_path / folder / "nb.ipynb")}
               for folder in ("a", "b")]
    script = {"graph": "graph", "origin": str(tmp_path / "make.py")}
    assert _shown_names([*records, script]) == {
        str(tmp_path / "a" / "nb.ipynb"): os.path.join("a", "nb.ipynb"),
        str(tmp_path / "b" / "nb.ipynb"): os.path.join("b", "nb.ipynb")}


@pytest.mark.slow
def test_the_kernel_is_not_warned_of_the_variable_naming_its_notebook(
        two_notebooks_run: tuple[Path, list[subprocess.CompletedProcess[str]]]) -> None:
    """DAGNB_NOTEBOOK_FILE is dagnb's own, not a misspelt setting."""
    _, runs = two_notebooks_run
    for run in runs:
        assert "DAGNB_NOTEBOOK_FILE" not in run.stdout + run.stderr


def _as_kernel(monkeypatch: pytest.MonkeyPatch, **names: str) -> None:
    """Make the process a kernel: ``__main__`` has no file, only the given names."""
    kernel_main = type(sys)("__main__")
    for name, value in names.items():
        setattr(kernel_main, name, value)
    monkeypatch.setitem(sys.modules, "__main__", kernel_main)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def test_a_headless_kernels_origin_is_the_notebook_dagnb_run_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_kernel(monkeypatch)
    monkeypatch.delenv("DAGNB_NOTEBOOK_FILE", raising=False)
    assert history.graph_origin() is None
    monkeypatch.setenv("DAGNB_NOTEBOOK_FILE", str(tmp_path / "sales.ipynb"))
    assert history.graph_origin() == str(tmp_path / "sales.ipynb")


def test_the_front_ends_notebook_comes_before_dagnb_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = tmp_path / "opened.ipynb"
    opened.write_text("{}", encoding="utf-8")
    _as_kernel(monkeypatch, __session__=str(opened))
    monkeypatch.setenv("DAGNB_NOTEBOOK_FILE", str(tmp_path / "other.ipynb"))
    assert history.graph_origin() == str(opened)
