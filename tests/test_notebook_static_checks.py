"""`dagnb graph/validate/run NOTEBOOK` refuse, before any kernel starts, what a notebook's
cells would fail on when they run: no `%load_ext dagnb` before the first `%%dagger` cell,
a cell's bad option, unknown upstream or bad Python, one step defined by two different
cells (QA of "a notebook as a pipeline")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat as nbf
import pytest

from dagnb.cli import main

MARK = "open('ran', 'w').close()"  # a first cell that shows whether the notebook ran
LOAD = "%load_ext dagnb"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # (not the user's profile)


def _notebook(*cells: str, name: str = "nb.ipynb") -> str:
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell(c) for c in cells]), name)
    return name


def _said(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# -- 1. %%dagger before %load_ext dagnb ------------------------------------------------------

NO_LOAD = ("dagnb: error: nb.ipynb: cell 2 ('%%dagger a') is a %%dagger cell, but no cell "
           "before it runs `%load_ext dagnb`, so IPython has no %%dagger magic there; add "
           "`%load_ext dagnb` in a cell before it\n")


@pytest.mark.parametrize("command", ["graph", "validate", "run"])
def test_a_dagger_cell_with_no_load_ext_before_it_is_refused_before_anything_runs(
        capsys, command):
    """validate said `1 step, valid` (exit 0), and run failed in the kernel with IPython's
    `Cell magic %%dagger not found` (exit 1) after the cells before it ran."""
    path = _notebook(MARK, "%%dagger a\necho a")
    assert _said(capsys, command, path) == (2, NO_LOAD)
    assert not Path("ran").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_load_ext_after_the_first_dagger_cell_is_named(capsys, command):
    path = _notebook(MARK, "%%dagger a --python --outputs y\ny = 1", LOAD, "print(y)")
    assert _said(capsys, command, path) == (2, (
        "dagnb: error: nb.ipynb: cell 2 ('%%dagger a --python --outputs y') is a %%dagger "
        "cell, but `%load_ext dagnb` comes only in cell 3, after it, so IPython has no "
        "%%dagger magic there; add `%load_ext dagnb` in a cell before it\n"))
    assert not Path("ran").exists()


@pytest.mark.parametrize("load", [
    "%reload_ext dagnb", "import os\n%load_ext dagnb\nx = 1", "%load_ext dagnb.notebook.magics",
    'get_ipython().run_line_magic("load_ext", "dagnb")',
])
def test_each_way_a_cell_loads_dagnb_is_seen(capsys, load):
    assert _said(capsys, "validate", _notebook(load, "%%dagger a\necho a")) == (0, "")


def test_a_commented_out_load_ext_does_not_count(capsys):
    path = _notebook("# %load_ext dagnb", MARK, "%%dagger a\necho a")
    assert _said(capsys, "validate", path) == (2, NO_LOAD.replace("cell 2", "cell 3"))


def test_a_percent_format_notebook_is_checked_the_same(capsys):
    Path("nb.py").write_text("# %%\nx = 1\n\n# %%\n# %%dagger a\n# echo a\n\n"
                             "# %%\n# %load_ext dagnb\n")
    code, said = _said(capsys, "run", "nb.py")
    assert code == 2
    assert said.startswith("dagnb: error: nb.py: cell 2 ('%%dagger a') is a %%dagger cell, "
                           "but `%load_ext dagnb` comes only in cell 3")
    Path("nb.py").write_text("# %%\n# %load_ext dagnb\n\n# %%\n# %%dagger a\n# echo a\n")
    assert _said(capsys, "validate", "nb.py") == (0, "")


def test_a_profile_that_loads_dagnb_needs_no_load_ext_cell(capsys, tmp_path):
    """IPython's profile can load the extension in every kernel (`dagnb run`'s too)."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        "c.InteractiveShellApp.extensions = ['dagnb']\n")
    assert _said(capsys, "validate", _notebook("%%dagger a\necho a")) == (0, "")


# -- 2. run refuses what graph/validate refuse, before the kernel starts ---------------------

@pytest.mark.parametrize("cells", [
    ("%%dagger s1\necho s1", "%%dagger s2 --needz s1\necho hi"),
    ("%%dagger a\necho a", "%%dagger b --needs aa\necho b"),
    ("%%dagger s1 --python --outputs y\nimport math\nz = 1\ny = z +* 2",),
])
def test_run_refuses_a_bad_cell_as_validate_does_before_any_cell_runs(capsys, cells):
    """Found in its cell, the same input exited 1 after the cells and steps before it ran,
    where graph and validate exit 2 before anything runs."""
    path = _notebook(LOAD, MARK, *cells)
    code, refused = _said(capsys, "validate", path)
    assert code == 2 and refused.count("\n") == 1
    assert _said(capsys, "run", path) == (2, refused)
    assert not Path("ran").exists()
    assert not Path(".dagnb_cache").exists()


def test_run_refuses_a_need_only_a_later_cell_defines(capsys):
    """A kernel that does not know its notebook (dagnb run's) defines each step as its cell
    runs: cell 3 failed on 'a', not a step yet, exit 1. Valid when the kernel reads the
    notebook whole (JupyterLab, after %load_ext)."""
    path = _notebook(LOAD, MARK, "%%dagger b --needs a\necho b", "%%dagger a\necho a")
    assert _said(capsys, "validate", path) == (0, "")
    assert _said(capsys, "run", path) == (2, (
        "dagnb: error: cell 3 ('%%dagger b --needs a'): step 'b' needs 'a', which only cell 4, "
        "after it, defines; move that cell above it (dagnb run runs the cells in order, "
        "defining each step as it goes)\n"))
    assert not Path("ran").exists()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_run_leaves_needs_of_steps_a_loaded_workflow_makes_to_the_cells():
    """`%dagger load wf.yml` makes steps no %%dagger cell defines: a cell needing one ran
    before these checks, and must still (its needs are checked as its cell runs)."""
    Path("wf.yml").write_text("name: loaded\nsteps:\n  base:\n    run: echo base\n")
    path = _notebook(LOAD, "%dagger load wf.yml", "%%dagger top --needs base\necho top")
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", path, "--executor", "local"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DAGNB_CONFIG": "none"})
    assert done.returncode == 0, done.stderr
    assert re.search(r"^top +succeeded", done.stdout, re.MULTILINE), done.stdout


def test_a_line_reading_notebook_variables_is_checked_when_its_cell_runs(capsys):
    """`--timeout $t` read from the file is not a duration: graph and validate refused it
    (and run, checking as they do, would have), though the cell runs with t's value."""
    path = _notebook(LOAD, "t = '5s'\nup = 'a'", "%%dagger a\necho a",
                     "%%dagger s --timeout $t --needs $up\necho s", "%%dagger u --needs s\necho u")
    assert main(["validate", path]) == 0
    assert "note: step 's': its line reads notebook variables (t, up)" in capsys.readouterr().out
    from dagnb.notebook.magics import notebook_graph  # (what run checks, kernel aside)

    assert sorted(notebook_graph(path, in_order=True).names) == ["a", "s", "u"]


# -- 3. a syntax error's line counts the %%dagger line ---------------------------------------

def test_a_syntax_errors_line_counts_the_magic_line_as_jupyter_does(capsys):
    """The 4th line of the cell (the 3rd of its code) was said to be line 3."""
    path = _notebook(LOAD, "%%dagger s1 --python --outputs y\nimport math\nz = 1\ny = z +* 2")
    assert _said(capsys, "graph", path) == (2, (
        "dagnb: error: cell 2 ('%%dagger s1 --python --outputs y'): step 's1': line 4 of the "
        "cell is not valid Python: invalid syntax\n"))
    blank_first = _notebook(LOAD, "%%dagger s1 --python\n\n\nx = (", name="blank.ipynb")
    assert "line 4 of the cell" in _said(capsys, "validate", blank_first)[1]


# -- 4. an unknown need names its cell; a step defined twice, differently --------------------

def test_an_unknown_need_names_its_cell(capsys):
    path = _notebook(LOAD, "%%dagger a\necho a", "%%dagger b --needs aa\necho b")
    assert _said(capsys, "graph", path) == (2, (
        "dagnb: error: cell 3 ('%%dagger b --needs aa'): step 'b' needs 'aa', which is not a "
        "step; did you mean 'a'?\n"))


REDEFINED = ("step 'a' is defined by cell 3 and again, differently, by cell 4 ('%%dagger a "
             "--python --outputs v'), which replaces it from there on; rename one of them if "
             "they are two steps")


def test_validate_warns_of_a_step_two_cells_define_differently_naming_both(capsys):
    """A copied cell not renamed: the second silently replaced the first (`1 step, valid`).
    Warned of by validate, not refused: the quickstart tutorial runs an edited `stats`
    cell so, which graph and run show without a warning."""
    path = _notebook(LOAD, MARK, "%%dagger a --python --outputs v\nv = 1",
                     "%%dagger a --python --outputs v\nv = 2", "print(v)")
    with pytest.warns(UserWarning) as warned:  # (`dagnb: warning: ...` in a terminal)
        assert _said(capsys, "validate", path) == (0, "")
    assert [str(w.message) for w in warned] == [REDEFINED]


def test_graph_and_run_show_a_step_two_cells_define_without_a_warning(capsys):
    from dagnb.notebook.magics import notebook_graph  # (what run checks, kernel aside)

    path = _notebook(LOAD, "%%dagger a --python --outputs v\nv = 1",
                     "%%dagger a --python --outputs v\nv = 2", name="two.ipynb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notebook_graph(path, in_order=True)
        assert _said(capsys, "graph", path) == (0, "")


def test_the_same_cell_twice_runs_its_step_again_and_is_accepted(capsys):
    """As the quickstart tutorial re-runs `download` to show it cached."""
    step = "%%dagger download\necho 3 > \"$DAGNB_OUT/n.txt\"\n"
    path = _notebook(LOAD, MARK, step, "%dagger status", step.rstrip("\n"))
    assert _said(capsys, "validate", path) == (0, "")
