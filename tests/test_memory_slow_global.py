"""A cached function reading a global that takes long to hash (a vocabulary of 300,000
words: 0.7 s at each call, hit or miss) says so once, with joblib's way out: the cache
had become slower than the work it saved, silently (a QA session)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dagnb import Memory
from dagnb.cache import call_keys

VOCAB = {f"word{i}": i for i in range(2_000)}
STOP = ("a", "the")


def encode(doc: str) -> list[int]:
    return [VOCAB.get(word, -1) for word in doc.split()]


def short(doc: str) -> int:
    return len([w for w in doc.split() if w not in STOP])


def _said(func, *calls: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for doc in calls:
            func(doc)
    return [str(w.message) for w in caught if "to hash" in str(w.message)]


def test_a_global_slow_to_hash_is_said_once_with_the_way_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(call_keys, "SLOW_GLOBAL", 0.0)  # (every global is slow to hash)
    said = _said(Memory(tmp_path / "c").cache(encode), "word1 word2", "word3", "word1 word2")
    assert len(said) == 1
    assert said[0].startswith(
        "encode: global 'VOCAB' (a dict of 2,000 items) takes ")
    assert said[0].endswith(
        " s to hash, at each call, hit or miss: a cached function is keyed on the globals "
        "it reads, so that a change to them is seen; if this one does not change, pass it "
        "as an argument that ignore= names (joblib's way: a change to it is then not seen)")


def test_a_global_quick_to_hash_is_not_said(tmp_path: Path) -> None:
    assert call_keys.SLOW_GLOBAL == 0.05
    assert _said(Memory(tmp_path / "c").cache(short), "a b", "the c") == []
