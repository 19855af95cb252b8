"""``dagnb run NOTEBOOK -p n=3`` where no cell reads a variable ``n`` but a ``%%dagger``
line gives its step ``--param n=5``: the value went in a cell at the top that nothing
read, every step came from the cache (exit 0, ``n=3`` recorded in the history), where a
workflow file's ``--param n=3`` sets its steps' ``n``. Refused now before the kernel
starts, naming the step and the fix (``--param n=$n`` on the line, ``n = 5`` in a cell
tagged ``parameters``), which then works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.errors import WorkflowError

FETCH = '%%dagger fetch --param n={n}\nseq $DAGNB_PARAM_N > "$DAGNB_OUT/numbers.txt"\n'
TOTAL = ("%%dagger total --python --needs fetch --outputs total\n"
         "total = sum(int(x) for x in (fetch / 'numbers.txt').read_text().split())\n"
         "print('total is', total)\n")


def _notebook(folder: Path, n: str, parameters: str = "") -> None:
    cells = ["%load_ext dagnb", *([parameters] if parameters else []),
             FETCH.format(n=n), TOTAL]
    tags = ['# %% tags=["parameters"]' if cell == parameters else "# %%" for cell in cells]
    (folder / "nb.py").write_text("\n\n".join(f"{tag}\n{cell}" for tag, cell in zip(
        tags, cells, strict=True)))


def test_a_param_only_a_step_s_own_param_is_named_after_is_refused_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _notebook(tmp_path, "5")
    assert main(["run", "nb.py", "-p", "n=3"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: --param 'n': no cell of 'nb.py' reads a variable 'n'; step 'fetch' "
        "has a param n of its own (--param n=5 on its %%dagger line), which a notebook's "
        "--param does not set: write --param n=$n on that line, and n = 5 in a cell tagged "
        "'parameters'\n")
    assert not (tmp_path / ".dagnb_cache").exists()  # (refused before the kernel started)


@pytest.mark.parametrize("mention", ["print(n)", "# n is read by the library", "x = f'{n}'"])
def test_a_param_a_cell_mentions_is_set_at_the_top_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mention: str) -> None:
    """A cell that names it may read it: papermill's way, with its warning, stays."""
    from dagnb.notebook import headless

    cells = [type("Cell", (), {"cell_type": "code", "source": source})
             for source in (FETCH.format(n="5"), mention)]
    headless._refuse_step_params({"n": 3}, cells, tmp_path / "nb.py")  # (no refusal)
    with pytest.raises(WorkflowError, match="reads a variable 'n'"):
        headless._refuse_step_params({"n": 3}, cells[:1], tmp_path / "nb.py")


@pytest.mark.slow
def test_the_fix_it_names_sets_the_step_s_param(tmp_path: Path) -> None:
    _notebook(tmp_path, "$n", parameters="n = 5")
    runs = [subprocess.run([sys.executable, "-m", "dagnb", "run", "nb.py", *params],
                           cwd=tmp_path, capture_output=True, text=True, timeout=180)
            for params in ([], ["-p", "n=3"])]
    assert [done.returncode for done in runs] == [0, 0], runs[-1].stderr
    assert "total is 15" in runs[0].stdout and "total is 6" in runs[1].stdout
