"""``dagnb cache clear --step NAME`` of a step whose entries were cleared before says
there is nothing to remove and exits 0, as ``rm -f`` does: it was refused as a typo
(exit 2, "did you mean 'report'?" for ``prep``), so a script that clears a step before
each run failed on its second run. A step the folder's runs never had is still refused
before anything goes, and ``cache list`` / ``cache stats --step`` of a cleared step show
no entries rather than refuse it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main

WORKFLOW = """\
steps:
  prep:
    run: echo prep
  report:
    run: echo report
    needs: [prep]
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    assert main(["run", "wf.yml", "--executor", "local", "--cache-dir", "c"]) == 0
    capsys.readouterr()
    return str(tmp_path / "c")


def _dagnb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_clearing_a_step_again_says_nothing_to_remove_and_exits_0(cache, capsys):
    code, out, _ = _dagnb(capsys, "cache", "clear", "--step", "prep", "--cache-dir", cache)
    assert (code, out) == (0, f"removed 1 cache entry of step 'prep' from {cache}\n")
    code, out, err = _dagnb(capsys, "cache", "clear", "--step", "prep", "--cache-dir", cache)
    assert (code, err) == (0, "")
    assert out == f"no cache entry of step 'prep' in {cache}: nothing to remove\n"
    code, out, _ = _dagnb(capsys, "cache", "list", "--step", "prep", "--cache-dir", cache)
    assert (code, out) == (0, "no entries of step 'prep'\n")
    code, out, _ = _dagnb(capsys, "cache", "stats", "--step", "prep", "--cache-dir", cache)
    assert code == 0 and f"0 cache entries, 0B in {cache}" in out
    code, out, _ = _dagnb(capsys, "cache", "list", "--cache-dir", cache)
    assert "report" in out  # (the other step's entry stays)


def test_a_step_no_run_had_is_still_refused_as_a_typo(cache, capsys):
    code, out, err = _dagnb(capsys, "cache", "clear", "--step", "reprot", "--cache-dir", cache)
    assert code == 2 and out == ""
    assert err == (f"dagnb: error: --step 'reprot': the cache in {cache!r} holds no entries "
                   "of that step; did you mean 'report'?\n")
    code, out, _ = _dagnb(capsys, "cache", "list", "--cache-dir", cache)
    assert "prep" in out and "report" in out  # nothing went
