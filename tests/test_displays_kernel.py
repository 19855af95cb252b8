"""What a ``--python`` step displays, in a real kernel: the saved notebook holds the same
rich outputs (HTML, a PNG, a matplotlib plot when matplotlib is there) after a first run
and after a cached one in a fresh kernel, in text mode and with widgets."""

from __future__ import annotations

import base64
import importlib.util
import json
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


def _execute(folder: Path, widgets: str, name: str, steps: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run All in a fresh kernel (so a second call is a run after a restart), save the
    notebook and read it back, as a user reopening it would."""
    steps = steps or (STEP, *([PLOT] if HAS_MATPLOTLIB else []))
    cells = ["%load_ext dagnb", *steps]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(notebook, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, "DAGNB_WIDGETS": widgets, "DAGNB_CONFIG": "none",
                        "DAGNB_EXECUTOR": "local", **(env or {})})
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
        shown = _rich(first.cells[2])
        plots = [data for data in shown if "image/png" in data]
        assert len(plots) == 2 and len(shown) == 3
        # the cell's last line, shown as a plain cell shows it, before its open figure
        assert shown[1]["text/plain"].startswith("[<matplotlib.lines.Line2D"), shown[1]


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


TOKEN = "tok&<9876>\"543'210"
SHOWS_TOKEN = """%%dagger show --python --secret HTML_TOKEN
import html, os
import pandas as pd
from IPython.display import HTML, display
display(HTML(f"<b>{html.escape(os.environ['HTML_TOKEN'])}</b>"))
display(pd.DataFrame({"t": [os.environ['HTML_TOKEN']]}))
print(html.escape(os.environ['HTML_TOKEN']))
"""


def test_a_secret_a_step_shows_escaped_in_html_is_masked_in_the_saved_notebook(tmp_path):
    """display(HTML(html.escape(token))) and display(df) (its table escapes ``&``,
    ``<`` and ``>``) showed the token in clear in the cell, the saved notebook and the
    cache entry that replays the displays; a cached run in a fresh kernel shows the same."""
    import html

    forms = {TOKEN, html.escape(TOKEN), html.escape(TOKEN, quote=False), "9876&gt;"}
    for name in ("first.ipynb", "again.ipynb"):
        cell = _execute(tmp_path, "0", name, (SHOWS_TOKEN,), {"HTML_TOKEN": TOKEN}).cells[1]
        shown = [data["text/html"] for data in _rich(cell)]
        assert shown[0] == "<b>***</b>" and "<td>***</td>" in shown[1], (name, shown)
        assert "***" in _text(cell).splitlines()[:2], (name, _text(cell))
        saved = (tmp_path / name).read_text()
        assert [form for form in forms if form in saved or json.dumps(form)[1:-1] in saved] == []
    assert "show  cached" in _text(cell)
    stored = [p.read_text() for p in tmp_path.rglob("displays.jsonl")]
    assert len(stored) == 1 and "<b>***</b>" in stored[0]
    assert [form for form in forms if json.dumps(form)[1:-1] in stored[0]] == []


TABLE = """%%dagger table --python --outputs rows
import pandas as pd
rows = 2
pd.DataFrame({"n": range(rows)})  # shown as a plain cell shows it
"""


@pytest.mark.parametrize("widgets", ["0", "1"], ids=["text", "widgets"])
def test_a_cell_ending_in_a_dataframe_shows_its_table_and_again_from_the_cache(tmp_path,
                                                                              widgets):
    """A plain cell ending in ``df`` shows its table; a ``--python`` cell showed nothing."""
    for name in ("first.ipynb", "again.ipynb"):  # (the second a new kernel: cached)
        cell = _execute(tmp_path, widgets, name, (TABLE,)).cells[1]
        [table] = _rich(cell)
        assert "<table" in table["text/html"] and "<td>1</td>" in table["text/html"], name
        assert table["text/plain"].split() == ["n", "0", "0", "1", "1"], name
    if widgets == "0":
        assert "table  cached" in _text(cell)


TIMED = "%%dagger timed --python\n%time sum(range(10))\n"
TIMED_QUIET = "%%dagger quiet --python\n%time sum(range(10));\n"
TIMED_NONE = "%%dagger printed --python\n%time print('hi')\n%env DAGNB_SHOWN=1\n"


@pytest.mark.parametrize("widgets", ["0", "1"], ids=["text", "widgets"])
def test_a_cell_ending_in_a_timed_expression_shows_its_value_as_a_plain_cell(tmp_path,
                                                                            widgets):
    """A plain cell ending in ``%time sum(range(10))`` shows the times, then 45; a
    ``--python`` cell showed the times alone. A ``;`` still hides it, a None is not shown."""
    for name in ("first.ipynb", "again.ipynb"):  # (the second a new kernel: cached)
        cells = _execute(tmp_path, widgets, name, (TIMED, TIMED_QUIET, TIMED_NONE)).cells
        assert _rich(cells[1]) == [{"text/plain": "45"}], name
        assert _rich(cells[2]) == [] and _rich(cells[3]) == [], name
        if widgets == "0":
            outputs = cells[1]["outputs"]
            [shown] = [i for i, out in enumerate(outputs) if out["output_type"] == "display_data"]
            before = _text(nbformat.from_dict({"outputs": outputs[:shown]}))
            assert "CPU times: " in before and "Wall time: " in before, (name, outputs)
    if widgets == "0":
        assert "timed  cached" in _text(cells[1])


FLAKY = """%%dagger flaky --python --retries 1
import pathlib
from IPython.display import HTML, display
print('trying')
display(HTML('<i>made</i>'))
if not pathlib.Path('tried').exists():
    pathlib.Path('tried').write_text('once')
    raise ConnectionError('the source dropped us')  # (transient: tried again)
print('done')
"""
ATTEMPTS = """from dagnb.notebook.session import get_session
print(sorted({(e.kind, e.attempt) for e in get_session().last_run.events
              if e.step == 'flaky' and e.kind in ('log', 'display')}))
"""


@pytest.mark.parametrize("widgets", ["0", "1"], ids=["text", "widgets"])
def test_a_cached_step_that_succeeded_on_its_second_attempt_replays_its_displays_so(
        tmp_path, widgets):
    """Its lines came back from the cache as attempt 2's, its displays as attempt 1's;
    the cell shows the same display, and ``%dagger logs`` the same lines."""
    steps = ("import dagnb\ndagnb.configure(retry_backoff_factor=0)", FLAKY, ATTEMPTS,
             "%dagger logs flaky")
    first = _execute(tmp_path, widgets, "first.ipynb", steps)
    again = _execute(tmp_path, widgets, "again.ipynb", steps)  # (a new kernel: cached)
    made = [{"text/plain": "<IPython.core.display.HTML object>", "text/html": "<i>made</i>"}]
    assert _rich(first.cells[2]) == made * 2  # (each attempt's, shown as it came)
    assert _rich(again.cells[2]) == made
    assert _text(first.cells[3]) == "[('display', 1), ('display', 2), ('log', 1), ('log', 2)]\n"
    assert _text(again.cells[3]) == "[('display', 2), ('log', 2)]\n"
    for notebook in (first, again):  # (the lines of attempt 2, the one stored)
        [logs] = [out for out in notebook.cells[4]["outputs"]
                  if out["output_type"] == "execute_result"]
        rows = [line.split()[-3:] for line in logs["data"]["text/plain"].splitlines()[1:]]
        assert rows[-2:] == [["2", "stdout", "trying"], ["2", "stdout", "done"]], logs
    if widgets == "0":
        assert "flaky  cached" in _text(again.cells[2])
