"""A store URL's mistakes, refused before anything runs rather than taken for an outage or
another store, and what ``dagnb cache clear`` leaves in the store (QA pass):

- an endpoint whose scheme is not http/https, or with no host, from
  ``cache_storage_options`` or botocore's ``AWS_ENDPOINT_URL``: botocore's error read
  as an unreachable store, a warning every minute, the run exiting 0 with its entries
  local alone;
- ``s3://team//dagnb``: a prefix named ``/dagnb``, a store no teammate shared;
- ``cache clear --step`` said it removed the entry, and the next run downloaded it again.

The URL checks need no server; the clear line's claims are checked on moto's S3 server
(the fixtures of test_remote_cache).
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import Store
from dagnb.cache.remote import ObjectStore
from dagnb.cli import main

WORKFLOW = """\
name: wf
steps:
  make:
    run: |
      echo ran >> {counter}
      cat {counter} > "$DAGNB_OUT/v.txt"
"""


@pytest.fixture
def workflow(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-step workflow whose step counts its runs, in a project whose tier is
    ``tier``; no endpoint in the environment but what a test sets."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
                        "DAGNB_CACHE_LOCAL_DIRECTORY": str(project / "tier")}.items():
        monkeypatch.setenv(name, value)
    (project / "wf.yml").write_text(WORKFLOW.format(counter=project / "runs.txt"))
    return project / "wf.yml"


def _refused(workflow: Path, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    """The one line of a run refused before its step ran (exit 2)."""
    assert main(["run", str(workflow), "--executor", "local", *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert not (workflow.parent / "runs.txt").exists() and not (workflow.parent / "tier").exists()
    return err


# -- 1. an endpoint that is no http(s) URL with a host ---------------------------------------
@pytest.mark.parametrize(("endpoint", "expected"), [
    ("htp://127.0.0.1:5055", "an http:// or https:// URL, not 'htp://127.0.0.1:5055': "
                             'endpoint_url: "http://127.0.0.1:5055"'),
    ("http://:9000", "a URL with a host, not 'http://:9000': endpoint_url: \"http://HOST:9000\""),
])
def test_an_endpoint_option_of_another_scheme_or_no_host_is_refused_before_the_run(
        workflow: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        endpoint: str, expected: str) -> None:
    monkeypatch.setenv("DAGNB_CACHE_STORAGE_OPTIONS", f'{{"endpoint_url": "{endpoint}"}}')
    err = _refused(workflow, capsys, "--cache-dir", "s3://team/dagnb")
    assert err == ("dagnb: error: environment variable DAGNB_CACHE_STORAGE_OPTIONS: "
                   f"cache_storage_options = {{'endpoint_url': '{endpoint}'}} is not valid; "
                   f"expected endpoint_url as {expected}\n")


@pytest.mark.parametrize(("endpoint", "shown", "expected", "fixed"), [
    ("127.0.0.1:5055", "127.0.0.1:5055", "a URL with its scheme", "http://127.0.0.1:5055"),
    ("htp://127.0.0.1:5055", "htp://127.0.0.1:5055", "an http:// or https:// URL",
     "http://127.0.0.1:5055"),
    ("htps://AKIA-9:pw-77@minio:9000", "htps://***@minio:9000", "an http:// or https:// URL",
     "https://***@minio:9000"),
    ("https://", "https://", "a URL with a host", "https://HOST:PORT"),
])
def test_an_endpoint_variable_of_another_scheme_or_no_host_is_refused_before_the_run(
        workflow: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        endpoint: str, shown: str, expected: str, fixed: str) -> None:
    """botocore's ``ValueError: Invalid endpoint`` was a store unreachable, the run exit 0."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    err = _refused(workflow, capsys, "--cache-dir", "s3://team/dagnb")
    assert err == (f"dagnb: error: environment variable AWS_ENDPOINT_URL={shown!r} is not "
                   f"valid; expected {expected}: export AWS_ENDPOINT_URL={fixed} (or unset it)\n")
    assert "pw-77" not in err


def test_the_endpoint_variable_is_checked_only_where_botocore_reads_it(
        workflow: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Options that name an endpoint, or AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, leave the
    variable unread; AWS_ENDPOINT_URL_S3 is read before it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:5055")
    ObjectStore("s3://team/dagnb", {"endpoint_url": "http://127.0.0.1:5055"})
    ObjectStore("s3://team/dagnb", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    ObjectStore("file:///tmp/not-s3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:5055")
    ObjectStore("s3://team/dagnb")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:5055")
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    ObjectStore("s3://team/dagnb")


# -- 2. a double slash -----------------------------------------------------------------------
DOUBLE_SLASH = ("'s3://team//dagnb' is not valid; expected a store URL with one slash between "
                "its parts, s3://team/dagnb (with '//' the prefix is '/dagnb': another store)")


def test_a_double_slash_in_a_store_url_is_refused_naming_the_one_meant(
        workflow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was a prefix named '/dagnb': every step ran again, and no teammate saw it."""
    err = _refused(workflow, capsys, "--cache-dir", "s3://team//dagnb")
    assert err == f"dagnb: error: --cache-dir {DOUBLE_SLASH}\n"
    assert main(["cache", "push", "s3://team//dagnb", "--cache-dir", str(workflow.parent)]) == 2
    assert capsys.readouterr().err == f"dagnb: error: the remote store {DOUBLE_SLASH}\n"


def test_a_double_slash_in_the_cache_directory_setting_is_refused(
        workflow: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", "s3://team//dagnb")
    err = _refused(workflow, capsys)
    assert err == (f"dagnb: error: environment variable DAGNB_CACHE_DIRECTORY: "
                   f"cache_directory = {DOUBLE_SLASH}\n")


def test_a_trailing_slash_and_a_folders_double_slash_name_the_same_place(
        tmp_path: Path) -> None:
    from dagnb import checks

    assert checks.location("s3://team/dagnb/") == "s3://team/dagnb/"
    assert checks.location("s3://team/dagnb//") == "s3://team/dagnb//"
    assert checks.location(f"file://{tmp_path}//store") == f"file://{tmp_path}//store"
    with pytest.raises(checks.Invalid, match=r"s3://team/a/b \(with '//' the prefix is 'a//b'"):
        checks.location("s3://team/a//b")


# -- 3. what cache clear leaves in the store ----------------------------------------------------
def test_cache_clear_says_the_store_keeps_its_entries_and_how_to_replace_one(
        workflow: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tier = workflow.parent / "tier"
    out = Store(tier).scratch_dir("make")
    (out / "v.txt").write_text("ran\n")
    Store(tier).save("make", "k", out_dir=out)
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", "s3://team/dagnb")
    assert main(["cache", "clear", "--step", "make"]) == 0
    assert capsys.readouterr().out == (
        f"removed 1 cache entry of step 'make' from {tier} (the local tier); the store "
        "s3://team/dagnb keeps its entries, and a run downloads them again: to replace a "
        "bad one there, dagnb run WORKFLOW --refresh-step make\n")


def test_cache_clear_of_a_plain_folder_says_nothing_of_a_store(
        workflow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = workflow.parent / "cache"
    out = Store(folder).scratch_dir("make")
    (out / "v.txt").write_text("ran\n")
    Store(folder).save("make", "k", out_dir=out)
    assert main(["cache", "clear", "--all", "--cache-dir", str(folder)]) == 0
    assert capsys.readouterr().out == f"removed 1 cache entry from {folder}\n"


s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
import test_remote_cache as shared  # noqa: E402  (after the skips: it needs moto)

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_what_the_clear_line_says_of_the_store_holds(
        url: str, server: shared.S3Server, workflow: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """After the clear a run is served the store's copy; the refresh it names replaces it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)  # (workflow unset it)
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", url)
    run = ["run", str(workflow), "--executor", "local"]
    assert main(run) == 0
    assert main(["cache", "clear", "--step", "make"]) == 0
    assert f"the store {url} keeps its entries" in capsys.readouterr().out
    assert main(run) == 0
    assert "1 cached" in capsys.readouterr().out
    assert main([*run, "--refresh-step", "make"]) == 0
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("DAGNB_CACHE_LOCAL_DIRECTORY", str(workflow.parent / "teammate"))
    dagnb.config.reload()
    assert main(run) == 0
    assert "1 cached" in capsys.readouterr().out
    (entry,) = Store(workflow.parent / "teammate").iter_entries("make")
    assert (entry.out_dir / "v.txt").read_text() == "ran\nran\n"  # (the refresh's)
    s3fs.S3FileSystem.clear_instance_cache()  # (nor may the next test get its client)


def test_an_endpoint_variable_changed_in_the_process_is_the_one_a_new_store_reaches(
        url: str, server: shared.S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """fsspec keeps one client per options: a store made after AWS_ENDPOINT_URL moved to
    another server reached the first one (a kernel's, a worker running two suites')."""
    save_of = shared.store(url, tmp_path / "first")
    shared.save(save_of, "make", "k", {"a.txt": b"first"})  # (its client made, and used)
    other = shared.S3Server()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", other.endpoint)
        server.stop()  # (the first endpoint answers no more)
        bucket = f"dagnb-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        moved = shared.store(f"s3://{bucket}/cache", tmp_path / "second")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (a failed upload is a warning)
            shared.save(moved, "make", "k", {"a.txt": b"second"})
        assert shared.listing(f"s3://{bucket}/cache")  # (on the new server)
    finally:
        other.stop()
        server.start()
