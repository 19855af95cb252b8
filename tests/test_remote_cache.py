"""A cache on object storage: moto's S3 server on 127.0.0.1, reached through real s3fs.

The server runs in this process (``ThreadedMotoServer``): stopping it cuts every upload
off, and starting it again on the same port finds what it stored (moto keeps its state in
the process), so a reader can then look at what an interrupted upload left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import dagnb
import dagnb.cache.remote as remote_module
from dagnb.cache import Store
from dagnb.cache.entry import Entry
from dagnb.cache.remote import (
    ObjectStore,
    RemoteBackend,
    RemoteCacheWarning,
    Transfer,
    file_digest,
)
from dagnb.cache.store import DamagedEntryWarning
from dagnb.cli import main
from dagnb.errors import CacheError, ConfigError
from dagnb.testing import isolated, wait_until

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

REPO = Path(__file__).resolve().parents[1]


class S3Server:
    """moto's S3 server on a fixed port of 127.0.0.1, which can be stopped and started."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0,
                                                      verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        self._server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                                      verbose=False)
        self._server.start()


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    running = S3Server()
    yield running
    running.stop()


@pytest.fixture
def url(server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket; dummy credentials and the endpoint in the environment (where
    botocore reads them), so that subprocesses reach the same server."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_MAX_ATTEMPTS": "1",  # a stopped server fails an upload at once
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"dagnb-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/cache"


def listing(url: str) -> list[str]:
    """Every object under the store, relative to it (a fresh client: no listing cache)."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    return sorted(path[len(root) + 1:] for path in fs.find(root))


def store(url: str, local: Path) -> Store:
    return Store(url, backend=RemoteBackend(url, local=local))


def save(target: Store, step: str, key: str, files: dict[str, bytes]) -> None:
    out = target.scratch_dir(step)
    for name, data in files.items():
        (out / name).write_bytes(data)
    target.save(step, key, out_dir=out)


# -- one store, two processes -------------------------------------------------------------
WORKFLOW = """\
name: shared
steps:
  make:
    run: |
      echo make >> {counter}
      echo same > "$DAGNB_OUT/data.txt"
  copy:
    run: |
      echo copy >> {counter}
      echo same > "$DAGNB_OUT/data.txt"
  report:
    needs: [make, copy]
    run: |
      echo report >> {counter}
      cat "$DAGNB_IN/make/data.txt" "$DAGNB_IN/copy/data.txt" > "$DAGNB_OUT/report.txt"
"""


def run_workflow(folder: Path, local: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / local),
           "DAGNB_CONFIG": str(folder / "dagnb.yaml")}
    return subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "run", "wf.yml", "--executor", "local", *options],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_second_process_with_its_own_local_folder_runs_every_step_cached(
    url: str, tmp_path: Path
) -> None:
    counter = tmp_path / "executions.txt"
    (tmp_path / "wf.yml").write_text(WORKFLOW.format(counter=counter))
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {url}\n")
    first = run_workflow(tmp_path, "local-a")
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(counter.read_text().split()) == ["copy", "make", "report"]
    second = run_workflow(tmp_path, "local-b")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "3 cached" in second.stdout, second.stdout
    assert sorted(counter.read_text().split()) == ["copy", "make", "report"]  # none ran again
    assert (tmp_path / "local-b" / "report").is_dir()  # downloaded into the local tier
    objects = listing(url)
    manifests = [json.loads(fs_cat(url, o)) for o in objects if o.startswith("entries/")]
    assert len(manifests) == 3
    # make's and copy's identical data.txt are one blob that both manifests name
    data = file_digest(next((tmp_path / "local-a" / "make").iterdir()) / "out" / "data.txt")
    naming = [m["step"] for m in manifests if [data, 5] in m["files"].values()]
    assert sorted(naming) == ["copy", "make"]
    blobs = {o.removeprefix("blobs/") for o in objects if o.startswith("blobs/")}
    stored = {d for m in manifests for d, size in m["files"].values() if size}
    assert blobs == stored  # one object per distinct content
    assert len(blobs) < sum(1 for m in manifests for _, size in m["files"].values() if size)


def fs_cat(url: str, relative: str) -> bytes:
    root = url.removeprefix("s3://")
    return s3fs.S3FileSystem(skip_instance_cache=True).cat_file(f"{root}/{relative}")


MEMORY_SCRIPT = """\
import sys
import dagnb

memory = dagnb.Memory(location=sys.argv[1])

@memory.cache
def slow_square(x):
    with open(sys.argv[2], "a") as counter:
        counter.write("ran\\n")
    return x * x

print(slow_square(12))
"""


def test_memory_on_a_store_url_hits_across_processes(url: str, tmp_path: Path) -> None:
    script, counter = tmp_path / "square.py", tmp_path / "calls.txt"
    script.write_text(MEMORY_SCRIPT)
    for folder in ("first", "second"):  # each its own .dagnb_cache local tier
        (tmp_path / folder).mkdir()
        done = subprocess.run([sys.executable, str(script), url, str(counter)],
                              cwd=tmp_path / folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "144"
    assert counter.read_text().split() == ["ran"]
    assert any(o.startswith("entries/") for o in listing(url))


def test_a_memory_on_a_store_url_shows_the_url(url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Not its local tier's folder, which is no place a teammate's Memory finds."""
    monkeypatch.chdir(tmp_path)
    assert repr(dagnb.Memory(url)) == f"Memory(location={url!r})"
    assert repr(dagnb.Memory(tmp_path / "here")) == f"Memory(location={str(tmp_path / 'here')!r})"


FORKED_SCRIPT = """\
import multiprocessing
import sys
import dagnb

memory = dagnb.Memory(location=sys.argv[1])

@memory.cache
def square(x):
    return x * x

if __name__ == "__main__":
    print(square(1))  # the parent's client of the store exists before the fork
    with multiprocessing.get_context("fork").Pool(2) as pool:
        print(pool.map(square, [2, 3]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_memory_calls_in_forked_workers_reach_the_store(url: str, tmp_path: Path) -> None:
    """s3fs' client refuses to work in a forked child: each worker makes its own."""
    script = tmp_path / "pool.py"
    script.write_text(FORKED_SCRIPT)
    done = subprocess.run([sys.executable, str(script), url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1", "[4, 9]"]
    assert "RemoteCacheWarning" not in done.stderr, done.stderr
    assert len([o for o in listing(url) if o.startswith("entries/")]) == 3

# -- the layout ---------------------------------------------------------------------------
class Recording:
    """The real filesystem, with the order of its writes written down (in ``writes``,
    which two of them may share: a store's client and its client for blobs)."""

    def __init__(self, fs: Any, writes: list[str] | None = None) -> None:
        self.fs, self.writes = fs, [] if writes is None else writes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)

    def put_file(self, local: str, remote: str, **options: Any) -> Any:
        self.writes.append(remote)
        return self.fs.put_file(local, remote, **options)

    def pipe_file(self, path: str, data: bytes, **options: Any) -> Any:
        self.writes.append(path)
        return self.fs.pipe_file(path, data, **options)


def test_the_manifest_is_written_after_every_blob_it_names(url: str, tmp_path: Path) -> None:
    writer = store(url, tmp_path / "a")
    remote = writer.backend.remote
    remote.fs = Recording(remote.fs)
    remote.transfers = Recording(remote.transfers, remote.fs.writes)
    save(writer, "step", "k1", {"a.bin": os.urandom(1000), "b.bin": os.urandom(2000)})
    writes = remote.fs.writes
    assert writes[-1].endswith("entries/step/k1.json")
    assert all("/blobs/" in w for w in writes[:-1])
    assert len(writes) == 4  # meta.json, a.bin, b.bin (the empty logs need no blob), manifest
    manifest = json.loads(fs_cat(url, "entries/step/k1.json"))
    objects = listing(url)
    assert {f"blobs/{d}" for d, size in manifest["files"].values() if size} <= set(objects)


def test_readers_trust_no_entry_with_a_missing_or_short_blob(url: str, tmp_path: Path) -> None:
    writer = store(url, tmp_path / "a")
    save(writer, "step", "k1", {"x.bin": b"x" * 500})
    save(writer, "step", "k2", {"y.bin": b"y" * 700})
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    first = json.loads(fs_cat(url, "entries/step/k1.json"))["files"]["out/x.bin"][0]
    fs.rm(f"{root}/blobs/{first}")
    second = json.loads(fs_cat(url, "entries/step/k2.json"))["files"]["out/y.bin"][0]
    fs.pipe_file(f"{root}/blobs/{second}", b"y" * 699)
    reader = store(url, tmp_path / "b")
    assert reader.lookup("step", "k1") is None
    with pytest.warns(RemoteCacheWarning, match="does not match its digest"):
        assert reader.lookup("step", "k2") is None
    assert reader.backend.names() == []  # nothing half-downloaded left in the local tier


def _tree_with_links(out: Path) -> None:
    (out / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(out / "run.sh", 0o755)
    (out / "notes.txt").write_text("plain")
    (out / "real").mkdir()
    (out / "real" / "f.txt").write_text("data")
    os.symlink("real", out / "folder")
    os.symlink("real/f.txt", out / "file")


def test_links_and_executable_files_come_back_as_they_were_saved(
        url: str, tmp_path: Path) -> None:
    # A link to a folder came back an empty folder, a 0755 script 0644: a hit of
    # another tree under the same key.
    writer = store(url, tmp_path / "a")
    out = writer.scratch_dir("step")
    _tree_with_links(out)
    writer.save("step", "k", out_dir=out)
    entry = store(url, tmp_path / "b").lookup("step", "k")
    assert entry is not None
    got = entry.out_dir
    assert os.access(got / "run.sh", os.X_OK) and not os.access(got / "notes.txt", os.X_OK)
    assert os.readlink(got / "folder") == "real" and os.readlink(got / "file") == "real/f.txt"
    assert (got / "folder" / "f.txt").read_text() == "data"
    assert entry.verify()
    manifest = json.loads(fs_cat(url, "entries/step/k.json"))
    assert manifest["format"] == 2 and "out/folder" not in manifest["dirs"]


def test_a_pipe_a_link_leads_out_to_is_left_out_of_the_upload_not_waited_on(
        url: str, tmp_path: Path) -> None:
    """Its digest was read from it: the run's upload (and a push) waited forever."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("data")
    os.mkfifo(outside / "pipe")
    writer = store(url, tmp_path / "a")
    out = writer.scratch_dir("step")
    (out / "o").symlink_to(outside)
    caught: list[warnings.WarningMessage] = []

    def save() -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            writer.save("step", "k", out_dir=out)
        caught.extend(seen)

    saving = threading.Thread(target=save, daemon=True)
    saving.start()
    saving.join(20)
    if saving.is_alive():  # (let the reader go: open the pipe's other end)
        os.close(os.open(outside / "pipe", os.O_WRONLY | os.O_NONBLOCK))
    assert not saving.is_alive(), "the upload waited on the pipe"
    assert [str(w.message) for w in caught] == [
        "entry step/k: 'out/o/pipe' is not a file (a pipe, socket or device, reached "
        "through a link out of the entry): left out of the store's copy of the entry"]
    entry = store(url, tmp_path / "b").lookup("step", "k")
    assert entry is not None and sorted(p.name for p in (entry.out_dir / "o").iterdir()) == [
        "f.txt"]


def test_a_manifest_without_links_or_modes_is_format_1_and_reads(
        url: str, tmp_path: Path) -> None:
    # What every writer before format 2 wrote, and readers before it still read.
    save(store(url, tmp_path / "a"), "step", "k", {"a.txt": b"a"})
    manifest = json.loads(fs_cat(url, "entries/step/k.json"))
    assert manifest["format"] == 1 and not {"links", "executable"} & set(manifest)
    entry = store(url, tmp_path / "b").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "a.txt").read_text() == "a"


@pytest.mark.parametrize("change", [
    {"files": {"out/folder/evil.txt": ["0" * 32, 0]}},  # a file written through a link
    {"links": {"out/real": "/tmp"}},  # a link where a folder is
    {"links": {"../up": "/tmp"}},
    {"executable": ["out/absent.sh"]},
    {"links": {"out/secret": "/etc/hostname"}},  # a reader's own file, served as a hit
    {"links": {"out/home": "../../../../../../../../root"}},
])
def test_a_manifest_that_would_write_through_a_link_is_not_trusted(
        url: str, tmp_path: Path, change: dict[str, Any]) -> None:
    writer = store(url, tmp_path / "a")
    out = writer.scratch_dir("step")
    _tree_with_links(out)
    writer.save("step", "k", out_dir=out)
    manifest = json.loads(fs_cat(url, "entries/step/k.json"))
    for name, value in change.items():
        manifest[name] = {**manifest[name], **value} if name != "executable" else value
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{url.removeprefix('s3://')}/entries/step/k.json", json.dumps(manifest).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RemoteCacheWarning)  # refused, not failed on
        assert store(url, tmp_path / "b").lookup("step", "k") is None


@pytest.mark.parametrize("extra", [
    {"files": {"out/v.txt/inner": "v"}},  # a file beneath a file
    {"files": {"out/sub": "v"}, "dirs": ["out/sub"]},  # a file where a folder is
    {"files": {".": "v"}},  # a file at the entry's own folder
])
def test_a_manifest_whose_files_are_in_each_others_way_is_a_miss_not_a_store_failure(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        extra: dict[str, Any]) -> None:
    """Its download failed on the reader's disk, which read as a store that cannot be
    reached: warned so, every entry a miss and every save kept local for a minute; and
    a pull stopped there, exit 2."""
    writer = store(url, tmp_path / "a")
    save(writer, "step", "good", {"v.txt": b"good"})
    save(writer, "step", "bad", {"v.txt": b"bad"})
    manifest = json.loads(fs_cat(url, "entries/step/bad.json"))
    blob = manifest["files"]["out/v.txt"]
    manifest["files"].update({path: blob for path in extra["files"]})
    manifest["dirs"] += extra.get("dirs", [])
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{url.removeprefix('s3://')}/entries/step/bad.json",
                 json.dumps(manifest).encode())
    reader = store(url, tmp_path / "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RemoteCacheWarning)  # refused, not failed on
        assert reader.lookup("step", "bad") is None
        assert reader.lookup("step", "good") is not None
    assert main(["cache", "pull", url, "--cache-dir", str(tmp_path / "c")]) == 1
    assert "pull: 1 entry copied, 0 already there, 1 not usable" in capsys.readouterr().out


def test_a_link_out_of_the_entry_is_stored_as_what_it_points_to(
        url: str, tmp_path: Path) -> None:
    # A reader restores no link out of an entry (a store writer could point one at the
    # reader's secrets): such a link is uploaded as the file or folder it leads to.
    outside = tmp_path / "shared"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "deep.txt").write_text("deep")
    (outside / "one.txt").write_text("one")
    (outside / "sub" / "loop").symlink_to(outside)  # walked once, never in a loop
    writer = store(url, tmp_path / "a")
    out = writer.scratch_dir("step")
    (out / "folder").symlink_to(outside)
    (out / "file").symlink_to(outside / "one.txt")
    writer.save("step", "k", out_dir=out)
    manifest = json.loads(fs_cat(url, "entries/step/k.json"))
    assert not manifest.get("links")
    got = store(url, tmp_path / "b").lookup("step", "k")
    assert got is not None
    assert not (got.out_dir / "folder").is_symlink() and not (got.out_dir / "file").is_symlink()
    assert (got.out_dir / "folder" / "sub" / "deep.txt").read_text() == "deep"
    assert (got.out_dir / "file").read_text() == "one"
    assert not (got.out_dir / "folder" / "sub" / "loop" / "sub").exists()


def test_two_links_to_one_folder_out_of_the_entry_both_reach_the_reader(
        url: str, tmp_path: Path) -> None:
    """The folder is uploaded once, the second link as a link to it: it was left out,
    and the reader was served a tree without it."""
    outside = tmp_path / "shared"
    outside.mkdir()
    (outside / "data.txt").write_text("data")
    writer = store(url, tmp_path / "a")
    out = writer.scratch_dir("step")
    (out / "one").symlink_to(outside)
    (out / "nested").mkdir()
    (out / "nested" / "two").symlink_to(outside)
    writer.save("step", "k", out_dir=out)
    got = store(url, tmp_path / "b").lookup("step", "k")
    assert got is not None
    assert (got.out_dir / "one" / "data.txt").read_text() == "data"
    assert (got.out_dir / "nested" / "two" / "data.txt").read_text() == "data"
    mine = writer.lookup("step", "k").out_dir
    assert sorted(os.listdir(got.out_dir)) == sorted(os.listdir(mine)) == ["nested", "one"]


def test_a_broken_link_is_refused_before_the_store_is_asked(url: str, tmp_path: Path) -> None:
    # It used to fail the save with a FileNotFoundError; the store must stay usable.
    writer = store(url, tmp_path / "a")
    out = writer.scratch_dir("bad")
    os.symlink("/nonexistent/target", out / "dangling")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RemoteCacheWarning)
        with pytest.raises(CacheError, match="'out/dangling' is a broken link"):
            writer.save("bad", "k1", out_dir=out)
        save(writer, "good", "k2", {"y.txt": b"y"})
    assert "entries/good/k2.json" in listing(url)
    assert store(url, tmp_path / "b").lookup("good", "k2") is not None


def _damage_blob(url: str, step: str, key: str, name: str) -> None:
    """Change one byte of the blob of ``out/<name>`` in the store, keeping its size."""
    digest = json.loads(fs_cat(url, f"entries/{step}/{key}.json"))["files"][f"out/{name}"][0]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    path = f"{url.removeprefix('s3://')}/blobs/{digest}"
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(path, bytes(data))


@pytest.mark.parametrize("size", [100, 200_000])  # (the local tier re-hashes up to 64 KiB)
def test_a_blob_changed_in_the_store_is_a_miss_and_the_rebuild_mends_it(
        url: str, tmp_path: Path, size: int) -> None:
    good = bytes(i % 251 for i in range(size))
    save(store(url, tmp_path / "a"), "step", "k", {"data.bin": good})
    _damage_blob(url, "step", "k", "data.bin")
    reader = store(url, tmp_path / "b")
    with pytest.warns(RemoteCacheWarning, match=r"step/k.* does not match its digest"):
        assert reader.lookup("step", "k") is None  # never served
    assert reader.backend.names() == []
    save(reader, "step", "k", {"data.bin": good})  # the step run again, by the reader
    entry = store(url, tmp_path / "c").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == good


class Downloads:
    """Every client of a store made from now on, with the blobs it downloads written down."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blobs: list[str] = []
        real = ObjectStore._connect

        def connect(store: ObjectStore) -> None:
            real(store)
            store.transfers = Counting(store.transfers, self.blobs)  # (its client for blobs)

        monkeypatch.setattr(ObjectStore, "_connect", connect)


class Counting(Recording):
    def __init__(self, fs: Any, blobs: list[str]) -> None:
        super().__init__(fs)
        self.blobs = blobs

    def get_file(self, remote: str, local: str, **options: Any) -> Any:
        self.blobs.append(remote.rsplit("/", 1)[-1])
        return self.fs.get_file(remote, local, **options)

    def open(self, path: str, mode: str = "rb", **options: Any) -> Any:
        self.blobs.append(path.rsplit("/", 1)[-1])
        return self.fs.open(path, mode, **options)


BIG_OUTPUT = ("python -c \"import os; open(os.environ['DAGNB_OUT'] + '/big.bin', 'wb')"
              ".write(bytes(i % 251 for i in range(200_000)))\"")


def test_a_run_downloads_a_damaged_entry_once_runs_the_step_and_mends_it(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run looks twice (the lookup, then again under the key's lock): the second look
    took the damaged entry's blobs again and warned again."""
    graph = dagnb.Graph("g", [dagnb.Step("make", run=BIG_OUTPUT)])
    dagnb.configure(cache_local_directory=str(tmp_path / "a"))
    graph.run(executor="local", cache_directory=url)
    (entry,) = [name for name in listing(url) if name.startswith("entries/make/")]
    key = entry.removeprefix("entries/make/").removesuffix(".json")
    _damage_blob(url, "make", key, "big.bin")
    downloads = Downloads(monkeypatch)
    dagnb.configure(cache_local_directory=str(tmp_path / "b"))
    with pytest.warns(RemoteCacheWarning) as said:
        run = graph.run(executor="local", cache_directory=url)
    assert run.states() == {"make": "succeeded"}  # the step ran again: nothing served
    assert [str(w.message).count("does not match its digest") for w in said] == [1]
    stored = json.loads(fs_cat(url, entry))["files"]
    assert len(downloads.blobs) == len(set(downloads.blobs))  # each at most once
    assert stored["out/big.bin"][0] in downloads.blobs
    mended = store(url, tmp_path / "c").lookup("make", key)  # the rerun's save replaced it
    assert mended is not None
    assert (mended.out_dir / "big.bin").read_bytes() == bytes(i % 251 for i in range(200_000))


@pytest.fixture(params=["s3", "folder"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on moto's S3 server or in a local folder (file://): the dagnb cache
    commands refuse a memory:// one, gone as the command exits."""
    if request.param == "folder":
        return f"file://{tmp_path}/store"
    return request.getfixturevalue("url")


def damage(url: str, step: str, key: str, name: str) -> str:
    """Change one byte of the blob of ``out/<name>``, keeping its size, in any store
    (as a foreign tool would); its digest."""
    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    digest = json.loads(fs.cat_file(f"{root}/entries/{step}/{key}.json"))["files"][f"out/{name}"][0]
    data = bytearray(fs.cat_file(f"{root}/blobs/{digest}"))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(f"{root}/blobs/{digest}", bytes(data))
    return digest


def test_a_pull_downloads_a_damaged_blob_once_whatever_names_it(
        any_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    same = bytes(i % 251 for i in range(200_000))
    local = Store(tmp_path / "a")
    save(local, "make", "k1", {"data.bin": same})
    save(local, "copy", "k2", {"data.bin": same})  # one blob, named by both entries
    assert main(["cache", "push", any_url, "--cache-dir", str(tmp_path / "a")]) == 0
    digest = damage(any_url, "make", "k1", "data.bin")
    downloads = Downloads(monkeypatch)
    capsys.readouterr()
    assert main(["cache", "pull", any_url, "--cache-dir", str(tmp_path / "b")]) == 1
    assert "pull: 0 entries copied, 0 already there, 2 not usable" in capsys.readouterr().out
    assert downloads.blobs.count(digest) == 1
    assert Store(tmp_path / "b").lookup("copy", "k2") is None


def test_a_refresh_sends_its_blobs_again(url: str, tmp_path: Path) -> None:
    """The writer never downloads what it has: its refresh alone mends its blob."""
    writer = store(url, tmp_path / "a")
    save(writer, "step", "k", {"data.bin": b"d" * 1000})
    _damage_blob(url, "step", "k", "data.bin")
    out = writer.scratch_dir("step")
    (out / "data.bin").write_bytes(b"d" * 1000)
    writer.save("step", "k", out_dir=out, refresh=True)
    entry = store(url, tmp_path / "c").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == b"d" * 1000


def test_two_writers_of_one_key_leave_one_good_entry(url: str, tmp_path: Path) -> None:
    writers = [store(url, tmp_path / name) for name in ("a", "b")]
    barrier = threading.Barrier(2)

    def write(number: int) -> None:
        barrier.wait()
        save(writers[number], "step", "same", {"out.bin": bytes([number]) * 100_000})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = store(url, tmp_path / "c").lookup("step", "same")
    assert entry is not None
    assert (entry.out_dir / "out.bin").read_bytes() in (b"\0" * 100_000, b"\1" * 100_000)
    assert entry.verify()
    assert listing(url).count("entries/step/same.json") == 1


def test_a_conditional_create_keeps_the_first_entry(url: str, tmp_path: Path) -> None:
    save(store(url, tmp_path / "a"), "step", "k", {"out.txt": b"first"})
    save(store(url, tmp_path / "b"), "step", "k", {"out.txt": b"second"})
    entry = store(url, tmp_path / "c").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "out.txt").read_bytes() == b"first"


def test_a_refresh_replaces_the_stores_entry(url: str, tmp_path: Path) -> None:
    first = store(url, tmp_path / "a")
    save(first, "step", "k", {"v.txt": b"first"})
    save(first, "step", "k", {"v.txt": b"again"})  # this machine replaces its own entry
    entry = store(url, tmp_path / "c").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"again"
    fresh = store(url, tmp_path / "b")  # a tier that never saw the key: refresh says so
    out = fresh.scratch_dir("step")
    (out / "v.txt").write_bytes(b"refreshed")
    fresh.save("step", "k", out_dir=out, refresh=True)
    entry = store(url, tmp_path / "d").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"refreshed"


def test_an_entry_set_aside_is_not_fetched_again_and_its_rebuild_replaces_it(
    url: str, tmp_path: Path
) -> None:
    save(store(url, tmp_path / "a"), "step", "k", {"v.txt": b"unloadable"})
    reader = store(url, tmp_path / "b")
    assert reader.lookup("step", "k") is not None  # downloaded into b's tier
    with pytest.warns(DamagedEntryWarning):
        reader.quarantine("step", "k", "its result cannot be loaded")
    assert reader.lookup("step", "k") is None  # not the same bad entry again
    save(reader, "step", "k", {"v.txt": b"rebuilt"})
    entry = store(url, tmp_path / "c").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "v.txt").read_bytes() == b"rebuilt"


def test_an_expired_remote_entry_is_a_miss_and_is_replaced(url: str, tmp_path: Path) -> None:
    clock = [1000.0]
    old = Store(url, backend=RemoteBackend(url, local=tmp_path / "a"), clock=lambda: clock[0])
    out = old.scratch_dir("step")
    (out / "v.txt").write_text("old")
    old.save("step", "k", out_dir=out, ttl=10)  # expired long ago in real time
    assert store(url, tmp_path / "b").lookup("step", "k") is None
    save(store(url, tmp_path / "c"), "step", "k", {"v.txt": b"new"})
    entry = store(url, tmp_path / "d").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "v.txt").read_text() == "new"


def test_an_unreachable_store_is_a_miss_and_the_entry_stays_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    closed = Store("s3://nowhere/cache", backend=RemoteBackend(
        "s3://nowhere/cache", local=tmp_path / "a",
        storage_options={"endpoint_url": "http://127.0.0.1:9", "retries": 1}))
    with pytest.warns(RemoteCacheWarning, match="a download failed.*dagnb cache push"):
        assert closed.lookup("step", "k") is None
    calls = []
    real_fetch = remote_module.fetch_into
    monkeypatch.setattr(remote_module, "fetch_into", lambda *a: calls.append(a) or real_fetch(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once per store, not at every miss
        save(closed, "step", "k", {"v.txt": b"kept"})
        assert closed.lookup("step", "k") is not None
        assert closed.lookup("step", "other") is None
    assert calls == []  # the store rests after a failure: no lookup waits on it
    monkeypatch.setattr(remote_module, "RETRY_AFTER", 0.0)
    closed.backend._down_until = 0.0  # the rest is over: the store is asked again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert closed.lookup("step", "again") is None
    assert len(calls) == 1


def test_a_refresh_the_store_missed_is_sent_by_the_next_push(
    url: str, server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A push skips the keys the store has: one refreshed while it was down is the
    exception, else the store keeps the result the refresh replaced."""
    laptop = store(url, tmp_path / "a")
    save(laptop, "prices", "k", {"prices.csv": b"monday"})
    server.stop()
    try:
        with pytest.warns(RemoteCacheWarning, match="an upload failed"):
            out = laptop.scratch_dir("prices")
            (out / "prices.csv").write_bytes(b"tuesday")
            laptop.save("prices", "k", out_dir=out, refresh=True)
    finally:
        server.start()
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    assert "1 entry copied" in capsys.readouterr().out
    entry = store(url, tmp_path / "b").lookup("prices", "k")
    assert entry is not None and (entry.out_dir / "prices.csv").read_bytes() == b"tuesday"
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    assert "0 entries copied, 1 already there" in capsys.readouterr().out  # sent once

def test_the_rebuild_of_an_entry_damaged_in_the_store_is_owed_while_it_is_down(
    url: str, server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rebuild replaces the store's damaged copy; saved while the store is down, the
    next push must send it: the store has a manifest and blobs of the right sizes, so
    push took it as there, and the damaged copy stayed for every machine."""
    good = bytes(i % 251 for i in range(200_000))
    save(store(url, tmp_path / "a"), "step", "k", {"data.bin": good})
    _damage_blob(url, "step", "k", "data.bin")
    reader = store(url, tmp_path / "b")
    with pytest.warns(RemoteCacheWarning, match="does not match its digest"):
        assert reader.lookup("step", "k") is None
    server.stop()
    try:
        with pytest.warns(RemoteCacheWarning, match="an upload failed"):
            save(reader, "step", "k", {"data.bin": good})  # the step run again
    finally:
        server.start()
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "b")]) == 0
    assert "1 entry copied" in capsys.readouterr().out
    entry = store(url, tmp_path / "c").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == good


def test_each_outage_of_the_store_is_said_once(
    url: str, server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived process (a notebook's kernel) is told of every outage, not the first
    alone: entries saved during the second stay local too."""
    monkeypatch.setattr(remote_module, "RETRY_AFTER", 0.0)  # the store is asked each time
    kernel = store(url, tmp_path / "a")
    for outage in ("monday", "tuesday"):
        server.stop()
        try:
            with pytest.warns(RemoteCacheWarning, match="an upload failed") as said:
                save(kernel, "step", f"{outage}-1", {"v.txt": b"1"})
                save(kernel, "step", f"{outage}-2", {"v.txt": b"2"})
            assert len(said) == 1
        finally:
            server.start()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            save(kernel, "step", f"{outage}-back", {"v.txt": b"3"})
    assert [o for o in listing(url) if o.startswith("entries/")] == [
        "entries/step/monday-back.json", "entries/step/tuesday-back.json"]

class _SilentEndpoint:
    """A TCP server that accepts connections and never answers (a hung MinIO, a stuck
    proxy): what costs a client its read timeout, times every retry."""

    def __init__(self) -> None:
        import socket

        self._socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._held: list[Any] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self._held.append(self._socket.accept()[0])

    @property
    def connections(self) -> int:
        return len(self._held)

    def close(self) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SilentEndpoint]:
    """A store endpoint that never answers, with dummy credentials and botocore's
    attempts left to dagnb."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    endpoint = _SilentEndpoint()
    yield endpoint
    endpoint.close()


def _doubled(x: int) -> int:
    return 2 * x


@pytest.mark.slow  # several seconds: on CI's main leg only
def test_a_run_on_a_store_that_never_answers_waits_seconds_and_says_so_once(
    silent: _SilentEndpoint, tmp_path: Path
) -> None:
    """Its first lookup took s3fs' 15 s read timeout three times (47 s, and a run of two
    short steps 52 s); dagnb's own timeouts make it two of 4 s, then the store rests."""
    dagnb.configure(cache_local_directory=str(tmp_path / "tier"),
                    cache_storage_options={"endpoint_url": silent.url})
    graph = dagnb.Graph("g", [dagnb.Step("a", func=lambda: 21),
                              dagnb.Step("b", func=_doubled, needs=["a"],
                                         params={"x": 21})])
    started = time.monotonic()
    with pytest.warns(RemoteCacheWarning) as said:
        run = graph.run(executor="local", cache_directory="s3://hung/cache")
    took = time.monotonic() - started
    assert took < 15, took
    assert run.states() == {"a": "succeeded", "b": "succeeded"}
    assert run.result("a") == 21 and run.result("b") == 42
    assert len(said) == 1 and "\n" not in str(said[0].message)
    assert re.search(r"failed after \d+ s \(ReadTimeoutError", str(said[0].message))
    assert {"a", "b"} <= set(os.listdir(tmp_path / "tier"))  # both saved in the local tier


@pytest.mark.slow  # several seconds: on CI's main leg only
def test_asking_a_store_that_never_answers_again_says_so_in_one_line(
    silent: _SilentEndpoint, tmp_path: Path
) -> None:
    """After the rest the store is asked again, and waited on again: a run paused with
    nothing said (the outage's warning was given once). The user's timeouts win."""
    hung = Store("s3://hung/cache", backend=RemoteBackend(
        "s3://hung/cache", local=tmp_path / "a", storage_options={
            "endpoint_url": silent.url, "config_kwargs": {"read_timeout": 1}}))
    started = time.monotonic()
    with pytest.warns(RemoteCacheWarning, match="a download failed after"):
        assert hung.lookup("step", "k") is None
    assert time.monotonic() - started < 4  # two 1 s timeouts, not two of dagnb's 4 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hung.lookup("step", "resting") is None  # (not asked: no wait, no word)
    hung.backend._down_until = 0.0  # the rest is over
    with pytest.warns(RemoteCacheWarning) as said:
        assert hung.lookup("step", "again") is None
    (line,) = [str(w.message) for w in said]
    assert re.fullmatch(r"remote cache 's3://hung/cache': a download waited \d s and failed "
                        r"again; asking again in 60 s", line), line


# -- settings ---------------------------------------------------------------------------
def test_a_store_url_is_accepted_from_the_file_the_environment_and_configure(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "dagnb.yaml").write_text(
        "workflow_defaults:\n  cache_directory: s3://bucket/team\n"
        "  cache_local_directory: tier\n"
        "  cache_storage_options:\n    endpoint_url: http://127.0.0.1:9000\n")
    current = dagnb.config.reload()
    assert current.cache_directory == "s3://bucket/team"
    assert current.cache_local_directory == str(project / "tier")
    assert current.cache_storage_options == {"endpoint_url": "http://127.0.0.1:9000"}
    assert dagnb.cache.local_folder() == project / "tier"
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", "gs://other/prefix")
    assert dagnb.config.reload().cache_directory == "gs://other/prefix"
    dagnb.configure(cache_directory="memory://bucket/x")
    assert dagnb.config.settings().cache_directory == "memory://bucket/x"
    backend = dagnb.cache.store_for().backend
    assert isinstance(backend, RemoteBackend) and backend.root == project / "tier"


def test_configure_changing_a_store_urls_tier_or_options_is_used_at_once(
    url: str, server: S3Server, project: Path
) -> None:
    """A session fixing a mistyped endpoint, or moving the tier, gets a store made with
    what it says now (the store of a URL was kept by URL alone: sharing quietly stopped)."""
    dagnb.configure(cache_directory=url, cache_local_directory=str(project / "one"),
                    cache_storage_options={"endpoint_url": "http://127.0.0.1:9"})
    first = dagnb.cache.store_for()
    assert first.backend.root == project / "one"
    dagnb.configure(cache_local_directory=str(project / "two"),
                    cache_storage_options={"endpoint_url": server.endpoint})
    second = dagnb.cache.store_for()
    assert second is not first and second.backend.root == project / "two"
    save(second, "step", "k", {"v.txt": b"shared"})
    assert "entries/step/k.json" in listing(url)  # reached the store, from the new tier
    assert dagnb.cache.store_for() is second  # unchanged settings: the same store


@pytest.mark.parametrize("option", ["secret", "key", "token"])
def test_credentials_in_the_config_are_refused_with_the_fix(project: Path, option: str) -> None:
    (project / "dagnb.yaml").write_text(
        f"workflow_defaults:\n  cache_storage_options:\n    {option}: hunter2-value\n")
    with pytest.raises(ConfigError, match=rf"no {option!r} option.*AWS_SECRET_ACCESS_KEY") as err:
        dagnb.config.reload()
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)


def test_a_url_holding_credentials_is_refused_without_echoing_them(project: Path) -> None:
    with pytest.raises(ConfigError, match="without user or password") as err:
        dagnb.configure(cache_directory="s3://AKIAXXX:hunter2@bucket/x")
    assert "hunter2" not in str(err.value)


# -- push and pull ------------------------------------------------------------------------
def _push_two(url: str, folder: Path) -> None:
    """Two entries saved in the local cache ``folder``, then pushed to the store."""
    local = Store(folder)
    save(local, "make", "k1", {"data.txt": b"one"})
    save(local, "make", "k2", {"data.txt": b"two"})
    assert main(["cache", "push", url, "--cache-dir", str(folder)]) == 0


def test_push_then_pull_copies_entries_between_local_folders(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _push_two(url, tmp_path / "a")
    captured = capsys.readouterr()
    assert "push: 2 entries copied, 0 already there" in captured.out
    assert "push: 2/2 entries" in captured.err  # the progress line
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    assert "0 entries copied, 2 already there" in capsys.readouterr().out
    assert main(["cache", "pull", url, "--cache-dir", str(tmp_path / "b")]) == 0
    assert "pull: 2 entries copied" in capsys.readouterr().out
    pulled = Store(tmp_path / "b")
    assert (pulled.lookup("make", "k2").out_dir / "data.txt").read_bytes() == b"two"


def _says(n: int) -> dict[str, int]:
    for i in range(n):
        print(f"line {i}: much is said, and the result is the same")
    return {"x": 1}


def _said(n: int) -> dagnb.Graph:
    """up says ``n`` lines (2,000: past what a pack record takes) and returns its result."""
    return dagnb.Graph("said", [dagnb.Step("up", func=_says, params={"n": n}),
                                dagnb.Step("down", run='echo d > "$DAGNB_OUT/d"', needs=["up"])])


def test_a_result_keeps_its_output_digest_in_a_store_and_through_push_and_pull(
        url: str, tmp_path: Path) -> None:
    """A store has no packs (every entry a folder), nor has a pulled cache: the steps
    after one with no output files are keyed the same wherever its entry was made."""
    local, pulled = str(tmp_path / "local"), str(tmp_path / "pulled")
    dagnb.configure(cache_local_directory=str(tmp_path / "tier"))
    assert set(_said(1).run(executor="local", cache_directory=local).states().values()) == {
        "succeeded"}  # up a pack record
    assert main(["cache", "push", url, "--cache-dir", local]) == 0
    # up a folder in the store and the tier: down was pushed, keyed on the pack record
    assert _said(2000).run(executor="local", cache_directory=url).states() == {
        "up": "succeeded", "down": "cached"}
    assert main(["cache", "pull", url, "--cache-dir", pulled]) == 0
    for n in (1, 2000):
        assert set(_said(n).run(executor="local", cache_directory=pulled).states().values()) \
            == {"cached"}
    digests = {entry.key: entry.output_digest for entry in Store(pulled).iter_entries("up")}
    assert len(digests) == 2 and len(set(digests.values())) == 1


def test_a_pull_says_which_entries_it_could_not_use_and_exits_1(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _push_two(url, tmp_path / "a")
    _damage_blob(url, "make", "k1", "data.txt")
    capsys.readouterr()
    assert main(["cache", "pull", url, "--cache-dir", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "pull: 1 entry copied, 0 already there, 1 not usable" in out, out
    assert Store(tmp_path / "b").lookup("make", "k1") is None


def test_push_leaves_out_an_entry_whose_file_was_edited_in_place(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file (past the digests a lookup checks) edited in place keeps its size: push
    hashes it, sets the entry aside as verify does, says so, and sends the others."""
    local = Store(tmp_path / "a")
    save(local, "make", "k1", {"big.bin": b"A" * 200_000})
    save(local, "make", "k2", {"data.txt": b"two"})
    big = local.lookup("make", "k1").out_dir / "big.bin"
    big.write_bytes(b"EVIL!" + big.read_bytes()[5:])
    with pytest.warns(DamagedEntryWarning, match="make/k1.*no longer match"):
        assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 1
    out = capsys.readouterr().out
    assert "push: 1 entry copied, 0 already there, 1 left out (damaged here" in out, out
    assert "entries/make/k1.json" not in listing(url) and "entries/make/k2.json" in listing(url)
    assert Store(tmp_path / "a").lookup("make", "k1") is None  # set aside: runs again
    read = []  # an entry the store has already is not read again to be checked
    monkeypatch.setattr(Entry, "verify", lambda entry: read.append(entry))
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    assert "0 entries copied, 1 already there" in capsys.readouterr().out and read == []


def test_push_check_mends_a_file_changed_in_the_store_that_a_plain_push_takes_as_there(
        any_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = bytes(i % 251 for i in range(200_000))
    local = Store(tmp_path / "a")
    save(local, "make", "k1", {"data.bin": good})
    save(local, "make", "k2", {"data.txt": b"two"})
    push = ["cache", "push", any_url, "--cache-dir", str(tmp_path / "a")]
    assert main(push) == 0
    damage(any_url, "make", "k1", "data.bin")  # by a foreign tool: its size kept
    downloads = Downloads(monkeypatch)
    capsys.readouterr()
    assert main(push) == 0  # sizes are all a plain push sees: it reads no blob
    assert "push: 0 entries copied, 2 already there, 0 bytes\n" in capsys.readouterr().out
    assert downloads.blobs == []
    assert main([*push, "--check"]) == 0
    out = capsys.readouterr().out
    assert ("push: 1 entry copied (1 replacing a copy damaged in the store), 1 already "
            "there (read back and checked: 0.2 MB), 0.2 MB") in out, out
    entry = store(any_url, tmp_path / "c").lookup("make", "k1")
    assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == good
    assert main([*push, "--check"]) == 0
    assert "push: 0 entries copied, 2 already there" in capsys.readouterr().out


def _blob_of(url: str, step: str, key: str, name: str) -> str:
    """The store path (under the bucket) of the blob of ``out/<name>`` of ``step/key``."""
    digest = json.loads(fs_cat(url, f"entries/{step}/{key}.json"))["files"][f"out/{name}"][0]
    return f"{url.removeprefix('s3://')}/blobs/{digest}"


def test_a_push_counts_the_bytes_of_a_file_it_sends_back_to_an_entry_the_store_lost(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A blob deleted in the store (its manifest kept) is sent again: the push said
    '1 entry copied, 4 already there, 0.0 MB' of its 1 MB."""
    local = Store(tmp_path / "a")
    big = bytes(i % 251 for i in range(1_000_000))
    save(local, "make", "big", {"big.bin": big})
    for n in range(4):
        save(local, "make", f"k{n}", {"data.txt": b"small %d" % n})
    push = ["cache", "push", url, "--cache-dir", str(tmp_path / "a")]
    assert main(push) == 0
    blob = _blob_of(url, "make", "big", "big.bin")
    s3fs.S3FileSystem(skip_instance_cache=True).rm(blob)
    capsys.readouterr()
    assert main(push) == 0
    assert "push: 1 entry copied, 4 already there, 1.0 MB\n" in capsys.readouterr().out
    assert s3fs.S3FileSystem(skip_instance_cache=True).info(blob)["size"] == 1_000_000
    entry = store(url, tmp_path / "b").lookup("make", "big")
    assert entry is not None and (entry.out_dir / "big.bin").read_bytes() == big


def test_a_push_that_makes_another_machines_entry_whole_says_what_it_left_unreferenced(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The store keeps the first machine's manifest; the second sends the lost file back,
    and its own meta.json, which that manifest does not name."""
    big = bytes(i % 251 for i in range(1_000_000))
    save(Store(tmp_path / "a"), "make", "big", {"big.bin": big})
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    s3fs.S3FileSystem(skip_instance_cache=True).rm(_blob_of(url, "make", "big", "big.bin"))
    save(Store(tmp_path / "b"), "make", "big", {"big.bin": big})
    capsys.readouterr()
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "b")]) == 0
    assert re.fullmatch(
        r"push: 1 entry copied, 0 already there, 1\.0 MB \(0\.\d kB of it unreferenced: "
        r"files of entries the store kept another copy of, left there named by no entry, "
        r"where nothing removes them\)\n", capsys.readouterr().out)
    assert len(_unreferenced_blobs(url, "make", "big")) == 1  # (b's meta.json)
    entry = store(url, tmp_path / "c").lookup("make", "big")
    assert entry is not None and (entry.out_dir / "big.bin").read_bytes() == big


@pytest.mark.parametrize("same", [True, False], ids=["same result", "another result"])
def test_the_push_that_loses_a_race_for_a_key_says_it_was_written_meanwhile(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, same: bool) -> None:
    """Two pushes of one key: the second to write its manifest keeps the first's entry.
    It said '1 entry copied ... 0.0 MB', though its entry was not kept and its file was
    sent; a file of another content stays in the store, named by no entry."""
    ours, theirs = bytes(200_000), bytes(200_000) if same else b"\x01" * 200_000
    save(Store(tmp_path / "a"), "make", "k", {"data.bin": ours})
    save(Store(tmp_path / "b"), "make", "k", {"data.bin": theirs})
    real_put_blob = ObjectStore._put_blob

    def the_other_push_first(remote: ObjectStore, *args: Any, **kwargs: Any) -> int:
        if not raced:  # (while this push sends its blobs: the other one, whole)
            raced.append(True)
            assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "b")]) == 0
        return real_put_blob(remote, *args, **kwargs)

    raced: list[bool] = []
    monkeypatch.setattr(ObjectStore, "_put_blob", the_other_push_first)
    # (one blob at a time: the other push comes before this one looks for any blob)
    monkeypatch.setattr("dagnb.cache.remote._BLOBS_AT_ONCE", 1)
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == "push: 1 entry copied, 0 already there, 0.2 MB"
    # (its meta.json differs from the other's: when it was made, ...; sent, and left)
    sent = r"0\.\d kB \(0\.\d kB" if same else r"0\.2 MB \(0\.2 MB"
    assert re.fullmatch(
        r"push: 0 entries copied, 1 already there \(1 written meanwhile by another push or "
        rf"run\), {sent} of it unreferenced: files of entries the store kept another copy "
        r"of, left there named by no entry, where nothing removes them\)", second), second
    entry = store(url, tmp_path / "c").lookup("make", "k")
    assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == theirs
    # (its meta.json, and its data.bin of another content)
    assert len(_unreferenced_blobs(url, "make", "k")) == (1 if same else 2)


def test_a_save_sends_no_file_of_an_entry_another_machine_stored_meanwhile(
        url: str, tmp_path: Path) -> None:
    """A run's save uploads what the step made: when another machine stored the key
    while the step ran, its files went up all the same and stayed, named by no entry."""
    first, second = store(url, tmp_path / "a"), store(url, tmp_path / "b")
    assert second.lookup("make", "k") is None  # (a miss: the step runs here too)
    save(first, "make", "k", {"data.bin": b"\x01" * 200_000})
    save(second, "make", "k", {"data.bin": b"\x02" * 200_000})
    assert _unreferenced_blobs(url, "make", "k") == set()


def _unreferenced_blobs(url: str, step: str, key: str) -> set[str]:
    """The blobs in a store that the manifest of ``step/key`` (its only entry) does not name."""
    named = {f"blobs/{digest}" for digest, _ in json.loads(
        fs_cat(url, f"entries/{step}/{key}.json"))["files"].values()}
    return {name for name in listing(url) if name.startswith("blobs/")} - named


@pytest.mark.parametrize("action", ["push", "pull"])
def test_a_store_that_fails_is_one_line_and_exit_2(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(Store(tmp_path / "a"), "make", "k1", {"data.txt": b"one"})
    missing = f"file://{tmp_path}/no/such/store" if action == "pull" else "file:///proc/nope/x"
    (tmp_path / "empty").mkdir()
    if action == "pull":  # an empty store is no error: nothing to pull
        assert main(["cache", "pull", f"file://{tmp_path}/empty",
                     "--cache-dir", str(tmp_path / "a")]) == 0
    assert main(["cache", action, missing, "--cache-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cache {action} {missing}" in err, err


def test_a_pull_from_a_mistyped_folder_or_one_holding_no_store_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo of the store's folder pulled 0 entries and exited 0: CI went on without
    its cache and no one saw why. Now one line names the URL and the fix."""
    _push_two(f"file://{tmp_path}/store", tmp_path / "a")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    capsys.readouterr()
    made = " (or make the folder, for a store nothing was pushed to yet)"
    for url, why, then in [
            (f"file://{tmp_path}/stor", f"there is no folder '{tmp_path}/stor'", made),
            (f"file://{tmp_path}/notes", "it holds no dagnb store (no entries or blobs in it)",
             "")]:
        assert main(["cache", "pull", url, "--cache-dir", str(tmp_path / "b")]) == 2
        captured = capsys.readouterr()
        assert captured.err == (f"dagnb: error: cache pull {url}: {why}; check the URL: "
                                f"name the store dagnb cache push wrote to{then}\n"), captured.err
        assert captured.out == ""
    assert main(["cache", "pull", f"file://{tmp_path}/store", "--cache-dir",
                 str(tmp_path / "b")]) == 0
    assert "pull: 2 entries copied" in capsys.readouterr().out


def test_a_pull_from_a_missing_bucket_is_exit_2_and_from_an_empty_prefix_0_entries(
    url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An empty prefix, however deep, is a store nothing was pushed to yet (it once was
    "neither ... nor its parent exists" two levels down); a prefix holding other things
    is no store; a bucket that is not there is an error."""
    bucket = url.removeprefix("s3://").split("/")[0]
    s3fs.S3FileSystem(skip_instance_cache=True).pipe_file(f"{bucket}/notes/todo.txt", b"x")
    local = ["--cache-dir", str(tmp_path / "b")]
    for empty in (url, f"s3://{bucket}/team/cache"):
        assert main(["cache", "pull", empty, *local]) == 0
        assert "pull: 0 entries copied, 0 already there" in capsys.readouterr().out
    for wrong, why in [(f"s3://{bucket}x/cache", f"there is no bucket '{bucket}x'"),
                       (f"s3://{bucket}/notes", "it holds no dagnb store")]:
        assert main(["cache", "pull", wrong, *local]) == 2
        err = capsys.readouterr().err
        assert f"cache pull {wrong}: {why}" in err and "; check the URL" in err, err
        assert err.count("\n") == 1


def test_push_needs_a_store_url(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "push"]) == 2
    assert "dagnb cache push s3://bucket/prefix" in capsys.readouterr().err


@pytest.mark.parametrize("bare", ["s3://", "s3:///prefix", "gs://"])
def test_a_store_url_with_no_bucket_is_one_line_naming_the_fix(
    bare: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``s3://`` lost its slashes and was pushed to a local folder named ``s3:``."""
    save(Store(project / "a"), "make", "k1", {"data.txt": b"one"})
    assert main(["cache", "push", bare, "--cache-dir", str(project / "a")]) == 2
    err = capsys.readouterr().err
    scheme = bare.split(":")[0]
    assert f"{bare!r} names no bucket; write it as {scheme}://BUCKET/prefix" in err, err
    assert err.count("\n") == 1 and not (project / f"{scheme}:").exists()


def test_an_endpoint_url_that_is_not_text_is_refused_naming_it(project: Path) -> None:
    """A port alone reached botocore: ``'int' object is not iterable``, naming nothing."""
    (project / "dagnb.yaml").write_text(
        "workflow_defaults:\n  cache_storage_options: {endpoint_url: 5077}\n")
    with pytest.raises(ConfigError, match=r"endpoint_url as a URL in quotes, not 5077: "
                                          r'endpoint_url: "http://HOST:PORT"') as err:
        dagnb.config.reload()
    assert "\n" not in str(err.value)
    (project / "dagnb.yaml").unlink()
    with pytest.raises(ConfigError, match="endpoint_url as a URL in quotes, not 9000"):
        dagnb.configure(cache_storage_options={"client_kwargs": {"endpoint_url": 9000}})


# -- storage options given in code --------------------------------------------------------
PASSWORD = "pw-in-code-77"


def _objects(url: str, options: Any, local: Path) -> list[Any]:
    """Every public way code gives storage options directly."""
    return [lambda: RemoteBackend(url, local=local, storage_options=options),
            lambda: ObjectStore(url, options)]


@pytest.mark.parametrize(("options", "option", "shown"), [
    ({"endpoint_url": f"http://minio:{PASSWORD}@bad host:9"},  # botocore: Invalid endpoint
     "endpoint_url", "'http://***@bad host:9'"),
    ({"client_kwargs": {"endpoint_url": f"minio:{PASSWORD}@127.0.0.1:9"}},  # no scheme
     "endpoint_url", "'***@127.0.0.1:9'"),
    ({"config_kwargs": {"proxies": {"https": f"http://u:{PASSWORD}@proxy:3128"}}},
     "https", "'http://***@proxy:3128'"),
    ({"key": "AKIA-in-code", "secret": PASSWORD, "endpoint_url": f"http://u:{PASSWORD}@h:9"},
     "endpoint_url", "'key': '***', 'secret': '***'"),
])
def test_storage_options_in_code_with_a_url_password_are_refused_in_one_line(
    tmp_path: Path, options: dict[str, Any], option: str, shown: str
) -> None:
    """Taken as given, botocore's error (Invalid endpoint: http://minio:pw@...) put the
    password in the store's warning; one it accepted failed each request with an error
    naming no option, and the cache went on local alone."""
    for make in _objects("s3://bucket/cache", options, tmp_path / "local"):
        with pytest.raises(CacheError) as refused:
            make()
        message = str(refused.value)
        assert message.startswith("storage_options={") and "\n" not in message, message
        assert f"no user or password in the {option!r} URL" in message and shown in message
        assert PASSWORD not in message and "AKIA-in-code" not in message
        assert "key and secret options" in message


@pytest.mark.parametrize(("options", "expected"), [
    ({"endpoint_url": 5077}, 'endpoint_url as a URL in quotes, not 5077: endpoint_url: "http'),
    ({"client_kwargs": {"endpoint_url": "minio:9000"}},
     "endpoint_url as a URL with its scheme, not 'minio:9000'"),
    (f'{{"secret": "{PASSWORD}"}}', "storage_options=<str> is not valid; expected a mapping"),
    ([("secret", PASSWORD)], "storage_options=<list> is not valid; expected a mapping"),
])
def test_malformed_storage_options_in_code_are_one_line_naming_the_option(
    tmp_path: Path, options: Any, expected: str
) -> None:
    """They reached botocore ('int' object is not iterable, Invalid endpoint: minio:9000,
    in a warning, the cache going on local alone) or dict() (a ValueError naming nothing)."""
    for make in _objects("s3://bucket/cache", options, tmp_path / "local"):
        with pytest.raises(CacheError, match=r"^storage_options") as refused:
            make()
        assert expected in str(refused.value) and "\n" not in str(refused.value)
        assert PASSWORD not in str(refused.value)


def test_key_and_secret_in_code_still_read_and_write_through_the_store(
    url: str, server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code may pass the store's credentials as options (no config show prints them)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    options = {"key": "testing", "secret": "testing", "endpoint_url": server.endpoint}
    writer = Store(url, backend=RemoteBackend(url, local=tmp_path / "a",
                                              storage_options=options))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an upload that failed would only warn
        save(writer, "make", "k1", {"data.txt": b"one"})
        reader = Store(url, backend=RemoteBackend(url, local=tmp_path / "b",
                                                  storage_options=options))
        entry = reader.lookup("make", "k1")
    assert entry is not None and (entry.out_dir / "data.txt").read_bytes() == b"one"
    assert "entries/make/k1.json" in listing_with(url, options)
    assert "testing" not in repr(reader.backend) + repr(reader.backend.remote)


def listing_with(url: str, options: dict[str, Any]) -> list[str]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    root = url.removeprefix("s3://")
    return sorted(path[len(root) + 1:] for path in fs.find(root))


def test_a_store_error_naming_an_endpoint_with_a_password_shows_it_redacted(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The environment's endpoint is botocore's to read: its error quoted it whole, in the
    store's warning and in dagnb cache pull's line."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:{PASSWORD}@bad host:9")
    s3fs.S3FileSystem.clear_instance_cache()  # (one made before read the good endpoint)
    try:
        backend = RemoteBackend(url, local=tmp_path / "a")
        with pytest.warns(RemoteCacheWarning) as warned:
            assert not backend.exists("make", "k1")
        assert main(["cache", "pull", url, "--cache-dir", str(tmp_path / "b")]) == 2
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # (nor may the next test get this one)
    message = str(warned[0].message)
    assert "Invalid endpoint: http://***@bad host:9" in message and PASSWORD not in message
    err = capsys.readouterr().err
    assert "http://***@bad host:9" in err and PASSWORD not in err and err.count("\n") == 1


def test_the_magic_pushes_and_pulls(url: str, shell: Any, tmp_path: Path) -> None:
    local = dagnb.cache.store_for()
    save(local, "make", "k1", {"data.txt": b"one"})
    pushed = shell.run_line_magic("dagger", f"cache push {url}")
    assert "push: 1 entry copied" in str(pushed)
    local.clear()
    pulled = shell.run_line_magic("dagger", f"cache pull {url}")
    assert "pull: 1 entry copied" in str(pulled)
    assert local.lookup("make", "k1") is not None
    damage(url, "make", "k1", "data.txt")
    checked = shell.run_line_magic("dagger", f"cache push --check {url}")
    assert "1 entry copied (1 replacing a copy damaged in the store)" in str(checked)


# -- interrupted uploads ------------------------------------------------------------------
WRITER = """\
import os, sys
import dagnb.cache.remote as remote
remote._S3_CHUNK = 5 << 20  # small parts: a 12 MB file goes up in a multipart upload
from dagnb.cache import Store
from dagnb.cache.entry import Entry
url, local = sys.argv[1], sys.argv[2]
store = Store(url, backend=remote.RemoteBackend(url, local=local))
print("ready", flush=True)
for line in sys.stdin:
    key, seed = line.split()
    out = store.scratch_dir("big")
    for name, size in (("small.txt", 100), ("medium.bin", 3 << 20), ("large.bin", 12 << 20)):
        (out / name).write_bytes(seed.encode() * (size // len(seed)))
    store.save("big", key, out_dir=out)
    print("done", flush=True)
"""


def expected_files(seed: str) -> dict[str, bytes]:
    return {name: seed.encode() * (size // len(seed))
            for name, size in (("small.txt", 100), ("medium.bin", 3 << 20),
                               ("large.bin", 12 << 20))}


class Writer:
    """A writer process that saves an entry on the store for each line it reads."""

    def __init__(self, url: str, local: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(local)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def save(self, key: str, seed: str) -> None:
        self.process.stdin.write(f"{key} {seed}\n")
        self.process.stdin.flush()

    def wait_done(self) -> str:
        return self.process.stdout.readline().strip()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def check_store(url: str, tmp_path: Path, key: str, seed: str) -> str:
    """What a reader sees of ``big/key``: 'none', or 'whole' (and then the right bytes);
    also every manifest in the bucket names blobs that are all there, whole."""
    fresh = {"skip_instance_cache": True}  # the server restarted: no pooled connection
    remote = ObjectStore(url, fresh)
    for step, name in remote.entries():
        assert remote.trusted(step, name), f"a manifest of {step}/{name} was written too early"
    reader = RemoteBackend(url, local=tmp_path / f"reader-{key}", storage_options=fresh)
    entry = Store(url, backend=reader).lookup("big", key)
    if entry is None:
        return "none"
    for name, data in expected_files(seed).items():
        assert (entry.out_dir / name).read_bytes() == data
    return "whole"


CUTS = 6  # uploads cut of each kind (each costs a server restart or a process: ~2 s)


@pytest.mark.slow
def test_interrupted_uploads_leave_nothing_a_reader_accepts(
    url: str, server: S3Server, tmp_path: Path
) -> None:
    rng = random.Random(18)
    writer = Writer(url, tmp_path / "w0")
    took = []  # (the quickest of three: one slowed by a loaded machine put every cut
    for trial in range(3):  # after its manifest, and the test then cut nothing)
        started = time.perf_counter()
        writer.save(f"calibrate{trial}", f"c{trial}")
        assert writer.wait_done() == "done"
        took.append(time.perf_counter() - started)
    upload = min(took)
    outcomes = []
    try:
        for trial in range(CUTS):  # the server is stopped mid-upload
            key, seed = f"srv{trial}", f"s{trial}"
            writer.save(key, seed)
            time.sleep(rng.uniform(0.05, 1.0) * upload)
            server.stop()
            writer.wait_done()  # the save ends (the upload failed: the local entry stays)
            server.start()
            outcomes.append(check_store(url, tmp_path, key, seed))
    finally:
        writer.kill()
    for trial in range(CUTS):  # the writer process is SIGKILLed mid-upload
        key, seed = f"kill{trial}", f"k{trial}"
        writer = Writer(url, tmp_path / f"w{trial + 1}")
        writer.save(key, seed)
        time.sleep(rng.uniform(0.05, 1.0) * upload)
        os.kill(writer.process.pid, signal.SIGKILL)
        writer.kill()
        outcomes.append(check_store(url, tmp_path, key, seed))
    assert len(outcomes) == 2 * CUTS
    # some were cut off before the manifest (most, on an idle machine: the cuts fall at
    # random within one calibrated upload's time, which a loaded machine stretches)
    assert outcomes.count("none") >= 2, outcomes
    blobs = [o for o in listing(url) if o.startswith("blobs/")]
    manifests = [o for o in listing(url) if o.startswith("entries/")]
    assert len(manifests) == 3 + outcomes.count("whole")
    assert len(blobs) > 3 * len(manifests)  # some cut uploads left blobs, never a manifest


@pytest.mark.slow  # several seconds: on CI's main leg only
def test_large_files_stream_in_bounded_memory(url: str, tmp_path: Path) -> None:
    script = textwrap.dedent("""\
        import resource, sys
        import dagnb.cache.remote as remote
        from dagnb.cache import Store
        url, local, other = sys.argv[1:4]
        store = Store(url, backend=remote.RemoteBackend(url, local=local))
        out = store.scratch_dir("big")
        with open(out / "big.bin", "wb") as handle:
            for _ in range(192):
                handle.write(bytes(1 << 20))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        store.save("big", "k", out_dir=out)
        reader = Store(url, backend=remote.RemoteBackend(url, local=other))
        assert reader.lookup("big", "k") is not None
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script, url, str(tmp_path / "a"),
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 120  # MB: a 192 MB file moves in 32 MB parts, two at a time



def _slow_to_answer(monkeypatch: pytest.MonkeyPatch, method: str, seconds: float) -> None:
    """moto's server (a thread of this process) waits ``seconds`` before it answers
    ``method`` for a blob, as a busy S3 server storing what it was sent, or joining a
    large upload's parts, does."""
    from moto.s3.models import S3Backend

    real = getattr(S3Backend, method)

    def slow(backend: Any, bucket: str, name: str, *args: Any, **kwargs: Any) -> Any:
        if method != "put_object" or "/blobs/" in name:  # (a manifest is answered at once)
            time.sleep(seconds)
        return real(backend, bucket, name, *args, **kwargs)

    monkeypatch.setattr(S3Backend, method, slow)


@pytest.mark.slow  # seconds waited on the server: on CI's main leg only
@pytest.mark.parametrize(("method", "size"), [
    ("put_object", 1000), ("complete_multipart_upload", 11 << 20)])
def test_a_server_slow_to_store_a_blob_is_waited_for_not_taken_for_down(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, size: int
) -> None:
    """A blob's upload waited on the server as a lookup does (4 s): a 192 MB output sent to
    a busy moto was taken for down as its parts were joined, the entry stayed local and
    the store rested for a minute. A lookup still waits its short while (see the tests
    of a store that never answers)."""
    # a lookup's wait made short, yet long for a HEAD on a loaded CI machine (at 0.5 s, one
    # timed out once in a full run); the server's slowness more than twice as long
    monkeypatch.setattr(remote_module, "_S3_READ_TIMEOUT", 1.5)
    monkeypatch.setattr(remote_module, "_S3_CHUNK", 5 << 20)  # S3's least part: 3 parts
    _slow_to_answer(monkeypatch, method, 3.5)
    data = os.urandom(size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a RemoteCacheWarning: the upload failed)
        save(store(url, tmp_path / "a"), "step", "k", {"data.bin": data})
    entry = store(url, tmp_path / "b").lookup("step", "k")
    assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == data


class AnswerLost(Recording):
    """The real client, whose uploads fail once sent: having stored the blob (the answer
    lost: a completion the server ended after the client's wait ran out) or not."""

    def __init__(self, fs: Any, stored: bool) -> None:
        super().__init__(fs)
        self.stored = stored

    def put_file(self, local: str, remote: str, **options: Any) -> Any:
        if self.stored:
            self.fs.put_file(local, remote, **options)
        raise OSError("no such upload (the server's answer to the first attempt was lost)")


@pytest.mark.parametrize("stored", [True, False])
def test_an_upload_whose_answer_was_lost_counts_if_the_blob_is_there(
    url: str, tmp_path: Path, stored: bool
) -> None:
    """A blob stored whole by an upload that failed after all (its answer lost) is as
    sent: the store was taken for down, rested a minute and the entry stayed local. One
    not stored still fails the upload, and no manifest names it."""
    writer = store(url, tmp_path / "a")
    remote = writer.backend.remote
    remote.transfers = AnswerLost(remote.transfers, stored)
    data = os.urandom(3000)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        save(writer, "step", "k", {"data.bin": data})
    failed = [str(w.message) for w in said if issubclass(w.category, RemoteCacheWarning)]
    entry = store(url, tmp_path / "b").lookup("step", "k")
    if stored:
        assert failed == []
        assert entry is not None and (entry.out_dir / "data.bin").read_bytes() == data
    else:
        assert len(failed) == 1 and "an upload failed (OSError: no such upload" in failed[0]
        assert entry is None and not [o for o in listing(url) if o.startswith("entries/")]

def test_read_only_runs_use_the_store_and_write_nothing_to_it(url: str, tmp_path: Path) -> None:
    counter = tmp_path / "executions.txt"
    (tmp_path / "wf.yml").write_text(WORKFLOW.format(counter=counter))
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {url}\n")
    assert run_workflow(tmp_path, "local-a").returncode == 0
    before = listing(url)
    extra = f"  extra:\n    run: echo extra >> {counter}\n"
    (tmp_path / "wf.yml").write_text(WORKFLOW.format(counter=counter) + extra)
    done = run_workflow(tmp_path, "local-b", "--cache-mode", "read-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 cached" in done.stdout and "1 succeeded" in done.stdout
    assert listing(url) == before  # the new step's entry was not uploaded


def test_a_packed_entry_pushed_and_pulled_stays_intact(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A packed entry travels as a folder; `verify` checks it against its inline result."""
    local = Store(tmp_path / "a")
    local.save("s", "k1", out_dir=None, inline={"json": {"v": 1}},
               logs=[{"time": 1.0, "attempt": 1, "stream": "stdout", "line": "hi"}])
    local.close()
    assert main(["cache", "push", url, "--cache-dir", str(tmp_path / "a")]) == 0
    assert main(["cache", "pull", url, "--cache-dir", str(tmp_path / "b")]) == 0
    assert "1 entry copied" in capsys.readouterr().out
    with isolated():
        pulled = Store(tmp_path / "b").lookup("s", "k1")
        assert pulled.result() == {"v": 1} and [r["line"] for r in pulled.logs()] == ["hi"]
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "b")]) == 0
    assert "all intact" in capsys.readouterr().out


def test_a_cache_directory_argument_holding_credentials_is_refused_redacted(
        project: Path) -> None:
    graph = dagnb.Graph("g", [dagnb.Step("a", run="true")])
    with pytest.raises(ConfigError, match=r"cache directory 's3://\*\*\*@bucket/x' is not valid"):
        graph.run(cache_directory="s3://AKIAXXX:hunter2@bucket/x", executor="local")
    with pytest.raises(CacheError, match="without user or password") as err:
        Store("s3://AKIAXXX:hunter2@bucket/x")
    assert "hunter2" not in str(err.value) and "AKIAXXX" not in str(err.value)


@pytest.mark.slow  # a process started, and stopped mid-pull
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_pull_stopped_by_ctrl_c_or_a_ci_cancel_says_so_in_one_line(
    silent: _SilentEndpoint, tmp_path: Path, number: int
) -> None:
    """It printed a 30-line traceback (SIGTERM: `dagnb.cli.Terminated`, exit 1), where an
    interrupted `dagnb run` says one line and exits 128 + the signal's number."""
    env = {**os.environ, "AWS_ENDPOINT_URL": silent.url, "DAGNB_CONFIG": "none"}
    pull = subprocess.Popen(
        [sys.executable, "-m", "dagnb", "cache", "pull", "s3://hung/cache", "--cache-dir",
         str(tmp_path / "c")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert wait_until(lambda: silent.connections, timeout=20)  # waiting on the store
    pull.send_signal(number)
    _, err = pull.communicate(timeout=30)
    assert pull.returncode == 128 + number, err
    assert err.splitlines()[-1] == ("dagnb: interrupted; the entries pulled so far are "
                                    "whole and kept: run it again to copy the rest")
    assert "Traceback" not in err


@pytest.mark.parametrize(("count", "entries", "their", "them"), [
    (1, "1 entry", "its step runs", "it"), (2, "2 entries", "their steps run", "them")])
def test_the_transfer_line_says_one_entry_and_its_step_in_the_singular(
    count: int, entries: str, their: str, them: str
) -> None:
    """It said "push: 1 entries copied" (and "their steps run" of one entry)."""
    done = Transfer()
    done.copied = done.unusable = done.damaged = count
    assert done.line("pull") == (
        f"pull: {entries} copied, 0 already there, {count} not usable (a file missing or "
        f"damaged in the store: {their} again; dagnb cache push --check from a machine "
        f"that has {them} mends {them}), {count} left out (damaged here: set aside, {their} "
        "again), 0 bytes")


@pytest.mark.parametrize(("step", "key"), [("..", "project"), (".git", "k"), ("step", ".git")])
def test_a_pull_leaves_alone_a_store_object_named_as_no_entry_is(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], step: str, key: str) -> None:
    """A store holding ``entries/../project.json`` had its entry pulled to
    ``<cache>/../project``, replacing the user's folder of that name beside the cache
    folder (a '.git' there, a project's sources)."""
    writer = store(url, tmp_path / "a")
    save(writer, "step", "good", {"v.txt": b"from the store"})
    manifest = json.loads(fs_cat(url, "entries/step/good.json"))
    manifest.update(step=step, key=key)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{url.removeprefix('s3://')}/entries/{step}/{key}.json",
                 json.dumps(manifest).encode())
    mine = tmp_path / "project" / "mine.txt"
    mine.parent.mkdir()
    mine.write_text("the user's")
    cache = tmp_path / "cache"
    named = re.escape(f"store object 'entries/{step}/{key}.json' is named as no cache entry is")
    with pytest.warns(RemoteCacheWarning, match=named):
        assert main(["cache", "pull", url, "--cache-dir", str(cache)]) == 0
    assert "pull: 1 entry copied" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "cache", "project"]
    assert [p.name for p in mine.parent.iterdir()] == ["mine.txt"]
    assert mine.read_text() == "the user's"
    assert not (cache / step / key / "meta.json").exists()
    assert (cache / "step" / "good" / "out" / "v.txt").read_bytes() == b"from the store"
