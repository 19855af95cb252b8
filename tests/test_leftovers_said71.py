"""Leftovers of earlier QA passes, each said where a user looks:

- ``dagnb cache prune`` of a store URL's cache pruned its local tier alone and said
  nothing of the store (``clear`` says it): a user took the store for pruned too;
- an endpoint botocore reads from its config file (``endpoint_url = 127.0.0.1:9000``
  under the profile, or in its ``services`` section) was not checked as
  ``AWS_ENDPOINT_URL`` is: botocore took it for an unreachable store;
- a need of the workflow's ``defaults`` that names no step was said to be the first
  step's, the defaults unnamed.

In process: a ``file://`` store, a config file in a temporary folder, no S3 server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import dagnb
from dagnb.cache import Store
from dagnb.cli import main
from dagnb.errors import WorkflowError
from dagnb.workflows.loader import loads


# -- 1. what a prune leaves in the store ------------------------------------------------------
def _tier_with_an_entry(project: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> Path:
    """A cache whose directory is ``url`` and whose local tier holds an entry of step
    ``make``; the tier."""
    tier = project / "tier"
    out = Store(tier).scratch_dir("make")
    (out / "v.txt").write_text("one\n")
    Store(tier).save("make", "k", out_dir=out)
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", url)
    monkeypatch.setenv("DAGNB_CACHE_LOCAL_DIRECTORY", str(tier))
    dagnb.config.reload()
    return tier


def test_a_prune_of_a_file_store_says_the_store_keeps_its_entries(
        project: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{project / 'store'}"
    dagnb.configure(cache_local_directory=str(project / "teammate"))
    run = dagnb.Graph("p", [dagnb.Step("make", run='echo one > "$DAGNB_OUT/v.txt"')]).run(
        executor="local", cache_directory=url)
    assert run.states() == {"make": "succeeded"}
    tier = _tier_with_an_entry(project, monkeypatch, url)
    assert main(["cache", "prune", "--max-entries", "0"]) == 0
    assert capsys.readouterr().out == (
        f"removed 1 cache entry from {tier}; 0 cache entries left, 0B (the local tier); the "
        f"store {url} keeps its entries, which another machine downloads again; they stay "
        "in its folder until deleted there, not a prune\n")
    assert not list(Store(tier).iter_entries())
    assert list((project / "store" / "entries" / "make").iterdir())  # (what it says holds)


def test_a_prune_of_an_s3_store_names_the_buckets_lifecycle_rules(
        project: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tier = _tier_with_an_entry(project, monkeypatch, "s3://team/dagnb")
    assert main(["cache", "prune", "--max-entries", "0"]) == 0
    assert capsys.readouterr().out == (
        f"removed 1 cache entry from {tier}; 0 cache entries left, 0B (the local tier); the "
        "store s3://team/dagnb keeps its entries, which another machine downloads again; "
        "the bucket's lifecycle rules remove them there, not a prune\n")


def test_a_prune_of_a_cache_folder_names_no_store(
        project: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tier = _tier_with_an_entry(project, monkeypatch, "s3://team/dagnb")
    assert main(["cache", "prune", "--max-entries", "0", "--cache-dir", str(tier)]) == 0
    assert capsys.readouterr().out == (
        f"removed 1 cache entry from {tier}; 0 cache entries left, 0B\n")


# -- 2. an endpoint in botocore's config file ---------------------------------------------------
@pytest.fixture
def aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """botocore's config file, in a temporary folder; no endpoint variable set."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    return path


def _object_store(url: str = "s3://team/dagnb", options: dict | None = None) -> object:
    pytest.importorskip("s3fs")
    from dagnb.cache.remote import ObjectStore

    return ObjectStore(url, options)


def test_an_endpoint_of_the_config_files_profile_with_no_scheme_is_refused(
        aws_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagnb.errors import CacheError

    aws_config.write_text("[default]\nregion = us-east-1\n\n"
                          "[profile minio]\nendpoint_url = 127.0.0.1:9000\n")
    _object_store()  # (the default profile sets none)
    monkeypatch.setenv("AWS_PROFILE", "minio")
    with pytest.raises(CacheError) as caught:
        _object_store()
    assert str(caught.value) == (
        f"endpoint_url = '127.0.0.1:9000' in {aws_config}, [profile minio], is not valid; "
        "expected a URL with its scheme: write endpoint_url = http://127.0.0.1:9000 there "
        "(or remove it)")
    monkeypatch.delenv("AWS_PROFILE")
    with pytest.raises(CacheError, match=r"\[profile minio\]"):  # (the store's own profile)
        _object_store(options={"profile": "minio"})


def test_an_endpoint_of_the_profiles_services_section_is_refused_naming_it(
        aws_config: Path) -> None:
    from dagnb.errors import CacheError

    aws_config.write_text("[default]\nservices = local\n\n"
                          "[services local]\ns3 =\n  endpoint_url = htp://minio:9000\n")
    with pytest.raises(CacheError) as caught:
        _object_store()
    assert str(caught.value) == (
        f"endpoint_url = 'htp://minio:9000' in {aws_config}, [services local] under s3 (the "
        "services of [default]), is not valid; expected an http:// or https:// URL: write "
        "endpoint_url = http://minio:9000 there (or remove it)")


def test_the_config_files_endpoint_is_checked_only_where_botocore_reads_it(
        aws_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint the options or a variable name wins over the file's, as does
    ignore_configured_endpoint_urls; an http(s) URL with a host passes."""
    aws_config.write_text("[default]\nendpoint_url = 127.0.0.1:9000\n")
    _object_store(options={"endpoint_url": "http://127.0.0.1:9000"})
    _object_store(options={"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}})
    _object_store(f"file://{aws_config.parent / 'store'}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    _object_store()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    _object_store()
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    aws_config.write_text("[default]\nendpoint_url = 127.0.0.1:9000\n"
                          "ignore_configured_endpoint_urls = true\n")
    _object_store()
    aws_config.write_text("[default]\nendpoint_url = http://127.0.0.1:9000\n")
    _object_store()


# -- 3. an unknown need of the defaults ---------------------------------------------------------
def test_an_unknown_need_of_the_defaults_is_said_once_as_the_defaults() -> None:
    text = ("defaults: {needs: [setpu]}\n"
            "steps:\n  setup: {run: 'true', needs: []}\n  a: {run: 'true'}\n"
            "  b: {run: 'true'}\n")
    with pytest.raises(WorkflowError) as caught:
        loads(text, source="w.yml")
    assert str(caught.value) == ("w.yml: defaults: needs: [setpu] names 'setpu', which is not "
                                 "a step; did you mean 'setup'?")


def test_an_unknown_need_of_a_steps_own_is_said_as_the_steps() -> None:
    with pytest.raises(WorkflowError) as caught:
        loads("defaults: {needs: [setup]}\n"
              "steps:\n  setup: {run: 'true'}\n  a: {run: 'true', needs: [setpu]}\n",
              source="w.yml")
    assert str(caught.value) == ("w.yml: step 'a' needs 'setpu', which is not a step; "
                                 "did you mean 'setup'?")
