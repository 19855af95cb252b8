"""A refresh saved while the store was down replaces the store's copy once it is back.

The refresh's upload failed, so the tier noted the entry unsent and its replacement
owed. The next run's hit sent it as a first save would, which keeps another writer's
entry: the store kept the output the refresh replaced, and the tier's notes were cleared
as if sent. moto's S3 server runs in this process (test_remote_cache's fixtures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_remote_cache as shared

s3fs = pytest.importorskip("s3fs")

server, url = shared.server, shared.url

WORKFLOW = """\
name: stamp
steps:
  s:
    run: date +%s%N | tee "$DAGNB_OUT/t.txt" > last.txt
"""


def _run(folder: Path, tier: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / tier),
           "DAGNB_CONFIG": str(folder / "dagnb.yaml")}
    run = subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "run", "stamp.yml", "--executor", "local", *extra],
        cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def _stored_stamp(url: str) -> str:
    """The ``t.txt`` of the store's one entry of step ``s``, read from its blob."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    (manifest_path,) = fs.glob(f"{root}/entries/s/*")
    files = json.loads(fs.cat_file(manifest_path))["files"]
    (digest, _), = [ref for name, ref in files.items() if name.endswith("t.txt")]
    return fs.cat_file(f"{root}/blobs/{digest}").decode()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_refresh_saved_while_the_store_was_down_replaces_its_copy_at_the_next_run(
        url: str, tmp_path: Path, server: shared.S3Server) -> None:
    (tmp_path / "stamp.yml").write_text(WORKFLOW)
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {url}\n")
    _run(tmp_path, "tier")
    first = (tmp_path / "last.txt").read_text()
    assert _stored_stamp(url) == first
    server.stop()
    try:
        down = _run(tmp_path, "tier", "--refresh")
    finally:
        server.start()
    assert "entries saved meanwhile stay local" in down.stderr, down.stderr
    refreshed = (tmp_path / "last.txt").read_text()
    assert refreshed != first
    assert "1 cached" in _run(tmp_path, "tier").stdout
    assert _stored_stamp(url) == refreshed  # (the store kept `first`)
    assert not list((tmp_path / "tier" / ".unsent").glob("*/*"))
    assert "1 cached" in _run(tmp_path, "teammate-tier").stdout
    assert (tmp_path / "last.txt").read_text() == refreshed  # (served: not run again)
