"""Digests of code: what a function does (its normalized source, and transitively the
helpers, classes and constants it refers to), kept per function while what it was made
of holds; the object a method is bound to; the data a function reads from globals."""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from dagnb.errors import FingerprintError
from dagnb.fingerprint import first_imports, hashers, values
from dagnb.fingerprint.hashers import new_hasher
from dagnb.fingerprint.imported import IMPORTED
from dagnb.fingerprint.modules import MemberView
from dagnb.fingerprint.names import _reference, main_spelled
from dagnb.fingerprint.sources import _code_key, _of_user
from dagnb.fingerprint.values import (
    _soft_digest,
    functions_under_way,
    value_digest,
    while_class_under_way,
)
from dagnb.fingerprint.walker import (
    _MISSING,
    _SCALARS,
    _cell_value,
    _code_names,
    _CodeWalker,
    _file_content,
    _is_constant,
    loaded_globals,
)


class _CodeRecord:
    """A function's digest plus what it was computed from, to notice a stale entry."""

    __slots__ = ("algorithm", "cells", "checked_at", "code_only", "contents", "deps", "digest",
                 "environ", "environ_unkeyed", "functions", "held", "home", "imported",
                 "in_value", "looked", "parts", "seen", "shapes", "sources", "table",
                 "unimported", "variables")

    def __init__(self, digest: str, walker: _CodeWalker) -> None:
        self.digest, self.algorithm = digest, hashers._ALGORITHM
        self.code_only = walker.h_code.hexdigest()
        self.deps, self.cells, self.parts = walker.deps, walker.cells, walker.parts
        self.variables, self.home = walker.variables, walker.home
        self.contents = walker.contents
        # the environment variables its code reads by name, less those it sets itself
        self.environ = tuple(sorted(walker.environ_read - walker.environ_set))
        self.environ_unkeyed = frozenset(walker.environ_unkeyed)
        # The function itself is not kept: the record is the value of a weak-keyed cache.
        self.functions = [(None, *state) for _, *state in walker.functions[:1]]
        self.functions += walker.functions[1:]
        # the sources hashed, as they were then (the function itself as None)
        first = walker.functions[0][0] if walker.functions else None  # (a class's walk
        self.sources = [(None if obj is first else obj, source)  # may have none)
                        for obj, source in walker.sources]
        self.table: dict[str, tuple[str, str]] | None = None  # (see source_table)
        self.shapes = walker.shapes
        # the user's modules read, (name, file): each file checked against the text its
        # module was imported from at each step's key (one stat a module)
        self.imported = tuple((name, file) for file, name in walker.imported.items())
        # those its body imports that were not imported: (name, file, digest) each
        self.unimported = tuple(walker.unimported)
        self.checked_at = time.monotonic()  # (those files' last check: see _check_imported)
        # Held by a value (see _in_value_digest): its digest there, the digests of the
        # data it read then, and the fresh look its contents were last checked at.
        self.in_value: str | None = None
        self.seen: dict[str, str | None] = {}
        self.looked = _fresh_looks
        # A class's: the data its methods read that can change in place, with its digest
        # then, checked at each use (see _class_data_hold)
        self.held: list[tuple[Any, str]] = []

    def still_valid(self, func: types.FunctionType) -> bool:
        if self.algorithm != hashers._ALGORITHM:
            return False
        # The function and every helper walked: same code, same defaults (by identity).
        for walked, code, defaults, kwdefaults in self.functions:
            walked = func if walked is None else walked
            if (walked.__code__ is not code or walked.__defaults__ is not defaults
                    or walked.__kwdefaults__ is not kwdefaults):
                return False
        for namespace, name, obj in self.deps:
            if namespace.get(name, _MISSING) is not obj:
                return False
        for members, count in self.shapes:  # a class given a member (one that shadows a
            if len(members) != count:  #       base's) or rid of one
                return False
        # Most functions have no closure: no generator made for them (this runs per key).
        return not self.cells or all(_cell_value(cell) is obj for cell, obj in self.cells)


class _Records:
    """Function -> its :class:`_CodeRecord`, by identity, forgotten with the function.

    A ``WeakKeyDictionary`` makes a weak reference on every lookup, which was a good part
    of a cached step's key; here a lookup is a dict hit on ``id(func)`` and one check
    that the weak reference stored still points at that very function.
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[int, tuple[weakref.ref[Any], _CodeRecord]] = {}

    def get(self, func: types.FunctionType) -> _CodeRecord | None:
        entry = self.entries.get(id(func))
        if entry is not None and entry[0]() is func:
            return entry[1]
        return None

    def put(self, func: types.FunctionType, record: _CodeRecord) -> None:
        entries, ident = self.entries, id(func)

        def forget(ref: weakref.ref[Any]) -> None:
            if entries.get(ident, (None,))[0] is ref:
                del entries[ident]

        entries[ident] = (weakref.ref(func, forget), record)

    def clear(self) -> None:
        self.entries.clear()

    def forget(self, func: types.FunctionType) -> None:
        self.entries.pop(id(func), None)

    def __getitem__(self, func: types.FunctionType) -> _CodeRecord:
        record = self.get(func)
        if record is None:
            raise KeyError(func)
        return record


_CODE_CACHE = _Records()


def code_digest(func: Callable[..., Any], *, values: bool = True) -> str:
    """Hex digest of what ``func`` does.

    The digest covers the function's normalized AST (comments, docstrings, decorators and
    formatting do not count), then transitively the code of the module-level functions
    and classes it refers to by global name, the values of the data it reads from
    globals, its closure variables by content (those it changes, by name), its classes'
    attributes, and its defaults. Modules count by name, builtins and objects from
    other modules by qualified name. Without source (a function built by ``exec``),
    its bytecode and constants count.

    The result is cached per function object and re-checked on each call by identity
    (a global rebound to another object, a helper redefined, a name defined later or a
    replaced ``__code__`` computes it again); the closure values and class attributes
    it hashed that can change in place are checked by content before a miss runs
    (:func:`changed_in_place`).

    A bound method's object, and a callable object itself, count by content (what the
    code works on: ``Scaler(3).apply`` is not ``Scaler(2).apply``).

    With ``values=False`` the data the function reads from globals (whatever its case
    or type: anything but modules, functions and classes) and the object of a method
    count by name only; the caller hashes :func:`global_values` itself, at the time it
    needs the digest.
    """
    if type(func) is types.FunctionType:  # the common case: no unwrapping to do
        record = _record(func)
        return record.digest if values else record.code_only
    if values and isinstance(func, partial) and not _binds_hashable(func):
        raise _unhashable_partial(func)
    target, extra = _unwrap(func)
    bound = _bound_object(func)
    if bound is not _MISSING:  # the class's code (its attributes, the methods `self.`
        #                        reaches) and, with values, the object's state
        parts = [extra or "", "class", _class_digest(bound if isinstance(bound, type)
                                                     else type(bound))]
        extra = _combine([*parts, "self", object_digest(bound)] if values else parts)
    if extra is not None:
        inner = (code_digest(target, values=values) if target is not func
                 else _combine(["callable", _reference(target)]))  # (a C method: d.get)
        return _combine([inner, extra])
    if not isinstance(target, types.FunctionType):
        made = _class_record(target) if isinstance(target, type) else None
        if made is not None:  # (a class of the user's code, called: what its code does)
            return _combine(["class", made.digest])
        return _combine(["callable", _reference(target)])
    record = _record(target)
    return record.digest if values else record.code_only


def global_values(func: Callable[..., Any]) -> dict[str, Any]:
    """The data ``func`` and its module-level helpers read from globals, name -> value now.

    Every global name the code loads counts, whatever its case or type, except
    modules, functions and classes (those count in :func:`code_digest` by their code or
    name). The values are looked up at each call, so a dict mutated in place or a name
    rebound is seen; hash them with :func:`value_digest`.
    """
    target, _ = _unwrap(func)
    own = _record(target) if isinstance(target, types.FunctionType) else None
    found = dict(_values_now(own.variables)) if own is not None else {}
    bound = _bound_object(func)
    if bound is not _MISSING:
        found["self"] = bound
        record = _class_record(bound if isinstance(bound, type) else type(bound))
        if record is not None and record.variables:  # (globals its other methods read)
            found = {**_values_now(_seen_from(own, record)), **found}
    elif isinstance(target, type):  # (a class called: the globals its methods read)
        record = _class_record(target)
        if record is not None and record.variables:
            found = _values_now(record.variables)
    if isinstance(func, partial):
        found.update(_unhashed_partial_values(func))
    return found


PARTIAL_LABEL = "partial:"
"""What :func:`global_values` labels an argument a ``functools.partial`` binds with,
before its parameter's name, when one of them cannot be hashed."""


def _binds_hashable(func: partial[Any]) -> bool:
    return _soft_digest((func.args, func.keywords)) is not None


def _unhashed_partial_values(func: partial[Any]) -> dict[str, Any]:
    """The arguments a partial (and a partial it wraps) binds, labelled, when one of
    them cannot be hashed (else none): its code digest without values leaves them out
    then, so they count as a method's object does, where the caller hashes the values
    (a step runs uncached, a cached function refuses them), never as one constant."""
    layers = []
    while isinstance(func, partial):
        layers.append(func)
        func = func.func
    if all(_binds_hashable(layer) for layer in layers):
        return {}
    found: dict[str, Any] = {}
    for layer in layers:
        for name, value in partial_arguments(layer).items():
            found.setdefault(f"{PARTIAL_LABEL}{name}", value)
    return found


def partial_arguments(func: partial[Any]) -> dict[str, Any]:
    """The arguments a ``functools.partial`` binds, by the parameter each fills (those
    ``**kwargs`` takes by their keyword); by position (``"0"``, ``"1"``...) where its
    function has no signature inspect reads."""
    try:
        signature = inspect.signature(func.func)
        bound = signature.bind_partial(*func.args, **func.keywords).arguments
    except (TypeError, ValueError):
        return {**{str(i): value for i, value in enumerate(func.args)}, **func.keywords}
    found: dict[str, Any] = {}
    for name, value in bound.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            found.update(value)
        else:
            found[name] = value
    return found


def _unhashable_partial(func: partial[Any]) -> FingerprintError:
    """The error for a partial whose bound arguments cannot be hashed, naming the first."""
    for name, value in partial_arguments(func).items():
        try:
            value_digest(value)
        except FingerprintError as exc:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            return FingerprintError(
                f"cannot fingerprint the argument {name!r} a functools.partial binds to "
                f"{_reference(func.func)} (a {kind!r}: {exc.__cause__ or exc}); bind plain "
                "data instead")
    return FingerprintError(
        f"cannot fingerprint the arguments a functools.partial binds to {_reference(func.func)}")


def _seen_from(own: _CodeRecord | None, walked: _CodeRecord) -> dict[str, Any]:
    """The globals another walk reads (a method's class's), labelled as ``own``'s walk
    labels them: those of its own module by name, another module's by module and name
    (a class whose inherited method is another module's: two ``params`` apart)."""
    home = walked.home
    if own is None or home is None or home is own.home or _one_module(home, own.home):
        return walked.variables
    module = main_spelled(home.get("__name__", "?"))
    return {(f"{module}.{label}" if where is home else label):
            (MemberView(home, label) if where is home else where)
            for label, where in walked.variables.items()}


def _one_module(home: dict[str, Any], other: dict[str, Any] | None) -> bool:
    """Whether two globals of ``__main__`` are one module's: cloudpickle gives each
    unpickling of a notebook's function a namespace of its own, and a worker's method
    sent again had another than its class, cached from the first (labelled apart, its
    key missed what this process stored)."""
    return (other is not None and home.get("__name__") == "__main__"
            and other.get("__name__") == "__main__")


def _bound_object(func: Any) -> Any:
    """The object a method is bound to, or a callable object itself (what its code works
    on); ``_MISSING`` for anything else."""
    if isinstance(func, types.MethodType):
        return func.__self__
    if isinstance(func, types.BuiltinMethodType) and not isinstance(
            func.__self__, (types.ModuleType, type(None))):
        return func.__self__  # (a C method of an object: d.get, an array's sum)
    if isinstance(func, partial):
        return _bound_object(func.func)
    if isinstance(inspect.getattr_static(type(func), "__call__", None), types.FunctionType):
        return func  # (a plain function's type has a C __call__)
    if (not isinstance(func, type) and getattr(func, "__qualname__", None) is None
            and _wrapped_function(func) is None):
        return func  # (a C class's instance, named by its class: operator.itemgetter(0))
    return _MISSING


# by id(): the class, its first function, its walk and the look it was last checked at
_CLASS_RECORDS: dict[int, tuple[weakref.ref[type], Any, _CodeRecord, int]] = {}
_CLASS_RECORDS_LIMIT = 1024  # a metaclass's __eq__ may say two classes are one, its
#                              __hash__ be missing; a record holds its class: bounded
# Fresh looks so far (a step's key at each run, a miss about to run): a class record
# made or checked before the latest checks its attributes' contents once more then
# (``Model.PARAMS["lr"] = 2``), as a function's record checks its closure's.
_fresh_looks = 0


def _class_digest(cls: type) -> str:
    """A class of the user's code by its code and values (walked once while they hold);
    one of a library or of Python by name."""
    record = _class_record(cls)
    return _reference(cls) if record is None else record.digest


def _class_record(cls: type, anyway: bool = False) -> _CodeRecord | None:
    """The walk of a class of the user's code, made again when it no longer holds; None
    for a class of a library or of Python (unless ``anyway``: one pickle cannot find)."""
    if not anyway and not _of_user(cls.__module__):
        return None
    found = _CLASS_RECORDS.get(id(cls))
    if (found is None or found[0]() is not cls or not found[2].still_valid(found[1])
            or (found[3] != _fresh_looks and not _class_contents_hold(cls, found))
            or (found[2].held and not _class_data_hold(cls, found[2]))):
        walker = _CodeWalker()
        try:
            with _deeper():
                walker.add_class(cls)
        except RecursionError:
            raise FingerprintError(
                f"the code class {cls.__qualname__} refers to goes too deep to fingerprint "
                "(classes and helpers referring on, hundreds of levels)") from None
        first = walker.functions[0][0] if walker.functions else None
        record = _CodeRecord(walker.h.hexdigest(), walker)
        if record.variables:  # (before it is stored: another thread may use it then)
            _note_class_data(cls, record)
        if len(_CLASS_RECORDS) >= _CLASS_RECORDS_LIMIT:
            _CLASS_RECORDS.clear()
        found = _CLASS_RECORDS[id(cls)] = (weakref.ref(cls), first, record, _fresh_looks)
        IMPORTED.check(record.imported)
    return found[2]


def _note_class_data(cls: type, record: _CodeRecord) -> None:
    """Record the data a class's methods read, as :func:`_note_data` does a function's
    (its digest inside a value, ``in_value``, counts it all by content), and keep those
    values that can change in place, to be hashed again at each use of the record: an
    argument ``Model()`` whose ``predict`` reads ``SETTINGS`` kept its first key after
    ``SETTINGS["k"] = 100`` (a stale hit, and a result stored under the old value)."""
    while_class_under_way(cls, partial(_note_data, record))
    seen = record.seen
    record.held = [(value, seen[label]) for label, value in _values_now(record.variables).items()
                   if seen.get(label) is not None and not isinstance(value, _SCALARS)]


def _class_data_hold(cls: type, record: _CodeRecord) -> bool:
    """Whether the data a class's methods read, that can change in place, still hashes
    as when its record was made (the very objects: ``still_valid`` checked that). Only
    a class whose methods read such data pays for this, at each use, as a function
    reading it does (its ``var:`` components); a dataclass reads none."""
    return while_class_under_way(cls, partial(_as_hashed, record.held))


def _class_contents_hold(cls: type, found: tuple[Any, ...]) -> bool:
    """Whether the attributes a class's record hashed by content are as they were (its
    record then counts as checked at the latest fresh look)."""
    if not _as_hashed(found[2].contents):
        return False
    _CLASS_RECORDS[id(cls)] = (*found[:3], _fresh_looks)
    return True


def _look_fresh() -> None:
    """Count a fresh look: each class record checks its contents again when next used."""
    global _fresh_looks
    _fresh_looks += 1


def object_digest(obj: Any) -> str:
    """The value digest of the object a method is bound to (or a callable object);
    FingerprintError saying how to cache such a method otherwise."""
    try:
        return value_digest(obj)
    except FingerprintError as exc:
        raise FingerprintError(
            f"cannot fingerprint the {type(obj).__qualname__} object whose method is "
            f"called ({exc.__cause__ or exc}); cache a function of the values it uses, "
            "give the class a __reduce__ that returns them, or (Memory) pass ignore=['self'] "
            "to key its calls on their arguments alone"
        ) from None


def code_with_values(func: Callable[..., Any], *, fresh: bool = False,
                     assumed: Mapping[str, Any] | None = None
                     ) -> tuple[str, Mapping[str, Any]]:
    """``(code_digest(func, values=False), global_values(func))``, checking once whether
    the cached record of ``func`` still holds (a step's key needs both). ``fresh``: the
    closure values and class attributes it hashed are checked too
    (:func:`changed_in_place`: a miss about to run, a step's key at each run).
    ``assumed``: values of globals its module does not define now, taken as defined
    (a plan: a notebook variable a step will publish before this one runs)."""
    if fresh:
        _look_fresh()
    if type(func) is types.FunctionType:
        if assumed:
            missing = {n: v for n, v in assumed.items() if n not in func.__globals__}
            if missing:
                return _assuming(func, missing)
        # _record and _Records.get, inline: every Memory hit passes here
        found = _CODE_CACHE.entries.get(id(func))
        record = found[1] if found is not None and found[0]() is func else None
        if record is None or not record.still_valid(func):
            record = _record(func)
        if fresh and record.contents and not _while_hashing(func, _contents_hold):
            _CODE_CACHE.forget(func)  # (changed in place since: hashed again)
            record = _record(func)
        if fresh and record.imported:  # (a helper's file edited since: said once)
            _check_imported(record)
        if _KEYED_BEFORE and record.imported:  # (a run imported a module its body does)
            return _keyed_before(record.code_only, _values_now(record.variables))
        return record.code_only, _values_now(record.variables) if record.variables else _NONE
    if fresh:
        changed_in_place(func)
    return code_digest(func, values=False), global_values(func)


# A record's helper files are checked again (a stat each) once this much has passed:
# the key is the record's whatever the check finds (the code that runs is the one it
# was made of), which only warns of an edit, and an edit comes seconds after the last
# run; a stat per key made a cached re-run of 1,000 steps 7% slower, a Memory hit 5%.
_RECHECK_S = 1.0


def _check_imported(record: _CodeRecord) -> None:
    now = time.monotonic()
    if now - record.checked_at >= _RECHECK_S:
        record.checked_at = now
        IMPORTED.check(record.imported)


_NONE: Mapping[str, Any] = types.MappingProxyType({})  # shared: most functions read no data


# Signatures by function, with the objects they were made of (Memory's binding).
_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], inspect.Signature]] = (
    weakref.WeakKeyDictionary()
)


def signature_of(func: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(func)``, made once per plain function while its code and
    defaults stay the same objects (each ``Memory(...).cache(func)`` asks again)."""
    if (type(func) is not types.FunctionType or "__wrapped__" in func.__dict__
            or "__signature__" in func.__dict__):
        return inspect.signature(func)
    made_of = (func.__code__, func.__defaults__, func.__kwdefaults__)
    found = _SIGNATURES.get(func)
    if found is None or any(a is not b for a, b in zip(found[0], made_of, strict=True)):
        found = _SIGNATURES[func] = (made_of, inspect.signature(func))
    return found[1]


def _values_now(variables: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, namespace in variables.items():
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:
            found[name] = value
    return found


def globals_read(func: Callable[..., Any]) -> frozenset[str]:
    """The globals of ``func``'s own module that its code or a helper's its digest covers
    reads as data (a notebook cell calling ``summarize()``, which sums ``rows``): the
    ``var:`` components of its key from that module. Empty for a callable without
    Python code; a global not defined now is not among them."""
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return frozenset()
    home = target.__globals__
    return frozenset(label for label, where in _record(target).variables.items()
                     if where is home)


def environ_read(func: Callable[..., Any]) -> tuple[str, ...]:
    """The environment variables the code of ``func`` and of the helpers its digest covers
    reads by a name written in it (``os.environ["REGION"]``, ``os.getenv("REGION")``),
    less those it sets: see :mod:`dagnb.fingerprint.environ`. Asked just after
    :func:`code_with_values` (a step's key), the record it checked is taken as it is."""
    if type(func) is types.FunctionType:
        found = _CODE_CACHE.entries.get(id(func))
        if found is not None and found[0]() is func:
            return found[1].environ
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return ()
    return _record(target).environ


def environ_unkeyed(func: Callable[..., Any]) -> frozenset[str]:
    """How the code of ``func`` (and of the helpers its digest covers) reads the
    environment in ways no key can name: :data:`~dagnb.fingerprint.environ.WHOLE`
    (``dict(os.environ)``, ``.items()``, a loop over it, ``env=os.environ.copy()``),
    :data:`~dagnb.fingerprint.environ.DYNAMIC` (``os.environ[name]``)."""
    if type(func) is types.FunctionType:  # (as environ_read: just after a key's check)
        found = _CODE_CACHE.entries.get(id(func))
        if found is not None and found[0]() is func:
            return found[1].environ_unkeyed
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return frozenset()
    return _record(target).environ_unkeyed


def missing_globals(func: Callable[..., Any]) -> list[str]:
    """Global names ``func``'s own code loads that are not defined now (nor builtins):
    a notebook cell that defines them has not run yet."""
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return []
    known = target.__globals__
    builtins_ = known.get("__builtins__", __builtins__)
    builtin_names = builtins_ if isinstance(builtins_, dict) else vars(builtins_)
    return sorted(name for name in loaded_globals(target.__code__)
                  if name not in known and name not in builtin_names)


def code_names(func: Callable[..., Any]) -> set[str]:
    """The names (globals, attributes, imports) used by the code of ``func`` and of the
    helpers its digest covers: ``"params"`` for a step that reads
    ``dagnb.current().params``, or a helper of its does. Empty for a callable without
    Python code."""
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return set()
    return {name for _, code, *_ in _record(target).functions for name in _code_names(code)}


def _record(target: types.FunctionType) -> _CodeRecord:
    record = _CODE_CACHE.get(target)
    if record is None or not record.still_valid(target):
        record = _while_hashing(target, _compute_record)
        _put_record(target, record)
    return record


def _put_record(target: types.FunctionType, record: _CodeRecord) -> None:
    _CODE_CACHE.put(target, record)
    if record.unimported:  # (see ran_here)
        _KEYED_UNIMPORTED.put(target, record)
    elif _KEYED_UNIMPORTED.entries:  # (keyed since with the modules imported: a run of
        _KEYED_UNIMPORTED.forget(target)  # it imported none, so stands for no key)


# function -> its latest record, if made while a project module its body imports was not
# imported yet
_KEYED_UNIMPORTED = _Records()


def keyed_before_imports(func: Callable[..., Any]) -> bool:
    """Whether ``func``'s latest key was made before a project module its body imports
    was imported (one dict's truth in the common case: none was)."""
    return bool(_KEYED_UNIMPORTED.entries) and type(func) is types.FunctionType and (
        _KEYED_UNIMPORTED.get(func) is not None)


def ran_here(func: Callable[..., Any]) -> None:
    """After ``func`` ran in this process: if its key was made before a project module
    its body imports was imported (by its file), and the run imported it from that very
    file, the key its code makes now stands for that one while the modules' data it
    reads is as now (:mod:`.first_imports`): its next key is a cache hit, not a miss."""
    if type(func) is not types.FunctionType or not keyed_before_imports(func):
        return
    before = _KEYED_UNIMPORTED.get(func)
    _KEYED_UNIMPORTED.forget(func)
    if before is None or not _imported_as_keyed(before.unimported):  # (another thread's)
        return
    now = _record(func)
    if now.code_only != before.code_only:
        first_imports.remember(now.code_only, before.code_only, tuple(before.variables),
                               _values_now(now.variables))


def _imported_as_keyed(unimported: tuple[tuple[str, str, str], ...]) -> bool:
    """Whether one of the modules was imported since, and each imported runs the text
    of the file its digest was made of."""
    imported = False
    for name, file, digest in unimported:
        module = sys.modules.get(name)
        if module is None:
            continue
        if (getattr(module, "__file__", None) != file or _file_content(file) != digest
                or IMPORTED.lines_run(module, file)[0]):
            return False
        imported = True
    return imported


def changed_in_place(func: Callable[..., Any]) -> bool:
    """Whether a closure value or class attribute ``func``'s digest hashed by content
    was changed in place since (``settings["k"] = 3``); its digest is then made again.

    Asked before a miss runs and stores its result (and by a step's key at each run),
    not at each hit: a result is never stored under what its inputs were before; a
    closure that is state the code keeps out of sight (an rng, a heap) costs a miss a
    new call, not one every call.
    """
    _look_fresh()  # (and the classes it reaches: their records check theirs when used)
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return False
    record = _CODE_CACHE.get(target)
    if record is None or not record.contents or _while_hashing(target, _contents_hold):
        return False
    _CODE_CACHE.forget(target)
    return True


def _contents_hold(target: types.FunctionType) -> bool:
    record = _CODE_CACHE[target]
    return _as_hashed(record.contents)


def _as_hashed(contents: list[tuple[Any, str]]) -> bool:
    """Whether the objects a record hashed by content (a closure's values, a class's
    attributes) still hash as they did then (none changed in place)."""
    return all(_soft_digest(obj) == digest for obj, digest in contents)


def _while_hashing(target: types.FunctionType, work: Callable[[types.FunctionType], Any]) -> Any:
    """``work(target)`` with ``target`` counted as under way: a value its code reads
    that holds it (``table["fact"] = fact``) counts it as recursive, rather than walk it
    again without end."""
    under_way = functions_under_way()
    if id(target) in under_way:
        return work(target)
    under_way.add(id(target))
    try:
        return work(target)
    finally:
        under_way.discard(id(target))


def code_source_parts(func: Callable[..., Any]) -> dict[str, str]:
    """The normalized source of ``func`` and of what it depends on, label -> text.

    Labels are ``"def <qualname>"`` for functions, ``"class <name>"`` and
    ``"const <name>"``; ``explain`` diffs these texts to show what changed.
    """
    target, _ = _unwrap(func)
    if not isinstance(target, types.FunctionType):
        return {"callable": _reference(target)}
    code_digest(target)
    return dict(_CODE_CACHE[target].parts)


def _unwrap(func: Any) -> tuple[Any, str | None]:
    """The plain function behind partials, methods and callable objects."""
    if isinstance(func, partial):
        bound = _soft_digest((func.args, func.keywords))
        # (bound arguments no hash takes count among global_values: this is no key)
        return func.func, _combine(["partial", bound or "unhashable-args"])
    if isinstance(func, types.MethodType):
        return func.__func__, None
    if isinstance(func, (types.FunctionType, types.BuiltinFunctionType, type)):
        return func, None
    call = inspect.getattr_static(type(func), "__call__", None)
    if isinstance(call, types.FunctionType):
        return call, _combine(["instance", _reference(type(func))])
    inner = _wrapped_function(func)
    if inner is not None and _of_user(getattr(inner, "__module__", None)):
        return _unwrap(inner)  # (by name, an edit of the user's code went unseen; a
    return func, None  #         library's, np.sum's dispatcher, counts by name)


def _wrapped_function(func: Any) -> Any:
    """What a wrapper made of C code runs: a staticmethod's or classmethod's function,
    what ``functools.cache`` or ``lru_cache`` wraps (its ``__wrapped__``, as
    ``functools.wraps`` sets it); None for any other callable."""
    if isinstance(func, (staticmethod, classmethod)):
        return func.__func__
    wrapped = inspect.getattr_static(func, "__wrapped__", None)
    return wrapped if callable(wrapped) and wrapped is not func else None


def _combine(parts: list[str]) -> str:
    h = new_hasher()
    for part in parts:
        h.update(b"%d:" % len(part))
        h.update(part.encode())
    return h.hexdigest()


_WALK_DEPTH = 10_000  # Python frames a walk may take: a package's classes refer to one
#                      another in chains hundreds long, six frames a step (a walk recurses
#                      through Python calls, which take no C stack before Python 3.12's
#                      own limit on C recursion, which this does not raise)


class _Deeper:
    """The recursion limit is the process's, not a thread's: raised while any thread
    walks, restored when the last one ends (a thread that restored it under another one
    still deep in its walk made the interpreter abort, not raise)."""

    lock = threading.Lock()
    walking = 0
    before = 0


@contextlib.contextmanager
def _deeper() -> Iterator[None]:
    """Let a walk recurse deeper than the default 1,000 frames, for its duration."""
    with _Deeper.lock:
        if _Deeper.walking == 0:
            _Deeper.before = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_Deeper.before, _WALK_DEPTH))
        _Deeper.walking += 1
    try:
        yield
    finally:
        with _Deeper.lock:
            _Deeper.walking -= 1
            if _Deeper.walking == 0:
                sys.setrecursionlimit(_Deeper.before)


def _assuming(func: types.FunctionType, assumed: Mapping[str, Any]
              ) -> tuple[str, Mapping[str, Any]]:
    """``code_with_values`` with the globals ``assumed`` defined: walked afresh, and not
    kept (it is not what the function reads now)."""
    record = _while_hashing(func, partial(_compute_record, assumed=assumed))
    read = {name: value for name, value in assumed.items() if name in record.variables}
    return _keyed_before(record.code_only, {**_values_now(record.variables), **read})


_KEYED_BEFORE = first_imports.KEYED_BEFORE  # (emptied, never replaced)


def _keyed_before(code: str, variables: dict[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The code digest and variables of a key: the one made before a run first imported
    the project modules the code reads, if it stands for it (:mod:`.first_imports`)."""
    return first_imports.keyed_before(code, variables) or (code, variables)


def _compute_record(func: types.FunctionType,
                    assumed: Mapping[str, Any] | None = None) -> _CodeRecord:
    walker = _CodeWalker(assumed)
    try:
        with _deeper():
            walker.add_function(func, f"def {func.__qualname__}")
    except RecursionError:
        raise FingerprintError(
            f"the code {func.__qualname__} refers to goes too deep to fingerprint (helpers "
            "calling helpers, hundreds of levels); leave the deepest out of its globals"
        ) from None
    record = _CodeRecord(walker.h.hexdigest(), walker)
    IMPORTED.check(record.imported)  # (a helper's file edited since its import: said once)
    return record


def source_table(func: Callable[..., Any]) -> dict[str, tuple[str, str]]:
    """What another process needs to hash ``func``'s code as this one does where the
    source is not to be found: the normalized source of the function and of each
    helper and class its digest walked, by :func:`_code_key` (exact bytecode); for a
    method, those of its object's class too, which its key counts."""
    target, _ = _unwrap(func)
    bound = _bound_object(func)
    owner = {} if bound is _MISSING else _class_table(
        bound if isinstance(bound, type) else type(bound))
    if not isinstance(target, types.FunctionType):
        return owner
    code_digest(target)
    record = _CODE_CACHE[target]
    if record.table is None:  # (the sources hashed then: the file may have changed since)
        record.table = {_code_key(target if obj is None else obj): source
                        for obj, source in record.sources}
    return {**owner, **record.table} if owner else record.table


def _class_table(cls: type) -> dict[str, tuple[str, str]]:
    """:func:`source_table` of a class of the user's code (its walk's sources)."""
    record = _class_record(cls)
    if record is None:
        return {}
    if record.table is None:
        first = _CLASS_RECORDS[id(cls)][1]  # (the walk's first function, kept as None)
        record.table = {_code_key(first if obj is None else obj): source
                        for obj, source in record.sources}
    return record.table




def _class_content_digest(cls: type) -> str:
    """A class inside a value (one pickle cannot find by name): by its code and values,
    as a method's class is (the same walk, kept while it holds)."""
    record = _class_record(cls, anyway=True)
    assert record is not None  # (anyway: never None)
    return record.in_value or record.digest


def _user_class_digest(cls: type) -> str | None:
    """A class of the user's code inside a value: by its code and values; None for a
    library's or Python's (pickled by name)."""
    record = _class_record(cls)
    return None if record is None else record.in_value or record.digest


def _in_value_digest(func: Any) -> str:
    """A function inside a value (``apply(df, transform)``, ``TRANSFORMS[name]``): counts
    as one called directly does, the data its globals hold taken now (a dict changed in
    place, which its record's digest held as it was when made), its closure's contents
    checked again at each fresh look (as the cached function's before a miss)."""
    if type(func) is not types.FunctionType:
        return code_digest(func)
    return _while_hashing(func, _held_digest)  # type: ignore[no-any-return]


def _held_digest(func: types.FunctionType) -> str:
    record = _CODE_CACHE.get(func)
    if record is None or not record.still_valid(func) or not _holds_in_value(record):
        record = _compute_record(func)  # (its data changed since: walked again, as a new
        _put_record(func, record)  #     process would, so the key is the one it makes)
        _note_data(record)
    return record.in_value  # type: ignore[return-value]


def _holds_in_value(record: _CodeRecord) -> bool:
    """Whether a function record's digest inside a value still holds: the closure values
    and class attributes it hashed (once a fresh look), and the data its globals hold."""
    if record.contents and record.looked != _fresh_looks:
        if not _as_hashed(record.contents):
            return False
        record.looked = _fresh_looks
    if not record.variables:  # (most helpers read no data: their digest is their code's)
        if record.in_value is None:
            _note_data(record)
        return True
    # (a record made for a cached function's own key has no data digests: walked again)
    return record.in_value is not None and _data_digests(record)[0] == record.seen


def _note_data(record: _CodeRecord) -> None:
    """Record the digests of the data ``record``'s walk read, just made, and its digest
    inside a value: the walk's, with the data it fed by name (a lower-case dict, an
    object) by content, as a cached function's key counts them."""
    record.seen, by_name = _data_digests(record)
    record.in_value = (_combine([record.digest, *(part for pair in by_name for part in pair)])
                       if by_name else record.digest)


def _data_digests(record: _CodeRecord
                  ) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
    """The digest of each global's data ``record``'s walk read, now (None: no hash takes
    it), and those of the data the walk fed by name only, sorted, each as it counts."""
    seen: dict[str, str | None] = {}
    by_name = []
    for label, value in _values_now(record.variables).items():
        digest = seen[label] = _soft_digest(value)
        # (by its label, as a global of another module's is fed: ``cfg.PARAMS`` a member
        # read was fed by content too, and counts twice rather than risk none)
        if not _is_constant(label, value):
            by_name.append((label, digest or _reference(type(value))))
    return seen, sorted(by_name)


user_class_digest = _user_class_digest  # (public: a result's output digest counts it)
values.use(_in_value_digest, _class_content_digest, _user_class_digest, _of_user)  # (values
#                                                           cannot import this module)
