"""Runs that write nothing to the cache folder are still recorded, outside it.

A read-only run (``--cache-mode read-only``, or a read-write run on a folder it may not
write) recorded nothing: ``--only-failed`` after a failed one said "nothing to re-run"
and exited 0 (the last recorded run was an older one that succeeded), ``dagnb history``
did not list it and ``dagnb logs`` showed the older run's lines. An ``off`` run on a
read-only mount failed every step making its folder there (retried as the step's own
failure). A run whose record could not be written (a full disk) was listed as killed.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagnb import Graph, Step
from dagnb.cli import main
from dagnb.runtime import history

GOOD = "steps:\n  step1:\n    run: echo good v1\n"
BROKEN = "steps:\n  step1:\n    run: 'echo broken v2 >&2; exit 1'\n"


def _dagnb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(GOOD)
    return tmp_path


def _run(capsys: Any, cache: Path, *options: str) -> tuple[int, str, str]:
    return _dagnb(capsys, "run", "wf.yml", "--executor", "local", "--cache-dir", str(cache),
                  *options)


# -- read-only runs ----------------------------------------------------------------------
def test_only_failed_after_a_failed_read_only_run_runs_its_failed_step(flow, capsys):
    cache = flow / "cache"
    assert _run(capsys, cache)[0] == 0
    (flow / "wf.yml").write_text(BROKEN)
    assert _run(capsys, cache, "--cache-mode", "read-only")[0] == 1
    code, out, _ = _run(capsys, cache, "--only-failed")
    assert "nothing to re-run" not in out
    assert code == 1 and "step1  failed" in out  # (it ran again, and fails again)


def test_only_failed_in_read_only_mode_reads_the_last_read_only_run(flow, capsys):
    """The CI pattern: a read-only build, and on failure a read-only re-run of what
    failed (it went green, re-running nothing)."""
    cache = flow / "cache"
    assert _run(capsys, cache)[0] == 0
    (flow / "wf.yml").write_text(BROKEN)
    assert _run(capsys, cache, "--cache-mode", "read-only")[0] == 1
    code, out, _ = _run(capsys, cache, "--cache-mode", "read-only", "--only-failed")
    assert code == 1 and "nothing to re-run" not in out


def test_history_lists_a_read_only_run_and_logs_says_its_lines_were_not_kept(flow, capsys):
    cache = flow / "cache"
    assert _run(capsys, cache)[0] == 0
    (flow / "wf.yml").write_text(BROKEN)
    assert _run(capsys, cache, "--cache-mode", "read-only")[0] == 1
    code, out, _ = _dagnb(capsys, "history", "wf.yml", "--cache-dir", str(cache))
    rows = out.splitlines()[1:]
    assert code == 0 and len(rows) == 2
    assert "(read-only)" in rows[1] and "(read-only)" not in rows[0]
    code, out, err = _dagnb(capsys, "logs", "wf.yml", "step1", "--cache-dir", str(cache))
    assert code == 2 and "good v1" not in out  # (the older run's lines, as if the newest)
    assert "was read-only: its steps' lines were not kept" in err


def test_a_read_only_run_writes_nothing_to_the_cache_folder(flow, capsys):
    cache = flow / "cache"
    assert _run(capsys, cache)[0] == 0
    before = {path: path.stat().st_mtime_ns for path in cache.rglob("*")}
    (flow / "wf.yml").write_text(BROKEN)
    assert _run(capsys, cache, "--cache-mode", "read-only")[0] == 1
    assert {path: path.stat().st_mtime_ns for path in cache.rglob("*")} == before
    side = history.side_home(cache) / ".runs" / history.RECORDS_NAME
    assert '"read_only":true' in side.read_text()


def test_the_side_home_is_this_users_alone(tmp_path, monkeypatch):
    """Records planted in a shared folder would steer --only-failed: a base folder
    others may write is not used."""
    monkeypatch.setattr(history.tempfile, "gettempdir", lambda: str(tmp_path))
    base = tmp_path / f"dagnb-{os.getuid()}"
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    assert history.make_side_home(tmp_path / "cache") is None
    base.chmod(0o700)
    assert history.make_side_home(tmp_path / "cache") == history.side_home(tmp_path / "cache")


# -- a cache folder this user may not write ------------------------------------------------
class Unwritable:
    """A cache folder (``.path``) that this process may write until ``lock()``, and may
    not after: mode 0o555 for a user that mode bits bind; for root, whom they do not
    bind, ``path`` is a read-only bind mount of ``.writable`` (skipped where mounting is
    not allowed)."""

    def __init__(self, tmp_path: Path) -> None:
        self.writable = self.path = tmp_path / "cache"
        self.writable.mkdir()
        self._root = os.geteuid() == 0
        if self._root:
            self.path = tmp_path / "view"
            self.path.mkdir()

    def lock(self) -> Path:
        if not self._root:
            self.path.chmod(0o555)
            return self.path
        for options in (["--bind"], ["-o", "remount,bind,ro"]):
            done = subprocess.run(["mount", *options, str(self.writable), str(self.path)],
                                  capture_output=True)
            if done.returncode != 0:
                self.unlock()
                pytest.skip("root, whom mode bits do not stop, and no read-only bind "
                            "mount can be made here")
        return self.path

    def unlock(self) -> None:
        if self._root:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
        else:
            self.path.chmod(0o755)


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Unwritable]:
    folder = Unwritable(tmp_path)
    yield folder
    folder.unlock()


def test_a_run_fallen_back_to_read_only_is_recorded_for_only_failed(flow, capsys,
                                                                     unwritable):
    assert _run(capsys, unwritable.writable)[0] == 0
    cache = unwritable.lock()
    (flow / "wf.yml").write_text(BROKEN)
    with pytest.warns(UserWarning, match="cannot be written"):
        assert _run(capsys, cache)[0] == 1
    with pytest.warns(UserWarning, match="cannot be written"):
        code, out, _ = _run(capsys, cache, "--only-failed")
    assert code == 1 and "nothing to re-run" not in out
    assert "step1  failed" in out


def test_cache_off_on_a_read_only_folder_runs_its_steps_and_keeps_their_logs(
        flow, capsys, unwritable):
    cache = unwritable.lock()
    (flow / "wf.yml").write_text("steps:\n  flaky:\n    retries: 2\n"
                                 "    run: 'echo made > \"$DAGNB_OUT/r.txt\"; echo hello'\n")
    code, out, _ = _run(capsys, cache, "--cache-mode", "off")
    assert code == 0, out
    assert "retrying" not in out and "flaky  succeeded" in out
    code, out, _ = _dagnb(capsys, "logs", "wf.yml", "flaky", "--cache-dir", str(cache))
    assert code == 0 and out == "hello\n"


# -- a record that cannot be written ---------------------------------------------------------
def _refusing(where: str | None) -> Any:
    """``_append_record`` failing with a full disk's error for the records logs under
    ``where`` (None: every one)."""
    real = history._append_record

    def append(path: Any, record: Any) -> int:
        if where is None or str(path).startswith(where):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, record)

    return append


def _failing_graph() -> Graph:
    return Graph("full", [Step("a", run="exit 3"), Step("b", run="true", needs=["a"])])


def test_a_record_the_cache_folder_cannot_take_goes_to_the_side_home(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(history, "_append_record", _refusing(str(cache)))
    with pytest.warns(UserWarning, match="kept in .* instead"):
        run = _failing_graph().run(executor="local", cache_directory=str(cache))
    records, _ = history.recorded_runs(cache, "full")
    assert [r["run"] for r in records] == [run.id]
    assert records[0]["states"] == {"a": "failed", "b": "skipped"}  # (not killed)


def test_a_run_whose_record_is_written_nowhere_is_listed_unrecorded_not_killed(
        tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setattr(history, "_append_record", _refusing(None))
    with pytest.warns(UserWarning) as said:
        run = _failing_graph().run(executor="local", cache_directory=str(cache))
    records, _ = history.recorded_runs(cache, "full")
    assert [(r["run"], r.get("unrecorded"), r.get("killed")) for r in records] == [
        (run.id, True, None)]
    (warning,) = [str(w.message) for w in said if "record could not be written" in str(w.message)]
    assert str(cache / ".runs") in warning and "free space" in warning
    assert history.last_states(cache, "full") == {"a": "unrecorded", "b": "unrecorded"}
    monkeypatch.setattr(history, "_append_record", _refusing("/nowhere"))
    code = main(["history", "--cache-dir", str(cache)])
    out = capsys.readouterr().out
    assert code == 0 and "end unrecorded (started" in out and "killed" not in out


def test_a_run_folder_that_cannot_be_made_names_the_folder_and_the_fix(tmp_path,
                                                                      monkeypatch):
    cache = tmp_path / "cache"

    def full(path: Path) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(history, "make_folder", full)
    with pytest.warns(UserWarning):
        run = Graph("f", [Step("a", run="true")]).run(executor="local",
                                                      cache_directory=str(cache))
    error = run.status_rows()["a"]["error"]
    assert f"{cache}/.runs/{run.id}" in error and "free space" in error


def test_dagnb_run_says_which_folder_filled_up_and_the_fix(flow, capsys, monkeypatch):
    """A step whose folders could not be made on a full disk: its error alone named
    neither path nor fix."""
    import dagnb.cli
    import dagnb.executors.local

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dagnb.executors.local, "make_step_folders", full)
    monkeypatch.setattr(dagnb.cli, "_free_bytes", lambda path: 0, raising=False)
    code, _, err = _run(capsys, flow / "cache")
    assert code == 1
    (line,) = [line for line in err.splitlines() if "MiB free" in line]
    assert f"{flow / 'cache'}/.runs/" in line and "--cache-dir on another disk" in line
