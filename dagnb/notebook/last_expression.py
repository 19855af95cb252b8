"""A ``--python`` cell's last expression, displayed as a plain cell displays it.

IPython displays the value of a cell whose last statement is an expression (``df.head()``)
unless a ``;`` ends the cell or the value is None. In a ``--python`` cell that statement
runs in the cell's function, where its value would be dropped: it is passed to
:func:`displayed` instead, which displays it through IPython's ``display()``. A running
step's displays are its own (:mod:`dagnb.notebook.displays`), so the value is shown in the
cell and kept with the step's cache entry, shown again when the cell is served from the
cache. The call is written around the expression on its own lines (a traceback or a
SyntaxError names the line the user wrote). Outside IPython (a script) nothing is shown.

A last ``%time EXPR`` line is an expression too in IPython (the magic's call, whose value
is EXPR's), which a ``--python`` cell runs as ``with _dagnb_time(): EXPR``
(:mod:`dagnb.notebook.ipython_lines`): its value is passed to the timer, which displays
it after printing the times, as IPython shows ``%time``'s value after them.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize

from dagnb.executors.dagger.shim import TRAVELS_AS_SOURCE
from dagnb.notebook.ipython_lines import TIMER, is_expansion_read, is_timed
from dagnb.workflows.pyfunctions import IMPORT_NOTE

__all__ = ["DISPLAYED", "TIMED_VALUE", "displayed", "with_last_displayed"]

DISPLAYED = "_dagnb_displayed"  # what the cell's last expression is passed to, in its globals
TIMED_VALUE = "_dagnb_timed_value"  # a last %time line's value goes there, to the timer

_QUIET = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT,
          tokenize.ENDMARKER}


def with_last_displayed(python: str) -> str:
    """``python``, dedented, with its last top-level statement passed to
    :data:`DISPLAYED` when it is an expression (or a timed one) and no ``;`` ends the
    cell; else ``python`` as it is."""
    dedented = textwrap.dedent(python)
    try:
        body = ast.parse(dedented).body
    except SyntaxError:
        return python  # (compiling it says which line is wrong)
    last = _last_statement(body)
    if _ends_with_semicolon(dedented):
        return python
    lines = dedented.encode().splitlines(True)  # (ast's columns count UTF-8 bytes)
    if isinstance(last, ast.Expr):
        _pass_to(DISPLAYED, last, lines)
    elif last is not None and is_timed(last) and isinstance(last.body[-1], ast.Expr):
        # (IPython's %time returns the value of its last expression: x = 2; x * 21 too)
        _pass_to(TIMED_VALUE, last.body[-1], lines)  # (right of the timer, on its line)
        _replace(lines, last.items[0].context_expr,
                 f"{TIMER}({DISPLAYED}) as {TIMED_VALUE}")
    else:
        return python
    return b"".join(lines).decode()


def _pass_to(function: str, node: ast.AST, lines: list[bytes]) -> None:
    """Write ``function((...))`` around ``node`` in ``lines`` (parenthesized: ``a, b``
    is one value, a tuple)."""
    end, end_column = node.end_lineno or node.lineno, node.end_col_offset or 0
    lines[end - 1] = lines[end - 1][:end_column] + b"))" + lines[end - 1][end_column:]
    start = lines[node.lineno - 1]
    lines[node.lineno - 1] = (start[:node.col_offset] + f"{function}((".encode()
                              + start[node.col_offset:])


def _replace(lines: list[bytes], node: ast.AST, text: str) -> None:
    """``node``, on one line of ``lines``, replaced by ``text``."""
    line = lines[node.lineno - 1]
    lines[node.lineno - 1] = (line[:node.col_offset] + text.encode()
                              + line[node.end_col_offset or 0:])


def _last_statement(body: list[ast.stmt]) -> ast.stmt | None:
    """The cell's last statement: before the names an IPython line expands are read
    after it (``!ls $folder``), the line's own call."""
    if len(body) > 1 and is_expansion_read(body[-1], body[-2]):
        return body[-2]
    return body[-1] if body else None


def _ends_with_semicolon(python: str) -> bool:
    """Whether the cell's last token (comments aside) is ``;``, as IPython checks."""
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(python).readline):
            if token.type not in _QUIET:
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


# named as the cells call it: a container's module gets its source under this name,
# beside the notebook's own functions (one called ``displayed`` too)
def _dagnb_displayed(value: object) -> None:
    """Display ``value`` as IPython displays a cell's value: not None, and only in IPython
    (a script run outside it, a container, shows nothing, as Python does)."""
    if value is None:
        return
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(value)


displayed = _dagnb_displayed
setattr(displayed, TRAVELS_AS_SOURCE, True)  # (stdlib only, its imports inside)
setattr(displayed, IMPORT_NOTE,
        "shows a cell's last value in IPython, as the notebook did; nothing outside it")
