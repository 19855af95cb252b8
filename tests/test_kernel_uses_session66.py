"""A kernel's Memory hits are written to the cache's access journal as the cell ends: a
kernel that hits once and then stays quiet used to keep that use in memory (a hit
writes only once FLUSH_EVERY s passed since the first), and another process's prune
took the entry for unused."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

from dagnb.cache.store import Store

pytestmark = pytest.mark.slow

MODULE = """
def double(x):
    return 2 * x
"""


def _hits(cache: Path) -> int:
    """The hits the cache's journal holds (what another process's prune reads)."""
    return sum(hits for hits, _ in Store(str(cache))._journal.totals().values())


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding ``double(1)``, stored by this process (the kernel only hits)."""
    (tmp_path / "calc.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import dagnb

    cache = tmp_path / "cache"
    assert dagnb.Memory(str(cache)).cache(__import__("calc").double)(1) == 2
    sys.modules.pop("calc", None)
    return cache


def test_a_kernels_first_hit_is_written_as_its_cell_ends(filled: Path) -> None:
    before = _hits(filled)
    with started_kernel(filled.parent, KERNEL_ENV) as client:
        kernel = LiveKernel(client)
        printed = kernel.printed(textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(filled.parent)!r})
            import calc, dagnb
            double = dagnb.Memory({str(filled)!r}).cache(calc.double)
            print(double(1), double.check_call_in_cache(1))
        """))
        assert printed.split() == ["2", "True"]
        # the cell ended: its hit is in the journal now, the kernel still running and
        # quiet (no later hit, no exit, which used to be what wrote it)
        assert _hits(filled) == before + 1
        # a hit in the next cell, at once, waits for the next write (FLUSH_EVERY s on)
        kernel.printed("print(double(1))")
        assert _hits(filled) == before + 1


def test_no_cell_hook_outside_a_kernel(filled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script that imported IPython (for its display) but runs no shell: nothing is
    registered, and the hit is written as before (at exit, or FLUSH_EVERY s later)."""
    import IPython

    from dagnb.cache import store as store_module

    monkeypatch.setattr(store_module, "_CELLS_WATCHED", [])
    monkeypatch.syspath_prepend(str(filled.parent))
    # (no shell, as in a script: another test of this process may have made one)
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    import dagnb

    before = _hits(filled)
    assert dagnb.Memory(str(filled)).cache(__import__("calc").double)(1) == 2
    assert store_module._CELLS_WATCHED == []
    assert _hits(filled) == before
