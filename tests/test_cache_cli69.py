"""Session 69's cache mends (a QA pass of ``dagnb cache``).

- A compaction killed as it wrote its new pack left a pack-sized ``<n>-….tmp`` and a
  ``<n>-….pack.keys`` with no pack in ``.packs``, which no prune nor ``clear --all``
  removed and ``stats`` did not mention: a Ctrl-C's are now removed as it stops, and a
  prune or clear removes those of a compaction no longer running (no lock held on
  them, its process ended or over an hour ago).
- Hit counts outlived their entries: an entry saved again (``--refresh``, a clear and a
  new run) showed the hits of the one before it. An entry counts the uses after its
  creation only, and the journal's compaction keeps no others.
- Damaged entries set aside under ``.damaged`` were not in ``stats`` (nor was anything
  else once no entry was left) and were never freed by ``prune``.
- ``cache list``'s size was the files' bytes, ``stats``' and ``prune``'s what an entry
  takes on disk: ``list`` shows that too now.
- ``list`` and ``stats`` said "left in place (the cache is read-only)" of a damaged
  entry in a writable folder.
- ``list`` said ``never`` of an entry that ``cache_ttl_seconds`` ends (``plan`` called it
  expired).
- ``--step square`` did not find the Memory function ``__main__-mem-91dd9af6.square``,
  and ``list --step`` took a typo for a step with no entries.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import pack_compact
from dagnb.cache.clearing import check_clear_scope
from dagnb.cache.housekeeping import DAMAGED
from dagnb.cache.keys import StepKey
from dagnb.cache.pack import PACKS
from dagnb.cache.store import Store
from dagnb.cli import main
from dagnb.errors import ConfigError

SQUARE = "__main__-mem-91dd9af6.square"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _packed(cache: Path, count: int = 3) -> Store:
    """A cache of ``count`` packed entries of step ``s`` (no files: pack records)."""
    store = Store(cache)
    for i in range(count):
        store.save("s", f"k{i}", out_dir=None, inline={"json": i})
    store.close()
    return store


def _ended_pid() -> int:
    """The pid of a process that ran and ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _leftovers(cache: Path, pid: int) -> list[Path]:
    """The files a compaction killed by process ``pid`` as it wrote its pack leaves."""
    folder = cache / PACKS
    keys = folder / f"{pid}-0123456789ab.pack.keys"
    temporary = folder / f"{pid}-0123456789ab.tmp"
    keys.write_bytes(b"DGKY" + b"\0" * 60)
    temporary.write_bytes(b"\0" * 300_000)  # (the size of the live records)
    return [keys, temporary]


# ---------------------------------------------------------------- 1. compaction leftovers

def test_prune_removes_what_a_killed_compaction_left_and_stats_counts_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    _packed(cache)
    left = _leftovers(cache, _ended_pid())
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    assert "293K an interrupted compaction left in .packs (prune frees it)" in said
    assert main(["cache", "prune", "--max-entries", "100", "--cache-dir", str(cache)]) == 0
    assert not any(path.exists() for path in left)
    assert len(Store(cache).entry_rows()) == 3  # (the packs themselves untouched)


def test_clear_all_removes_a_killed_compaction_s_pack_in_writing(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    _packed(cache)
    left = _leftovers(cache, _ended_pid())
    assert main(["cache", "clear", "--all", "--cache-dir", str(cache)]) == 0
    assert not any(path.exists() for path in left)


def test_a_compaction_still_writing_keeps_its_files(tmp_path: Path) -> None:
    """Its lock held (whatever its pid), or its process alive and the files under an
    hour old (the moment before it takes the lock): nothing of it goes."""
    cache = tmp_path / "c"
    store = _packed(cache)
    locked = _leftovers(cache, _ended_pid())
    handles = [open(path, "rb") for path in locked]  # noqa: SIM115
    for handle in handles:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    young = _leftovers(cache, os.getpid())
    try:
        store.reduce_size(items_limit=100)
        assert all(path.exists() for path in [*locked, *young])
    finally:
        for handle in handles:
            handle.close()
    store.reduce_size(items_limit=100)  # (let go of: its process ended)
    assert not any(path.exists() for path in locked)
    assert all(path.exists() for path in young)
    for path in young:  # an hour old: the pid is another process's now
        os.utime(path, (0, 0))
    store.reduce_size(items_limit=100)
    assert not any(path.exists() for path in young)


def test_a_ctrl_c_as_a_compaction_writes_its_pack_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "c"
    store = _packed(cache, count=6)
    for i in range(4):
        store.remove("s", f"k{i}")
    before = sorted(os.listdir(cache / PACKS))
    synced = []

    def interrupted(descriptor: int) -> None:
        synced.append(descriptor)
        if len(synced) == 2:  # (the keys file is in place, the pack being written)
            raise KeyboardInterrupt

    monkeypatch.setattr(pack_compact.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store._compact(force=True)
    assert sorted(os.listdir(cache / PACKS)) == before
    monkeypatch.undo()
    assert [row["key"] for row in Store(cache).entry_rows()] == ["k4", "k5"]


def test_a_real_interrupted_compaction_is_freed_by_prune(tmp_path: Path) -> None:
    """A process that compacts and is killed (SIGKILL: nothing of it runs) in the middle
    of writing its pack: its files go at the next prune."""
    cache = tmp_path / "c"
    store = _packed(cache, count=6)
    for i in range(4):
        store.remove("s", f"k{i}")
    store.close()
    killed = subprocess.run([sys.executable, "-c", _KILLED_MIDWAY, str(cache)], check=False)
    assert killed.returncode == -9
    names = os.listdir(cache / PACKS)
    assert any(name.endswith(".tmp") for name in names), names
    assert main(["cache", "prune", "--max-entries", "100", "--cache-dir", str(cache)]) == 0
    names = os.listdir(cache / PACKS)
    assert not any(name.endswith(".tmp") for name in names), names
    packs = {name for name in names if name.endswith(".pack")}
    assert all(name[:-len(".keys")] in packs for name in names if name.endswith(".keys"))
    assert [row["key"] for row in Store(cache).entry_rows()] == ["k4", "k5"]


_KILLED_MIDWAY = """
import os, signal, sys
from dagnb.cache import pack_compact
from dagnb.cache.clearing import check_clear_scope
from dagnb.cache.store import Store

synced = []
def fsync(descriptor):
    synced.append(descriptor)
    if len(synced) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
pack_compact.os.fsync = fsync
Store(sys.argv[1])._compact(force=True)
"""


# ---------------------------------------------------------------- 2. hits of a new entry

def test_an_entry_saved_again_counts_none_of_the_hits_of_the_one_before(
        tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "c", clock=clock)
    store.save("s", "k", out_dir=None, inline={"json": 1})
    for _ in range(3):
        clock.now += 1
        assert store.lookup("s", "k") is not None
        store.flush()  # (a run each: a journal folder each)
    assert [row["hits"] for row in store.entry_rows()] == [3]
    clock.now += 10
    store.save("s", "k", out_dir=None, inline={"json": 1}, refresh=True)
    assert [row["hits"] for row in Store(tmp_path / "c").entry_rows()] == [0]
    clock.now += 1
    assert store.lookup("s", "k") is not None
    store.flush()
    fresh = Store(tmp_path / "c")
    assert [(row["hits"], row["last_used"]) for row in fresh.entry_rows()] == [(1, clock.now)]
    assert fresh.stats_by_step()["s"]["hits"] == 1
    fresh._journal._compact()  # (folded: the old entry's uses are not kept)
    assert [row["hits"] for row in Store(tmp_path / "c").entry_rows()] == [1]


def test_a_cleared_folder_entry_run_again_starts_at_no_hits(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "c", clock=clock)
    out = store.scratch_dir("s")
    (out / "f.txt").write_text("x")
    store.save("s", "k", out_dir=out)
    for _ in range(2):
        clock.now += 1
        assert store.lookup("s", "k") is not None
    store.flush()
    assert store.clear() == 1
    clock.now += 1
    out = store.scratch_dir("s")
    (out / "f.txt").write_text("x")
    store.save("s", "k", out_dir=out)
    assert [row["hits"] for row in Store(tmp_path / "c").entry_rows()] == [0]


# ---------------------------------------------------------------- 3. damaged entries

def _set_aside_one(cache: Path) -> None:
    """A cache whose one entry, a folder, was found damaged and set aside."""
    store = Store(cache)
    out = store.scratch_dir("s")
    (out / "f.txt").write_text("x" * 5000)
    store.save("s", "k", out_dir=out)
    store.quarantine("s", "k", "its files no longer match their digest")
    assert len(os.listdir(cache / DAMAGED)) == 1


def test_stats_counts_damaged_entries_set_aside_even_with_no_entry_left(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    with pytest.warns(UserWarning):
        _set_aside_one(cache)
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"no entries in {cache}"
    assert re.fullmatch(r"not counted: 1 damaged entry set aside in \.damaged, [\d.]+K "
                        r"\(never served; prune frees them\)", lines[1]), lines[1]


def test_prune_frees_damaged_entries_set_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    with pytest.warns(UserWarning):
        _set_aside_one(cache)
    assert main(["cache", "prune", "--max-size", "1G", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out == (
        f"removed 0 cache entries and 1 damaged entry set aside in .damaged from {cache}; "
        "0 cache entries left, 0B\n")
    assert os.listdir(cache / DAMAGED) == []


# ---------------------------------------------------------------- 4. list's size

def test_list_shows_the_size_stats_and_prune_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    store = Store(cache)
    out = store.scratch_dir("files")
    (out / "f.txt").write_text("x" * 100)
    store.save("files", "k", out_dir=out)
    store.save("packed", "k", out_dir=None, inline={"json": 1})
    store.close()
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    stats = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()
             if line.startswith(("files", "packed"))}
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listed = {row[0]: row[2] for row in map(str.split, capsys.readouterr().out.splitlines()[1:])}
    assert listed == stats
    assert listed["files"] != "100B"  # (its files alone: not what a prune frees)


# ---------------------------------------------------------------- 5. the reason given

def test_list_and_stats_say_why_a_damaged_entry_stays_in_a_writable_folder(
        tmp_path: Path) -> None:
    for action in ("list", "stats"):
        cache = tmp_path / action
        store = Store(cache)
        out = store.scratch_dir("s")
        (out / "f.txt").write_text("x")
        entry = store.save("s", "0" * 32, out_dir=out)
        meta = entry.path / "meta.json"
        meta.write_text(meta.read_text().replace('"size_bytes":1,', '"size_bytes":"70 kB",'))
        with pytest.warns(UserWarning) as said:
            assert main(["cache", action, "--cache-dir", str(cache)]) == 0
        assert [str(warning.message).split("; ", 1)[1] for warning in said] == [
            f"left in place (dagnb cache {action} moves nothing; dagnb cache verify sets "
            "it aside), treated as a miss"]
        assert meta.exists()  # (left in place indeed)


# ---------------------------------------------------------------- 6. the expiry shown

def test_list_shows_when_cache_ttl_seconds_ends_an_entry(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = workdir / "c"
    store = Store(cache)
    store.save("s", "k", out_dir=None, inline={"json": 1})  # (saved with no ttl)
    store.save("t", "k", out_dir=None, inline={"json": 1}, ttl=60)  # (ends sooner)
    store.close()
    dagnb.configure(cache_ttl_seconds="1h")
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    said = capsys.readouterr()
    expires = [line.split()[-1] for line in said.out.splitlines()[1:]]
    assert expires[0].endswith("*") and expires[0] != "never*"
    assert not expires[1].endswith("*")
    assert "cache_ttl_seconds (1h)" in said.err
    dagnb.configure(cache_ttl_seconds=None)
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "never"


# ---------------------------------------------------------------- 7. plain names

def _memory_entries(cache: Path, *names: str) -> Store:
    store = Store(cache)
    for name in names:
        store.save(name, StepKey("k" + name, {}, {}), out_dir=None, inline={"json": 1})
    store.save("summarize", "k", out_dir=None, inline={"json": 1})
    store.close()
    return store


def test_clear_step_takes_a_memory_function_s_plain_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    _memory_entries(cache, SQUARE)
    assert main(["cache", "clear", "--step", "square", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out == f"removed 1 cache entry of step {SQUARE!r} from {cache}\n"
    assert [row["step"] for row in Store(cache).entry_rows()] == ["summarize"]


def test_list_step_takes_a_plain_name_and_refuses_a_typo(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    _memory_entries(cache, SQUARE)
    assert main(["cache", "list", "--step", "square", "--cache-dir", str(cache)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["step", SQUARE]
    for typo, meant in (("summarise", "summarize"), ("sqare", "square")):
        assert main(["cache", "list", "--step", typo, "--cache-dir", str(cache)]) == 2
        said = capsys.readouterr()
        assert said.out == ""
        assert said.err == (f"dagnb: error: --step {typo!r}: the cache in {str(cache)!r} holds "
                            f"no entries of that step; did you mean {meant!r}?\n")


def test_a_plain_name_of_two_functions_is_refused_naming_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    other = "__main__-other-0a1b2c3d.square"
    _memory_entries(cache, SQUARE, other)
    for action in ("clear", "list"):
        assert main(["cache", action, "--step", "square", "--cache-dir", str(cache)]) == 2
        assert capsys.readouterr().err == (
            f"dagnb: error: --step 'square': the cache in {str(cache)!r} holds entries of 2 "
            f"functions of that name; give one of their full names: {SQUARE!r}, {other!r}\n")
    assert len(Store(cache).entry_rows()) == 3


def test_a_plain_name_check_without_plain_names_suggests_the_full_name(tmp_path: Path) -> None:
    """``%dagger cache clear`` (which clears the name it was given) is not told to clear
    ``square`` when it means the function: it is refused, naming the full name."""
    cache = tmp_path / "c"
    store = _memory_entries(cache, SQUARE)
    with pytest.raises(ConfigError, match=f"give its full name: {SQUARE!r}"):
        check_clear_scope(store, "%dagger cache clear", "square", None, False)
