"""A plain ``dagnb.Memory`` call outside any run treats the variables of the environment
named as secrets beyond doubt (``API_TOKEN``) as a run does: it printed such a value in
clear in its verbose line and stored a result holding it, though the argument's stored
description said ``<str>``."""

from __future__ import annotations

import pytest

import dagnb

TOKEN = "sk-live-9f8e7d6c5b4a3210"


def fetch(token: str, day: str) -> dict:
    return {"day": day, "headers": {"Authorization": "Bearer " + token}}


def _files_holding(folder, value: str) -> list:
    return [p for p in folder.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]


def test_a_result_holding_an_environment_secret_is_not_stored_nor_printed(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    cached = dagnb.Memory(str(tmp_path / "cache"), verbose=1).cache(fetch)
    with pytest.warns(UserWarning, match=r"its result holds the value of secret 'API_TOKEN' "
                                         r"\(a variable of this process's environment "
                                         r"named as a secret\)"):
        assert cached(TOKEN, "2024-01-01")["headers"]["Authorization"] == f"Bearer {TOKEN}"
    printed = capsys.readouterr().out
    assert "fetch('***', '2024-01-01')" in printed and TOKEN not in printed
    assert _files_holding(tmp_path / "cache", TOKEN) == []
    assert not cached.check_call_in_cache(TOKEN, "2024-01-01")


def test_without_such_a_variable_the_same_call_is_stored(tmp_path, monkeypatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    cached = dagnb.Memory(str(tmp_path / "cache")).cache(fetch)
    cached("plain-value-123456", "2024-01-01")
    assert cached.check_call_in_cache("plain-value-123456", "2024-01-01")
