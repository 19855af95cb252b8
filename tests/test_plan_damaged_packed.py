"""``dagnb plan`` and ``dagnb explain`` of a step whose entry is damaged where a folder's
check would not see it: a small entry kept as a pack record whose bytes changed on disk
(its record fails its check), and a store URL's entry whose ``meta.json`` changed in the
store. Each is named damaged, in the words of a damaged folder entry, as the run treats
it (it runs the step again); never "no entry yet" (QA: a damaged record read as none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_files import workflow_in

from dagnb.cli import main as main_here
from dagnb.testing import isolated

# (what the run and the plan say of the damage besides: as before)
pytestmark = [pytest.mark.filterwarnings("ignore:cache pack .* is damaged"),
              pytest.mark.filterwarnings("ignore:remote cache .* does not match its digest")]

WORKFLOW = """\
steps:
  a:
    params: {n: 1}
    run: 'echo hi'
"""


@pytest.fixture
def workflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return workflow_in(tmp_path, monkeypatch, WORKFLOW)


def main(args: list[str]) -> int:
    """``dagnb ARGS`` as a process of its own would see the cache (its pack index is read
    anew: this process's own would serve the record it read before the damage)."""
    with isolated():
        return main_here(args)


def _states(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    """``dagnb run ARGS``: each step's state."""
    assert main(["run", *args]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    return {row[0]: row[1] for row in rows if row[:1] == ["a"]}


def _reason(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``dagnb plan ARGS``: the reason of step a's row."""
    assert main(["plan", *args]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.split()[:1] == ["a"])
    return row.split(None, 3)[3]


def _explained(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["explain", *args]) == 0
    return capsys.readouterr().out


def _damage_record(cache: Path) -> None:
    """Change one byte of the body of a's record, in the one pack there is (its frame
    intact: the pack is walked as before, the record fails its digest)."""
    assert not (cache / "a").exists()  # (a's entry is a pack record, not a folder)
    (pack,) = (cache / ".packs").glob("*.pack")
    data = bytearray(pack.read_bytes())
    at = data.index(b'"created":') + len(b'"created":') + 1  # a digit of its time
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    pack.write_bytes(bytes(data))


def test_a_damaged_pack_record_is_named_damaged_and_runs_again(workflow, capsys, tmp_path):
    assert _states(capsys, *workflow) == {"a": "succeeded"}
    _damage_record(tmp_path / "cache")
    reason = _reason(capsys, *workflow)
    assert "no entry yet" not in reason
    assert reason.startswith("cache entry a/") and " is damaged (its record in pack " in reason
    assert "fails its check" in reason and reason.endswith("it will run again")
    assert _explained(capsys, workflow[0], "a", *workflow[1:]).splitlines() == [reason]
    assert main(["run", *workflow, "--cache-mode", "fail-on-miss"]) == 2
    (why,) = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("  a: ")]  # (the refusal's line for the step)
    assert "is damaged" in why
    assert _states(capsys, *workflow) == {"a": "succeeded"}  # run again, not restored
    assert _reason(capsys, *workflow) == "cached"


def test_a_store_entry_whose_metadata_changed_there_is_named_damaged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    store = tmp_path / "store"
    options = ["wf.yml", "--executor", "local", "--cache-dir", store.as_uri()]
    monkeypatch.setenv("DAGNB_CACHE_LOCAL_DIRECTORY", str(tmp_path / "alice"))
    assert _states(capsys, *options) == {"a": "succeeded"}
    (manifest,) = (store / "entries" / "a").glob("*.json")
    digest, _size = json.loads(manifest.read_text())["files"]["meta.json"]
    blob = store / "blobs" / digest
    changed = blob.read_bytes().replace(b'"created":', b'"CREATED":')  # (its size kept)
    assert changed != blob.read_bytes()
    blob.write_bytes(changed)
    monkeypatch.setenv("DAGNB_CACHE_LOCAL_DIRECTORY", str(tmp_path / "bob"))  # a new tier
    reason = _reason(capsys, *options)
    assert "no entry yet" not in reason
    assert reason.startswith("cache entry a/") and reason.endswith(
        " is damaged (a file of the store's copy does not match its digest): it will run again")
    assert _states(capsys, *options) == {"a": "succeeded"}
