"""What a class is made of, as its key counts it: its own members, its functions
(methods, properties', cached ones'), and its values by content."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Iterator
from typing import Any

from dagnb.fingerprint.names import _reference
from dagnb.fingerprint.values import _soft_digest

_IMPLICIT = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__"})
_CODE_MEMBERS = (types.FunctionType, staticmethod, classmethod, property, type)


def _data_members(cls: type) -> list[tuple[str, Any]]:
    """A class's own values: not its functions, not its docstring, not the ``__dunder__``
    ones Python and libraries set (a pydantic model's schema holds an ``id()``: it would
    make every process's key another)."""
    return [(name, value) for name, value in _class_members(cls)
            if not isinstance(value, _CODE_MEMBERS)
            and not (name.startswith("__") and name.endswith("__"))]


def _member_digest(value: Any) -> str:
    """A class's value by content; one that cannot be hashed by its type's name."""
    try:
        digest = _soft_digest(value)
    except RecursionError:  # (nested deeper than pickle goes)
        digest = None
    return digest if digest is not None else "a " + _reference(type(value))


def _class_functions(cls: type) -> Iterator[types.FunctionType]:
    """The functions a class defines: methods, static and class methods, properties',
    cached properties' and those of cached methods (``lru_cache``)."""
    for _, value in _class_members(cls):
        if isinstance(value, property):  # (its functions, or what an lru_cache wraps)
            found: tuple[Any, ...] = tuple(_held_code(f) for f in (
                value.fget, value.fset, value.fdel) if f is not None)
        else:
            found = (_held_code(value),)
        yield from (f for f in found if isinstance(f, types.FunctionType))


def _held_code(value: Any) -> Any:
    """The function or class a class member is or wraps; None for data."""
    if isinstance(value, (types.FunctionType, type)):
        return value
    if isinstance(value, (staticmethod, classmethod)):
        inner = value.__func__
        return _held_code(inner) or inner  # (staticmethod(lru_cache(f)): f)
    if isinstance(value, functools.cached_property):
        return value.func
    if callable(value) and isinstance(inspect.getattr_static(value, "__wrapped__", None),
                                      types.FunctionType):
        return inspect.getattr_static(value, "__wrapped__")  # (an lru_cache method)
    return None


def _class_members(cls: type) -> list[tuple[str, Any]]:
    """A class's own members by name, what Python adds to every class left out."""
    return sorted((name, value) for name, value in vars(cls).items() if name not in _IMPLICIT)


