"""A store that takes the connection and never answers, met by a run's held upload, a push,
and a save outside a run (``Store.save``, a ``Memory``'s).

A refresh's upload goes straight to sending the entry's blobs; s3fs asks S3 with
``Expect: 100-continue``, and botocore's read timeout starts only once a request's body is
sent: a store that never answers held the run as long as it kept the line, and SIGTERM did
not end it (the upload's threads were joined at exit). The store here is a TCP server on
127.0.0.1 that accepts and reads, answers a read that there is nothing (the refresh looks
at the store's manifest first), and never says a word to an upload. The entry is in the
tier first (a run whose store refused the connection).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
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
TWO_STEPS = WORKFLOW + """\
  g:
    run: echo three > "$DAGNB_OUT/three.txt"
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
        return bool(self.puts_begun())

    def puts_begun(self) -> list[bytes]:
        """The blobs an upload was begun of, each as often as it was."""
        with self._lock:
            return re.findall(rb"PUT /bucket/cache/blobs/(\S+) ", self.received)

    def close(self) -> None:
        self._socket.close()
        for connection in self._connections:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentStore]:
    store = SilentStore()
    yield store
    store.close()


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with the bucket of :data:`URL`: its endpoint."""
    server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    running = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    running.start()
    endpoint = f"http://127.0.0.1:{running.get_host_and_port()[1]}"
    for name, value in _env(tmp_path, endpoint, "1").items():  # (where botocore reads them)
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # (moto keeps what it stores in this process, whichever server: a bucket of another
    # test's would be there)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset",
                                                  method="POST"), timeout=10).close()
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bucket")
    yield endpoint
    running.stop()


def _folder(tmp_path: Path, workflow: str = WORKFLOW) -> Path:
    """A folder with the workflow, its entries in the tier only (marked unsent)."""
    (tmp_path / "quiet.yml").write_text(workflow)
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {URL}\n")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    first = subprocess.run(_COMMAND[:-1], cwd=tmp_path, env=_env(tmp_path, nowhere, "1"),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _unsent(tmp_path) == (["h"] if workflow == WORKFLOW else ["g", "h"])
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


_PUSH = [sys.executable, "-m", "dagnb.cli", "cache", "push"]


def _unsent(folder: Path) -> list[str]:
    return sorted(path.parent.name for path in (folder / "tier" / ".unsent").glob("*/*"))


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


@pytest.mark.parametrize(("command", "said"), [
    (_COMMAND, "h's entry was not uploaded to"),  # a run's upload, held
    (_PUSH, "dagnb: interrupted"),  # a push's, outside a run
], ids=["run", "push"])
def test_sigterm_ends_what_is_stuck_on_an_upload_the_store_never_answers(
        tmp_path: Path, silent: SilentStore, command: list[str], said: str) -> None:
    folder = _folder(tmp_path)
    process = subprocess.Popen(command, cwd=folder, env=_env(folder, silent.endpoint, "10m"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stuck() -> bool:
        if not silent.put_begun():
            return False
        time.sleep(0.5)  # (stuck there: the store says nothing)
        return True

    out, err, took = signalled_once(process, stuck, signal.SIGTERM, timeout=20)
    assert process.returncode == 128 + signal.SIGTERM, out + err
    assert said in err, err
    assert _unsent(folder) == ["h"]
    assert took < 5, f"SIGTERM took {took:.1f} s to end it"


def test_a_push_the_store_never_answers_is_given_up_said_and_loses_nothing(
        tmp_path: Path, silent: SilentStore, moto: str) -> None:
    folder = _folder(tmp_path, TWO_STEPS)
    started = time.monotonic()
    push = subprocess.run(_PUSH, cwd=folder, env=_env(folder, silent.endpoint, "1"),
                          capture_output=True, text=True, timeout=30)
    took = time.monotonic() - started
    assert silent.put_begun(), "the push never began its upload"
    assert push.returncode == 1, push.stdout + push.stderr
    line = (f"dagnb: remote cache {URL!r} did not answer an upload for 1 s "
            "(cache_upload_timeout_seconds): 2 entries left unsent, kept in the local "
            "cache; push again once the store answers")
    assert line in push.stderr.splitlines(), push.stderr
    assert "push: 0 entries copied" in push.stdout, push.stdout
    assert "testing" not in push.stderr  # (no credential in what is said)
    assert took < 15, f"the push took {took:.1f} s"
    assert _unsent(folder) == ["g", "h"]  # (the tier's entries, as they were)
    again = subprocess.run(_PUSH, cwd=folder, env=_env(folder, moto, "1"),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "push: 2 entries copied, 0 already there" in again.stdout, again.stdout


_SAVE = """\
import sys, time
from dagnb.cache import RemoteBackend, Store, sync
url = "s3://bucket/cache"
store = Store(url, backend=RemoteBackend(url, local=sys.argv[1]))
out = store.scratch_dir("f")
(out / "data.txt").write_text("data")
started = time.monotonic()
store.save("f", "k1", out_dir=out)
print(f"saved in {time.monotonic() - started:.1f} s", flush=True)
for _ in range(2):  # (in a kernel: the entry's upload given up still goes on)
    done = sync("push", local=sys.argv[1])
    print(done.unanswered_line(), flush=True)
"""


def test_a_save_outside_a_run_the_store_never_answers_is_given_up_and_said(
        tmp_path: Path, silent: SilentStore, moto: str) -> None:
    (tmp_path / "dagnb.yaml").write_text(f"workflow_defaults:\n  cache_directory: {URL}\n")
    env = _env(tmp_path, silent.endpoint, "1")
    save = subprocess.run([sys.executable, "-c", _SAVE, str(tmp_path / "tier")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert save.returncode == 0, save.stdout + save.stderr
    assert "saved in 1." in save.stdout, save.stdout + save.stderr  # (within the deadline)
    said = (f"remote cache {URL!r} did not answer an upload for 1 s "
            "(cache_upload_timeout_seconds): 1 entry left unsent, kept in the local tier "
            "(as are those saved in the next 10 minutes); dagnb cache push sends them once "
            "the store answers")
    assert said in save.stderr, save.stderr
    assert "testing" not in save.stderr
    # the pushes after it, in the same process, start no second upload of the entry whose
    # upload still hangs: they say so at once (one more thread left at each, before)
    pushed = (f"remote cache {URL!r} did not answer an upload for 1 s "
              "(cache_upload_timeout_seconds): 1 entry left unsent, kept in the local cache; "
              "push again once the store answers")
    assert save.stdout.count(pushed) == 2, save.stdout
    time.sleep(0.5)  # (what the server was sent, read)
    puts = silent.puts_begun()
    assert puts and len(puts) == len(set(puts)), f"uploads begun: {puts}"
    assert _unsent(tmp_path) == ["f"]
    later = subprocess.run([*_PUSH, "--cache-dir", str(tmp_path / "tier")], cwd=tmp_path,
                           env=_env(tmp_path, moto, "1"), capture_output=True, text=True,
                           timeout=60)
    assert later.returncode == 0, later.stdout + later.stderr
    assert "push: 1 entry copied, 0 already there" in later.stdout, later.stdout
