"""Params a ``%%dagger`` cell took from notebook variables, and a word when those change.

IPython gives a magic's line its values as the cell runs, so ``--param threshold=$threshold``
keeps 20 after ``threshold = 90``: ``%dagger run`` ran (or served) the step with 20 while
the notebook showed 90, and ``%dagger plan`` said it was cached, with no word of either.
The cell's line as typed says which params came from a variable (``$name`` or ``{name}``,
the whole value); ``%dagger run`` and ``%dagger plan`` then say which of those variables
now hold another value, and that running the cell again uses it.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Container, Iterator, Mapping
from typing import Any

__all__ = ["changed_variables", "params_from_variables"]

# a param's whole value read from one variable: $name or {name}
_VARIABLE = re.compile(r"\$([A-Za-z_]\w*)|\{([A-Za-z_]\w*)\}")
_PARAM = "--param"


def params_from_variables(written: str | None,
                          namespace: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Param -> (variable, its value as the line got it) of each ``--param NAME=$var``
    of the cell's line ``written`` as typed (None: not known, then none)."""
    if written is None:
        return {}
    try:
        words = shlex.split(written)
    except ValueError:  # (the parser refused the line first)
        return {}
    found = {}
    for value in _param_values(words):
        name, equals, text = value.partition("=")
        variable = _VARIABLE.fullmatch(text)
        if equals and variable is not None:
            source = variable[1] or variable[2]
            if source in namespace:
                found[name] = (source, _as_in_the_line(namespace[source]))
    return found


def _param_values(words: list[str]) -> Iterator[str]:
    for before, word in itertools.pairwise(["", *words]):
        if before == _PARAM:
            yield word
        elif word.startswith(f"{_PARAM}="):
            yield word[len(_PARAM) + 1:]


def _as_in_the_line(value: Any) -> str:
    """A value as IPython writes it into a magic's line (its ``format``)."""
    try:
        return format(value)
    except Exception:  # (the user's object: its __format__ may raise)
        return ""


def changed_variables(sources: Mapping[str, Mapping[str, tuple[str, str]]],
                      steps: Container[str], namespace: Mapping[str, Any]) -> list[str]:
    """A line for each param of the graph's ``steps`` whose variable holds another value
    now than when its cell ran (a variable deleted since is not said)."""
    lines = []
    for step, params in sources.items():
        if step not in steps:
            continue
        for name, (variable, then) in params.items():
            if variable not in namespace:
                continue
            now = _as_in_the_line(namespace[variable])
            if now != then:
                lines.append(
                    f"dagnb: step {step!r} has --param {name}={_short(then)}, from "
                    f"${variable} when its cell ran; ${variable} is now {_short(now)}: run "
                    "that cell again to use it")
    return lines


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())  # (one line)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."
