"""A pack's sealed index (dagnb.cache.sealed): written when a writer lets go of a pack
that grew enough, used by a fresh process only while it covers the pack exactly, and
never a reason to serve what is not the key's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from pack_helpers import packs, save

from dagnb.cache import DamagedEntryWarning, Store
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


def _fresh(location: Path, keys: list[str]) -> tuple[list[object], type]:
    """What a new process finds under ``keys`` (None for a miss), and how it looked the
    pack up (its keys file, or its sealed index)."""
    with isolated(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedEntryWarning)
        store = Store(location, read_only=True)
        found = [store.lookup("s", key) for key in keys]
        kinds = {type(keys) for keys in store._packs._keyed.values()}
        return [None if e is None else e.result() for e in found], (kinds or {None}).pop()


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
    real = pack_module._read_whole
    monkeypatch.setattr(pack_module, "_read_whole", lambda p: (read.append(p), real(p))[1])
    keys = ["k0", f"k{SEAL_FROM // 2}", f"k{SEAL_FROM - 1}", "absent"]
    assert _fresh(tmp_path / "c", keys) == (
        [0, SEAL_FROM // 2, SEAL_FROM - 1, None], pack_module._SealedKeys)
    assert read == []  # no keys file read


def test_a_small_pack_is_not_sealed(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM - 1)
    (pack,) = packs(tmp_path / "c")
    assert not _index(pack).exists()
    assert _fresh(tmp_path / "c", ["k0"]) == ([0], pack_module._Keys)


def test_a_pack_written_to_since_it_was_sealed_is_read_through_its_keys_file(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    (pack,) = packs(tmp_path / "c")
    sealed = _index(pack).read_bytes()
    with isolated():
        writer = Store(tmp_path / "c")  # adopts the sealed pack
        save(writer, "s", "new", "n")
        assert writer.remove("s", "k0")
        save(writer, "s", "k1", "replaced")
        keys = ["k0", "k1", "k2", "new"]
        assert _fresh(tmp_path / "c", keys) == ([None, "replaced", 2, "n"], pack_module._Keys)
        writer.close()  # three entries more: not worth sealing again
    assert _index(pack).read_bytes() == sealed
    assert _fresh(tmp_path / "c", keys) == ([None, "replaced", 2, "n"], pack_module._Keys)


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
        [None, 1, SEAL_FROM - 1], pack_module._SealedKeys)


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


def test_a_forked_child_letting_go_of_the_pack_seals_nothing(tmp_path):
    store = _filled(tmp_path / "c", SEAL_FROM, close=False)
    (pack,) = packs(tmp_path / "c")
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            store.close()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert not _index(pack).exists()
    store.close()
    assert _index(pack).exists()


def test_many_lookups_through_a_sealed_index_make_a_dict(tmp_path):
    _filled(tmp_path / "c", SEAL_FROM)
    with isolated():
        fresh = Store(tmp_path / "c", read_only=True)
        found = [fresh.lookup("s", f"k{i}") for i in range(0, SEAL_FROM, 3)]
        (keys,) = fresh._packs._keyed.values()
        assert isinstance(keys, pack_module._SealedKeys) and keys.found is not None
        assert [e.result() for e in found] == list(range(0, SEAL_FROM, 3))
        assert fresh.lookup("s", "absent") is None


def _entry_fields(size: int, start: int) -> dict[int, str]:
    """Which field of an entry each byte of a sealed index past ``start`` is in."""
    fields = {}
    for at in range(start, size):
        within = (at - start) % 36
        fields[at] = "digest" if within < 16 else "place" if within < 28 else "chain"
    return fields


@pytest.fixture
def small_seals(monkeypatch):
    """Sealing from 4 entries: an index small enough to damage byte by byte."""
    monkeypatch.setattr(sealed_module, "SEAL_FROM", 4)


def test_a_damaged_or_cut_sealed_index_never_serves_what_is_not_the_keys(
    tmp_path, small_seals
):
    _filled(tmp_path / "c", 8)
    (pack,) = packs(tmp_path / "c")
    index = _index(pack)
    whole = index.read_bytes()
    keys = [f"k{i}" for i in range(8)]
    right = list(range(8))
    assert _fresh(tmp_path / "c", keys) == (right, pack_module._SealedKeys)
    for cut in range(len(whole)):
        index.write_bytes(whole[:cut])
        assert _fresh(tmp_path / "c", keys)[0] == right, cut
    start = len(whole) - 8 * 36
    fields = _entry_fields(len(whole), start)
    for offset in range(len(whole)):
        damaged = bytearray(whole)
        damaged[offset] ^= 0x41
        index.write_bytes(bytes(damaged))
        served = _fresh(tmp_path / "c", keys)[0]
        assert all(got in (want, None) for got, want in zip(served, right, strict=True)), offset
        if fields.get(offset, "head") in ("head", "place", "chain") and offset >= 32:
            assert served == right, offset  # found damaged: the packs say
        if offset < 32:
            assert served == right, offset  # not this pack's index: its keys file
    index.unlink()
    assert _fresh(tmp_path / "c", keys) == (right, pack_module._Keys)


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
    monkeypatch.setattr(pack_module, "COMPACT_FROM", 0)
    store = _filled(tmp_path / "c", 40)
    (old,) = packs(tmp_path / "c")
    assert _index(old).exists()
    for i in range(30):
        store.remove("s", f"k{i}")
    store._compact()
    (new,) = packs(tmp_path / "c")
    assert new != old and not _index(old).exists() and _index(new).exists()
    assert _fresh(tmp_path / "c", ["k0", "k30", "k39"]) == (
        [None, 30, 39], pack_module._SealedKeys)


def test_clearing_the_cache_removes_the_sealed_indexes(tmp_path):
    store = _filled(tmp_path / "c", SEAL_FROM)
    store.clear()
    assert sorted(p.name for p in (tmp_path / "c" / ".packs").iterdir()) == ["generation"]
