"""End to end in JupyterLab: the live status widget while a cell runs, a lasting snapshot after."""

from __future__ import annotations

import contextlib
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


def _run_all(page, cells: list[str] = CELLS) -> None:
    """Run each cell in turn from command mode (Shift+Enter), as a user would."""
    news = page.get_by_role("button", name="No")  # the "Jupyter news?" toast
    if news.count():
        news.first.click()
    page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Escape")
    for _ in cells:
        page.keyboard.press("Shift+Enter")


def _screenshot(page, tmp_path, name: str = "jupyterlab-dagger.png") -> Path:
    """Save the page under the test's folder and in test-artifacts/ (gitignored)."""
    shot = tmp_path / name
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


BACKGROUND_CELLS = [
    "import dagnb\n"
    "print(dagnb.__file__)\n"
    "%load_ext " + "dagnb.notebook.magics",
    "%%dagger slow --background\n"
    "sleep 3; echo done-slow",
    "%%dagger fails --background\n"
    "sleep 3; echo broke-here >&2; exit 3",
]


def _kernel_messages(page) -> list[dict]:
    """The IOPub messages this page receives from the kernel (header, parent_header,
    content), and the execute requests it sends, as {"sent": header, "code": ...}."""
    seen: list[dict] = []

    def parts(payload) -> tuple[str, list[dict]]:
        if isinstance(payload, str):  # the JSON protocol
            msg = json.loads(payload)
            return msg.get("channel", ""), [msg.get(k, {}) for k in
                                            ("header", "parent_header", "metadata", "content")]
        count = int.from_bytes(payload[:8], "little")  # v1.kernel.websocket.jupyter.org
        offsets = [int.from_bytes(payload[8 * (i + 1):8 * (i + 2)], "little")
                   for i in range(count)]
        channel = payload[offsets[0]:offsets[1]].decode()
        return channel, [json.loads(payload[offsets[i]:offsets[i + 1]] or b"{}")
                         for i in range(1, min(count - 1, 5))]

    def received(payload) -> None:
        with contextlib.suppress(Exception):
            channel, (header, parent, _meta, content) = parts(payload)
            if channel == "iopub":
                seen.append({"header": header, "parent_header": parent, "content": content})

    def sent(payload) -> None:
        with contextlib.suppress(Exception):
            _channel, (header, _parent, _meta, content) = parts(payload)
            if header.get("msg_type") == "execute_request":
                seen.append({"sent": header, "code": content.get("code", "")})

    def socket(ws) -> None:
        if "/channels" in ws.url:
            ws.on("framereceived", received)
            ws.on("framesent", sent)

    page.on("websocket", socket)
    return seen


def _parents(messages: list[dict]) -> str:
    """Which cell's request each display message answers: evidence for a failure."""
    cells = {m["sent"]["msg_id"]: m["code"].splitlines()[0] for m in messages if "sent" in m}
    return "\n".join(
        f"{m['header'].get('msg_type')} display_id="
        f"{(m['content'].get('transient') or {}).get('display_id')} parent="
        f"{m['parent_header'].get('msg_type')} "
        f"{cells.get(m['parent_header'].get('msg_id'), m['parent_header'].get('msg_id'))!r}"
        for m in messages if "header" in m
        and m["header"].get("msg_type") in ("display_data", "update_display_data"))


def test_background_cells_are_saved_as_how_their_runs_ended(lab, page, tmp_path):
    """Two ``--background`` cells and nothing run after them: once their runs end, each
    cell's widget is replaced in place by its run's snapshot, which JupyterLab's own save
    keeps, and which a reload from the file (no kernel) draws.

    The updates come from a thread, as part of the latest request (here the second
    cell's, for both): JupyterLab applies them by display id to the cell that showed it.
    test-artifacts/jupyterlab-background.messages.txt lists each display message's parent.
    """
    base, token, root = lab
    path = root / "background.ipynb"
    write_notebook(path, BACKGROUND_CELLS)
    messages = _kernel_messages(page)
    page.goto(f"{base}/lab/tree/background.ipynb?token={token}", timeout=40_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    _accept_kernel(page)
    try:
        _run_all(page, BACKGROUND_CELLS)
        widgets = page.locator(".jupyter-widgets.dagnb-status")
        page.wait_for_function("document.querySelectorAll("
                               "'.jupyter-widgets.dagnb-status').length === 2",
                               timeout=30_000)
        assert widgets.count() == 2  # both live while their runs go
        # the user runs nothing else: the runs end meanwhile, each widget replaced by its
        # snapshot (waited for: a fixed 6 s timed out on a machine busy with CI's legs)
        page.wait_for_function("document.querySelectorAll('.dagnb-snapshot').length === 2"
                               " && !document.querySelector('.jupyter-widgets.dagnb-status')",
                               timeout=90_000)
        page.keyboard.press("Escape")
        page.locator("[data-command='docmanager:save']").first.click()
        saved = _wait_outputs_saved(page, path, cells=3)
        evidence = _parents(messages)
        assert str(REPO) in "".join(saved["cells"][0]["outputs"][0]["text"])  # this dagnb
        for index, shown in ((1, ("slow", "succeeded", "done-slow")),
                             (2, ("fails", "failed", "broke-here"))):
            outputs = saved["cells"][index]["outputs"]
            bundles = [out["data"] for out in outputs if "data" in out]
            assert len(bundles) == 1, (outputs, evidence)
            [bundle] = bundles
            assert "application/vnd.jupyter.widget-view+json" not in bundle, (bundle, evidence)
            assert "dagnb-snapshot" in "".join(bundle["text/html"]), (bundle, evidence)
            for kind in ("text/plain", "text/html"):
                text = "".join(bundle[kind])
                assert all(word in text for word in shown), (kind, text, evidence)
        _shut_down_kernels(base, token)
        page.reload(timeout=40_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
        page.locator(".dagnb-snapshot").nth(1).wait_for(timeout=30_000)
        snapshots = page.locator(".dagnb-snapshot")
        assert snapshots.count() == 2
        slow, fails = snapshots.nth(0), snapshots.nth(1)
        assert slow.locator("tr.dagnb-row.dagnb-state-succeeded[data-step='slow']").count() == 1
        assert "done-slow" in slow.locator("pre.dagnb-log").inner_text()
        assert fails.locator("tr.dagnb-row.dagnb-state-failed[data-step='fails']").count() == 1
        assert "broke-here" in fails.locator("pre.dagnb-log").last.inner_text()
        assert page.locator(".jupyter-widgets.dagnb-status").count() == 0
        assert page.locator("text=Loading widget").count() == 0
    finally:
        shot = _screenshot(page, tmp_path, "jupyterlab-background.png")
        shot.with_suffix(".messages.txt").write_text(_parents(messages))
        shutil.copy(shot.with_suffix(".messages.txt"),
                    REPO / "test-artifacts" / "jupyterlab-background.messages.txt")


def _wait_outputs_saved(page, path: Path, cells: int) -> dict:
    """The notebook as JupyterLab saved it, once its first ``cells`` cells have outputs."""
    for _ in range(120):
        with contextlib.suppress(ValueError):  # (a file being written)
            saved = json.loads(path.read_text(encoding="utf-8"))
            if all(cell["outputs"] for cell in saved["cells"][:cells]):
                return saved
        page.wait_for_timeout(250)  # (inside Playwright: see _wait_saved)
    raise AssertionError("JupyterLab did not save the notebook")
