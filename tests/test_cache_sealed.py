"""A pack's sealed index (dagnb.cache.sealed): written when a writer lets go of a pack
that grew enough, used by a fresh process only while it covers the pack exactly, and
never a reason to serve what is not the key's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from pack_helpers import packs, save

from dagnb.cache import DamagedEntryWarning, Store, pack_compact, pack_keys, pack_records
from dagnb.cache import pack as pack_module
from dagnb.cache import sealed as sealed_module
from dagnb.cache.sealed import SEAL_FROM, should_seal
from dagnb.testing import isolated


def _index(pack: Path) -> Path:
    return pack.with_name(pack.name + ".idx")


def _filled(location: Path, count: int, close: bool = True) -> Store:
    store = Store(location)
    for i in range(count):
        save(store, "s", f"k{i}", i)
    if close:
        store.close()
    return store


def _fresh(location: Path, keys: list[str]) -> tuple[list[object], set[type]]:
    """What a new process finds under ``keys`` (None for a miss), and how it looked the
    packs up (their keys files, or their sealed indexes)."""
    with isolated(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedEntryWarning)
        store = Store(location, read_only=True)
        found = [store.lookup("s", key) for key in keys]
        kinds = {type(keys) for keys in store._packs._keyed.values()}
        return [None if e is None else e.result() for e in found], kinds


def test_sealing_waits_for_enough_entries_then_for_growth_by_a_quarter():
    assert not should_seal(SEAL_FROM - 1, 0)
    assert should_seal(SEAL_FROM, 0)
    assert not should_seal(4000 + 999, 4000)  # (a quarter of 4,000 is 1,000)
    assert should_seal(4000 + 1000, 4000)
    assert not should_seal(300 + SEAL_FROM - 1, 300)  # at least SEAL_FROM new ones


def test_a_pack_let_go_of_with_enough_entries_is_found_without_its_keys_file(
    tmp_path, monkeypatch
):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    assert _index(pack).exists()
    read = []
    real = pack_keys._read_whole
    monkeypatch.setattr(pack_keys, "_read_whole", lambda p: (read.append(p), real(p))[1])
    keys = ["k0", f"k{SEAL_FROM // 2}", f"k{SEAL_FROM - 1}", "absent"]
    assert _fresh(tmp_path / "c", keys) == (
        [0, SEAL_FROM // 2, SEAL_FROM - 1, None], {pack_keys._SealedKeys})
    assert read == []  # no keys file read


def test_a_small_pack_is_not_sealed(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM - 1)
    (pack,) = packs(tmp_path / "c")
    assert not _index(pack).exists()
    assert _fresh(tmp_path / "c", ["k0"]) == ([0], {pack_keys._Keys})


def test_what_a_pack_gained_since_it_was_sealed_is_read_from_the_pack(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    sealed = _index(pack).read_bytes()
    keys = ["k0", "k1", "k2", "new"]
    with isolated():
        writer = Store(tmp_path / "c")  # adopts the sealed pack
        save(writer, "s", "new", "n")
        assert writer.remove("s", "k0")
        save(writer, "s", "k1", "replaced")
        assert _fresh(tmp_path / "c", keys) == (
            [None, "replaced", 2, "n"], {pack_keys._SealedKeys})
        writer.close()  # three entries more: not worth sealing again
    assert _index(pack).read_bytes() == sealed
    assert _fresh(tmp_path / "c", keys) == ([None, "replaced", 2, "n"], {pack_keys._SealedKeys})


def test_a_pack_that_gained_more_than_a_short_tail_is_read_through_its_keys_file(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    with isolated():
        writer = Store(tmp_path / "c")
        for i in range(SEAL_FROM // 2):  # ~90 KiB: more than a walk is worth
            save(writer, "t", f"more{i}", "x" * 500)
        assert writer.remove("s", "k0")
        assert _fresh(tmp_path / "c", ["k0", "k1"]) == ([None, 1], {pack_keys._Keys})
        writer.close()


def test_a_pack_that_grew_by_enough_is_sealed_again(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    with isolated():
        writer = Store(tmp_path / "c")
        for i in range(SEAL_FROM):
            save(writer, "s", f"more{i}", i)
        assert writer.remove("s", "k0")
        writer.close()
    assert packs(tmp_path / "c") == [pack]
    assert _fresh(tmp_path / "c", ["k0", "k1", f"more{SEAL_FROM - 1}"]) == (
        [None, 1, SEAL_FROM - 1], {pack_keys._SealedKeys})


def test_process_exit_seals_the_pack_a_memory_wrote(tmp_path):
    script = textwrap.dedent(f"""
        import dagnb
        memory = dagnb.Memory({str(tmp_path / "c")!r})
        square = memory.cache(lambda x: x * x)
        for i in range({SEAL_FROM}):
            square(i)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    (pack,) = packs(tmp_path / "c")
    assert _index(pack).exists()


def _exited_within(child: int, seconds: float) -> bool:
    """Whether forked ``child`` exited (with status 0) within ``seconds``; killed if not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.01)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    return False


def test_a_store_dropped_without_closing_it_seals_its_pack(tmp_path):
    import gc

    store = _filled(tmp_path / "c", SEAL_FROM, close=False)
    (pack,) = packs(tmp_path / "c")
    assert not _index(pack).exists()
    del store
    gc.collect()  # (a store is in a reference cycle: only the collector frees it)
    assert _index(pack).exists()


def test_a_forked_child_letting_go_of_the_pack_seals_nothing_and_never_hangs(tmp_path):
    store = _filled(tmp_path / "c", SEAL_FROM, close=False)
    (pack,) = packs(tmp_path / "c")
    writer = store._writer
    with writer._lock:  # as another thread in the middle of a save at the fork
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                store.close()
            finally:
                os._exit(0)
    assert _exited_within(child, 10)
    assert not _index(pack).exists()
    store.close()
    assert _index(pack).exists()


def test_a_forked_child_works_though_another_thread_held_the_index_at_the_fork(tmp_path):
    import threading

    store = _filled(tmp_path / "c", 1, close=False)
    held, release = threading.Event(), threading.Event()

    def inside_the_index() -> None:  # (a lookup or a refresh in another thread)
        with store._packs._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=inside_the_index)
    thread.start()
    held.wait()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        code = 1
        try:
            save(store, "t", "c", 2)
            code = 0 if store.lookup("s", "k0").result() == 0 else 1
            store.close()
        finally:
            os._exit(code)
    release.set()
    thread.join()
    assert _exited_within(child, 10)


def test_a_forked_child_saves_to_a_pack_of_its_own_and_seals_it(tmp_path):
    store = _filled(tmp_path / "c", 1, close=False)  # the parent holds its pack
    with store._writer._lock:  # (another thread mid-save at the fork)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            code = 1
            try:
                for i in range(SEAL_FROM):
                    save(store, "t", f"c{i}", i)
                store.close()
                code = 0
            finally:
                os._exit(code)
    assert _exited_within(child, 20)
    save(store, "s", "parent", "p")
    store.close()
    mine, its = sorted(packs(tmp_path / "c"), key=lambda p: p.stat().st_size)
    assert _index(its).exists() and not _index(mine).exists()
    with isolated():
        fresh = Store(tmp_path / "c", read_only=True)
        assert fresh.lookup("s", "parent").result() == "p"
        assert fresh.lookup("t", f"c{SEAL_FROM - 1}").result() == SEAL_FROM - 1


def test_many_lookups_through_a_sealed_index_make_a_dict(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    with isolated():
        fresh = Store(tmp_path / "c", read_only=True)
        found = [fresh.lookup("s", f"k{i}") for i in range(0, SEAL_FROM, 3)]
        (keys,) = fresh._packs._keyed.values()
        assert isinstance(keys, pack_keys._SealedKeys) and keys.found is not None
        assert [e.result() for e in found] == list(range(0, SEAL_FROM, 3))
        assert fresh.lookup("s", "absent") is None


@pytest.fixture
def small_seals(monkeypatch):
    """Sealing from 4 entries: an index small enough to damage byte by byte."""
    monkeypatch.setattr(sealed_module, "SEAL_FROM", 4)
    smallest = pack_records._FRAME.size + pack_records._TAIL.size
    monkeypatch.setattr(pack_keys, "_SEALED_FROM", 4 * smallest)  # (may_be_sealed's bound)


@pytest.mark.slow  # several seconds: on CI's main leg only
def test_a_damaged_or_cut_sealed_index_never_changes_what_is_served(tmp_path, small_seals):
    _filled(tmp_path / "c", 8)
    (pack,) = packs(tmp_path / "c")
    index = _index(pack)
    whole = index.read_bytes()
    keys = [f"k{i}" for i in range(8)]
    right = list(range(8))
    assert _fresh(tmp_path / "c", keys) == (right, {pack_keys._SealedKeys})
    for cut in range(len(whole)):
        index.write_bytes(whole[:cut])
        assert _fresh(tmp_path / "c", keys)[0] == right, cut
    for offset in range(len(whole)):
        for change in (0x01, 0x80):  # (one bit, low and high)
            damaged = bytearray(whole)
            damaged[offset] ^= change
            index.write_bytes(bytes(damaged))
            assert _fresh(tmp_path / "c", keys)[0] == right, offset
    index.write_bytes(bytes(len(whole)))  # blocks that read as zeros after a power loss
    assert _fresh(tmp_path / "c", keys)[0] == right
    index.unlink()
    assert _fresh(tmp_path / "c", keys) == (right, {pack_keys._Keys})


_OLDER = [f"K{i}" for i in range(20)]


def _older_elsewhere(location: Path, remove: bool) -> Path:
    """Pack Q holds s/K0..K19 = "old"; sealed pack P holds enough entries and then
    those replaced by "new" (or removed). P's index, which damage must not turn into
    "P does not hold K" (Q's older record would then win)."""
    with isolated():
        holder = Store(location)
        for key in _OLDER:
            save(holder, "s", key, "old")
        with isolated():
            writer = Store(location)  # Q is held: a pack of its own
            for i in range(SEAL_FROM):
                save(writer, "s", f"k{i}", i)
            for key in _OLDER:
                if remove:
                    assert writer.remove("s", key)
                else:
                    save(writer, "s", key, "new")
            writer.close()
        holder.close()
    (index,) = (location / ".packs").glob("*.pack.idx")
    return index


@pytest.mark.slow  # several seconds: on CI's main leg only
@pytest.mark.parametrize("remove", [False, True], ids=["replaced", "removed"])
def test_damage_to_a_sealed_index_never_lets_an_older_record_of_another_pack_win(
    tmp_path, remove
):  # (a real index: larger than the first read, so its length is not checked there)
    import xxhash

    index = _older_elsewhere(tmp_path / "c", remove)
    want = [None if remove else "new", 5]
    assert _fresh(tmp_path / "c", ["K0", "k5"]) == (
        want, {pack_keys._Keys, pack_keys._SealedKeys})  # (Q is too small to seal)
    whole = index.read_bytes()
    at = whole.find(xxhash.xxh3_128_digest(pack_records._needle("s", "K0")))
    assert at > 0
    for where in (at, at + 15, at + 20):  # K's digest, its place
        damaged = bytearray(whole)
        damaged[where] ^= 0x01
        index.write_bytes(bytes(damaged))
        assert _fresh(tmp_path / "c", ["K0", "k5"])[0] == want, where
    every = [want[0]] * len(_OLDER)
    assert _fresh(tmp_path / "c", _OLDER)[0] == every
    for where in range(72 * 8):  # each bit of the head (the fanout's bits among them)
        damaged = bytearray(whole)
        damaged[where // 8] ^= 1 << where % 8
        index.write_bytes(bytes(damaged))
        assert _fresh(tmp_path / "c", _OLDER)[0] == every, where
    zeroed = bytearray(whole)
    zeroed[-36 * 50:] = bytes(36 * 50)  # the last entries' blocks lost
    index.write_bytes(bytes(zeroed))
    assert _fresh(tmp_path / "c", ["K0", "k5"])[0] == want


def test_an_index_naming_a_place_past_what_a_read_can_reach_is_not_an_error(tmp_path):
    """Digests that hold, an offset of 2**64 - 1: crafted, yet a lookup only walks."""
    import xxhash

    from dagnb.cache.sealed import write_sealed

    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    keys_file = pack.with_name(pack.name + ".keys")
    blob = bytearray(keys_file.read_bytes())
    target = xxhash.xxh3_128_digest(pack_records._needle("s", "k5"))
    at = blob.rfind(target)
    blob[at + 16:at + 24] = (2**64 - 1).to_bytes(8, "little")
    size = pack.stat().st_size
    last = int.from_bytes(blob[-20:-12], "little")
    write_sealed(str(pack), pack_keys._name_digest(pack.name), bytes(blob), 16,
                 pack_keys._KEY, size, pack.read_bytes()[last:last + 16])
    assert _fresh(tmp_path / "c", ["k5", "k6"])[0] == [5, 6]


def test_a_digest_met_across_the_fields_of_an_entry_is_not_a_key(tmp_path):
    """A bucket is searched with ``bytes.find``: a digest found across another entry's
    fields (crafted: an offset, length and chain spelling it) is no entry of the index,
    whether its bucket is read or the index is held whole."""
    from dagnb.cache.sealed import SealedIndex, write_sealed

    entry = pack_keys._KEY  # digest, offset u64, length u32, chain u64
    hidden = b"\x00" + b"\x11" * 15  # in bucket 0, as the entries below
    spelled = entry.pack(bytes(16), int.from_bytes(hidden[:8], "little"),
                         int.from_bytes(hidden[8:12], "little"),
                         int.from_bytes(hidden[12:] + bytes(4), "little"))
    assert spelled.find(hidden) == 16  # (not where an entry starts)
    other = entry.pack(b"\x00\x22" * 8, 0, 40, 0)
    pack = str(tmp_path / "p.pack")
    write_sealed(pack, 7, bytes(16) + spelled + other, 16, entry, 1000, bytes(16))
    index = SealedIndex.open(pack, 7, 1000, entry.size)
    assert index is not None
    assert index.find(hidden) is None
    assert index.find(b"\x00\x22" * 8) == other and index.find(bytes(16)) == spelled
    index.load()
    assert index.find(hidden) is None and index.find(b"\x00\x22" * 8) == other

def _opened_index(pack: Path) -> sealed_module.SealedIndex:
    index = sealed_module.SealedIndex.open(
        str(pack), pack_keys._name_digest(pack.name), pack.stat().st_size, pack_keys._KEY.size)
    assert index is not None
    return index


def _digests(count: int) -> list[bytes]:
    import xxhash

    return [xxhash.xxh3_128_digest(pack_records._needle("s", f"k{i}")) for i in range(count)]


def test_a_small_sealed_index_is_read_whole_after_its_first_lookup_then_read_no_more(
    tmp_path, monkeypatch
):
    """The first lookup reads the key's bucket (a fresh process's first hit reads
    little); the next reads the small index whole, checked, and no lookup reads again."""
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    digests = _digests(SEAL_FROM)
    by_bucket = _opened_index(pack)
    by_bucket.reads = SEAL_FROM + 1  # (found by bucket reads alone: what is right)
    right = [by_bucket.find(digest) for digest in digests]
    assert not by_bucket.whole and all(right)
    index = _opened_index(pack)
    assert index.find(digests[0]) == right[0] and not index.whole
    assert index.find(digests[1]) == right[1] and index.whole
    reads = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda *a: (reads.append(a), real(*a))[1])
    assert [index.find(digest) for digest in digests] == right
    assert index.find(b"\x00" * 16) is None and index.find(b"\xff" * 16) is None
    assert reads == []


def test_damage_to_a_bucket_never_looked_up_is_found_when_a_small_index_is_read_whole(
    tmp_path,
):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    digests = _digests(SEAL_FROM)
    whole = _index(pack).read_bytes()
    index = _opened_index(pack)
    bucket_of = lambda digest: int.from_bytes(digest[:4], "big") >> (32 - index.bits)  # noqa: E731
    other = next(d for d in digests[2:] if bucket_of(d) not in map(bucket_of, digests[:2]))
    damaged = bytearray(whole)
    damaged[whole.find(other) + 20] ^= 0x01  # (its offset: a bucket neither lookup reads)
    _index(pack).write_bytes(bytes(damaged))
    index = _opened_index(pack)
    assert index.find(digests[0]) is not None
    with pytest.raises(ValueError, match="digest"):
        index.find(digests[1])
    assert _fresh(tmp_path / "c", ["k0", "k1", "k2"])[0] == [0, 1, 2]


def test_a_large_sealed_index_is_looked_up_by_bucket_until_a_dict_is_made_of_it(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sealed_module, "_READ_WHOLE_UP_TO", 1024)  # (as if large)
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    digests = _digests(SEAL_FROM)
    index = _opened_index(pack)
    found = [index.find(digest) for digest in digests[:40]]
    assert all(found) and not index.whole
    index.load()
    assert [index.find(digest) for digest in digests[:40]] == found


def test_a_pack_whose_last_record_is_not_the_one_its_index_names_is_read_through_its_keys(
    tmp_path,
):
    """A pack cut short by a power loss and grown back to the very size its index
    covers holds other records than the index was made of: the index is not used."""
    from dagnb.cache.pack import ENTRY, encode

    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    data = pack.read_bytes()
    (record,), _, _, _ = pack_module.decode(data[-_last_length(data):], pack.name)
    other = encode("s", record.key, ENTRY, record.body, record.stamp + 1)  # same length
    assert len(other) == _last_length(data)
    pack.write_bytes(data[:-len(other)] + other)
    assert _fresh(tmp_path / "c", [record.key, "k0"]) == (
        [SEAL_FROM - 1, 0], {pack_keys._Keys})


def _last_length(pack_bytes: bytes) -> int:
    """The length of a pack's last record (its tail says)."""
    return int.from_bytes(pack_bytes[-8:-4], "little")


def test_a_damaged_sealed_index_is_reported_once_as_an_index_not_as_lost_entries(
    tmp_path, small_seals
):
    _filled(tmp_path / "c", 8)
    (pack,) = packs(tmp_path / "c")
    data = bytearray(_index(pack).read_bytes())
    data[-1] ^= 0x01  # the last entry's bucket no longer matches its digest
    _index(pack).write_bytes(bytes(data))
    with isolated(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = Store(tmp_path / "c", read_only=True)
        found = [store.lookup("s", f"k{i}") for i in range(8)]
        assert store.lookup("s", "absent") is None  # (a miss reports what was found)
        assert store.lookup("s", "absent2") is None
    assert [e.result() for e in found] == list(range(8))
    messages = [str(w.message) for w in caught if w.category is DamagedEntryWarning]
    assert len(messages) == 1 and "cache index" in messages[0], messages
    assert "read whole instead" in messages[0] and ".pack.idx" in messages[0]


def test_a_sealed_index_that_lies_is_never_a_wrong_hit(tmp_path, small_seals):
    _filled(tmp_path / "c", 8)
    (pack,) = packs(tmp_path / "c")
    data = bytearray(_index(pack).read_bytes())
    start = len(data) - 8 * 36
    first, second = start, start + 36  # the places of two keys' records, swapped
    data[first + 16:first + 28], data[second + 16:second + 28] = (
        data[second + 16:second + 28], data[first + 16:first + 28])
    _index(pack).write_bytes(bytes(data))
    assert _fresh(tmp_path / "c", [f"k{i}" for i in range(8)])[0] == list(range(8))


def test_compaction_seals_the_new_pack_and_removes_the_old_ones_index(
    tmp_path, small_seals, monkeypatch
):
    monkeypatch.setattr(pack_compact, "COMPACT_FROM", 0)
    store = _filled(tmp_path / "c", 40)
    (old,) = packs(tmp_path / "c")
    assert _index(old).exists()
    for i in range(30):
        store.remove("s", f"k{i}")
    store._compact()
    (new,) = packs(tmp_path / "c")
    assert new != old and not _index(old).exists() and _index(new).exists()
    assert _fresh(tmp_path / "c", ["k0", "k30", "k39"]) == (
        [None, 30, 39], {pack_keys._SealedKeys})


def test_clearing_the_cache_removes_the_sealed_indexes(tmp_path):
    store = _filled(tmp_path / "c", SEAL_FROM)
    store.clear()
    assert sorted(p.name for p in (tmp_path / "c" / ".packs").iterdir()) == ["generation"]


def test_an_index_sealed_while_another_process_clears_the_cache_is_not_left_behind(
    tmp_path, monkeypatch
):
    store = _filled(tmp_path / "c", SEAL_FROM, close=False)
    real = pack_keys.write_sealed

    def cleared_meanwhile(*args, **kwargs):  # the clear lists the folder before the rename
        with isolated():
            Store(tmp_path / "c").clear()
        return real(*args, **kwargs)

    monkeypatch.setattr(pack_keys, "write_sealed", cleared_meanwhile)
    store.close()
    assert sorted(p.name for p in (tmp_path / "c" / ".packs").iterdir()) == ["generation"]


def _child_says(code_in_child) -> str:
    """Fork; the child runs ``code_in_child()`` and writes what it returns to a pipe."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, str(code_in_child()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    assert _exited_within(child, 10), "the child hung"
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode()


def test_a_forked_child_never_serves_what_a_walk_cut_short_at_the_fork_left(
    tmp_path, monkeypatch
):
    import threading

    _older_elsewhere(tmp_path / "c", remove=True)  # K0 removed in the sealed pack
    with isolated():
        store = Store(tmp_path / "c", read_only=True)
        assert store.lookup("s", "k1").result() == 1
        index = store._packs
        sealed = next(n for n, k in index._keyed.items()
                      if isinstance(k, pack_keys._SealedKeys))
        others = {n: k for n, k in index._keyed.items() if n != sealed}
        index._keyed = {**others, sealed: index._keyed[sealed]}  # the other pack first
        inside, go = threading.Event(), threading.Event()
        real_scan = pack_module.PackIndex._scan

        def scan(self, data, pack, end=None):  # another thread, stopped mid-walk
            if pack == sealed and threading.current_thread().name == "walker":
                inside.set()
                go.wait()
            return real_scan(self, data, pack, end)

        monkeypatch.setattr(pack_module.PackIndex, "_scan", scan)
        walker = threading.Thread(target=index.live, name="walker")
        walker.start()
        inside.wait()
        try:
            said = _child_says(lambda: store.lookup("s", "K0"))
        finally:
            go.set()
            walker.join()
    assert said == "None"  # removed: never the older pack's "old"


def test_a_forked_child_sees_what_the_parent_saves_after_the_fork(tmp_path):
    store = _filled(tmp_path / "c", 1, close=False)  # the parent holds its pack
    read_end, write_end = os.pipe()
    answer_read, answer_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.read(read_end, 1)  # the parent saved
            entry = store.lookup("s", "after")
            os.write(answer_write, repr(None if entry is None else entry.result()).encode())
        finally:
            os._exit(0)
    save(store, "s", "after", "p")
    os.write(write_end, b"x")
    assert _exited_within(child, 10)
    assert os.read(answer_read, 100) == b"'p'"
    store.close()


def test_a_forked_child_closes_its_store_though_a_flush_was_under_way_at_the_fork(tmp_path):
    store = _filled(tmp_path / "c", 1, close=False)
    with store._moving_counts:  # (another thread writing the hit counts at the fork)
        said = _child_says(lambda: (store.close(), "closed")[1])
    assert said == "closed"
    store.close()


def _recrafted_head(data: bytearray, **changes: int) -> None:
    """Change fields of an index's head in place, its digest made anew (crafted)."""
    import xxhash

    head = sealed_module._HEAD
    names = ["magic", "version", "bits", "name", "covered", "count", "entries", "last",
             "last_head", "body", "head"]
    fields = dict(zip(names, head.unpack_from(data), strict=True))
    fields.update(changes)
    raw = head.pack(*fields.values())[:-8]
    data[:head.size] = raw + xxhash.xxh3_64_intdigest(raw).to_bytes(8, "little")


def test_a_crafted_index_with_a_huge_or_cut_bucket_is_not_an_error(tmp_path):
    """Digests recomputed over a bucket that claims 2**32 - 1 entries, or over one cut
    short: found damaged (the packs are read), not a MemoryError or a struct.error."""
    import struct

    import xxhash

    _filled(tmp_path / "c", 600)
    (pack,) = packs(tmp_path / "c")
    whole = bytearray(_index(pack).read_bytes())
    head, bucket_size = sealed_module._HEAD, sealed_module._BUCKET
    bits, count = head.unpack_from(whole)[2], head.unpack_from(whole)[5]
    target = xxhash.xxh3_128_digest(pack_records._needle("s", "k5"))
    bucket = int.from_bytes(target[:4], "big") >> (32 - bits)
    huge = bytearray(whole)
    _recrafted_head(huge, count=2**32 - 1)
    struct.pack_into("<I", huge, head.size + bucket_size.size * bucket, 2**32 - 1)
    _index(pack).write_bytes(bytes(huge))
    assert _fresh(tmp_path / "c", ["k5"])[0] == [5]
    entries_at = head.size + bucket_size.size * (1 << bits)
    last = bytes(whole[-36:-20])  # the last entry's digest: its bucket is the last one
    last_bucket = int.from_bytes(last[:4], "big") >> (32 - bits)
    start = 0 if last_bucket == 0 else bucket_size.unpack_from(
        whole, head.size + bucket_size.size * (last_bucket - 1))[0]
    cut = whole[:-10]
    struct.pack_into("<IQ", cut, head.size + bucket_size.size * last_bucket, count,
                     xxhash.xxh3_64_intdigest(bytes(cut[entries_at + start * 36:]),
                                              seed=last_bucket))
    _index(pack).write_bytes(bytes(cut))
    key = next(f"k{i}" for i in range(600)
               if xxhash.xxh3_128_digest(pack_records._needle("s", f"k{i}")) == last)
    assert _fresh(tmp_path / "c", [key])[0] == [int(key[1:])]


def test_a_writer_seals_again_a_pack_whose_index_is_damaged(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    damaged = bytearray(_index(pack).read_bytes())
    damaged[-1] ^= 0x01  # an entry's byte: the head still holds
    _index(pack).write_bytes(bytes(damaged))
    with isolated():
        writer = Store(tmp_path / "c")  # adopts the pack, reads its index whole
        save(writer, "s", "new", "n")
        writer.close()
    assert _index(pack).read_bytes() != bytes(damaged)
    # (a damaged index would be distrusted: the packs walked, no index in use)
    assert _fresh(tmp_path / "c", ["k0", "new"]) == ([0, "n"], {pack_keys._SealedKeys})


def test_a_writer_adopting_a_sealed_pack_reads_its_index_when_it_lets_go_not_at_its_save(
    tmp_path, monkeypatch
):
    """The sealed index of an adopted pack is read whole (to know whether to seal it
    again) when the writer lets go of the pack, not at a fresh process's first save."""
    from dagnb.cache import pack_writer

    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    sealed_before = _index(pack).read_bytes()
    read: list[str] = []
    real = pack_writer.sealed_entries
    monkeypatch.setattr(pack_writer, "sealed_entries",
                        lambda path, digest: (read.append(path), real(path, digest))[1])
    with isolated():
        writer = Store(tmp_path / "c")  # adopts the sealed pack
        save(writer, "s", "new", "n")
        assert read == [] and len(packs(tmp_path / "c")) == 1
        writer.close()  # one entry more: too few to seal again
    assert read == [str(pack)]
    assert _index(pack).read_bytes() == sealed_before
    assert _fresh(tmp_path / "c", ["k0", "new"]) == ([0, "n"], {pack_keys._SealedKeys})


def test_a_fresh_process_finds_a_packs_size_through_the_descriptor_it_reads_with(
    tmp_path, monkeypatch
):
    """A pack is opened once and its size taken by ``fstat``: no ``stat`` walks its path
    again. A pack whose keys cannot be used is closed at once (no descriptor left)."""
    import gc

    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    stats, real = [], os.stat

    def recorded(path, *args, **kwargs):
        stats.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recorded)
    assert _fresh(tmp_path / "c", ["k0", "absent"]) == ([0, None], {pack_keys._SealedKeys})
    assert str(pack) not in stats
    monkeypatch.undo()
    for path in (_index(pack), pack.with_name(pack.name + ".keys")):
        path.unlink()
    gc.collect()
    if not os.path.isdir("/proc/self/fd"):
        assert _fresh(tmp_path / "c", ["k0"]) == ([0], set())
        return
    assert _fresh(tmp_path / "c", ["k0"]) == ([0], set())
    gc.collect()
    # (the descriptors open on the cache's files: the process's others come and go with
    # what other tests left running, a kernel's or a pool's)
    assert _open_under(tmp_path / "c" / ".packs") == []


def _open_under(folder) -> list[str]:
    """The files under ``folder`` this process has open."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # (closed meanwhile: the listing's own descriptor, say)
            continue
        if target.startswith(f"{folder}/"):
            found.append(target)
    return found


def _opened_indexes(monkeypatch) -> list[str]:
    """The sealed indexes opened from now on (through ``os.open``, as sealed.py does)."""
    opened, real = [], os.open

    def recorded(path, *args, **kwargs):
        if os.fspath(path).endswith(".idx"):
            opened.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", recorded)
    return opened


def test_a_fresh_process_opens_no_sealed_index_its_listing_showed_none_of(
    tmp_path, monkeypatch
):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    opened = _opened_indexes(monkeypatch)
    assert _fresh(tmp_path / "c", ["k0", "absent"]) == ([0, None], {pack_keys._SealedKeys})
    assert opened == [str(_index(pack))]
    opened.clear()
    _index(pack).unlink()  # a pack big enough to be sealed, with no index (yet)
    assert _fresh(tmp_path / "c", ["k0", f"k{SEAL_FROM - 1}", "absent"]) == (
        [0, SEAL_FROM - 1, None], {pack_keys._Keys})
    assert opened == []


def test_a_pack_sealed_after_the_listing_is_read_through_its_keys_file(
    tmp_path, monkeypatch
):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    aside = tmp_path / "index-aside"
    _index(pack).rename(aside)
    real = pack_module.PackIndex._names

    def sealed_just_after(self):
        names = real(self)
        if aside.exists():
            aside.rename(_index(pack))  # sealed between the listing and the reading
        return names

    monkeypatch.setattr(pack_module.PackIndex, "_names", sealed_just_after)
    assert _fresh(tmp_path / "c", ["k0", f"k{SEAL_FROM - 1}", "absent"]) == (
        [0, SEAL_FROM - 1, None], {pack_keys._Keys})
    assert _index(pack).exists()
    monkeypatch.undo()
    assert _fresh(tmp_path / "c", ["k0"]) == ([0], {pack_keys._SealedKeys})  # next time
