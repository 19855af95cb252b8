"""A %%dagger cell run again lets go of what its earlier runs published (a notebook's
DataFrames) with no full collection: its live view held its run in a reference cycle,
and a kernel re-running a 380 MB frame's cell grew by 380 MB a run."""

from __future__ import annotations

import pytest

CELL = ("%%dagger big --python --no-cache --outputs value\n"
        "value = Held()\n"
        "made.append(weakref.ref(value))\n")


def test_a_cell_run_again_frees_what_its_earlier_runs_published(shell, collector_off):
    shell.run_cell("import weakref\nmade = []\nclass Held: pass\n")
    for _ in range(3):
        assert shell.run_cell(CELL).success
    made = shell.user_ns["made"]
    assert [ref() is None for ref in made] == [True, True, False]  # (the last: in `value`)


@pytest.mark.slow
@pytest.mark.parametrize("widgets", ["0", "1"], ids=["text", "widgets"])
def test_in_a_kernel_a_cell_run_again_frees_its_earlier_runs(tmp_path, widgets):
    from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

    with started_kernel(tmp_path, {**KERNEL_ENV, "DAGNB_WIDGETS": widgets}) as client:
        kernel = LiveKernel(client)
        kernel.run("%load_ext dagnb\nimport gc, weakref\nmade = []\nclass Held: pass\n"
                   "gc.collect()\ngc.disable()")
        for _ in range(3):
            kernel.run(CELL)
        assert kernel.printed("print([ref() is None for ref in made])") == (
            "[True, True, False]\n")
