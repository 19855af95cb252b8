"""Removing a step's last folder entry (remove, clear, an eviction) removes the step's
folder it left empty; a write that finds the folder gone meanwhile makes it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cache import backend as backend_module
from dagnb.cache.keys import StepKey
from dagnb.cache.store import Store


def _key(n: int) -> StepKey:
    digest = f"{n:032x}"
    return StepKey(digest, {"format": "f", "params": digest}, {"params": str(n)})


def _save_folder(store: Store, step: str, n: int) -> None:
    out = store.scratch_dir(step)
    (out / "file.txt").write_text(str(n))  # (a file: a folder entry, not packed)
    assert store.save(step, _key(n), out_dir=out).path.parent.name == step


def test_removing_a_steps_last_folder_entry_removes_its_folder(tmp_path: Path) -> None:
    """The empty step folder was left behind."""
    store = Store(tmp_path / "cache")
    _save_folder(store, "up", 1)
    _save_folder(store, "up", 2)
    assert store.remove("up", _key(1))
    assert sorted(p.name for p in (tmp_path / "cache" / "up").iterdir()) == [_key(2).digest]
    assert store.remove("up", _key(2))
    assert not (tmp_path / "cache" / "up").exists()


@pytest.mark.parametrize("removal", [
    lambda store: store.clear("up"),
    lambda store: store.clear(),
    lambda store: store.reduce_size(bytes_limit=0),
], ids=["clear-step", "clear-all", "reduce-size"])
def test_clearing_or_evicting_a_steps_folder_entries_leaves_no_empty_folder(
        tmp_path: Path, removal) -> None:
    store = Store(tmp_path / "cache")
    _save_folder(store, "up", 1)
    assert removal(store) == 1
    assert not (tmp_path / "cache" / "up").exists()


def test_a_save_whose_step_folder_another_process_removed_meanwhile_makes_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "cache")
    made, removed = backend_module.make_folder, []

    def made_then_emptied(path: Path) -> Path:  # (another process removed its last entry)
        made(path)
        if path.name == "up" and not removed:
            path.rmdir()
            removed.append(path)
        return path

    monkeypatch.setattr(backend_module, "make_folder", made_then_emptied)
    _save_folder(store, "up", 1)
    assert removed  # (it was gone as the save renamed its entry in)
    assert (tmp_path / "cache" / "up" / _key(1).digest / "out" / "file.txt").read_text() == "1"
