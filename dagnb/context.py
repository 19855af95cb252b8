"""The running step's context, for in-process Python steps.

A shell step reads ``$DAGNB_OUT``; a Python function running in-process cannot have
its own environment variables, so it calls :func:`current` instead.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["StepContext", "current"]


@dataclasses.dataclass(frozen=True)
class StepContext:
    """Where the running step writes and reads (the step contract's paths)."""

    step: str
    attempt: int
    in_dir: Path
    params: Mapping[str, Any]
    inputs: Mapping[str, Path]
    _out_dir: Path

    @property
    def out_dir(self) -> Path:
        """The step's output folder, created on first use."""
        self._out_dir.mkdir(parents=True, exist_ok=True)
        return self._out_dir


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "dagnb_step", default=None
)


def current() -> StepContext:
    """The context of the Python step running now; raises outside a step."""
    context = _current.get()
    if context is None:
        raise RuntimeError("dagnb.current() is only available inside a running Python step")
    return context
