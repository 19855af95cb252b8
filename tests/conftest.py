"""Shared fixtures: every test runs in a fresh dagnb context; ``workdir`` adds a folder."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb.cache.secret_scan import forget_secrets
from dagnb.config import Context, use_context
from dagnb.testing import Clock

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One temporary folder for everything this session's processes make in theirs,
    removed at its end: nbval kills the notebooks' kernels and tests kill dask workers,
    so what they meant to remove at exit would otherwise stay in /tmp, run after run."""
    folder = tempfile.mkdtemp(prefix="dagnb-tests-")
    os.chmod(folder, 0o1777)  # as /tmp: tests that run as another user make folders here
    config.stash[_TEMPORARY] = (folder, os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = folder  # for the processes started from here on
    tempfile.tempdir = None  # and this one: gettempdir() looks again
    _hear_ctrl_c()


def _hear_ctrl_c() -> None:
    """A suite started in the background (``nohup``, ``&`` in a script) ignores SIGINT,
    and so does every process it starts: Python then never raises KeyboardInterrupt,
    and the tests that press Ctrl-C on a ``dagnb run`` wait in vain. Handled here, it is
    back to the default in the processes started from here on."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder, before = config.stash.get(_TEMPORARY, (None, None))
    if folder is None:
        return
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None
    shutil.rmtree(folder, ignore_errors=True)


_TEMPORARY = pytest.StashKey[tuple[str, "str | None"]]()


def _kernels_as_in_jupyterlab() -> None:
    """Kernels the tests start forward their processes' output (fd 1 and 2) to the cell
    as JupyterLab's do: ipykernel forwards none where ``PYTEST_CURRENT_TEST`` is set,
    and a kernel inherits it from the test (a secret a subprocess wrote went unseen)."""
    try:
        from jupyter_client.provisioning import local_provisioner
    except ImportError:
        return
    launch = local_provisioner.launch_kernel

    def launch_kernel(cmd: list[str], **kwargs: Any) -> Any:
        env = dict(kwargs.get("env") or os.environ)
        env.pop("PYTEST_CURRENT_TEST", None)
        return launch(cmd, **{**kwargs, "env": env})

    local_provisioner.launch_kernel = launch_kernel


_kernels_as_in_jupyterlab()


@pytest.fixture(autouse=True)
def fresh_context() -> Iterator[Context]:
    """A fresh process context (settings, executors, breakers, session...) per test,
    and no secret known from an earlier test's runs (the process keeps them: a test's
    secret ``1`` would mask every later test's ``exit code 1``).

    Not ``isolated()``: its temporary cache would be configured before a test changes
    folder or writes a config file, and the settings tests read those."""
    with use_context() as context:
        yield context
    forget_secrets()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory whose cache is empty."""
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=str(tmp_path / ".dagnb_cache"))
    return tmp_path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (a repository root: the config search stops there), the
    current directory, with no DAGNB_* variables set."""
    for name in list(os.environ):
        if name.startswith("DAGNB_"):
            monkeypatch.delenv(name)
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def shell(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """IPython's shell with the magics loaded, an empty graph, plain-text views and the
    local executor, in a fresh folder (the shell is a process-wide singleton: names a
    test leaves behind are cleared)."""
    from IPython.core.interactiveshell import InteractiveShell

    import dagnb.notebook.widgets

    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", False)
    dagnb.configure(executor="local")  # in the test's own context
    ip = InteractiveShell.instance()
    for name in ("_dagger", "__session__", "v", "x", "y", "total", "count"):
        ip.user_ns.pop(name, None)
    ip.run_line_magic("load_ext", "dagnb.notebook.magics")
    ip.run_line_magic("dagger", "reset")
    yield ip
    ip.user_ns.pop("__session__", None)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """No collection at all: only what reference counting frees is freed (what a test
    of reference cycles needs: a collection would free them whatever the code does)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand (``clock.now += 60``)."""
    return Clock()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder that user 'nobody' can reach (pytest's own are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="dagnb-nobody-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
