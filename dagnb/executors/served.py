"""Import the modules shipped with a step (:mod:`.shipped`) from their text, ahead of
the process's own path: in a dask worker's child process, and in a container, where the
Dagger shim loads this very file (:mod:`.dagger.shim`) and no dagnb is installed. So it
imports nothing but Python's standard library, and runs on the image's ``python3``
(3.7 or later).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
from typing import Any

__all__ = ["explain_unshipped", "serve"]


def serve(modules: dict[str, tuple[str, bytes | None, list[str] | None]]) -> None:
    """Import ``modules`` from their shipped text in this process, ahead of its path;
    tracebacks show their lines (though no such file is here)."""
    if not modules:
        return
    for file, source, _ in modules.values():
        if source is not None:
            lines = importlib.util.decode_source(source).splitlines(keepends=True)
            linecache.cache[file] = (len(source), None, lines, file)
    sys.meta_path.insert(0, _Finder(modules))


def explain_unshipped(exc: BaseException, install: str) -> None:
    """Say, in ``exc``'s own message, why a submodule of a shipped package is missing
    where the package's folders are not (``importlib.import_module(f"plugins.{name}")``:
    no text names it, so it was not sent); ``install`` says where the project would
    have to be. Where the folders are (a shared disk), the module is missing there too:
    Python's words stand."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not isinstance(name, str):
        return
    for finder in sys.meta_path:
        package = finder.modules.get(name.rpartition(".")[0]) if isinstance(
            finder, _Finder) else None
        if package is not None and not any(map(os.path.isdir, package[2] or ())):
            exc.msg = (f"{exc.msg} (dagnb sends a step the project modules its code "
                       "imports by name; one imported by a name built at run time is not "
                       f"among them: import {name} in the step's module, or {install})")
            exc.args = (exc.msg,)
            return


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the shipped modules, by name."""

    def __init__(self, modules: dict[str, tuple[str, bytes | None, list[str] | None]]) -> None:
        self.modules = modules

    def find_spec(self, fullname: str, path: Any = None, target: Any = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        found = self.modules.get(fullname)
        if found is None:
            return None
        file, source, folders = found
        if source is None:  # a namespace package: the import system makes it
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = folders
            return spec
        # (a package's folders stay searched: a submodule it imports by a computed
        # name, which no text names, is found there on a shared disk)
        return importlib.util.spec_from_file_location(
            fullname, file, loader=_Source(file, source), submodule_search_locations=folders)


class _Source(importlib.abc.SourceLoader):
    """Loads a module from its shipped text; other files (a package's data) from
    disk. Where the worker has the very file (the client's machine, a shared disk),
    its bytecode cache serves, as the worker's own import would: compiling a big module
    per task (1.7 MB: 0.2 s) slowed a run of many small tasks. None is written."""

    def __init__(self, file: str, source: bytes) -> None:
        self.file, self.source = file, source

    def get_filename(self, fullname: str) -> str:
        return self.file

    def path_stats(self, path: str) -> dict[str, Any]:
        """The file's time and size, which its ``.pyc`` is checked against, when it
        holds the shipped text and its ``.pyc`` was written after it (a file changed
        twice in a second, at one size, passes the check with the first's); else
        OSError: the text is compiled."""
        st = os.stat(path)  # (before the read: a change after it fails the pyc's check)
        cached = os.stat(importlib.util.cache_from_source(path))
        if path != self.file or st.st_size != len(self.source) \
                or cached.st_mtime_ns <= st.st_mtime_ns:
            raise OSError(f"no bytecode of the shipped {path} here")
        with open(path, "rb") as handle:
            if handle.read() != self.source:
                raise OSError(f"{path} here is not the shipped one")
        return {"mtime": st.st_mtime, "size": st.st_size}

    def get_data(self, path: str) -> bytes:
        if path == self.file:
            return self.source
        with open(path, "rb") as handle:
            return handle.read()
