"""A notebook of cells run top to bottom in a kernel of its own, as tests of a notebook
step on another executor (Dask, Dagger) need it: dagnb's widgets off, no user config."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

KERNEL_ENV = {"DAGNB_WIDGETS": "0", "DAGNB_CONFIG": "none", "DAGNB_EXECUTOR": "local"}


def executed(cells: list[str], folder: Path, timeout: int = 120) -> nbformat.NotebookNode:
    """The notebook of ``cells``, run in ``folder`` (its working folder)."""
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    with pytest.MonkeyPatch.context() as patch:
        for name, value in KERNEL_ENV.items():
            patch.setenv(name, value)
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


def printed(cell: nbformat.NotebookNode) -> str:
    """What a run cell printed."""
    return "".join(output.get("text", "") for output in cell.outputs)
