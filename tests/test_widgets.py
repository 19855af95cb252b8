"""The live status widget without a browser: model state, buttons, throttling, overhead.

A dummy comm (as in ipywidgets' ``widgets/tests/utils.py``) records every message a
widget sends, so the tests can count what would reach the browser.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import types
import warnings
from typing import Any

import comm
import pytest

import dagnb
import dagnb.notebook.widgets
from dagnb import Graph, Step
from dagnb.notebook.widgets import frontend_available, live_view, watch
from dagnb.notebook.widgets.status import StatusWidget
from dagnb.runtime.prepare import start_background
from dagnb.testing import Clock, wait_until
from dagnb.views.throttle import Throttle


class DummyComm:
    comm_id = "a-b-c-d"
    kernel = "Truthy"

    def __init__(self) -> None:
        self.messages: list[object] = []

    def open(self, *args, **kwargs):
        pass

    def on_msg(self, *args, **kwargs):
        pass

    def send(self, *args, **kwargs):
        self.messages.append((args, kwargs))

    def close(self, *args, **kwargs):
        pass


@pytest.fixture
def comms(monkeypatch):
    created: list[DummyComm] = []

    def create_comm(**kwargs):
        created.append(DummyComm())
        return created[-1]

    monkeypatch.setattr(comm, "create_comm", create_comm)
    return created


def sent(created: list[DummyComm]) -> int:
    return sum(len(c.messages) for c in created)


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = dagnb.settings().executor
    dagnb.configure(executor="local")
    yield tmp_path
    dagnb.configure(executor=old)


def two_step_graph(fail: bool = False) -> Graph:
    graph = Graph("demo")
    graph.replace(Step("make", run="echo made; echo note >&2"))
    graph.replace(Step("use", run="echo used" + ("; echo broke >&2; exit 2" if fail else ""),
                       needs=("make",)))
    return graph


def running_widget(command: str) -> tuple[Any, StatusWidget]:
    """A widget following a one-step run, drawn once its step is running."""
    graph = Graph("nap")
    graph.replace(Step("nap", run=command, cache=False))
    run = start_background(graph)
    widget = StatusWidget(run)
    assert wait_until(lambda: run.states()["nap"] == "running", timeout=10)
    widget.render()
    return run, widget


def finished_widget(graph: Graph, **kwargs) -> StatusWidget:
    run = start_background(graph)
    widget = StatusWidget(run, **kwargs)
    run.wait(30)
    widget.stop_following()
    return widget


# -- model state ----------------------------------------------------------------------
def _detected(monkeypatch, kernel: bool) -> None:
    """What detection alone would say: a Jupyter kernel (widgets), or no shell (text)."""
    import IPython

    shell = types.SimpleNamespace(kernel=object()) if kernel else None
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)


@pytest.mark.parametrize(("value", "shown"), [
    ("false", False), ("off", False), ("No", False), ("0", False),
    ("true", True), ("on", True), ("YES", True), (" 1 ", True),
])
def test_dagnb_widgets_takes_the_words_the_other_dagnb_switches_take(monkeypatch, value, shown):
    _detected(monkeypatch, kernel=not shown)  # the variable must overrule the detection
    monkeypatch.setenv("DAGNB_WIDGETS", value)
    assert frontend_available() is shown


def test_a_bad_dagnb_widgets_warns_once_naming_what_it_takes_then_detects(monkeypatch):
    _detected(monkeypatch, kernel=True)
    monkeypatch.setenv("DAGNB_WIDGETS", "maybe")
    expected = ("environment variable DAGNB_WIDGETS='maybe' is not valid; expected "
                "true/false, yes/no, on/off or 1/0; ignored")
    with pytest.warns(UserWarning, match=re.escape(expected)) as said:
        assert frontend_available() is True
    assert said[0].filename == __file__  # (the caller's line, not dagnb's)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not again: a notebook would show it on every cell
        assert frontend_available() is True


def test_rows_progress_and_tails_after_a_run(comms, local):
    widget = finished_widget(two_step_graph(), focus="use")
    assert widget.table.value.count("class='dagnb-row dagnb-state-succeeded'") == 2
    assert (widget.progress.value, widget.progress.max) == (2, 2)
    assert widget.progress.bar_style == "success"
    assert widget.step_picker.value == "use"  # the cell's own step shows first
    assert "use · succeeded" in widget.log_view.value and "used" in widget.log_view.value
    widget.step_picker.value = "make"
    assert "make · succeeded" in widget.log_view.value
    assert "made\nnote" in widget.log_view.value
    assert widget.cancel_button.disabled
    assert "2 succeeded" in widget.header.value
    assert sent(comms) > 0


def test_cached_steps_are_marked(comms, local):
    graph = two_step_graph()
    graph.run()
    widget = finished_widget(graph)
    assert widget.table.value.count("dagnb-state-cached") == 2
    assert "<td>✓</td>" in widget.table.value
    widget.step_picker.value = "make"
    assert "make · cached (cached output)" in widget.log_view.value


def test_failure_is_red_with_stderr_tail(comms, local):
    widget = finished_widget(two_step_graph(fail=True))
    assert "dagnb-state-failed" in widget.table.value
    assert "exit code 2: broke" in widget.table.value
    assert widget.progress.bar_style == "danger"
    assert widget.step_picker.value == "use"  # a failed step's output shows unasked
    assert widget.log_view.value.endswith("used\nbroke</pre>")


def test_a_step_past_the_kept_lines_shows_its_last_lines_and_error(comms, local):
    """The event log keeps a step's first 10,000 lines: the widget and the saved snapshot
    showed lines 9,981 to 10,000 of 12,000 and not the error printed after them."""
    from dagnb.views.snapshot import RunSnapshot

    graph = Graph("loud", [Step("loud", run="seq 12000; sleep 0.2; echo boom >&2; exit 1")])
    widget = finished_widget(graph)
    assert widget.log_view.value.endswith("11999\n12000\nboom</pre>"), widget.log_view.value
    snapshot = RunSnapshot(widget.run, "loud", failed_tails=False)
    assert "11961 earlier lines not shown" in snapshot.text
    assert snapshot.text.split("\n")[2:4] == ["11962", "11963"]
    assert "12000\nboom\nstep" in snapshot.text and "12000\nboom</pre>" in snapshot.html


def test_a_run_all_from_the_cache_is_saved_as_its_line_not_a_header_over_no_row(local):
    """``%dagger run`` of steps all cached kept the table's header alone, then the
    'cached: make, use' line; a run with a step that ran keeps its table."""
    from dagnb.views.snapshot import RunSnapshot

    graph = two_step_graph()
    assert graph.run().states() == {"make": "succeeded", "use": "succeeded"}
    run = graph.run()
    snapshot = RunSnapshot(run)
    assert snapshot.text == "cached: make, use"
    assert "<table" not in snapshot.html and "cached: make, use" in snapshot.html
    graph.replace(Step("use", run="echo used again", needs=("make",)))
    ran = RunSnapshot(graph.run())
    header, row, note = ran.text.splitlines()[-3:]
    assert (header.split()[:2], row.split()[:2], note) == (
        ["step", "state"], ["use", "succeeded"], "cached: make"), ran.text
    assert "<table" in ran.html


def test_a_progress_bar_and_a_long_line_are_shown_as_a_terminal_leaves_them(comms, local):
    """A tqdm bar is one line of every state it drew (\\r between them) and a line can
    be megabytes: the widget and the saved snapshot showed and kept them whole."""
    from dagnb.views.snapshot import RunSnapshot

    bar = "".join(f"\\r{i:3d}%%|{'#' * (i // 10)}" for i in range(101))
    run = f"printf '{bar}\\r\\n'; head -c 200000 /dev/zero | tr '\\0' x; echo"
    widget = finished_widget(Graph("bars", [Step("bars", run=run)]))
    snapshot = RunSnapshot(widget.run, "bars")
    cut = "x" * 500 + "… (199500 characters more; see the step"
    for shown in (widget.log_view.value, snapshot.html, snapshot.text):
        assert "100%|##########\n" + cut in shown, shown[:300]
        assert "\r" not in shown and len(shown) < 3000


def test_terminal_colour_codes_are_left_out_of_the_html_tail():
    from dagnb.views.html import tail_html

    shown = tail_html(["h\u00e9llo \x1b[1;31mred\x1b[0m <b>", "\x1b[2Kdone"])
    assert ">h\u00e9llo red &lt;b&gt;\ndone</pre>" in shown


def test_state_colours_follow_the_state(comms, local):
    widget = finished_widget(two_step_graph(fail=True))
    assert "background:#c62828" in widget.table.value  # failed is red
    assert "background:#2e7d32" in widget.table.value  # succeeded is green


def test_widget_models_do_not_grow_with_the_graph(comms, local):
    def graph_of(n: int) -> Graph:
        graph = Graph(f"g{n}")
        for i in range(n):
            graph.replace(Step(f"s{i}", run="true", cache=False))
        return graph

    opened = []
    for n in (1, 100):
        before = len(comms)
        finished_widget(graph_of(n))
        opened.append(len(comms) - before)  # one comm per widget model
    assert opened[0] == opened[1] <= 20  # nbconvert --execute stores each in the notebook


def test_a_picked_step_is_not_replaced_by_a_failure(comms, local):
    graph = two_step_graph(fail=True)
    run = start_background(graph)
    widget = StatusWidget(run)  # shows the last step, "use", first
    widget.step_picker.value = "make"  # the user picks while the run goes on
    run.wait(30)
    widget.stop_following()
    assert widget.step_picker.value == "make"
    assert "made\nnote" in widget.log_view.value


# -- buttons ----------------------------------------------------------------------------
def test_cancel_button_cancels_the_run(comms, local):
    run, widget = running_widget("sleep 30")
    assert not widget.cancel_button.disabled
    widget.cancel_button.click()
    run.wait(10)
    widget.stop_following()
    assert run.states() == {"nap": "cancelled"}
    assert "dagnb-state-cancelled" in widget.table.value


def test_a_clicked_cancel_says_so_and_what_it_waits_for(comms, local):
    """A Python step holding the run loop is cancelled only when it returns: the button
    looked as if the click was not heard."""
    released = threading.Event()  # (a sleep of 2 s was waited out)

    def hold() -> None:
        released.wait(30)  # (one long call, as time.sleep is)

    graph = Graph("held", [Step("hold", func=hold, cache=False)])
    run = start_background(graph)
    widget = StatusWidget(run)
    try:  # (said running a moment before its call holds the loop: CI's load met that)
        assert wait_until(lambda: run.holding_the_loop() == ["hold"], timeout=10)
        widget.render()
        assert widget.cancel_button.description == "Cancel"
        widget.cancel_button.click()
        assert widget.cancel_button.description == "Cancelling…"
        assert widget.cancel_button.disabled
        assert widget.cancel_button.tooltip == ("Cancelling: waits for Python step hold to "
                                                "return (it holds the run loop)")
    finally:  # (a step left holding the loop would hold the next tests' runs)
        released.set()
    run.wait(10)
    widget.stop_following()
    widget.render()
    assert run.states() == {"hold": "cancelled"}
    assert widget.cancel_button.description == "Cancel" and widget.cancel_button.disabled


# -- throttling -----------------------------------------------------------------------
def test_throttle_renders_at_most_once_per_interval():
    clock = Clock(now=0.0)
    renders = []
    throttle = Throttle(lambda: renders.append(clock.now), interval=0.1, clock=clock)
    assert not throttle.tick()  # nothing changed yet
    for step in range(1000):  # 1 s of pokes, one per millisecond
        clock.now = step / 1000
        throttle.poke(None)
        throttle.tick()
    throttle.flush()
    assert len(renders) <= 11
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(renders[:-1]))


def test_throttle_heartbeat_renders_a_quiet_stretch_once_a_second():
    clock = Clock(now=0.0)
    renders = []
    throttle = Throttle(lambda: renders.append(clock.now), interval=0.1, clock=clock)
    throttle.poke(None)
    throttle.tick()
    for step in range(1, 31):  # 3 s without a poke
        clock.now = step / 10
        throttle.tick()
    assert renders == [0.0]  # no heartbeat: nothing changed, nothing drawn
    throttle.heartbeat = 1.0
    for step in range(31, 61):
        clock.now = step / 10
        throttle.tick()
    assert len(renders) == 4 and renders[1] == pytest.approx(3.1)
    assert all(0.99 <= b - a <= 1.11 for a, b in itertools.pairwise(renders[1:]))


def test_a_running_step_keeps_its_widget_beating(comms, local, tmp_path):
    release = tmp_path / "release"  # (running till then: a sleep 1 was waited out)
    run, widget = running_widget(f"for i in $(seq 600); do [ -e {release} ] && break; "
                                 "sleep 0.02; done")
    assert widget.throttle.heartbeat == 1.0
    release.touch()
    run.wait(30)
    widget.stop_following()
    assert widget.throttle.heartbeat is None


def test_throttle_thread_renders_pending_changes_and_stops():
    renders = []
    throttle = Throttle(lambda: renders.append(time.monotonic()), interval=0.05).start()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        throttle.poke(None)
    throttle.close()
    assert 2 <= len(renders) <= 0.5 / 0.05 + 3
    assert not throttle.pending


def test_throttle_stop_from_a_listener_does_not_block():
    throttle = Throttle(lambda: None, interval=0.05).start()
    throttle.poke(None)
    started = time.monotonic()
    throttle.stop()
    assert time.monotonic() - started < 0.01
    throttle.close()


def test_background_widget_keeps_updating_from_its_thread(comms, local, monkeypatch):
    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", True)
    monkeypatch.setattr(dagnb.notebook.widgets, "_display", lambda view: None)
    graph = Graph("bg")
    graph.replace(Step("tick", run="for i in 1 2 3; do echo $i; sleep 0.1; done", cache=False))
    run = start_background(graph)
    widget = watch(run, background=True)
    assert not run.done
    run.wait(30)
    assert wait_until(lambda: "dagnb-state-succeeded" in widget.table.value)
    assert "1\n2\n3" in widget.log_view.value


# -- overhead -------------------------------------------------------------------------
LINES = 100_000


def _run_seconds(run) -> float:
    """The run's own duration, from its first to its last event."""
    events = [e for e in run.events if e.kind == "run"]
    return events[-1].time - events[0].time


def _timed_run(with_widget: bool, comms) -> tuple[float, int, int, float]:
    graph = Graph("loud")
    graph.replace(Step("loud", run=f"seq {LINES}", cache=False))
    started = time.perf_counter()
    renders = messages = 0
    if with_widget:  # as a %%dagger cell does: build the view, start, display, wait, tick
        view = live_view(focus="loud")
        before = sent(comms)
        run = start_background(graph)
        watch(run, view)
        renders, messages = view.throttle.renders, sent(comms) - before
    else:
        run = start_background(graph)
        run.wait(60)
    wall = time.perf_counter() - started
    assert run.ok and len(run.logs("loud")) == LINES
    return _run_seconds(run), renders, messages, wall


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_100000_line_step_renders_at_most_ten_times_a_second(comms, local, monkeypatch):
    """Throttling bounds what reaches the browser; the run-time overhead (target <= 10%)
    is measured side by side in benchmarks/bench_widgets.py, not asserted here."""
    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", True)
    monkeypatch.setattr(dagnb.notebook.widgets, "_display", lambda view: None)
    _, renders, messages, wall = _timed_run(True, comms)
    assert 1 <= renders <= wall * 10 + 2
    assert messages <= renders * 12  # a handful of changed traits per render


def test_listener_is_cheap_and_never_renders_on_the_loop(comms, local):
    graph = Graph("q")
    graph.replace(Step("q", run="seq 1000", cache=False))
    run = start_background(graph)
    widget = StatusWidget(run)
    threads = set()
    original = widget.render

    def spy():
        threads.add(threading.current_thread().name)
        original()

    widget.throttle.render = spy
    run.wait(30)
    while widget.throttle.pending:
        widget.tick()
        time.sleep(0.01)
    widget.stop_following()
    assert "dagnb-loop" not in threads


def test_interrupt_stays_an_interrupt_when_the_run_outlives_the_grace(monkeypatch):
    class StuckRun:
        done = False
        cancelled = False

        def wait(self, timeout=None):
            raise TimeoutError("still running")

        def cancel(self):
            self.cancelled = True

        def states(self):
            return {"done": "succeeded", "stuck": "running"}

    class View:
        closed = False

        def tick(self):
            raise KeyboardInterrupt

        def stop_following(self):
            self.closed = True

    monkeypatch.setattr(dagnb.notebook.widgets, "CANCEL_GRACE", 0.01)
    run, view = StuckRun(), View()
    with pytest.raises(KeyboardInterrupt) as stop:  # (an interrupt, naming what still runs)
        dagnb.notebook.widgets._wait(run, view, 0.01)
    assert run.cancelled and view.closed
    assert stop.value.steps == ["stuck"]


def test_text_mode_shows_a_cached_upstream_step_as_one_line(tmp_path, monkeypatch, capsys):
    from dagnb.views.live import TextView

    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("once")
    graph.add(dagnb.Step("prepare", run="for i in 1 2 3; do echo line$i; done"))
    graph.add(dagnb.Step("train", run="echo trained", needs=("prepare",)))
    graph.run("prepare")
    capsys.readouterr()
    run = graph.run("train", on_event=None)
    view = TextView(run, focus="train")
    view.close()
    out = capsys.readouterr().out
    assert "line1" not in out
    assert "── prepare: cached, 3 lines; %dagger logs prepare ──" in out


def test_cancel_is_disabled_while_its_cell_waits_and_says_why(comms, local, monkeypatch):
    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", True)
    graph = Graph("slow")
    graph.replace(Step("nap", run="sleep 0.5", cache=False))
    seen = []
    original = dagnb.notebook.widgets._wait

    def spy(run, view, interval):
        deadline = time.monotonic() + 10
        while run.states()["nap"] != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        view.render()
        seen.append((view.cancel_button.disabled, view.cancel_button.tooltip))
        original(run, view, interval)

    monkeypatch.setattr(dagnb.notebook.widgets, "_wait", spy)
    monkeypatch.setattr(dagnb.notebook.widgets, "_display", lambda view: None)
    view = watch(start_background(graph), live_view())
    assert seen == [(True, "Interrupt the kernel (the stop button) to cancel a run while "
                           "its cell is running")]
    assert not view.cell_waiting


def test_cancel_stays_enabled_for_a_background_run(comms, local, monkeypatch):
    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", True)
    monkeypatch.setattr(dagnb.notebook.widgets, "_display", lambda view: None)
    graph = Graph("slow")
    graph.replace(Step("nap", run="sleep 30", cache=False))
    run = start_background(graph)
    view = watch(run, live_view(), background=True)
    deadline = time.monotonic() + 10
    while run.states()["nap"] != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    view.render()
    assert not view.cancel_button.disabled and view.cancel_button.tooltip == "Cancel this run"
    run.cancel()
    run.wait(10)
    view.stop_following()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_the_widget_says_which_attempt_comes_next_and_why(comms, local, tmp_path):
    from dagnb.testing import wait_until

    tries = tmp_path / "tries"
    script = (f'echo x >> "{tries}"; '
              f'[ "$(wc -l < "{tries}")" -ge 3 ] || {{ echo nope >&2; exit 1; }}')
    graph = Graph("flaky", [Step("flaky", retries=3, run=script)])
    run = start_background(graph)
    widget = StatusWidget(run)

    def shows_retry() -> bool:
        widget.throttle.flush()
        return "dagnb-retry" in widget.header.value

    assert wait_until(shows_retry, timeout=20)
    assert "flaky: retrying 2/4 in " in widget.header.value
    assert "exit code 1: nope" in widget.header.value
    run.wait(30)
    widget.stop_following()
    assert "dagnb-retry" not in widget.header.value  # it succeeded: nothing is pending


def test_the_widget_says_a_step_waits_for_another_run_computing_it(comms, local, tmp_path):
    release = tmp_path / "release"
    graph = Graph("shared", [Step("x", run=f'while [ ! -f "{release}" ]; do sleep 0.02; done')])
    first = start_background(graph)
    try:
        assert wait_until(lambda: first.states()["x"] == "running", timeout=10)
        second = start_background(graph)  # the same step, key and cache: it waits
        widget = StatusWidget(second)

        def shows_waiting() -> bool:
            widget.throttle.flush()
            return "dagnb-waiting" in widget.header.value

        assert wait_until(shows_waiting, timeout=10)
        assert "x: waiting for another run computing it" in widget.header.value
    finally:
        release.touch()
    assert second.wait(30).states() == {"x": "cached"}
    widget.stop_following()
    assert "dagnb-waiting" not in widget.header.value  # it has its result: no wait pending
    first.wait(30)
