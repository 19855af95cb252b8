"""``dagnb logs NOTEBOOK STEP``: the lines a notebook's step printed in its newest run that
had it, as for a workflow file. It was refused ("its steps' lines are its cells'
outputs"), though a notebook run by ``dagnb run NOTEBOOK`` in CI leaves no cell outputs
unless ``-o`` was given: a failed step's lines were nowhere to read. Every notebook's
graph is named ``notebook``, so its runs are found by their origin, its file: another
notebook of the folder, with a step of the same name, is not read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # (kernels start: CI's oldest-Python leg leaves them out)

NOTEBOOK = "# %%\n%load_ext dagnb\n\n# %%\n%%dagger load\necho {text}{end}\n"


def _dagnb(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagnb", *args], cwd=folder,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two notebooks with a step of the same name, each run; a's second run failed."""
    home = tmp_path_factory.mktemp("notebooks")
    (home / "a.py").write_text(NOTEBOOK.format(text="from-a", end=""))
    (home / "b.py").write_text(NOTEBOOK.format(text="from-b", end=""))
    for name in ("a.py", "b.py"):
        assert _dagnb(home, "run", name).returncode == 0
    (home / "a.py").write_text(NOTEBOOK.format(text="a-again", end="; exit 5"))
    assert _dagnb(home, "run", "a.py").returncode == 1
    return home


def test_a_notebook_s_failed_step_shows_its_lines_not_another_notebook_s(folder):
    done = _dagnb(folder, "logs", "a.py", "load")
    assert (done.returncode, done.stdout, done.stderr) == (0, "a-again\n", "")
    done = _dagnb(folder, "logs", str(folder / "b.py"), "load")  # (another spelling)
    assert (done.returncode, done.stdout) == (0, "from-b\n")
    assert "step 'load' succeeded in run" in done.stderr


def test_an_earlier_run_of_the_notebook_by_its_id(folder):
    records = (folder / ".dagnb_cache/.runs/records.jsonl").read_text()
    first = next(line for line in records.splitlines() if "a.py" in line)
    run_id = first.split('"run":"', 1)[1].split('"', 1)[0]
    done = _dagnb(folder, "logs", "a.py", "load", "--run", run_id)
    assert (done.returncode, done.stdout) == (0, "from-a\n")


def test_a_step_no_run_of_the_notebook_had_is_refused_with_the_closest(folder):
    done = _dagnb(folder, "logs", "a.py", "lod")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("dagnb: error: no recorded run of a.py had step 'lod' (did you "
                           "mean 'load'?); its runs had load\n")


def test_a_missing_notebook_is_named_not_taken_for_one_never_run(folder):
    done = _dagnb(folder, "logs", "c.py", "load")
    assert done.returncode == 2
    assert done.stderr.startswith("dagnb: error: notebook 'c.py' does not exist")


def test_no_step_named_lists_those_of_the_notebook_s_runs(folder):
    done = _dagnb(folder, "logs", "b.py")
    assert done.returncode == 2
    assert "name the step whose lines to show, one of load" in done.stderr
