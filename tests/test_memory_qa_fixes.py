"""Memory in a folder of other files, ``memory.clear()`` in a fresh process, and where the
"changed global" warning points (the second QA pass over Memory)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from dagnb.cache import StepKey, Store
from dagnb.cache.memory import Memory
from dagnb.cache.store import DamagedEntryWarning
from dagnb.errors import ConfigError


def _project(folder: Path) -> Path:
    """A project's folder: a package and data, two levels deep as entries would be."""
    (folder / "src" / "pkg").mkdir(parents=True)
    (folder / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (folder / "data" / "raw").mkdir(parents=True)
    (folder / "data" / "raw" / "x.csv").write_text("a,b\n")
    (folder / "README.txt").write_text("notes\n")
    return folder


def _user_files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.is_file() and not path.relative_to(folder).parts[0].startswith("."))


def _step_key(n: int) -> StepKey:
    digest = f"{n:032x}"
    return StepKey(digest, {"format": "f", "params": digest}, {"params": str(n)})


# ------------------------------------------------- A: a folder of other things as the cache


def test_the_store_leaves_folders_not_named_by_a_key_in_place(tmp_path):
    root = tmp_path / "cache"
    store = Store(root)
    store.save("feat", _step_key(1), out_dir=None, inline={"json": 1})
    _project(root)  # (as if the cache had been given a project's folder)
    before = _user_files(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedEntryWarning)
        assert store.reduce_size(items_limit=10) == 0
        assert [e.step for e in Store(root).iter_entries()] == ["feat"]
        assert Store(root).clear() == 1  # (dagnb cache clear --all)
    assert _user_files(root) == before == ["README.txt", "data/raw/x.csv", "src/pkg/mod.py"]
    assert not (root / ".damaged").exists() or not any((root / ".damaged").iterdir())


def test_a_folder_named_by_a_key_without_its_metadata_is_still_set_aside(tmp_path):
    root = tmp_path / "cache"
    store = Store(root)
    (root / "feat" / ("a" * 32)).mkdir(parents=True)
    with pytest.warns(DamagedEntryWarning, match="meta.json is missing"):
        assert list(store.iter_entries()) == []
    assert not (root / "feat" / ("a" * 32)).exists()


def test_memory_refuses_a_folder_of_other_files_at_its_first_miss(tmp_path):
    folder = _project(tmp_path / "project")
    memory = Memory(folder)  # (made without a look at the folder: a fresh process's path)
    double = memory.cache(lambda x: x * 2)
    with pytest.raises(ConfigError, match=r"holds other files and is not a dagnb cache.*"
                                          r"\.dagnb_cache"):
        double(21)
    with pytest.raises(ConfigError, match="holds other files"):
        double.call(21)  # (.call() takes no lock: refused all the same)
    assert sorted(path.name for path in folder.iterdir()) == ["README.txt", "data", "src"]


def test_memory_caches_in_a_new_folder_and_in_a_cache(tmp_path):
    calls = []

    def double(x):
        calls.append(x)
        return x * 2

    assert Memory(tmp_path / "new").cache(double)(21) == 42
    assert Memory(tmp_path / "new").cache(double)(21) == 42  # a cache now
    assert calls == [21]
    (tmp_path / "new" / "notes.txt").write_text("mine\n")  # a cache with a file added
    assert Memory(tmp_path / "new").cache(double)(22) == 44


def test_a_read_only_memory_reads_a_folder_of_other_files(tmp_path):
    folder = _project(tmp_path / "project")
    memory = Memory(folder, cache_mode="read-only")
    assert memory.cache(lambda x: x * 2)(21) == 42  # runs uncached, writes nothing
    assert sorted(path.name for path in folder.iterdir()) == ["README.txt", "data", "src"]


# --------------------------------------------------- B: memory.clear() in a fresh process


def test_clear_of_a_fresh_memory_removes_every_function_entry_and_keeps_steps(tmp_path):
    location = tmp_path / "cache"
    calls = []

    def load(name):
        calls.append(name)
        return f"v{len(calls)}"

    assert Memory(location).cache(load)("data") == "v1"
    Store(location).save("clean_data", _step_key(1), out_dir=None, inline={"json": 1})
    Memory(location).clear(warn=False)  # (a cleanup script: nothing cached in it)
    assert Memory(location).cache(load)("data") == "v2"  # ran again
    assert [e.step for e in Store(location).iter_entries("clean_data")] == ["clean_data"]


def test_clear_warns_as_joblibs_does_unless_told_not_to(tmp_path, caplog):
    memory = Memory(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="dagnb.memory"):
        memory.clear(warn=False)
        assert caplog.records == []
        memory.clear()
    assert [r.getMessage() for r in caplog.records] == [
        f"[{memory!r}]: Flushing the cache of every cached function"]


# --------------------------------------------------- C: the "changed global" warning's line


STATE = {"calls": 0}


def test_the_changed_global_warning_names_the_callers_line(tmp_path):
    @Memory(tmp_path / "cache").cache
    def counted(x):
        STATE["calls"] += 1
        if STATE["calls"] > 1000:  # (read as data: the global is in the key)
            raise RuntimeError
        return x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counted(1)
    [warning] = [w for w in caught if "changed global 'STATE'" in str(w.message)]
    assert warning.filename == __file__
