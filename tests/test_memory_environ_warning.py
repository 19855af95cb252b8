"""A ``dagnb.Memory`` function whose code takes ``os.environ`` whole, or reads it by a
name made at run time, reads variables its key cannot name: served from the cache, it
is warned of once (as a step is), where before the stale result came silently."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb import UnkeyedEnvironmentWarning


def whole_region() -> str:
    return dict(os.environ).get("REGION", "none")


def region_by(name: str) -> str:
    return os.environ.get(name, "none")


def region_named() -> str:
    return os.environ.get("REGION", "none")


WHOLE_SAID = ("whole_region was served from the cache, but its code reads its whole "
              "environment (dict(os.environ), .items(), a loop over it, env=os.environ), "
              "whose values its key does not hold: the result may be stale; read each "
              'variable it needs by a name written in the code (os.environ["REGION"]), '
              "which then counts in its key, or pass it as an argument")


@pytest.fixture
def memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dagnb.Memory:
    monkeypatch.setenv("REGION", "eu")
    return dagnb.Memory(str(tmp_path / "mem"))


def said(call: Callable[[], Any]) -> tuple[Any, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [w for w in caught if issubclass(w.category, UnkeyedEnvironmentWarning)]


def test_a_hit_of_code_taking_the_environment_whole_is_warned_of_once(
        memory: dagnb.Memory, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = memory.cache(whole_region)
    assert said(cached) == ("eu", [])  # a miss runs with the values as they are
    monkeypatch.setenv("REGION", "us")
    value, caught = said(cached)
    assert value == "eu"  # the stale result, which the key cannot tell from a fresh one
    assert [str(w.message) for w in caught] == [WHOLE_SAID]
    assert caught[0].filename == __file__  # (the caller's line, not dagnb's)
    assert said(cached) == ("eu", [])  # once a function and process


def test_a_name_made_at_run_time_is_warned_of_in_its_words(memory: dagnb.Memory) -> None:
    cached = memory.cache(region_by)
    assert said(lambda: cached("REGION")) == ("eu", [])
    value, caught = said(lambda: cached("REGION"))
    assert value == "eu"
    assert len(caught) == 1
    assert "its code reads variables by names made at run time (os.environ[name], " \
           "os.getenv(name))" in str(caught[0].message)


def test_a_name_written_in_the_code_is_keyed_not_warned_of(
        memory: dagnb.Memory, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = memory.cache(region_named)
    assert said(cached) == ("eu", [])
    assert said(cached) == ("eu", [])  # a hit, nothing to warn of
    monkeypatch.setenv("REGION", "us")
    assert said(cached) == ("us", [])  # a miss: the key holds the value


def test_a_shelved_hit_and_a_function_cached_again_are_warned_of(memory: dagnb.Memory) -> None:
    memory.cache(whole_region)()  # stored
    shelved, caught = said(memory.cache(whole_region).call_and_shelve)
    assert shelved.get() == "eu"
    assert [str(w.message) for w in caught] == [WHOLE_SAID]
    again = memory.cache(whole_region)  # (cached anew: warned of anew, as joblib's are)
    assert [str(w.message) for w in said(again)[1]] == [WHOLE_SAID]
