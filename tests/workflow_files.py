"""A workflow file in the test's working folder, for tests that run ``dagnb`` on it."""

from __future__ import annotations

from pathlib import Path

import pytest


def workflow_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    """``wf.yml`` holding ``text`` in the working folder (``tmp_path``), and the options of
    a local run of it on a cache of its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(text)
    return ["wf.yml", "--executor", "local", "--cache-dir", str(tmp_path / "cache")]
