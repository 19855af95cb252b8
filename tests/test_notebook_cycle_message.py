"""What a kernel that knows its notebook file says of the steps the file defines: a cell
needing a step whose cell needs it back names the cycle (each said "run the other cell
first"), and the steps read after a restart come from the file as saved, which the line
saying so dates."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

pytestmark = pytest.mark.slow


class Kernel(LiveKernel):
    """A live kernel whose notebook file (``JPY_SESSION_NAME``) is ``notebook``."""

    def __init__(self, client: Any, notebook: Path) -> None:
        super().__init__(client)
        self.notebook = notebook


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    home = tmp_path_factory.mktemp("kernel")
    env = KERNEL_ENV | {"JPY_SESSION_NAME": str(home / "analysis.ipynb")}
    with started_kernel(home, env) as client:
        live = Kernel(client, home / "analysis.ipynb")
        live.run("%load_ext dagnb")
        yield live


def _save(kernel: Kernel, cells: list[str]) -> Path:
    """The kernel's notebook file, of these cells."""
    path = kernel.notebook
    nbformat.write(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells]), path)
    return path


def _usage_error(outputs: list[dict]) -> str:
    stderr = "".join(o["text"] for o in outputs
                     if o["output_type"] == "stream" and o["name"] == "stderr")
    return stderr.partition("UsageError: ")[2].strip()


@pytest.mark.parametrize(("cells", "run", "cycle"), [
    (["%%dagger clean --needs report\necho clean", "%%dagger report --needs clean\necho report"],
     [0, 1], ["clean -> report -> clean", "report -> clean -> report"]),
    (["%%dagger a --needs c\necho a", "%%dagger b --needs a\necho b",
      "%%dagger c --needs b\necho c"], [1], ["b -> a -> c -> b"]),
], ids=["two-cells", "three-cells"])
def test_a_cell_needing_a_step_whose_cell_needs_it_back_names_the_cycle(
        kernel: Kernel, cells: list[str], run: list[int], cycle: list[str]) -> None:
    _save(kernel, ["%load_ext dagnb", *cells])
    kernel.run("%dagger reset")
    for index, path in zip(run, cycle, strict=True):
        assert _usage_error(kernel.run(cells[index])) == (
            f"the steps' needs form a cycle: {path}; remove one of these needs")


def test_a_need_a_later_cell_defines_without_a_cycle_still_says_to_run_it(
        kernel: Kernel) -> None:
    cells = ["%%dagger report --needs clean\necho report", "%%dagger clean\necho clean"]
    _save(kernel, ["%load_ext dagnb", *cells])
    kernel.run("%dagger reset")
    assert _usage_error(kernel.run(cells[0])) == (
        "step 'report' needs 'clean', which is not defined in this kernel yet; run cell 3 "
        "of analysis.ipynb (%%dagger clean) first")


def _saved_today() -> tuple[float, str]:
    """03:04:05 of today, read when the test runs (not when it is collected: a run that
    crosses midnight had collected yesterday's), and how the line says it."""
    return time.mktime((*time.localtime()[:3], 3, 4, 5, 0, 0, -1)), "saved 03:04:05"


def _saved_on_an_earlier_day() -> tuple[float, str]:
    return time.mktime((2024, 5, 1, 14, 2, 9, 0, 0, -1)), "saved 2024-05-01 14:02"


@pytest.mark.parametrize("when", [_saved_today, _saved_on_an_earlier_day],
                         ids=["today", "earlier-day"])
def test_the_steps_read_after_a_restart_say_when_their_file_was_saved(
        kernel: Kernel, when: Any) -> None:
    day = time.localtime()[:3]
    saved, said = when()
    path = _save(kernel, ["%load_ext dagnb", "%%dagger load\necho load",
                          "%%dagger total --needs load\necho total"])
    os.utime(path, (saved, saved))
    kernel.restart()
    outputs = kernel.run("%load_ext dagnb")
    printed = "".join(o.get("text", "") for o in outputs)
    says = {f"dagnb: 2 steps read from analysis.ipynb ({said}; unsaved edits are not seen)\n"}
    if time.localtime()[:3] != day:  # midnight passed meanwhile: the line may date it
        dated = time.strftime("saved %Y-%m-%d %H:%M", time.localtime(saved))
        says.add(f"dagnb: 2 steps read from analysis.ipynb ({dated}; unsaved edits are "
                 "not seen)\n")
    assert printed in says
