"""Secrets dagnb itself holds, kept out of what a shared store receives: the store's own
credentials in a step's output, a token in the description of a global a step reads, and
an encryption key in the store's options."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import dagnb
from dagnb.cache.keys import shown
from dagnb.config import settings
from dagnb.errors import ConfigError
from dagnb.model.masking import Masker

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

STORE_SECRET = "Session63StoreSecretXYZ987654"
SESSION_TOKEN = "Session63SessionTokenQRS123456"
API_TOKEN = "tok_live_SECRET_abcdef123456"


# -- the store's credentials -------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    server.stop()


@pytest.fixture
def url(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, reached with credentials from the environment (moto takes any)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIASESSION63KEYID", "AWS_SECRET_ACCESS_KEY": STORE_SECRET,
        "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"dagnb-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/cache"


def _store_objects(url: str) -> dict[str, bytes]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return {path: fs.cat(path) for path in fs.find(url.removeprefix("s3://"))}


def _tier_files(tier: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in tier.rglob("*") if path.is_file()}


def test_a_step_printing_its_environment_shows_the_stores_credentials_masked(
        url: str, tmp_path: Path) -> None:
    dagnb.configure(cache_local_directory=str(tmp_path / "tier"))
    graph = dagnb.Graph("leak", [dagnb.Step("debug", run="env | grep ^AWS_ | sort")])
    run = graph.run(executor="local", cache_directory=url)
    assert run.states() == {"debug": "succeeded"}
    logs = "\n".join(run.logs("debug")["line"])
    assert "AWS_SECRET_ACCESS_KEY=***" in logs and "AWS_SESSION_TOKEN=***" in logs
    assert STORE_SECRET not in logs and SESSION_TOKEN not in logs
    stored = {**_store_objects(url), **_tier_files(tmp_path / "tier")}
    assert stored, "the run stored nothing"
    for secret in (STORE_SECRET, SESSION_TOKEN):
        assert [where for where, data in stored.items() if secret.encode() in data] == []
    assert any(b"***" in data for data in stored.values())  # (its logs, masked)


def test_the_store_setting_masks_its_credentials_and_a_folder_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", STORE_SECRET)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "Session63AzureKey==")
    dagnb.configure(cache_directory=".dagnb_cache")
    assert settings().credential_secrets() == {}
    assert settings().credential_secrets("s3://bucket/cache") == {
        "AWS_SECRET_ACCESS_KEY": STORE_SECRET}
    dagnb.configure(cache_directory="az://container/cache")
    assert settings().credential_secrets() == {
        "AZURE_STORAGE_ACCOUNT_KEY": "Session63AzureKey=="}


# -- the description of a global a step reads --------------------------------------------
@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("API_TOKEN", API_TOKEN)
    return os.environ["API_TOKEN"]


def test_a_dict_holding_a_token_from_the_environment_is_described_by_type_and_size(
        token: str) -> None:
    config = {"endpoint": "https://api.example.com", "token": token}
    assert shown("CONFIG", config) == "<dict of 2>"


def test_a_header_built_from_a_token_is_described_without_any_of_it(token: str) -> None:
    described = shown("HEADERS", {"Authorization": "Bearer " + token})
    assert described == "<dict of 1>"
    assert not any(token[i:i + 6] in described for i in range(len(token) - 5))


def test_a_declared_secret_is_still_masked_and_plain_data_still_shown(token: str) -> None:
    masked = shown("HEADERS", {"Authorization": "Bearer " + token}, Masker([token]))
    assert masked == "{'Authorization': 'Bearer ***'}"
    assert shown("CONFIG", {"endpoint": "https://api.example.com"}) == (
        "{'endpoint': 'https://api.example.com'}")
    assert shown("ITEMS", [1, 2, "a"]) == "[1, 2, 'a']"


HEADERS = {"Authorization": "Bearer " + API_TOKEN}  # (API_TOKEN: the token fixture's)


def _fetch() -> int:
    return len(HEADERS)


def test_a_python_steps_global_holding_a_token_stays_out_of_the_cache(
        token: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = dagnb.Graph("g", [dagnb.Step("fetch", func=_fetch)]).run(
        executor="local", cache_directory=str(cache))
    assert run.states() == {"fetch": "succeeded"}
    described = [data for path, data in _tier_files(cache).items() if b"var:HEADERS" in data]
    assert described, "no entry describes HEADERS"
    pieces = {API_TOKEN[i:i + 6].encode() for i in range(len(API_TOKEN) - 5)}
    assert [data for data in described if any(piece in data for piece in pieces)] == []


def _fetch_with(n: int, token: str) -> int:
    return n


def _fetch_from(n: int, config: dict[str, str]) -> int:
    return n


def test_a_token_passed_to_a_memory_function_stays_out_of_its_entry(
        token: str, tmp_path: Path) -> None:
    """joblib's way to pass a token, ``fetch(n, os.environ["API_TOKEN"])``, stored it in
    clear in the entry's description of its arguments, which goes to a shared store."""
    memory = dagnb.Memory(location=tmp_path / "memory")
    fetch_with, fetch_from = memory.cache(_fetch_with), memory.cache(_fetch_from)
    config = {"url": "https://api.example.com", "auth": "Bearer " + token}
    assert fetch_with(1, token) == 1 and fetch_from(2, config) == 2
    assert fetch_with.check_call_in_cache(1, token)
    stored = _tier_files(tmp_path / "memory")
    pieces = {API_TOKEN[i:i + 6].encode() for i in range(len(API_TOKEN) - 5)}
    assert [where for where, data in stored.items() if any(p in data for p in pieces)] == []
    described = b"".join(stored.values())
    # (API_TOKEN, a variable named as a secret, is masked as a run masks it: the rest of
    # the config shown)
    assert b'"arg:token":"<str>"' in described
    assert b'"arg:config":"{\'auth\': \'Bearer ***\', \'url\': \'https://api.example.com\'}"' in (
        described)
    assert b'"arg:n":"1"' in described  # (plain data still shown)


def test_a_declared_secret_in_a_memory_calls_argument_is_masked() -> None:
    from dagnb.cache.call_keys import CallKeys

    keys = CallKeys(_fetch_from, [])
    args = (3, {"auth": "Bearer declared-secret-42"})
    key = keys.step_key(keys.components(args, {}), args, {}, Masker(["declared-secret-42"]))
    assert key.describe["arg:config"] == "{'auth': 'Bearer ***'}"
    assert key.describe["arg:n"] == "3"


# -- an encryption key in the store's options --------------------------------------------
@pytest.mark.parametrize("options", [
    {"s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256",
                              "SSECustomerKey": "0123456789abcdef0123456789abcdef"}},
    {"client_kwargs": {"headers": {
        "x-amz-server-side-encryption-customer-key": "0123456789abcdef0123456789abcdef"}}},
])
def test_an_sse_c_key_in_the_store_options_is_refused_unshown(
        options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="give the variable that holds it instead "
                       r"\(SSECustomerKey_env: MY_SSE_KEY\)") as refused:
        dagnb.configure(cache_storage_options=options)
    assert "0123456789abcdef" not in str(refused.value)


def test_an_sse_kms_key_id_is_accepted() -> None:
    options = {"s3_additional_kwargs": {"ServerSideEncryption": "aws:kms",
                                        "SSEKMSKeyId": "arn:aws:kms:us-east-1:1:key/k"}}
    dagnb.configure(cache_storage_options=options)
    assert settings().cache_storage_options == options


def test_a_store_setting_pasted_into_a_workflow_files_defaults_says_where_it_goes(tmp_path):
    from dagnb.errors import WorkflowError
    from dagnb.workflows.loader import load

    workflow = tmp_path / "wf.yml"
    workflow.write_text("workflow_defaults:\n  cache_directory: s3://team/cache\n"
                        "steps:\n  a:\n    run: echo hi\n", encoding="utf-8")
    with pytest.raises(WorkflowError) as caught:
        load(workflow)
    message = str(caught.value)
    assert "'cache_directory' is a setting" in message
    assert "dagnb.yaml's workflow_defaults" in message and "DAGNB_CACHE_DIRECTORY" in message
    assert "\n" not in message


def test_a_local_servers_stand_in_store_secret_is_no_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's ``testing`` (MinIO's ``minioadmin``) as the store's secret refused a param
    ``stage: testing``, kept results holding the word out of the cache, and masked it in
    every log line."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "minioadmin")
    assert settings().credential_secrets("s3://bucket/cache") == {}


SSE_KEY = "k" * 32  # an SSE-C key: 32 bytes


def test_an_sse_c_key_given_by_its_variable_reaches_the_store_and_is_masked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusing the key in the settings left stores encrypted with SSE-C unreadable: it is
    given by the variable that holds it, read as the store is made, masked in runs."""
    from dagnb.cache.remote import ObjectStore

    options = {"s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256",
                                        "SSECustomerKey_env": "MY_SSE_KEY"}}
    monkeypatch.setenv("MY_SSE_KEY", SSE_KEY)
    dagnb.configure(cache_storage_options=options)
    assert settings().cache_storage_options == options  # (what config show prints)
    assert settings().credential_secrets()["MY_SSE_KEY"] == SSE_KEY
    made = ObjectStore("s3://bucket/cache", settings().cache_storage_options)
    assert made._options["s3_additional_kwargs"] == {"SSECustomerAlgorithm": "AES256",
                                                     "SSECustomerKey": SSE_KEY}


def test_an_sse_c_key_variable_not_set_is_one_line_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dagnb.cache.remote import ObjectStore
    from dagnb.errors import CacheError

    monkeypatch.delenv("MY_SSE_KEY", raising=False)
    with pytest.raises(CacheError, match="SSECustomerKey_env names variable 'MY_SSE_KEY', "
                       "which is not set; export MY_SSE_KEY"):
        ObjectStore("s3://bucket/cache", {"s3_additional_kwargs": {
            "SSECustomerKey_env": "MY_SSE_KEY"}})
