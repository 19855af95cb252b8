"""Whether a function's file, as it is now, is what its loaded code was compiled from.

Keys read code's source from its file, as ``inspect`` does; a module edited on disk and
not reloaded runs its old code. Keyed by the new text, its old result would be stored
where the new code's belongs, and served once the kernel restarts. So a function whose
code no longer matches its file counts by its loaded bytecode instead: then the restart,
which loads the file's code, makes the key the source's again, and the step runs.
(Where dagnb read the module's text before the edit, :mod:`.imported` keeps it: the
function counts by that text instead, and its key stays what it was.)
"""

from __future__ import annotations

import ast
import collections
import os
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class PerFile(Generic[V]):
    """What is made of a file's lines, once per file and version (linecache's lines
    list, by identity), the least recently used forgotten past ``limit`` files."""

    def __init__(self, make: Callable[[list[str]], V], limit: int = 512) -> None:
        self.make, self.limit = make, limit
        self.found: collections.OrderedDict[int, tuple[list[str], V]] = (
            collections.OrderedDict())

    def __call__(self, lines: list[str]) -> V:
        found = self.found.get(id(lines))
        if found is None or found[0] is not lines:
            found = self.found[id(lines)] = (lines, self.make(lines))
            if len(self.found) > self.limit:
                self.found.popitem(last=False)
        else:
            self.found.move_to_end(id(lines))
        return found[1]


def loaded_from_file(code: types.CodeType, lines: list[str]) -> bool:
    """Whether ``lines`` (the code's file now) compile to ``code`` as it was loaded: a
    cell's lines cannot change (running it again makes another), a file's can."""
    if not os.path.isfile(code.co_filename):
        return True
    compiled = _compiled_of(lines)
    if compiled is None:  # (saved mid-edit: it does not compile)
        return False
    shape = _shape(code)
    if any(_shape(other) == shape for other in compiled.get(_name(code), ())):
        return True
    alone = _compiled_alone_of(lines)
    return any(_shape(other) == shape for other in alone.get(code.co_name, ()))


def first_line(code: types.CodeType, lines: list[str]) -> int:
    """Where the function of ``code`` starts in ``lines`` (its file, which holds it:
    :func:`loaded_from_file`): its own first line if the text's code starting there is
    it, else the first line of the text's code that is (a function autoreload patched in
    place, compiled alone: its lines count from its ``def``, not from the file's top)."""
    compiled = _compiled_of(lines)
    if compiled is None:
        return code.co_firstlineno
    shape = _shape(code)
    found = [other.co_firstlineno for other in compiled.get(_name(code), ())
             if _shape(other) == shape]
    if code.co_firstlineno in found:
        return code.co_firstlineno
    found = found or [other.co_firstlineno for other in _compiled_alone_of(lines).get(
        code.co_name, ()) if _shape(other) == shape]
    return found[0] if found else code.co_firstlineno


def same_program(one: list[str], other: list[str]) -> bool:
    """Whether two texts of a file compile to the same code (comments, blank lines and
    formatting aside); a text that does not compile is no program."""
    first, second = _module_code_of(one), _module_code_of(other)
    return first is not None and second is not None and _shape(first) == _shape(second)


def _module_code(lines: list[str]) -> types.CodeType | None:
    try:
        return compile("".join(lines), "<compared>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None


_module_code_of = PerFile(_module_code)


def _compiled(lines: list[str]) -> dict[str, list[types.CodeType]] | None:
    """The code objects a file's text compiles to, by (qualified) name (their file name
    is not compared: any will do)."""
    module = _module_code_of(lines)
    if module is None:
        return None
    found: dict[str, list[types.CodeType]] = {}
    for code in _nested(module):
        found.setdefault(_name(code), []).append(code)
    return found


_compiled_of = PerFile(_compiled)  # once per file and version, as the class starts


def _compiled_alone(lines: list[str]) -> dict[str, list[types.CodeType]]:
    """The code objects each function of a text's top level and of its classes compiles
    to on its own, by name (not qualified): as IPython's autoreload (its deduperreload,
    the default since IPython 9) patches a module in place, compiling one changed
    ``def`` at a time (a method in a class of its own name) and putting its code into
    the function the module holds. Python compiles a function alone otherwise than in
    its file: ``utils.f()`` where the file does ``import utils`` is a method call in the
    one and an attribute load in the other (3.11+); so, not found among the file's own
    code, the patched function read as stale and its key fell back to its bytecode."""
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return {}
    found: dict[str, list[types.CodeType]] = {}
    pending: list[tuple[ast.stmt, list[str]]] = [(node, []) for node in tree.body]
    while pending:
        node, classes = pending.pop()
        if isinstance(node, ast.ClassDef):
            pending += [(child, [*classes, node.name]) for child in node.body]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            alone: ast.stmt = node
            for name in reversed(classes):  # (a method's names are mangled by its class)
                alone = ast.ClassDef(name=name, bases=[], keywords=[], body=[alone],
                                     decorator_list=[], **_NO_TYPE_PARAMS)
            module = ast.fix_missing_locations(ast.Module(body=[alone], type_ignores=[]))
            try:
                compiled = compile(module, "<compared>", "exec", dont_inherit=True)
            except (SyntaxError, ValueError):  # (``nonlocal``, ``return`` out of place)
                continue
            for code in _nested(compiled):
                found.setdefault(code.co_name, []).append(code)
    return found


_NO_TYPE_PARAMS: dict[str, list] = {"type_params": []} if sys.version_info >= (3, 12) else {}
_compiled_alone_of = PerFile(_compiled_alone)  # (asked only of code not found in the file)


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


def _name(code: types.CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)  # (3.10 has no co_qualname)


def _shape(code: types.CodeType) -> tuple[Any, ...]:
    """What the code does, not where its lines are: bytecode, names, constants."""
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars,
            tuple(_constant(c) for c in code.co_consts))


def _constant(value: Any) -> Any:
    """A constant as compared: a set's members in no order (``x in {'a', 'b'}`` is
    stored in the order of this process's string hashes), floats by text (nan)."""
    if isinstance(value, types.CodeType):
        return _shape(value)
    if isinstance(value, frozenset):
        return frozenset(_constant(member) for member in value)
    if isinstance(value, tuple):
        return tuple(_constant(member) for member in value)
    if isinstance(value, (float, complex)):
        return (type(value), repr(value))
    return (type(value), value)
