"""End to end: %%dagger cells in JupyterLab draw the live status widget."""

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


def test_status_widget_renders_final_states(lab, page, tmp_path):
    base, token, root = lab
    write_notebook(root / "demo.ipynb", CELLS)
    page.goto(f"{base}/lab/tree/demo.ipynb?token={token}", timeout=40_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    _accept_kernel(page)
    try:
        _run_all(page)
        _check_widgets(page)
    finally:
        _screenshot(page, tmp_path)


def _check_widgets(page) -> None:
    answer = page.locator(".dagnb-status tr.dagnb-row.dagnb-state-succeeded[data-step='answer']")
    answer.wait_for(timeout=30_000)
    widgets = page.locator(".jupyter-widgets.dagnb-status")
    assert widgets.count() == 2  # one live widget per %%dagger cell, drawn by ipywidgets
    first, second = widgets.nth(0), widgets.nth(1)
    assert first.locator("tr.dagnb-row.dagnb-state-succeeded[data-step='hello']").count() == 1
    assert second.locator("tr.dagnb-row.dagnb-state-cached[data-step='hello']").count() == 1
    assert second.locator(".progress-bar-success").count() == 1  # the full, green bar
    assert second.locator("button:not([disabled])", has_text="Run all").count() == 1
    assert second.locator("button[disabled]", has_text="Cancel").count() == 1
    assert "the answer is 42" in second.locator("pre.dagnb-log").last.inner_text()
    assert page.locator("text=Loading widget").count() == 0
