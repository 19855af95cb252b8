"""`dagnb run NOTEBOOK`: every fail-on-miss refusal exits 2 (one a cell wraps, one a
step fails on) and a real failure 1; the error names the cell that failed; the runs of
a notebook given `-p` record the params, which `dagnb history` shows."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat as nbf
import pytest
from test_headless_session65 import _dagnb, _write

from dagnb.cli.history import _params_mask
from dagnb.notebook.headless import NotebookOutcome
from dagnb.runtime import history

_WRAPPED = ("import dagnb\n"
            "try:\n"
            "    get_ipython().run_cell_magic('dagger', 'a', 'echo a')\n"
            "except dagnb.CacheMissError as refused:\n"
            "    raise RuntimeError('the cache is not filled') from refused")


@pytest.mark.slow
def test_a_refusal_a_cell_wraps_exits_2_naming_the_cell(tmp_path: Path) -> None:
    """It exited 1 (the cell raised a RuntimeError), after `a cell of nb.ipynb failed:`."""
    path = _write(tmp_path, "x = 1", _WRAPPED)
    done = _dagnb("run", path.name, "--executor", "local", "--cache-mode", "fail-on-miss",
                  cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "dagnb: cell 3 of nb.ipynb (which starts 'import dagnb') failed:\n"), done.stderr
    assert done.stderr.rstrip().endswith("RuntimeError: the cache is not filled")


# a step run read-write by its cell's option, whose dagnb.Memory call the setting refuses
_MEMORY = ("import dagnb\nmemory = dagnb.Memory('memo')\n"
           "@memory.cache\ndef square(x):\n    return x * x")
_REFUSED_IN_STEP = "%%dagger fit --python --cache-mode read-write\nsquare(3)"
_REAL_FAILURE = "%%dagger fit --python --cache-mode read-write\nraise ValueError('no rows')"


@pytest.mark.slow
@pytest.mark.parametrize(("cell", "code"), [(_REFUSED_IN_STEP, 2), (_REAL_FAILURE, 1)])
def test_a_step_that_fails_on_a_refusal_exits_2_and_one_that_fails_1(tmp_path: Path,
                                                                     cell: str, code: int):
    """The refused Memory call exited 1: the cell raised RunFailed."""
    path = _write(tmp_path, _MEMORY, cell)
    done = _dagnb("run", path.name, "--executor", "local", "--cache-mode", "fail-on-miss",
                  cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert "dagnb: cell 3 of nb.ipynb (step 'fit') failed:\n" in done.stderr


@pytest.mark.parametrize(("rows", "error_name", "code"), [
    ([{"step": "a", "state": "failed", "error": "CacheMissError: no stored call"}], None, 2),
    ([{"step": "a", "state": "failed", "error": "dagnb.errors.CacheMissError: x"},
      {"step": "b", "state": "skipped"}], "RunFailed", 2),
    ([{"step": "a", "state": "failed", "error": "CacheMissError: no stored call"},
      {"step": "b", "state": "failed", "error": "ValueError: no rows"}], None, 1),
    ([{"step": "a", "state": "failed", "error": "ValueError: no rows"}], "CacheMissError", 1),
    ([{"step": "a", "state": "succeeded"}], "ZeroDivisionError", 1),
])
def test_only_refusals_exit_2(rows: list[dict], error_name: str | None, code: int) -> None:
    """A --background cell's step that failed on a refusal (no cell raised) exited 1; a
    real failure beside a refusal exits 1."""
    error = None if error_name is None else f"{error_name}: ..."
    assert NotebookOutcome(rows, error, error_name).exit_code == code


@pytest.mark.slow
def test_history_shows_the_params_a_notebook_run_was_given(tmp_path: Path) -> None:
    """The params column was empty for a notebook's runs."""
    path = _write(tmp_path, "n = 1", "%%dagger count --python --param n=$n\nprint(n)")
    notebook = nbf.read(path, as_version=4)
    notebook.cells[1].metadata["tags"] = ["parameters"]
    nbf.write(notebook, path)
    done = _dagnb("run", path.name, "-p", "n=5", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records, _ = history.recorded_runs(tmp_path / ".dagnb_cache")
    assert [record.get("params") for record in records] == [{"n": 5}]
    listed = _dagnb("history", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[-1] == "params" and row.split()[-1] == '{"n":5}', listed.stdout


def test_history_masks_a_secret_the_notebook_declares_in_its_params(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the secrets of workflow files masked a run's params, not a notebook's."""
    path = _write(tmp_path, "%%dagger call --secret API_TOKEN\necho $API_TOKEN")
    monkeypatch.setenv("API_TOKEN", "tok-8c1f2e9a7b")
    records = [{"graph": "notebook", "origin": str(path),
                "params": {"who": "tok-8c1f2e9a7b"}}]
    shown = _params_mask(None, records)(json.dumps(records[0]["params"]))
    assert "tok-8c1f2e9a7b" not in shown and "who" in shown
