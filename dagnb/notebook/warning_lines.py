"""The line a warning shows under it in a notebook, as the user wrote it.

Python prints a warning's line from ``linecache``, which holds the code that ran: for a
``%%dagger`` cell, IPython's call of the magic, the whole cell escaped on one line
(``get_ipython().run_cell_magic('dagger', 'mk --python', 'x = 1\\n...')``, 2 kB for a
40-line cell), under every warning dagnb gives there; for a ``--python`` cell's last
expression, the call that displays it (``_dagnb_displayed((warnings.warn(...)))``),
under the user's own warning. While ``%load_ext dagnb`` holds, ``warnings.formatwarning``
shows the ``%%dagger`` line, and the last expression as written, instead; every other
warning as the formatter before it did.

Where a warning comes from a cell, it is named as IPython's tracebacks name it, ``Cell
In[5], line 3``, not by the file IPython compiled the cell as
(``/tmp/ipykernel_4242/2734839201.py:3``, a name the user never sees elsewhere and
that differs at every kernel start).
"""

from __future__ import annotations

import ast
import linecache
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["install", "note_lines_as_written", "uninstall"]

_MAGIC_CALL = "get_ipython().run_cell_magic("
# a --python cell's filename -> its lines the display call changed, as written
_as_written: dict[str, Mapping[int, str]] = {}

Format = Callable[..., str]


def note_lines_as_written(filename: str, written: Mapping[int, str]) -> None:
    """The lines of the cell compiled as ``filename`` that ran otherwise than written."""
    if written:
        _as_written[filename] = written


def install() -> None:
    """Put the formatter in place (once: a second ``%load_ext`` keeps the one there)."""
    import warnings

    if not getattr(warnings.formatwarning, "_dagnb_before", None):
        shown = _formatter(warnings.formatwarning)
        warnings.formatwarning = shown


def uninstall() -> None:
    """Give back the formatter found, if the one in place is still this module's."""
    import warnings

    before = getattr(warnings.formatwarning, "_dagnb_before", None)
    if before is not None:
        warnings.formatwarning = before


def _formatter(before: Format) -> Format:
    def formatwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
        if line is None:
            line = as_written(filename, lineno)
        return _cell_named(before(message, category, filename, lineno, line),
                           filename, lineno)

    formatwarning._dagnb_before = before  # type: ignore[attr-defined]
    return formatwarning


def _cell_named(text: str, filename: str, lineno: int) -> str:
    """``text`` beginning ``Cell In[5], line 3:`` where it began with the file and line of
    a cell's code (as Python's formatter writes them; another formatter's text as is)."""
    prefix = f"{filename}:{lineno}:"
    if not text.startswith(prefix):
        return text
    label = _cell_label(filename)
    return text if label is None else f"{label}, line {lineno}:{text[len(prefix):]}"


def _cell_label(filename: str) -> str | None:
    """``Cell In[5]`` for the file IPython compiled cell 5 as; None for any other."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        named = None if shell is None else shell.compile.format_code_name(filename)
    except Exception:  # (an older IPython, a shell of another kind: the file's name)
        return None
    return None if not named else " ".join(named)


def as_written(filename: str, lineno: int) -> str | None:
    """The line ``lineno`` of ``filename`` as the user wrote it, where the code that ran
    there is dagnb's or IPython's; None (linecache's line) elsewhere."""
    written = _as_written.get(filename)
    if written is not None and lineno in written:
        return written[lineno]
    text = linecache.getline(filename, lineno).strip()
    if not text.startswith(_MAGIC_CALL):
        return None
    return _magic_line(text)


def _magic_line(call: str) -> str | None:
    """``%%dagger mk --python`` of ``get_ipython().run_cell_magic('dagger', 'mk
    --python', '...')``; None when the text is no such call."""
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        return None
    arguments = getattr(node, "args", [])
    if len(arguments) < 2 or not all(isinstance(a, ast.Constant) for a in arguments[:2]):
        return None
    name, options = arguments[0].value, arguments[1].value
    return f"%%{name} {options}".rstrip()
