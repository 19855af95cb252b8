"""Live views of runs in the notebook: the status widget, or plain text without widgets.

:func:`live_view` picks the view: the ipywidgets :class:`StatusWidget` when a widget
front end is there to draw it (a Jupyter kernel), else :class:`dagnb.views.live.TextView`
(terminal IPython, the CLI, nbval). ``DAGNB_WIDGETS`` in the environment, read as the
``DAGNB_*`` flags are (``1/0``, ``true/false``, ``yes/no``, ``on/off``; another value warns
once and is ignored), or :data:`ENABLED` (``True``/``False``; ``None`` = detect) overrides
the detection.
:func:`watch` shows a run: it waits on a synchronous run from the calling thread and
renders in between, so the output lands in the running cell, and when the run ends it
replaces the widget by a static snapshot (:class:`dagnb.views.snapshot.RunSnapshot`) that
a saved notebook keeps (a ``--background`` run's widget too, from a thread, through its
display id: the cell finished long before; see :func:`_close_when_done` for which front
ends apply that update); a Ctrl-C or kernel
interrupt there cancels the run (in-process Python steps included) and waits for its
processes to be killed. Meanwhile the kernel reads no widget clicks, so the widget's
Cancel button is disabled and its tooltip points at the kernel's interrupt.

ipywidgets is imported only when a widget is built.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from dagnb.checks import warn_user
from dagnb.config import context, env_flag
from dagnb.errors import ConfigError, DagnbError
from dagnb.executors.loop import interrupts_marked
from dagnb.views.live import TextView

if TYPE_CHECKING:
    from dagnb.notebook.widgets.status import StatusWidget
    from dagnb.runtime.run import Run

__all__ = ["ENABLED", "Builder", "FinishedBeforeInterrupt", "LeftRunning", "StatusWidget",
           "discard", "frontend_available", "live_view", "stop", "watch"]

ENABLED: bool | None = None
CANCEL_GRACE = 5.0  # seconds a cancelled run gets to kill its processes


def frontend_available() -> bool:
    """Whether widgets can be drawn here (see the module docs for the overrides)."""
    if ENABLED is not None:
        return ENABLED
    chosen = _chosen_by_environment()
    if chosen is not None:
        return chosen
    from IPython import get_ipython

    shell = get_ipython()
    # Terminal IPython has no kernel; a Jupyter kernel has one with a comm manager.
    return shell is not None and getattr(shell, "kernel", None) is not None


def _chosen_by_environment() -> bool | None:
    """``DAGNB_WIDGETS`` as a switch, or None (detect). A bad value warns once and is
    ignored: an error would fail every cell of the notebook, not only the first."""
    try:
        return env_flag("DAGNB_WIDGETS")
    except ConfigError as exc:
        warned = context().get("widgets.warned", set)
        if str(exc) not in warned:
            warned.add(str(exc))
            warn_user(f"{exc}; ignored: widgets are shown where a front end can draw them")
        return None


def live_view(*, focus: str | None = None, failed_tails: bool = True) -> Any:
    """A StatusWidget or a TextView, not following any run yet (see :func:`watch`).

    ``failed_tails=False``: the view (and the widget's lasting snapshot) leaves the
    stderr tails of failed steps to the :class:`~dagnb.RunFailed` the caller raises
    after the run.
    """
    from dagnb.notebook.displays import publish

    if frontend_available():
        from dagnb.notebook.widgets.status import StatusWidget

        return StatusWidget(focus=focus, failed_tails=failed_tails, publish=publish)
    return TextView(focus=focus, failed_tails=failed_tails, publish=publish)


def watch(run: Run, view: Any = None, *, focus: str | None = None, background: bool = False,
          interval: float = 0.1) -> Any:
    """Display a live view of ``run``; wait for it unless ``background``.

    Parameters
    ----------
    run
        The run, started already (``start_background``).
    view
        A view from :func:`live_view`; built here if None. Building it before starting
        the run keeps the widget's construction out of the run's time.
    focus
        As for :func:`live_view`.
    background
        Return at once; a widget keeps rendering from its own thread and turns into its
        snapshot when the run ends (where the front end applies the update: see
        :func:`_close_when_done`), plain text prints one line saying how to look at the
        run later.
    interval
        How often to look while waiting.

    Returns
    -------
    The view.
    """
    if view is None:
        view = live_view(focus=focus)
    _watched.add(run)
    if isinstance(view, TextView):
        if background:
            print(f"run {run.id} started in the background; %dagger status shows it")
            return view
        view.follow(run)
    else:
        view.cell_waiting = not background  # Cancel cannot be clicked then: say so
        view.follow(run, live=background)
        view.display_handle = _display(view)  # (following: its text form names the run)
        if background:
            _close_when_done(view)
    if not background:
        _wait(run, view, interval)
    return view


# the runs shown here (weakly): which one's step holds the loop a cancelled run waits for
_watched: weakref.WeakSet[Run] = weakref.WeakSet()


class LeftRunning(KeyboardInterrupt):
    """An interrupt after which steps of the cancelled run were still running when the
    grace ended: Python code in one long call (``time.sleep``, ``subprocess.run``, a C
    extension) stops only when the call returns. ``steps`` names them, or the step of
    another run whose call holds the loop this run waited for."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__(steps)
        self.steps = steps


class FinishedBeforeInterrupt(DagnbError):
    """An interrupt that came once every step of the run had ended (the last one's result
    being stored, say): it stops the cell, as any interrupt does (Run All stops there),
    but nothing was cancelled, and its message says so."""


def _wait(run: Run, view: Any, interval: float) -> None:
    try:
        # (the stop button kills what a Python step waits for: the run is marked first,
        # so that the step, cut short, is not stored; mark_cancelled is looked up only
        # when the signal comes)
        with interrupts_marked(lambda: run.mark_cancelled(), run):
            while not run.done:
                with contextlib.suppress(TimeoutError):
                    run.wait(interval)
                view.tick()
    except KeyboardInterrupt:
        try:
            stop(run)
        finally:
            _close(view)
        raise
    _close(view)


def stop(run: Run) -> None:
    """Cancel ``run``, whose cell was interrupted, and give it :func:`_grace`;
    :class:`LeftRunning` when steps still run then (saying its processes stopped would be
    untrue), :class:`FinishedBeforeInterrupt` when every step had ended and none was
    cancelled (saying the run was would be untrue), else the caller's interrupt goes on."""
    run.cancel()
    _grace(run)
    if not run.done:
        raise LeftRunning(_still_in_a_call(run)) from None
    finished = _finished_uncancelled(run)
    if finished is not None:
        raise FinishedBeforeInterrupt(
            f"interrupted: every step had finished ({finished}); nothing was cancelled") from None


def _still_in_a_call(run: Run) -> list[str]:
    """The running steps of ``run``, cancelled but not done; if none (it waits for the
    loop, its steps not started), the step of another run whose long call holds it."""
    running = [name for name, state in run.states().items() if state == "running"]
    if running:
        return running
    return [name for other in list(_watched) if other is not run
            for name in other.holding_the_loop()]


def _finished_uncancelled(run: Run) -> str | None:
    """How ``run``'s steps ended (``1 succeeded and stored``), if each had ended and none
    was cancelled: the interrupt came after the last one's code (as its result was
    stored); None otherwise."""
    states = run.states()
    ends = list(states.values())
    if not ends or "cancelled" in ends or any(end not in _ENDS for end in ends):
        return None
    counts = {end: ends.count(end) for end in dict.fromkeys(ends)}
    return ", ".join(_count_words(run, states, end, count) for end, count in counts.items())


_ENDS = ("succeeded", "cached", "failed", "skipped")  # (cancelled: the interrupt's doing)


def _count_words(run: Run, states: dict[str, str], end: str, count: int) -> str:
    """``2 succeeded``, with how many of those were stored in the cache."""
    if end != "succeeded":
        return f"{count} {end}"
    stored = sum(1 for name, state in states.items()
                 if state == end and run.entry_of(name) is not None)
    if stored == count:
        return f"{count} succeeded and stored"
    return f"{count} succeeded ({stored} stored)" if stored else f"{count} succeeded"


def _grace(run: Run) -> None:
    """Give the cancelled run up to :data:`CANCEL_GRACE` to stop its steps. The stop
    button pressed again meanwhile does not cut it short: the cell would end saying the
    run's processes stopped while a step in a long call still ran (and the next cell
    waited for it with no word why). A process slow to die is no TimeoutError."""
    deadline = time.monotonic() + CANCEL_GRACE
    while not run.done and (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError, KeyboardInterrupt):
            run.wait(left)


def _close_when_done(view: Any) -> None:
    """Settle a ``--background`` cell's widget when its run ends, as a waited-on cell's:
    a notebook saved after that keeps how the run ended, not a widget no reader draws.

    The snapshot goes out as an ``update_display_data`` of the widget's display id, sent
    from this thread: ipykernel gives it the parent of the latest shell request (another
    cell's, a widget's comm message), not the cell's. Whether it lands is the front end's
    doing. JupyterLab routes an update by display id to every cell of the page that showed
    it, whatever its parent, and keeps a cell's request until that cell runs again: the
    page that ran the cell applies it, other cells running or not. A page that did not
    show it (reloaded, the notebook reopened while the run went) drops it, and the cell
    saves the widget's text form, the line naming the run. nbclient reads only the running
    cell's messages: it keeps the update when a later cell runs as it arrives.
    (tests/browser/test_jupyterlab.py, tests/test_lasting_output.py)
    """
    threading.Thread(target=_close_after_run, args=(view,), daemon=True,
                     name="dagnb-settle").start()


def _close_after_run(view: Any) -> None:
    run = None
    try:
        while view.run is not run:  # (its view may have followed another run meanwhile)
            run = view.run
            run.wait()
        _close(view)
    except Exception as exc:  # a thread has nobody to raise to
        warnings.warn(f"dagnb: the view of run {run.id if run else '?'} was not replaced "
                      f"by its snapshot: {exc}", stacklevel=1)


def discard(view: Any) -> None:
    """Close a view built for a run that did not start or had nothing to run: a widget's
    models opened with it, shown or not, and stay open in the kernel and the front end
    (stored by ``nbconvert --execute``) until closed."""
    if not isinstance(view, TextView):
        _close_models(view)


def _close(view: Any) -> None:
    if isinstance(view, TextView):
        view.close()
    else:
        view.cell_waiting = False
        view.stop_following()
        _settle(view)


def _settle(view: Any) -> None:
    """Replace the widget by its lasting form, and close its models.

    The saved notebook then holds static HTML and text that any reader draws, instead of
    widget models that only a live kernel can (and whose state would bloat the file).
    """
    from dagnb.views.snapshot import RunSnapshot

    handle = getattr(view, "display_handle", None)
    if handle is None:
        return
    handle.update(RunSnapshot(view.run, view.focus, failed_tails=view.failed_tails))
    _close_models(view)
    let_go = getattr(view, "let_go", None)  # (closed: nothing draws or clicks it again)
    if let_go is not None:  # (a stand-in view has none)
        let_go()


def _close_models(widget: Any) -> None:
    """Close ``widget`` and every model it holds: its children, and their layout and style
    models (shared ones too), which the front end and the kernel keep until closed."""
    held = [*getattr(widget, "children", ()), getattr(widget, "layout", None),
            getattr(widget, "style", None)]
    for model in held:
        if model is not None:
            _close_models(model)
    widget.close()


def _display(view: Any) -> Any:
    from IPython.display import display

    return display(view, display_id=True)


def __getattr__(name: str) -> Any:
    # Lazy: importing dagnb.notebook.widgets must not import ipywidgets (the CLI, plain scripts).
    if name == "StatusWidget":
        from dagnb.notebook.widgets.status import StatusWidget

        return StatusWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
