"""The description of a global a step reads (``shown``), built on every key build, cached
runs included: it looks for secret-named variables' values in what it shows only, and
reads the environment's names again only when the environment changes size."""

from __future__ import annotations

import time

import pytest

from dagnb.cache import keys
from dagnb.cache.keys import shown

API_TOKEN = "tok_live_SECRET_abcdef123456"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("API_TOKEN", API_TOKEN)
    return API_TOKEN


@pytest.fixture
def names_asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name ``named_as_secret`` is asked about by ``shown``."""
    asked: list[str] = []
    named = keys.named_as_secret

    def counting(name: str) -> bool:
        asked.append(name)
        return named(name)

    monkeypatch.setattr(keys, "named_as_secret", counting)
    return asked


def test_the_environment_is_listed_once_while_its_size_stays(
        token: str, names_asked: list[str]) -> None:
    assert shown("TEXT", "an ordinary text") == "'an ordinary text'"
    names_asked.clear()
    for _ in range(10):
        shown("TEXT", "an ordinary text")
        shown("ROWS", 10)
    assert names_asked == ["TEXT", "ROWS"] * 10  # (the globals' names only)


def test_a_secrets_new_value_at_the_same_size_is_seen(
        token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shown("CONFIG", {"token": token}) == "<dict of 1>"
    monkeypatch.setenv("API_TOKEN", "tok_live_OTHER_9876543210zyx")
    assert shown("CONFIG", {"token": "tok_live_OTHER_9876543210zyx"}) == "<dict of 1>"
    assert shown("OLD", "abcdef123456") == "'abcdef123456'"  # (no longer a secret's)


def test_a_secret_named_variable_set_later_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATE_API_TOKEN", raising=False)
    assert shown("TEXT", "late_token_value_42") == "'late_token_value_42'"
    monkeypatch.setenv("LATE_API_TOKEN", "late_token_value_42")
    assert shown("TEXT", "late_token_value_42") == "<str>"


def test_a_secret_cut_off_in_a_text_still_counts_as_held(token: str) -> None:
    assert shown("PREFIX", token[:12]) == "<str>"  # 'tok_live_SEC': its head alone
    assert shown("SUFFIX", ["id", token[-8:]]) == "<list of 2>"


def test_a_secret_of_which_the_description_shows_nothing_leaves_it_shown(token: str) -> None:
    text = "x" * 100 + token + "y" * 100  # (reprlib shows its first and last characters)
    assert shown("CORPUS", text) == "'xxxxxxxxxxxx...yyyyyyyyyyyyy'"
    assert shown("LOG", "x" * 100 + "Bearer " + token) == "<str>"  # (its tail: shown)


def test_a_short_secret_hidden_by_the_cut_but_shown_at_both_ends_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut text shows its first characters and its last ones: a 15-character secret
    across the cut shows eight characters (``'abcdefghhunt...er2!123456789'``), no six of
    them together."""
    monkeypatch.setenv("DB_PASSWORD", "hunter2hunter2!")
    assert shown("LINE", "abcdefgh" + "hunter2hunter2!" + "123456789") == "<str>"


def test_a_number_global_named_as_a_secret_is_described_by_its_type() -> None:
    assert shown("PIN_SECRET", 12345678) == "<int>"
    assert shown("ROWS", 12345678) == "12345678"


def test_a_large_text_global_is_described_without_reading_all_of_it(token: str) -> None:
    big = "lorem ipsum " * 5_000_000  # 60 MB: searching it whole took 50 ms and more
    shown("CORPUS", big)
    took = min(_timed(lambda: shown("CORPUS", big)) for _ in range(3))
    assert took < 0.005, f"{took * 1e3:.1f} ms"


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_a_secret_named_variable_put_in_place_of_another_is_seen(
        token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shown("CONFIG", {"token": token}) == "<dict of 1>"
    monkeypatch.delenv("API_TOKEN")
    monkeypatch.setenv("ROTATED_API_TOKEN", "rotated_value_0123456789")  # (the same size)
    assert shown("CONFIG", {"token": "rotated_value_0123456789"}) == "<dict of 1>"
