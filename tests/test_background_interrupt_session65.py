"""A cell interrupted just after it started a --background run: the run stops too, as
the interrupt's message says (it went on, and ended succeeded)."""

from __future__ import annotations

import time

import pytest
from IPython.core.error import UsageError

import dagnb.notebook.magics
import dagnb.notebook.session
from dagnb.notebook.session import get_session

SLOW = "sleep 30\n"


def _interrupt(*_args: object, **_kwargs: object) -> None:
    raise KeyboardInterrupt


def _stopped_within_grace(started: float) -> None:
    run = get_session().last_run
    assert run.wait(10).done
    assert run.states() == {"slow": "cancelled"}
    assert time.monotonic() - started < 10  # (not the step's 30 s)


@pytest.mark.parametrize("module, name", [
    (dagnb.notebook.session, "_say_unordered"),  # as the session starts the run
    (dagnb.notebook.magics, "watch"),  # as the cell shows it
], ids=["session start", "cell shows it"])
def test_an_interrupt_just_after_a_background_run_started_cancels_it(
        shell, monkeypatch, module, name):
    monkeypatch.setattr(module, name, _interrupt)
    started = time.monotonic()
    with pytest.raises(UsageError, match="interrupted: the run was cancelled"):
        shell.run_cell_magic("dagger", "slow --background --no-cache", SLOW)
    _stopped_within_grace(started)
