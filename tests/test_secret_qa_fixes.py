"""Secrets the QA pass found leaking: a numeric secret returned as a number, a secret's
value given as its name, a value ending in a newline, store credentials in settings."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

import dagnb
from dagnb import checks
from dagnb.cache.secret_scan import forget_secrets, pickle_holds, remember_secrets
from dagnb.errors import ConfigError, InvalidStepError, SecretError
from dagnb.model.contract import secret_not_set
from dagnb.model.masking import Masker, SecretFinder, looks_like_token

PIN = "83920571"


def _files_holding(root: Path, text: str) -> list[str]:
    return [str(path) for path in root.rglob("*")
            if path.is_file() and text.encode() in path.read_bytes()]


# --- A: a numeric secret returned as a number ---------------------------------------

@pytest.mark.parametrize("value", [int(PIN), float(PIN), {"pin": int(PIN)},
                                   [1, {"pin": float(PIN)}]])
def test_a_number_holding_a_secret_is_found_as_stored(value):
    assert pickle_holds(value, SecretFinder({"ACCOUNT_PIN": PIN})) == "ACCOUNT_PIN"


def test_a_number_holding_no_secret_is_not_refused():
    assert pickle_holds({"n": 8392057, "x": 1.5, "ok": True}, SecretFinder({"PIN": PIN})) is None


def test_a_step_returning_a_secret_as_an_int_is_not_cached(workdir, monkeypatch):
    monkeypatch.setenv("ACCOUNT_PIN", PIN)
    graph = dagnb.Graph("num")

    @graph.step(secrets=["ACCOUNT_PIN"])
    def as_int():
        return int(os.environ["ACCOUNT_PIN"])

    with pytest.warns(UserWarning, match="'as_int' ran but was not cached.*'ACCOUNT_PIN'"):
        graph.run()
    assert _files_holding(workdir, PIN) == []
    with pytest.warns(UserWarning, match="not cached"):
        again = graph.run()
    assert again.status()["cached"].tolist() == [False]


def test_a_memory_call_returning_a_secret_as_a_number_is_not_cached(tmp_path):
    memory = dagnb.Memory(location=tmp_path / "memcache")

    @memory.cache
    def lookup(n):
        return {"pin": float(PIN) + 0 * n}

    remember_secrets({"ACCOUNT_PIN": PIN})
    try:
        with pytest.warns(UserWarning, match="not cached.*'ACCOUNT_PIN'"):
            lookup(1)
    finally:
        forget_secrets()
    assert _files_holding(tmp_path, PIN) == []


# --- B: a secret's value given where its name goes ---------------------------------

TOKEN = "sk-live-Abc123XyZ987qwe"
GH_TOKEN = "ghp_Abc123XyZ987qweRTY"


def test_a_value_given_as_a_secret_name_is_not_shown(monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    with pytest.raises(InvalidStepError) as raised:
        dagnb.Step("deploy", run="true", secrets=["OTHER", os.environ["API_TOKEN"]])
    message = str(raised.value)
    assert TOKEN not in message
    assert "the 2nd secret name (23 characters, not shown)" in message
    assert "it is the value of $API_TOKEN" in message


def test_a_name_not_allowed_is_described_by_position_and_length():
    with pytest.raises(InvalidStepError, match=r"the 1st secret name \(9 characters"):
        dagnb.Step("deploy", run="true", secrets=["pa$$w0rd!"])


def test_a_number_given_as_a_secret_name_is_not_shown():
    with pytest.raises(InvalidStepError, match="secrets must be names, got <int>") as raised:
        dagnb.Step("deploy", run="true", secrets=[int(PIN)])
    assert PIN not in str(raised.value)


def test_a_value_that_fits_a_name_and_is_not_set_is_not_shown(workdir, monkeypatch):
    monkeypatch.setenv("GH_TOKEN", GH_TOKEN)
    graph = dagnb.Graph("deploy")
    graph.add(dagnb.Step("deploy", run="echo hi", secrets=[GH_TOKEN]))
    with pytest.raises(SecretError) as raised:
        graph.run()
    assert GH_TOKEN not in str(raised.value)
    assert "is the value of $GH_TOKEN; give the name: secrets=['GH_TOKEN']" in str(raised.value)


def test_a_name_that_looks_like_a_token_and_is_not_set_is_masked():
    error = str(secret_not_set("deploy", "glpat-Abc123XyZ987qweRTY", environ={}))
    assert "Abc123" not in error and "'glpat-***' (24 characters" in error
    assert "export" not in error


def test_an_ordinary_name_not_set_is_still_named():
    error = str(secret_not_set("deploy", "API_TOKEN", environ={}))
    assert "needs secret 'API_TOKEN'" in error and "export API_TOKEN=..." in error


@pytest.mark.parametrize(("text", "token"), [
    ("API_TOKEN", False), ("AZURE_STORAGE_CONNECTION_STRING", False), ("github_token", False),
    (GH_TOKEN, True), ("AKIAIOSFODNN7EXAMPLE", True), ("xoxb12345abcde", True),
    ("Abc123XyZ987qweRTYu", True), ("ABCD1234EFGH5678IJKL", True),
])
def test_what_looks_like_a_token(text, token):
    assert looks_like_token(text) is token


# --- C: a secret ending in a newline -----------------------------------------------

NL_TOKEN = "sk-live-Abc123XyZ987qwe"


def test_the_base64_of_a_secret_without_its_newline_is_masked():
    encoded = base64.b64encode(NL_TOKEN.encode()).decode()
    assert encoded not in Masker([NL_TOKEN + "\n"])(f"b64: {encoded}")


def test_the_base64_of_a_secret_without_its_newline_is_found_in_a_result():
    encoded = base64.b64encode(NL_TOKEN.encode()).decode()
    assert pickle_holds(encoded, SecretFinder({"API_TOKEN": NL_TOKEN + "\n"})) == "API_TOKEN"


# --- D: store credentials in settings ----------------------------------------------

@pytest.mark.parametrize("options", [
    {"credential": "sv=2024&sig=SuperSecret99x"},
    {"client_kwargs": {"headers": {"Authorization": "Bearer SuperSecret99x"}}},
    {"client_kwargs": {"headers": {"X-Api-Key": "SuperSecret99x"}}},
    {"api_key": "SuperSecret99x"},
])
def test_store_credentials_under_any_name_are_refused_unshown(options):
    with pytest.raises(checks.Invalid) as raised:
        checks.store_options(options, fix="set them elsewhere")
    assert "SuperSecret99x" not in str(raised.value.value)
    assert "SuperSecret99x" not in str(raised.value)


def test_config_show_refuses_an_authorization_header(project, monkeypatch, capsys):
    from dagnb.cli import main

    monkeypatch.setenv("DAGNB_CACHE_STORAGE_OPTIONS",
                       '{"client_kwargs": {"headers": {"Authorization": "Bearer SuperSecret99x"}}}')
    assert main(["config", "show"]) != 0
    out = capsys.readouterr()
    assert "SuperSecret99x" not in out.out + out.err
    assert "'Authorization'" in out.err


def test_a_services_secret_given_as_its_value_is_not_shown(monkeypatch):
    from dagnb.executors.dagger.services import _secret_values

    token = "ghp_" + "Zq9" * 8
    monkeypatch.delenv(token, raising=False)
    with pytest.raises(ConfigError, match=r"secret 'ghp_\*\*\*' \(28 characters") as caught:
        _secret_values("db", [token])
    assert token not in str(caught.value)
    with pytest.raises(ConfigError, match=r"export DB_PASSWORD=\.\.\."):  # (a name: as it was)
        _secret_values("db", ["DB_PASSWORD"])
