"""Pytest fixtures for the Dagger stub engine.

One stub serves the whole session (starting it and connecting the SDK costs ~0.2 s);
each test gets it reset, with the environment pointing the SDK at it.

Use from tests/conftest.py::

    from dagger_stub.fixtures import dagger_stub, make_task, stub  # noqa: F401
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagnb.executors.base import Input, Task
from dagnb.model.contract import contract_env, write_params
from dagnb.model.step import Step

from .server import StubServer

__all__ = ["LogLines", "dagger_stub", "make_task", "new_task", "stub"]


@pytest.fixture(scope="session")
def dagger_stub() -> Iterator[StubServer]:
    """The session's stub engine (use ``stub`` in tests: it is reset and wired up)."""
    server = StubServer().start()
    try:
        yield server
    finally:
        _close_connection()
        server.stop()


@pytest.fixture
def stub(dagger_stub: StubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubServer]:
    """The stub, reset, with DAGGER_SESSION_PORT/TOKEN set and no other engine visible."""
    dagger_stub.reset()
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
    for key, value in dagger_stub.env().items():
        monkeypatch.setenv(key, value)
    yield dagger_stub
    dagger_stub.faults.clear()


def _close_connection() -> None:
    from dagnb.executors import loop
    from dagnb.executors.dagger import connection

    if connection._connection.client is not None:
        loop.run_sync(connection.aclose())


class LogLines:
    """A task's log sink that keeps ``(stream, line)`` pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.lines if s == stream]


def new_task(
    root: Path,
    step: Step,
    *,
    inputs: dict[str, Input] | None = None,
    secrets: dict[str, str] | None = None,
    base_dir: Path | None = None,
    attempt: int = 1,
) -> Task:
    """A Task as the runner would build it, with its folders under ``root``."""
    work = root / f"{step.name}-{attempt}"
    out_dir, in_dir, params = work / "out", work / "in", work / "params.json"
    out_dir.mkdir(parents=True)
    in_dir.mkdir()
    write_params(step, params)
    env = contract_env(step, out_dir=out_dir, in_dir=in_dir, params_file=params,
                       run_id="test-run", attempt=attempt)
    return Task(step=step, attempt=attempt, out_dir=out_dir, in_dir=in_dir,
                params_file=params, inputs=inputs or {}, env=env, secrets=secrets or {},
                base_dir=base_dir or root, log=LogLines())


@pytest.fixture
def make_task(tmp_path: Path) -> Any:
    """``make_task(step, inputs=..., secrets=..., base_dir=...)`` -> Task under tmp_path."""

    def make(step: Step, **options: Any) -> Task:
        return new_task(tmp_path / "tasks", step, **options)

    return make


def stub_env() -> dict[str, str]:
    """The current session variables (for subprocess-based tests)."""
    return {k: os.environ[k] for k in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN")}
