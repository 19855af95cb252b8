"""``plan`` and ``explain`` on a store URL read the cache and write nothing: with an empty
local tier they read each entry's manifest and ``meta.json``, never its outputs (they
downloaded whole entries, a 200 MB model, into the tier). A real S3 server (moto)
through s3fs, as in test_remote_cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_remote_cache as shared

import dagnb
from dagnb.cache.remote import RemoteCacheWarning
from dagnb.cache.store import GlancedEntry
from dagnb.runtime.plan import plan_rows

s3fs = pytest.importorskip("s3fs")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket

SIZE = 3_000_000  # bytes of the big step's output: what a plan must not download
BIG = f'head -c {SIZE} /dev/urandom > "$DAGNB_OUT/model.bin"'
REPORT = 'wc -c < "$DAGNB_IN/big/model.bin" > "$DAGNB_OUT/size.txt"'
WORKFLOW = f"""\
name: glance
steps:
  big:
    run: '{BIG}'
  report:
    needs: [big]
    run: '{REPORT}'
"""


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each test stands for a new process: s3fs' clients and listings not kept."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def _graph(ttl: str | None = None) -> dagnb.Graph:
    return dagnb.Graph("glance", [dagnb.Step("big", run=BIG, ttl=ttl),
                                  dagnb.Step("report", run=REPORT, needs=["big"])])


def _published(url: str, tier: Path) -> None:
    """Team A runs the workflow with ``tier``: both entries go to the store."""
    dagnb.configure(cache_local_directory=str(tier))
    run = _graph().run(executor="local", cache_directory=url)
    assert run.states() == {"big": "succeeded", "report": "succeeded"}


def tier_bytes(tier: Path) -> int:
    """The bytes of every file the tier holds (none: 0)."""
    return sum(path.stat().st_size for path in tier.rglob("*") if path.is_file())


def out_files(tier: Path) -> list[str]:
    """The entries' output files in the tier (under ``<step>/<key>/out/``)."""
    return sorted(str(path.relative_to(tier)) for path in tier.glob("*/*/out/**/*")
                  if path.is_file())


def test_a_plan_and_explain_on_an_empty_tier_download_no_outputs_and_a_run_does(
        url: str, tmp_path: Path) -> None:
    _published(url, tmp_path / "a")
    tier = tmp_path / "b"
    dagnb.configure(cache_local_directory=str(tier))
    graph = _graph()
    frame = graph.plan(cache_directory=url)
    # report's key is made from big's output digest, read from big's meta.json alone
    assert frame[["step", "cached", "reason"]].values.tolist() == [
        ["big", True, "cached"], ["report", True, "cached"]]
    assert graph.explain("report", cache_directory=url) == ["entry found: it is cached"]
    assert graph.explain("big", cache_directory=url) == ["entry found: it is cached"]
    assert out_files(tier) == []
    assert tier_bytes(tier) < 10_000  # (it took every entry whole: over SIZE)
    run = graph.run(executor="local", cache_directory=url, cache_mode="fail-on-miss")
    assert run.states() == {"big": "cached", "report": "cached"}
    (model,) = tier.glob("big/*/out/model.bin")  # served: downloaded now
    assert model.stat().st_size == SIZE


def test_dagnb_plan_and_explain_on_a_store_write_nothing_into_the_tier(
        url: str, tmp_path: Path) -> None:
    _published(url, tmp_path / "a")
    (tmp_path / "wf.yml").write_text(WORKFLOW)
    for command in (["plan", "wf.yml"], ["explain", "wf.yml", "report"]):
        tier = tmp_path / command[0]  # (each on its own empty tier)
        env = {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(tier), "DAGNB_CONFIG": "none"}
        done = subprocess.run(
            [sys.executable, "-m", "dagnb.cli", *command, "--cache-dir", url, "--executor",
             "local"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "cached" in done.stdout and "will run" not in done.stdout, done.stdout
        assert out_files(tier) == [], command
        assert tier_bytes(tier) < 10_000, command


def test_a_plan_from_the_store_answers_as_one_from_a_full_tier(
        url: str, tmp_path: Path) -> None:
    """Cached, and expired by the step's ttl now (its early cut-off gone with it)."""
    _published(url, tmp_path / "a")
    for graph in (_graph(), _graph(ttl="1ms")):
        full = plan_rows(graph, cache_directory=url)  # tier a holds every entry
        dagnb.configure(cache_local_directory=str(tmp_path / "b"))
        glanced = plan_rows(graph, cache_directory=url)
        dagnb.configure(cache_local_directory=str(tmp_path / "a"))
        assert glanced == full
    assert [row["reason"] for row in full] == [
        "its cache entry has expired", "may run: runs if big's result changes (big will run)"]
    assert out_files(tmp_path / "b") == []


def test_a_store_entry_missing_an_output_blob_is_planned_to_run_unfetched(
        url: str, tmp_path: Path) -> None:
    """Its other blobs are seen by size: one gone, a run would miss, and so says plan."""
    _published(url, tmp_path / "a")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    (big,) = [path for path in fs.find(f"{root}/blobs") if fs.info(path)["size"] == SIZE]
    fs.rm(big)
    tier = tmp_path / "b"
    dagnb.configure(cache_local_directory=str(tier))
    rows = plan_rows(_graph(), cache_directory=url)
    assert [(row["step"], row["cached"]) for row in rows] == [("big", False),
                                                                ("report", False)]
    assert tier_bytes(tier) == 0


def test_a_glance_reads_the_metadata_alone_and_refuses_a_meta_json_changed_in_the_store(
        url: str, tmp_path: Path) -> None:
    writer = shared.store(url, tmp_path / "a")
    shared.save(writer, "make", "k1", {"model.bin": b"x" * SIZE})
    shared.save(writer, "make", "k2", {"model.bin": b"y" * SIZE})
    reader = shared.store(url, tmp_path / "b")
    seen = reader.peek("make", "k1", metadata_only=True)
    assert isinstance(seen, GlancedEntry)
    assert seen.output_digest == writer.peek("make", "k1").output_digest  # type: ignore[union-attr]
    assert tier_bytes(tmp_path / "b") == 0
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    manifest = json.loads(fs.cat_file(f"{root}/entries/make/k2.json"))
    blob = f"{root}/blobs/{manifest['files']['meta.json'][0]}"
    meta = bytearray(fs.cat_file(blob))
    meta[-2] ^= 0x01  # (same size: seen only by its content)
    fs.pipe_file(blob, bytes(meta))
    with pytest.warns(RemoteCacheWarning, match=r"make/k2 has a file whose content does not"):
        assert reader.peek("make", "k2", metadata_only=True) is None  # as a download finds it
    assert reader.lookup("make", "k2") is None  # (not asked for again, nor said again)
    assert tier_bytes(tmp_path / "b") == 0


def test_fail_on_miss_looks_at_the_store_whole_before_anything_runs(
        url: str, tmp_path: Path) -> None:
    """A blob changed in the store at the same size passes a glance: fail-on-miss, which
    looked through it, let the run start, and `big` failed mid-run; it refuses up front."""
    _published(url, tmp_path / "a")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    (big,) = [path for path in fs.find(f"{root}/blobs") if fs.info(path)["size"] == SIZE]
    fs.pipe(big, b"z" * SIZE)  # (damaged in place: the same size)
    dagnb.configure(cache_local_directory=str(tmp_path / "b"))
    with pytest.raises(dagnb.errors.CacheMissError, match="1 step would run, 1 may run"):
        _graph().run(executor="local", cache_directory=url, cache_mode="fail-on-miss")


def test_plans_again_within_a_while_ask_the_store_once(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three plans from an empty tier read every manifest three times (a notebook plans
    at each cell)."""
    from dagnb.cache.remote import ObjectStore

    _published(url, tmp_path / "a")
    asked = []
    real = ObjectStore.glance

    def counted(self: ObjectStore, step: str, key: str) -> object:
        asked.append(step)
        return real(self, step, key)

    monkeypatch.setattr(ObjectStore, "glance", counted)
    dagnb.configure(cache_local_directory=str(tmp_path / "b"))
    graph = _graph()
    for _ in range(3):
        assert graph.plan(cache_directory=url)["cached"].tolist() == [True, True]
    assert sorted(asked) == ["big", "report"]
