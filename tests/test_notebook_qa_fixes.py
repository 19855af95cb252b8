"""Notebook fixes from a QA pass, each seen where it happens: `dagnb run NOTEBOOK` in a
subprocess, and the magics in one real kernel (nbclient), several checks per session to
keep the kernels few."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat as nbf
import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

pytestmark = pytest.mark.slow


def _dagnb(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CONFIG": "none", "DAGNB_EXECUTOR": "local"}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _cell(source: str, *tags: str) -> nbf.NotebookNode:
    cell = nbf.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _write(path: Path, *cells: nbf.NotebookNode) -> Path:
    nbf.write(nbf.v4.new_notebook(cells=list(cells)), path)
    return path


# -- dagnb run NOTEBOOK ------------------------------------------------------------------
def test_params_replace_an_earlier_injected_cell_and_non_finite_floats_are_set(tmp_path):
    path = _write(tmp_path / "analysis.ipynb",
                  _cell("%load_ext dagnb"),
                  _cell("alpha = 0.1\nlimit = 1.0\nbounds = [0, 1]", "parameters"),
                  _cell("# Parameters\nalpha = 0.5\n", "injected-parameters"),  # papermill's
                  _cell("%%dagger fit --python --outputs used\nused = alpha\n"),
                  _cell("print('alpha used:', used, 'limit:', limit, 'bounds:', bounds)"))
    done = _dagnb("run", str(path), "-p", "alpha=0.7", "-p", "limit=1e400",
                  "-p", "bounds=[0,-Infinity]", "-o", "executed.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alpha used: 0.7 limit: inf bounds: [0, -inf]\n" in done.stdout
    executed = nbf.read(tmp_path / "executed.ipynb", as_version=4)
    injected = [c.source for c in executed.cells
                if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected == ["# Parameters\nalpha = 0.7\nlimit = float('inf')\n"
                        "bounds = [0, float('-inf')]\n"]
    assert "parameters" in executed.cells[1].metadata["tags"]  # (the injected cell after it)
    again = _dagnb("run", "executed.ipynb", cwd=tmp_path)  # no -p: the file's values, as
    assert again.returncode == 0, again.stderr                      # papermill keeps them
    assert "alpha used: 0.7 limit: inf" in again.stdout


def test_an_output_no_file_can_be_written_at_is_refused_before_the_kernel_starts(tmp_path):
    path = _write(tmp_path / "nb.ipynb", _cell("open('ran', 'w').close()"))
    (tmp_path / "folder").mkdir()
    for output, said in [("missing/out.ipynb", "its folder 'missing' does not exist"),
                         ("folder", "'folder' is a folder; name the notebook file")]:
        done = _dagnb("run", str(path), "-o", output, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ran").exists()


def test_a_cell_failing_before_any_step_shows_them_not_run_and_a_failed_write_one_line(
        tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = _write(tmp_path / "nb.ipynb",
                  _cell("%load_ext dagnb"),
                  _cell(f"import shutil\nshutil.rmtree({str(out)!r})"),  # (the write fails)
                  _cell("raise ValueError('boom')"),
                  _cell("%%dagger first\necho one\n"),
                  _cell("%%dagger second --needs first\necho two\n"))
    done = _dagnb("run", str(path), "-o", str(out / "executed.ipynb"), cwd=tmp_path)
    assert done.returncode == 1
    table = [line.split()[:3] for line in done.stdout.splitlines() if line.strip()]
    assert ["first", "not", "run"] in table and ["second", "not", "run"] in table
    assert "ValueError: boom" in done.stderr
    unsaved = [line for line in done.stderr.splitlines() if "cannot write" in line]
    assert len(unsaved) == 1 and "check that its folder exists" in unsaved[0]
    assert "Traceback" not in done.stderr.partition("failed:")[0]


# -- in a kernel -------------------------------------------------------------------------
class Kernel(LiveKernel):
    streams = ("stdout", "stderr")

    def refused(self, source: str) -> str:
        """The one line IPython prints for a UsageError."""
        stderr = "".join(o["text"] for o in self.run(source)
                         if o["output_type"] == "stream" and o["name"] == "stderr")
        return stderr.partition("UsageError: ")[2].strip()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    env = KERNEL_ENV | {"JPY_SESSION_NAME": str(tmp_path / "pipeline.ipynb")}
    with started_kernel(tmp_path, env) as client:
        kernel = Kernel(client)
        kernel.printed("%load_ext dagnb\nfrom dagnb.notebook.session import get_session\n"
                       "import dagnb, os, time")
        yield kernel


_STATES = "s = %dagger status\nprint(dict(zip(s['step'], s['state'])))"


def test_magics_in_a_kernel(kernel: Kernel, tmp_path: Path) -> None:
    # after %cd the notebook's cache is still its folder's: the step is served from it
    train = "%%dagger train\necho hi > $DAGNB_OUT/x\n"
    kernel.printed(train)
    (tmp_path / "data").mkdir()
    kernel.printed("%cd data")
    kernel.printed(train)
    assert kernel.printed(_STATES) == "{'train': 'cached'}\n"
    assert not (tmp_path / "data" / ".dagnb_cache").exists()

    # an exported cell defines the very step, whatever notebook variables IPython expands
    kernel.printed("date = '2026-12-04'\nuser = 'ana'\nx = 1\n"
                   "from dagnb.notebook.cells import cell_text\n"
                   "step = dagnb.Step('report', run='echo hi\\n', params={'pattern': "
                   "'sales_{date}.csv'}, env={'GREETING': 'hello $user', "
                   "'B': \"it's $user {x} $$x\"})\n"
                   "first, _, body = cell_text(step).partition('\\n')\n"
                   "get_ipython().run_cell(first + ' --define-only\\n' + body);")
    assert kernel.printed("print(get_session().graph['report'] == step)") == "True\n"

    # a value with an apostrophe in the line as typed: whole (IPython's line split it)
    kernel.printed("title = \"Q3's sales\"")
    kernel.printed("%%dagger named --param title=$title --define-only\necho\n")
    assert kernel.printed("print(get_session().graph['named'].params)") == (
        "{'title': \"Q3's sales\"}\n")

    # plan takes --tags (and --tag) as run does, and refuses --target by name
    kernel.printed("%%dagger tagged --tags ml --define-only\necho\n")
    for option in ("--tags", "--tag"):
        planned = f"p = %dagger plan {option} ml\nprint(list(p['step']))"
        assert kernel.printed(planned) == "['tagged']\n"
    assert kernel.refused("%dagger plan --target tagged") == (
        "%dagger plan has no --target option; give the step name as an argument: "
        "%dagger plan tagged")
    kernel.printed("%dagger reset")
    assert "no steps yet: define one with a %%dagger cell" in str(kernel.run("%dagger run"))


def test_a_cell_stopped_while_waiting_for_a_background_run_leaves_it_that_runs_row(
        kernel: Kernel, tmp_path: Path) -> None:
    release = tmp_path / "release"  # (a, running till then: a sleep 3 was waited out)
    kernel.printed(f"%%dagger a --background\nfor i in $(seq 600); do [ -e {release} ] && "
                   "break; sleep 0.05; done; echo done > $DAGNB_OUT/x\n")
    threading.Timer(1.5, kernel.interrupt).start()
    kernel.run("%%dagger b --needs a\ncat $DAGNB_IN/a/x\n")
    release.touch()
    kernel.printed("while get_session().live: time.sleep(0.1)")
    assert kernel.printed(_STATES) == "{'a': 'succeeded', 'b': 'cancelled'}\n"
    history = kernel.printed("h = %dagger history\nprint(h['started'].isna().sum(), len(h))")
    assert history == "0 2\n"  # (the stopped run has a start time)
