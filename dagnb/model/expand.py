"""``$NAME`` and ``${NAME}`` in the items of an argv ``run`` list, as Dagger's
``withExec(args, expand: true)`` reads them (Go's ``os.Expand``), from the step's own
environment: what its process gets (``DAGNB_OUT``, ``DAGNB_IN``, ``DAGNB_PARAM_*``, its
env and secrets, what it inherits, in a container the image's variables).

Stricter than ``os.Expand``, which reads a name it does not find, and ``$1`` or
``$$``, as empty: a name not in the step's environment fails the step before it starts,
naming the item and the name; ``$$`` is a literal ``$``; ``$1``, ``$@``, ``${A:-x}`` and
``$(cmd)``, shell syntax with no meaning here (no shell runs the list), are refused
when the graph is checked. A ``$`` followed by anything else (``end$``, ``$/``, ``$.``)
stays as it is, as in ``os.Expand``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

__all__ = [
    "Unexpandable",
    "argv_syntax_error",
    "expand",
    "expanded_argv",
    "first_reference",
    "references",
    "unexpandable_line",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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


def argv_syntax_error(text: str) -> str:
    """The first piece of shell syntax in argv item ``text`` that no expansion gives a
    meaning (``$1``, ``${A:-x}``, ``$(date)``), "" if none."""
    if "$" not in text:
        return ""
    for start, end, _, kind in _scan(text):
        if kind == "bad":
            return text[start:end]
    return ""


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """``text`` with each ``$NAME``/``${NAME}`` replaced by ``lookup(NAME)`` and ``$$`` by
    ``$``; Unexpandable for a name ``lookup`` does not know (None) or for shell syntax."""
    if "$" not in text:
        return text
    parts, last = [], 0
    for start, end, name, kind in _scan(text):
        parts.append(text[last:start])
        last = end
        if kind == "dollar":
            parts.append("$")
            continue
        value = lookup(name) if name is not None else None
        if value is None:
            raise Unexpandable(text[start:end], name)
        parts.append(value)
    parts.append(text[last:])
    return "".join(parts)


def expanded_argv(step: str, argv: Sequence[str], lookup: Callable[[str], str | None], *,
                  withheld: Collection[str] = (), refused: Callable[[str], str] | None = None,
                  inherited: str = "the environment dagnb runs in") -> list[str]:
    """``argv`` expanded, or ValueError with the one line that fails step ``step``:
    the item as written, the name, and the fix. ``withheld``: other steps' secrets, not
    in this step's environment; ``refused(name)``: why a name that is there may not be
    expanded ("" if it may); ``inherited``: where the rest of its variables come from."""
    if not any("$" in item for item in argv):
        return list(argv)

    def checked(name: str) -> str | None:
        why = refused(name) if refused is not None else ""
        if why:
            raise Unexpandable(f"${name}", name) from ValueError(why)
        return lookup(name)

    items = []
    for number, item in enumerate(argv, 1):
        try:
            items.append(expand(item, checked))
        except Unexpandable as exc:
            raise ValueError(unexpandable_line(step, number, item, exc, withheld,
                                               inherited)) from None
    return items


def unexpandable_line(step: str, number: int, item: str, exc: Unexpandable,
                      withheld: Collection[str] = (),
                      inherited: str = "the environment dagnb runs in") -> str:
    """The failure of a step whose run item ``number`` (1 is the program) cannot be
    expanded, in one line."""
    where = f"step {step!r}: run item {number} {item!r}"
    if exc.name is None:
        return (f"{where} holds {exc.written}, shell syntax that an argv list does not "
                f"have (no shell runs it); write $${exc.written[1:]} for the text as it is, "
                "or make run shell text")
    reason = exc.__cause__
    if reason is not None and str(reason):
        return f"{where} reads ${exc.name}, which {reason}"
    if exc.name in withheld:
        return (f"{where} reads ${exc.name}, a secret of other steps, withheld from this "
                f"one; add {exc.name} to its secrets")
    return (f"{where} reads ${exc.name}, which is not in the step's environment; set it "
            f"(the step's env, secrets, or {inherited}), or write "
            f"$${exc.written[1:]} for the text as it is")
