"""QA of session 69: a text-mode cell's RunFailed leaves out the stderr its view printed;
a failed ``--background`` cell is named by ``dagnb run NOTEBOOK`` as a foreground one
is; and what a YAML run refuses up front (an unset secret, no Dagger engine, a cache
folder that is a file) the notebook's run refuses before its kernel starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dagnb import Graph, RunFailed, Step
from dagnb.cli import main
from dagnb.executors.base import Availability
from dagnb.executors.dagger import connection
from dagnb.notebook.before_kernel import refuse_before_kernel
from dagnb.runtime import events

SECRET = "S69_NOT_SET"
FIRST = "ran_first_cell"  # a first cell that shows whether the notebook ran


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    monkeypatch.delenv(SECRET, raising=False)


def _percent(path: Path, *cells: str) -> Path:
    path.write_text("".join(f"# %%\n{cell}\n\n" for cell in cells))
    return path


# -- 1. a text-mode cell's error shows what its view printed once --------------------------

def test_a_text_mode_cells_error_leaves_out_the_stderr_its_view_printed(shell, capsys):
    """The view printed the step's stderr as it came, then RunFailed showed its last
    lines again under "── broken failed; last lines of stderr ──"."""
    result = shell.run_cell("%%dagger broken\necho 'first bad line' >&2\n"
                            "echo 'last bad line' >&2\nexit 3\n")
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, RunFailed)
    assert (out + err).count("first bad line") == 1, out + err
    assert "last lines of stderr" not in out + err
    shown = result.error_in_exec._render_traceback_()
    assert shown[1].split()[:3] == ["broken", "failed", "3"]  # its status row stays
    assert shown[-1].startswith("RunFailed: run ")


def test_a_text_mode_cell_keeps_the_tail_of_a_step_whose_last_lines_it_never_saw(
        shell, capsys, monkeypatch):
    """Past what the event log keeps of a step, the view prints no more of its lines:
    the error's tail is the only place its last ones show."""
    monkeypatch.setattr(events, "LOG_LINES_KEPT", 5)
    result = shell.run_cell("%%dagger loud\nseq 1 20 >&2\nexit 3\n")
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, RunFailed)
    assert "20" not in err.split()  # (not printed live)
    rule = "── loud failed; last lines of stderr ──\n"
    assert rule in out, out
    assert out.split(rule, 1)[1].splitlines()[:10] == [str(n) for n in range(11, 21)]


# -- 2. a failed --background cell is named in the headless summary ------------------------

@pytest.mark.slow
def test_a_failed_background_cell_is_named_as_a_failed_foreground_cell_is(
        tmp_path, capsys, monkeypatch):
    """Its step showed `failed` in the table, and no line said which cell failed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # (not the user's profile)
    _percent(tmp_path / "bg.py", "%load_ext dagnb",
             "%%dagger bad --background\necho 'bg fail' >&2\nexit 3",
             "print('last cell')")
    assert main(["run", "bg.py", "--executor", "local"]) == 1
    out, err = capsys.readouterr()
    assert "last cell" in out
    said, error = err.split(" failed:\n", 1)
    assert said.splitlines()[-1] == "dagnb: cell 2 of bg.py (step 'bad')"
    # nothing printed the background step's stderr: its tail is in the error
    assert error.splitlines()[1:] == [
        "bad   failed  3     exit code 3: bg fail",
        "── bad failed; last lines of stderr ──", "bg fail",
        error.splitlines()[-1]]
    assert error.splitlines()[-1].startswith("RunFailed: run ")


@pytest.mark.slow
def test_a_failed_background_cell_shows_its_failure_in_the_executed_notebook(
        tmp_path, capsys, monkeypatch):
    """``--output``'s notebook (a CI's record of the run) showed the cell's "started in
    the background" line and nothing more, though its run failed and dagnb run exited 1."""
    import nbformat

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    _percent(tmp_path / "bg.py", "%load_ext dagnb",
             "%%dagger bad --background\necho 'bg fail' >&2\nexit 3", "print('last cell')")
    assert main(["run", "bg.py", "--executor", "local", "-o", "out.ipynb"]) == 1
    capsys.readouterr()
    cells = nbformat.read(tmp_path / "out.ipynb", 4).cells
    errors = [(index, output) for index, cell in enumerate(cells)
              for output in cell.get("outputs", []) if output.output_type == "error"]
    assert [index for index, _ in errors] == [1]  # (the cell that started the run)
    assert errors[0][1].ename == "RunFailed"
    assert "exit code 3: bg fail" in errors[0][1].evalue


# -- 3. refused before the kernel starts, as a YAML run refuses it -------------------------

def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "detect", lambda: Availability(
        False, "no Dagger engine found: install the dagger CLI"))


@pytest.mark.parametrize(("secrets", "options"), [
    (f" --secret {SECRET}", ["--executor", "local"]),
    ("", ["--executor", "dagger"]),
    ("", ["--cache-dir", "a_file"]),
])
def test_the_notebook_run_refuses_what_a_yaml_run_refuses_before_its_kernel_starts(
        tmp_path, capsys, monkeypatch, secrets, options):
    """Each was the kernel's UsageError under the failed cell, exit 1, after the cells
    before it ran."""
    monkeypatch.chdir(tmp_path)
    _no_engine(monkeypatch)
    (tmp_path / "a_file").write_text("not a folder\n")
    yaml_secrets = f"secrets: [{SECRET}], " if secrets else ""
    (tmp_path / "w.yml").write_text(f"steps:\n  a: {{{yaml_secrets}run: 'echo hi'}}\n")
    _percent(tmp_path / "nb.py", f"open({FIRST!r}, 'w').close()", "%load_ext dagnb",
             f"%%dagger a{secrets}\necho hi")
    assert main(["run", "w.yml", *options]) == 2
    refused = capsys.readouterr().err
    assert refused.startswith("dagnb: error: ") and refused.count("\n") == 1, refused
    assert main(["run", "nb.py", *options]) == 2
    assert capsys.readouterr().err == refused
    assert not (tmp_path / FIRST).exists()


def _cells(*cells: str) -> list[tuple[str, str]]:
    return [("code", "%load_ext dagnb"), *(("code", cell) for cell in cells)]


def _refused(tmp_path: Path, cells: list[tuple[str, str]], only: list[str] | None = None,
             **env: str) -> str | None:
    try:
        refuse_before_kernel(tmp_path / "nb.ipynb", cells, {**os.environ, **env}, only)
    except Exception as exc:
        return str(exc)
    return None


SECRET_CELL = f"%%dagger a --secret {SECRET}\necho hi"


@pytest.mark.parametrize("cells", [
    _cells(f"%%dagger a --define-only --secret {SECRET}\necho hi"),  # (nothing runs it)
    _cells(f"import os\nos.environ[{SECRET!r}] = 'x'", SECRET_CELL),  # (set by a cell)
    _cells("from dotenv import load_dotenv\nload_dotenv()", SECRET_CELL),
    _cells(f"%env {SECRET}=x", SECRET_CELL),
    _cells("%%dagger a --secret {name}\necho hi"),  # (a name the notebook holds)
    _cells(f"%%dagger a --secret {SECRET} --cache-mode fail-on-miss\necho hi"),
])
def test_a_step_the_kernel_may_run_with_its_secret_set_is_left_to_the_kernel(
        tmp_path, cells):
    assert _refused(tmp_path, cells) is None
    assert _refused(tmp_path, _cells(SECRET_CELL)) is not None  # (refused alone)


def test_a_step_not_needed_by_the_target_is_not_checked(tmp_path):
    cells = _cells("%%dagger b\necho b", SECRET_CELL)
    assert _refused(tmp_path, cells, only=["b"]) is None
    assert "needs secret" in (_refused(tmp_path, cells, only=["a"]) or "")


def test_a_step_the_cache_may_serve_needs_no_secret_nor_engine_as_in_a_yaml_run(
        tmp_path, monkeypatch):
    """A fully cached run needs no secret (a CI build without it): the kernel's cache
    holding an entry of the step leaves it to the kernel, which serves it."""
    _no_engine(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SECRET, "x")
    Graph("g", [Step("a", run="echo hi", secrets=[SECRET])]).run(executor="local")
    monkeypatch.delenv(SECRET)
    cells = _cells(SECRET_CELL, "%%dagger up --executor dagger\necho up",
                   "%%dagger down --needs up\necho down")
    assert "step 'up' but no Dagger engine" in (_refused(tmp_path, cells) or "")
    assert _refused(tmp_path, cells[:2]) is None
    # cache off: every step runs, as for a YAML run
    assert "needs secret" in (_refused(tmp_path, cells[:2], DAGNB_CACHE_MODE="off") or "")
