"""What a saved notebook keeps: static snapshots of each run, readable with no kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat as nbf
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
STEPS = 20


def _chain(steps: int = STEPS) -> nbf.NotebookNode:
    cells = [nbf.v4.new_code_cell("%load_ext dagnb")]
    for i in range(steps):
        needs = f" --needs s{i - 1}" if i else ""
        cells.append(nbf.v4.new_code_cell(f"%%dagger s{i}{needs}\necho output of step {i}"))
    return nbf.v4.new_notebook(cells=cells)


def _execute(folder: Path, widgets: str) -> Path:
    """Run All in a kernel; JupyterLab saves no widget state by default, nor does this."""
    folder.mkdir()
    notebook = _chain()
    client = NotebookClient(notebook, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, "DAGNB_WIDGETS": widgets, "DAGNB_CONFIG": "none"})
    path = folder / "chain.ipynb"
    nbf.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lasting")
    return {mode: _execute(root / mode, flag) for mode, flag in (("widgets", "1"),
                                                                  ("text", "0"))}


def test_each_cell_keeps_a_static_snapshot_and_no_widget(saved):
    notebook = json.loads(saved["widgets"].read_text())
    for index, cell in enumerate(notebook["cells"][1:]):
        kinds = [set(out.get("data", {})) for out in cell["outputs"]]
        assert {"text/html", "text/plain"} in kinds, cell["outputs"]
        assert not any("application/vnd.jupyter.widget-view+json" in k for k in kinds)
        bundle = next(out["data"] for out in cell["outputs"] if "data" in out)
        plain, markup = ("".join(bundle[kind]) for kind in ("text/plain", "text/html"))
        assert f"output of step {index}" in plain
        assert "dagnb-snapshot" in markup
        if index:
            assert f"cached: {', '.join(f's{i}' for i in range(index))}" in plain


def test_the_saved_notebook_is_no_bigger_than_text_mode_and_a_half(saved):
    widgets, text = (saved[m].stat().st_size for m in ("widgets", "text"))
    assert widgets <= 1.5 * text, (widgets, text)


def test_nbconvert_html_holds_every_steps_output(saved, tmp_path):
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html",
                           "--output-dir", str(tmp_path), str(saved["widgets"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "chain.html").read_text()
    assert all(f"output of step {i}" in page for i in range(STEPS))
    assert page.count("dagnb-snapshot") == STEPS


def test_a_dagger_run_cell_keeps_every_steps_output_tail(tmp_path):
    """``%dagger run`` has no step of its own: its snapshot keeps the tail of each step."""
    notebook = nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell(source) for source in (
        "%load_ext dagnb", "%%dagger a --define-only\necho output of a",
        "%%dagger b --define-only --needs a\necho output of b; echo warning of b >&2",
        "%dagger run")])
    client = NotebookClient(notebook, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "DAGNB_WIDGETS": "1", "DAGNB_CONFIG": "none"})
    bundle = next(out["data"] for out in notebook.cells[-1].outputs if "data" in out)
    for kind in ("text/plain", "text/html"):
        shown = "".join(bundle[kind])
        assert all(line in shown for line in ("output of a", "output of b", "warning of b"))


def _widget_mode(tmp_path: Path, *sources: str) -> nbf.NotebookNode:
    notebook = nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell(source) for source in sources])
    client = NotebookClient(notebook, kernel_name="python3", store_widget_state=False,
                            allow_errors=True, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "DAGNB_WIDGETS": "1", "DAGNB_CONFIG": "none"})
    return notebook


def test_a_step_cut_to_its_tail_says_how_many_lines_came_before(tmp_path):
    notebook = _widget_mode(tmp_path, "%load_ext dagnb", "%%dagger many\nseq 1 100")
    bundle = next(out["data"] for out in notebook.cells[-1].outputs if "data" in out)
    for kind in ("text/plain", "text/html"):
        assert "60 earlier lines not shown; %dagger logs many shows them" in "".join(bundle[kind])
    lines = "".join(bundle["text/plain"]).splitlines()
    assert lines[:3] == ["── many ──", "60 earlier lines not shown; %dagger logs many shows them",
                         "61"]


def test_a_retried_step_keeps_why_between_its_attempts_as_text_mode_does(tmp_path):
    """The saved notebook ran the attempts' lines together, the earlier failures' reasons
    gone (text mode prints a line for each retry)."""
    count = tmp_path / "count"
    notebook = _widget_mode(tmp_path, "%load_ext dagnb", (
        f"%%dagger flaky --retries 2\nn=$(( $(cat {count} 2>/dev/null || echo 0) + 1 ))\n"
        f"echo $n > {count}; echo attempt $n; test $n -ge 3"))
    bundle = next(out["data"] for out in notebook.cells[-1].outputs if "data" in out)
    lines = "".join(bundle["text/plain"]).splitlines()
    at = lines.index("── flaky ──")
    assert [line.split(" in ")[0] for line in lines[at + 1:at + 6]] == [
        "attempt 1", "── flaky: retrying 2/3", "attempt 2", "── flaky: retrying 3/3",
        "attempt 3"]
    assert lines[at + 2].endswith(": exit code 1 ──")
    assert "── flaky: retrying 2/3 in " in "".join(bundle["text/html"])


def test_a_failure_shows_once_when_the_cell_raises(tmp_path):
    """The cell's RunFailed shows the failed step's stderr tail: the snapshot does not
    show it a second time (it shows the step's output, as text mode prints it)."""
    notebook = _widget_mode(tmp_path, "%load_ext dagnb",
                            "%%dagger up --define-only\necho boom >&2; exit 3",
                            "%%dagger down --needs up\necho down")
    outputs = notebook.cells[-1].outputs
    [failure] = [out for out in outputs if out["output_type"] == "error"]
    bundle = next(out["data"] for out in outputs if "data" in out)
    shown = "".join(bundle["text/plain"]) + "\n".join(failure["traceback"])
    assert shown.count("── up failed; last lines of stderr ──") == 1, shown
    assert "── up ──\nboom\n" in shown  # its output, as text mode prints it
    assert "── up failed" not in "".join(bundle["text/html"])


def test_a_background_cell_is_saved_as_its_snapshot_once_its_run_ended(tmp_path):
    """A ``--background`` cell finished long before its run: the run's end updates its
    output in place (by display id), so the notebook saved afterwards reads how it ended."""
    # the runs go on till the last cell lets them end (a sleep 2 in each was waited out);
    # it then waits for the threads that send the updates, then for the updates
    release = tmp_path / "release"
    wait = f"for i in $(seq 1500); do [ -e {release} ] && break; sleep 0.02; done"
    settled = (f"import threading\nopen({str(release)!r}, 'w').close()\n"
               "[t.join(30) for t in threading.enumerate() if t.name == 'dagnb-settle']")
    notebook = _widget_mode(
        tmp_path, "%load_ext dagnb",
        f"%%dagger slow --background\n{wait}; echo output of slow",
        f"%%dagger bad --background\n{wait}; echo broke here >&2; exit 3", settled)
    path = tmp_path / "background.ipynb"
    nbf.write(notebook, path)
    cells = nbf.read(path, as_version=4).cells
    for index, shown in ((1, ("slow", "succeeded", "output of slow")),
                         (2, ("bad", "failed", "broke here"))):
        [bundle] = [out["data"] for out in cells[index].outputs if "data" in out]
        assert "application/vnd.jupyter.widget-view+json" not in bundle, bundle
        assert "dagnb-snapshot" in bundle["text/html"]
        for kind in ("text/plain", "text/html"):
            assert all(word in bundle[kind] for word in shown), (kind, bundle[kind])
