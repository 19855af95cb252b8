"""The environment variables Python code reads by a name written in it.

``os.environ["REGION"]``, ``os.environ.get("REGION")``, ``os.getenv("REGION")``,
``"REGION" in os.environ``, and the same through ``from os import environ, getenv``:
a step's key counts such a variable's value as it counts a shell step's ``$REGION``
(:func:`dagnb.cache.keys.step_key`), so a result made with another value is not served.

Read from the bytecode (no source needed), the same on Python 3.10 to 3.13. A name the
code also sets (``os.environ["X"] = ...``, ``setdefault``, ``pop``, ``del``) is left
out: the run itself changes it, and keyed, it would move the key of the next run in
the same process. A name computed at run time (``os.environ[name]``) cannot be keyed.
"""

from __future__ import annotations

import dis
import functools
import os
import types
from collections.abc import Iterator

__all__ = ["DYNAMIC", "WHOLE", "UnkeyedEnvironmentWarning", "environ_names", "unkeyed_reads_said"]

# instructions between the parts of ``os.environ.get("X")`` in some Python versions
_BETWEEN = frozenset({"CACHE", "PUSH_NULL", "PRECALL", "KW_NAMES", "NOP", "EXTENDED_ARG"})
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_DEREF",
                    "LOAD_FAST_CHECK", "LOAD_CLASSDEREF"})
_ATTRIBUTES = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_GETTERS = frozenset({"get", "getenv"})  # read a value
_SETTERS = frozenset({"setdefault", "pop", "putenv", "unsetenv", "update"})  # (update: by
#                                                                  what it is given, unknown)
_ENVIRON, _GETTER, _SETTER = "environ", "getter", "setter"
_DYNAMIC_SUBSCRIPT = "environ[...]"  # ``os.environ`` then a variable: read, set or passed
_WHOLE_BY = frozenset({"copy", "items", "keys", "values", "__iter__"})  # take it whole


# reads no key can name, as :func:`environ_names` reports them
WHOLE = "whole"  # ``os.environ`` taken as a value: ``dict(os.environ)``, ``.items()``, a loop
DYNAMIC = "dynamic"  # a name made at run time: ``os.environ[name]``, ``os.getenv(name)``
_UNKEYED = "\1"  # (the mark of such a read among the names)


class UnkeyedEnvironmentWarning(UserWarning):
    """Served from the cache, a step or a ``Memory`` function whose code or command reads
    host variables no key can name (``env``, ``printenv`` with no name, ``export -p``,
    ``dict(os.environ)``, ``os.environ[name]``): its key holds the variables it names."""


def unkeyed_reads_said(whole: bool) -> str:
    """What Python code reads that no key can name (``whole``: it takes ``os.environ``
    whole, else it reads names made at run time), and the way out, as a warning of a
    hit says them."""
    what = ("its whole environment (dict(os.environ), .items(), a loop over it, "
            "env=os.environ)" if whole
            else "variables by names made at run time (os.environ[name], os.getenv(name))")
    return (f"its code reads {what}, whose values its key does not hold: the result may "
            'be stale; read each variable it needs by a name written in the code '
            '(os.environ["REGION"]), which then counts in its key')


def environ_names(code: types.CodeType, namespace: dict[str, object]
                  ) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(names read, names set) by constant in ``code`` and the code nested in it (its
    comprehensions, lambdas and inner functions), and the reads no key can name there
    (:data:`WHOLE`, :data:`DYNAMIC`); ``namespace``: its globals, where ``environ`` and
    ``getenv`` must be os's to count."""
    try:
        codes = list(_nested(code))
        aliases = _aliases(codes, namespace)
        found = [_names_in(nested, aliases) for nested in codes]
    except Exception:  # (bytecode this walk does not know: the reads unseen, as before)
        return frozenset(), frozenset(), frozenset()
    read = _own_names(frozenset().union(*(r for r, _ in found)), namespace)
    written = frozenset().union(*(w for _, w in found))
    unkeyed = frozenset(name[1:] for name in read if name.startswith(_UNKEYED))
    return read - {_UNKEYED + kind for kind in unkeyed}, written, unkeyed


def _own_names(read: frozenset[str], namespace: dict[str, object]) -> frozenset[str]:
    """Drop the reads through a bare ``environ``/``getenv`` that is not os's (a global of
    another meaning): they are marked with a leading NUL by :func:`_names_in`."""
    kept = set()
    for name in read:
        if name.startswith("\0"):
            via, name = name[1:].split("\0", 1)
            held = namespace.get(via, os.environ if via == "environ" else os.getenv)
            if held is not (os.environ if via == "environ" else os.getenv):
                continue
        kept.add(name)
    return frozenset(kept)


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


_CANONICAL = {"os": os, "environ": os.environ, "getenv": os.getenv}


def _aliases(codes: list[types.CodeType], namespace: dict[str, object]
             ) -> tuple[tuple[str, str], ...]:
    """Other names the code reads ``os``, ``os.environ`` or ``os.getenv`` by, each with
    the one it stands for: a global bound to it (``import os as o``), or a name the code
    binds by importing it (``from os import environ as E`` in the body)."""
    found: dict[str, str] = {}
    for code in codes:
        for name in code.co_names:
            held = namespace.get(name)
            for canonical, obj in _CANONICAL.items():
                if held is obj and name != canonical:
                    found[name] = canonical
        found.update(_imported_aliases(code))
    return tuple(sorted(found.items()))


def _imported_aliases(code: types.CodeType) -> dict[str, str]:
    """``import os as o`` and ``from os import environ as E, getenv as g`` in this code:
    the names they bind, each with what it stands for."""
    if "os" not in code.co_names:
        return {}
    found, bound, importing = {}, "", False
    for instruction in dis.get_instructions(code):
        op, value = instruction.opname, instruction.argval
        if op in _BETWEEN:
            continue
        if op == "IMPORT_NAME":
            importing, bound = value == "os", "os" if value == "os" else ""
        elif op == "IMPORT_FROM" and importing:
            bound = value if value in ("environ", "getenv") else ""
        elif op.startswith("STORE_") and bound:
            if value != bound:
                found[value] = bound
            bound = ""
        elif op != "POP_TOP":
            importing, bound = False, ""
    return found


@functools.lru_cache(maxsize=4096)
def _names_in(code: types.CodeType, aliases: tuple[tuple[str, str], ...] = ()
              ) -> tuple[frozenset[str], frozenset[str]]:
    """Names read and set in this one code object (a bare ``environ``'s or ``getenv``'s
    reads marked ``\\0via\\0NAME``: whether it is os's is for the globals to say; a read
    no key can name as ``\\1whole`` or ``\\1dynamic``); ``aliases``: other names of
    ``os``, ``os.environ`` and ``os.getenv``, each known to be os's."""
    alias = dict(aliases)
    names = {*code.co_names, *code.co_varnames, *code.co_freevars, *code.co_cellvars}
    if "environ" not in names and "getenv" not in names and not names & alias.keys():
        return frozenset(), frozenset()  # (most code: nothing to look at)
    read: set[str] = set()
    written: set[str] = set()
    state, via, before = "", "", None  # what the last loads make; the constant before them
    previous: object = None
    for instruction in dis.get_instructions(code):
        op, value = instruction.opname, instruction.argval
        if op in _BETWEEN:
            continue
        if op in _LOADS and value in alias:  # (known to be os's: no mark to check)
            state, via, before = {"os": "os", "environ": _ENVIRON,
                                  "getenv": _GETTER}[alias[value]], "", previous
            previous = None
            continue
        if state in (_ENVIRON, _GETTER) and op in _LOADS and value != "os":
            # ``os.environ[name]`` or ``os.getenv(name)``, unless it sets ``name``;
            # ``os.environ`` given to a call with a variable after it: taken whole
            state = _DYNAMIC_SUBSCRIPT if state == _ENVIRON else ""
            if state == "":
                read.add(via + _UNKEYED + DYNAMIC)
        elif op in _LOADS:
            if value == "os":
                state, via, before = "os", "", previous
            elif value in ("environ", "getenv"):
                state = _ENVIRON if value == "environ" else _GETTER
                via, before = f"\0{value}\0", previous
            else:
                state = ""
        elif op in _ATTRIBUTES and state:
            state = _after_attribute(state, value)
            if state == WHOLE:
                read.add(via + _UNKEYED + WHOLE)
                state = ""
        elif op == "LOAD_CONST" and state in (_ENVIRON, _GETTER, _SETTER):
            text = value if isinstance(value, str) else None
            if text is not None and state == _GETTER:
                read.add(via + text)
            elif text is not None and state == _SETTER:
                written.add(text)
            if text is None and state == _ENVIRON:  # (3.13: the keyword names of a call
                read.add(via + _UNKEYED + WHOLE)  # it is given to, ``env=os.environ``)
            state = "subscript:" + text if text is not None and state == _ENVIRON else ""
        elif state.startswith("subscript:"):
            name = state.split(":", 1)[1]
            if op == "BINARY_SUBSCR":
                read.add(via + name)
            elif op in ("STORE_SUBSCR", "DELETE_SUBSCR"):
                written.add(name)
            state = ""
        elif state == _DYNAMIC_SUBSCRIPT:
            if op == "BINARY_SUBSCR":
                read.add(via + _UNKEYED + DYNAMIC)
            elif op not in ("STORE_SUBSCR", "DELETE_SUBSCR"):
                read.add(via + _UNKEYED + WHOLE)
            state = ""
        elif op == "CONTAINS_OP" and state == _ENVIRON:
            read.add(via + (before if isinstance(before, str) else _UNKEYED + DYNAMIC))
            state = ""
        elif state == _ENVIRON:  # (a call's argument, a loop, ``**``, a name bound to it)
            read.add(via + _UNKEYED + WHOLE)
            state = ""
        else:
            state = ""
        previous = instruction.argval if op == "LOAD_CONST" else None
    return frozenset(read), frozenset(written)


def _after_attribute(state: str, attribute: object) -> str:
    """``os`` -> ``os.environ`` or ``os.getenv``; ``os.environ`` -> ``.get`` or a setter."""
    if state == "os":
        if attribute == "environ":
            return _ENVIRON
        if attribute == "getenv":
            return _GETTER
        return _SETTER if attribute in ("putenv", "unsetenv") else ""
    if state == _ENVIRON:
        if attribute in _GETTERS:
            return _GETTER
        if attribute in _WHOLE_BY:
            return WHOLE
        return _SETTER if attribute in _SETTERS else ""
    return ""
