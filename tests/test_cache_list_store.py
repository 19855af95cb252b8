"""``dagnb cache list --cache-dir URL`` and ``stats``: a store's entries, from its listing.
Both were refused ("works on a cache folder, not a store URL; pull it and list that"):
seeing what a team's shared store holds meant downloading all of it. On moto's S3 server
(through s3fs) and on a store in a folder (``file://``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import test_remote_cache as shared

from dagnb.cache import Store
from dagnb.cli import main

pytest.importorskip("s3fs")

server, url, any_url = shared.server, shared.url, shared.any_url  # (the fixtures)


def _listed(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[list[str]], str]:
    code = main(["cache", "list", *argv])
    out, err = capsys.readouterr()
    return code, [line.split() for line in out.splitlines()], err


def test_a_store_s_entries_are_listed_by_step_without_a_download(
        any_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = Store(tmp_path / "a")
    shared.save(local, "make", "k1", {"data.txt": b"one"})
    shared.save(local, "make", "k2", {"data.txt": b"two"})
    shared.save(local, "fit", "k3", {"model.bin": b"m"})
    assert main(["cache", "push", any_url, "--cache-dir", str(tmp_path / "a")]) == 0
    capsys.readouterr()

    code, rows, err = _listed(capsys, "--cache-dir", any_url)
    assert code == 0
    assert rows[0] == ["step", "key", "stored"]
    assert [row[:2] for row in rows[1:]] == [["fit", "k3"], ["make", "k1"], ["make", "k2"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", row[2]) for row in rows[1:])
    assert err == f"3 cache entries in {any_url} (dagnb cache pull {any_url} copies them here)\n"
    assert not (tmp_path / ".dagnb_cache").exists()  # (nothing pulled, no folder made)

    code, rows, _ = _listed(capsys, "--cache-dir", any_url, "--step", "make")
    assert [row[:2] for row in rows[1:]] == [["make", "k1"], ["make", "k2"]]
    code, rows, _ = _listed(capsys, "--cache-dir", any_url, "--step", "nope")
    assert (code, rows) == (0, [["no", "entries", "of", "step", "'nope'", "in", any_url]])


def test_a_store_that_is_not_there_is_refused_in_one_line(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = url.replace("dagnb-", "dagnb-missing-")
    assert main(["cache", "list", "--cache-dir", missing]) == 2
    err = capsys.readouterr().err
    bucket = missing.split("/")[2]
    assert err == (f"dagnb: error: cache list {missing}: there is no bucket {bucket!r}; check "
                   "the URL: name the store dagnb cache push wrote to\n")


def test_a_store_s_stats_count_its_entries_by_step(
        any_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = Store(tmp_path / "a")
    for key in ("k1", "k2"):
        shared.save(local, "make", key, {"data.txt": key.encode()})
    shared.save(local, "fit", "k3", {"model.bin": b"m"})
    assert main(["cache", "push", any_url, "--cache-dir", str(tmp_path / "a")]) == 0
    capsys.readouterr()

    assert main(["cache", "stats", "--cache-dir", any_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["step", "entries"], ["fit", "1"], ["make", "2"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", line.split()[2]) for line in lines[1:3])
    assert lines[3] == (f"3 cache entries in {any_url} (sizes and hits: dagnb cache pull "
                        f"{any_url}, then dagnb cache stats)")
    assert main(["cache", "stats", "--cache-dir", any_url, "--step", "fit"]) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()[:2]] == [
        ["step", "entries"], ["fit", "1"]]
    assert not (tmp_path / ".dagnb_cache").exists()
