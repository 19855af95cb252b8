"""A pull leaves alone a tier's entry that a run going on uses.

``dagnb cache pull`` replaced a local entry with a teammate's newer copy (their
``--refresh``) while a running step read it as its input: the step read half of each,
succeeded, and its entry, a mix, went to the shared store. As a prune and a save leave
an entry a live run lists in its ``.uses``, a pull now keeps it, says so, and a pull
once the run ended replaces it. moto's S3 server (test_remote_cache's fixtures) and
real ``dagnb`` processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_remote_cache as shared
import test_remote_session68 as session68

from dagnb.cache import Store
from dagnb.cache.housekeeping import RUN_USES, RUNS_STARTED
from dagnb.cache.remote import ObjectStore
from dagnb.cli import main

pytest.importorskip("s3fs")

server, url = shared.server, shared.url  # the fixtures: moto's S3 server, a fresh bucket
_fresh_clients = session68._fresh_clients  # (autouse)

WORKFLOW = """\
name: pull
steps:
  up:
    run: head -c 2000000 /dev/urandom > "$DAGNB_OUT/u.bin"
  mid:
    needs: [up]
    run: |
      md5sum < "$DAGNB_IN/up/u.bin" > "{marks}/first.txt"
      for i in $(seq 300); do [ -e "{marks}/go" ] && break; sleep 0.1; done
      md5sum < "$DAGNB_IN/up/u.bin" > "{marks}/second.txt"
      cp "{marks}/first.txt" "{marks}/second.txt" "$DAGNB_OUT/"
"""


def _env(machine: Path) -> dict[str, str]:
    """A machine's environment: its own local tier, the fixture's store credentials."""
    machine.mkdir(exist_ok=True)
    return {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(machine / "tier"),
            "DAGNB_CONFIG": "none"}


def _run(machine: Path, url: str, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "run", "../pull.yml", "--cache-dir", url,
         "--executor", "local", *options],
        cwd=machine, env=_env(machine), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _pull(machine: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "cache", "pull", url,
         "--cache-dir", str(machine / "tier")],
        cwd=machine, env=_env(machine), capture_output=True, text=True, timeout=120)


def _wait_for(path: Path, running: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_pull_keeps_an_entry_a_running_step_reads_and_replaces_it_once_the_run_ends(
        url: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "pull.yml").write_text(WORKFLOW.format(marks=marks))
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _run(alice, url, "--target", "up")
    _run(bob, url, "--target", "up")  # (bob's tier: alice's entry, downloaded)
    _run(alice, url, "--target", "up", "--refresh")  # a newer entry of the same key
    running = subprocess.Popen(
        [sys.executable, "-m", "dagnb.cli", "run", "../pull.yml", "--cache-dir", url,
         "--executor", "local"],
        cwd=bob, env=_env(bob), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marks / "first.txt", running)  # mid has read its input once
        pulled = _pull(bob, url)
    finally:
        (marks / "go").touch()
        out, err = running.communicate(timeout=120)
    assert running.returncode == 0, out + err
    first, second = (marks / "first.txt").read_text(), (marks / "second.txt").read_text()
    assert first == second, "the step read two versions of its input"
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert (f"(1 kept: a run going on uses it (pid {running.pid}); pull again once it ends)"
            in pulled.stdout), pulled.stdout
    assert "replaced" not in pulled.stdout, pulled.stdout
    again = _pull(bob, url)  # the run ended: the newer copy comes now
    assert again.returncode == 0, again.stderr
    assert "1 entry copied (1 replaced by a newer copy)" in again.stdout, again.stdout


# -- a run going on, as its folder under the tier's .runs says ------------------------------
@contextlib.contextmanager
def _live_run(tier: Path, *uses: tuple[str, str]) -> Iterator[str]:
    """A run going on in ``tier`` (its folder's lease held) that lists ``uses`` in its
    ``.uses``, as a run does before it hands them to its steps; yields ``pid N``."""
    folder = tier / ".runs" / f"run-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / RUN_USES).write_text("".join(f"{step}\t{key}\n" for step, key in uses))
    with open(tier / ".runs" / RUNS_STARTED, "a") as started:
        started.write(json.dumps({"run": folder.name, "pid": os.getpid()}) + "\n")
    lease = os.open(folder, os.O_RDONLY)
    fcntl.flock(lease, fcntl.LOCK_EX)
    try:
        yield f"pid {os.getpid()}"
    finally:
        os.close(lease)  # (the lease goes with it: the run ended)


def _save(target: Store, step: str, data: bytes, *, refresh: bool = False,
          ttl: float | None = None) -> None:
    out = target.scratch_dir(step)
    (out / "v.txt").write_bytes(data)
    target.save(step, "k", out_dir=out, refresh=refresh, ttl=ttl)


def _served(tier: Path, url: str, step: str = "load") -> bytes:
    entry = shared.store(url, tier).lookup(step, "k")
    assert entry is not None
    return (entry.out_dir / "v.txt").read_bytes()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_pull_compares_a_kept_entry_again_after_newer_ones(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The next pull reads again only the manifests written since the last one's newest:
    an entry kept must not fall behind one written after it."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _save(shared.store(url, alice), "load", b"monday")
    assert main(["cache", "pull", url, "--cache-dir", str(bob)]) == 0
    time.sleep(1.1)  # (the store's times: to the second)
    _save(shared.store(url, alice), "load", b"tuesday", refresh=True)
    time.sleep(1.1)
    _save(shared.store(url, alice), "late", b"wednesday")  # listed as newer
    capsys.readouterr()
    with _live_run(bob, ("load", "k")) as user:
        assert main(["cache", "pull", url, "--cache-dir", str(bob)]) == 0
        said = capsys.readouterr().out
        assert (f"pull: 1 entry copied, 1 already there (1 kept: a run going on uses it "
                f"({user}); pull again once it ends)") in said, said
        assert _served(bob, url) == b"monday"
    assert main(["cache", "pull", url, "--cache-dir", str(bob)]) == 0
    said = capsys.readouterr().out
    assert "pull: 1 entry copied (1 replaced by a newer copy)" in said, said
    assert _served(bob, url) == b"tuesday"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_pull_leaves_an_expired_entry_a_live_run_uses(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pull removes an expired local entry and downloads the store's copy: not one a
    run going on uses (it expired as the run read it)."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _save(shared.store(url, alice), "load", b"alice's")
    _save(Store(bob), "load", b"bob's", ttl=1)  # (this tier's own, not sent)
    time.sleep(1.1)
    capsys.readouterr()
    with _live_run(bob, ("load", "k")) as user:
        assert main(["cache", "pull", url, "--cache-dir", str(bob)]) == 0
        said = capsys.readouterr().out
        assert (f"pull: 0 entries copied, 1 already there (1 kept: a run going on uses it "
                f"({user}); pull again once it ends)") in said, said
        assert (bob / "load" / "k" / "out" / "v.txt").read_bytes() == b"bob's"
    assert main(["cache", "pull", url, "--cache-dir", str(bob)]) == 0
    assert "pull: 1 entry copied" in capsys.readouterr().out
    assert _served(bob, url) == b"alice's"


def test_a_lookups_download_leaves_a_folder_a_live_run_took_up_meanwhile(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup downloads what the tier lacks; the tier's folder of the key that another
    process put there meanwhile (its own download, of the store's older copy) and that a
    run now reads stays: the download does not replace it under that run's step."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _save(shared.store(url, alice), "load", b"monday")
    assert _served(bob, url) == b"monday"
    other = tmp_path / "other-process"
    shutil.move(bob / "load" / "k", other)  # (as if not fetched yet here)
    _save(shared.store(url, alice), "load", b"tuesday", refresh=True)
    real = ObjectStore.download

    def download_while_another_process_fetches(self: ObjectStore, step: str, key: str,
                                               into: Path) -> int | None:
        moved = real(self, step, key, into)
        shutil.move(other, bob / "load" / "k")  # the other process's, in use now
        running.enter_context(_live_run(bob, ("load", "k")))
        return moved

    monkeypatch.setattr(ObjectStore, "download", download_while_another_process_fetches)
    with contextlib.ExitStack() as running:
        assert _served(bob, url) == b"monday"  # the one the run reads: one version
        assert (bob / "load" / "k" / "out" / "v.txt").read_bytes() == b"monday"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_refresh_on_a_store_url_keeps_the_entry_a_live_run_reads(
        url: str, tmp_path: Path) -> None:
    """A refresh (a rebuild) on a store URL replaced the tier's folder a running step was
    reading from, as on a local folder it does not: it is kept, and so is the store's
    copy (the result is not stored, said once); once the run ended, a refresh stores."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _save(shared.store(url, bob), "load", b"monday")
    with _live_run(bob, ("load", "k")) as user:
        with pytest.warns(UserWarning, match=f"not stored: entry load/k in use by a live "
                          rf"run \({user}\)"):
            _save(shared.store(url, bob), "load", b"tuesday", refresh=True)
        assert (bob / "load" / "k" / "out" / "v.txt").read_bytes() == b"monday"
    assert _served(alice, url) == b"monday"  # (the store's copy: not replaced either)
    _save(shared.store(url, bob), "load", b"tuesday", refresh=True)
    assert (bob / "load" / "k" / "out" / "v.txt").read_bytes() == b"tuesday"
    assert _served(tmp_path / "carol", url) == b"tuesday"
