"""A store entry whose manifest a newer dagnb wrote: a miss said as such, and kept.

It read as unreadable: a pull counted it "not usable (a file missing or damaged in the
store)" with a fix that mends nothing, a plan said "no entry yet", and the run's save
overwrote the newer writer's manifest with an older one, silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagnb.cache.remote import RemoteCacheWarning
from dagnb.cli import main

WORKFLOW = """\
name: newer
steps:
  a:
    run: echo hello > "$DAGNB_OUT/x.txt"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGNB_CACHE_LOCAL_DIRECTORY", str(tmp_path / "tier"))
    return tmp_path


def _url(project: Path) -> str:
    return (project / "store").as_uri()


def _manifest(project: Path) -> Path:
    (path,) = (project / "store" / "entries" / "a").iterdir()
    return path


def _written_by_newer(project: Path) -> bytes:
    """The store's entry of ``a`` as a newer dagnb would write it; its bytes."""
    assert main(["run", "wf.yml", "--cache-dir", _url(project), "--executor", "local"]) == 0
    path = _manifest(project)
    manifest = json.loads(path.read_text())
    manifest.update({"format": 3, "sparse": {}})
    path.write_text(json.dumps(manifest))
    assert main(["cache", "clear", "--all", "--cache-dir", str(project / "tier")]) == 0
    return path.read_bytes()


SAID = "was written by a newer dagnb (manifest format 3; this one reads formats 1 and 2)"


@pytest.mark.parametrize("refresh", [False, True], ids=["run", "refresh"])
def test_a_run_says_it_once_and_keeps_the_newer_entry(
        project: Path, capsys: pytest.CaptureFixture[str], refresh: bool) -> None:
    newer = _written_by_newer(project)
    extra = ["--refresh"] if refresh else []  # (said by its save: it does not look)
    with pytest.warns(RemoteCacheWarning) as said:
        assert main(["run", "wf.yml", "--cache-dir", _url(project), "--executor", "local",
                     *extra]) == 0
    assert "1 succeeded" in capsys.readouterr().out
    assert [str(w.message).count(SAID) for w in said] == [1]
    assert _manifest(project).read_bytes() == newer  # (overwritten with format 1)


def test_a_pull_counts_it_apart_from_damaged_ones(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _written_by_newer(project)
    capsys.readouterr()
    assert main(["cache", "pull", _url(project), "--cache-dir", str(project / "tier")]) == 0
    out, err = capsys.readouterr()
    assert f"1 {SAID.replace('was written', 'written')}: left as it is; upgrade dagnb" in out
    assert "not usable" not in out + err


def test_a_plan_gives_it_as_the_reason(project: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _written_by_newer(project)
    capsys.readouterr()
    with pytest.warns(RemoteCacheWarning, match="newer dagnb"):
        main(["plan", "wf.yml", "--cache-dir", _url(project)])
    out = capsys.readouterr().out
    assert SAID in out and "upgrade dagnb to use it" in out, out
    assert "no entry yet" not in out
