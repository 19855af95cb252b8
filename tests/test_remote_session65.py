"""A store URL as a team writes it and as its credentials are given (QA session 65).

- The store's secret read from an AWS profile (``AWS_PROFILE``, ``~/.aws/credentials``,
  ``AWS_SHARED_CREDENTIALS_FILE``) is a secret as the variable's is: masked, and a step
  whose output holds it is not cached (it was uploaded in clear, for every team to read).
- ``S3://`` is ``s3://``; ``s3:/bucket`` (a slash short) is refused, not a folder ``s3:``.
- A refused upload with credentials the store does not know names them, not read-only.
- ``Memory(url).clear()`` says the store keeps its copies.
- A refused ``fail-on-miss`` run leaves no local tier behind.

moto's S3 server through s3fs, as in test_remote_cache (whose fixtures these are).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import test_remote_cache as shared

import dagnb.config as config_module
from dagnb import checks
from dagnb.cache.memory import Memory
from dagnb.cache.remote import ObjectStore, RemoteBackend, RemoteCacheWarning
from dagnb.config import settings
from dagnb.errors import CacheError, ConfigError
from dagnb.testing import isolated

pytest.importorskip("s3fs")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
listing, fs_cat = shared.listing, shared.fs_cat

PROFILE_SECRET = "DaveProfileSecret-987654"

# a step that prints the credentials its boto3 resolves and writes them to an output file
LEAKING = f"""\
name: prof
steps:
  p:
    run: |
      {sys.executable} -c "import botocore.session as s; c = s.Session().get_credentials(); print('debug creds:', c.access_key, c.secret_key)"
      {sys.executable} -c "import botocore.session as s, os; open(os.environ['DAGNB_OUT'] + '/creds.txt', 'w').write(s.Session().get_credentials().secret_key)"
"""  # noqa: E501 (a shell line)


def _run(folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / "tier"),
           "DAGNB_CONFIG": "none"}  # (no file)
    return subprocess.run(
        [sys.executable, "-m", "dagnb.cli", *options], cwd=folder, env=env,
        capture_output=True, text=True, timeout=120)


def _give_profile(how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's credentials in a profile only, as ``how`` names it; none in variables."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    section = "team" if how == "AWS_PROFILE" else "default"
    text = f"[{section}]\naws_access_key_id = AKIADAVE\naws_secret_access_key = {PROFILE_SECRET}\n"
    if how == "AWS_SHARED_CREDENTIALS_FILE":
        (tmp_path / "team-creds.ini").write_text(text)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "team-creds.ini"))
    else:
        (home / ".aws" / "credentials").write_text(text)
        monkeypatch.setenv("AWS_PROFILE", "team")


# -- 1. a profile's secret ------------------------------------------------------------------
@pytest.mark.parametrize("how", ["AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"])
def test_a_step_printing_the_profiles_store_secret_is_masked_and_not_uploaded(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """With the secret in AWS_SECRET_ACCESS_KEY a run masked it and cached no step that
    held it; from a profile both went to the shared bucket in clear."""
    _give_profile(how, tmp_path, monkeypatch)
    (tmp_path / "wf.yml").write_text(LEAKING)
    done = _run(tmp_path, "run", "wf.yml", "--executor", "local", "--cache-dir", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not cached" in done.stdout + done.stderr
    logs = _run(tmp_path, "logs", "wf.yml", "p", "--cache-dir", url)
    assert "debug creds: AKIADAVE ***" in logs.stdout, logs.stdout + logs.stderr
    assert PROFILE_SECRET not in done.stdout + done.stderr + logs.stdout + logs.stderr
    stored = listing(url)
    assert not any(PROFILE_SECRET.encode() in fs_cat(url, name) for name in stored), stored


def test_a_profiles_secrets_are_read_once_per_version_of_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run's prepare asks: the files are parsed again only when one changed, and a
    folder cache's run asks nothing of them."""
    _give_profile("AWS_PROFILE", tmp_path, monkeypatch)
    reads: list[str] = []
    real = config_module._read_profile_secrets

    def counted(profile: str, *files: str) -> dict[str, str]:
        reads.append(profile)
        return real(profile, *files)

    monkeypatch.setattr(config_module, "_read_profile_secrets", counted)
    monkeypatch.setattr(config_module, "_PROFILE_SECRETS", {})
    with isolated(cache_directory=tmp_path / "folder-cache"):
        assert settings().credential_secrets() == {}
        assert reads == []  # (a folder's run: no profile looked at)
        found = settings().credential_secrets("s3://bucket/cache")
        assert list(found.values()) == [PROFILE_SECRET]
        assert "team" in next(iter(found))  # named by its profile, not by its value
        settings().credential_secrets("s3://bucket/cache")
        assert reads == ["team"]
        credentials = tmp_path / "home" / ".aws" / "credentials"
        credentials.write_text("[team]\naws_secret_access_key = testing\n")  # moto's
        os.utime(credentials, ns=(1, 1))  # (another mtime, whatever the clock's grain)
        assert settings().credential_secrets("s3://bucket/cache") == {}  # a stand-in
        assert reads == ["team", "team"]


# -- 2. an upper-case scheme ----------------------------------------------------------------
def test_an_upper_case_scheme_is_read_as_the_lower_case_one(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3://bucket/x was ValueError: Protocol not known: S3, in a traceback."""
    monkeypatch.chdir(tmp_path)  # (the local tier: .dagnb_cache of the folder)
    upper = url.replace("s3://", "S3://")
    assert checks.location(upper) == url
    (tmp_path / "wf.yml").write_text("name: up\nsteps:\n  a:\n    run: echo hi\n")
    done = _run(tmp_path, "run", "wf.yml", "--executor", "local", "--cache-dir", upper)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(name.startswith("entries/a/") for name in listing(url))
    memory = Memory(location=upper)  # (its uploads go as the process ends: the type says)
    assert type(memory.store.backend) is RemoteBackend
    assert memory.cache(abs)(-3) == 3
    assert not any(path.name.lower() == "s3:" for path in tmp_path.iterdir())


def test_a_scheme_no_store_library_knows_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"'nosuch://bucket/x': no store library knows the "
                                         r"scheme 'nosuch'; write s3://"):
        ObjectStore("nosuch://bucket/x")


def test_a_store_whose_library_connects_as_it_is_made_and_fails_is_one_line(
        tmp_path: Path) -> None:
    """ftp:// (fsspec's FTPFileSystem connects in its constructor): its socket error
    reached the dagnb command as a traceback."""
    import socket

    with socket.socket() as held:  # a port nobody listens on: the connection is refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
    url = f"ftp://127.0.0.1:{port}/cache"
    with pytest.raises(CacheError) as refused:
        Memory(location=url)
    message = str(refused.value)
    assert message.startswith(f"cache directory {url!r} cannot be reached (Connection"), message
    assert message.endswith("check its host, or use an s3://, gs://, az:// or file:// store")
    assert "\n" not in message


# -- 3. a slash short -----------------------------------------------------------------------
@pytest.mark.parametrize(("given", "fix"), [
    ("s3:/team/x", "s3://team/x"), ("S3:/team/x", "s3://team/x"),
    ("gs:/team/x", "gs://team/x"), ("file:/srv/cache", "file:///srv/cache"),
])
def test_a_store_url_with_one_slash_is_refused_naming_the_fix(given: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{given}' is not valid; expected a store URL "
                                          rf"with two slashes, {fix} "):
        checks.checked(checks.location, given, "--cache-dir", ConfigError, sep=" ")


@pytest.mark.parametrize(("given", "fix"), [
    ("file://tmp/store", "file:///tmp/store"), ("file://localhost/srv/x", "file:///srv/x"),
    ("local://team/x", "local:///team/x"),
])
def test_a_folders_url_with_two_slashes_is_refused_naming_the_fix(given: str, fix: str) -> None:
    """``file://tmp/store`` is the path ``tmp/store``, relative: each folder a command ran
    in made a store of its own (a push wrote under the working folder, exit 0)."""
    with pytest.raises(ConfigError, match=rf"'{given}' is not valid; expected a folder's URL "
                                          rf"with three slashes, {fix} \(with two, "):
        checks.checked(checks.location, given, "--cache-dir", ConfigError, sep=" ")
    assert checks.location(fix) == fix


@pytest.mark.parametrize("folder", ["./s3:/team/x", "cache/s3:/x", "C:/cache", "x:/y"])
def test_a_folder_that_only_looks_like_one_is_still_a_folder(folder: str) -> None:
    assert checks.location(folder) == folder


def test_a_one_slash_url_with_credentials_shows_none() -> None:
    with pytest.raises(checks.Invalid) as refused:
        checks.location("s3:/AKIA:hunter2-secret@team/x")
    assert "hunter2" not in str(refused.value)
    assert "s3://***@team/x" in refused.value.expected


def test_a_run_given_a_one_slash_url_makes_no_folder_named_after_the_scheme(
        tmp_path: Path) -> None:
    """It cached in ./s3:/team/x, silently: nothing was shared."""
    (tmp_path / "wf.yml").write_text("name: one\nsteps:\n  a:\n    run: echo hi\n")
    done = _run(tmp_path, "run", "wf.yml", "--executor", "local", "--cache-dir", "s3:/team/x")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'s3:/team/x' is not valid; expected a store URL with two slashes, s3://team/x" \
        in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s3:").exists()
    via_setting = subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "run", "wf.yml", "--executor", "local"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DAGNB_CACHE_DIRECTORY": "s3:/team/x",
             "DAGNB_CONFIG": "none"})
    assert via_setting.returncode == 2, via_setting.stdout + via_setting.stderr
    assert "s3://team/x" in via_setting.stderr
    assert not (tmp_path / "s3:").exists()


# -- 4. credentials the store does not know -------------------------------------------------
class _Refusal(Exception):
    """botocore's ClientError as s3fs keeps it (the cause of its PermissionError)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}}


def _refused(code: str) -> PermissionError:
    error = PermissionError("Forbidden" if code == "403" else f"{code}: refused")
    error.__cause__ = _Refusal(code)
    return error


def _warnings_of(backend: RemoteBackend, *failures: tuple[str, str]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for what, code in failures:
            backend._failed(what, _refused(code), 0.0)
    return [str(w.message) for w in caught if issubclass(w.category, RemoteCacheWarning)]


def test_an_unknown_access_key_is_told_to_check_the_credentials_not_read_only(
        url: str, tmp_path: Path) -> None:
    """Following 'set cache_mode: read-only' gave the same refused reads."""
    backend = RemoteBackend(url, local=tmp_path / "tier")
    [said] = _warnings_of(backend, ("an upload", "InvalidAccessKeyId"))
    assert "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE" in said
    assert "read-only" not in said


def test_an_upload_refused_after_a_read_was_does_not_advise_read_only(
        url: str, tmp_path: Path) -> None:
    backend = RemoteBackend(url, local=tmp_path / "tier")
    read, upload = _warnings_of(backend, ("a download", "403"), ("an upload", "AccessDenied"))
    assert "may not read the store" in read
    assert "may neither read nor write the store: check AWS_ACCESS_KEY_ID" in upload
    assert "read-only" not in upload


def test_an_upload_refused_where_reads_work_still_advises_read_only(
        url: str, tmp_path: Path) -> None:
    backend = RemoteBackend(url, local=tmp_path / "other-tier")
    [said] = _warnings_of(backend, ("an upload", "AccessDenied"))
    assert "set cache_mode: read-only" in said


# -- 5. Memory.clear on a store -------------------------------------------------------------
def test_clearing_a_memory_on_a_store_says_the_store_keeps_its_copies(
        url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It said it flushed every function; the next process downloaded them again."""
    monkeypatch.chdir(tmp_path)
    memory = Memory(location=url)
    assert memory.cache(abs)(-2) == 2
    with caplog.at_level(logging.WARNING, logger="dagnb.memory"):
        memory.clear()
    [said] = [r.getMessage() for r in caplog.records if r.name == "dagnb.memory"]
    tier = str(tmp_path / ".dagnb_cache")
    assert f"in the local tier {tier!r} only; the store keeps its copies" in said
    assert "lifecycle rules" in said
    assert any(name.startswith("entries/") for name in listing(url))  # (as it says)


# -- 6. fail-on-miss on a store -------------------------------------------------------------
def test_a_refused_fail_on_miss_run_on_a_store_leaves_no_local_tier(
        url: str, tmp_path: Path) -> None:
    """The README says no cache folder is made; the tier's .scratch was."""
    (tmp_path / "wf.yml").write_text(textwrap.dedent("""\
        name: fom
        steps:
          a:
            run: echo hi
        """))
    fresh = f"{url}-{uuid.uuid4().hex[:6]}"
    done = _run(tmp_path, "run", "wf.yml", "--executor", "local", "--cache-dir", fresh,
                "--cache-mode", "fail-on-miss")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "fail-on-miss" in done.stderr
    assert not (tmp_path / "tier").exists()
    filled = _run(tmp_path, "run", "wf.yml", "--executor", "local", "--cache-dir", fresh)
    assert filled.returncode == 0, filled.stdout + filled.stderr
    assert (tmp_path / "tier" / "a").is_dir()  # (made by the first write)
    served = _run(tmp_path, "run", "wf.yml", "--executor", "local", "--cache-dir", fresh,
                  "--cache-mode", "fail-on-miss")
    assert served.returncode == 0 and "1 cached" in served.stdout, served.stdout + served.stderr


def test_a_memory_given_a_one_slash_store_url_is_refused_and_makes_no_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory's folder path takes no check, for speed: one slash short, it cached in a
    folder named s3: and shared nothing."""
    from dagnb import Memory
    from dagnb.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="two slashes, s3://team/m"):
        Memory("s3:/team/m")
    assert not (tmp_path / "s3:").exists()


def test_a_dask_worker_told_a_profile_secret_s_name_finds_its_value_in_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker is told secrets by name and looked each up in its environment: a
    profile's has no variable, so its Memory kept it in what it cached."""
    from dagnb.executors import dask as dask_executor

    _give_profile("AWS_PROFILE", tmp_path, monkeypatch)
    monkeypatch.setattr(config_module, "_PROFILE_SECRETS", {})
    (name,) = settings().credential_secrets("s3://bucket/cache")
    assert config_module.secret_value(name) == PROFILE_SECRET
    remembered: list[dict[str, str]] = []
    monkeypatch.setattr("dagnb.cache.secret_scan.remember_secrets", remembered.append)
    monkeypatch.setattr(dask_executor, "_write_secrets", lambda values: None)
    dask_executor._remember_secrets([name], {})
    assert remembered == [{name: PROFILE_SECRET}]


# -- an entry's small files go several at once -------------------------------------------
def _most_at_once(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Record how many calls of ObjectStore.``name`` overlap at most (list: [now, most])."""
    import threading
    import time

    seen, lock = [0, 0], threading.Lock()
    real = getattr(ObjectStore, name)

    def counted(self: ObjectStore, *args: Any, **kwargs: Any) -> Any:
        with lock:
            seen[0] += 1
            seen[1] = max(seen)
        try:
            time.sleep(0.02)  # (a store's answer takes this long: the others start)
            return real(self, *args, **kwargs)
        finally:
            with lock:
                seen[0] -= 1

    monkeypatch.setattr(ObjectStore, name, counted)
    return seen


def test_an_entrys_small_files_are_sent_and_fetched_several_at_once_and_come_back_whole(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One after the other, 1,000 small files took 21 s to send to a store nearby."""
    files = {f"f{i}.txt": f"{i} {uuid.uuid4()}".encode() for i in range(24)}
    files["twin.txt"] = files["f0.txt"]  # (one blob: sent once, fetched once, copied)
    sent = _most_at_once(monkeypatch, "_put_blob")
    shared.save(shared.store(url, tmp_path / "a"), "make", "k", files)
    assert sent[1] > 1
    fetched = _most_at_once(monkeypatch, "_fetch_blob")
    entry = shared.store(url, tmp_path / "b").lookup("make", "k")
    assert fetched[1] > 1
    assert entry is not None
    assert {name: (entry.out_dir / name).read_bytes() for name in files} == files


def test_large_files_go_one_at_a_time_each_streaming_through_its_own_buffers() -> None:
    from dagnb.cache import remote

    order: list[str] = []
    jobs = ["big-1", "small-1", "big-2", "small-2"]
    sizes = [remote._AT_ONCE_UP_TO + 1, 10, remote._AT_ONCE_UP_TO + 1, 10]
    assert remote._at_once(lambda job: order.append(job) or job.upper(), jobs, sizes) == [
        "BIG-1", "SMALL-1", "BIG-2", "SMALL-2"]  # (the results in the jobs' order)
    assert order[-2:] == ["big-1", "big-2"]  # (after the small ones, in turn)


@pytest.mark.parametrize(("options", "said"), [
    ({"endpoint": "http://127.0.0.1:9"}, "'endpoint' is no option of an s3:// store; did "
                                         "you mean 'endpoint_url'?"),
    ({"endpoint_url": "http://127.0.0.1:9", "client_kwarg": {}},
     "'client_kwarg' is no option of an s3:// store; did you mean 'client_kwargs'?"),
])
def test_an_s3_option_s3fs_does_not_take_is_refused_naming_the_one_meant(options, said):
    """It passed validate, s3fs took it and its session raised a TypeError at the first
    request, reported as an outage ("check the URL, the network and the credentials")."""
    with pytest.raises(CacheError, match=rf"^cache_storage_options: {re.escape(said)}$"):
        ObjectStore("s3://team/cache", options)
    ObjectStore("s3://team/cache", {"endpoint_url": "http://127.0.0.1:9", "anon": True})


@pytest.mark.parametrize(("config", "said"), [
    (5, "config_kwargs must be a mapping of botocore's Config options"),
    ({"connect_timeout": "soon"}, "connect_timeout must be a number of seconds above 0, "
                                  "not 'soon'"),
    ({"read_timeout": 0}, "read_timeout must be a number of seconds above 0, not 0"),
    ({"retries": 3}, "retries must be a mapping (max_attempts, mode), not 3"),
    ({"retriez": {}}, "refused by botocore (Got unexpected keyword argument 'retriez')"),
    ({"retries": {"mode": "fast"}}, 'refused by botocore (Invalid value provided to "mode"'),
])
def test_config_kwargs_botocore_would_refuse_or_misread_are_refused_with_an_example(
        config, said):
    """``5`` raised a TypeError with a traceback; ``retries: 3`` and unknown names failed
    the first request, said as the store unreachable; ``connect_timeout: soon`` too."""
    with pytest.raises(CacheError, match=r"^cache_storage_options: config_kwargs") as refused:
        ObjectStore("s3://team/cache", {"anon": True, "config_kwargs": config})
    assert said in str(refused.value)
    assert str(refused.value).endswith("e.g. {connect_timeout: 5, read_timeout: 60, "
                                       "retries: {max_attempts: 3}}")
    ObjectStore("s3://team/cache", {"anon": True, "config_kwargs": {
        "connect_timeout": 3, "retries": {"max_attempts": 4}}})
