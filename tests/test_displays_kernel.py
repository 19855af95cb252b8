"""What a ``--python`` step displays, in a real kernel: the saved notebook holds the same
rich outputs (HTML, a PNG, a matplotlib plot when matplotlib is there) after a first run
and after a cached one in a fresh kernel, in text mode and with widgets."""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

# a 1x1 PNG, made into an image by IPython.display.Image from its bytes
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
       "AAAABJRU5ErkJggg==")
STEP = f"""%%dagger report --python --outputs total
import base64
from IPython.display import HTML, Image, display
print('before')
display(HTML('<b>x</b>'))
display(Image(data=base64.b64decode({PNG!r}), format='png'))
print('between')
progress = display(HTML('0%'), display_id=True)
progress.update(HTML('100%'))  # the notebook keeps how it ended, and so does the cache
total = 3
"""
PLOT = """%%dagger plot --python
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.show()
fig, ax = plt.subplots()  # left open: shown as the step ends, as after a cell
ax.plot([3, 2, 1])
"""
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _execute(folder: Path, widgets: str, name: str) -> nbformat.NotebookNode:
    """Run All in a fresh kernel (so a second call is a run after a restart), save the
    notebook and read it back, as a user reopening it would."""
    cells = ["%load_ext dagnb", STEP, *([PLOT] if HAS_MATPLOTLIB else [])]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(notebook, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, "DAGNB_WIDGETS": widgets, "DAGNB_CONFIG": "none",
                        "DAGNB_EXECUTOR": "local"})
    nbformat.write(notebook, folder / name)
    return nbformat.read(folder / name, as_version=4)


def _rich(cell: nbformat.NotebookNode) -> list[dict]:
    """The cell's display_data outputs but dagnb's own snapshot: mime type -> data."""
    shown = [dict(out["data"]) for out in cell["outputs"] if out["output_type"] == "display_data"]
    return [data for data in shown if "dagnb-snapshot" not in data.get("text/html", "")]


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell["outputs"]
                   if out["output_type"] == "stream")


@pytest.mark.parametrize("widgets", ["0", "1"], ids=["text", "widgets"])
def test_a_cached_run_shows_the_same_rich_outputs_as_the_first(tmp_path, widgets):
    first = _execute(tmp_path, widgets, "first.ipynb")
    again = _execute(tmp_path, widgets, "again.ipynb")  # a new kernel: every step cached
    shown = _rich(first.cells[1])
    html = "<IPython.core.display.HTML object>"
    assert shown == [{"text/plain": html, "text/html": "<b>x</b>"},
                     {"text/plain": "<IPython.core.display.Image object>", "image/png": PNG},
                     {"text/plain": html, "text/html": "100%"}]
    assert base64.b64decode(shown[1]["image/png"]).startswith(b"\x89PNG")
    for index in range(1, len(first.cells)):
        assert _rich(again.cells[index]) == _rich(first.cells[index])
    if widgets == "0":
        assert "report  cached" in _text(again.cells[1])
    if HAS_MATPLOTLIB:
        plots = _rich(first.cells[2])
        assert len(plots) == 2 and all("image/png" in plot for plot in plots)


def test_lines_and_displays_keep_their_order_in_text_mode(tmp_path):
    """Before, the step's lines were printed after every display it made."""
    for name in ("first.ipynb", "again.ipynb"):
        outputs = _execute(tmp_path, "0", name).cells[1]["outputs"]
        shown = [i for i, out in enumerate(outputs) if out["output_type"] == "display_data"]
        assert len(shown) == 3 and shown[1] == shown[0] + 1, (name, outputs)
        before = _text(nbformat.from_dict({"outputs": outputs[:shown[0]]}))
        after = _text(nbformat.from_dict({"outputs": outputs[shown[1] + 1:]}))
        assert "before" in before and "between" not in before, (name, outputs)
        assert "between" in after, (name, outputs)
