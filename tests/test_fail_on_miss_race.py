"""A fail-on-miss run whose entry goes between its check and the step (another process
pruned it) refuses the step as the check would have: exit 2, not a step failure's 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.runtime import prepare

pytestmark = pytest.mark.usefixtures("workdir")

WORKFLOW = "steps:\n  a: {run: 'echo a'}\n  b: {run: 'echo b', needs: [a]}\n"


def test_an_entry_evicted_after_the_check_is_refused_with_exit_2(workdir: Path, monkeypatch,
                                                                   capsys):
    (workdir / "wf.yml").write_text(WORKFLOW)
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    checked = prepare._refuse_misses

    def checked_then_cleared(*args, **kwargs):
        checked(*args, **kwargs)  # (all cached: no refusal) ... then another process:
        assert main(["cache", "clear", "--all"]) == 0

    monkeypatch.setattr(prepare, "_refuse_misses", checked_then_cleared)
    capsys.readouterr()
    assert main(["run", "wf.yml", "--executor", "local", "--cache-mode", "fail-on-miss"]) == 2
    out = capsys.readouterr().out
    assert "step 'a' is not cached and cache_mode is 'fail-on-miss'" in out
    assert not list((workdir / ".dagnb_cache").glob("a/*"))  # (nothing ran, nothing stored)
    shutil.rmtree(workdir / ".dagnb_cache")
