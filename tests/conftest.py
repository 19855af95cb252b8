"""Shared fixtures: every test runs in a fresh dagnb context; ``workdir`` adds a folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb.config import Context
from dagnb.testing import Clock, isolated

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_context() -> Iterator[Context]:
    """A fresh process context (settings, executors, breakers, session...) per test."""
    with isolated() as context:
        yield context


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory whose cache is empty."""
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=str(tmp_path / ".dagnb_cache"))
    return tmp_path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (a repository root: the config search stops there), the
    current directory, with no DAGNB_* variables set."""
    for name in list(os.environ):
        if name.startswith("DAGNB_"):
            monkeypatch.delenv(name)
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def shell(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """IPython's shell with the magics loaded, an empty graph, plain-text views and the
    local executor, in a fresh folder (the shell is a process-wide singleton: names a
    test leaves behind are cleared)."""
    from IPython.core.interactiveshell import InteractiveShell

    import dagnb.notebook.widgets

    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", False)
    dagnb.configure(executor="local")  # in the test's own context
    ip = InteractiveShell.instance()
    for name in ("_dagger", "__session__", "v", "x", "y", "total", "count"):
        ip.user_ns.pop(name, None)
    ip.run_line_magic("load_ext", "dagnb.notebook.magics")
    ip.run_line_magic("dagger", "reset")
    yield ip
    ip.user_ns.pop("__session__", None)


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand (``clock.now += 60``)."""
    return Clock()
