"""A blob shared by entries keeps a date that an age-based lifecycle rule can count from.

Blobs are stored once: a save whose file has the content of a blob stored long ago sent
nothing, so the blob kept its first upload's date, and a rule expiring objects N days
after their creation deleted it while a manifest written yesterday named it (a miss: the
step ran again). A save that reuses a blob older than ``BLOB_REDATED_AFTER`` now gives it
a new date. moto's S3 server through s3fs, as in test_remote_cache; a blob is made old on
the server itself (its LastModified set back), so the store reports its age as S3 would.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import test_remote_cache as shared

from dagnb.cache.remote import RemoteCacheWarning, file_digest

s3fs = pytest.importorskip("s3fs")
moto_s3 = pytest.importorskip("moto.s3.models")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
store, save = shared.store, shared.save

DAYS_OLD = 2  # older than BLOB_REDATED_AFTER (a day), younger than any sensible rule


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each store is a new process's: no s3fs client, nor its listing cache, carried over."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the S3 server copied an object to (CopyObject), in order."""
    real, copied = moto_s3.S3Backend.copy_object, []

    def copy_object(backend: Any, src_key: Any, bucket: str, key: str, *args: Any,
                    **kwargs: Any) -> Any:
        copied.append(key)
        return real(backend, src_key, bucket, key, *args, **kwargs)

    monkeypatch.setattr(moto_s3.S3Backend, "copy_object", copy_object)
    return copied


def _digest(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"digest-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return file_digest(path)


def _blob_key(url: str, digest: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, f"{prefix}/blobs/{digest}"


def _make_old(url: str, digest: str, days: float = DAYS_OLD) -> None:
    """Set the blob's LastModified ``days`` back on the server (moto runs in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID

    stored = moto_s3.s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(*_blob_key(url, digest))
    stored.last_modified -= datetime.timedelta(days=days)


def _last_modified(url: str, digest: str) -> datetime.datetime:
    """The blob's LastModified as the server says it (a fresh client: nothing cached)."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return fs.info("/".join(_blob_key(url, digest)))["LastModified"]


def _served(url: str, tier: Path, step: str, key: str, name: str) -> bytes | None:
    entry = store(url, tier).lookup(step, key)
    return None if entry is None else (entry.out_dir / name).read_bytes()


def _apply_age_rule(url: str, days: float) -> list[str]:
    """What an S3 lifecycle rule expiring ``blobs/`` objects ``days`` after their
    LastModified does when it runs: delete them; the keys deleted."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    limit = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
    expired = [path for path, info in fs.find(f"{root}/blobs", detail=True).items()
               if info["LastModified"] < limit]
    for path in expired:
        fs.rm_file(path)
    return expired


def test_a_save_reusing_a_blob_stored_days_ago_gives_it_a_new_date_once(
        url: str, tmp_path: Path, copies: list[str]) -> None:
    """The blob kept its first upload's date: an age rule deleted it under the entry saved
    the day before, a miss for everyone (the step ran again)."""
    data = os.urandom(3000)
    digest = _digest(data, tmp_path)
    save(store(url, tmp_path / "monday"), "prices", "k1", {"prices.csv": data})
    _make_old(url, digest)
    old = _last_modified(url, digest)
    later = store(url, tmp_path / "wednesday")
    save(later, "prices", "k2", {"prices.csv": data})
    renewed = _last_modified(url, digest)
    assert renewed - old >= datetime.timedelta(days=DAYS_OLD) - datetime.timedelta(minutes=1)
    assert abs(renewed.timestamp() - time.time()) < 60
    assert copies == [_blob_key(url, digest)[1]]  # one request, in place
    save(later, "prices", "k3", {"prices.csv": data})  # now fresh: nothing more
    assert copies == [_blob_key(url, digest)[1]]
    assert _apply_age_rule(url, days=DAYS_OLD - 0.5) == []
    for key in ("k1", "k2", "k3"):  # (the content kept: every entry is served whole)
        assert _served(url, tmp_path / f"reader-{key}", "prices", key, "prices.csv") == data


def test_a_save_gives_a_new_date_to_the_old_blobs_it_reuses_only(
        url: str, tmp_path: Path, copies: list[str]) -> None:
    """A blob stored within the day is not copied: most saves pay no request more."""
    fresh, old = os.urandom(2000), os.urandom(2500)
    save(store(url, tmp_path / "a"), "step", "k1", {"fresh.bin": fresh, "old.bin": old})
    _make_old(url, _digest(old, tmp_path))
    fresh_date = _last_modified(url, _digest(fresh, tmp_path))
    save(store(url, tmp_path / "b"), "step", "k2", {"fresh.bin": fresh, "old.bin": old})
    assert copies == [_blob_key(url, _digest(old, tmp_path))[1]]
    assert _last_modified(url, _digest(fresh, tmp_path)) == fresh_date


def test_a_blob_whose_date_cannot_be_renewed_still_saves_and_says_so_once(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused copy (a policy without it, say) must cost no entry: said once, saved."""
    from moto.s3.exceptions import S3AccessDeniedError

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise S3AccessDeniedError()

    first, second = os.urandom(1000), os.urandom(1200)
    save(store(url, tmp_path / "a"), "step", "k1", {"a.bin": first, "b.bin": second})
    for data in (first, second):
        _make_old(url, _digest(data, tmp_path))
    monkeypatch.setattr(moto_s3.S3Backend, "copy_object", refused)
    writer = store(url, tmp_path / "b")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        save(writer, "step", "k2", {"a.bin": first})
        save(writer, "step", "k3", {"b.bin": second})
    messages = [str(w.message) for w in said if issubclass(w.category, RemoteCacheWarning)]
    assert len(messages) == 1, messages
    assert "could not be given a new date (PermissionError" in messages[0]
    assert "age-based lifecycle rule" in messages[0]
    assert _served(url, tmp_path / "c", "step", "k2", "a.bin") == first
    assert _served(url, tmp_path / "d", "step", "k3", "b.bin") == second


def _folder_blob(root: Path, data: bytes, tmp_path: Path) -> Path:
    return root / "blobs" / _digest(data, tmp_path)


def test_a_folder_store_gives_an_old_blob_a_new_modification_time(tmp_path: Path) -> None:
    """file:// has no lifecycle rules, but a cleanup by age (find -mtime) is one."""
    root, data = tmp_path / "store", os.urandom(1500)
    url = root.as_uri()
    save(store(url, tmp_path / "a"), "step", "k1", {"data.bin": data})
    blob = _folder_blob(root, data, tmp_path)
    days_ago = time.time() - DAYS_OLD * 86400
    os.utime(blob, (days_ago, days_ago))
    save(store(url, tmp_path / "b"), "step", "k2", {"data.bin": data})
    assert abs(blob.stat().st_mtime - time.time()) < 60
    assert blob.read_bytes() == data


def test_a_store_that_cannot_copy_in_place_sends_an_old_blob_again(tmp_path: Path) -> None:
    """Stores other than S3 and folders (gs://, az://: here memory://) get the blob sent
    again from the local tier, a new object with a new date."""
    url = f"memory://dagnb-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("memory")
    data = os.urandom(1800)
    save(store(url, tmp_path / "a"), "step", "k1", {"data.bin": data})
    path = f"{url.removeprefix('memory:/')}/blobs/{_digest(data, tmp_path)}"
    fs.store[path].created -= datetime.timedelta(days=DAYS_OLD)
    save(store(url, tmp_path / "b"), "step", "k2", {"data.bin": data})
    assert abs(fs.info(path)["created"].timestamp() - time.time()) < 60
    assert fs.cat_file(path) == data
    fs.rm(url.removeprefix("memory:/"), recursive=True)

