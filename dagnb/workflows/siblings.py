"""The modules beside a workflow's steps file, which its ``import helpers`` means.

A steps file is imported with its folder on ``sys.path``, as a script is, so that the
modules beside it are found. But Python keeps one module per name in a process: when
another workflow's folder (or the notebook's) already loaded a ``helpers``, this
folder's ``import helpers`` is answered with that one, and the step runs, and is keyed
on, the other folder's code. Loading each folder's module under its own name would not
hold either: the cache keys, the code sent to dask workers and containers and pickle all
find a module by its name. So such a clash is refused, in one line naming both files.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from pathlib import Path

from dagnb.errors import WorkflowError
from dagnb.workflows.file_facts import file_fact

__all__ = ["check_siblings"]


def check_siblings(steps_file: Path, where: str) -> None:
    """Refuse a module the steps file imports (or one of the modules beside it that it
    imports does) by the name of a module beside it, when the module of that name this
    process holds, or would import first, is another file. Before the file runs: its
    top-level code must not run with the other folder's module either."""
    for name, (sibling, importer) in _imported_siblings(steps_file).items():
        try:
            spec = importlib.util.find_spec(name)  # (the one loaded, else the one found)
        except (ImportError, ValueError):  # (a module with no spec: no telling, no guess)
            continue
        other = _location(spec)
        if spec is not None and other != sibling:
            found = repr(str(other)) if other else "a module with no file"
            raise WorkflowError(
                f"{where}: {importer.name} imports {name!r}, the module {str(sibling)!r} "
                f"beside it, but {name!r} in this process is {found} (another workflow's "
                "or the notebook's, loaded first), and Python keeps one module per name: "
                "give one of them a distinct name, or run the workflows in separate "
                "processes")


def _imported_siblings(steps_file: Path) -> dict[str, tuple[Path, Path]]:
    """Name -> (its file, the file importing it) of the modules beside the steps file
    that it imports, at its top level or in a function, directly or through another."""
    folder = [str(steps_file.parent)]
    found: dict[str, tuple[Path, Path]] = {}
    pending = [steps_file]
    while pending:
        importer = pending.pop()
        for name in sorted(_top_level_imports(importer) - found.keys()):
            sibling = _location(importlib.machinery.PathFinder.find_spec(name, folder))
            if sibling is not None:
                found[name] = (sibling, importer)
                pending.append(sibling / "__init__.py" if sibling.is_dir() else sibling)
    return found


def _top_level_imports(file: Path) -> frozenset[str]:
    """The top-level names of the absolute imports in a Python file (none if it cannot
    be read or parsed: importing it says why). Parsed once per text of the file: each
    step of a load asks (:mod:`.file_facts`)."""
    try:
        return file_fact(file, _absolute_imports)
    except OSError:
        return frozenset()


def _absolute_imports(source: bytes) -> frozenset[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return frozenset(names)


def _location(spec: importlib.machinery.ModuleSpec | None) -> Path | None:
    """The file of a module (a package's folder); None for one with no file, and for a
    folder without ``__init__.py`` (a data folder: an installed package of its name is
    imported before it)."""
    if spec is None or not spec.has_location or not spec.origin:
        return None
    origin = Path(spec.origin).resolve()
    return origin.parent if spec.submodule_search_locations is not None else origin
