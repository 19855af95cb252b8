"""Shared fixtures: every test runs in a fresh dagnb context; ``workdir`` adds a folder."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
from collections import Counter
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


# Seconds the slowest files took (pytest -n 2 --dist loadfile on the 2-core machine,
# 2026-12-07; test_binder.py as in CI, whose pip install beside the legs takes twice as
# long); any other file counts 0.1 s a test. Only an order: a file missing here or
# mismeasured costs minutes of CI, never a result.
FILE_SECONDS = {f"tests/{name}": seconds for name, seconds in {
    "test_remote_cache.py": 132, "test_dask_executor.py": 101, "test_cli.py": 101,
    "test_binder.py": 100, "test_notebook_pipeline.py": 76, "test_kernel.py": 49,
    "test_dagger_executor.py": 41, "test_displays_kernel.py": 40,
    "test_cli_failures.py": 35, "test_lasting_output.py": 20, "test_runner.py": 20,
    "test_stale_modules.py": 19, "test_dagger_e2e.py": 18, "test_dask_project_modules.py": 18,
    "test_remote_session63.py": 18, "test_upload_interrupted.py": 18,
    "test_remote_session65.py": 16, "test_pull_in_use.py": 15, "test_notebook_qa_fixes.py": 15,
    "test_remote_session68.py": 15, "test_headless_interrupt.py": 15, "test_interrupt.py": 14,
    "test_dagger_images.py": 13, "test_headless_session66.py": 12, "test_orphans.py": 12,
    "test_interrupt_after_success.py": 12, "test_memory.py": 12,
    "test_dagger_run_cycles_session80.py": 11, "test_headless_session65.py": 11,
    "test_widgets_kernel.py": 11, "test_plan_glance63.py": 11, "test_bench_harness.py": 11,
    "test_headless_rows63.py": 11,
}.items()} | {"notebooks/06-workflows-templates-cli.ipynb": 23}


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker, the files the slowest first (each file's tests in their own
    order), for ``--dist loadfile --no-loadscope-reorder`` to hand out: xdist's own order,
    by number of tests, started the two-test test_binder.py (100 s in CI) with a minute
    of other work left, the other workers then idle for its rest. A pytest run in one
    process keeps the files' order."""
    if not hasattr(config, "workerinput"):
        return
    tests_in = Counter(_file_of(item) for item in items)
    cost = {name: FILE_SECONDS.get(name, 0.1 * count) for name, count in tests_in.items()}
    items.sort(key=lambda item: -cost[_file_of(item)])  # (stable: files stay whole)


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
