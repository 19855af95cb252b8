"""The text code is hashed by: a function's or class's normalized source (its AST, no
docstrings, no decorators), the bytecode where there is no source, and the sources
another process sent along with a function it pickled."""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import linecache
import os
import re
import sys
import textwrap
import tokenize
import types
from collections.abc import Iterator, Mapping
from typing import Any

from dagnb.fingerprint.hashers import new_hasher
from dagnb.fingerprint.imported import IMPORTED
from dagnb.fingerprint.loaded import PerFile, first_line, loaded_from_file
from dagnb.fingerprint.members import (
    _class_functions,
    _data_members,
    _member_digest,
)
from dagnb.fingerprint.names import _MAIN_NAMES
from dagnb.fingerprint.values import _digest_bytes


def _normalized_source(obj: Any) -> tuple[str, str] | None:
    """(AST dump, normalized source) of a function or class, or None without source
    (the one another process sent first: :func:`adopt_sources`)."""
    if _ADOPTED:
        adopted = _ADOPTED.get(_code_key(obj))
        if adopted is not None:
            return adopted
    try:
        lines = _class_lines(obj) if isinstance(obj, type) else _function_lines(obj)
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):  # (saved mid-edit)
        return None
    if lines is None:
        return None
    node = _definition_node(textwrap.dedent("".join(lines)), obj)
    if node is None:
        return None
    _strip_docstrings(node)
    text = ast.unparse(node)
    return _dumped(node), text


def _function_lines(func: Any) -> list[str] | None:
    """A function's lines, if its file still holds the code it runs (:mod:`.loaded`),
    or the text its module was imported from holds it (:mod:`.imported`)."""
    kept = _imported_lines(func)
    if kept is not None:
        return kept
    lines = _source_lines(func)[0]  # (first: it reads the file again if it changed)
    if not _still_loaded(func.__code__):
        return None
    code = getattr(inspect.unwrap(func), "__code__", None)
    return (_patched_block(code) if isinstance(code, types.CodeType) else None) or lines


def _patched_block(code: types.CodeType) -> list[str] | None:
    """The lines of ``code`` in its file if its own line numbers are not the file's (a
    function autoreload patched in place: compiled alone, from its first line); else
    None."""
    lines = linecache.getlines(code.co_filename)
    if not lines or first_line(code, lines) == code.co_firstlineno:
        return None
    return _block_of(code, lines)


def _still_loaded(code: types.CodeType) -> bool:
    return loaded_from_file(code, linecache.getlines(code.co_filename))


def _imported_lines(func: Any) -> list[str] | None:
    """``inspect.getsourcelines(func)[0]`` read from the text its module was imported
    from, if its file holds another text now: the code that runs is that text's."""
    code = getattr(inspect.unwrap(func), "__code__", None)  # (inspect reads the wrapped
    if not isinstance(code, types.CodeType):                 # function's lines)
        return None
    kept = IMPORTED.stale_lines(code.co_filename)
    if kept is None or not loaded_from_file(code, kept):
        return None
    if func.__code__ is not code and not _runs_from_its_text(func.__code__):
        return None
    return _block_of(code, kept)


def _runs_from_its_text(code: types.CodeType) -> bool:
    """Whether the code is the text its module was imported from, or else its file's."""
    kept = IMPORTED.stale_lines(code.co_filename)
    return _still_loaded(code) if kept is None else loaded_from_file(code, kept)


# inspect.findsource's way back from a code's first line to its definition (before 3.13)
_DEFINITION = re.compile(r"^(\s*def\s)|(\s*async\s+def\s)|(.*(?<!\w)lambda(:|\s))|^(\s*@)")


def _block_of(code: types.CodeType, lines: list[str]) -> list[str]:
    """The lines ``inspect.getsourcelines`` gives for ``code``, found in ``lines``."""
    start = first_line(code, lines) - 1
    while sys.version_info < (3, 13) and 0 < start < len(lines) and (
            not _DEFINITION.match(lines[start])):
        start -= 1
    return inspect.getblock(lines[start:])


_STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)  # (classes are statements)


def class_source(cls: type) -> str | None:
    """A class's source, as its key reads it (a notebook's too: ``%dagger save`` writes
    it), dedented; None when it has none to be found, or its functions were replaced."""
    lines = _class_lines(cls)
    return None if lines is None else textwrap.dedent("".join(lines))


def _class_lines(cls: type) -> list[str] | None:
    """A class's own lines: where ``inspect`` finds them if they hold its methods (before
    3.13 it finds the first of a name redefined in a file), else the definition around
    its methods in their file or cell (a notebook's class, which ``inspect`` cannot
    find: the same lines as the module ``%dagger save`` writes holds)."""
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if isinstance(file, str) and (kept := IMPORTED.stale_lines(file)) is not None:
        return _class_block(cls, file, kept)  # (its file changed since its import)
    if not all(_still_loaded(function.__code__) for function in _class_functions(cls)):
        return None
    try:
        lines, start = _source_lines(cls)
        if _lines_are_of(cls, start, start + len(lines)):
            return lines
    except (OSError, TypeError):
        pass
    return _lines_around_methods(cls)


def _class_block(cls: type, file: str, lines: list[str]) -> list[str] | None:
    """The class's definition in ``lines`` (the text its module was imported from), if
    its functions are that text's (or another file's as it is)."""
    if not all(_runs_from_its_text(function.__code__) for function in _class_functions(cls)):
        return None
    for start in _starts_of(lines).get(cls.__qualname__, ()):
        block = inspect.getblock(lines[start:])
        if _functions_within(cls, file, start + 1, start + 1 + len(block), lines):
            return block
    return None


def _lines_around_methods(cls: type) -> list[str] | None:
    """The definition of ``cls`` around its methods, in their file or cell, if it holds
    every function the class has now (none replaced since, from there or elsewhere;
    Python's made ones aside): else None, and its functions count by their own code."""
    for function in _class_functions(cls):
        code = function.__code__
        lines = linecache.getlines(code.co_filename)
        for start in _starts_of(lines).get(cls.__qualname__, ()) if lines else ():
            block = inspect.getblock(lines[start:])
            if start < first_line(code, lines) <= start + len(block):
                holds = _functions_within(cls, code.co_filename, start + 1,
                                          start + 1 + len(block), lines)
                return block if holds else None
    return None


def _functions_within(cls: type, file: str, start: int, end: int,
                      lines: list[str] | None = None) -> bool:
    """Whether the class's functions of ``file`` start within lines [start, end), and it
    has none of the user's from another file (one assigned to it since: its own code
    must count). Functions Python or a library made (a dataclass's ``__init__``, those
    ``functools.total_ordering`` adds) do not count here, nor do those ``exec`` made
    (``<string>``: Python 3.13 keeps ``python -c``'s text under that name, which a
    spawned ``multiprocessing`` worker runs: a dataclass's ``__init__`` then had lines).
    ``lines``: the text the lines count in (else the file's now)."""
    for function in _class_functions(cls):
        code = function.__code__
        if code.co_filename != file:
            if code.co_filename != "<string>" and linecache.getlines(
                    code.co_filename) and not _in_libraries(code.co_filename):
                return False
        elif not start <= code.co_firstlineno < end and not (  # (patched in place)
                start <= first_line(code, lines or linecache.getlines(file)) < end):
            return False
    return True


def _source_lines(obj: Any) -> tuple[list[str], int]:
    """``inspect.getsourcelines(obj)``; a class's with its file parsed once, where
    ``inspect`` parses the whole file for each class it is asked for (before Python 3.13,
    which reads ``__firstlineno__``): a module of hundreds of classes that refer to one
    another took seconds to key."""
    if (not isinstance(obj, type) or sys.version_info >= (3, 13)
            or inspect.unwrap(obj) is not obj):
        return inspect.getsourcelines(obj)
    lines = _file_lines(obj)
    starts = _starts_of(lines).get(obj.__qualname__)
    if not starts:
        raise OSError("could not find class definition")
    return inspect.getblock(lines[starts[0]:]), starts[0] + 1  # (the first, as inspect)




def _file_lines(cls: type) -> list[str]:
    """A class's file's lines, as ``inspect.findsource`` reads them (the file read
    again if it changed)."""
    file = inspect.getsourcefile(cls)
    if file:
        linecache.checkcache(file)
    else:
        file = inspect.getfile(cls)
        if not (file.startswith("<") and file.endswith(">")):
            raise OSError("source code not available")
    module = inspect.getmodule(cls, file)
    lines = linecache.getlines(file, module.__dict__) if module else linecache.getlines(file)
    if not lines:
        raise OSError("could not get source code")
    return lines


def _class_starts(lines: list[str]) -> dict[str, list[int]]:
    """Where each class of a file starts (its first decorator), by qualified name, in the
    order ``inspect`` meets them (a depth-first walk of the statements: the first is the
    one it finds)."""
    starts: dict[str, list[int]] = {}
    pending: list[tuple[ast.AST, tuple[str, ...]]] = [(ast.parse("".join(lines)), ())]
    while pending:
        node, names = pending.pop()
        if isinstance(node, ast.ClassDef):
            names = (*names, node.name)
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            starts.setdefault(".".join(names), []).append(first - 1)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = (*names, node.name, "<locals>")
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, _STATEMENTS)]
        pending.extend((child, names) for child in reversed(children))
    return starts


_starts_of = PerFile(_class_starts)  # one parse per file and version, not one per class


_OWN = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # dagnb's code


def _source_of_code(code: types.CodeType) -> tuple[str, str] | None:
    """(AST dump, normalized source) of the function a code object is, found by its
    own lines (not by the name a wrapper took from the function it wraps)."""
    kept = IMPORTED.stale_lines(code.co_filename)
    try:
        if kept is not None and not loaded_from_file(code, kept):
            return None
        lines = (inspect.getsourcelines(code)[0] if kept is None  # (file read again)
                 else _block_of(code, kept))
        lines = (_patched_block(code) if kept is None else None) or lines
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return None
    if kept is None and not _still_loaded(code):
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                node.name == code.co_name):
            node.decorator_list = []
            _strip_docstrings(node)
            text = ast.unparse(node)
            return _dumped(node), text
    return None


# Python 3.12 gave definitions ``type_params`` (PEP 695), and 3.13's ast.dump leaves
# empty fields out: definitions without type parameters are dumped as 3.10 and 3.11 dump
# them, so that the same code has the same key on every Python.
_SHOW_EMPTY: dict[str, bool] = {"show_empty": True} if sys.version_info >= (3, 13) else {}
_GENERIC = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _dumped(node: ast.AST) -> str:
    """``ast.dump`` of ``node`` as Python 3.10 writes it. Removes the empty
    ``type_params`` of the definitions in ``node`` (unparse it first)."""
    if sys.version_info >= (3, 12):
        for child in ast.walk(node):
            if isinstance(child, _GENERIC) and not child.type_params:
                del child.type_params
    return ast.dump(node, annotate_fields=False, include_attributes=False, **_SHOW_EMPTY)


def _lines_are_of(cls: type, start: int, end: int) -> bool:
    """Whether the lines found for ``cls`` are its own and hold all it has: before
    Python 3.13, ``inspect`` gives a class redefined under one name in a file its first
    definition (3.13 says where it starts); and a function assigned to it since, from
    elsewhere, is not in its lines on any Python."""
    first = getattr(cls, "__firstlineno__", None)
    if type(first) is int and first != start:
        return False
    try:
        file = inspect.getsourcefile(cls)
    except TypeError:
        return False
    return file is not None and _functions_within(cls, file, start, end)


def _definition_node(source: str, obj: Any) -> ast.AST | None:
    if getattr(obj, "__name__", "") == "<lambda>":
        return _lambda_node(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if isinstance(node, kinds) and node.name == obj.__name__:
            node.decorator_list = []  # @memory.cache(...) is not the function's work
            return node
    return None


def _lambda_node(source: str) -> ast.AST | None:
    """The lambda in a source line; the line may be a fragment such as ``f=lambda: 1,``."""
    if source.count("lambda") != 1:
        return None  # which lambda is ours is ambiguous: the bytecode decides
    text = source[source.index("lambda") :].rstrip()
    while text:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            text = text[:-1].rstrip()
            continue
        return next((n for n in ast.walk(tree) if isinstance(n, ast.Lambda)), None)
    return None


def _strip_docstrings(root: ast.AST) -> None:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in ast.walk(root):
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)



def _bytecode_digest(code: types.CodeType, doc: str | None) -> str:
    h = new_hasher()
    for nested in _code_objects(code):
        h.update(nested.co_code)
        h.update(repr((nested.co_names, nested.co_varnames, nested.co_freevars)).encode())
        h.update(repr((nested.co_flags, nested.co_argcount, nested.co_posonlyargcount,
                       nested.co_kwonlyargcount)).encode())  # (f(a) is not f(*a))
        for index, const in enumerate(nested.co_consts):
            is_doc = index == 0 and doc is not None and const == doc
            if is_doc or isinstance(const, types.CodeType):
                continue  # nested code is walked itself; docstrings do not count
            h.update(_digest_bytes(const))
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _libraries() -> tuple[str, ...]:
    """Where Python's own modules, installed packages (a distribution's ``dist-packages``
    and the user's ``pip --user`` ones too) and dagnb's code are: their code counts by
    name."""
    import site
    import sysconfig

    folders = [sysconfig.get_paths()[name] for name in ("stdlib", "purelib", "platlib")]
    with contextlib.suppress(AttributeError):  # (an old virtualenv's site has neither)
        folders += [*site.getsitepackages(), site.getusersitepackages()]
    return tuple(dict.fromkeys(os.path.realpath(folder) + os.sep
                               for folder in [*folders, _OWN]))


@functools.lru_cache(maxsize=4096)
def _in_libraries(file: str | None) -> bool:
    """Whether a module's file is Python's, an installed package's or dagnb's (or it has
    none: a built-in module); packages installed elsewhere on ``sys.path`` too."""
    if not file:
        return True
    real = os.path.realpath(file)
    return real.startswith(_libraries()) or _under_an_install_folder(real)


def _under_an_install_folder(real: str) -> bool:
    """Whether a file is under a ``sys.path`` folder packages were installed into (one
    holding their ``*.dist-info``: ``pip install --target``, a ``PYTHONPATH`` of them, as
    on clusters and in containers)."""
    for entry in list(sys.path):
        if isinstance(entry, str):
            folder = os.path.realpath(entry or ".") + os.sep
            if real.startswith(folder) and _holds_installs(folder):
                return True
    return False


@functools.lru_cache(maxsize=256)
def _holds_installs(folder: str) -> bool:
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(folder))
    except OSError:
        return False


def _of_user(module: object) -> bool:
    """Whether module ``module`` (by name) is the user's code: the script, a notebook,
    a module of the project (not Python's, an installed package's or dagnb's)."""
    if module in _MAIN_NAMES:
        return True
    found = sys.modules.get(module) if type(module) is str else None
    return found is not None and not _in_libraries(getattr(found, "__file__", None))


# -- sources sent along ---------------------------------------------------------------
# cloudpickle sends a function defined in __main__ or a notebook by value, without its
# file (it even names it "<dynamic-code>"): there its code would be hashed as bytecode,
# and its key would differ from the one it has here.

_ADOPTED: dict[str, tuple[str, str]] = {}  # code key -> (AST dump, normalized source)
_ADOPTED_LIMIT = 4096


def adopt_sources(table: Mapping[str, tuple[str, str]]) -> None:
    """Hash code as the process that sent ``table`` (a :func:`source_table`) did: its
    sources, rather than none, or the file as it is now (it may have been edited)."""
    if len(_ADOPTED) + len(table) > _ADOPTED_LIMIT:
        _ADOPTED.clear()
    _ADOPTED.update(table)


def script_sources() -> dict[str, tuple[str, str]]:
    """The sources of the script's (or notebook's) own functions and classes, by code
    key: sent with a cached function, so that an argument holding one (an instance of
    a config class the script defines, a function it passes) hashes in a worker that
    got it by value, without its file, as it does here. Made again only when the
    script's names are bound to other objects."""
    main = sys.modules.get("__main__")
    defined = tuple((name, obj) for name, obj in list(vars(main).items())
                    if isinstance(obj, (types.FunctionType, type))
                    and getattr(obj, "__module__", None) in _MAIN_NAMES) if main else ()
    memo = tuple((name, id(obj)) for name, obj in defined)
    if _SCRIPT_SOURCES[0] != memo:
        table = {}
        for _, obj in defined:
            normalized = _normalized_source(obj)
            if normalized is not None:  # (no source here: bytecode there as here)
                table[_code_key(obj)] = normalized
        _SCRIPT_SOURCES[:] = [memo, table]
    return _SCRIPT_SOURCES[1]


_SCRIPT_SOURCES: list[Any] = [None, {}]  # (the script's names and objects, their table)


def _code_key(obj: Any) -> str:
    """A function's qualified name and exact code; a class's name and its members' (the
    code of its functions, the digest of its other values): the same in any process of
    the same Python, and nothing else."""
    if isinstance(obj, types.FunctionType):
        return f"def {obj.__qualname__} {_bytecode_digest(obj.__code__, obj.__doc__)}"
    h = new_hasher()
    for function in _class_functions(obj):
        code = _bytecode_digest(function.__code__, function.__doc__)
        h.update(f"{function.__qualname__}={code};".encode())
    for name, value in _data_members(obj):
        h.update(f"{name}={_member_digest(value)};".encode())
    return f"class {obj.__qualname__} {h.hexdigest()}"
