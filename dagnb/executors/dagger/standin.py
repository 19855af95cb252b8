"""The ``dagnb`` a container Python step imports when its image has none: ``current()``.

The step contract says a function reads its params with ``dagnb.current().params`` and
writes files to ``dagnb.current().out_dir`` on every executor; a container has no dagnb,
so the Dagger shim sends this file's text with a step whose code names dagnb
(:mod:`dagnb.executors.dagger.shim`), as ``dagnb.py`` in a folder at the *end* of the
container's ``sys.path``: a dagnb installed in the image is found first. Its
``current()`` answers from the contract's variables the shim's exec sets (``DAGNB_OUT``,
``DAGNB_IN``, ``DAGNB_PARAMS``, ``DAGNB_STEP``, ``DAGNB_ATTEMPT``), with the fields and
types of :class:`dagnb.executors.context.StepContext`; any other name of dagnb's raises
one line saying to install dagnb in the image. Standard library only, and no syntax
newer than the oldest ``python3`` an image may have (3.7).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["StepContext", "current"]

# the one line a name this file lacks raises (``{what}``: what was asked for)
UNAVAILABLE = ("only dagnb.current() is available inside a container; install dagnb in "
               "the image to use {what}")


class StepParams(Mapping):
    """The step's params: read-only for the step, pickled as the plain dict they hold
    (a step returning them has a result as any dict is; a mappingproxy does not pickle)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict) -> None:
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(self._values)

    def __reduce__(self) -> tuple:
        return dict, (dict(self._values),)


class StepContext:
    """Where the running step writes and reads (the step contract's paths)."""

    __slots__ = ()

    @property
    def step(self) -> str:
        """The step's name."""
        return os.environ["DAGNB_STEP"]

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return int(os.environ.get("DAGNB_ATTEMPT", "1"))

    @property
    def params(self) -> StepParams:
        """The step's params (read-only, as the step's own)."""
        with open(os.environ["DAGNB_PARAMS"], encoding="utf-8") as handle:
            return StepParams(json.load(handle))

    @property
    def inputs(self) -> dict[str, pathlib.Path]:
        """Upstream step name -> the folder holding its outputs."""
        folder = pathlib.Path(os.environ["DAGNB_IN"])
        return {entry.name: entry for entry in sorted(folder.iterdir()) if entry.is_dir()}

    @property
    def out_dir(self) -> pathlib.Path:
        """The step's output folder, created on first use."""
        out_dir = pathlib.Path(os.environ["DAGNB_OUT"])
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir

    def __repr__(self) -> str:
        return f"<StepContext {self.step!r} attempt {self.attempt}>"


def current() -> StepContext:
    """The context of the Python step running now; raises outside a step."""
    if "DAGNB_OUT" not in os.environ or "DAGNB_STEP" not in os.environ:
        raise RuntimeError("dagnb.current() is only available inside a running Python step")
    return StepContext()


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # (what the import system and tools probe for)
        raise AttributeError(name)
    raise AttributeError(UNAVAILABLE.format(what=f"dagnb.{name}"))


def explain(exc: BaseException) -> None:
    """Say, in ``exc``'s own message, why an import from dagnb failed in the container
    (``from dagnb import Step``, ``import dagnb.cache``): Python's words name no fix."""
    name = getattr(exc, "name", None)
    if isinstance(exc, ImportError) and isinstance(name, str) and (
            name == "dagnb" or name.startswith("dagnb.")):
        what = name if "." in name else "the rest of dagnb"
        exc.msg = f"{exc.msg} ({UNAVAILABLE.format(what=what)})"
        exc.args = (exc.msg,)
