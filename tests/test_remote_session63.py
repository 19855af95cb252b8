"""The shared store's second QA pass: a refresh killed while it uploads, refusals told
apart from outages, an expired local copy hiding the store's fresh one, a push from a
mistyped folder. A real S3 server (moto) through s3fs, as in test_remote_cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_remote_cache as shared

from dagnb.cache import Store
from dagnb.cache.remote import ObjectStore, RemoteBackend, RemoteCacheWarning
from dagnb.cache.store import DamagedEntryWarning
from dagnb.cli import main

s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
store, save = shared.store, shared.save


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """s3fs keeps its clients, with the credentials they were made with: a test that
    changes the environment's leaves none to the next (each stands for a new process)."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def read(url: str, tier: Path, step: str, key: str, name: str) -> bytes | None:
    """What a fresh tier is served for ``step/key``'s file ``name`` (None: a miss)."""
    entry = store(url, tier).lookup(step, key)
    return None if entry is None else (entry.out_dir / name).read_bytes()


# -- 1. a replacement killed while it uploads ----------------------------------------------
KILLED_REFRESH = """\
import os, signal, sys
from dagnb.cache import Store
from dagnb.cache.remote import ObjectStore, RemoteBackend

url, tier = sys.argv[1], sys.argv[2]
laptop = Store(url, backend=RemoteBackend(url, local=tier))
ObjectStore.upload = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
out = laptop.scratch_dir("prices")
(out / "prices.csv").write_bytes(b"tuesday")
laptop.save("prices", "k", out_dir=out, refresh=True)
"""


def test_a_refresh_killed_while_it_uploads_is_sent_by_the_next_push(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL (OOM, a CI hard timeout) during the upload: the debt was recorded only
    after a failed upload, so push took the store's old copy as there."""
    tier = tmp_path / "a"
    save(store(url, tier), "prices", "k", {"prices.csv": b"monday"})
    script = tmp_path / "refresh.py"
    script.write_text(KILLED_REFRESH)
    killed = subprocess.run([sys.executable, str(script), url, str(tier)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    assert read(url, tmp_path / "b", "prices", "k", "prices.csv") == b"monday"  # not sent
    assert main(["cache", "push", url, "--cache-dir", str(tier)]) == 0
    assert "1 entry copied" in capsys.readouterr().out
    assert read(url, tmp_path / "c", "prices", "k", "prices.csv") == b"tuesday"
    assert main(["cache", "push", url, "--cache-dir", str(tier)]) == 0
    assert "0 entries copied, 1 already there" in capsys.readouterr().out  # paid once


class _Killed(BaseException):
    """Stands for the process's death: nothing after it runs (no handler catches it)."""


def test_a_rebuild_of_an_entry_set_aside_cut_short_while_it_uploads_is_owed(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    save(store(url, tmp_path / "a"), "step", "k", {"v.txt": b"unloadable"})
    reader = store(url, tmp_path / "b")
    assert reader.lookup("step", "k") is not None
    with pytest.warns(DamagedEntryWarning):
        reader.quarantine("step", "k", "its result cannot be loaded")

    def die(*args: object, **kwargs: object) -> None:
        raise _Killed

    with monkeypatch.context() as patched, pytest.raises(_Killed):
        patched.setattr(ObjectStore, "upload", die)
        save(reader, "step", "k", {"v.txt": b"rebuilt"})
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "b")]) == 0
    assert "1 entry copied" in capsys.readouterr().out
    assert read(url, tmp_path / "c", "step", "k", "v.txt") == b"rebuilt"


def test_an_upload_that_got_there_owes_nothing(url: str, tmp_path: Path) -> None:
    laptop = store(url, tmp_path / "a")
    save(laptop, "step", "k", {"v.txt": b"first"})
    save(laptop, "step", "k", {"v.txt": b"again"})  # a replacement, sent
    assert not any((tmp_path / "a" / ".unsent-replacements").rglob("k"))


# -- 2. a refusal is no outage -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


AUTH_SERVER = """\
import logging, sys, time
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False).start()
while True:
    time.sleep(3600)
"""


class AuthServer:
    """moto's S3 and IAM in a process of its own that checks every request's rights
    after its first few, which make a bucket, a writer, a reader (Get and List only) and
    a stranger (List only)."""

    def __init__(self, folder: Path) -> None:
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "10"}  # (see _make_users)
        self._process = subprocess.Popen([sys.executable, "-c", AUTH_SERVER, str(port)],
                                         env=env, cwd=folder, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        self._wait_until_up()
        self.bucket = f"ro-{uuid.uuid4().hex[:12]}"
        self.keys = self._make_users()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _make_users(self) -> dict[str, tuple[str, str]]:
        options = {"endpoint_url": self.endpoint, "region_name": "us-east-1",
                   "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": "x"}
        boto3.client("s3", **options).create_bucket(Bucket=self.bucket)
        iam = boto3.client("iam", **options)
        keys = {}
        for user, actions in (("writer", ["s3:*"]),
                              ("reader", ["s3:GetObject", "s3:ListBucket",
                                          "s3:GetBucketLocation"]),
                              ("stranger", ["s3:ListBucket"])):  # (reads nothing)
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(
                {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        return keys

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    running = AuthServer(tmp_path_factory.mktemp("auth"))
    yield running
    running.stop()


def _as_user(monkeypatch: pytest.MonkeyPatch, server: AuthServer, user: str) -> None:
    """The environment of a process run by ``user`` (s3fs' clients of earlier ones,
    which keep their credentials, forgotten)."""
    key, secret = server.keys[user]
    for name, value in {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint,
                        "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()


def test_read_only_credentials_stop_uploads_but_the_store_is_still_read(
    auth_server: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload refused was taken for an outage: the store's reads rested for a minute
    (steps in it ran again) and the warning said to push later, which cannot work."""
    url = f"s3://{auth_server.bucket}/cache-{uuid.uuid4().hex[:8]}"
    _as_user(monkeypatch, auth_server, "writer")
    save(store(url, tmp_path / "a"), "s2", "k", {"v.txt": b"slow result"})
    _as_user(monkeypatch, auth_server, "reader")
    reader = store(url, tmp_path / "b")
    with pytest.warns(RemoteCacheWarning, match=r"an upload was refused \(PermissionError.*"
                      r"the store is still read; these credentials may not write to the "
                      r"store: set cache_mode: read-only") as said:
        save(reader, "s1", "k", {"v.txt": b"new"})
    assert "dagnb cache push" not in str(said[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once; uploads are not tried again
        save(reader, "s1", "other", {"v.txt": b"newer"})


def test_after_a_refused_upload_the_store_is_still_read(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reads rested for a minute after a refused upload: steps in the store ran
    again. (Refused by injection: moto 5.2.6's IAM refuses a read-only user's HEAD too.)"""
    save(store(url, tmp_path / "a"), "s2", "k", {"v.txt": b"slow result"})
    _refused_once(monkeypatch, None)
    reader = store(url, tmp_path / "b")
    with pytest.warns(RemoteCacheWarning, match="an upload was refused.*the store is still read"):
        save(reader, "s1", "k", {"v.txt": b"new"})
    entry = reader.lookup("s2", "k")  # in the store: served, not run again
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"slow result"


def test_no_credentials_say_how_to_give_them(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()  # (a fresh process: no client with credentials)
    laptop = store(url, tmp_path / "a")
    with pytest.warns(RemoteCacheWarning, match=r"a download was refused \(NoCredentialsError"
                      r".*no credentials were found: set AWS_PROFILE") as said:
        assert laptop.lookup("step", "k") is None
    assert "dagnb cache push" not in str(said[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save(laptop, "step", "k", {"v.txt": b"kept"})  # not tried: no second warning
    assert laptop.lookup("step", "k") is not None


def test_a_bucket_that_is_not_there_says_to_check_its_name(
    url: str, tmp_path: Path
) -> None:
    typo = url.replace("s3://dagnb-", "s3://dagnbb-", 1)
    laptop = store(typo, tmp_path / "a")
    with pytest.warns(RemoteCacheWarning, match=r"an upload was refused \(FileNotFoundError.*"
                      r"there is no bucket 'dagnbb-\w+': check the bucket name") as said:
        save(laptop, "step", "k", {"v.txt": b"kept"})
    assert "dagnb cache push" not in str(said[0].message)


def test_an_outage_still_says_to_push_later(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    closed = Store("s3://nowhere/cache", backend=RemoteBackend(
        "s3://nowhere/cache", local=tmp_path / "a",
        storage_options={"endpoint_url": "http://127.0.0.1:9", "retries": 1}))
    with pytest.warns(RemoteCacheWarning, match="an upload failed.*dagnb cache push"):
        save(closed, "step", "k", {"v.txt": b"kept"})


# -- 3. an expired local copy --------------------------------------------------------------
def test_an_expired_local_copy_does_not_hide_the_stores_fresh_one(
    url: str, tmp_path: Path
) -> None:
    clock = [1000.0]  # team A saved long ago, with a ttl
    team_a = Store(url, backend=RemoteBackend(url, local=tmp_path / "a"),
                   clock=lambda: clock[0])
    out = team_a.scratch_dir("load")
    (out / "v.txt").write_bytes(b"old")
    team_a.save("load", "k", out_dir=out, ttl=10)
    save(store(url, tmp_path / "b"), "load", "k", {"v.txt": b"fresh"})  # team B, today
    clock[0] = time.time()
    assert team_a.lookup("load", "k") is None  # A's copy expired: removed, a miss
    entry = team_a.lookup("load", "k")  # the run's second look: the store's, B's fresh one
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"fresh"


def test_a_pull_replaces_an_expired_local_copy(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cache"
    old = Store(folder, clock=lambda: 1000.0)
    out = old.scratch_dir("load")
    (out / "v.txt").write_bytes(b"old")
    old.save("load", "k", out_dir=out, ttl=10)
    save(store(url, tmp_path / "b"), "load", "k", {"v.txt": b"fresh"})
    assert main(["cache", "pull", url, "--cache-dir", str(folder)]) == 0
    assert "1 entry copied, 0 already there" in capsys.readouterr().out
    entry = Store(folder).lookup("load", "k")
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"fresh"


# -- 4. push from a mistyped folder --------------------------------------------------------
def test_a_push_from_a_folder_that_is_not_there_is_refused(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo-cache-dirr"
    assert main(["cache", "push", url, "--cache-dir", str(typo)]) == 2
    assert textwrap.shorten(capsys.readouterr().err, 500).startswith(
        f"dagnb: error: --cache-dir {str(typo)!r}: there is no folder")
    assert not typo.exists()


# -- 5. a look at an entry's metadata alone ------------------------------------------------


# -- review mends: a refusal that passes, a refused read ------------------------------------
class _ClientError(Exception):
    """botocore's ClientError as s3fs raises its PermissionError from (its response)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}}


def _refused_once(monkeypatch: pytest.MonkeyPatch, code: str | None) -> None:
    """The next upload is refused with a PermissionError (from an S3 error ``code``)."""
    real, calls = ObjectStore.upload, []

    def upload(self: ObjectStore, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            error = PermissionError("Access Denied" if code is None else code)
            if code is not None:
                error.__cause__ = _ClientError(code)
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ObjectStore, "upload", upload)


def test_an_expired_token_is_an_outage_and_uploads_go_on_after_it(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One 403 for an expired token (s3fs: a PermissionError) stopped every upload of the
    process, taken for credentials that may not write."""
    monkeypatch.setattr("dagnb.cache.remote.RETRY_AFTER", 0.2)
    _refused_once(monkeypatch, "ExpiredToken")
    team = store(url, tmp_path / "a")
    with pytest.warns(RemoteCacheWarning, match="an upload failed.*dagnb cache push"):
        save(team, "first", "k", {"v.txt": b"1"})
    time.sleep(0.3)
    save(team, "second", "k", {"v.txt": b"2"})
    assert read(url, tmp_path / "b", "second", "k", "v.txt") == b"2"


def test_a_refused_upload_is_tried_again_after_a_while(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dagnb.cache.remote.REFUSED_RETRY_AFTER", 0.5)
    _refused_once(monkeypatch, None)
    team = store(url, tmp_path / "a")
    with pytest.warns(RemoteCacheWarning, match="an upload was refused.*locally only for"):
        save(team, "first", "k", {"v.txt": b"1"})
    save(team, "second", "k", {"v.txt": b"2"})
    assert read(url, tmp_path / "b", "second", "k", "v.txt") is None  # (not tried)
    time.sleep(0.6)
    save(team, "third", "k", {"v.txt": b"3"})
    assert read(url, tmp_path / "c", "third", "k", "v.txt") == b"3"


def test_a_refused_read_stops_no_upload(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download refused (an object under a KMS key the user may not use) stopped every
    upload of the process."""
    save(store(url, tmp_path / "writer"), "theirs", "k", {"v.txt": b"theirs"})

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError("Access Denied")

    team = store(url, tmp_path / "a")
    with monkeypatch.context() as patched:
        patched.setattr("dagnb.cache.remote.fetch_into", refused)
        with pytest.warns(RemoteCacheWarning, match="a download was refused"):
            assert team.lookup("theirs", "k") is None
    save(team, "mine", "k", {"v.txt": b"mine"})
    assert read(url, tmp_path / "b", "mine", "k", "v.txt") == b"mine"


def test_a_refused_read_rests_the_stores_reads_for_a_while(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that may read nothing cost a round trip at each lookup, said once."""
    asked = []

    def refused(*args: object, **kwargs: object) -> None:
        asked.append(1)
        raise PermissionError("Access Denied")

    team = store(url, tmp_path / "a")
    monkeypatch.setattr("dagnb.cache.remote.fetch_into", refused)
    with pytest.warns(RemoteCacheWarning, match="a download was refused.*asked again in"):
        for key in ("k1", "k2", "k3"):
            assert team.lookup("theirs", key) is None
    assert asked == [1]
