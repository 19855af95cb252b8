"""A cached function reading a global dict or set that another thread changes meanwhile
(a registry, a memo the function fills) is keyed on a snapshot of it: the call does not
fail with "dictionary changed size during iteration", as joblib's would not."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb import Memory

REGISTRY = {f"k{i}": i for i in range(5_000)}
TAGS = {f"t{i}" for i in range(5_000)}


def lookup(name: str) -> int:
    return REGISTRY.get(name, -1) + len(TAGS)


@pytest.fixture
def changing() -> Iterator[None]:
    """Another thread adding and removing items of both globals until the test ends."""
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            REGISTRY[f"new{n % 50}"] = n
            REGISTRY.pop(f"new{(n + 25) % 50}", None)
            TAGS.add(f"new{n % 50}")
            TAGS.discard(f"new{(n + 25) % 50}")

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_globals_changed_by_another_thread_as_they_are_read_fail_no_call(
        tmp_path: Path, changing: None) -> None:
    cached = Memory(tmp_path / "cache").cache(lookup)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the globals change: each call may say so)
        results = [cached(f"k{i}") for i in range(10)]
    # every call answered (none raised), with a registry value and a tag count of then
    assert all(5_000 + i <= result <= 5_050 + i for i, result in enumerate(results))
