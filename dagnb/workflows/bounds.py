"""The values a template parameter accepts beyond its type: what its steps can run with.

A parameter (or a list parameter's items) may say, in its template file::

    samples:  {type: int, default: 200, minimum: 2}        # numbers: minimum, maximum
    fraction: {type: float, default: 0.25, minimum: 0.1, maximum: 0.9}
    group_by: {type: str, default: region, choices: [region, product]}
    name:     {type: str, default: total, format: identifier}      # a Python name
    package:  {type: str, default: demo_pkg, format: package}      # ... and no module of
                                                                   # the standard library

A value outside them is refused in one line when the template is made, not met as a
ZeroDivisionError in a step of the pipeline it made.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import sys
from collections.abc import Mapping
from typing import Any

from dagnb import checks
from dagnb.errors import ConfigError, WorkflowError

__all__ = ["BOUND_KEYS", "Bounds"]

BOUND_KEYS = ("minimum", "maximum", "choices", "format")
_FORMATS = ("identifier", "package")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a value of a given type must also be (None: anything of its type)."""

    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    format: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], kind: str | None, where: str) -> Bounds | None:
        """The bounds a parameter's spec gives for values of ``kind``; WorkflowError
        naming ``where`` for bounds that do not fit it."""
        given = {key: spec[key] for key in BOUND_KEYS if key in spec}
        if not given:
            return None
        for key in ("minimum", "maximum"):
            if key in given and (kind not in ("int", "float") or not _number(given[key])):
                raise WorkflowError(f"{where}: {key} {given[key]!r} needs a number, and an int "
                                    "or float parameter (or items)")
        if "format" in given and (kind != "str" or given["format"] not in _FORMATS):
            raise WorkflowError(f"{where}: format {given['format']!r} is not one of "
                                f"{_FORMATS} for a str parameter (or items)")
        choices = given.get("choices")
        if choices is not None and (not isinstance(choices, list) or not choices):
            raise WorkflowError(f"{where}: choices {choices!r} must be a non-empty list")
        bounds = cls(given.get("minimum"), given.get("maximum"),
                     None if choices is None else tuple(choices), given.get("format"))
        if bounds.minimum is not None and bounds.maximum is not None and (
                bounds.minimum > bounds.maximum):
            raise WorkflowError(f"{where}: minimum {bounds.minimum} is above maximum "
                                f"{bounds.maximum}")
        return bounds

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (of the right type already), as the fix; None
        when it is within the bounds."""
        if self.choices is not None and value not in self.choices:
            listed = ", ".join(map(repr, self.choices))
            return checks.did_you_mean(str(value), [str(c) for c in self.choices],
                                       otherwise=f"use one of {listed}")
        if self.format is not None and not (
                isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)):
            return "give a Python name: letters, digits and _, not a keyword"
        if self.format == "package" and value in sys.stdlib_module_names:
            # (already imported, or found first: `import os.tests` failed in the package's tests)
            return (f"{value!r} is a module of Python's standard library, which its imports "
                    f"would find instead; give another name, such as {value}_pkg")
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            return f"give a value {self.describe()}"
        return None

    def describe(self) -> str:
        """The bounds as ``dagnb templates show`` prints them: ``>= 2``, ``from 0.1 to
        0.9``, ``one of 'a', 'b'``, ``a Python name``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.format == "identifier":
            return "a Python name"
        if self.format == "package":
            return "a Python name, no standard-library module's"
        if self.minimum is not None and self.maximum is not None:
            return f"from {self.minimum} to {self.maximum}"
        return f">= {self.minimum}" if self.minimum is not None else f"<= {self.maximum}"

    def example(self, kind: str | None) -> Any:
        """A value of ``kind`` within the bounds (a required parameter's preview), or
        None when any value of the type will do."""
        if self.choices is not None:
            return self.choices[0]
        if self.format is not None:
            return "x"
        if kind == "int":
            return math.ceil(self.minimum) if self.minimum is not None else math.floor(
                self.maximum)  # type: ignore[arg-type]  # (one of the two is given)
        return float(self.minimum if self.minimum is not None else self.maximum)  # type: ignore[arg-type]


def refused(name: str, value: Any, problem: str) -> ConfigError:
    """The one line for a value of the right type outside its parameter's bounds."""
    return ConfigError(f"template parameter {name!r} = {value!r} is not accepted; {problem}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
