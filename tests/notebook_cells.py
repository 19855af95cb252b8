"""A notebook of cells run top to bottom in a kernel of its own, as tests of a notebook
step on another executor (Dask, Dagger) need it: dagnb's widgets off, no user config;
and a kernel a test keeps, to run one cell after another in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def started_kernel(folder: Path, env: Mapping[str, str], *, unset: tuple[str, ...] = (),
                   timeout: int = 60, **options: Any) -> Iterator[Any]:
    """An nbclient client whose kernel runs in ``folder`` until the block ends (failed
    cells do not stop it). The kernel inherits this process's environment, so ``env`` is
    set and the names in ``unset`` removed here, and put back once the kernel is gone;
    ``options`` go to ``NotebookClient`` (``store_widget_state=False``, say)."""
    from nbclient import NotebookClient

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in unset:
            patch.delenv(name, raising=False)
        client = NotebookClient(nbformat.v4.new_notebook(), timeout=timeout, allow_errors=True,
                                kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}, **options)
        with client.setup_kernel():
            yield client


@contextlib.contextmanager
def kernel_beside(folder: Path, files: Mapping[str, str], kind: type[LiveKernel],
                  timeout: int = 120) -> Iterator[Any]:
    """A ``kind`` of :class:`LiveKernel` (started: its ``start()`` run) in ``folder``,
    with ``files`` (name -> text) written there first, dagnb's widgets off."""
    for name, text in files.items():
        (folder / name).write_text(text)
    with started_kernel(folder, KERNEL_ENV, timeout=timeout) as client:
        kernel = kind(client)
        kernel.start()
        yield kernel


def printed(cell: nbformat.NotebookNode) -> str:
    """What a run cell printed."""
    return "".join(output.get("text", "") for output in cell.outputs)


class LiveKernel:
    """A kernel a test keeps (an nbclient ``client`` in ``setup_kernel()``): :meth:`run`
    executes one more cell and returns its outputs."""

    streams: tuple[str, ...] = ("stdout",)  # what :meth:`printed` returns

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, source: str) -> list[dict]:
        cell = nbformat.v4.new_code_cell(source)
        self.client.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.client.nb.cells) - 1)
        return cell.outputs

    def printed(self, source: str) -> str:
        """What the cell printed to :attr:`streams`; it must raise nothing."""
        outputs = self.run(source)
        assert not [o for o in outputs if o["output_type"] == "error"], outputs
        return "".join(o["text"] for o in outputs
                       if o["output_type"] == "stream" and o["name"] in self.streams)

    def interrupt(self) -> None:
        from nbclient.util import run_sync

        run_sync(self.client.km.interrupt_kernel)()

    def restart(self) -> None:
        """As JupyterLab's restart: a shutdown request first (a kill of the kernel's
        process group took a dask LocalCluster's semaphores with it, left in /dev/shm)."""
        from nbclient.util import run_sync

        run_sync(self.client.km.restart_kernel)(now=False)
        run_sync(self.client.kc.wait_for_ready)(timeout=60)
