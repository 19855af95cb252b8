"""A pulled entry (and one a store URL's lookup downloads into its local tier) that a
save here would have packed lands as a pack record, not a folder each (QA of session
69: 200 small ``Memory`` entries took 137K in ``dagnb cache stats`` where they were
made, 1.7M once pushed and pulled into a new cache, with no ``.packs``; 3,000 of them
2.1M and 25M). A ``file://`` store: nothing here depends on S3.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb.cache import Store
from dagnb.cache.entry import PackedEntry
from dagnb.cache.remote import ObjectStore, RemoteBackend
from dagnb.cli import main
from dagnb.model.results import encode_inline

COUNT = 60  # small entries of each kind: Memory calls, and steps with lines and provenance


def _square(x: int) -> int:
    return x * x


def _fill(source: Path) -> None:
    """``COUNT`` Memory entries and ``COUNT`` step entries (a line each, a provenance and a
    ttl), all small; one with an output file and one with a display, which get folders."""
    square = dagnb.Memory(location=str(source)).cache(_square)
    for x in range(COUNT):
        square(x)
    store = Store(source)
    for n in range(COUNT):
        store.save("load", f"k{n:04d}", out_dir=None, inline=encode_inline({"n": n}, 4096),
                   logs=[{"time": 1.0, "attempt": 1, "stream": "stdout", "line": f"row {n}"}],
                   provenance={"image_ref": f"img@sha256:{n:064x}"}, ttl=86400)
    out = store.scratch_dir("files")
    (out / "data.txt").write_text("a file")
    store.save("files", "k", out_dir=out)
    store.save("shown", "k", out_dir=None, inline={"json": 1},
               displays=[{"after": 0, "data": {"text/plain": "a chart"}, "metadata": {}}])
    for entry in list(store.iter_entries())[:10]:  # hits in the source: not carried over
        store.lookup(entry.step, entry.key)
    store.close()


def _entries(folder: Path) -> dict[tuple[str, str], Any]:
    return {(entry.step, entry.key): entry for entry in Store(folder).iter_entries()}


def _stats_bytes(folder: Path, capsys: pytest.CaptureFixture[str]) -> float:
    """The size the last line of ``dagnb cache stats`` gives, in bytes."""
    capsys.readouterr()
    assert main(["cache", "stats", "--cache-dir", str(folder)]) == 0
    said = capsys.readouterr().out
    found = re.search(r"cache entries, ([\d.]+)([BKMG]) in ", said)
    assert found is not None, said
    return float(found[1]) * 1024 ** "BKMG".index(found[2])


def _entry_folders(folder: Path, steps: set[str]) -> list[Path]:
    """The per-entry folders of ``steps`` in the cache ``folder``."""
    return [key for step in steps if (folder / step).is_dir() for key in (folder / step).iterdir()]


def _assert_kept_as_records(folder: Path, source: dict[tuple[str, str], Any]) -> None:
    """Every small entry of ``source`` is a pack record of ``folder``, served by a lookup
    with its result, times, output digest, provenance and lines; the two that a save
    gives a folder have theirs."""
    small = {where for where in source if where[0] not in ("files", "shown")}
    assert _entry_folders(folder, {step for step, _ in small}) == []
    assert any(path.suffix == ".pack" for path in (folder / ".packs").iterdir())
    store = Store(folder)
    for where in small:
        entry, before = store.lookup(*where), source[where]
        assert isinstance(entry, PackedEntry), where
        assert entry.result() == before.result()
        assert (entry.created, entry.expires, entry.output_digest) == (
            before.created, before.expires, before.output_digest)
        assert entry.meta.get("provenance") == before.meta.get("provenance")
        assert list(entry.iter_logs()) == list(before.iter_logs())
        assert entry.meta["components"] == before.meta["components"] and entry.verify()
    for where in (("files", "k"), ("shown", "k")):
        assert (folder / where[0] / where[1] / "meta.json").is_file()  # (as a save makes)
        assert not isinstance(store.lookup(*where), PackedEntry)
    assert (store.lookup("files", "k").out_dir / "data.txt").read_text() == "a file"


def _pushed(tmp_path: Path, capsys: pytest.CaptureFixture[str]
            ) -> tuple[str, float, dict[tuple[str, str], Any]]:
    """A source cache filled and pushed to a file store: the store's URL, the source's
    size as ``stats`` says it, and its entries."""
    source, url = tmp_path / "source", (tmp_path / "store").as_uri()
    _fill(source)
    made, before = _stats_bytes(source, capsys), _entries(source)
    assert main(["cache", "push", url, "--cache-dir", str(source)]) == 0
    return url, made, before


def _count_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    downloads: list[str] = []
    real = ObjectStore.download
    monkeypatch.setattr(ObjectStore, "download", lambda self, step, key, into: (
        downloads.append(key), real(self, step, key, into))[1])
    return downloads


def test_a_pull_keeps_small_entries_as_pack_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "copy"
    url, made, before = _pushed(tmp_path, capsys)
    assert main(["cache", "pull", url, "--cache-dir", str(copy)]) == 0
    assert f"pull: {2 * COUNT + 2} entries copied" in capsys.readouterr().out
    assert all(row["hits"] == 0 for row in Store(copy).stats_by_step().values())
    _assert_kept_as_records(copy, before)
    assert _stats_bytes(copy, capsys) <= 2 * made  # (folders: 12 times as much)
    downloads = _count_downloads(monkeypatch)  # a store URL on that folder, as its tier
    tiered = Store(url, backend=RemoteBackend(url, local=copy))
    assert all(tiered.lookup(*where) is not None for where in before)
    assert downloads == []
    assert main(["cache", "pull", url, "--cache-dir", str(copy)]) == 0
    assert f"0 entries copied, {2 * COUNT + 2} already there" in capsys.readouterr().out


def test_a_pull_replaces_an_older_small_copy_with_a_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A teammate's refresh of a small entry replaces the local copy, a record as well
    (the older one gone: the lookup serves the new result)."""
    url, copy = (tmp_path / "store").as_uri(), tmp_path / "copy"
    alice = Store(url, backend=RemoteBackend(url, local=tmp_path / "alice"),
                  clock=lambda: 1_000.0)
    alice.save("load", "k", out_dir=None, inline={"json": "monday"})
    assert main(["cache", "pull", url, "--cache-dir", str(copy)]) == 0
    alice.clock = lambda: 2_000.0
    alice.save("load", "k", out_dir=None, inline={"json": "tuesday"}, refresh=True)
    assert main(["cache", "pull", url, "--cache-dir", str(copy)]) == 0
    assert "1 entry copied (1 replaced by a newer copy)" in capsys.readouterr().out
    entry = Store(copy).lookup("load", "k")
    assert isinstance(entry, PackedEntry) and entry.result() == "tuesday"
    assert entry.created == 2_000.0
    assert _entry_folders(copy, {"load"}) == []
    assert [e.result() for e in Store(copy).iter_entries("load")] == ["tuesday"]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_store_urls_lookup_keeps_a_small_download_as_a_record_of_its_tier(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tier = tmp_path / "tier"
    url, made, before = _pushed(tmp_path, capsys)
    downloads = _count_downloads(monkeypatch)
    shared = Store(url, backend=RemoteBackend(url, local=tier))
    for where, entry in before.items():
        found = shared.lookup(*where)
        assert found is not None and found.result() == entry.result(), where
    assert len(downloads) == len(before)  # (each once)
    shared.close()
    _assert_kept_as_records(tier, before)
    assert _stats_bytes(tier, capsys) <= 2 * made
    again = Store(url, backend=RemoteBackend(url, local=tier))  # another process's
    for where, entry in before.items():
        assert again.lookup(*where).result() == entry.result()
        glanced = again.peek(*where, metadata_only=True)  # (plan: the tier's, no store)
        assert glanced is not None and glanced.output_digest == entry.output_digest
    assert len(downloads) == len(before)  # none downloaded again
    # its own saves keep folders, and are uploaded
    again.save("new", "k", out_dir=None, inline={"json": 2})
    assert (tier / "new" / "k" / "meta.json").is_file()
    assert (tmp_path / "store" / "entries" / "new" / "k.json").is_file()


def test_a_store_urls_save_or_removal_treats_a_kept_record_as_its_tier_folder(
        tmp_path: Path) -> None:
    """A save replacing a record of the tier (a step run again for a shorter ttl)
    replaces the store's copy too, and a record removed here is not downloaded again
    by this process: as for a folder of the tier."""
    url = (tmp_path / "store").as_uri()
    alice = Store(url, backend=RemoteBackend(url, local=tmp_path / "alice"))
    alice.save("load", "k", out_dir=None, inline={"json": "monday"})
    alice.save("load", "gone", out_dir=None, inline={"json": 1})
    bob = Store(url, backend=RemoteBackend(url, local=tmp_path / "bob"))
    assert isinstance(bob.lookup("load", "k"), PackedEntry)
    assert bob.lookup("load", "k", max_age=0) is None  # (too old for its step now)
    bob.save("load", "k", out_dir=None, inline={"json": "tuesday"})
    carol = Store(url, backend=RemoteBackend(url, local=tmp_path / "carol"))
    assert carol.lookup("load", "k").result() == "tuesday"
    assert isinstance(bob.lookup("load", "gone"), PackedEntry)
    assert bob.remove("load", "gone")
    assert bob.lookup("load", "gone") is None


def test_a_store_urls_record_past_its_ttl_leaves_the_stores_copy_worth_a_look(
        tmp_path: Path) -> None:
    """Removed for its age, a record says nothing against the store's copy (a teammate's
    fresh one, here), which the next lookup downloads: as for a folder of the tier."""
    url, now = (tmp_path / "store").as_uri(), time.time()
    alice = Store(url, backend=RemoteBackend(url, local=tmp_path / "alice"), clock=lambda: now)
    alice.save("load", "k", out_dir=None, inline={"json": "monday"}, ttl=3600)
    bob = Store(url, backend=RemoteBackend(url, local=tmp_path / "bob"),
                clock=lambda: now + 2 * 3600)
    assert bob.lookup("load", "k") is None  # (downloaded, a record, then past its ttl)
    alice.clock = lambda: now + 2 * 3600
    alice.save("load", "k", out_dir=None, inline={"json": "tuesday"}, ttl=3600, refresh=True)
    assert bob.lookup("load", "k").result() == "tuesday"
