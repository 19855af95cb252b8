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


def test_an_interrupt_as_the_session_starts_a_background_run_cancels_it(shell, monkeypatch):
    monkeypatch.setattr(dagnb.notebook.session, "_say_unordered", _interrupt)
    started = time.monotonic()
    with pytest.raises(UsageError, match="interrupted: the run was cancelled"):
        shell.run_cell_magic("dagger", "slow --background --no-cache", SLOW)
    _stopped_within_grace(started)


def test_an_interrupt_as_the_cell_shows_a_background_run_cancels_it(shell, monkeypatch):
    monkeypatch.setattr(dagnb.notebook.magics, "watch", _interrupt)
    started = time.monotonic()
    with pytest.raises(UsageError, match="interrupted: the run was cancelled"):
        shell.run_cell_magic("dagger", "slow --background --no-cache", SLOW)
    _stopped_within_grace(started)
