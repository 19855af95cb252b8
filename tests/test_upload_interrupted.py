"""Ctrl-C during a step's upload to a store URL: said, its parts aborted, sent later.

A run interrupted as it uploaded an entry said nothing of it ("h succeeded ...
interrupted"), left S3 the multipart upload it had begun (billed until aborted), and the
entry local only: later runs served it from the tier and never sent it, so teammates
computed it again. moto's S3 server runs in this process (test_remote_cache's fixtures),
and its ``upload_part`` is held until the test lets it go: the run is interrupted
(SIGINT, a real ``dagnb run`` in a subprocess) while its upload waits on a part.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_remote_cache as shared

from dagnb.testing import signalled_once

s3fs = pytest.importorskip("s3fs")
moto_s3 = pytest.importorskip("moto.s3.models")

server, url, listing = shared.server, shared.url, shared.listing

# more than two of s3fs' 32 MB parts: sent as a multipart upload
WORKFLOW = """\
name: huge
steps:
  h:
    run: head -c 70000000 /dev/zero > "$DAGNB_OUT/big.bin"
"""


class HeldParts:
    """The S3 server's ``upload_part``, held until :meth:`let_go` while holding is on."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def let_go(self) -> None:
        self.released.set()


@pytest.fixture
def held_parts(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldParts]:
    held, real = HeldParts(), moto_s3.S3Backend.upload_part

    def upload_part(backend: Any, *args: Any, **kwargs: Any) -> Any:
        held.arrived.set()
        held.released.wait(60)
        return real(backend, *args, **kwargs)

    monkeypatch.setattr(moto_s3.S3Backend, "upload_part", upload_part)
    yield held
    held.let_go()  # (a failed test leaves no server thread waiting)


def _env(folder: Path, tier: str) -> dict[str, str]:
    return {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / tier),
            "DAGNB_CONFIG": str(folder / "dagnb.yaml")}


def _start(folder: Path, tier: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dagnb.cli", "run", "huge.yml", "--executor", "local"],
        cwd=folder, env=_env(folder, tier), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _run(folder: Path, tier: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "run", "huge.yml", "--executor", "local"],
        cwd=folder, env=_env(folder, tier), capture_output=True, text=True, timeout=180)


def _multipart_uploads(url: str) -> list[dict[str, Any]]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = url.removeprefix("s3://").partition("/")[0]
    return fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])


def _workflow(folder: Path, url: str) -> None:
    (folder / "huge.yml").write_text(WORKFLOW)
    (folder / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {url}\n")


def _interrupted_at_upload(folder: Path, held: HeldParts) -> tuple[str, str, float]:
    """A run of huge.yml given SIGINT once its upload waits on a part: its stdout, its
    stderr, and the seconds from the SIGINT to its exit."""
    said = signalled_once(_start(folder, "tier"), held.arrived.is_set, signal.SIGINT,
                          wait=120)
    held.let_go()
    return said


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_an_upload_cut_by_ctrl_c_is_said_and_its_parts_aborted(
        url: str, tmp_path: Path, held_parts: HeldParts) -> None:
    _workflow(tmp_path, url)
    out, err, took = _interrupted_at_upload(tmp_path, held_parts)
    assert "h" in out and "succeeded" in out, out + err
    line = (f"h's entry was not uploaded to {url}: the run was interrupted; "
            "dagnb cache push sends it")
    assert line in err, err
    assert err.count("was not uploaded") == 1, err
    assert _multipart_uploads(url) == []  # aborted: S3 bills the parts until then
    assert not any(name.startswith("entries/") for name in listing(url))
    assert took < 10, f"Ctrl-C took {took:.1f} s to end the run"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_the_next_run_that_finds_it_in_the_tier_uploads_it(
        url: str, tmp_path: Path, held_parts: HeldParts) -> None:
    _workflow(tmp_path, url)
    _interrupted_at_upload(tmp_path, held_parts)
    assert not any(name.startswith("entries/h/") for name in listing(url))
    later = _run(tmp_path, "tier")
    assert later.returncode == 0, later.stdout + later.stderr
    assert "1 cached" in later.stdout, later.stdout
    assert "was not uploaded" not in later.stderr, later.stderr
    assert any(name.startswith("entries/h/") for name in listing(url))
    assert _multipart_uploads(url) == []
    teammate = _run(tmp_path, "teammate-tier")  # another machine: served, not computed
    assert teammate.returncode == 0, teammate.stdout + teammate.stderr
    assert "1 cached" in teammate.stdout, teammate.stdout
    again = _run(tmp_path, "tier")  # sent once: the tier's note of it is gone
    assert "1 cached" in again.stdout, again.stdout
    assert not list((tmp_path / "tier" / ".unsent").glob("*/*"))


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_an_entry_saved_while_the_store_was_down_is_sent_by_the_next_run(
        url: str, tmp_path: Path, server: shared.S3Server) -> None:
    """The store's warning said the entry stayed local; the runs after it served it
    from the tier and never sent it."""
    (tmp_path / "huge.yml").write_text(
        WORKFLOW.replace("head -c 70000000 /dev/zero", "echo small"))
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {url}\n")
    server.stop()
    try:
        down = _run(tmp_path, "tier")
    finally:
        server.start()
    assert down.returncode == 0, down.stdout + down.stderr
    assert "entries saved meanwhile stay local" in down.stderr, down.stderr
    assert not any(name.startswith("entries/h/") for name in listing(url))
    later = _run(tmp_path, "tier")
    assert later.returncode == 0, later.stdout + later.stderr
    assert "1 cached" in later.stdout, later.stdout
    assert any(name.startswith("entries/h/") for name in listing(url))
    assert "1 cached" in _run(tmp_path, "teammate-tier").stdout
