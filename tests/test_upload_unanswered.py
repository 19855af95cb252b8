"""A store that takes the connection and never answers, met by a run's held upload.

A refresh's upload goes straight to sending the entry's blobs; s3fs asks S3 with
``Expect: 100-continue``, and botocore's read timeout starts only once a request's body is
sent: a store that never answers held the run as long as it kept the line, and SIGTERM did
not end it (the upload's threads were joined at exit). The store here is a TCP server on
127.0.0.1 that accepts and reads, answers a read that there is nothing (the refresh looks
at the store's manifest first), and never says a word to an upload. The entry is in the
tier first (a run whose store refused the connection).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb.testing import signalled_once

pytest.importorskip("s3fs")

WORKFLOW = """\
name: quiet
steps:
  h:
    run: |
      echo one > "$DAGNB_OUT/one.txt"
      echo two > "$DAGNB_OUT/two.txt"
"""
URL = "s3://bucket/cache"


class SilentStore:
    """A server that accepts connections, reads what it is sent, answers a GET or a HEAD
    that there is no such object, and never answers anything else (an upload)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.received = b""
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # (closed)
                return
            self._connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += data
            if data.startswith((b"GET ", b"HEAD ")):
                connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def put_begun(self) -> bool:
        with self._lock:
            return b"PUT /bucket/cache/blobs/" in self.received

    def close(self) -> None:
        self._socket.close()
        for connection in self._connections:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentStore]:
    store = SilentStore()
    yield store
    store.close()


def _folder(tmp_path: Path) -> Path:
    """A folder with the workflow, its entry in the tier only (marked unsent)."""
    (tmp_path / "quiet.yml").write_text(WORKFLOW)
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {URL}\n")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    first = subprocess.run(_COMMAND[:-1], cwd=tmp_path, env=_env(tmp_path, nowhere, "1"),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _unsent(tmp_path) == ["h"]
    return tmp_path


def _env(folder: Path, endpoint: str, deadline: str) -> dict[str, str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "AWS_MAX_ATTEMPTS": "1", "DAGNB_CACHE_LOCAL_DIRECTORY": str(folder / "tier"),
           "DAGNB_CONFIG": str(folder / "dagnb.yaml"),
           "DAGNB_CACHE_UPLOAD_TIMEOUT_SECONDS": deadline,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("AWS_PROFILE", None)
    return env


_COMMAND = [sys.executable, "-m", "dagnb.cli", "run", "quiet.yml", "--executor", "local",
            "--refresh"]


def _unsent(folder: Path) -> list[str]:
    return [path.parent.name for path in (folder / "tier" / ".unsent").glob("*/*")]


def test_a_held_upload_the_store_never_answers_is_given_up_and_said(
        tmp_path: Path, silent: SilentStore) -> None:
    folder = _folder(tmp_path)
    started = time.monotonic()
    run = subprocess.run(_COMMAND, cwd=folder, env=_env(folder, silent.endpoint, "1"),
                         capture_output=True, text=True, timeout=30)
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert silent.put_begun(), "the run never began its upload"
    line = (f"remote cache {URL!r} did not answer an upload for 1 s "
            "(cache_upload_timeout_seconds): 1 entry left unsent, kept in the local tier; "
            "the next run served it from the tier uploads it, or dagnb cache push does")
    assert line in run.stderr, run.stderr
    assert run.stderr.count("did not answer") == 1, run.stderr
    assert "testing" not in run.stderr  # (no credential in what is said)
    assert _unsent(folder) == ["h"]  # a later run, or a push, sends it
    assert took < 15, f"the run took {took:.1f} s"


def test_sigterm_ends_a_run_stuck_on_an_upload_the_store_never_answers(
        tmp_path: Path, silent: SilentStore) -> None:
    folder = _folder(tmp_path)
    run = subprocess.Popen(_COMMAND, cwd=folder, env=_env(folder, silent.endpoint, "10m"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stuck() -> bool:
        if not silent.put_begun():
            return False
        time.sleep(0.5)  # (stuck there: the store says nothing)
        return True

    out, err, took = signalled_once(run, stuck, signal.SIGTERM, timeout=20)
    assert run.returncode == 128 + signal.SIGTERM, out + err
    assert "h's entry was not uploaded to" in err, err
    assert _unsent(folder) == ["h"]
    assert took < 5, f"SIGTERM took {took:.1f} s to end the run"
    print(f"SIGTERM ended the run in {took:.1f} s")
