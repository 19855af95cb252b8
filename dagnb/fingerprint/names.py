"""How keys and cache folders spell where code lives: the main script as ``__main__``
in every process, anything else by its module and qualified name."""

from __future__ import annotations

from typing import Any

_MP_MAIN = "__mp_main__"
_MAIN_NAMES = frozenset({"__main__", _MP_MAIN})
_MP_MAIN_BYTES = _MP_MAIN.encode()


def main_spelled(module: str) -> str:
    """A module's name as keys and cache folders spell it: the main script is
    ``__main__`` in every process, though a ``multiprocessing`` worker started by spawn
    or forkserver imports it as ``__mp_main__``."""
    return "__main__" if module == _MP_MAIN else module


def _reference(obj: Any) -> str:
    """An object by name: its module (as :func:`main_spelled`) and qualified name."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{main_spelled(module)}.{name}"
