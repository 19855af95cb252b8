"""``dagnb logs`` after a read-only run, and ``dagnb history`` with a long param.

A step that ran and succeeded in a read-only run (its lines went with the run's
temporary folder) was said to have "printed nothing" (exit 0) where earlier runs had
used the cache folder, and given a list of guesses (exit 1) in a fresh one; a failed
step there was said to be of a read-only run, as both now are. ``dagnb history`` printed
a 20,000-item param whole: every line of its table, the header too, 109,013 characters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dagnb.cli import main

HELLO = "steps:\n  hello:\n    run: echo hello-second\n"
WITH_IDS = "steps:\n  hello:\n    params: {ids: [1]}\n    run: echo hello\n"
IDS = json.dumps(list(range(1, 20001)), separators=(",", ":"))


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(HELLO)
    return tmp_path


def _dagnb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _run(capsys: pytest.CaptureFixture[str], cache: Path, *options: str) -> str:
    """Run wf.yml (it succeeds); the id of its run."""
    code, out, _ = _dagnb(capsys, "run", "wf.yml", "--executor", "local", "--cache-dir",
                          str(cache), *options)
    assert code == 0, out
    return re.search(r"^run (\S+) \(wf\)", out, re.M).group(1)


def _read_only_said(run_id: str) -> str:
    return (f"dagnb: error: run {run_id}, the last that had step 'hello', was read-only: its "
            "steps' lines were not kept (a read-only run writes nothing to the cache "
            "folder; --cache-mode off keeps them for dagnb logs); dagnb history lists the "
            "runs, and --run RUN shows an earlier one's\n")


# -- dagnb logs after a read-only run ----------------------------------------------------
@pytest.mark.parametrize("earlier", [False, True], ids=["fresh-folder", "used-folder"])
def test_logs_of_a_step_that_succeeded_in_a_read_only_run_says_its_lines_were_not_kept(
        flow, capsys, earlier):
    cache = flow / "cache"
    if earlier:  # (a run's folder there: said "it printed nothing", exit 0)
        _run(capsys, cache, "--no-cache")
    run_id = _run(capsys, cache, "--cache-mode", "read-only")
    code, out, err = _dagnb(capsys, "logs", "wf.yml", "hello", "--cache-dir", str(cache))
    assert (code, out, err) == (2, "", _read_only_said(run_id))


def test_logs_of_a_hit_in_a_read_only_run_shows_its_cache_entry_lines(flow, capsys):
    cache = flow / "cache"
    _run(capsys, cache)
    run_id = _run(capsys, cache, "--cache-mode", "read-only")
    code, out, err = _dagnb(capsys, "logs", "wf.yml", "hello", "--cache-dir", str(cache))
    assert (code, out) == (0, "hello-second\n")
    assert re.fullmatch(rf"dagnb: step 'hello' came from the cache in run {run_id}: its "
                        r"lines from the run that stored the entry, at [-0-9]{10} "
                        r"[:0-9]{8}\n", err), err


SKIPPING = ("steps:\n  load: {run: exit 3}\n"
            "  report: {run: echo reporting, needs: [load]}\n")


@pytest.mark.parametrize("earlier", [False, True], ids=["fresh-folder", "used-folder"])
def test_logs_of_a_step_skipped_in_a_read_only_run_says_it_was_skipped_and_why(
        flow, capsys, earlier):
    """It said its lines were not kept (exit 2): it had none, it never ran."""
    cache = flow / "cache"
    said_after = "no recorded run of 'wf.yml' ran it"
    if earlier:
        (flow / "wf.yml").write_text(SKIPPING.replace("exit 3", "echo loading"))
        ran = _run(capsys, cache)
        said_after = (f"it last ran in run {ran} (succeeded): dagnb logs wf.yml report "
                      f"--run {ran} --cache-dir {cache} shows its lines")
    (flow / "wf.yml").write_text(SKIPPING)
    code, out, _ = _dagnb(capsys, "run", "wf.yml", "--executor", "local", "--cache-dir",
                          str(cache), "--cache-mode", "read-only")
    assert code == 1, out
    skipped = re.search(r"^run (\S+) \(wf\)", out, re.M).group(1)
    code, out, err = _dagnb(capsys, "logs", "wf.yml", "report", "--cache-dir", str(cache))
    assert (code, out, err) == (1, "", (
        f"dagnb: step 'report' did not run in run {skipped}: it was skipped because upstream "
        f"step 'load' failed; {said_after}\n"))


# -- dagnb history with a long param -----------------------------------------------------
@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_history_cuts_a_long_param_as_dagnb_run_does_and_run_shows_it_whole(flow, capsys):
    (flow / "wf.yml").write_text(WITH_IDS)
    cache = flow / "cache"
    long_run = _run(capsys, cache, "-p", f"ids={IDS}")
    short_run = _run(capsys, cache, "-p", "ids=[1]")
    code, out, _ = _dagnb(capsys, "history", "wf.yml", "--cache-dir", str(cache))
    widths = [len(line) for line in out.splitlines()]  # (each was 109,013 characters)
    assert code == 0 and len(widths) == 3 and max(widths) < 200, widths
    _, first, second = out.splitlines()
    assert first.startswith(long_run) and second.startswith(short_run)
    assert first.endswith(' {"ids":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22...}')
    assert second.endswith(' {"ids":[1]}')
    code, out, _ = _dagnb(capsys, "history", "wf.yml", "--cache-dir", str(cache), "--run",
                          long_run)
    lines = out.splitlines()
    assert code == 0 and lines[1] == first.strip(), out
    assert lines[-2:] == ["params given:", f"  ids={IDS}"]


def test_history_run_refuses_an_id_no_run_has(flow, capsys):
    cache = flow / "cache"
    _run(capsys, cache)
    code, out, err = _dagnb(capsys, "history", "wf.yml", "--cache-dir", str(cache), "--run",
                            "20200101-000000-000-000000")
    assert (code, out) == (2, "")
    assert err == (f"dagnb: error: --run '20200101-000000-000-000000': no run of 'wf.yml' "
                   f"recorded in {str(cache)!r} by that id; dagnb history lists the runs' "
                   "ids\n")
