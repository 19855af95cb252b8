"""``dagnb run w1/wf.yml`` from the folder above used that folder's cache, running every
step again and keeping its history apart, with no word of either folder: a line says so
when the workflow's folder holds a cache of its own."""

from __future__ import annotations

import pytest

from dagnb.cli import main

SAID = ("dagnb: the cache folder is .dagnb_cache, this folder's; w1/.dagnb_cache, beside "
        "the workflow, is another one (--cache-dir w1/.dagnb_cache uses it)\n")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["run", *args, "--executor", "local"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_from_another_folder_says_which_cache_it_uses(tmp_path, monkeypatch, capsys):
    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "wf.yml").write_text("steps:\n  a: {run: echo a}\n")
    monkeypatch.chdir(tmp_path / "w1")
    assert SAID not in _run(capsys, "wf.yml")[2]  # (its own folder's: nothing to say)
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "w1/wf.yml")
    assert code == 0 and SAID in err
    assert "1 succeeded" in out  # (the other cache: run again)
    code, out, err = _run(capsys, "w1/wf.yml", "--cache-dir", "w1/.dagnb_cache")
    assert "1 cached" in out and SAID not in err
