"""The user's own modules, sent with a step to a process that may not import them.

A dask worker has the client's third-party packages, not the project's files: a step
whose function used ``helpers`` (a module beside the workflow or the notebook, or a
package of the project) failed there with ModuleNotFoundError, unless the worker had
been started in the project's folder. cloudpickle sends the functions of ``__main__`` (a
notebook) by value and refers to everything else by module name. So, while a step is
pickled, :class:`Reached` notes the modules it refers to, and those that code sent by
value imports in its body; :func:`project_sources` keeps the user's among them (not
Python's, an installed package's or dagnb's), with the project modules they import in
turn and their packages, as source text. The step's process on the worker imports them
from that text (:func:`serve`, of :mod:`.served`), ahead of its own path: it runs the
code the client keyed the step on, not an older copy on the worker's disk, and a new
process per attempt imports them afresh. A module imported here travels as the text it
was imported from (:mod:`dagnb.fingerprint.imported`): its file edited since and not
reloaded, the client runs the old code and keys the step on it, and so must the worker.
One edited before dagnb first read it has no such text: the step is refused in one line
saying how to load the new code. So is one holding a value its text does not set, as
``helpers.FACTOR = 5`` in a notebook leaves it, or a function of its text rebound
(``helpers.clean = better_clean``): the worker would run with the text's.

A container step on Dagger is the same case (:mod:`.dagger.shim`): its function travels
as source, and the modules it reaches (its globals, those its pickled values refer to,
its body's imports) travel with it from :func:`project_sources`; the shim imports them
with :mod:`.served`'s own text, as the image has no dagnb.

Sources rather than ``cloudpickle.register_pickle_by_value``: that pickles a module's
whole namespace, with what its top level made (a lock or a client does not pickle, a
token read from the environment would travel in plain text). Here a module's top level
runs on the worker, as an import there would run it, and only the modules the step
reaches travel, not every file of the project.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import sys
import time
import types
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from dagnb.errors import ExecutorError
from dagnb.executors.served import serve
from dagnb.fingerprint.imported import IMPORTED, stale_line
from dagnb.fingerprint.modules import body_imports, spec_of_unimported
from dagnb.fingerprint.paths import RACY_WINDOW_NS
from dagnb.fingerprint.sources import _in_libraries  # (the key's own line: the same modules)

__all__ = ["Reached", "Shipped", "project_sources", "serve"]

# A module's file, its source (None: a namespace package) and, for a package, its folders
Shipped = tuple[str, bytes | None, list[str] | None]
_NOT_SHIPPED = frozenset({"__main__", "__mp_main__"})  # (cloudpickle sends those by value)


class Reached:
    """The names of the modules a pickle refers to (a class's, a function's, a module
    object's) and those imported in the bodies of the functions it holds."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: set[str] = set()

    def note(self, obj: Any) -> None:
        """Called by the pickler for each object it reduces."""
        if isinstance(obj, types.ModuleType):
            self.names.add(obj.__name__)
        elif isinstance(obj, (type, types.FunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.names.add(module)
        if isinstance(obj, types.FunctionType):
            package = obj.__globals__.get("__package__")
            self.names.update(body_imports(obj.__code__, package))


def project_sources(names: Iterable[str], sent_otherwise: Collection[str] = ()
                    ) -> dict[str, Shipped]:
    """The user's modules among ``names``, with their packages and the project modules
    they import (anywhere in their text), by module name; none of the top-level
    packages ``sent_otherwise`` (those cloudpickle sends by value)."""
    shipped: dict[str, Shipped] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in shipped or name in _NOT_SHIPPED or _top(name) in sent_otherwise:
            continue
        found = _project_module(name)
        if found is None:
            continue
        shipped[name] = found
        pending += _parents(name)
        if found[1] is not None:
            pending += _source_imports(found[1], name, is_package=found[2] is not None)
    return shipped


def _top(name: str) -> str:
    return name.partition(".")[0]


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _project_module(name: str) -> Shipped | None:
    """``name``'s file, source and folders if it is the user's Python source (imported
    here or not yet), or a namespace package of the user's; else None."""
    module = sys.modules.get(name)
    if isinstance(module, types.ModuleType):
        file, folders = getattr(module, "__file__", None), getattr(module, "__path__", None)
    else:
        module = None
        file, folders = _location(name)
    if file is None:  # a namespace package (a folder without __init__.py), or built in
        found = list(dict.fromkeys(str(folder) for folder in folders or ()))
        if found and not any(map(_in_libraries, found)):
            return "", None, found
        return None
    if not isinstance(file, str) or not file.endswith(".py") or _in_libraries(file):
        return None
    return _read(file, module)


def _location(name: str) -> tuple[str | None, list[str] | None]:
    """The file and folders of a module not imported here yet (one imported in a
    function's body), found as the import system would, without importing it."""
    spec = spec_of_unimported(name)
    if spec is None:
        return None, None
    origin = spec.origin if spec.has_location else None
    return origin, list(spec.submodule_search_locations or ()) or None


def _read(file: str, module: types.ModuleType | None) -> Shipped | None:
    """The module's text: the one it was imported from (its file's, unless the file
    changed since: the code the key describes and this process runs); a module not
    imported yet, as its file is (the import on the worker loads that)."""
    try:
        if module is None:
            source = _file_text(file)
        else:
            source = IMPORTED.source_run(module, file)
            if source is None:  # (its namespace instead would send what its top made)
                raise ExecutorError(stale_line(module.__name__, file, gone=True))
            unlike = IMPORTED.unlike_its_text(module, file, source)
            if unlike is not None:  # (``helpers.FACTOR = 5``, ``helpers.clean = better``)
                raise ExecutorError(unlike)
    except OSError:  # (gone since its import: the worker's own copy, if any, serves)
        return None
    is_package = os.path.basename(file) == "__init__.py"
    return file, source, [os.path.dirname(file)] if is_package else None


def _file_text(file: str) -> bytes:
    """The file's text, read again only when it changed: each task of a step ships its
    modules, and re-reading and parsing a big one (1.7 MB: 0.4 s) per task slowed a run
    of many small tasks."""
    st = os.stat(file)
    if time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS:  # (may change, its mtime not)
        return _read_bytes(file)
    return _text_as_of(file, st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=1024)
def _text_as_of(file: str, size: int, mtime_ns: int, inode: int) -> bytes:
    return _read_bytes(file)


def _read_bytes(file: str) -> bytes:
    with open(file, "rb") as handle:
        return handle.read()


def _source_imports(source: bytes, name: str, is_package: bool) -> Iterator[str]:
    """The absolute names a module's text imports: ``from pkg import sub`` gives
    ``pkg.sub`` too (a submodule, or else a name found in no file)."""
    package = name if is_package else name.rpartition(".")[0]
    for module, level, names in _import_statements(source):
        if names is None:
            yield module
            continue
        base = _absolute(module, level, package)
        if base is None:
            continue
        yield base
        if _may_be_the_users(base):
            yield from (f"{base}.{alias}" for alias in names if alias != "*")


@functools.lru_cache(maxsize=1024)  # (the same bytes object while its file is unchanged)
def _import_statements(source: bytes) -> tuple[tuple[str, int, tuple[str, ...] | None], ...]:
    """Each name a module's text imports: (module, level, None) for ``import module``,
    (module, level, names) for ``from module import names``."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # (its import on the worker will say so)
        return ()
    found: list[tuple[str, int, tuple[str, ...] | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level,
                          tuple(alias.name for alias in node.names)))
    return tuple(found)


def _absolute(name: str, level: int, package: str) -> str | None:
    if not level:
        return name
    try:
        return importlib.util.resolve_name("." * level + name, package)
    except (ImportError, ValueError):  # (a relative import above the top package)
        return None


def _may_be_the_users(name: str) -> bool:
    """Whether ``name`` may be a package of the user's, whose submodules are worth
    looking for: not one imported here from a library's file."""
    file = getattr(sys.modules.get(name), "__file__", None)
    return file is None or not _in_libraries(file)
