"""``$DAGNB_...`` in the items of an argv ``run`` list: dagnb's own variables of the
step (``$DAGNB_OUT``, ``$DAGNB_IN``, ``$DAGNB_PARAM_ROWS``, ``${DAGNB_STEP}``...) are
expanded from the step's environment, with their container paths in a container;
everything else reaches the program as written, as no shell runs the list: a
``bash -c`` script's own ``$f``, awk's ``$1``, jq's ``$v``, ``$$``, ``$HOME``. (Dagger's
``withExec(expand: true)`` expands every name and reads one it does not know as empty:
an argv list that worked would change meaning.) A ``$DAGNB_`` name the step has not
(a typo) fails the step before it starts, in one line naming the item and the name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Sequence

__all__ = [
    "OURS",
    "Unexpandable",
    "expand",
    "expanded_argv",
    "first_reference",
    "references",
    "unexpandable_line",
    "unset_in_script",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OURS = "DAGNB_"  # the names argv items expand: dagnb's own variables of the step
# the variables dagnb sets for a step, as the failure of a misspelt one names them
_WE_SET = ("DAGNB_OUT, DAGNB_IN, DAGNB_PARAMS, DAGNB_PARAM_<NAME> for each param, "
           "DAGNB_STEP, DAGNB_RUN_ID, DAGNB_ATTEMPT")
_SPECIAL = frozenset("*#$@!?-0123456789")  # os.Expand's one-character shell names


class Unexpandable(ValueError):
    """A reference that cannot be expanded: ``written`` as in the item, ``name`` the
    variable's (None: shell syntax that names none)."""

    def __init__(self, written: str, name: str | None) -> None:
        super().__init__(written)
        self.written, self.name = written, name


def _scan(text: str) -> list[tuple[int, int, str | None, str]]:
    """Each ``$`` of ``text`` that means something: (start, end, name, kind), kind being
    "name" (``$NAME``, ``${NAME}``), "dollar" (``$$``) or "bad" (shell syntax)."""
    found: list[tuple[int, int, str | None, str]] = []
    i = text.find("$")
    while i != -1 and i + 1 < len(text):
        nxt = text[i + 1]
        if nxt == "$":
            found.append((i, i + 2, None, "dollar"))
            end = i + 2
        elif nxt == "{":
            close = text.find("}", i + 2)
            inner = text[i + 2:close] if close != -1 else text[i + 2:]
            end = close + 1 if close != -1 else len(text)
            if close != -1 and _NAME.fullmatch(inner):
                found.append((i, end, inner, "name"))
            else:
                found.append((i, end, None, "bad"))
        elif (match := _NAME.match(text, i + 1)) is not None:
            end = match.end()
            found.append((i, end, match[0], "name"))
        elif nxt in _SPECIAL or nxt == "(":
            end = i + 2
            found.append((i, end, None, "bad"))
        else:  # ``end$``, ``$/``: a plain dollar, as os.Expand leaves it
            end = i + 1
        i = text.find("$", end)
    return found


def references(text: str) -> list[str]:
    """The variable names ``text`` expands, in order (``$$`` and shell syntax not)."""
    if "$" not in text:
        return []
    return [name for _, _, name, kind in _scan(text) if kind == "name" and name]


def first_reference(text: str) -> tuple[str, str] | None:
    """The first ``$NAME`` or ``${NAME}`` of ``text``: (as written, the name), or None."""
    if "$" not in text:
        return None
    return next(((text[start:end], name) for start, end, name, kind in _scan(text)
                 if kind == "name" and name), None)


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """``text`` with each ``$DAGNB_...``/``${DAGNB_...}`` replaced by ``lookup(NAME)``,
    everything else as written; Unexpandable for such a name ``lookup`` does not know
    (None)."""
    if "$" not in text:
        return text
    parts, last = [], 0
    for start, end, name, kind in _scan(text):
        if kind != "name" or name is None or not name.startswith(OURS):
            continue  # (the program's own: as written)
        value = lookup(name)
        if value is None:
            raise Unexpandable(text[start:end], name)
        parts.append(text[last:start])
        parts.append(value)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def expanded_argv(step: str, argv: Sequence[str],
                  lookup: Callable[[str], str | None]) -> list[str]:
    """``argv`` with dagnb's variables expanded, or ValueError with the one line that
    fails step ``step``: the item as written, the name, and the fix."""
    if not any("$" in item for item in argv):
        return list(argv)
    items = []
    for number, item in enumerate(argv, 1):
        try:
            items.append(expand(item, lookup))
        except Unexpandable as exc:
            raise ValueError(unexpandable_line(step, number, item, exc)) from None
    return items


def unexpandable_line(step: str, number: int, item: str, exc: Unexpandable) -> str:
    """The failure of a step whose run item ``number`` (1 is the program) reads a
    ``$DAGNB_`` name the step has not, in one line."""
    return (f"step {step!r}: run item {number} {item!r} reads ${exc.name}, which dagnb "
            f"does not set for this step; check the name (it sets {_WE_SET})")


def unset_in_script(step: str, script: str, names: Collection[str]) -> str | None:
    """The one line failing step ``step`` whose shell text reads a ``$DAGNB_`` variable
    that is not among the ``names`` dagnb sets for it and that the text does not set
    itself (a typo: ``$DAGNB_OUTT/x.csv`` wrote ``/x.csv``, and the step succeeded);
    None when it reads none. ``${NAME:-default}`` and the like are the text's own
    choice, not read here."""
    if OURS not in script:
        return None
    for written, name in _our_references(script):
        if name not in names and not _set_in(script, name):
            near = difflib.get_close_matches(name, [n for n in names if n.startswith(OURS)], 1)
            hint = f"did you mean ${near[0]}? " if near else ""
            return (f"step {step!r}: its run text reads {written}, which dagnb does not set "
                    f"for this step; {hint}dagnb sets {_WE_SET}")
    return None


def _our_references(script: str) -> list[tuple[str, str]]:
    return [(script[start:end], name) for start, end, name, kind in _scan(script)
            if kind == "name" and name is not None and name.startswith(OURS)]


def _set_in(script: str, name: str) -> bool:
    """Whether the shell text may set ``name`` itself (``NAME=``, ``read NAME``,
    ``for NAME in``, ``export``/``local``/``declare NAME``)."""
    word = re.escape(name)
    return re.search(rf"(?<![\w$]){word}=|\b(?:read|for|local|declare|typeset|export|"
                     rf"readonly)\b[^\n;|&]*\b{word}\b", script) is not None
