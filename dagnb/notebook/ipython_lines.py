"""IPython syntax in a ``--python`` cell, as Python whose cache key sees what it reads.

IPython turns ``!cmd``, ``x = !cmd`` and ``%magic args`` lines into calls on
``get_ipython()`` that expand ``$name``, ``$name.attr`` and ``{expr}`` in their text from
the caller's variables at run time. Inside a string, those names escape a key that reads
the cell's code, so each such line also reads them, as Python: in a lambda that is never
called (nothing evaluated twice, no NameError where IPython leaves the text as it is).

``%time STMT`` runs as ``with _dagnb_time(): STMT``. IPython's ``%time`` would run the
statement in a copy of the cell function's locals (Python 3.11), losing what it assigns;
here the statement is the function's own code, and what it reads counts in the key. As
IPython's, the timer can show the value of the line's last expression after the times
(:mod:`dagnb.notebook.last_expression` asks for it when the line ends the cell).
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeGuard

from dagnb.errors import InvalidStepError
from dagnb.workflows.pyfunctions import IMPORT_NOTE

__all__ = ["TIMER", "ipython_to_python", "is_expansion_read", "is_timed", "needs_kernel", "timed"]

TIMER = "_dagnb_time"  # what a ``%time`` line calls, set in the cell's globals

_EXPANDING = {"system": 0, "getoutput": 0, "run_line_magic": 1, "run_cell_magic": 1}
_DOTTED = re.compile(r"[\w.]+")  # ``$name.attr``: no parentheses needed
_Edit = tuple[int, int, int, str]  # (line, first column, last column, new text)


def ipython_to_python(source: str, first_line: int = 1) -> str:
    """The cell as Python: ``!cmd``, ``x = !cmd`` and ``%magic`` lines become calls on
    ``get_ipython()``, as IPython transforms a cell it runs, and each such line also
    reads the names it expands; ``%time STMT`` becomes the statement, timed.
    ``first_line``: the number in the cell of the source's first line that is not blank
    (IPython drops the blank ones), which a refused line's number counts from."""
    if "!" not in source and "%" not in source:
        return source  # nothing to transform: skip importing IPython (the CLI, scripts)
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(textwrap.dedent(source))
    if python == source:
        return python
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return python  # (compiling it says which line is wrong)
    lines = python.encode().splitlines(True)  # (ast's columns count UTF-8 bytes)
    return _applied(lines, [_edit(lines, statement, call, first_line) for statement, call
                            in _ipython_calls(tree)])


def needs_kernel(python: str) -> bool:
    """Whether the cell, as :func:`ipython_to_python` made it, calls ``get_ipython()``
    (a ``!cmd`` or ``%magic`` line other than ``%time``): only a kernel can run it."""
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return False  # (compiling it says which line is wrong)
    return any(isinstance(node, ast.Name) and node.id == "get_ipython"
               for node in ast.walk(tree))


def _ipython_calls(tree: ast.AST) -> Iterator[tuple[ast.stmt, ast.Call]]:
    """Each simple statement holding a ``get_ipython().<method>("text", ...)`` call that
    expands its text, with the call."""
    for statement in ast.walk(tree):
        if not isinstance(statement, ast.stmt) or hasattr(statement, "body"):
            continue
        for node in ast.walk(statement):
            if _expanded_text(node) is not None:
                yield statement, node  # type: ignore[misc]


def _expanded_text(node: ast.AST) -> str | None:
    """The text IPython expands, when ``node`` is a call of one of its expanding methods."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "get_ipython"):
        return None
    at = _EXPANDING.get(node.func.attr)
    if at is None or len(node.args) <= at:
        return None
    texts = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
             for a in node.args[:at + 1]]
    return texts[at] if None not in texts else None


def _edit(lines: list[bytes], statement: ast.stmt, call: ast.Call,
          first_line: int) -> _Edit | None:
    """How the line of ``statement`` changes: ``%time`` timed, else the expressions its
    call expands read after it."""
    magic = call.args[0].value if call.func.attr.startswith("run_") else None  # type: ignore[attr-defined]
    text = _expanded_text(call) or ""
    if magic == "time" and call.func.attr == "run_line_magic":  # type: ignore[attr-defined]
        return _timed_edit(lines, statement, call, text, first_line)
    if magic is not None and _expands_nothing(magic, call.func.attr):  # type: ignore[attr-defined]
        return None
    reads = _expanded_expressions(text)
    if not reads or statement.end_lineno is None or statement.end_col_offset is None:
        return None
    line, column = statement.end_lineno, statement.end_col_offset
    return line, column, column, f"; (lambda: ({', '.join(reads)},))"


def is_expansion_read(statement: ast.stmt, before: ast.stmt) -> bool:
    """Whether ``statement`` is the read :func:`_edit` writes after ``before`` on its
    line (``; (lambda: (folder,))``), not a statement of the cell's own."""
    value = statement.value if isinstance(statement, ast.Expr) else None
    return (isinstance(value, ast.Lambda) and isinstance(value.body, ast.Tuple)
            and not value.args.args and before.end_lineno == statement.lineno
            and any(_expanded_text(node) is not None for node in ast.walk(before)))


def is_timed(statement: ast.stmt) -> TypeGuard[ast.With]:
    """Whether ``statement`` is what :func:`_timed_edit` made of a ``%time`` line."""
    if not isinstance(statement, ast.With) or len(statement.items) != 1:
        return False
    timer = statement.items[0].context_expr
    return (isinstance(timer, ast.Call) and isinstance(timer.func, ast.Name)
            and timer.func.id == TIMER and not timer.args and not timer.keywords)


def _expands_nothing(magic: str, method: str) -> bool:
    """Whether IPython passes the magic's line as it is (``@no_var_expand``: ``%timeit``)."""
    from IPython.core.getipython import get_ipython
    from IPython.core.magic import MAGIC_NO_VAR_EXPAND_ATTR

    shell = get_ipython()
    if shell is None:
        return False  # (not in IPython: as most magics, expanded)
    find = shell.find_line_magic if method == "run_line_magic" else shell.find_cell_magic
    return bool(getattr(find(magic), MAGIC_NO_VAR_EXPAND_ATTR, False))


def _expanded_expressions(text: str) -> list[str]:
    """The Python expressions IPython's ``var_expand`` evaluates in ``text`` (``$x``,
    ``$x.attr``, ``{expr}``; not ``$$x``), once each, those that parse."""
    from IPython.utils.text import DollarFormatter

    found: dict[str, None] = {}
    try:
        fields = [(field, spec) for _, field, spec, _ in DollarFormatter().parse(text)
                  if field]
    except ValueError:
        return []  # (an unmatched brace: IPython leaves the text as it is)
    for field, spec in fields:
        expression = f"{field}:{spec}" if spec else field  # (a slice, as IPython reads it)
        try:
            ast.parse(f"lambda: ({expression})", mode="eval")
        except SyntaxError:
            continue
        found[expression if _DOTTED.fullmatch(expression) else f"({expression})"] = None
    return list(found)


def _timed_edit(lines: list[bytes], statement: ast.stmt, call: ast.Call, text: str,
                first_line: int) -> _Edit:
    """``%time STMT`` -> ``with _dagnb_time(): STMT``; ``x = %time EXPR`` ->
    ``with _dagnb_time(): x = (EXPR)``: on the statement's own line."""
    line = statement.lineno
    source = lines[line - 1]
    in_cell = line + first_line - 1  # (what a refusal names)

    def part(start: int, end: int | None) -> str:
        return source[start:end].decode()

    if isinstance(statement, ast.Expr) and statement.value is call:
        timed_text = text.strip()
        _refuse_unless_simple(timed_text, in_cell, "exec")
    else:
        _refuse_unless_simple(text, in_cell, "eval")
        timed_text = (part(statement.col_offset, call.col_offset) + f"({text.strip()})"
                      + part(call.end_col_offset or 0, statement.end_col_offset))
    if statement.end_lineno != line or part(0, statement.col_offset).strip():
        raise InvalidStepError(f"line {in_cell} of the cell: %time {text.strip()!r} must start "
                               "its own line in a --python cell")
    return line, statement.col_offset, statement.end_col_offset or 0, (
        f"with {TIMER}(): {timed_text}")


def _refuse_unless_simple(text: str, line: int, mode: str) -> None:
    """Refuse a ``%time`` line that is not simple statements (or an expression): a
    ``with`` on the same line can hold nothing else."""
    try:
        tree = ast.parse(text, mode=mode)
    except SyntaxError:
        tree = None
    if tree is None or (mode == "exec" and (
            not tree.body or any(hasattr(s, "body") for s in tree.body))):
        raise InvalidStepError(
            f"line {line} of the cell: %time {text.strip()!r} is not a one-line Python "
            "statement, which a --python cell can time; put the code in a function and "
            "write %time f()")


def _applied(lines: list[bytes], edits: list[_Edit | None]) -> str:
    """``lines`` with the edits made, from the last so that columns stay right."""
    lines = list(lines)
    for line, start, end, new in sorted((e for e in edits if e), reverse=True):
        text = lines[line - 1]
        lines[line - 1] = text[:start] + new.encode() + text[end:]
    return b"".join(lines).decode()


@contextmanager
def timed(show: Callable[[object], None] | None = None
          ) -> Iterator[Callable[[object], None]]:
    """Print what IPython's ``%time`` prints (CPU and wall time) after the block, also
    when it raises (the error goes on, as with ``%time``); then, if it did not raise,
    ``show`` the value the block passed to the function this yields (``%time``'s value,
    which IPython shows after the times)."""
    from IPython.core.magics.execution import _format_time
    from IPython.utils.timing import clock2

    values: list[object] = []
    started, cpu = time.time(), clock2()
    try:
        yield values.append
    finally:
        user, system = (end - start for start, end in zip(cpu, clock2(), strict=True))
        wall = time.time() - started
        if sys.platform == "win32":  # (where the system time is always zero)
            print(f"CPU times: total: {_format_time(user + system)}")
        else:
            print(f"CPU times: user {_format_time(user)}, sys: {_format_time(system)}, "
                  f"total: {_format_time(user + system)}")
        print(f"Wall time: {_format_time(wall)}")
    if show is not None and values:
        show(values[-1])


setattr(timed, IMPORT_NOTE, "what the cell's %time line became: prints IPython's times")
