"""A notebook variable a ``--python`` cell changes in place and reads (``cfg.setdefault``,
``df['r'] = ...``) is kept with the step's entry as the cell left it, and put back when
the step is served from the cache: Run All after a restart leaves the notebook as the
first session did (the change was not made, silently: ``cfg`` stayed ``{}``, and a step
after it read a frame without column ``r``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

from dagnb.notebook.session import get_session


class Kernel(LiveKernel):
    def value(self, expression: str) -> object:
        """``expression``'s value in the kernel (a literal's repr, read back)."""
        return ast.literal_eval(self.printed(f"print(repr(({expression})))").strip())

    def cells(self, *sources: str) -> None:
        """Run ``sources`` as cells, in order (Run All); none may fail."""
        for source in sources:
            self.printed(source)

    def restart(self) -> None:
        super().restart()
        self.printed("%load_ext dagnb\nfrom dagnb.notebook.session import get_session")

    def states(self) -> dict[str, str]:
        return self.value("get_session().last_run.states()")  # type: ignore[return-value]


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A kernel of the test's own, in ``tmp_path`` (so its own cache), restartable."""
    with started_kernel(tmp_path, KERNEL_ENV, timeout=120) as client:
        kernel = Kernel(client)
        kernel.printed("%load_ext dagnb\nfrom dagnb.notebook.session import get_session")
        yield kernel


_CONFIG = "cfg = {}"
_SETS = "%%dagger s --python --outputs k\ncfg.setdefault('lr', 0.1)\nk = cfg['lr']\n"
_READS = "%%dagger t --python --outputs seen\nseen = dict(cfg)\n"


@pytest.mark.slow
def test_a_dict_the_cell_fills_in_place_is_as_it_left_it_after_a_restart(kernel: Kernel):
    kernel.cells(_CONFIG, _SETS)
    assert kernel.value("cfg, k") == ({"lr": 0.1}, 0.1)  # (run: changed in place)
    kernel.cells(_READS)
    assert kernel.value("seen") == {"lr": 0.1}
    kernel.restart()
    kernel.cells(_CONFIG, _SETS)
    assert kernel.states() == {"s": "cached"}
    assert kernel.value("cfg, k") == ({"lr": 0.1}, 0.1)  # (was {}: the change not made)
    kernel.cells(_READS)
    assert kernel.states() == {"t": "cached"}  # (its key saw the cfg it saw the first time)
    assert kernel.value("seen") == {"lr": 0.1}
    # one run of both: t starts once s is served, reading cfg as s left it
    kernel.cells(_CONFIG, "%dagger run")
    assert kernel.states() == {"s": "cached", "t": "cached"}
    assert kernel.value("cfg, seen") == ({"lr": 0.1}, {"lr": 0.1})


_FRAME = "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})"
_FEATURE = ("%%dagger feat --python --outputs n\ndf['r'] = df['a'] * 2\n"
            "n = int(df['r'].sum())\n")
_COLUMNS = "%%dagger cols --python --outputs names\nnames = list(df.columns)\n"


@pytest.mark.slow
def test_a_column_the_cell_adds_in_place_is_there_after_a_restart(kernel: Kernel):
    kernel.cells(_FRAME, _FEATURE, _COLUMNS)
    first = kernel.value("df.to_dict('list'), names")
    assert first == ({"a": [1, 2, 3], "r": [2, 4, 6]}, ["a", "r"])
    kernel.restart()
    kernel.cells(_FRAME, _FEATURE)
    assert kernel.states() == {"feat": "cached"}
    kernel.cells(_COLUMNS)
    assert kernel.states() == {"cols": "cached"}  # (was run again: a frame without r)
    assert kernel.value("df.to_dict('list'), names") == first


def _kept_files(name: str) -> list[str]:
    """dagnb's files in the output folder of ``name`` in the session's last run."""
    folder = get_session().last_run.outputs(name)
    return sorted(p.name for p in folder.glob(".dagnb-*")) if folder.exists() else []


def test_a_step_that_changes_nothing_it_reads_keeps_nothing_more(shell):
    """Only a variable the cell changes in place and reads is kept: not one it only
    reads, nor one it only changes (``log.append``: state, whose value the key does
    not see, so a kept one could undo what other cells added)."""
    shell.run_cell("cfg = {}\nlog = []")
    shell.run_cell_magic("dagger", "s --python --outputs k", _SETS.partition("\n")[2])
    assert _kept_files("s") == [".dagnb-kept.pkl"]
    shell.run_cell_magic("dagger", "plain --python --outputs n", "log.append(1)\nn = len(cfg)\n")
    assert _kept_files("plain") == []
    assert "_dagnb_keep" not in "".join(get_session().graph["plain"].func.__code__.co_names)
    assert shell.user_ns["log"] == [1]
    shell.run_cell_magic("dagger", "plain --python --outputs n", "log.append(1)\nn = len(cfg)\n")
    assert get_session().last_run.states() == {"plain": "cached"}
    assert shell.user_ns["log"] == [1]  # (not put back, not changed)


def test_a_variable_that_does_not_pickle_after_the_cell_leaves_the_step_uncached(shell):
    """Served from the cache, the step could not give it back: it runs each time, said
    in one line naming the variable (its value before the cell pickles, so its key is
    made)."""
    body = "import threading\ncfg.setdefault('lock', threading.Lock())\nk = len(cfg)\n"
    for _ in range(2):
        shell.run_cell("cfg = {}")
        with pytest.warns(UserWarning) as said:
            shell.run_cell_magic("dagger", "s --python --outputs k", body)
        assert get_session().last_run.states() == {"s": "succeeded"}
        assert [str(w.message) for w in said] == [
            "step 's' ran but was not cached: notebook variable 'cfg', which its cell changes "
            "in place and reads, cannot be pickled (cannot pickle '_thread.lock' object), so "
            "a run served from the cache could not give it back; keep what does not pickle "
            "out of it (for a lambda, a def does)"]
        assert "lock" in shell.user_ns["cfg"]
