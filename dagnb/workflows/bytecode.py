"""Steps modules run from their text: a bytecode cache serves only while it hashes the same.

Python matches a ``.pyc`` to its source by the source's mtime, in whole seconds, and its
size. A steps file written twice within a second at one size (a template saved again, a
``%%writefile`` cell run twice, a script) would run the first text's code while dagnb
keys its steps on the second text. So a steps module's loader trusts, and writes, only a
checked hash-based ``.pyc`` (PEP 552, as ``py_compile --invalidation-mode checked-hash``
writes): valid while the text hashes the same, whatever the clock. Python's own import
checks such a file the same way, so a plain ``import steps`` of the file agrees.

The modules beside a steps file that it imports (``import helpers``) are found through
its folder, on ``sys.path``: that folder, and the packages in it, are searched with the
same loader (:func:`search_with_text_checks`), so an edited helper runs its new text too.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import marshal
import os
import sys
from types import CodeType

__all__ = ["TextCheckedLoader", "search_with_text_checks"]

_CHECKED_HASH = (0b11).to_bytes(4, "little")  # PEP 552 flags: hash-based, checked


class TextCheckedLoader(importlib.machinery.SourceFileLoader):
    """A source file's loader whose bytecode cache is checked against the text's hash."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        header = (importlib.util.MAGIC_NUMBER + _CHECKED_HASH
                  + importlib.util.source_hash(source))
        cached = _cache_path(path)
        if cached is not None:
            with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
                data = self.get_data(cached)
                if data[:16] == header:
                    code = marshal.loads(memoryview(data)[16:])
                    if code.co_filename == path:  # (else a moved folder's: its
                        return code              # tracebacks would name the old path)
        code = self.source_to_code(source, path)
        if cached is not None and not sys.dont_write_bytecode:
            self.set_data(cached, header + marshal.dumps(code))  # (atomic; errors ignored)
        return code


def _cache_path(path: str) -> str | None:
    try:
        return importlib.util.cache_from_source(path)
    except NotImplementedError:  # (an implementation with no bytecode cache)
        return None


_FOLDERS: set[str] = set()  # the steps' folders whose modules TextCheckedLoader loads
_file_finder = importlib.machinery.FileFinder.path_hook(
    (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    (TextCheckedLoader, importlib.machinery.SOURCE_SUFFIXES),
    (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
)  # (the order of Python's own: extension modules, then source, then bytecode alone)


def search_with_text_checks(folder: str) -> None:
    """Have the modules found in ``folder`` (a steps file's, on ``sys.path``) and in its
    packages loaded by :class:`TextCheckedLoader`; the modules already imported stay."""
    if folder in _FOLDERS:
        return
    if _steps_folders_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, _steps_folders_hook)
    _FOLDERS.add(folder)
    sys.path_importer_cache.pop(folder, None)  # (a finder made before: made again)


def _steps_folders_hook(path: str) -> importlib.machinery.FileFinder:
    """The finder of a steps' folder or of a package in one; ImportError (the next hook
    then) for any other path."""
    if not _of_steps(path):
        raise ImportError(f"{path!r} is no steps' folder")
    return _file_finder(path)


def _of_steps(path: str) -> bool:
    """Whether ``path`` is a steps' folder, or a folder of a package in one: not of a
    virtual environment there (``.venv/lib/.../pandas``), whose packages keep the
    ``.pyc`` files their install wrote (compiled anew, an import took seconds)."""
    if path in _FOLDERS:
        return True
    return any(path.startswith(folder + os.sep) and os.path.isfile(
        os.path.join(folder, path[len(folder) + 1:].split(os.sep, 1)[0], "__init__.py"))
        for folder in _FOLDERS)  # (every folder: one may be within another)
