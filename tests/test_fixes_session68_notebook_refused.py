"""`dagnb run NOTEBOOK` exits 2, as `dagnb run WORKFLOW.yml` does, when a fail-on-miss
step's entry goes between the run's check and the step (another process pruned it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_headless_session65 import _dagnb, _write

# in the kernel: the run's check passes, then the entries go, as another process's prune
_EVICT_AFTER_THE_CHECK = (
    "import shutil\n"
    "from dagnb.runtime import prepare\n"
    "_checked = prepare._refuse_misses\n"
    "def _checked_then_cleared(*args, **kwargs):\n"
    "    _checked(*args, **kwargs)\n"
    "    shutil.rmtree('cache')\n"
    "prepare._refuse_misses = _checked_then_cleared")


@pytest.mark.slow
def test_an_entry_evicted_after_the_check_exits_2_as_for_a_workflow(tmp_path: Path) -> None:
    """It exited 1: the step's row named no CacheMissError, and the cell raised RunFailed."""
    path = _write(tmp_path, _EVICT_AFTER_THE_CHECK, "%%dagger a\necho a")
    filled = _dagnb("run", path.name, "--executor", "local", "--cache-dir", "cache",
                    cwd=tmp_path)
    assert filled.returncode == 0, filled.stderr
    done = _dagnb("run", path.name, "--executor", "local", "--cache-dir", "cache",
                  "--cache-mode", "fail-on-miss", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "step 'a' is not cached and cache_mode is 'fail-on-miss'" in done.stderr
