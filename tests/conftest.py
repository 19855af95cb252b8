"""Shared fixtures: every test runs in its own folder with its own cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import dagnb

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh current directory whose cache is empty."""
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=str(tmp_path / ".dagnb_cache"))
    yield tmp_path
    dagnb.config.reload()  # drop configure()'s arguments: no test sees another's cache


@pytest.fixture
def fresh_executors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh folder, and no breaker or executor state left by another test."""
    from dagnb.executors import reset_executors
    from dagnb.retry.breaker import reset_breakers

    monkeypatch.chdir(tmp_path)
    reset_breakers()
    reset_executors()
    yield
    reset_breakers()
    reset_executors()


class Clock:
    """A clock the test moves by hand (``clock.now += 60``)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()

