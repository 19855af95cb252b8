"""Host variables and globals that hold a credential without a credential's usual
name (``DB_PASS``, ``GH_PAT``, a URL with its password) were shown in clear by
``plan``/``explain`` and written into the cache entry's metadata (QA: a YAML workflow
author; ``host_var:DB_PASS":"Hunter22`` in the pack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cache import step_key
from dagnb.cli import main
from dagnb.model.step import Step

PASSWORD = "Hunter22xq"
URL = f"postgres://etl:{PASSWORD}@db/prod"


def _key(step: Step) -> object:
    return step_key(step, upstream_digests={}, base_dir=Path("."))


@pytest.mark.parametrize("name", ["DB_PASS", "GH_PAT", "SENTRY_DSN", "SIGNING_KEY", "BASIC_AUTH"])
def test_a_host_variable_named_as_a_credential_is_not_shown(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, PASSWORD)
    key = _key(Step("s", run=f'echo "${name}"'))
    assert key.describe[f"host_var:{name}"] == "<not shown>", key.describe


@pytest.mark.parametrize("name", ["COMPASS", "PATH_PREFIX", "KEYBOARD", "PWD_HINT"])
def test_a_variable_merely_spelled_like_one_is_shown(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "plain-value")
    assert _key(Step("s", run=f'echo "${name}"')).describe[f"host_var:{name}"] == "plain-value"


def test_a_host_variable_holding_a_url_with_its_password_is_not_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    key = _key(Step("s", run='echo "$DATABASE_URL"'))
    assert key.describe["host_var:DATABASE_URL"] == "<not shown>"


def test_explain_and_the_entry_never_hold_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "steps.py").write_text(
        "import os\nCONN = os.environ['DATABASE_URL']\n\ndef load():\n    return len(CONN)\n")
    (tmp_path / "wf.yml").write_text(
        "steps:\n"
        "  shell: {run: 'echo \"${#DATABASE_URL} ${#DB_PASS}\"'}\n"
        "  py: {python: 'steps.py:load'}\n")
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("DB_PASS", PASSWORD)
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    monkeypatch.setenv("DATABASE_URL", URL.replace(PASSWORD, "Zebra999xq"))
    monkeypatch.setenv("DB_PASS", "Zebra999xq")
    capsys.readouterr()
    for step in ("shell", "py"):
        assert main(["explain", "wf.yml", step, "--executor", "local"]) == 0
    said = capsys.readouterr()
    assert "changed" in said.out, said.out  # (it says what changed, not the values)
    assert PASSWORD not in said.out + said.err and "Zebra999" not in said.out + said.err
    stored = b"".join(path.read_bytes() for path in (tmp_path / ".dagnb_cache").rglob("*")
                      if path.is_file())
    assert PASSWORD.encode() not in stored
