"""A ``--refresh`` whose new result is not stored (a live run reads the entry under its
key) leaves the step's lines and outputs in its run's folder, as any step not stored:
its record names no entry for it, so the next runs' trim leaves them there, and
``dagnb logs --run`` shows them (it said the entry was "stored again", the lines gone)."""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb.cache.housekeeping import RUN_USES
from dagnb.cli import main
from dagnb.runtime import history

WORKFLOW = "steps:\n  up: {run: 'echo said; echo data > $DAGNB_OUT/f'}\n"


@pytest.fixture
def reader_of_up(workdir: Path) -> Iterator[None]:
    """A live run (a leased folder under .runs) that reads up's entry."""
    (workdir / "wf.yml").write_text(WORKFLOW)
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    cache = workdir / ".dagnb_cache"
    (key,) = [p.name for p in (cache / "up").iterdir()]
    live = cache / ".runs" / "00000000-000000-000-live00"
    live.mkdir()
    (live / RUN_USES).write_text(f"up\t{key}\n")
    lease = os.open(live, os.O_RDONLY)
    fcntl.flock(lease, fcntl.LOCK_EX)
    yield
    os.close(lease)


def _newest_record(workdir: Path) -> dict:
    lines = (workdir / ".dagnb_cache" / ".runs" / history.RECORDS_NAME).read_text().split("\n")
    return json.loads([line for line in lines if line.strip()][-1])


@pytest.mark.usefixtures("reader_of_up")
def test_an_unstored_refresh_keeps_its_lines_and_outputs_past_the_next_runs_trim(
        workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(history, "_draw", lambda: 0.0)  # every run that makes a folder prunes
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["run", "wf.yml", "--executor", "local", "--refresh"]) == 0
    assert any("its new result was not stored" in str(w.message) for w in said)
    record = _newest_record(workdir)
    refreshed = record["run"]
    assert record["states"] == {"up": "succeeded"} and "up" not in record.get("entries", {})
    (workdir / "other.yml").write_text("steps:\n  other: {run: 'echo other'}\n")
    assert main(["run", "other.yml", "--executor", "local"]) == 0  # it prunes, and trims
    folder = workdir / ".dagnb_cache" / ".runs" / refreshed
    assert (folder / history.SIZE_NAME).is_file()  # (the prune measured it: trimmed first)
    assert (folder / "up" / "out" / "f").read_text() == "data\n"
    capsys.readouterr()
    assert main(["logs", "wf.yml", "up", "--run", refreshed]) == 0
    out, err = capsys.readouterr()
    assert out == "said\n" and "stored again" not in err, err


def test_a_packed_save_a_live_run_keeps_out_leaves_the_callers_files(tmp_path: Path) -> None:
    """The packed record took the log file (and the empty out folder) even though it was
    not stored: the run's folder lost the step's lines."""
    from dagnb.cache import StepKey, Store

    store = Store(tmp_path / "cache")
    key = StepKey("1" * 32, {"format": "f"}, {})
    out = store.scratch_dir("up")
    (out / "file.txt").write_text("old")
    store.save("up", key, out_dir=out)  # a folder entry, which a live run reads
    live = tmp_path / "cache" / ".runs" / "00000000-000000-000-live01"
    live.mkdir(parents=True)
    (live / RUN_USES).write_text(f"up\t{key.digest}\n")
    lease = os.open(live, os.O_RDONLY)
    fcntl.flock(lease, fcntl.LOCK_EX)
    step_folder = tmp_path / "run" / "up"
    (step_folder / "out").mkdir(parents=True)
    lines = step_folder / "logs-1.jsonl"
    lines.write_text('{"time": 1.0, "attempt": 1, "stream": "stdout", "line": "said"}\n')
    try:
        with pytest.warns(UserWarning, match="its new result was not stored"):
            new = store.save("up", key, out_dir=step_folder / "out", logs=lines, refresh=True)
    finally:
        os.close(lease)
    assert lines.is_file() and (step_folder / "out").is_dir()
    assert type(new).__name__ == "PackedEntry" and "in use by a live run" in new.not_stored
