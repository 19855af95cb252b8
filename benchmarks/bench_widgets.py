"""The live status widget's cost: a step printing 100,000 lines, run with and without
the widget attached, interleaved, medians (target: ratio <= 1.10); and the size of a
saved 20-step notebook run with widgets against the same run in text mode (<= 1.5).

Comms are replaced by a counting stand-in, as in ipywidgets' own tests, so no browser
is needed; renders and messages are counted too.

    python benchmarks/bench_widgets.py [--lines N] [--rounds R]

This one reaches past the public API (the notebook's widget module, a background run),
because the widget is what it measures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import comm
from comm import base_comm
from harness import Figure, interleave, report

import dagnb
import dagnb.notebook.widgets
from dagnb import Graph, Step
from dagnb.notebook.widgets import live_view, watch
from dagnb.runtime.prepare import start_background

NOTEBOOK_STEPS = 20


class CountingComm(base_comm.BaseComm):
    """A comm that keeps what it would send."""

    sent = 0

    def publish_msg(self, *args: object, **kwargs: object) -> None:
        CountingComm.sent += 1


def run_seconds(run: dagnb.Run) -> float:
    """The run's own duration, from its first event to its last."""
    marks = [event.time for event in run.events if event.kind == "run"]
    return marks[-1] - marks[0]


def one_run(lines: int, with_widget: bool) -> tuple[float, int, int]:
    graph = Graph("loud", [Step("loud", run=f"seq {lines}", cache=False)])
    renders = messages = 0
    if with_widget:
        view = live_view(focus="loud")
        before = CountingComm.sent
        run = start_background(graph, executor="local")
        watch(run, view)
        renders, messages = view.throttle.renders, CountingComm.sent - before
    else:
        run = start_background(graph, executor="local")
        run.wait(120)
    assert run.ok and len(run.logs("loud")) == lines
    return run_seconds(run), renders, messages


def widget_overhead(lines: int, rounds: int) -> Figure:
    """The figure: runs with the widget against runs without, comms counted not sent."""
    comm.create_comm = lambda **kwargs: CountingComm(**kwargs)
    dagnb.notebook.widgets.ENABLED = True
    dagnb.notebook.widgets._display = lambda view: None
    counts: list[tuple[int, int]] = []

    def trial(with_widget: bool) -> float:
        seconds, renders, messages = one_run(lines, with_widget)
        if with_widget:
            counts.append((renders, messages))
        return seconds

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # interleave() collects garbage before each: 100,000 events a run
        try:
            samples = interleave({"widget": lambda: trial(True),
                                  "plain": lambda: trial(False)}, rounds)
        finally:
            os.chdir(here)
    renders, messages = max(c[0] for c in counts), max(c[1] for c in counts)
    return report(Figure(f"widget_{lines}_lines", samples["widget"], samples["plain"],
                         "the run without the widget", 1.10,
                         note=f"(at most {renders} renders, {messages} comm messages a run)"))


def _chain_notebook(steps: int) -> Any:
    import nbformat

    cells = [nbformat.v4.new_code_cell("%load_ext dagnb")]
    for i in range(steps):
        needs = f" --needs s{i - 1}" if i else ""
        cells.append(nbformat.v4.new_code_cell(f"%%dagger s{i}{needs}\necho output {i}"))
    return nbformat.v4.new_notebook(cells=cells)


def _saved_size(folder: Path, widgets: bool, keep_widget_state: bool) -> int:
    """Run All in a real kernel, save, and measure the file."""
    import nbformat
    from nbclient import NotebookClient

    folder.mkdir()
    notebook = _chain_notebook(NOTEBOOK_STEPS)
    env = {**os.environ, "DAGNB_WIDGETS": "1" if widgets else "0", "DAGNB_CONFIG": "none"}
    NotebookClient(notebook, kernel_name="python3", store_widget_state=keep_widget_state,
                   resources={"metadata": {"path": str(folder)}}).execute(env=env)
    path = folder / "chain.ipynb"
    nbformat.write(notebook, path)
    return path.stat().st_size


def notebook_size() -> float:
    """The saved notebook of a 20-step chain, run with widgets, against text mode.

    JupyterLab saves outputs and no widget state by default, so the with-widgets file is
    measured that way (nbclient's ``store_widget_state=False``); nbconvert's ``--execute``
    keeps every model it saw, printed beside it for information.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        widgets = _saved_size(root / "widgets", True, False)
        text = _saved_size(root / "text", False, False)
        stored = _saved_size(root / "stored", True, True)
    ratio = widgets / text
    verdict = "met" if ratio <= 1.5 else "MISSED"
    print(f"notebook_size_{NOTEBOOK_STEPS}_steps: widgets {widgets / 1024:.1f} KB, text mode "
          f"{text / 1024:.1f} KB, ratio {ratio:.2f} (one run each: sizes do not vary), "
          f"target <= 1.5 {verdict}  (with nbconvert's stored widget state: "
          f"{stored / 1024:.0f} KB, information)", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    widget_overhead(args.lines, args.rounds)
    notebook_size()


if __name__ == "__main__":
    main()
