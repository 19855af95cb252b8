"""Two notebook steps whose bodies import a project module no cell imports
(``helpers.py`` beside the notebook). The first run of the first step imports it, so the
second step is keyed with it imported (by the members it reaches), and a fresh kernel,
where it is not imported when the second step is keyed (the first is served from the
cache and imports nothing), keyed it by its file: after a restart, Run All ran the
second step again with nothing changed. A module first imported by a run is now keyed
as one not imported, while its file and the data the code reads are as the import left
them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, kernel_beside

HELPERS = "FACTOR = 2\n\ndef f(x):\n    return x * FACTOR\n"

CELLS = [
    "%%dagger a --python --outputs ya\nimport helpers\nya = helpers.f(1)\n",
    "%%dagger b --python --outputs yb\nimport helpers\nyb = helpers.f(10)\n",
]


class Kernel(LiveKernel):
    def start(self) -> None:
        self.printed("%load_ext dagnb\nfrom dagnb.notebook.session import get_session")

    def run_all(self) -> list[tuple[str, int]]:
        """Run the notebook's step cells in order: each step's state and its output."""
        found = []
        for cell, (name, output) in zip(CELLS, [("a", "ya"), ("b", "yb")], strict=True):
            outputs = self.run(cell)
            assert not [o for o in outputs if o["output_type"] == "error"], outputs
            found.append(ast.literal_eval(self.printed(
                f"print(repr((get_session().last_run.states()[{name!r}], {output})))")))
        return found


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with kernel_beside(tmp_path, {"helpers.py": HELPERS}, Kernel) as kernel:
        yield kernel


@pytest.mark.slow
def test_run_all_after_a_restart_serves_every_step_importing_a_project_module(
        kernel: Kernel, tmp_path: Path):
    assert kernel.run_all() == [("succeeded", 2), ("succeeded", 20)]
    assert kernel.run_all() == [("cached", 2), ("cached", 20)]
    kernel.restart()
    kernel.start()
    assert kernel.run_all() == [("cached", 2), ("cached", 20)]  # (b: was succeeded)
    kernel.restart()
    kernel.start()
    kernel.printed("import helpers\nhelpers.FACTOR = 5")  # (the user's import, changed)
    assert kernel.run_all() == [("succeeded", 5), ("succeeded", 50)]
    kernel.restart()
    kernel.start()
    (tmp_path / "helpers.py").write_text(HELPERS.replace("FACTOR = 2", "FACTOR = 3"))
    assert kernel.run_all() == [("succeeded", 3), ("succeeded", 30)]  # (its file edited)
    kernel.restart()
    kernel.start()
    assert kernel.run_all() == [("cached", 3), ("cached", 30)]
    assert dagnb_run(tmp_path, "--cache-mode", "fail-on-miss").returncode == 0  # (a miss: 2)


def dagnb_run(folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``dagnb run nb.ipynb`` of the steps' cells, in a process of its own."""
    cells = ["%load_ext dagnb", *CELLS]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(notebook, folder / "nb.ipynb")
    return subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "nb.ipynb", *options],
                          cwd=folder, env={**os.environ, **KERNEL_ENV}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_dagnb_run_of_the_notebook_again_serves_every_step(tmp_path: Path):
    (tmp_path / "helpers.py").write_text(HELPERS)
    assert dagnb_run(tmp_path).returncode == 0
    again = dagnb_run(tmp_path, "--cache-mode", "fail-on-miss")
    assert again.returncode == 0, again.stderr  # (was 2: "b: code changed")
