"""A full disk never costs a step's outputs (issue 13, problem 2): on a real small tmpfs
when this process may mount one, else by a write that fails with ENOSPC."""

from __future__ import annotations

import errno
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.testing import isolated

DISK_MB = 8


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB file system (tmpfs), or a skip where mounting is not allowed."""
    disk = tmp_path / "disk"
    if not _mount(disk, f"size={DISK_MB}m"):
        pytest.skip("cannot mount a tmpfs here (the ENOSPC tests below simulate it)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _run(cache: Path, step: Step):
    with isolated(cache_directory=str(cache)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = Graph("disk", [step]).run(executor="local")
        return run, [str(w.message) for w in caught]


def _big_step(kb: int, lines: int) -> Step:
    return Step("big", run=f'head -c {kb * 1024} /dev/zero > "$DAGNB_OUT/big.bin"; seq 1 {lines}')


def test_outputs_that_fit_stay_reachable_when_the_logs_do_not(small_disk: Path) -> None:
    run, caught = _run(small_disk / "cache", _big_step(7_900, 200_000))
    assert run.states() == {"big": "succeeded"}
    assert (run.outputs("big") / "big.bin").stat().st_size == 7_900 * 1024
    assert any("was not cached" in message for message in caught), caught


@pytest.mark.parametrize("kb", range(7_000, 8_400, 100))
def test_a_full_disk_sweep_never_loses_a_successful_steps_outputs(small_disk, kb) -> None:
    run, _ = _run(small_disk / "cache", _big_step(kb, 2_000))
    state = run.states()["big"]
    if state in ("succeeded", "cached"):
        assert (run.outputs("big") / "big.bin").stat().st_size == kb * 1024
    else:
        assert state == "failed"  # the step itself could not write its file


def test_exhausted_inodes_are_a_warning_or_a_failed_step_never_a_traceback(tmp_path) -> None:
    results = []
    for inodes in (12, 16, 20, 24, 28, 32, 40, 60):
        disk = tmp_path / f"inodes{inodes}"
        if not _mount(disk, f"size={DISK_MB}m,nr_inodes={inodes}"):
            pytest.skip("cannot mount a tmpfs here")
        try:
            step = Step("many", run='for i in 1 2 3 4 5 6; do echo $i > "$DAGNB_OUT/f$i"; done')
            run, caught = _run(disk / "cache", step)  # raises nothing: the point
            state = run.states()["many"]
            results.append(state)
            assert all("\n" not in message for message in caught)  # one line each
            if state == "succeeded":
                assert len(list(run.outputs("many").iterdir())) == 6
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    assert "succeeded" in results


def test_when_metadata_cannot_be_written_the_outputs_stay_in_the_run_folder(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagnb.cache import store

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store, "_write_meta", full)
    run, caught = _run(workdir / "cache", _big_step(64, 10))
    assert run.states() == {"big": "succeeded"}
    assert (run.outputs("big") / "big.bin").stat().st_size == 64 * 1024
    assert ".runs" in str(run.outputs("big"))
    assert [m for m in caught if "was not cached" in m and "No space" in m]
    assert not list((workdir / "cache" / ".scratch").iterdir())  # nothing half-built left


def test_when_the_final_rename_fails_the_outputs_go_back(workdir: Path, monkeypatch) -> None:
    from dagnb.cache.backend import LocalBackend

    def full(self: object, step: str, key: str, folder: Path, **options: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalBackend, "write", full)
    run, _ = _run(workdir / "cache", _big_step(64, 10))
    assert (run.outputs("big") / "big.bin").stat().st_size == 64 * 1024
