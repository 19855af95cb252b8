"""One step's records of the packs (PackIndex.live(step)): found in the time that step's
records take, not by a loop over every record (a plan of 20,000 steps that all missed
took 27 s, asking each step's other entries), and exactly those a loop over every
record finds, after adds, removals, replacements and another process's writes."""

from __future__ import annotations

from pack_helpers import save as _save
from pack_helpers import save_in_a_new_pack

from dagnb.cache import Store
from dagnb.testing import isolated


class _CountingRecords(dict):
    """The index's records, counting the keys a loop over them visits (either way)."""

    visited = 0

    def __iter__(self):
        for where in dict.__iter__(self):
            self.visited += 1
            yield where

    def __reversed__(self):
        for where in dict.__reversed__(self):
            self.visited += 1
            yield where


def _keys(store: Store, step: str) -> list[str]:
    """The keys of ``step``'s live records, in the order live(step) gives them."""
    assert store._packs is not None
    return [record.key for record in store._packs.live(step)]


def _by_a_loop_over_all(store: Store, step: str) -> list[str]:
    """What live(step) must give: live()'s records of ``step``, in its order."""
    assert store._packs is not None
    return [record.key for record in store._packs.live() if record.step == step]


def _assert_exact(store: Store, *steps: str) -> None:
    assert store._packs is not None
    for step in steps:
        assert _keys(store, step) == _by_a_loop_over_all(store, step)
        for record in store._packs.live(step):  # each the live one of its key
            assert store._packs.get(step, record.key) == record


def test_asking_each_step_for_its_entries_visits_each_record_a_bounded_number_of_times(
        tmp_path):
    steps = [f"s{i:04d}" for i in range(300)]
    with isolated():  # another process saved them
        writer = Store(tmp_path / "c")
        for step in steps:
            _save(writer, step, "k1", step)
        writer.close()
    with isolated():  # a fresh process (keys files searched, packs not walked yet)
        store = Store(tmp_path / "c")
        assert store._packs is not None
        counting = store._packs.records = _CountingRecords(store._packs.records)
        for step in steps:  # as a plan asks, for every step that misses
            entries = list(store.iter_entries(step))
            assert [(e.step, e.key) for e in entries] == [(step, "k1")]
            assert entries[0].result() == step
        assert counting.visited <= 3 * len(steps)  # a loop over all each time: 300 x 300


def test_a_step_s_records_stay_exact_after_adds_removals_and_replacements(tmp_path):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    _save(store, "t", "k1", 1)
    _save(store, "s", "k2", 2)
    assert _keys(store, "s") == ["k1", "k2"] and _keys(store, "t") == ["k1"]
    assert _keys(store, "u") == []
    _save(store, "s", "k3", 3)  # added once the step's records were asked for
    _save(store, "u", "k1", 1)  # a step first seen after that
    assert _keys(store, "s") == ["k1", "k2", "k3"] and _keys(store, "u") == ["k1"]
    assert store.remove("s", "k2")  # a tombstone
    assert _keys(store, "s") == ["k1", "k3"]
    _save(store, "s", "k1", "new", refresh=True)  # replaced by a newer record
    assert _keys(store, "s") == ["k1", "k3"]
    [replaced] = [r for r in store._packs.live("s") if r.key == "k1"]
    assert store.lookup("s", "k1").result() == "new"
    assert replaced == store._packs.get("s", "k1")
    _save(store, "s", "k2", "again")  # a removed key saved again
    assert _keys(store, "s") == ["k1", "k2", "k3"]
    _assert_exact(store, "s", "t", "u", "v")


def test_a_step_s_records_follow_another_process_s_writes(tmp_path):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    _save(store, "s", "k2", 2)
    _save(store, "t", "k1", 1)
    assert _keys(store, "s") == ["k1", "k2"]
    with isolated():  # another process adds, removes and replaces (in the same pack)
        other = Store(tmp_path / "c")
        _save(other, "s", "k3", 3)
        _save(other, "w", "k1", 1)
        assert other.remove("s", "k1")
        _save(other, "s", "k2", "theirs", refresh=True)
        other.close()
    assert _keys(store, "s") == ["k2", "k3"] and _keys(store, "w") == ["k1"]
    assert store.lookup("s", "k2").result() == "theirs"
    save_in_a_new_pack(tmp_path / "c", "k4", 4, remove=["k3"])  # in a pack of its own
    assert sorted(_keys(store, "s")) == ["held", "k2", "k4"]  # (packs: as listed)
    _assert_exact(store, "s", "t", "w")


def test_a_step_s_records_are_read_anew_after_another_process_clears_the_cache(tmp_path):
    store = Store(tmp_path / "c")
    _save(store, "s", "k1", 1)
    _save(store, "s", "k2", 2)
    assert _keys(store, "s") == ["k1", "k2"]
    with isolated():  # cleared, then as many records as before, of other keys
        other = Store(tmp_path / "c")
        other.clear()
        _save(other, "s", "k3", 3)
        _save(other, "t", "k4", 4)
        other.close()
    assert _keys(store, "s") == ["k3"] and _keys(store, "t") == ["k4"]
    _assert_exact(store, "s", "t")


def test_a_fresh_process_finds_a_step_s_records_it_only_searched_for_so_far(tmp_path):
    with isolated():
        writer = Store(tmp_path / "c")
        for key in ("k1", "k2", "k3"):
            _save(writer, "s", key, key)
        _save(writer, "t", "k1", 1)
        assert writer.remove("s", "k2")
        writer.close()
    with isolated():
        store = Store(tmp_path / "c")
        assert store.lookup("s", "k3").result() == "k3"  # found through a keys file
        assert sorted(_keys(store, "s")) == ["k1", "k3"]  # (in the order first read)
        _assert_exact(store, "s", "t")
