"""End to end in JupyterLab: the live status widget while a cell runs, a lasting snapshot after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the lab fixture skips the test
    PlaywrightTimeout = TimeoutError

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]

CELLS = [
    "import dagnb\n"
    "%load_ext " + "dagnb.notebook.magics",
    "%%dagger hello\n"
    "sleep 2  # long enough to see the live widget\n"
    "echo hello from the browser\n"
    'echo 42 > "$DAGNB_OUT/answer.txt"',
    "%%dagger answer --python --needs hello --outputs n\n"
    "n = int((hello / 'answer.txt').read_text())\n"
    "print('the answer is', n)",
]


def write_notebook(path: Path, cells: list[str]) -> None:
    """A minimal nbformat 4 notebook with these code cells."""
    notebook = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                    "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "outputs": [],
                   "execution_count": None, "source": source}
                  for i, source in enumerate(cells)],
    }
    path.write_text(json.dumps(notebook), encoding="utf-8")


def _accept_kernel(page) -> None:
    """Answer the "Select Kernel" dialog when JupyterLab asks, then wait for the kernel."""
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
    try:
        select.wait_for(timeout=5_000)
        select.click()
    except PlaywrightTimeout:
        pass  # no dialog: the notebook's kernel started by itself
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=30_000)


def _run_all(page) -> None:
    """Run each cell in turn from command mode (Shift+Enter), as a user would."""
    news = page.get_by_role("button", name="No")  # the "Jupyter news?" toast
    if news.count():
        news.first.click()
    page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Escape")
    for _ in CELLS:
        page.keyboard.press("Shift+Enter")


def _screenshot(page, tmp_path) -> Path:
    """Save the page under the test's folder and in test-artifacts/ (gitignored)."""
    shot = tmp_path / "jupyterlab-dagger.png"
    page.screenshot(path=str(shot), full_page=True)
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / shot.name)
    return shot


def test_live_widget_then_a_snapshot_that_survives_a_reload(lab, page, tmp_path):
    base, token, root = lab
    write_notebook(root / "demo.ipynb", CELLS)
    page.goto(f"{base}/lab/tree/demo.ipynb?token={token}", timeout=40_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    _accept_kernel(page)
    try:
        _run_all(page)
        # while the first cell runs: the live widget, drawn by ipywidgets
        page.locator(".jupyter-widgets.dagnb-status").first.wait_for(timeout=30_000)
        _check_snapshots(page)
        page.keyboard.press("Escape")  # command mode, then JupyterLab's own Save
        page.locator("[data-command='docmanager:save']").first.click()
        _wait_saved(page, root / "demo.ipynb")
        _shut_down_kernels(base, token)
        page.reload(timeout=40_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
        _check_snapshots(page)  # drawn from the saved file: no kernel, no widget models
    finally:
        _screenshot(page, tmp_path)


def _check_snapshots(page) -> None:
    answer = page.locator(".dagnb-snapshot tr.dagnb-row.dagnb-state-succeeded[data-step='answer']")
    answer.wait_for(timeout=30_000)
    snapshots = page.locator(".dagnb-snapshot")
    assert snapshots.count() == 2  # one per %%dagger cell, in place of its widget
    first, second = snapshots.nth(0), snapshots.nth(1)
    assert first.locator("tr.dagnb-row.dagnb-state-succeeded[data-step='hello']").count() == 1
    assert "hello from the browser" in first.locator("pre.dagnb-log").inner_text()
    assert second.locator(".dagnb-cached").inner_text() == "cached: hello"  # one line, not a row
    assert "the answer is 42" in second.locator("pre.dagnb-log").last.inner_text()
    assert page.locator(".jupyter-widgets.dagnb-status").count() == 0
    assert page.locator("text=Loading widget").count() == 0


def _wait_saved(page, path: Path) -> None:
    # Wait inside Playwright: the page's requests pass through this process's route
    # handler, so a plain sleep here would hold the save request itself.
    for _ in range(120):
        if "dagnb-snapshot" in path.read_text(encoding="utf-8"):
            break
        page.wait_for_timeout(250)
    else:
        raise AssertionError("JupyterLab did not save the notebook")
    saved = json.loads(path.read_text(encoding="utf-8"))
    state = saved["metadata"].get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert len(state) == 0, f"{len(state)} widget models saved"  # closed models are not


def _shut_down_kernels(base: str, token: str) -> None:
    import urllib.request

    def call(method: str, path: str) -> bytes:
        request = urllib.request.Request(f"{base}{path}?token={token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    for kernel in json.loads(call("GET", "/api/kernels")):
        call("DELETE", f"/api/kernels/{kernel['id']}")
