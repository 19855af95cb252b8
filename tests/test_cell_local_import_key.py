"""A ``%%dagger`` cell importing a project module the kernel has not imported yet
(``helpers.py`` beside the notebook) keys it by its file, since importing it to key
would run it; run, the cell imports it, and from then on it counts by the members the
cell reaches. The second execution missed and ran again for nothing; now it is served
from the cache, while a change to the module's data or an edit reloaded still runs it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_cells import LiveKernel, kernel_beside

HELPERS = "RATE = 2\n\ndef f(x):\n    return x * RATE\n"

CELLS = {
    "from at the top": "%%dagger s --python --outputs y\nfrom helpers import f\ny = f(1)\n",
    "import in the body": ("%%dagger s --python --outputs y\nz = 1\nif z:\n"
                           "    import helpers\ny = helpers.f(z)\n"),
    "import in a def": ("%%dagger s --python --outputs y\ndef g():\n    import helpers\n"
                        "    return helpers.f(1)\ny = g()\n"),
}


class Kernel(LiveKernel):
    def start(self) -> None:
        self.printed("%load_ext dagnb\nfrom dagnb.notebook.session import get_session")

    def run_step(self, cell: str) -> tuple[str, int]:
        """Run the ``%%dagger`` cell: its step's state and the ``y`` it published."""
        outputs = self.run(cell)
        assert not [o for o in outputs if o["output_type"] == "error"], outputs
        states, y = ast.literal_eval(self.printed(
            "print(repr((get_session().last_run.states(), y)))").strip())
        return states["s"], y


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with kernel_beside(tmp_path, {"helpers.py": HELPERS}, Kernel) as kernel:
        yield kernel


@pytest.mark.slow
@pytest.mark.parametrize("form", sorted(CELLS))
def test_a_cell_first_importing_a_local_module_is_cached_the_second_time(
        kernel: Kernel, tmp_path: Path, form: str):
    cell = CELLS[form]
    assert kernel.run_step(cell) == ("succeeded", 2)
    assert kernel.run_step(cell) == ("cached", 2)  # (was succeeded: keyed by file first)
    assert kernel.run_step(cell) == ("cached", 2)
    (tmp_path / "helpers.py").write_text(HELPERS.replace("x * RATE", "x * RATE + 100"))
    kernel.printed("import importlib, helpers\n_ = importlib.reload(helpers)")
    assert kernel.run_step(cell) == ("succeeded", 102)  # (an edit, reloaded: runs)
    assert kernel.run_step(cell) == ("cached", 102)


@pytest.mark.slow
def test_what_the_module_holds_still_counts_and_a_restart_is_served(kernel: Kernel,
                                                                    tmp_path: Path):
    cell = CELLS["from at the top"]
    assert kernel.run_step(cell) == ("succeeded", 2)
    kernel.printed("import helpers\nhelpers.RATE = 5")
    assert kernel.run_step(cell) == ("succeeded", 5)  # (its data changed: never stale)
    kernel.printed("helpers.RATE = 2")
    assert kernel.run_step(cell) == ("cached", 2)  # (as the first run left it)
    kernel.restart()
    kernel.start()
    assert kernel.run_step(cell) == ("cached", 2)  # (not imported: keyed by its file)
    assert kernel.run_step(cell) == ("cached", 2)
    # imported, and changed, by another cell, not by a run of the step: its run stands
    # for no key made before (it was served the first run's y = 2 from then on)
    kernel.printed("import helpers\nhelpers.RATE = 7")
    assert kernel.run_step("%dagger run s") == ("succeeded", 7)
    assert kernel.run_step(cell) == ("cached", 7)
    (tmp_path / "helpers.py").write_text(HELPERS.replace("RATE = 2", "RATE = 3"))
    kernel.restart()
    kernel.start()
    assert kernel.run_step(cell) == ("succeeded", 3)  # (its file edited)
    assert kernel.run_step(cell) == ("cached", 3)
