"""A clear (or removal) by another process while a reader reads the same entries: what
it removed is a plain miss, never reported as damage, and what is served is right.
``isolated()`` stands for another process (a store, an index of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest

import dagnb.cache.store as store_module
from dagnb.cache import DamagedEntryWarning, Store
from dagnb.cache.memory import Memory
from dagnb.testing import isolated

CALLS: list[int] = []


def _big(n: int) -> list[bytes]:
    """A result with an entry folder of its own (too big for a pack), loaded anew at
    each hit (a list: not kept in memory)."""
    CALLS.append(n)
    return [bytes([n]) * 100_000]


def _clear_in_another_process(location: Path) -> None:
    with isolated():
        Store(location).clear()


def _cleared_first(location: Path, real):
    """``real``, called once the cache was cleared by another process (the first time)."""
    done = []

    def cleared_then_real(*args, **kwargs):
        if not done:
            done.append(True)
            _clear_in_another_process(location)
        return real(*args, **kwargs)

    return cleared_then_real


def test_an_entry_cleared_between_its_meta_and_its_files_is_a_plain_miss(tmp_path, monkeypatch):
    location = tmp_path / "c"
    with isolated():
        Memory(location, verbose=0).cache(_big)(1)
    monkeypatch.setattr(store_module, "_size_problem",
                        _cleared_first(location, store_module._size_problem))
    CALLS.clear()
    with isolated(), warnings.catch_warnings():
        warnings.simplefilter("error", DamagedEntryWarning)
        assert Memory(location, verbose=0).cache(_big)(1) == [bytes([1]) * 100_000]
    assert CALLS == [1], "a miss: run and stored again"
    assert not (location / ".damaged").exists()


def test_an_entry_cleared_before_its_result_file_is_loaded_is_a_plain_miss(tmp_path, monkeypatch):
    import dagnb.cache.entry as entry_module

    location = tmp_path / "c"
    with isolated():
        Memory(location, verbose=0).cache(_big)(3)
    monkeypatch.setattr(entry_module, "load_result",
                        _cleared_first(location, entry_module.load_result))
    CALLS.clear()
    with isolated(), warnings.catch_warnings():
        warnings.simplefilter("error", DamagedEntryWarning)
        assert Memory(location, verbose=0).cache(_big)(3) == [bytes([3]) * 100_000]
    assert CALLS == [3], "a miss: run and stored again"
    assert not (location / ".damaged").exists()


def _array(n: int) -> np.ndarray:
    CALLS.append(n)
    return np.full(20_000, n)


def test_an_entry_cleared_before_its_mapped_result_is_loaded_is_a_plain_miss(
        tmp_path, monkeypatch):
    location = tmp_path / "c"
    with isolated():
        Memory(location, mmap_mode="r", verbose=0).cache(_array)(2)
    monkeypatch.setattr(joblib, "load", _cleared_first(location, joblib.load))
    CALLS.clear()
    with isolated(), warnings.catch_warnings():
        warnings.simplefilter("error", DamagedEntryWarning)
        assert (Memory(location, mmap_mode="r", verbose=0).cache(_array)(2) == 2).all()
    assert CALLS == [2]
    assert not (location / ".damaged").exists()


def _save_file(store: Store, content: bytes) -> None:
    out = store.scratch_dir("s")
    (out / "a.bin").write_bytes(content)
    store.save("s", "k", out_dir=out)


def test_a_truncated_file_is_still_damage_and_never_served(tmp_path):
    location = tmp_path / "c"
    with isolated():
        _save_file(Store(location), b"x" * 1000)
    (location / "s" / "k" / "out" / "a.bin").write_bytes(b"x" * 10)
    with isolated(), pytest.warns(DamagedEntryWarning, match="a.bin"):
        assert Store(location).lookup("s", "k") is None
    assert list((location / ".damaged").iterdir())


def test_an_entry_saved_over_a_damaged_one_before_it_is_set_aside_stays(tmp_path, monkeypatch):
    location = tmp_path / "c"
    with isolated():
        _save_file(Store(location), b"x" * 1000)
    (location / "s" / "k" / "out" / "a.bin").write_bytes(b"x" * 10)
    set_aside = Store._set_aside

    def saved_over_first(self, *args):
        with isolated():
            _save_file(Store(location), b"y" * 1000)
        return set_aside(self, *args)

    monkeypatch.setattr(Store, "_set_aside", saved_over_first)
    with isolated(), pytest.warns(DamagedEntryWarning, match="a.bin"):
        assert Store(location).lookup("s", "k") is None
    monkeypatch.undo()
    with isolated():
        entry = Store(location).lookup("s", "k")
        assert entry is not None, "the healthy entry is not set aside"
        assert (entry.out_dir / "a.bin").read_bytes() == b"y" * 1000


_RACE = textwrap.dedent("""\
    import json, sys, time, warnings
    import dagnb
    from dagnb.cache import DamagedEntryWarning
    from dagnb.testing import isolated

    def f(i):
        return [bytes([i]) * 100_000] if i % 2 else i * 3  # a folder, a pack record

    role, location, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    end = time.monotonic() + seconds
    calls = wrong = clears = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while time.monotonic() < end:
            with isolated():  # read anew, as a fresh process would
                cached = dagnb.Memory(location, verbose=0).cache(f)
                for i in range(12):
                    calls += 1
                    wrong += cached(i) != f(i)
                if role == "clear":
                    (cached.clear(warn=False) if clears % 2
                     else dagnb.Memory(location, verbose=0).store.clear())
                    clears += 1
    damaged = [str(w.message) for w in caught if w.category is DamagedEntryWarning]
    print(json.dumps({"calls": calls, "wrong": wrong, "clears": clears,
                      "damaged": damaged}))
""")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_clear_racing_reads_in_other_processes_is_never_damage(tmp_path):
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    location = str(tmp_path / "c")
    workers = [subprocess.Popen([sys.executable, str(script), role, location, "2.5"],
                                stdout=subprocess.PIPE, text=True)
               for role in ("clear", "read")]
    clearer, reader = (json.loads(w.communicate(timeout=60)[0]) for w in workers)
    assert clearer["clears"] > 5 and reader["calls"] > 50
    assert clearer["wrong"] == reader["wrong"] == 0
    assert clearer["damaged"] == reader["damaged"] == []
