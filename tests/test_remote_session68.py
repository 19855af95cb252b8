"""The shared store's QA pass of session 68, on moto's S3 server through s3fs (the
fixtures of test_remote_cache, and test_remote_session63's server that checks rights):

- a teammate's ``--refresh`` reaches a tier holding the key's older entry through
  ``dagnb cache pull``, which replaces it (never a local entry newer than the store's);
- with the store unreachable, ``plan`` and ``fail-on-miss`` say so, not "no entry yet",
  and ``plan``'s warning speaks of no saving;
- a refused read names what to check; a push to a bucket that is not there says so as
  a pull does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_remote_cache as shared
import test_remote_session63 as rights

from dagnb.cache import Store
from dagnb.cache.remote import RemoteBackend, RemoteCacheWarning
from dagnb.cli import main

s3fs = pytest.importorskip("s3fs")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
auth_server = rights.auth_server  # moto in a process of its own, checking rights
store, save = shared.store, shared.save


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """s3fs keeps its clients, with the credentials they were made with (see session63)."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def _saver(url: str, tier: Path, when: float) -> Store:
    """A machine's store on ``url`` whose entries are created at ``when``."""
    return Store(url, backend=RemoteBackend(url, local=tier), clock=lambda: when)


def _served(url: str, tier: Path, key: str = "k") -> bytes | None:
    entry = store(url, tier).lookup("load", key)
    return None if entry is None else (entry.out_dir / "v.txt").read_bytes()


def _pull(url: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["cache", "pull", url, "--cache-dir", str(folder)]) == 0
    return capsys.readouterr().out


# -- 1. a teammate's refresh -----------------------------------------------------------------
def test_a_pull_replaces_a_local_entry_older_than_the_stores_refreshed_one(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bob's tier kept Alice's Monday result after her --refresh: the pull said
    "0 entries copied, 1 already there" and his runs went on hitting it."""
    save(_saver(url, tmp_path / "alice", 1000.0), "load", "k", {"v.txt": b"monday"})
    bob = tmp_path / "bob"
    assert _served(url, bob) == b"monday"  # downloaded into Bob's tier
    alice = _saver(url, tmp_path / "alice", 2000.0)
    out = alice.scratch_dir("load")
    (out / "v.txt").write_bytes(b"tuesday")
    alice.save("load", "k", out_dir=out, refresh=True)
    assert _served(url, bob) == b"monday"  # a local hit asks the store nothing
    said = _pull(url, bob, capsys)
    assert "pull: 1 entry copied (1 replaced by a newer copy), 0 already there" in said, said
    assert _served(url, bob) == b"tuesday"
    assert "pull: 0 entries copied, 1 already there" in _pull(url, bob, capsys)


def test_a_pull_keeps_a_local_entry_newer_than_the_stores(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refresh made here and not pushed yet is the newer entry: the pull leaves it."""
    save(_saver(url, tmp_path / "alice", 1000.0), "load", "k", {"v.txt": b"monday"})
    bob = tmp_path / "bob"
    save(Store(bob, clock=lambda: 3000.0), "load", "k", {"v.txt": b"bob's wednesday"})
    assert "pull: 0 entries copied, 1 already there" in _pull(url, bob, capsys)
    assert _served(url, bob) == b"bob's wednesday"


def test_a_pull_replaces_an_older_packed_entry(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A local cache keeps an entry without files as a pack's record, which a folder
    written at its key would not replace."""
    bob = tmp_path / "bob"
    Store(bob, clock=lambda: 500.0).save("calc", "k", out_dir=None, inline={"n": 1})
    _saver(url, tmp_path / "alice", 1000.0).save("calc", "k", out_dir=None, inline={"n": 2})
    assert "(1 replaced by a newer copy)" in _pull(url, bob, capsys)
    entry = Store(bob).lookup("calc", "k")
    assert entry is not None and entry.meta["inline"] == {"n": 2}


def test_a_pull_of_a_tier_up_to_date_reads_no_manifest_again(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Telling a newer entry costs a manifest read a key the tier holds: done only for
    the manifests the listing shows written no earlier than the newest the last whole
    pull listed (the store's times, whole seconds: not this machine's clock). A pull of
    a cache of 20,000 entries all there must stay a listing."""
    from dagnb.cache import remote

    alice = tmp_path / "alice"
    for n in range(3):
        save(_saver(url, alice, 1000.0), "load", f"k{n}", {"v.txt": b"monday"})
    time.sleep(1.1)
    save(_saver(url, alice, 1000.0), "load", "k3", {"v.txt": b"monday"})  # the newest
    bob = tmp_path / "bob"
    assert "pull: 4 entries copied" in _pull(url, bob, capsys)
    read: list[str] = []
    manifest = remote.ObjectStore.manifest
    monkeypatch.setattr(remote.ObjectStore, "manifest",
                        lambda self, step, key: read.append(key) or manifest(self, step, key))
    assert "pull: 0 entries copied, 4 already there" in _pull(url, bob, capsys)
    assert read == ["k3"]  # (written in the second the last pull's newest was)
    time.sleep(1.1)
    refreshing = _saver(url, alice, time.time())
    out = refreshing.scratch_dir("load")
    (out / "v.txt").write_bytes(b"tuesday")
    refreshing.save("load", "k1", out_dir=out, refresh=True)
    read.clear()
    assert "(1 replaced by a newer copy)" in _pull(url, bob, capsys)
    assert "k1" in read and set(read) <= {"k1", "k3"}  # (k3: the last pull's newest)
    assert _served(url, bob, "k1") == b"tuesday"


# -- 2. an unreachable store -----------------------------------------------------------------
WORKFLOW = """\
name: wf
steps:
  load:
    run: echo monday > "$DAGNB_OUT/v.txt"
"""


def _dagnb(folder: Path, endpoint: str, *options: str) -> subprocess.CompletedProcess[str]:
    """A ``dagnb`` command of the machine whose tier is ``folder/tier``."""
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / "tier"),
           "DAGNB_CONFIG": "none", "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *options, "--executor", "local"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_an_unreachable_store_is_no_entry_yet_for_plan_nor_fail_on_miss(
        url: str, server: shared.S3Server, tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    filled = _dagnb(tmp_path / "alice", server.endpoint, "run", "../wf.yml", "--cache-dir", url)
    assert filled.returncode == 0, filled.stderr
    closed = "http://127.0.0.1:9"  # (nothing listens there: the store cannot be reached)
    reason = (f"store {url!r} could not be reached: the entry of step 'load' may be there; "
              "try again once it is reachable")
    plan = _dagnb(tmp_path / "bob", closed, "plan", "../wf.yml", "--cache-dir", url)
    assert reason in plan.stdout and "no entry yet" not in plan.stdout, plan.stdout
    assert "a lookup of an entry's metadata failed" in plan.stderr, plan.stderr
    assert "saved" not in plan.stderr and "push" not in plan.stderr, plan.stderr
    refused = _dagnb(tmp_path / "bob", closed, "run", "../wf.yml", "--cache-dir", url,
                     "--cache-mode", "fail-on-miss")
    assert refused.returncode == 2
    assert f"load: {reason}" in refused.stderr, refused.stderr
    reached = _dagnb(tmp_path / "bob", server.endpoint, "plan", "../wf.yml", "--cache-dir", url)
    assert "1 of 1 steps cached" in reached.stdout, reached.stdout  # it was there


# -- 3. refusals, in words -------------------------------------------------------------------
def test_a_refused_read_says_which_credentials_to_check(
        auth_server: rights.AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "these credentials may not read the store: use credentials that may"."""
    url = f"s3://{auth_server.bucket}/cache-{uuid.uuid4().hex[:8]}"
    rights._as_user(monkeypatch, auth_server, "writer")
    save(store(url, tmp_path / "a"), "load", "k", {"v.txt": b"monday"})
    rights._as_user(monkeypatch, auth_server, "stranger")  # may list, not read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store(url, tmp_path / "b").lookup("load", "k") is None
    [said] = [str(w.message) for w in caught if w.category is RemoteCacheWarning]
    assert said.endswith("these credentials may not read the store: check AWS_ACCESS_KEY_ID "
                         "/ AWS_SECRET_ACCESS_KEY / AWS_PROFILE, and that they may read it"), said
    assert auth_server.keys["stranger"][1] not in said


def test_a_push_to_a_bucket_that_is_not_there_says_so_as_a_pull_does(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(Store(tmp_path / "a"), "load", "k", {"v.txt": b"monday"})
    bucket = url.removeprefix("s3://").split("/")[0] + "x"
    wrong = f"s3://{bucket}/cache"
    assert main(["cache", "push", wrong, "--cache-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err == (f"dagnb: error: cache push {wrong}: there is no bucket {bucket!r}; check "
                   "the bucket name in the URL (or make the bucket first)\n"), err


# -- 4. where a warning points ------------------------------------------------------------------
def test_an_unreachable_stores_warning_names_the_users_line_not_dagnbs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Memory function's call on an unreachable store warned at dagnb's store.py line,
    shown under the user's output as if a piece of a traceback."""
    import dagnb

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("DAGNB_CACHE_LOCAL_DIRECTORY", str(tmp_path / "tier"))
    memory = dagnb.Memory("s3://nowhere/mem")
    double = memory.cache(lambda x: 2 * x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert double(21) == 42  # the user's line
    said = [w for w in caught if issubclass(w.category, RemoteCacheWarning)]
    assert said, [str(w.message) for w in caught]
    assert {w.filename for w in said} == {__file__}, [(w.filename, w.lineno) for w in said]
