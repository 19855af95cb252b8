"""The walk behind a code digest: a function (or a class) and, transitively, the helpers,
classes and constants its code refers to, fed into one hasher, with what a record needs
to notice later that any of them changed."""

from __future__ import annotations

import dis
import inspect
import re
import sys
import types
import warnings
import weakref
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from dagnb.checks import short_repr
from dagnb.fingerprint.environ import environ_names
from dagnb.fingerprint.hashers import new_hasher
from dagnb.fingerprint.members import (
    _class_functions,
    _class_members,
    _data_members,
    _held_code,
    _member_digest,
)
from dagnb.fingerprint.modules import (
    MemberView,
    body_imports,
    file_imports,
    file_of_unimported,
    imported,
)
from dagnb.fingerprint.names import _reference, main_spelled
from dagnb.fingerprint.paths import path_digest
from dagnb.fingerprint.sources import (
    _OWN,
    _bytecode_digest,
    _code_objects,
    _in_libraries,
    _normalized_source,
    _of_user,
    _source_of_code,
)
from dagnb.fingerprint.values import _soft_digest

_IMMUTABLE_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range)
_SCALARS = (int, float, complex, str, bytes, bool, type(None), range)
_MISSING = object()


# function -> the closure values it changes and reads, with their digests as first
# hashed: in this process only (not in its __dict__, which a pickle takes elsewhere)
_FIRST_HASHED: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, str]]] = (
    weakref.WeakKeyDictionary())


def _ipython_display(obj: Any) -> bool:
    """Whether ``obj`` is IPython's ``display()`` (not imported to ask)."""
    return (getattr(obj, "__name__", None) == "display"
            and getattr(obj, "__module__", None) == "IPython.core.display_functions")


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a name not assigned yet)
        return _MISSING


class _CodeWalker:
    """Feeds a function and, transitively, its helpers and constants into one hasher."""

    def __init__(self, assumed: Mapping[str, Any] | None = None) -> None:
        # globals of the first code's module taken as defined (code_with_values)
        self.assumed = assumed or {}
        self.h = new_hasher()
        self.h_code = new_hasher()  # the same, with global data by name only
        # global data read: label -> where (its module's globals, or a view of them for
        # a name of another module than the walk's first: two modules' ``params`` apart)
        self.variables: dict[str, Any] = {}
        self.home: dict[str, Any] | None = None  # the globals of the walk's first code
        # closure values and class attributes hashed by content that code may change in
        # place (value, its digest then): checked before a miss runs (code.changed_in_place)
        self.contents: list[tuple[Any, str]] = []
        self.seen: set[int] = set()
        self.deps: list[tuple[dict[str, Any], str, Any]] = []
        self.cells: list[tuple[Any, Any]] = []
        self.parts: dict[str, str] = {}
        self.functions: list[tuple[types.FunctionType | None, Any, Any, Any]] = []
        self.sources: list[tuple[Any, tuple[str, str]]] = []  # (function or class, source)
        self.shapes: list[tuple[Any, int]] = []  # (a class's __dict__, how many it held)
        self.modules: set[tuple[int, int]] = set()  # (module, code) whose members were read
        self.imported: dict[str, str] = {}  # the user's modules read, file -> name
        # the user's modules its body imports that were not imported yet, keyed by their
        # file: (name, file, its digest) (see :mod:`.first_imports`)
        self.unimported: list[tuple[str, str, str]] = []
        self.in_class = 0  # how deep in walks of classes' methods (and their helpers)
        # environment variables the code reads, and sets, by a name written in it
        self.environ_read: set[str] = set()
        self.environ_set: set[str] = set()
        self.environ_unkeyed: set[str] = set()  # reads no key can name (environ.WHOLE...)

    def feed(self, *texts: str, into: tuple[Any, ...] | None = None) -> None:
        for h in into or (self.h, self.h_code):
            for text in texts:
                data = text.encode("utf-8", "surrogatepass")
                h.update(b"%d:" % len(data))
                h.update(data)

    def add_function(self, func: types.FunctionType, label: str) -> None:
        func = _cached_by(func) or func
        if id(func.__code__) in self.seen:  # recursion, mutual recursion
            self.feed("recursive", func.__qualname__)
            return
        self.seen.add(id(func.__code__))
        self._note_module(func.__module__)
        if self.home is None:
            self.home = func.__globals__
        self.functions.append((func, func.__code__, func.__defaults__, func.__kwdefaults__))
        read, written, unkeyed = environ_names(func.__code__, func.__globals__)
        self.environ_read |= read
        self.environ_set |= written
        self.environ_unkeyed |= unkeyed
        normalized = _normalized_source(func)
        if normalized is None:
            self.feed("bytecode", _bytecode_digest(func.__code__, func.__doc__))
            self.parts[label] = f"<no source for {func.__qualname__}; bytecode hashed>"
        else:
            self.sources.append((func, normalized))
            self.feed("ast", normalized[0])
            self.parts[label] = normalized[1]
        if "__wrapped__" in func.__dict__ and not _made_by_dagnb(func):
            self._add_wrapper(func, label)  # (its source, found above, is the wrapped's)
        self._add_references(func)

    def _add_references(self, func: types.FunctionType) -> None:
        """What a function's code refers to: its defaults, closure and globals."""
        # (one no hash takes, a helper's ``out=sys.stdout``, counts as "?": as in every
        # key made so far; a function's own defaults are arguments to a cached call)
        defaults = (func.__defaults__, func.__kwdefaults__)
        digest = _soft_digest(defaults)
        self.feed("defaults", digest or "?")
        if digest is not None and _defaults_by_content(func):  # (changed in place since:
            self.contents.append((defaults, digest))  #           hashed again, at a key)
        loaded, changed, state_free, own_inputs, filled = _name_uses(func.__code__)
        # A global a class's method fills and reads (a memo): the class's state, by name
        # (by content, its objects' keys changed as it grew: every call missed)
        filled = filled if self.in_class else _NOTHING
        changed |= filled
        self._add_closure(func, state_free, own_inputs)
        self._add_body_imports(func)
        if func.__dict__:  # (most functions have no attributes: nothing more to do)
            self._add_attributes(func)
        read = loaded - changed
        for name in _code_names(func.__code__):
            if name not in loaded:  # an attribute's (``src.name``), an import's (``import
                continue  # json``), a global only set (``global last; last = x``)
            obj = func.__globals__.get(name, _MISSING)
            if obj is _MISSING and func.__globals__ is self.home:
                obj = self.assumed.get(name, _MISSING)
            if obj is _MISSING or _ipython_display(obj):
                # Remembered so that defining it later (a notebook cell) is noticed.
                # (IPython's display(), a builtin in a notebook, imported by the module of
                # a workflow saved from it: the same key both ways)
                self.deps.append((func.__globals__, name, obj))
            elif name in changed and not _is_code(obj):
                # its state (``RUNS.append(x)``), whatever its name's case: by name, or
                # another function appending to it too would change this one's key
                self.deps.append((func.__globals__, name, obj))
                self.feed("state", name)
                if name in filled:
                    _say_class_state(func, name)
            else:
                self.add_global(name, obj, func, read=name in read)

    def _add_attributes(self, func: types.FunctionType) -> None:
        """A function's own attributes (``f.rate``, set by a decorator's argument,
        ``@tagged(0.5)``, or by ``helper.rate = 0.7``): as a module's members its code
        reads count (code by its code, data by value at each run)."""
        names = _own_attributes(func)
        if not names or _in_libraries(func.__code__.co_filename):  # (a library's wrapper
            return  # under the function's name, functools.wraps': its machinery, its state)
        members = func.__dict__
        self.shapes.append((members, len(members)))  # (one set later: walked again)
        owner = f"{main_spelled(func.__module__)}.{func.__qualname__}"
        for name in names:
            label = f"{owner}.{name}"
            self.feed("attribute", label)
            self._add_member(members, name, members[name], label, func)

    def _add_wrapper(self, func: types.FunctionType, label: str) -> None:
        """The code of a decorator's wrapper (``functools.wraps``): what it does counts
        as the function it wraps does (dagnb's own, a cached function's, by name)."""
        own = _source_of_code(func.__code__)
        if own is None:
            self.feed("wrapper", _bytecode_digest(func.__code__, None))
        else:
            self.feed("wrapper", own[0])
            self.parts[f"wrapper of {label}"] = own[1]

    def _add_closure(self, func: types.FunctionType, state: set[str],
                     own_inputs: set[str]) -> None:
        """Its free variables; ``state``: those its code only changes (in place, or by
        ``nonlocal``); ``own_inputs``: those it changes in place and reads otherwise too
        (``make(df)`` normalizing ``df``): inputs by content as first hashed, whose own
        changes are not looked for again (they would make every call miss)."""
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=True):
            if name in state:  # (a list it appends to, a count it keeps):
                self.feed("state", name)  # by name, whatever it holds now
                continue
            obj = _cell_value(cell)
            self.cells.append((cell, obj))
            if obj is _MISSING or _is_code(obj):
                if obj is not _MISSING:
                    self.add_object(name, obj, func)
                continue
            # make({"k": 2}), make(Settings(2)): an input, by content as it is when
            # the function is first hashed in this process (not at each call: a closure
            # is as often state the code keeps, an rng, a heap, a Counter, out of sight)
            self.feed("name", name)
            if name in own_inputs:
                self.feed("closure", self._first_digest(func, name, obj))
            else:
                self.feed("closure", self._closure_digest(func, name, obj))

    def _first_digest(self, func: types.FunctionType, name: str, obj: Any) -> str:
        """The digest of a closure value the function changes and reads, as the function
        first had it hashed: hashed again (a global it reads replaced), a memo it filled
        since would change its key, and run it once more for nothing."""
        first = _FIRST_HASHED.get(func)
        if first is None:
            first = _FIRST_HASHED[func] = {}
        found = first.get(name)
        if found is None or found[0] is not obj:  # (the same cell, another object: anew)
            found = first[name] = (obj, self._closure_digest(func, name, obj, keep=False))
        return found[1]

    def _closure_digest(self, func: types.FunctionType, name: str, obj: Any,
                        keep: bool = True) -> str:
        """A closure value's digest; one no hash takes (a lock, a connection) by its type,
        said once (a change to it is not seen)."""
        digest = _soft_digest(obj)
        if digest is None:
            _warn_at(func, f"{func.__qualname__}: closure variable {name!r} "
                     f"({type(obj).__qualname__}) cannot be hashed; it counts by its type "
                     "only, so a change to it is not seen (pass what the function needs of "
                     "it as an argument)")
            return _reference(type(obj))
        if keep:
            self._keep(obj, digest)
        return digest

    def _keep(self, obj: Any, digest: str) -> None:
        if not isinstance(obj, _SCALARS):  # (a number or a text cannot change)
            self.contents.append((obj, digest))

    def add_global(self, name: str, obj: Any, owner: types.FunctionType, *,
                   read: bool = False) -> None:
        self.deps.append((owner.__globals__, name, obj))
        unhashed = _binds_unhashable(obj, owner.__module__)
        if read and (not _is_code(obj) or unhashed):
            if self.home is None:
                self.home = owner.__globals__
            where: Any = owner.__globals__
            label = name
            if where is not self.home:  # (another module's global of that name: apart)
                label = f"{main_spelled(where.get('__name__', owner.__module__))}.{name}"
                where = MemberView(where, name)
            self.variables.setdefault(label, where)
            self.feed("var", label, into=(self.h_code,))
            self.add_object(label, obj, owner, into=(self.h,))
            if unhashed:  # (data, read at each call, as a Client(...) global is; its
                self.add_object(name, _bound_function(obj), owner)  # code counts too)
        else:
            self.add_object(name, obj, owner)

    def add_object(self, name: str, obj: Any, owner: types.FunctionType, *,
                   into: tuple[Any, ...] | None = None) -> None:
        if into is not None:  # data read from globals: its value goes to ``h`` only
            self.feed("name", name, into=into)
            self._add_data(name, obj, into)
            return
        self.feed("name", name)
        if isinstance(obj, types.ModuleType):
            self.feed("module", obj.__name__)
            if _of_user(obj.__name__):
                self._add_module_members(obj, owner)
        elif isinstance(obj, types.FunctionType) and _by_code(obj, owner.__module__):
            self.add_function(obj, f"def {obj.__qualname__}")
        elif isinstance(obj, type) and _by_code(obj, owner.__module__):
            self.add_class(obj)
        elif isinstance(obj, partial):  # (its function's code, and its arguments)
            self.add_object(name, obj.func, owner)
            self.feed("args", _soft_digest((obj.args, obj.keywords)) or self._by_type(
                f"{name!r} (a functools.partial)", (*obj.args, *obj.keywords.values()), owner))
        elif (isinstance(obj, types.MethodType) and isinstance(obj.__func__, types.FunctionType)
              and _by_code(obj.__func__, owner.__module__)):  # (make(Scaler(2).apply): its
            self.add_object(name, obj.__func__, owner)  # code and its object; a library's
            self.feed("self", _soft_digest(obj.__self__) or self._by_type(  # by name)
                f"{name!r} (a bound method)", (obj.__self__,), owner))
        elif isinstance(held := _held_code(obj), types.FunctionType) and _by_code(
                held, owner.__module__):  # (an lru_cache's function: the one it wraps)
            self.add_function(held, f"def {held.__qualname__}")
        else:
            self._add_data(name, obj, None)

    def _by_type(self, what: str, bound: tuple[Any, ...], owner: types.FunctionType) -> str:
        """What a partial binds, or a method's object, where one cannot be hashed (one a
        closure holds, a default): each by content, or by its type with a warning (a
        change to it is not seen), as a closure's value is; never one constant for all."""
        digests = [_soft_digest(value) for value in bound]
        bad = next((v for v, digest in zip(bound, digests, strict=True) if digest is None),
                   bound[0])
        code = owner.__code__  # (the warning points at the function, not at the walk)
        warnings.warn_explicit(
            f"{owner.__qualname__}: {what} holds a {type(bad).__qualname__} that "
            "cannot be hashed; it counts by its type only, so a change to it is not seen "
            "(pass what the function needs of it as an argument)",
            UserWarning, code.co_filename, code.co_firstlineno, module=owner.__module__)
        return "".join(digest or _reference(type(value))
                       for value, digest in zip(bound, digests, strict=True))

    def _add_module_members(self, module: types.ModuleType, owner: types.FunctionType) -> None:
        """What code reads of a module of the user's (``features.make(1)``,
        ``settings.RATE``, ``pkg.sub.make``): the members its names name (an attribute
        of something else that shares one only makes the key more specific)."""
        if (id(module), id(owner.__code__)) in self.modules:
            return
        self.modules.add((id(module), id(owner.__code__)))
        self._note_module(module.__name__)
        members = vars(module)
        for attribute in _member_names(owner.__code__):
            value = members.get(attribute, _MISSING)
            if value is _MISSING:
                continue
            label = f"{module.__name__}.{attribute}"
            self.feed("member", label)
            self._add_member(members, attribute, value, label, owner)

    def _add_member(self, members: dict[str, Any], attribute: str, value: Any, label: str,
                    owner: types.FunctionType) -> None:
        """A module's member ``owner``'s code reads, or an attribute of ``owner``'s own."""
        self.deps.append((members, attribute, value))
        unhashed = _binds_unhashable(value, owner.__module__)
        if isinstance(value, types.ModuleType):
            if _of_user(value.__name__):  # (import pkg.sub; pkg.sub.make(x))
                self._add_module_members(value, owner)
        elif isinstance(value, partial) and not unhashed:  # (its function's code, and
            self.add_object(label, value, owner)  #              its arguments)
        elif _is_code(value) and not unhashed:  # (an lru_cache's function: the one it wraps)
            self.add_object(label, _held_code(value) or value, owner)
        else:  # data: read afresh at each run by a step, as its globals are
            self.variables.setdefault(label, MemberView(members, attribute))
            self.feed("var", label, into=(self.h_code,))
            self._add_data(attribute, value, (self.h,))
            if unhashed:  # (a partial or method over a Client(...): its code counts too)
                self.add_object(label, _bound_function(value), owner)
            elif _of_user(type(value).__module__):  # (an instance: its class's code)
                self.add_object(label, type(value), owner)

    def _note_module(self, name: Any) -> None:
        """Note a module of the user's whose code or data the walk reads: its file is
        checked against the text it was imported from (:mod:`.imported`)."""
        if type(name) is not str:  # (a class may say anything)
            return
        file = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(file, str) and file.endswith(".py") and not _in_libraries(file):
            self.imported[file] = name

    def _add_body_imports(self, func: types.FunctionType) -> None:
        """The user's modules the function imports in its body: their members it names
        if imported already, else their file as it is (the import will load it)."""
        package = func.__globals__.get("__package__")
        for name in body_imports(func.__code__, package):
            module = imported(name)
            if module is not None:
                top = imported(name.partition(".")[0])
                for reached in dict.fromkeys([top, module]):  # (in this order: a set's
                    if reached is not None and _of_user(reached.__name__):  # is by id)
                        self._add_module_members(reached, func)
                continue
            file = file_of_unimported(name)
            if file is not None and not _in_libraries(file):
                digest = _file_content(file)
                self.feed("imports", name, digest)
                for other, other_file in _brought_in(name, file):  # (its import runs them)
                    self.feed("brings", other, _file_content(other_file))
                self.unimported.append((name, file, digest))
                self.deps.append((sys.modules, name, _MISSING))  # (imported: by its members)

    def _add_methods(self, cls: type, normalized: tuple[str, str] | None) -> None:
        """A class's source (or, none found, its functions' code) and what its methods
        refer to."""
        if normalized is not None:
            self.sources.append((cls, normalized))
            self.feed("class", normalized[0])
            self.parts[f"class {cls.__qualname__}"] = normalized[1]
            for function in _class_functions(cls):  # (the helpers its methods call)
                if id(function.__code__) not in self.seen:
                    self.seen.add(id(function.__code__))
                    self.functions.append((function, function.__code__,
                                           function.__defaults__, function.__kwdefaults__))
                    self._add_references(function)
        else:  # no source (a notebook's class): its functions' code instead
            self.feed("class", _reference(cls))
            for function in _class_functions(cls):
                self.add_function(function, f"def {function.__qualname__}")

    def _add_data(self, name: str, obj: Any, into: tuple[Any, ...] | None) -> None:
        if _is_constant(name, obj):
            digest = _soft_digest(obj)
            self.feed("const", digest or _reference(obj), into=into)
            self.parts[f"const {name}"] = short_repr(obj, 300)
        else:  # builtins, library functions and classes, other objects: by name
            self.feed("ref", _reference(obj), into=into)

    def add_class(self, cls: type) -> None:
        if id(cls) in self.seen:
            self.feed("recursive", cls.__qualname__)
            return
        self.seen.add(id(cls))
        self._note_module(cls.__module__)
        normalized = _normalized_source(cls)
        self.in_class += 1
        try:
            self._add_methods(cls, normalized)
        finally:
            self.in_class -= 1
        for base in cls.__bases__:  # (a base of the module: by its code; others by name)
            if _by_code(base, cls.__module__):
                self.add_class(base)
            else:
                self.feed("base", _reference(base))
        meta = type(cls)  # (most classes' is type: nothing to walk)
        if meta is not type and _of_user(meta.__module__):  # a metaclass of the project's,
            self.add_class(meta)  # by its code as a base is; a library's (enum's, even
            #                       reached from enum's own classes) left out as ever
        for name, value in _class_members(cls):
            held = _held_code(value)
            if isinstance(held, type) and _by_code(held, cls.__module__):
                self.add_class(held)  # a class of its own
            elif held is not None and not isinstance(held, types.FunctionType):
                self.feed("holds", name, _member_digest(held))  # staticmethod(math.floor),
                #                                                 staticmethod(partial(...))
        # and its values as they are, whatever its source says (computed as the class
        # was made, or a notebook's class attribute edited and its cell run again)
        for name, value in _data_members(cls):
            digest = _member_digest(value)
            self.feed("attr", name, digest)
            if not digest.startswith("a "):  # (hashed, not named by its type)
                self._keep(value, digest)
        members = cls.__dict__  # (a member set again or replaced: walked again)
        self.deps.extend((members, name, value) for name, value in _class_members(cls))
        self.shapes.append((members, len(members)))


def _file_content(file: str) -> str:
    """A module's file by content (a module the body imports, not imported yet)."""
    try:
        return path_digest(file)
    except OSError:
        return "unreadable"


def _brought_in(name: str, file: str) -> list[tuple[str, str]]:
    """The project modules importing module ``name`` (from ``file``) may run, found in
    the texts without importing anything: its packages (``pkg`` of ``pkg.sub``), the
    modules its text imports (anywhere: at its top, in a function), theirs in turn;
    Python's and installed packages' left out. An imported one counts by its file too:
    a fresh process, where it is not, makes the same key."""
    found: dict[str, str] = {}
    seen = {file}
    todo = [(name, file, (name.rpartition(".")[0],) if "." in name else ())]
    while todo:
        current, current_file, parents = todo.pop()
        for other in (*parents, *file_imports(current_file, current)):
            if other in found or other == name:
                continue
            module = imported(other)
            other_file = (getattr(module, "__file__", None) if module is not None
                          else file_of_unimported(other))
            if not isinstance(other_file, str) or other_file in seen or _in_libraries(
                    other_file):
                continue
            seen.add(other_file)
            found[other] = other_file
            packages = (other.rpartition(".")[0],) if "." in other else ()
            todo.append((other, other_file, packages))
    return sorted(found.items())


def _defaults_by_content(func: types.FunctionType) -> bool:
    """Whether a function has a default that others can change in place: one its module
    holds under a name too (``weights=WEIGHTS``, a list), and that its code does not
    change itself. A default made in the ``def`` (``memo={}``, ``stats=Stats()``) is the
    function's own state, by its content as first hashed: counted again at each key,
    each call's change to it would make every key miss."""
    if not func.__defaults__ and not func.__kwdefaults__:  # (most functions: no look)
        return False
    code = func.__code__
    positional = code.co_varnames[:code.co_argcount]
    named = dict(zip(positional[len(positional) - len(func.__defaults__ or ()):],
                     func.__defaults__ or (), strict=True))
    named.update(func.__kwdefaults__ or {})
    changeable = {name: value for name, value in named.items() if not _unchangeable(value)}
    if not changeable:
        return False
    shared = {id(value) for value in func.__globals__.values()}  # (the module's objects)
    mutable = {name for name, value in changeable.items() if id(value) in shared}
    if not mutable:
        return False
    instructions = list(dis.get_instructions(code))
    return not any(instruction.opname.startswith("LOAD_FAST")
                   and instruction.argval in mutable and _changes(instructions, at)
                   for at, instruction in enumerate(instructions))


def _unchangeable(value: Any) -> bool:
    return isinstance(value, _SCALARS) or (
        type(value) in (tuple, frozenset) and all(isinstance(v, _SCALARS) for v in value))


def _by_code(obj: Any, module: str) -> bool:
    """Whether a function or class counts by its code: one of ``module`` (the code that
    refers to it), or of any module of the user's (a helper module of the project);
    Python's, an installed package's and dagnb's own count by name."""
    return obj.__module__ == module or _of_user(obj.__module__)


def _is_constant(name: str, obj: Any) -> bool:
    """Whether a referenced value counts by content.

    Immutable values and arrays/frames always do. A list, dict or set counts only under
    an UPPER_CASE name (PEP 8's constants, ``CONFIG = {...}``): a lower-case one is
    usually state the function updates (``calls.append(x)``), which must not change
    the key on every call.
    """
    if isinstance(obj, _IMMUTABLE_TYPES):
        return True
    if isinstance(obj, (list, dict, set)):
        return name.isupper()
    return type(obj).__module__.startswith(("numpy", "pandas"))


def _binds_unhashable(obj: Any, module: str) -> bool:
    """Whether ``obj`` is a partial, or a method of the user's code (``module``'s, the
    code that reads it), whose arguments or object no hash takes (a client holding a
    lock): read as data, by its type with a warning as a global ``Client(...)`` is,
    where keyed by its code alone another client's result was served. (A library's
    method counts by name, as ever: its object is not hashed.)"""
    if isinstance(obj, partial):
        return _soft_digest((obj.args, obj.keywords)) is None
    return (isinstance(obj, types.MethodType) and isinstance(obj.__func__, types.FunctionType)
            and _by_code(obj.__func__, module) and _soft_digest(obj.__self__) is None)


def _bound_function(obj: partial[Any] | types.MethodType) -> Any:
    """The function a partial or a bound method calls."""
    return obj.func if isinstance(obj, partial) else obj.__func__


_NOTHING: frozenset[str] = frozenset()
_SAID_STATE: set[tuple[str, str, str]] = set()  # (module, function, global) warned of


def _say_class_state(func: types.FunctionType, name: str) -> None:
    """Warn, once a process, that global ``name``, which a class's method (or a helper
    of one) fills and reads, counts by name: a change to it is not in any key."""
    said = (func.__module__, func.__qualname__, name)
    if said in _SAID_STATE:
        return
    _SAID_STATE.add(said)
    _warn_at(func, f"{func.__qualname__} changes global {name!r}, which it reads: it counts "
             "as the class's state, by name, not by content, so a change to it is not seen "
             "(pass what the method needs of it as an argument)")


def _warn_at(func: types.FunctionType, message: str) -> None:
    """A UserWarning pointing at ``func``'s first line, not at the walk."""
    code = func.__code__
    warnings.warn_explicit(message, UserWarning, code.co_filename, code.co_firstlineno,
                           module=func.__module__)


def _cached_by(func: types.FunctionType) -> types.FunctionType | None:
    """The function one of dagnb's own wrappers (a cached function) calls; None for any
    other function. What the wrapper does is what that function does; and every cached
    function's wrapper runs the same code, so walked as code, a second one was taken for
    recursion and its function's code left out of the key."""
    wrapped = func.__dict__.get("__wrapped__")
    if type(wrapped) is types.FunctionType and _made_by_dagnb(func):
        return wrapped
    return None


# The attribute dagnb's wrapper of a cached function holds its own code in: what tells
# it apart where its file does not (cloudpickle sends it by value, its code named
# "<dynamic-code>"), while a user's wrapper that ``functools.wraps`` copied the
# attribute onto has code of its own.
WRAPPER_MARK = "_dagnb_wrapper_code"


def _made_by_dagnb(func: types.FunctionType) -> bool:
    """Whether ``func`` is a wrapper dagnb made: marked so, or read from dagnb's files."""
    return (func.__dict__.get(WRAPPER_MARK) is func.__code__
            or func.__code__.co_filename.startswith(_OWN))


def _is_code(obj: Any) -> bool:
    """Modules, functions and classes (and partials of functions): what counts by code
    or name, not by content."""
    return isinstance(obj, (types.ModuleType, type, partial)) or inspect.isroutine(obj)


def _own_attributes(func: types.FunctionType) -> list[str]:
    """The attributes of a function that count in its key, sorted: not one Python or a
    library sets for its own use (``__wrapped__``, ``__signature__``), one dagnb sets
    (``_dagnb_cell_source``), nor one ``functools.wraps`` copied from the function
    wrapped (it counts there)."""
    members = func.__dict__
    wrapped = getattr(members.get("__wrapped__"), "__dict__", {})
    return sorted(name for name, value in members.items()
                  if not name.startswith("_dagnb_") and not _is_dunder(name)
                  and wrapped.get(name, _MISSING) is not value)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


# What reads a member by a name the code spells as text: ``getattr(features, "make")``,
# ``features.__dict__["make"]``, ``vars(features)["make"]``
_READS_BY_TEXT = frozenset({"getattr", "__dict__", "vars"})


def _member_names(code: types.CodeType) -> list[str]:
    """The names by which code may read a module's members: its names and, in code that
    reads members by text, its strings (a name made at run time is not to be seen)."""
    names = _code_names(code)
    texts = [text for nested in _code_objects(code)
             if not _READS_BY_TEXT.isdisjoint(nested.co_names)
             for text in _strings(nested.co_consts)]
    return list(dict.fromkeys(names + texts)) if texts else names


def _code_names(code: types.CodeType) -> list[str]:
    """The names in the code (and its nested code): globals, attributes and imports
    alike, in a stable order (the order the key is fed in)."""
    names: dict[str, None] = {}
    for nested in _code_objects(code):
        names.update(dict.fromkeys(nested.co_names))
    names.update(dict.fromkeys(sorted(_query_names(code))))
    return list(names)


# ``@name`` in a string, as pandas' query() and eval() read a variable of the caller's
# (``df.query("v > @cutoff")``); not an address's ``user@host``
_QUERY_NAME = re.compile(r"(?<![\w.@])@([A-Za-z_]\w*)")


def _query_names(code: types.CodeType) -> set[str]:
    """The names the code's strings read as pandas' ``query``/``eval`` do (``@cutoff``):
    a read the bytecode does not show, which the key must see all the same."""
    return {name for nested in _code_objects(code) for text in _strings(nested.co_consts)
            if "@" in text for name in _QUERY_NAME.findall(text)}


def _strings(consts: tuple[Any, ...]) -> Iterator[str]:
    """The strings among a code's constants, those of its folded tuples too."""
    for const in consts:
        if type(const) is str:
            yield const
        elif type(const) in (tuple, frozenset):
            yield from _strings(tuple(const))


_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})


# Methods that change the object they are called on (list, dict, set, deque)
_CHANGING = frozenset({
    "append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault",
    "popitem", "add", "discard", "sort", "reverse", "appendleft", "extendleft", "popleft",
})
_ATTRIBUTE_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_ITEM_CHANGES = frozenset({"STORE_SUBSCR", "DELETE_SUBSCR"})


def changed_globals(code: types.CodeType) -> set[str]:
    """The globals the code (and its nested code) changes in place and reads for that
    alone: ``calls.append(x)``, ``memo[x] = y``, ``stats["calls"] += 1``, ``counter.n +=
    1``. What a function changes so is its state, not its input: keyed by its value,
    every call would miss (a key or two loaded between: ``memo[x] = y`` only). One it
    reads otherwise too (``df["p"] /= df["p"].max()``) is its input."""
    return global_uses(code)[1]


def loaded_globals(code: types.CodeType) -> set[str]:
    """The names the code (and its nested code) loads as globals: not attribute names."""
    return global_uses(code)[0]


def global_uses(code: types.CodeType) -> tuple[set[str], set[str]]:
    """:func:`loaded_globals` and :func:`changed_globals`, in one pass."""
    loaded, changed, _, _, _ = _name_uses(code)
    return loaded, changed


_FREE_LOADS = frozenset({"LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_DEREF"})
_FREE_STORES = frozenset({"STORE_DEREF", "DELETE_DEREF"})


def _name_uses(code: types.CodeType
               ) -> tuple[set[str], set[str], set[str], set[str], set[str]]:
    """The globals loaded, the globals changed in place and not read otherwise (the
    function's state: ``calls.append(x)``; ``df["p"] /= df["p"].max()`` reads ``df``,
    its input, whose value must stay in the key), the free variables that are state the
    same way (or set by ``nonlocal``) and those changed in place and read otherwise
    too, and the globals changed in place and read otherwise too (a memo filled and
    read): one pass over the bytecode."""
    loaded: set[str] = set()
    changed: set[str] = set()
    read_too: set[str] = set()
    changed_free: set[str] = set()
    read_free: set[str] = set()
    set_free: set[str] = set()  # by ``nonlocal``: state, read or not (a count it keeps)
    for nested in _code_objects(code):
        instructions = list(dis.get_instructions(nested))
        free = set(nested.co_freevars)
        for at, instruction in enumerate(instructions):
            if instruction.opname in _FREE_STORES and instruction.argval in free:
                set_free.add(instruction.argval)
                continue
            is_global = instruction.opname in _GLOBAL_LOADS
            if not is_global and instruction.opname not in _FREE_LOADS:
                continue
            if is_global:
                loaded.add(instruction.argval)
            if _changes(instructions, at):
                (changed if is_global else changed_free).add(instruction.argval)
            else:
                (read_too if is_global else read_free).add(instruction.argval)
    queried = _query_names(code)  # (read by pandas from the caller's frame: inputs)
    loaded |= queried
    read_too |= queried
    state_free = (changed_free - read_free) | set_free
    return (loaded, changed - read_too, state_free, (changed_free & read_free) - set_free,
            changed & read_too)


def _changes(instructions: list[dis.Instruction], at: int) -> bool:
    """Whether the name loaded at ``at`` is loaded to be changed in place."""
    after = instructions[at + 1:at + 2]
    return bool(after and after[0].opname in _ATTRIBUTE_LOADS
                and after[0].argval in _CHANGING) or (
        _stores_item(instructions, at + 1)) or _augments(instructions, at + 1)


def _stores_item(instructions: list[dis.Instruction], start: int) -> bool:
    """Whether the object loaded just before ``start`` (or an attribute of it) has an
    item set or deleted, whatever its key's expression: ``memo[x] = y``, and a method's
    ``memo[self.side] = y``, ``memo[a, b] = y``, which read as the memo's only input
    (every object's key changed as it grew). Between the object and the store:
    instructions with no jump that leave one value, the key, above it."""
    depth = 0  # values pushed above the object (or its attribute reached)
    for at in range(start, min(start + _LONGEST_TARGET, len(instructions))):
        instruction = instructions[at]
        if instruction.opname in _NEUTRAL:
            continue
        if depth == 1 and instruction.opname in _ITEM_CHANGES:
            return True
        effect = _effect(instruction)
        if effect is None:
            return False
        if depth + effect <= 0 and not (
                depth == 0 and effect == 0 and instruction.opname == "LOAD_ATTR"):
            return False  # (the object taken: read, called, looked up in)
        depth += effect
    return False


def _effect(instruction: dis.Instruction) -> int | None:
    """How many values ``instruction`` leaves on the stack more than it takes; None for
    one that jumps, or whose effect dis cannot tell."""
    if instruction.opcode in _JUMPS:
        return None
    try:
        return dis.stack_effect(instruction.opcode, instruction.arg, jump=False)
    except ValueError:
        return None


# An augmented assignment copies its target's object (and key) to read the old value
# before storing the new one: DUP_TOP / DUP_TOP_TWO up to 3.10, COPY from 3.11 on.
_COPY_THEN_ATTRIBUTE = (("DUP_TOP", "LOAD_ATTR"), ("COPY 1", "LOAD_ATTR"))
_COPY_THEN_ITEM = (("DUP_TOP_TWO", "BINARY_SUBSCR"), ("COPY 2", "COPY 2", "BINARY_SUBSCR"))
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_NEUTRAL = frozenset({"EXTENDED_ARG", "NOP"})  # (a big function's long arguments)
_LONGEST_TARGET = 12  # instructions from the object: ``stats[x, "k"] += 1`` takes 4


def _augments(instructions: list[dis.Instruction], start: int) -> bool:
    """Whether the object loaded just before ``start`` is the target of an augmented
    assignment to an attribute or an item of it, or of an attribute or item it holds
    (``counter.n += 1``, ``stats["calls"] += 1``, ``tally[x, "k"] += 1``,
    ``stats["by_city"][city] += 1``). Between the object and the copy: attributes
    (``LOAD_ATTR``), and keys (instructions with no jump that push one value) each
    followed by ``BINARY_SUBSCR``; anything else takes the object elsewhere."""
    depth = 0  # values pushed above the object (or its attribute or item reached)
    for at in range(start, min(start + _LONGEST_TARGET, len(instructions))):
        if _copies(instructions[at:at + 3], _COPY_THEN_ITEM if depth == 1
                   else _COPY_THEN_ATTRIBUTE if depth == 0 else ()):
            return True
        instruction = instructions[at]
        if instruction.opname in _NEUTRAL:
            continue
        effect = _effect(instruction)
        if effect is None:
            return False
        if depth + effect > 0:
            depth += effect  # (a key)
        elif not (depth == 1 and instruction.opname == "BINARY_SUBSCR") and not (
                depth == 0 and effect == 0 and instruction.opname == "LOAD_ATTR"):
            return False
        else:
            depth = 0  # an item or attribute of the object: what is changed in place
    return False


def _copies(following: list[dis.Instruction], patterns: tuple[tuple[str, ...], ...]) -> bool:
    """Whether ``following`` starts with one of ``patterns`` (a COPY spelled with its
    argument)."""
    spelled = tuple(f"COPY {instruction.arg}" if instruction.opname == "COPY"
                    else instruction.opname for instruction in following)
    return any(spelled[:len(pattern)] == pattern for pattern in patterns)


def changed_inputs(code: types.CodeType) -> set[str]:
    """The globals the code changes in place and reads otherwise too (``df['r'] =
    df['a'] * 2``; ``results.append(x)`` then ``max(results)``): what it works on,
    where one it only changes (``log.append(x)``) is state it keeps."""
    changed: set[str] = set()
    read: set[str] = set()
    for nested in _code_objects(code):
        instructions = list(dis.get_instructions(nested))
        for at, instruction in enumerate(instructions):
            if instruction.opname in _GLOBAL_LOADS:
                found = changed if _changes(instructions, at) else read
                found.add(instruction.argval)
    return changed & read
