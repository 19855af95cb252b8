"""The shared store's QA pass of session 69, on moto's S3 server through s3fs (the
fixtures of test_remote_cache, and test_remote_session63's server that checks rights):

- a pull that meets a teammate's ``--refresh`` of the same output keeps the local copy
  (its times and logs), and downloads none of its files again;
- with credentials that may list the store but not read it, ``plan`` says the store
  could not be read, not "no entry yet".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import test_remote_cache as shared
import test_remote_session63 as rights
import test_remote_session68 as session68

from dagnb.cache import Store
from dagnb.cache.remote import ObjectStore
from dagnb.cli import main

s3fs = pytest.importorskip("s3fs")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
auth_server = rights.auth_server  # moto in a process of its own, checking rights


# s3fs's clients forgotten around each test (autouse); a machine's store at a given time
_fresh_clients, _saver = session68._fresh_clients, session68._saver


def _save(target: Store, data: bytes, *, refresh: bool = False) -> None:
    out = target.scratch_dir("load")
    (out / "v.txt").write_bytes(data)
    target.save("load", "k", out_dir=out, ttl=3600, refresh=refresh)


def _pull(url: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["cache", "pull", url, "--cache-dir", str(folder)]) == 0
    return capsys.readouterr().out


# -- 1. a refresh of the same output -------------------------------------------------------
def test_a_pull_keeps_the_local_copy_of_a_refresh_of_the_same_output_and_downloads_nothing(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bob's pull downloaded Alice's refreshed entry whole (an 80 MB model) when its output
    was the one he had: it compared creation times alone."""
    monday = time.time() - 600
    _save(_saver(url, tmp_path / "alice", monday), b"the same model")
    bob = tmp_path / "bob"
    assert "pull: 1 entry copied" in _pull(url, bob, capsys)
    _save(_saver(url, tmp_path / "alice", monday + 300), b"the same model", refresh=True)
    downloads: list[str] = []
    real = ObjectStore.download
    monkeypatch.setattr(ObjectStore, "download", lambda self, step, key, into: (
        downloads.append(key), real(self, step, key, into))[1])
    said = _pull(url, bob, capsys)
    assert downloads == [], said
    assert ("pull: 0 entries copied, 1 already there (1 of the same output as the store's "
            "newer copy: kept, nothing downloaded), 0 bytes") in said, said
    entry = Store(bob).lookup("load", "k")
    assert entry is not None and entry.verify()
    assert (entry.created, entry.expires) == (monday, monday + 3600)  # (its own)
    assert (entry.out_dir / "v.txt").read_bytes() == b"the same model"
    assert "pull: 0 entries copied, 1 already there" in _pull(url, bob, capsys)
    assert downloads == []  # (nor the next time)


def test_a_pull_still_downloads_a_refresh_of_another_output(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monday = time.time() - 600
    _save(_saver(url, tmp_path / "alice", monday), b"monday")
    bob = tmp_path / "bob"
    _pull(url, bob, capsys)
    _save(_saver(url, tmp_path / "alice", monday + 300), b"tuesday", refresh=True)
    assert "1 entry copied (1 replaced by a newer copy)" in _pull(url, bob, capsys)
    entry = Store(bob).lookup("load", "k")
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"tuesday"


# -- 2. credentials that may list, not read ----------------------------------------------------
WORKFLOW = """\
name: wf
steps:
  load:
    run: echo monday > "$DAGNB_OUT/v.txt"
"""


def _dagnb(folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """A ``dagnb`` command of the machine whose tier is ``folder/tier`` (the user's
    credentials in the environment)."""
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / "tier"),
           "DAGNB_CONFIG": "none"}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *options, "--executor", "local"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_store_that_refuses_reads_is_no_entry_yet_for_plan(
        auth_server: rights.AuthServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{auth_server.bucket}/cache-{uuid.uuid4().hex[:8]}"
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    rights._as_user(monkeypatch, auth_server, "writer")
    filled = _dagnb(tmp_path / "alice", "run", "../wf.yml", "--cache-dir", url)
    assert filled.returncode == 0, filled.stderr
    rights._as_user(monkeypatch, auth_server, "stranger")  # may list, not read
    plan = _dagnb(tmp_path / "bob", "plan", "../wf.yml", "--cache-dir", url)
    assert plan.returncode == 0, plan.stderr
    assert "no entry yet" not in plan.stdout, plan.stdout
    assert (f"store {url!r} refused a read (its credentials may not read it): the entry of "
            "step") in plan.stdout, plan.stdout
    assert "the entry of step 'load' may be there" in plan.stdout, plan.stdout
    assert "these credentials may not read the store" in plan.stderr, plan.stderr
