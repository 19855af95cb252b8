"""Crash safety: killed writers, shared locks, damaged entries (real processes, real time)."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import filelock
import pytest

from dagnb.cache import DamagedEntryWarning, StepKey, Store
from dagnb.testing import wait_until

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses fork and SIGKILL")
FORK = multiprocessing.get_context("fork")


def _writer(root: str, seed: int) -> None:
    """Save entries forever (new keys and refreshes of old ones) until killed."""
    store = Store(root)
    rng = random.Random(seed)
    while True:
        digest = f"{rng.randrange(12):032x}"
        out = store.scratch_dir("w")
        for index in range(rng.randrange(1, 4)):
            (out / f"part{index}.bin").write_bytes(os.urandom(rng.randrange(1, 300_000)))
        key = StepKey(digest, {"format": "f", "seed": str(seed)}, {})
        store.save("w", key, out_dir=out, logs=[{"line": "x"}], duration_s=0.1)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_killed_writer_never_leaves_an_accepted_half_entry(tmp_path):
    rng = random.Random(7)
    root = tmp_path / "cache"
    Store(root)
    accepted = 0
    deadline = time.monotonic() + 8
    trials = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while trials < 50 and time.monotonic() < deadline:
            trials += 1
            process = FORK.Process(target=_writer, args=(str(root), trials), daemon=True)
            process.start()
            time.sleep(rng.uniform(0.002, 0.06))
            os.kill(process.pid, signal.SIGKILL)
            process.join()
            store = Store(root)  # a fresh reader: nothing cached in memory
            for key in store.backend.names("w"):
                entry = store.lookup("w", key)
                if entry is None:
                    continue
                accepted += 1
                assert entry.meta["key"] == key and entry.meta["step"] == "w"
                assert entry.verify(), f"trial {trials}: {key} accepted but its outputs differ"
                assert entry.logs() == [{"line": "x"}]
    assert trials == 50
    assert accepted > 0
    assert not [w for w in caught if issubclass(w.category, DamagedEntryWarning)]


def _locked_run(root: str, counter: str, start_at: float) -> None:
    store = Store(root)
    while time.time() < start_at:  # start both workers together
        pass
    with store.lock("s", "k" * 32, timeout=10):
        if store.lookup("s", "k" * 32) is None:
            with open(counter, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.2)
            out = store.scratch_dir("s")
            (out / "result.txt").write_text("done")
            store.save("s", "k" * 32, out_dir=out)


def test_two_processes_share_one_execution(tmp_path):
    root, counter = str(tmp_path / "cache"), str(tmp_path / "counter")
    start_at = time.time() + 0.3
    workers = [
        FORK.Process(target=_locked_run, args=(root, counter, start_at), daemon=True)
        for _ in "ab"
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(Path(counter).read_text().splitlines()) == 1
    assert Store(root).lookup("s", "k" * 32) is not None


def _hold_lock(root: str, ready: str) -> None:
    store = Store(root)
    lock = store.lock("s", "k" * 32)
    lock.acquire()
    Path(ready).write_text("held")
    time.sleep(60)
    lock.release()  # never reached: the test kills us


def test_lock_of_a_killed_holder_is_released(tmp_path):
    root, ready = str(tmp_path / "cache"), tmp_path / "ready"
    holder = FORK.Process(target=_hold_lock, args=(root, str(ready)), daemon=True)
    holder.start()
    try:
        assert wait_until(ready.exists, timeout=10), "the lock holder never started"
        store = Store(root)
        with pytest.raises(filelock.Timeout):
            store.lock("s", "k" * 32, timeout=0.2).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    with store.lock("s", "k" * 32, timeout=2) as lock:
        assert lock.is_locked


def _damage_truncate(meta: Path) -> None:
    meta.write_bytes(meta.read_bytes()[:20])


def _damage_bad_json(meta: Path) -> None:
    meta.write_text("{not json")


def _damage_missing_out(meta: Path) -> None:
    import shutil

    shutil.rmtree(meta.parent / "out")


def _damage_missing_meta(meta: Path) -> None:
    meta.unlink()


def _damage_format(meta: Path) -> None:
    data = json.loads(meta.read_text())
    data["format"] = 999
    meta.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage",
    [_damage_truncate, _damage_bad_json, _damage_missing_out, _damage_missing_meta,
     _damage_format],
    ids=["truncated", "bad-json", "missing-out", "missing-meta", "format"],
)
def test_damaged_entry_is_a_miss_moved_aside_and_reported_once(tmp_path, damage):
    store = Store(tmp_path / "cache")
    out = store.scratch_dir("s")
    (out / "a.txt").write_text("a")
    entry = store.save("s", "d" * 32, out_dir=out)
    assert store.lookup("s", "d" * 32) is not None
    damage(entry.path / "meta.json")
    fresh = Store(tmp_path / "cache")
    for reader in (store, fresh):  # with and without the meta cached in memory
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert reader.lookup("s", "d" * 32) is None
            assert reader.lookup("s", "d" * 32) is None
        reports = [w for w in caught if issubclass(w.category, DamagedEntryWarning)]
        if reader is store:
            assert len(reports) == 1
            assert "cache entry s/dddddddddddd is damaged" in str(reports[0].message)
        else:
            assert reports == []  # already moved aside: a plain miss now
    assert not entry.path.exists()
    assert len(list((tmp_path / "cache" / ".damaged").iterdir())) == 1
    assert store.entries().empty


def _try_lock(root: str, key: str, answer: str) -> None:
    """In another process: whether the lock of ``key`` can be taken now."""
    lock = Store(root).lock("s", key)
    Path(answer).write_text("taken" if lock.acquire_now() else "held")
    lock.release()


def _another_process_takes(root: str, key: str, answer: Path) -> bool:
    child = FORK.Process(target=_try_lock, args=(root, key, str(answer)))
    child.start()
    child.join(10)
    taken = answer.read_text() == "taken"
    answer.unlink()
    return taken


def _release_inherited(lock: Any) -> None:
    lock.release()  # the child's copy: as a forked child leaving ``with lock:`` does


def test_a_lock_released_lets_other_processes_in_and_a_child_cannot_release_it(tmp_path):
    root, answer = str(tmp_path / "cache"), tmp_path / "answer"
    lock = Store(root).lock("s", "k" * 32)
    assert lock.acquire_now()
    assert not _another_process_takes(root, "k" * 32, answer)
    # a forked child that lets go of the lock it inherited leaves the parent's held
    child = FORK.Process(target=_release_inherited, args=(lock,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert not _another_process_takes(root, "k" * 32, answer)
    lock.release()
    assert _another_process_takes(root, "k" * 32, answer)


def test_the_lock_file_removed_meanwhile_is_made_again_and_locks(tmp_path):
    root, answer = str(tmp_path / "cache"), tmp_path / "answer"
    lock = Store(root).lock("s", "k" * 32)
    lock.acquire()
    lock.release()
    os.unlink(lock.path)  # the cache's locks folder emptied by hand
    with lock:
        assert not _another_process_takes(root, "k" * 32, answer)
    assert _another_process_takes(root, "k" * 32, answer)
