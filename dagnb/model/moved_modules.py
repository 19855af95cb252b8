"""Unpickling a result that names a workflow's steps module by where that file was.

A ``python: steps.py:make`` step's module is registered as ``dagnb_steps_<stem>_<digest
of its path>`` (two workflows' ``steps.py`` are two modules), so a result of one of its
classes pickles under that name. A cache key does not hold the path: the same code in a
moved folder, or in a teammate's checkout or CI's sharing the cache, hits the entry, whose
result then names a module this process never had. That name is read as the steps module
of the same file name loaded here, when there is exactly one; the key matched, so the
classes it defines have the same source.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
from typing import Any, BinaryIO

__all__ = ["STEPS_MODULE_PREFIX", "load", "loads"]

STEPS_MODULE_PREFIX = "dagnb_steps_"
_STEPS_MODULE = re.compile(re.escape(STEPS_MODULE_PREFIX) + r"(.+)_[0-9a-f]{8}")


def load(handle: BinaryIO) -> Any:
    """``pickle.load(handle)``; a steps module named from elsewhere is read as the one here."""
    start = handle.tell()
    try:
        return pickle.load(handle)
    except ModuleNotFoundError as exc:
        if _loaded_here(exc.name) is None:
            raise
    handle.seek(start)
    return _Unpickler(handle).load()


def loads(data: bytes) -> Any:
    """``pickle.loads(data)``, as :func:`load` reads it."""
    try:
        return pickle.loads(data)
    except ModuleNotFoundError as exc:
        if _loaded_here(exc.name) is None:
            raise
    return _Unpickler(io.BytesIO(data)).load()


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_loaded_here(module) or module, name)


def _loaded_here(module: str | None) -> str | None:
    """The steps module loaded here of the file that ``module`` was loaded from elsewhere;
    None when ``module`` is here, or is no steps module, or no or several such modules are."""
    named = _STEPS_MODULE.fullmatch(module or "")
    if named is None or module in sys.modules:
        return None
    found = [other for other in list(sys.modules)
             if (match := _STEPS_MODULE.fullmatch(other)) and match[1] == named[1]]
    return found[0] if len(found) == 1 else None
