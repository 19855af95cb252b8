"""The user's modules a function reaches: the ones its body imports, and what a module's
member is to the walk (a view of it for the values a step reads at each run)."""

from __future__ import annotations

import ast
import dis
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

_MISSING = object()


def body_imports(code: types.CodeType, package: str | None) -> Iterator[str]:
    """The absolute names of the modules the code (and its nested code) imports in its
    body (``import features``, ``from .helpers import make`` inside a function)."""
    stack = [code]
    while stack:
        current = stack.pop()
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        consts: list[Any] = []
        for instruction in dis.get_instructions(current):
            if instruction.opname == "LOAD_CONST":
                consts.append(instruction.argval)
            elif instruction.opname == "IMPORT_NAME":
                level = consts[-2] if len(consts) >= 2 and type(consts[-2]) is int else 0
                name = _absolute(instruction.argval, level, package)
                if name is not None:
                    yield name
                    yield from _submodules_named(name, consts[-1] if consts else None)


def _submodules_named(name: str, fromlist: Any) -> Iterator[str]:
    """What ``from name import a, b`` may import as modules of their own: ``name.a``,
    ``name.b`` (a submodule not imported yet is loaded by that line, and its text is
    what the function runs; a name that is no module is found to be none)."""
    if type(fromlist) is tuple:
        yield from (f"{name}.{item}" for item in fromlist
                    if type(item) is str and item != "*")


def _absolute(name: str, level: int, package: str | None) -> str | None:
    if not level:
        return name
    try:
        return importlib.util.resolve_name("." * level + name, package)
    except (ImportError, ValueError):  # (a relative import outside a package)
        return None


def file_of_unimported(name: str) -> str | None:
    """The file a module not imported yet would be loaded from, found without importing
    anything (its parents' folders searched as the import system would); None for a
    built-in one, a namespace package, or one not to be found."""
    spec = spec_of_unimported(name)
    origin = getattr(spec, "origin", None)
    return origin if origin and spec is not None and spec.has_location else None


def spec_of_unimported(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec a module not imported yet would be loaded by, found without importing
    anything (its parents' folders searched as the import system would); None for one
    not to be found."""
    path: list[str] | None = None
    spec = None
    for part in name.split("."):
        try:
            spec = importlib.machinery.PathFinder.find_spec(part, path)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or ())
    return spec


# file -> ((size, mtime_ns, inode), the module's name, the names its text imports)
_FILE_IMPORTS: dict[str, tuple[tuple[int, int, int], str, tuple[str, ...]]] = {}
_FILE_IMPORTS_LIMIT = 4096


def file_imports(file: str, name: str) -> tuple[str, ...]:
    """The absolute names of the modules the text of module ``name``'s file imports
    anywhere (at its top, in a function, under an ``if``), each dotted one's packages
    too (``import pkg.sub``: ``pkg``, ``pkg.sub``; ``from pkg import sub``: ``pkg`` and
    ``pkg.sub``, which may be a module), read without importing or running anything;
    kept while the file's size, mtime and inode are unchanged."""
    try:
        st = os.stat(file)
    except OSError:
        return ()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    known = _FILE_IMPORTS.get(file)
    if known is not None and known[0] == stamp and known[1] == name:
        return known[2]
    try:
        with open(file, "rb") as f:
            tree = ast.parse(f.read(), file)
    except (OSError, SyntaxError, ValueError):
        names: tuple[str, ...] = ()
    else:
        package = name if os.path.basename(file).startswith("__init__.") else (
            name.rpartition(".")[0])
        names = tuple(dict.fromkeys(_with_packages(_imports_in(tree, package))))
    if len(_FILE_IMPORTS) >= _FILE_IMPORTS_LIMIT:
        _FILE_IMPORTS.clear()
    _FILE_IMPORTS[file] = (stamp, name, names)
    return names


def _imports_in(tree: ast.AST, package: str) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package or None)
            if base:
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names
                            if alias.name != "*")


def _with_packages(names: Iterator[str]) -> Iterator[str]:
    for name in names:
        parts = name.split(".")
        yield from (".".join(parts[:end]) for end in range(1, len(parts) + 1))


def imported(name: str) -> types.ModuleType | None:
    found = sys.modules.get(name)
    return found if isinstance(found, types.ModuleType) else None


class MemberView:
    """A module's member seen as a global is (``namespace.get(name)``): a step reads
    ``settings.params`` afresh at each run, as it reads its own globals."""

    __slots__ = ("attribute", "members")

    def __init__(self, members: dict[str, Any], attribute: str) -> None:
        self.members, self.attribute = members, attribute

    def get(self, _name: str, default: Any = None) -> Any:
        return self.members.get(self.attribute, default)
