"""A push of a cache whose small entries are pack records leaves the cache as it was
(QA: each record was unpacked into the source cache's ``.unpacked/`` to be uploaded,
and left there: a 142 KB cache became 1.8 MB after one push). Its folders are made
outside the cache, and gone after the push, even one that fails part way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import Store
from dagnb.cache.entry import PackedEntry
from dagnb.cache.remote import ObjectStore, push
from dagnb.cli import main
from dagnb.model.results import encode_inline

COUNT = 20


def _square(x: int) -> int:
    return x * x


def _fill(source: Path) -> None:
    """Small entries, each a pack record: ``Memory`` calls and steps with a line each."""
    square = dagnb.Memory(location=str(source)).cache(_square)
    for x in range(COUNT):
        square(x)
    store = Store(source)
    for n in range(COUNT):
        store.save("load", f"k{n:04d}", out_dir=None, inline=encode_inline({"n": n}, 4096),
                   logs=[{"time": 1.0, "attempt": 1, "stream": "stdout", "line": f"row {n}"}])
    store.close()


def _tree(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative path) and its size; folders as -1."""
    found: dict[str, int] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = -1
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = os.path.getsize(path)
    return found


def _usage(folder: Path) -> dict[tuple[str, str], tuple[int, float]]:
    store = Store(folder)
    return {(entry.step, entry.key): store.usage(entry) for entry in store.iter_entries()}


def test_a_push_of_pack_records_leaves_the_source_cache_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, copy, url = tmp_path / "source", tmp_path / "copy", (tmp_path / "store").as_uri()
    _fill(source)
    before = {(entry.step, entry.key): entry.result() for entry in Store(source).iter_entries()}
    assert len(before) == 2 * COUNT
    assert all(isinstance(entry, PackedEntry) for entry in Store(source).iter_entries())
    tree, usage = _tree(source), _usage(source)

    assert main(["cache", "push", url, "--cache-dir", str(source)]) == 0
    assert f"push: {2 * COUNT} entries copied" in capsys.readouterr().out

    assert _tree(source) == tree  # the same files, of the same sizes: no .unpacked/
    assert _usage(source) == usage  # (its hits and entries unchanged)
    remote = ObjectStore(url)
    assert all(remote.manifest(*where) is not None for where in before)
    assert main(["cache", "pull", url, "--cache-dir", str(copy)]) == 0
    pulled = Store(copy)
    for where, result in before.items():
        entry = pulled.lookup(*where)
        assert entry is not None and entry.result() == result, where


def test_a_push_that_fails_part_way_leaves_no_folder_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, url = tmp_path / "source", (tmp_path / "store").as_uri()
    _fill(source)
    tree = _tree(source)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sent: list[str] = []
    real = ObjectStore.upload

    def upload_then_stop(self: ObjectStore, step: str, key: str, folder: Path,
                         **kwargs: object) -> object:
        if len(sent) == 3:
            raise KeyboardInterrupt
        sent.append(key)
        assert (folder / "meta.json").is_file()  # (made from the record, outside the cache)
        assert not folder.is_relative_to(source)
        return real(self, step, key, folder, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ObjectStore, "upload", upload_then_stop)
    with pytest.raises(KeyboardInterrupt):
        push(Store(source), url)
    assert len(sent) == 3
    assert _tree(source) == tree
    assert list(scratch.iterdir()) == []  # the push's folders went with it
