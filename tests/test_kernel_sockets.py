"""`dagnb run NOTEBOOK`'s kernel, and the kernels the tests start, talk over Unix
sockets: none can lose jupyter_client's TCP port race (CI: another process took a port
picked for the kernel, which died with `Address already in use`, and the run failed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat as nbf
import pytest
import zmq
from jupyter_client import KernelManager
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, start_new_kernel

from dagnb.notebook import kernel_sockets
from dagnb.notebook.kernel_sockets import ipc_kernel_manager, use_ipc_sockets

unix_only = pytest.mark.skipif(os.name == "nt", reason="Windows kernels keep TCP")

_TRANSPORT = ("import json, ipykernel.connect\n"
              "print('transport:', json.loads(ipykernel.connect.get_connection_info())"
              "['transport'])")

# `dagnb run`, with every port jupyter_client picks for the kernel one another process
# holds already: the race lost, every time
_PORTS_TAKEN = textwrap.dedent("""\
    import socket, sys
    from jupyter_client.connect import LocalPortCache
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    LocalPortCache.find_available_port = lambda self, ip: held.getsockname()[1]
    from dagnb.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def _notebook(folder: Path, *sources: str) -> Path:
    path = folder / "nb.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell(s) for s in sources]), path)
    return path


@pytest.fixture
def temporary() -> Iterator[Path]:
    """A new temporary folder whose path is short (``tmp_path``'s can pass AF_UNIX's
    limit, and a kernel there keeps TCP)."""
    folder = Path(tempfile.mkdtemp())
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(argv: list[str], cwd: Path, temporary: Path) -> subprocess.CompletedProcess[str]:
    """``argv`` in a process of its own (not this one's patched jupyter_client), with
    ``temporary`` as its temporary folder."""
    env = {**os.environ, "DAGNB_CONFIG": "none", "TMPDIR": str(temporary)}
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@unix_only
@pytest.mark.slow
def test_dagnb_run_succeeds_when_another_process_took_the_ports_picked_for_its_kernel(
        tmp_path: Path, temporary: Path) -> None:
    """It failed: the kernel died before replying, `Address already in use`."""
    path = _notebook(tmp_path, "print('ran', 6 * 7)")
    done = _run(["-c", _PORTS_TAKEN, "run", path.name], tmp_path, temporary)
    assert done.returncode == 0, done.stderr
    assert "ran 42" in done.stdout


@unix_only
@pytest.mark.slow
def test_dagnb_runs_its_kernel_on_unix_sockets_and_leaves_none_behind(
        tmp_path: Path, temporary: Path) -> None:
    """The kernel was on TCP."""
    path = _notebook(tmp_path, _TRANSPORT)
    done = _run(["-m", "dagnb.cli", "run", path.name], tmp_path, temporary)
    assert done.returncode == 0, done.stderr
    assert "transport: ipc" in done.stdout
    assert not [p.name for p in temporary.glob("kernel-*")]  # connection file, sockets


def _manager(**traits: object) -> KernelManager:
    return KernelManager(**{"kernel_name": "python3", **traits})


@pytest.mark.parametrize("traits", [{"transport": "ipc"}, {"connection_file": "mine.json"},
                                    {"kernel_name": "ir"}])
def test_a_manager_set_up_already_or_not_ipykernels_keeps_its_setup(traits: dict) -> None:
    """The transport the caller chose, and a kernel that may not honor ipc, stay."""
    manager = _manager(**traits)
    before = (manager.transport, manager.connection_file)
    assert not use_ipc_sockets(manager)
    assert (manager.transport, manager.connection_file) == before


def test_windows_keeps_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _manager()
    monkeypatch.setattr(kernel_sockets.os, "name", "nt")
    assert not use_ipc_sockets(manager)
    monkeypatch.undo()
    assert (manager.transport, manager.connection_file) == ("tcp", "")


def _padded_folder(base: Path, length: int) -> Path:
    """A folder under ``base`` where the longest socket path is ``length`` bytes."""
    longest = len(str(base / f"kernel-{'x' * 8}{kernel_sockets._SOCKET_SUFFIX}")) + 1
    folder = base / ("d" * (length - longest))
    folder.mkdir()
    return folder


@unix_only
@pytest.mark.parametrize("over", [0, 1])
def test_a_socket_path_over_af_unixs_limit_keeps_tcp(temporary: Path, over: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """At the limit the sockets bind (zmq refuses one byte more); past it, TCP stays."""
    folder = _padded_folder(temporary, kernel_sockets._PATH_LIMIT + over)
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    manager = _manager()
    assert use_ipc_sockets(manager) is not over
    assert manager.transport == ("tcp" if over else "ipc")
    assert _binds(folder / f"kernel-{'x' * 8}{kernel_sockets._SOCKET_SUFFIX}") is not over


def _binds(path: Path) -> bool:
    """Whether zmq binds a Unix socket at ``path``."""
    with zmq.Context() as context, context.socket(zmq.REP) as probe:
        try:
            probe.bind(f"ipc://{path}")
        except zmq.ZMQError:
            return False
        path.unlink()
        return True


async def _interrupt_and_restart(manager: Any) -> list[object]:
    """The interrupted cell's error, whether the restarted kernel runs a cell, and what
    the sockets were before and after."""
    await manager.start_kernel()
    before = (manager.transport, manager.connection_file)
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    try:
        client.execute("print('sleeping', flush=True); import time; time.sleep(60)")
        await _printed(client, "sleeping")  # (a signal before would find no cell)
        await manager.interrupt_kernel()
        interrupted = (await client.get_shell_msg(timeout=30))["content"]
        await manager.restart_kernel()
        await client.wait_for_ready(timeout=60)
        client.execute("x = 1")
        after = (await client.get_shell_msg(timeout=30))["content"]
        return [interrupted.get("ename"), after["status"], before,
                (manager.transport, manager.connection_file)]
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def _printed(client: Any, text: str) -> None:
    while True:
        msg = await client.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "stream" and text in msg["content"]["text"]:
            return


@unix_only
@pytest.mark.slow
def test_a_kernel_on_unix_sockets_is_interrupted_and_restarted(
        temporary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `dagnb run`'s Ctrl-C and a restart need, with the same socket names."""
    monkeypatch.setattr("tempfile.tempdir", str(temporary))
    manager = ipc_kernel_manager()(kernel_name="python3")
    error, status, before, after = asyncio.run(_interrupt_and_restart(manager))
    assert (error, status) == ("KeyboardInterrupt", "ok")
    assert before == after == ("ipc", before[1])
    assert not list(temporary.glob("kernel-*"))  # connection file and sockets removed


@unix_only
def test_the_kernels_the_tests_start_talk_over_unix_sockets_nbvals_too() -> None:
    """The conftest at the root sets them up: nbval's for a tutorial (the kernel of the
    tests' environment, as ``--nbval-current-env`` names it) runs a cell."""
    manager, client = start_new_kernel(kernel_name=CURRENT_ENV_KERNEL_NAME)
    try:
        client.execute_interactive("x = 1", timeout=30)
        assert manager.transport == "ipc"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
