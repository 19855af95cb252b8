"""The live status widget: one row per step, a progress bar, log tails and a Cancel button.

Everything it shows is folded from the run's event log (:class:`dagnb.views.live.LiveState`).
It lives as long as its run: when the run ends it is replaced by its snapshot and its
models are closed (:func:`dagnb.notebook.widgets.watch`), so it offers only what a
running run can use: Cancel (``run.cancel()``) and the step whose log shows. The event
listener only pokes a :class:`~dagnb.views.throttle.Throttle`, so however fast a step
prints, the widget sends at most about ten updates a second to the browser.

Only standard ipywidgets 8 controls are used (VBox, HTML, IntProgress, Button,
Dropdown), which JupyterLab draws without any extra extension. The number of widget
models is the same for 1 step or 1,000 (one log pane follows the step picker, and
controls share their layout and style models): ``nbconvert --execute`` stores every
model it saw, so models per step would grow saved notebooks with the graph.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from ipywidgets.widgets.widget_string import HTMLStyle  # not exported by ipywidgets 8.1

from dagnb.checks import made_here
from dagnb.runtime.events import TERMINAL_STATES
from dagnb.views.html import header_html, table_html, tail_html
from dagnb.views.live import (
    STATE_COLOURS,
    DisplayFeed,
    LiveState,
    Publish,
    retry_line,
    waiting_line,
)
from dagnb.views.throttle import Throttle

if TYPE_CHECKING:
    from dagnb.runtime.run import Run

__all__ = ["STATE_COLOURS", "StatusWidget"]

class StatusWidget(w.VBox):
    """Live view of a :class:`~dagnb.Run`.

    Parameters
    ----------
    run
        The run to show first (or call :meth:`follow` later: building the widget
        before starting the run keeps that work out of the run's time).
    focus
        A step whose log tail starts expanded (the step a ``%%dagger`` cell defined).
    interval
        Minimum seconds between two renders.
    failed_tails
        Whether its lasting snapshot shows the stderr tails of failed steps; off when
        the cell raises :class:`~dagnb.RunFailed`, which shows them itself.
    publish
        Shows what a Python step of a run it waits on displays, below it, as it comes
        (see :class:`~dagnb.views.live.DisplayFeed`); a run it follows live (a
        ``--background`` one) shows none: the cell is done, and they would
        land in whichever cell runs then.
    """

    def __init__(self, run: Run | None = None, *, focus: str | None = None, interval: float = 0.1,
                 failed_tails: bool = True, publish: Publish | None = None,
                 **kwargs: Any) -> None:
        self.focus = focus
        self.failed_tails = failed_tails
        self._publish = publish
        self._displays: DisplayFeed | None = None
        self.cell_waiting = False  # its cell waits on the run: the kernel reads no clicks
        self._interval = interval
        self._unsubscribe: Callable[[], None] | None = None
        self._picked = False  # the user chose the log's step: stop following failures
        self._picking = False  # dagnb, not the user, is setting the picker
        shared = _SharedModels()
        self.header, self.table, self.log_view, self.message = (shared.html() for _ in range(4))
        self.progress = w.IntProgress(value=0, min=0, max=1, description="",
                                      layout=w.Layout(width="100%"))
        self.buttons = self._make_buttons(shared)
        kwargs.setdefault("layout", shared.layout)
        super().__init__(children=[self.header, self.progress, self.table, self.buttons,
                                   self.log_view, self.message], **kwargs)
        self.add_class("dagnb-status")
        self.throttle = Throttle(self.render, interval)
        if run is not None:
            self.follow(run)

    def __repr__(self) -> str:
        """The text a reader with no widgets sees (a ``--background`` cell saved before
        its run ended and turned it into its snapshot, or by a page that did not apply
        that update: one reloaded while the run went; ipywidgets keeps 110 characters)."""
        run = getattr(self, "run", None)
        if run is None:
            return "dagnb: a view of no run yet"
        return (f"dagnb run {run.id} of {', '.join(run.order)}; "
                "%dagger history says how it ended")

    # -- following a run ---------------------------------------------------------------
    def follow(self, run: Run, *, live: bool = False) -> None:
        """Show ``run`` from now on; ``live`` renders from a thread (nobody waits on it)."""
        self.stop_following()
        self.run = run
        self.state = LiveState(run)
        self.throttle = Throttle(self.render, self._interval)
        self._picked = False
        self._picking = True  # setting the options below is not the user's choice
        self.step_picker.options = list(run.order)
        if run.order:
            self.step_picker.value = self.focus if self.focus in run.order else run.order[-1]
        self._picking = False
        # The listener runs on dagnb's loop thread for every event: only a poke (a C
        # call), never drawing; the throttle renders later from the waiting thread.
        self._unsubscribe = run.events.subscribe(self.throttle.poke)
        self.throttle.poke(None)
        if live:
            self.throttle.start()
        else:
            self.throttle.flush()
            if self._publish is not None:
                self._displays = DisplayFeed(run, self.focus, self._publish)

    def tick(self) -> bool:
        """Render if due, and publish what steps displayed meanwhile (for a caller that
        waits on the run and ticks in between, from the cell's thread)."""
        rendered = self.throttle.tick()
        if self._displays is not None:
            self._displays.flush()
        return rendered

    def stop_following(self) -> None:
        """Unsubscribe from the current run and draw its last state."""
        if self._displays is not None:
            self._displays.flush()
            self._displays = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self.throttle.close()

    def let_go(self) -> None:
        """Closed, after its last frame: drop its run (the results its steps published,
        a notebook's DataFrames) and what drew it. Its models hold it in cycles (its
        buttons' callbacks, its throttle's render) that only a full collection frees,
        and a cell run again kept each earlier run's results till then."""
        self.stop_following()
        self.throttle.release()
        self.run = self.state = None  # type: ignore[assignment]

    # -- drawing -----------------------------------------------------------------------
    def render(self) -> None:
        """Draw the state folded from the events seen so far."""
        self.state.pull()
        rows = self.state.rows()
        done, total = self.state.progress()
        now = time.time()
        self.header.value = header_html(self.run, rows) + self._waits_html()
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.bar_style = _bar_style(rows)
        self.table.value = table_html(rows.values(), now)
        self._render_log(rows)
        running = not all(r["state"] in TERMINAL_STATES for r in rows.values())
        self.throttle.heartbeat = 1.0 if running else None  # durations move while quiet
        self._render_cancel(running)
        if self.state.finished:
            self.throttle.stop()  # a render thread, if any, ends after this frame

    def _render_cancel(self, running: bool) -> None:
        """The Cancel button: what a click does now; once clicked, that the run is being
        cancelled, and what it waits for (a Python step holding the run loop ends first)."""
        button, stopping = self.cancel_button, running and self.run.cancel_requested
        button.disabled = (not running or self.state.finished or self.cell_waiting
                           or stopping)
        button.button_style = "" if button.disabled else "warning"
        button.description = "Cancelling…" if stopping else "Cancel"
        held = self.run.holding_the_loop() if stopping else []
        button.tooltip = (f"Cancelling: waits for Python step {', '.join(held)} to return "
                          "(it holds the run loop)" if held
                          else _CANCEL_TIPS[self.cell_waiting and running])

    def _cancel(self) -> None:
        self.run.cancel()
        self.render()  # (said at once: a Python step may hold the run for a while yet)

    def _waits_html(self) -> str:
        """What steps wait for: their next attempt, or another run computing them."""
        retrying = (f"<div class='dagnb-retry'>{html.escape(retry_line(event))}</div>"
                    for event in self.state.retrying.values())
        waiting = (f"<div class='dagnb-waiting'>{html.escape(waiting_line(event))}</div>"
                   for event in self.state.waiting.values())
        return "".join([*retrying, *waiting])

    def _render_log(self, rows: dict[str, dict[str, Any]]) -> None:
        """The picked step's output tail; until the user picks, a failed step's."""
        if not self._picked:
            failed = [name for name, r in rows.items() if r["state"] == "failed"]
            if failed and self.step_picker.value not in failed:
                self._picking = True
                self.step_picker.value = failed[0]
                self._picking = False
        name = self.step_picker.value
        if name in rows:
            title = html.escape(_tail_title(rows[name]))
            lines = self.state.lines(name)
            earlier = self.state.earlier(name, lines)
            self.log_view.value = (
                f"<div class='dagnb-log-title'><b>{title}</b></div>"
                + (f"<div class='dagnb-earlier'>{html.escape(earlier)}</div>" if earlier else "")
                + tail_html(lines))

    # -- buttons -----------------------------------------------------------------------
    def _make_buttons(self, shared: _SharedModels) -> w.HBox:
        self.cancel_button = shared.button(description="Cancel", icon="stop",
                                           button_style="warning", tooltip="Cancel this run")
        self.step_picker = w.Dropdown(description="", layout=w.Layout(width="12em"),
                                      tooltip="The step whose output shows below")
        self.cancel_button.on_click(made_here(self._cancel))
        self.step_picker.observe(self._on_pick, names="value")
        return w.HBox([self.cancel_button, self.step_picker], layout=shared.layout)

    def _on_pick(self, change: dict[str, Any]) -> None:
        if self._picking:
            return
        self._picked = True
        if getattr(self, "state", None) is not None:
            self._render_log(self.state.rows())


class _SharedModels:
    """One layout and one style model per kind of control, shared by its instances.

    Every ipywidgets control otherwise opens its own Layout and Style models: three
    models a control, all of which ``nbconvert --execute`` stores in the notebook.
    """

    def __init__(self) -> None:
        self.layout = w.Layout()
        self._html_style = HTMLStyle()
        self._button_style = w.ButtonStyle()

    def html(self) -> w.HTML:
        return w.HTML(layout=self.layout, style=self._html_style)

    def button(self, **kwargs: Any) -> w.Button:
        return w.Button(layout=self.layout, style=self._button_style, **kwargs)


# While a cell runs, the kernel handles no widget messages, so a click would only land
# after the run: the button is disabled then, and says what does work.
_CANCEL_TIPS = {False: "Cancel this run",
                True: "Interrupt the kernel (the stop button) to cancel a run while its "
                      "cell is running"}


def _bar_style(rows: dict[str, dict[str, Any]]) -> str:
    states = {r["state"] for r in rows.values()}
    if states & {"failed", "cancelled", "skipped"}:
        return "danger"
    return "success" if states <= {"succeeded", "cached"} else "info"


def _tail_title(row: dict[str, Any]) -> str:
    mark = " (cached output)" if row["cached"] else ""
    return f"{row['step']} · {row['state']}{mark}"
