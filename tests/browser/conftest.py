"""JupyterLab in headless Chromium: a server on 127.0.0.1 and a Playwright page.

Skips (with the reason) only when Chromium, JupyterLab or Playwright is missing;
``.ci/install-browser.sh`` installs Chromium and the dev extra brings the others.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from dagnb.testing import wait_until

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing() -> str | None:
    if chromium_path() is None:
        return "Chromium is not installed (run .ci/install-browser.sh: apt-get install chromium)"
    for module, extra in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module!r} is missing (pip install '.[dev]' adds {extra})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 40) -> None:
    if not wait_until(lambda: _answers(url, process, log), timeout=timeout, interval=0.2):
        pytest.fail(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path):
    """(base URL with token, root folder) of a JupyterLab server for this test."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "DAGNB_EXECUTOR": "local",
           "PYTHONPATH": str(REPO)}
    env.pop("DAGNB_WIDGETS", None)
    log = tmp_path / "jupyterlab.log"
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
            "--port", str(port), f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
            "--allow-root", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly", f"--LabApp.workspaces_dir={home}/ws"]
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/api/status?token={token}", process, log)
        yield base, token, root
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def page(lab):
    """A Chromium page that may only talk to 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.route("**/*", lambda route: route.continue_()
                      if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1",
                                                       "data:", "blob:"))
                      else route.abort())
        try:
            yield context.new_page()
        finally:
            browser.close()
