"""Packs shared by processes (dagnb.cache.pack): another process's removal, refresh,
clear and compaction are never served around, whatever the clocks say, and a file
system without flock or mmap, or another user's pack, costs no entry. ``isolated()``
stands for another process: it reads the packs with an index of its own."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from pack_helpers import count_listings, save_in_a_new_pack, saved_elsewhere
from pack_helpers import packs as _packs
from pack_helpers import save as _save

import dagnb.cache.pack as pack
import dagnb.cache.pack_compact as pack_compact
import dagnb.cache.pack_keys as pack_keys
import dagnb.cache.pack_records as pack_records
import dagnb.cache.store as store_module
from dagnb.cache import Store
from dagnb.cache.pack import ENTRY, Record, encode
from dagnb.testing import isolated

BIG = "x" * 1500  # records big enough for a compaction to be worth it


# ---------------------------------------------------------------- another process's writes


def test_a_removal_by_another_process_is_seen_at_the_next_hit(tmp_path):
    a = Store(tmp_path / "c")
    _save(a, "s", "k1", 1)
    assert a.lookup("s", "k1").result() == 1
    with isolated():
        assert Store(tmp_path / "c").remove("s", "k1")
    assert a.lookup("s", "k1") is None


def test_a_refresh_by_another_process_is_seen_at_the_next_hit(tmp_path):
    a = Store(tmp_path / "c")
    _save(a, "s", "k1", "old")
    assert a.lookup("s", "k1").result() == "old"
    with isolated():
        b = Store(tmp_path / "c")
        _save(b, "s", "k1", "new", refresh=True)
        b.close()
    assert a.lookup("s", "k1").result() == "new"


def test_a_clear_by_another_process_is_seen_at_the_next_hit(tmp_path):
    a = Store(tmp_path / "c")
    _save(a, "s", "k1", 1)
    assert a.lookup("s", "k1") is not None
    with isolated():
        Store(tmp_path / "c").clear()
    assert a.lookup("s", "k1") is None


def test_two_spellings_of_one_cache_folder_share_one_index(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "c")
    a, b = Store(tmp_path / "c"), Store(tmp_path / "link")
    _save(a, "s", "k1", 1)
    assert b.lookup("s", "k1") is not None
    assert a.remove("s", "k1")
    assert b.lookup("s", "k1") is None
    assert a._packs is b._packs


def test_a_hit_with_nothing_removed_reads_no_pack_again(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    assert store.lookup("s", "k1") is not None
    monkeypatch.setattr(pack.PackIndex, "refresh", lambda self: 1 / 0)
    for _ in range(3):
        assert store.lookup("s", "k1").result() == 1


def test_a_folder_refresh_replaces_a_packed_entry_another_process_wrote(tmp_path):
    b = Store(tmp_path / "c")
    assert b.lookup("s", "other") is None  # b has read the packs (none yet)
    with isolated():
        a = Store(tmp_path / "c")
        _save(a, "s", "K", "old")
        a.close()
    out = tmp_path / "o"
    out.mkdir()
    (out / "data.txt").write_text("new")
    b.save("s", "K", out_dir=out, refresh=True)
    assert (b.lookup("s", "K").out_dir / "data.txt").read_text() == "new"
    b.close()
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "K").inline is None  # the folder's


def test_a_packed_refresh_replaces_a_packed_entry_another_process_wrote(tmp_path, monkeypatch):
    """The packs are read once, just before the record is written: its stamp passes the
    other process's record though the clock stepped back, and the others are told."""
    b = Store(tmp_path / "c")
    _save(b, "s", "first", 1)  # b holds a pack, and has read the packs
    with isolated():
        a = Store(tmp_path / "c")
        _save(a, "s", "K", "old")
        assert a.lookup("s", "K").result() == "old"
    real_ns, real_refresh = time.time_ns, pack.PackIndex.refresh
    monkeypatch.setattr(store_module.time, "time_ns", lambda: real_ns() - 5 * 10**9)
    refreshes = []
    monkeypatch.setattr(pack.PackIndex, "refresh",
                        lambda index: (refreshes.append(1), real_refresh(index))[1])
    _save(b, "s", "K", "new", refresh=True)
    assert refreshes == [1]  # (one fstat of the generation, when no one else wrote)
    assert b.lookup("s", "K").result() == "new"
    assert a.lookup("s", "K").result() == "new"  # told: it read the packs again
    b.close()
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "K").result() == "new"


def test_removing_an_entry_another_process_packed_since_removes_it(tmp_path):
    b = Store(tmp_path / "c")
    assert b.lookup("s", "other") is None
    with isolated():
        a = Store(tmp_path / "c")
        _save(a, "s", "K", 1)
        a.close()
    assert b.remove("s", "K")
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "K") is None


def test_journal_compaction_counts_an_entry_another_process_packed_since(tmp_path):
    a = Store(tmp_path / "c")
    assert a.lookup("s", "other") is None
    with isolated():
        _save(Store(tmp_path / "c"), "s", "K", 1)
    a._packs.refreshed = 0.0  # read longer ago than a moment
    assert a._exists("s", "K")


# ---------------------------------------------------------------- which record is newest


def test_a_removal_wins_when_the_clock_stepped_back(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    real = time.time_ns
    monkeypatch.setattr(store_module.time, "time_ns", lambda: real() - 5 * 10**9)
    assert store.remove("s", "k1")
    assert store.lookup("s", "k1") is None
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "k1") is None


def test_a_refresh_wins_when_the_clock_stepped_back(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", "old")
    real = time.time_ns
    monkeypatch.setattr(store_module.time, "time_ns", lambda: real() - 5 * 10**9)
    _save(store, "s", "k1", "new", refresh=True)
    assert store.lookup("s", "k1").result() == "new"
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "k1").result() == "new"


def _write_records(path: Path, *records: tuple[str, int]) -> None:
    """Records of one key ``s/k`` in one pack: (result, stamp) in that order."""
    body = b'{"format":%d}'  # never parsed: the tests look at which record wins
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        for value, stamp in records:
            handle.write(encode("s", "k", ENTRY, (body % 0) + value.encode(), stamp))


def _winner(folder: Path, walk: bool) -> bytes:
    index = pack.PackIndex(str(folder))
    if walk:
        index.refresh()
        index._walk_blobs()
    record = index.get("s", "k")
    assert isinstance(record, Record)
    return record.body


def test_in_one_pack_the_later_record_wins_in_search_and_walk_alike(tmp_path):
    folder = tmp_path / ".packs"
    _write_records(folder / "a.pack", ("first", 200), ("second", 100))  # clock stepped back
    assert _winner(folder, walk=False).endswith(b"second")
    assert _winner(folder, walk=True).endswith(b"second")


def test_equal_stamps_in_two_packs_pick_one_record_whatever_the_listing(tmp_path, monkeypatch):
    folder = tmp_path / ".packs"
    _write_records(folder / "a.pack", ("in a", 100))
    _write_records(folder / "b.pack", ("in b", 100))
    real = os.listdir
    for order in (sorted, lambda names: sorted(names, reverse=True)):
        monkeypatch.setattr(pack.os, "listdir", lambda path, order=order: order(real(path)))
        assert _winner(folder, walk=False).endswith(b"in b")
        assert _winner(folder, walk=True).endswith(b"in b")


# ---------------------------------------------------------------- compaction races


def _big_entries(store: Store) -> Store:
    """``store`` with 200 entries big enough for a compaction to be worth it."""
    for i in range(200):
        _save(store, "s", f"k{i}", BIG + str(i))
    return store


def _entries_then_tombstones(location: Path) -> tuple[str, str]:
    """200 entries in one pack, 190 of them removed by tombstones in another."""
    with isolated():
        a = _big_entries(Store(location))
        a.close()
    entries = _packs(location)[0].name
    with isolated():
        b = Store(location)
        with isolated():
            holder = Store(location)  # holds the first pack: the tombstones go elsewhere
            _save(holder, "t", "hold", 0)
            for i in range(190):
                assert b.remove("s", f"k{i}")
            holder.close()
        b.close()
    tombstones = next(p.name for p in _packs(location) if p.name != entries)
    return entries, tombstones


def test_a_reader_racing_a_compaction_never_serves_a_removed_entry(tmp_path, monkeypatch):
    location = tmp_path / "c"
    entries, tombstones = _entries_then_tombstones(location)
    real_listdir, real_mapped = os.listdir, pack._mapped
    state = {"mapped": 0}

    def listdir(path):  # the pack of entries first, its tombstones next
        order = [entries, tombstones]
        return sorted(real_listdir(path), key=lambda n: order.index(n) if n in order else 9)

    def mapped(path):
        data = real_mapped(path)
        state["mapped"] += 1
        if state["mapped"] == 1:  # another process compacts while this one reads
            with isolated():
                assert pack_compact.compact(pack.index_of(f"{location}/.packs"))
        return data

    with isolated():
        monkeypatch.setattr(pack.os, "listdir", listdir)
        monkeypatch.setattr(pack, "_mapped", mapped)
        store = Store(location)
        assert store.lookup("s", "k3") is None
        assert store.lookup("s", "k195").result() == BIG + "195"


def test_a_writer_never_adopts_a_pack_a_compaction_just_removed(tmp_path, monkeypatch):
    location = tmp_path / "c"
    with isolated():
        a = _big_entries(Store(location))
        for i in range(190):
            a.remove("s", f"k{i}")
        a.close()
    with isolated():
        b = Store(location)
        assert b.lookup("s", "k199") is not None  # b knows the pack
        real_flock = fcntl.flock
        state = {"done": False}

        def flock(descriptor, operation):
            if not state["done"] and operation == fcntl.LOCK_EX | fcntl.LOCK_NB:
                state["done"] = True  # another process compacts between open and flock
                with isolated():
                    assert pack_compact.compact(pack.index_of(f"{location}/.packs"))
            return real_flock(descriptor, operation)

        monkeypatch.setattr(pack.fcntl, "flock", flock)
        _save(b, "s", "new", 1)
        monkeypatch.undo()
        b.close()
    with isolated():
        assert Store(location).lookup("s", "new") is not None


def test_a_compaction_syncs_its_pack_before_it_removes_the_old_ones(tmp_path, monkeypatch):
    store = _big_entries(Store(tmp_path / "c"))
    events = []
    real_fsync, real_unlink = os.fsync, os.unlink
    monkeypatch.setattr(pack.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(pack.os, "unlink", lambda p: (events.append("unlink"), real_unlink(p)))
    store.clear(step="s")  # by tombstones, then a compaction
    assert events and events[0] == "fsync" and "unlink" in events


# ---------------------------------------------------------------- file systems and owners


def test_another_users_pack_is_skipped_not_an_error(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    store.close()
    real_open = os.open

    def open_as_another_user(path, flags, *args):
        if str(path).endswith(".pack") and flags & os.O_WRONLY and not flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    with isolated():
        monkeypatch.setattr(os, "open", open_as_another_user)
        other = Store(tmp_path / "c")
        assert other.lookup("s", "k1").result() == 1
        _save(other, "s", "k2", 2)
        assert other.lookup("s", "k2").result() == 2
    assert len(_packs(tmp_path / "c")) == 2


def test_no_flock_gives_the_entry_a_folder(tmp_path, monkeypatch):
    def no_flock(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(pack.fcntl, "flock", no_flock)
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    assert store.lookup("s", "k1").result() == 1
    assert (tmp_path / "c" / "s" / "k1" / "meta.json").exists()
    assert _packs(tmp_path / "c") == []  # no empty pack left behind


def test_a_file_system_without_mmap_reads_the_packs(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    store.close()

    def no_mmap(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")  # some FUSE and 9p mounts

    monkeypatch.setattr(pack.mmap, "mmap", no_mmap)
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "k1").result() == 1


def test_a_reader_between_a_compactions_removals_never_serves_a_removed_entry(
    tmp_path, monkeypatch
):
    location = tmp_path / "c"
    entries, tombstones = _entries_then_tombstones(location)
    real_unlink = os.unlink
    kept = []

    def unlink(path):  # the compaction is slow: the pack of entries is still there
        if str(path).endswith(entries):
            kept.append(path)
        else:
            real_unlink(path)

    with isolated():
        monkeypatch.setattr(pack.os, "unlink", unlink)
        assert pack_compact.compact(pack.index_of(f"{location}/.packs"))
        monkeypatch.undo()
    assert kept and tombstones not in [p.name for p in _packs(location)]
    with isolated():  # the compacted pack and the entries: the tombstones came along
        store = Store(location)
        assert store.lookup("s", "k3") is None
        assert store.lookup("s", "k195").result() == BIG + "195"


def test_a_listing_that_missed_a_compactions_packs_is_taken_again(tmp_path, monkeypatch):
    location = tmp_path / "c"
    entries, _ = _entries_then_tombstones(location)
    real_listdir, real_unlink = os.listdir, os.unlink
    state = {"lists": 0}

    def unlink(path):  # the compaction is slow: the pack of entries is still there
        if not str(path).endswith(entries):
            real_unlink(path)

    def listdir(path):  # a compaction runs while the listing does, which misses its
        state["lists"] += 1  # new pack and the tombstones it removed
        if state["lists"] == 1:
            with isolated():
                monkeypatch.setattr(pack.os, "unlink", unlink)
                assert pack_compact.compact(pack.index_of(f"{location}/.packs"))
                monkeypatch.setattr(pack.os, "unlink", real_unlink)
            return [entries]
        return real_listdir(path)

    with isolated():
        monkeypatch.setattr(pack.os, "listdir", listdir)
        index = pack.index_of(f"{location}/.packs")
        index.refresh()  # what it read, before a hit's own check of the generation
        assert index._lookup("s", "k3") is None
        assert index._lookup("s", "k195") is not None
    assert state["lists"] >= 2


def test_a_compaction_bumps_the_generation_before_it_removes_a_pack(tmp_path, monkeypatch):
    location = tmp_path / "c"
    _entries_then_tombstones(location)
    generation = location / ".packs" / "generation"
    before = generation.stat().st_size
    seen = []
    real_unlink = os.unlink
    monkeypatch.setattr(
        pack.os, "unlink", lambda p: (seen.append(generation.stat().st_size), real_unlink(p))
    )
    with isolated():
        assert pack_compact.compact(pack.index_of(f"{location}/.packs"))
    assert seen and all(size > before for size in seen)


def test_a_fresh_reader_lists_the_packs_once_when_nothing_changes(tmp_path, monkeypatch):
    location = tmp_path / "c"
    _entries_then_tombstones(location)
    calls = count_listings(monkeypatch)
    with isolated():
        assert Store(location).lookup("s", "k195").result() == BIG + "195"
    assert len(calls) == 1


def test_a_removal_while_a_fresh_reader_reads_the_packs_is_not_served(tmp_path, monkeypatch):
    location = tmp_path / "c"
    saved_elsewhere(location)
    real_read = pack.PackIndex._read

    def read(self, name):  # another process removes k1 once this one read the pack
        done = real_read(self, name)
        monkeypatch.setattr(pack.PackIndex, "_read", real_read)
        with isolated():
            assert Store(location).remove("s", "k1")
        return done

    with isolated():
        monkeypatch.setattr(pack.PackIndex, "_read", read)
        assert Store(location).lookup("s", "k1") is None


def test_a_reader_lists_the_folder_again_only_when_the_generation_changed(tmp_path, monkeypatch):
    location = tmp_path / "c"
    saved_elsewhere(location)
    calls = count_listings(monkeypatch)
    with isolated():
        reader = Store(location)
        for i in range(3):  # misses: each reads what the packs gained, none lists again
            assert reader.peek("s", f"absent{i}") is None
        assert len(calls) == 1
        save_in_a_new_pack(location, "new", 2)
        listed = len(calls)
        assert reader.peek("s", "new").result() == 2  # the folder listed again
        assert len(calls) > listed


def test_a_writers_look_in_a_folder_of_its_own_packs_reads_nothing_until_one_comes(
    tmp_path, monkeypatch
):
    location = tmp_path / "c"
    writer = Store(location)
    _save(writer, "s", "k1", 1)  # its own pack, held
    assert writer.peek("s", "absent") is None  # (made it, bumped: listed once more)
    reads = []
    real_read = pack.PackIndex._read
    monkeypatch.setattr(
        pack.PackIndex, "_read", lambda self, name: (reads.append(name), real_read(self, name))[1]
    )
    calls = count_listings(monkeypatch)
    for i in range(3):
        assert writer.peek("s", f"absent{i}") is None
    assert calls == [] and reads == []
    with isolated():  # another process: the pack is held, so it makes one of its own
        _save(Store(location), "s", "new", 2)
    assert writer.peek("s", "new").result() == 2
    assert calls and reads


def test_a_symlink_removed_after_two_spellings_shared_an_index_moves_nothing(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    via_link, direct = Store(link), Store(real)
    assert via_link._packs is direct._packs
    link.unlink()
    with isolated():  # another process writes to the real folder
        _save(Store(real), "s", "k3", 3)
    assert direct.lookup("s", "k3").result() == 3
    _save(direct, "s", "k4", 4)
    assert not link.exists()  # (no folder made where the symlink was)
    with isolated():
        assert Store(real).lookup("s", "k4").result() == 4


def test_a_read_only_store_made_before_its_folder_shares_the_index_of_the_folder(tmp_path):
    location = tmp_path / "c"
    reader = Store(location, read_only=True)
    assert reader.lookup("s", "k1") is None  # no folder yet
    writer = Store(location)  # makes it
    assert reader._packs is writer._packs
    _save(writer, "s", "k1", 1)
    assert reader.lookup("s", "k1").result() == 1  # at once: one index in one process


def test_packs_made_between_a_fresh_readers_listings_do_not_empty_its_index(
    tmp_path, monkeypatch
):
    location = tmp_path / "c"
    saved_elsewhere(location)
    folder = location / ".packs"
    real_names = pack.PackIndex._names
    made = []

    def busy_names(self):  # other processes between two listings: a bump, a new pack
        found = real_names(self)
        made.append(1)
        with open(folder / "generation", "ab") as handle:
            handle.write(b".")
        (folder / f"other-{len(made)}.pack").write_bytes(b"")
        return found

    monkeypatch.setattr(pack.PackIndex, "_names", busy_names)
    with isolated():
        assert Store(location).lookup("s", "k1").result() == 1


def test_two_spellings_share_one_index_when_packs_is_a_symlink(tmp_path):
    (tmp_path / "root" / "c").mkdir(parents=True)
    (tmp_path / "fast" / "packs").mkdir(parents=True)
    (tmp_path / "root" / "c" / ".packs").symlink_to(tmp_path / "fast" / "packs")
    (tmp_path / "link").symlink_to(tmp_path / "root")
    a, b, c = (Store(tmp_path / "root" / "c"), Store(tmp_path / "link" / "c"),
               Store(tmp_path / "root" / "c"))
    assert a._packs is b._packs is c._packs
    _save(a, "s", "k", 1)
    assert c.remove("s", "k") and a.lookup("s", "k") is None


def test_a_hit_in_one_thread_waits_for_a_refresh_under_way_in_another(tmp_path, monkeypatch):
    import threading

    a = Store(tmp_path / "c")
    _save(a, "s", "k1", 1)
    assert a.lookup("s", "k1").result() == 1
    with isolated():  # another process removes it before thread B asks
        assert Store(tmp_path / "c").remove("s", "k1")
    index = a._packs
    b_knows, a_reads, b_done = threading.Event(), threading.Event(), threading.Event()
    real_fstat, real_read = os.fstat, pack.PackIndex._read

    # (get() finds the record inline, with no call to hook: its one call before it
    # serves the record is the fstat of the generation file)
    def fstat(descriptor):  # B found the old record; A refreshes meanwhile
        if threading.current_thread().name == "B" and not b_knows.is_set():
            b_knows.set()
            a_reads.wait(5)
        return real_fstat(descriptor)

    def read(self, name):  # A has begun its round, not read the tombstone yet
        if threading.current_thread().name == "A" and not a_reads.is_set():
            a_reads.set()
            b_done.wait(0.5)
        return real_read(self, name)

    monkeypatch.setattr(pack.os, "fstat", fstat)  # (threads but B pass through)
    monkeypatch.setattr(pack.PackIndex, "_read", read)
    found = {}

    def thread_b():
        found["b"] = index.get("s", "k1")
        b_done.set()

    threads = [threading.Thread(target=thread_b, name="B"),
               threading.Thread(target=lambda: (b_knows.wait(5), index.refresh()), name="A")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert b_knows.is_set() and a_reads.is_set()  # the race was staged, not waited out
    assert found == {"b": None}


def test_the_entry_folder_check_sees_what_the_effective_user_sees(tmp_path):
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root: the test sets the real user apart from the effective one")
    script = f"""
import os
from dagnb.cache.backend import LocalBackend
from dagnb.cache.steps import has_files
base = {str(tmp_path)!r}
os.chmod(base, 0o700)  # root's: a real user nobody may not search it
os.makedirs(base + "/out"); open(base + "/out/result.csv", "w").close()
backend = LocalBackend(base + "/cache")
os.makedirs(base + "/cache/s/k1"); open(base + "/cache/s/k1/meta.json", "w").write("{{}}")
os.setresuid(65534, 0, 0)  # real user nobody, effective user root (the owner)
print(has_files(base + "/out"), backend.read("s", "k1") is not None)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "True"], done.stderr


def test_a_cache_folder_made_again_in_its_place_gets_an_index_of_its_own(tmp_path):
    import shutil

    a = Store(tmp_path / "c")
    _save(a, "s", "k1", 1)
    shutil.rmtree(tmp_path / "c")
    b = Store(tmp_path / "c")
    assert b.lookup("s", "k1") is None
    _save(b, "s", "k2", 2)
    assert b.lookup("s", "k2").result() == 2


def test_an_index_whose_folder_went_is_not_given_to_another_with_its_inode(
    tmp_path, monkeypatch
):
    (tmp_path / "a").mkdir()
    first = pack.index_of(f"{tmp_path}/a/.packs")
    identity = pack.folder_identity(str(tmp_path / "a"))
    (tmp_path / "a").rmdir()
    (tmp_path / "b").mkdir()  # as if the file system gave b the inode a had
    other = pack.index_of(f"{tmp_path}/b/.packs", identity)
    assert other is not first and other.folder == f"{tmp_path}/b/.packs"


def test_the_index_of_a_folder_is_shared_while_a_store_holds_it_then_forgotten(tmp_path):
    import gc

    from dagnb.config import context

    with isolated():
        a = Store(tmp_path / "c")
        assert Store(tmp_path / "c")._packs is a._packs  # shared
        live = context().get("cache.packs", pack._LiveIndexes)
        assert [name[0] for name in live.indexes] == ["identity"]
        del a
        gc.collect()
        assert live.indexes == {}  # gone with its stores (its generation file closed)
        assert pack.index_of(f"{tmp_path}/c/.packs") is not None


def test_a_removal_is_seen_when_the_generation_file_is_another_users(tmp_path, monkeypatch):
    a = Store(tmp_path / "c")
    _save(a, "s", "k1", 1)
    assert a.lookup("s", "k1") is not None
    real_open = os.open

    def open_as_another_user(path, flags, *args):
        if str(path).endswith(pack.GENERATION) and flags & os.O_WRONLY:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    with isolated():
        monkeypatch.setattr(pack.os, "open", open_as_another_user)
        assert Store(tmp_path / "c").remove("s", "k1")
        monkeypatch.undo()
    assert a.lookup("s", "k1") is None


# ---------------------------------------------------------------- keys files


def _write_keyed(path: Path, covered: int, *records: tuple[str, int]) -> None:
    """As :func:`_write_records`, and a keys file covering the first ``covered``."""
    import xxhash

    _write_records(path, *records)
    data = path.read_bytes()
    head = pack_keys._keys_head(path.name)
    hasher, entries, offset = xxhash.xxh3_64(head), [head], 0
    for _ in range(covered):
        record_end = _record_end(data, offset)
        needle = pack_records._record_needle(data, offset)
        entries.append(pack_keys._key_entry(hasher, needle, offset, record_end - offset))
        offset = record_end
    path.with_name(path.name + ".keys").write_bytes(b"".join(entries))


def _record_end(data: bytes, offset: int) -> int:
    length = pack_records._FRAME.unpack_from(data, offset)[1]
    return offset + pack_records._HEAD.size + length + pack_records._TAIL.size


def test_in_one_pack_the_later_record_wins_through_its_keys_file(tmp_path):
    folder = tmp_path / ".packs"
    for covered in (1, 2):  # the later record past what the keys file covers, or in it
        for name in ("a.pack", "a.pack.keys"):
            (folder / name).unlink(missing_ok=True)
        _write_keyed(folder / "a.pack", covered, ("first", 200), ("second", 100))
        index = pack.PackIndex(str(folder))
        index.refresh()
        assert "a.pack" in index._keyed  # found through the keys file
        assert _winner(folder, walk=False).endswith(b"second")
        assert _winner(folder, walk=True).endswith(b"second")


def test_equal_stamps_in_keyed_packs_pick_what_a_walk_picks(tmp_path, monkeypatch):
    folder = tmp_path / ".packs"
    _write_keyed(folder / "a.pack", 1, ("in a", 100))
    _write_keyed(folder / "b.pack", 1, ("in b", 100))
    _write_records(folder / "c.pack", ("older in c", 99))  # no keys file: searched
    real = os.listdir
    for order in (sorted, lambda names: sorted(names, reverse=True)):
        monkeypatch.setattr(pack.os, "listdir", lambda path, order=order: order(real(path)))
        assert _winner(folder, walk=False).endswith(b"in b")
        assert _winner(folder, walk=True).endswith(b"in b")


def test_a_compaction_syncs_the_new_packs_keys_file_before_putting_it_in_place(
    tmp_path, monkeypatch
):
    store = _big_entries(Store(tmp_path / "c"))
    events = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(pack.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(pack.os, "rename", lambda a, b: (
        events.append(str(b).rsplit(".", 1)[-1]), real_rename(a, b)))
    store.clear(step="s")
    events = [e for e in events if e in ("fsync", "keys", "pack")]  # (not the folders')
    assert events[:4] == ["fsync", "keys", "fsync", "pack"]
    (new,) = _packs(tmp_path / "c")
    assert pack_keys._read_keys(str(new), new.name, new.stat().st_size) is not None


def test_a_hit_found_through_a_keys_file_sees_another_process_remove_it(tmp_path):
    location = tmp_path / "c"
    with isolated():
        writer = Store(location)
        _save(writer, "s", "k", 1)
        writer.close()
    with isolated():
        reader = Store(location)
        assert reader.lookup("s", "k").result() == 1
        assert reader._packs._keyed  # the hit came through the keys file
        with isolated():
            other = Store(location)
            assert other.remove("s", "k")
            other.close()
        assert reader.lookup("s", "k") is None


def test_a_fresh_process_stamps_past_a_record_it_knows_only_through_a_keys_file(
    tmp_path, monkeypatch
):
    with isolated():
        _save(Store(tmp_path / "c"), "s", "k1", "old")
    real = time.time_ns
    with isolated():
        monkeypatch.setattr(store_module.time, "time_ns", lambda: real() - 5 * 10**9)
        store = Store(tmp_path / "c")
        store._packs.refresh()
        assert store._packs._keyed and not store._packs.records  # nothing walked
        _save(store, "s", "k1", "new")
        store.close()
    monkeypatch.undo()
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "k1").result() == "new"
