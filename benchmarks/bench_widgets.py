"""The live status widget's cost: a step printing 100,000 lines, run with and without
the widget attached, alternating, best of each (target: ratio <= 1.10).

Comms are replaced by a counting stand-in, as in ipywidgets' own tests, so no browser
is needed; renders and messages are counted too.

    python benchmarks/bench_widgets.py [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile

import comm
from comm import base_comm

import dagnb
import dagnb.notebook.widgets
from dagnb import Graph, Step
from dagnb.notebook.widgets import live_view, watch
from dagnb.runtime.prepare import start_background


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
    gc.collect()  # the previous run's 100,000 events must not be collected during this one
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    comm.create_comm = lambda **kwargs: CountingComm(**kwargs)
    dagnb.notebook.widgets.ENABLED = True
    dagnb.notebook.widgets._display = lambda view: None
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        plain, widget = [], []
        for _ in range(args.repeat):
            plain.append(one_run(args.lines, False))
            widget.append(one_run(args.lines, True))
        os.chdir("/")
    best_plain, best_widget = min(r[0] for r in plain), min(r[0] for r in widget)
    renders = max(r[1] for r in widget)
    messages = max(r[2] for r in widget)
    print(f"widget_{args.lines}_lines: run {best_plain * 1e3:.0f} ms plain, "
          f"{best_widget * 1e3:.0f} ms with the widget, ratio {best_widget / best_plain:.3f} "
          f"(target <= 1.10); at most {renders} renders, {messages} comm messages per run")


if __name__ == "__main__":
    main()
