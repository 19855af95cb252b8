"""`dagnb run NOTEBOOK`: what `--target` runs for the cells before the target (a plain cell,
a notebook helper reading a step's `--outputs`), what the run prints, and which `-o` it
refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat as nbf
import pytest

pytestmark = pytest.mark.slow


def _write(folder: Path, *sources: str, name: str = "nb.ipynb") -> Path:
    cells = [nbf.v4.new_code_cell("%load_ext dagnb"),
             *(nbf.v4.new_code_cell(source) for source in sources)]
    path = folder / name
    nbf.write(nbf.v4.new_notebook(cells=cells), path)
    return path


def _dagnb(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CONFIG": "none"}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _states(stdout: str) -> dict[str, str]:
    """Each step's state in the final status table."""
    lines = stdout.splitlines()
    header = max(i for i, line in enumerate(lines)
                 if line.split()[:4] == ["step", "state", "cached", "attempts"])
    return {line.split()[0]: line.split()[1] for line in lines[header + 1:] if line.strip()}


_SUMMARIZE = "%%dagger summarize --python --outputs total\ntotal = sum(range(10))"


def test_target_runs_the_step_whose_output_a_plain_cell_before_it_reads(tmp_path):
    """`publish` reads report.txt, which a plain cell writes from `summarize`'s `total`:
    --target publish ran only `publish`, and cached `total=0`."""
    path = _write(tmp_path, "total = 0  # summarize fills it in", _SUMMARIZE,
                  "open('report.txt', 'w').write(f'total={total}\\n')",
                  "%%dagger publish --mount report.txt:/r\ncat report.txt")
    done = _dagnb("run", path.name, "--target", "publish", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("dagnb: --target runs 'summarize' too: cell 4, which runs before the target, "
            "reads its output 'total', as in a full run") in done.stdout
    assert (tmp_path / "report.txt").read_text() == "total=45\n"
    assert "total=45" in done.stdout and "total=0" not in done.stdout
    assert _states(done.stdout) == {"summarize": "succeeded", "publish": "succeeded"}


_WITH_HELPER = ("total = 0\ndef fmt():\n    return f'total is {total}'",
                _SUMMARIZE,
                "%%dagger report --python --outputs line\nline = fmt()\nprint(line)")


def test_graph_shows_a_step_reading_an_output_through_a_notebook_helper(tmp_path):
    path = _write(tmp_path, *_WITH_HELPER)
    done = _dagnb("graph", path.name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["summarize", "report  <- summarize (reads total)"]


def test_target_runs_the_step_whose_output_a_notebook_helper_of_the_target_reads(tmp_path):
    """`report` calls `fmt()`, which reads `total`: --target report printed `total is 0`."""
    path = _write(tmp_path, *_WITH_HELPER)
    done = _dagnb("run", path.name, "--target", "report", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--target runs 'summarize' too: 'report' reads its output 'total'" in done.stdout
    assert "total is 45" in done.stdout and "total is 0" not in done.stdout
    assert _states(done.stdout) == {"summarize": "succeeded", "report": "succeeded"}


def test_a_run_prints_each_cells_values_and_displays_in_order(tmp_path):
    """Only printed lines reached the terminal: not a cell's value, a step's display()
    and last expression, nor %dagger status's table."""
    path = _write(tmp_path, "x = 41\nx + 1",
                  "%%dagger show --python --outputs shown\nprint('printed line')\n"
                  "shown = {'shown': 1}\ndisplay(shown)\n'last ' + 'value'",
                  "%dagger status")
    done = _dagnb("run", path.name, "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    shown = [lines.index(text) for text in ("42", "printed line", "{'shown': 1}",
                                            "'last value'")]
    assert shown == sorted(shown), done.stdout
    status = [line.split() for line in lines[shown[-1] + 1:]]
    assert ["step", "state", "cached"] in [row[:3] for row in status]  # %dagger status
    assert ["0", "show", "succeeded"] in [row[:3] for row in status], done.stdout


@pytest.mark.parametrize(("output", "said"), [
    ("an.py", "--output 'an.py' is the notebook being run, which the executed notebook "
              "would replace; name another file, such as 'an.executed.ipynb'"),
    ("out.json", "--output 'out.json' is not an .ipynb file, and the executed notebook is "
                 "written as one; name a FILE.ipynb, such as 'an.executed.ipynb'"),
])
def test_an_output_that_is_the_source_or_not_an_ipynb_is_refused_first(tmp_path, output,
                                                                        said):
    """`-o an.py` wrote ipynb JSON over the percent-format source being run."""
    source = tmp_path / "an.py"
    source.write_text("# %%\nopen('started.txt', 'w').close()\n\n"
                      "# %%\n%load_ext dagnb\n\n# %%\n%%dagger a\necho a\n")
    before = source.read_bytes()
    done = _dagnb("run", "an.py", "-o", output, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert done.stderr == f"dagnb: error: {said}\n"
    assert source.read_bytes() == before
    assert not (tmp_path / "started.txt").exists()  # refused before the kernel started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["an.py"]
