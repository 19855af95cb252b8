"""What a user sees in a real Jupyter kernel (nbclient): failures that fail the cell.

One kernel serves the module; each test gets its own folder (so its own cache) and an
empty graph. ``DAGNB_WIDGETS=0`` makes dagnb print plain text, which the tests read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


class Kernel:
    """A live kernel: :meth:`run` executes one cell and returns its outputs."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client

    def run(self, source: str) -> list[dict]:
        cell = nbformat.v4.new_code_cell(source)
        self.client.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.client.nb.cells) - 1)
        return cell.outputs

    def value(self, expression: str) -> str:
        """The repr of ``expression`` in the kernel."""
        outputs = self.run(expression)
        results = [o for o in outputs if o["output_type"] == "execute_result"]
        assert results, outputs
        return results[0]["data"]["text/plain"]


def text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


def error(outputs: list[dict]) -> dict | None:
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert len(errors) <= 1
    return errors[0] if errors else None


@pytest.fixture(scope="module")
def live_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    home = tmp_path_factory.mktemp("kernel")
    saved = {k: os.environ.get(k) for k in ("DAGNB_WIDGETS", "DAGNB_CONFIG", "DAGNB_EXECUTOR")}
    os.environ.update(DAGNB_WIDGETS="0", DAGNB_CONFIG="none", DAGNB_EXECUTOR="local")
    client = NotebookClient(nbformat.v4.new_notebook(), timeout=60, allow_errors=True,
                            kernel_name="python3", resources={"metadata": {"path": str(home)}})
    try:
        with client.setup_kernel():
            kernel = Kernel(client)
            kernel.run("%load_ext dagnb")
            yield kernel
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def kernel(live_kernel: Kernel, tmp_path: Path) -> Kernel:
    """The module's kernel, in a fresh folder with an empty graph."""
    outputs = live_kernel.run(f"import os\nos.chdir({str(tmp_path)!r})\n%dagger reset")
    assert error(outputs) is None, outputs
    return live_kernel


# -- failures fail the cell ---------------------------------------------------------------
def test_failing_cell_raises_with_stderr_tail_and_no_dagnb_frames(kernel: Kernel) -> None:
    outputs = kernel.run("%%dagger broken\necho partial\necho 'bad thing' >&2\nexit 3\n")
    failure = error(outputs)
    assert failure is not None and failure["ename"] == "RunFailed"
    shown = "\n".join(failure["traceback"])
    assert "broken  failed  3" in shown
    assert "── broken failed; last lines of stderr ──\nbad thing" in shown
    assert "dagnb/" not in shown and "File " not in shown and "Traceback" not in shown
    assert "partial" in text(outputs)


def test_no_raise_option_keeps_the_failure_as_data(kernel: Kernel) -> None:
    outputs = kernel.run("%%dagger broken --no-raise\nexit 3\n")
    assert error(outputs) is None
    assert "broken  failed" in text(outputs)


def test_nbconvert_execute_exits_non_zero_on_a_failed_step(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in (
        "%load_ext dagnb",
        "%%dagger broken\necho 'bad thing' >&2\nexit 3\n",
        "print('after the failure')",
    )]
    path = tmp_path / "failing.ipynb"
    nbformat.write(notebook, path)
    env = {**os.environ, "DAGNB_WIDGETS": "0", "DAGNB_CONFIG": "none",
           "DAGNB_EXECUTOR": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--output", "out.ipynb", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "RunFailed" in done.stderr and "bad thing" in done.stderr
