"""Text mode writes stdout and stderr apart (a notebook shows them as two streams): a
step's stderr written after every step's stdout of the same tick read as the last
header's step's (``a: WARNING`` under ``── c ──``). Each step's lines are written before
the next step's header."""

from __future__ import annotations

import dagnb
from dagnb.views.live import TextView


class _Recorder:
    """One of two streams that note, in order, what each is given."""

    def __init__(self, name: str, written: list[tuple[str, str]]) -> None:
        self.name, self.written = name, written

    def write(self, text: str) -> int:
        self.written.extend((self.name, line) for line in text.splitlines())
        return len(text)

    def flush(self) -> None:
        pass


def test_each_steps_stderr_comes_before_the_next_steps_header(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("order", [
        dagnb.Step("a", run="echo a-out; echo a-err >&2"),
        dagnb.Step("b", run="echo b-out; echo b-err >&2", needs=["a"]),
        dagnb.Step("c", run="echo c-out", needs=["b"]),
    ])
    run = graph.run(on_event=None)  # (done: the view reads every line in one tick)
    written: list[tuple[str, str]] = []
    TextView(run, focus="c", stdout=_Recorder("out", written),
             stderr=_Recorder("err", written)).close()
    lines = [line for _, line in written]
    assert lines.index("a-err") < lines.index("── b ──") < lines.index("b-err") \
        < lines.index("── c ──"), written
    assert ("err", "a-err") in written and ("out", "a-out") in written


def test_a_step_printing_past_the_lines_kept_says_how_many_more_and_where(
        tmp_path, monkeypatch) -> None:
    """Text mode (no widgets, ``dagnb run NOTEBOOK``) printed a 30,000-line step's first
    10,000 lines, the lines a run keeps in memory, then its status, with no word of the
    rest: a CI log or a saved notebook looked whole, cut where the error usually is."""
    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("big", [dagnb.Step("big", run="seq 1 30000")])
    run = graph.run(executor="local")
    written: list[tuple[str, str]] = []
    TextView(run, focus="big", stdout=_Recorder("out", written),
             stderr=_Recorder("err", written)).close()
    lines = [line for _, line in written]
    at = lines.index("10000")
    assert lines[at + 1] == "── big: 20000 later lines not shown; %dagger logs big shows them ──"
    assert run.logs("big")["line"].iloc[-1] == "30000"  # (what that command shows)
