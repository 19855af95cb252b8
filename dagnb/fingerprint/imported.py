"""The text each of the user's imported modules was loaded from, while its file changes.

A module edited on disk and not reloaded (no ``importlib.reload``, no autoreload) runs
the code it was imported with. Keyed by the file's new text, that code's result would be
stored where the new code's belongs, and served once a restart runs the new code; and a
dask worker, which imports the module from text sent along, or a container, sent a
step's functions as text, would run the new code under the old code's key. So the first
time dagnb reads a module of the user's, it keeps the module's text, if that text still
compiles to the module's functions (:mod:`.loaded`; an import hook's code, such as
pytest's rewritten asserts, no text compiles to: there the file's text is taken). A file
changed since (another size, time or inode, then another text) is *stale*: keys read
that kept text, a dask worker or a container is sent it, and one warning names the
module and the fix. A reload (the module gets another ``__spec__``) takes the file as
it is then.

A module whose file had already changed when dagnb first read it has no text to keep:
it is warned of too, its functions count by their bytecode (:mod:`.sources`), and a dask
or container step using it is refused (:mod:`dagnb.executors.shipped`,
:mod:`dagnb.executors.dagger.shim`): no text of the code it runs is to be had, and its
namespace sent instead would carry what its top level made.
Checking a module costs one ``stat`` while its file is unchanged.

A text compiling to the module's functions may still not hold its values: ``FACTOR = 10``
set to 1000 in the file before dagnb first read it, or ``helpers.FACTOR = 5`` set at run
time. The key counts the value the module holds; a worker importing the text would run
with the text's. So before a text is sent (:meth:`ImportedSources.unlike_its_text`), the
names it sets once to a literal are compared with the module's values, and a step
reaching one that differs is refused in one line naming it (the two causes cannot be
told apart, and neither changes what runs here: keys and warnings are as they were).
So is one whose function or class (an undecorated ``def`` or ``class`` of its text) was
rebound (``feats.clean = better_clean``), and one whose class or function attribute
differs from its text's literal (``Config.lr = 0.5``) or is one its text never sets
(``rate_fn.rate = 0.7``). Not covered: a value the text computes (``FACTOR = int("2")``)
set or changed in place at run time; telling would mean running the text here. Nor,
since the text itself may set them (a false refusal would stop a working pipeline):
any name of a text that calls ``globals()``; a name bound before a ``from x import *``
(a pure-Python fallback the import replaces); a class attribute bound twice in its body
or in an ``if``, ``for``, ``try`` or ``with`` there, annotated in a class with bases (a
NamedTuple's default), or held as a descriptor (a property); a function rebound to
another ``def`` of the same name in the same file (a function is told by its code, as
``functools.update_wrapper`` rewrites its names).
"""

from __future__ import annotations

import ast
import collections
import contextlib
import importlib.machinery
import io
import itertools
import linecache
import operator
import os
import sys
import types
from collections.abc import Iterable, Iterator
from typing import Any

from dagnb.checks import warn_user
from dagnb.fingerprint.loaded import loaded_from_file, same_program
from dagnb.fingerprint.members import _class_functions, _held_code

__all__ = ["IMPORTED", "ImportedSources", "constant_line", "rebound_line", "stale_line"]


class _Version:
    """A module as dagnb knows it: its spec when read (a reload makes another), its
    file's stat, the text its code runs (None: unknown), whether the file holds another
    text now (its lines then, and what the module's code and values were when that was
    decided: patched since, it is decided again), and whether that was said."""

    __slots__ = ("constants", "disk", "lines", "name", "signature", "source", "spec", "stale",
                 "stat", "warned", "watched")

    def __init__(self, module: types.ModuleType, stat: tuple[int, int, int],
                 source: bytes | None, lines: list[str] | None) -> None:
        self.name, self.spec, self.stat = module.__name__, module.__spec__, stat
        self.source, self.lines = source, lines
        self.stale, self.warned = source is None, False
        self.disk: tuple[bytes, list[str]] | None = None  # (the file's other text)
        self.signature: tuple[int, ...] = ()
        self.watched: tuple[str, ...] = ()  # (names the new text sets to literals)
        self.constants: _Constants | None = None  # (``source``'s: read when first sent)


class ImportedSources:
    """The :class:`_Version` of each module file the keys read, by file."""

    def __init__(self, limit: int = 1024) -> None:
        self.versions: dict[str, _Version] = {}
        self.limit = limit

    def check(self, modules: Iterable[tuple[str, str]]) -> None:
        """Warn once of each module of ``modules`` ((name, file) pairs) whose file holds
        another text than its code was made of: one ``stat`` a module if none changed."""
        for name, file in modules:
            version = self._version(name, file)
            if version is not None:
                _warn_once(version, file)

    def stale_lines(self, file: str) -> list[str] | None:
        """The lines ``file``'s module was imported from, if the file holds another text
        now (and the module was not reloaded since); else None."""
        version = self.versions.get(file)
        if version is not None:
            version = self._version(version.name, file)
        return version.lines if version is not None and version.stale else None

    def source_run(self, module: types.ModuleType, file: str) -> bytes | None:
        """The text ``module`` (loaded from ``file``) runs: its file's, or the one it was
        imported from if the file changed since (warned of); None if the file changed
        before dagnb first read it (that text is gone)."""
        version = self._version(module.__name__, file)
        if version is None:
            return _read(file)
        _warn_once(version, file)
        return version.source

    def lines_run(self, module: types.ModuleType, file: str) -> tuple[bool, list[str] | None]:
        """Whether ``module``'s file (``file``) holds another text than the module runs
        (warned of), and then the lines it runs: those it was imported from, None if the
        file changed before dagnb first read it (that text is gone). One ``stat`` while
        the file is unchanged."""
        version = self._version(module.__name__, file)
        if version is None or not version.stale:
            return False, None
        _warn_once(version, file)
        return True, version.lines

    def unlike_its_text(self, module: types.ModuleType, file: str,
                        source: bytes) -> str | None:
        """The line saying a name that ``source`` (the text :meth:`source_run` gave)
        sets once to a literal holds another value in ``module``, and the fix; None if
        none does. The text is parsed once; each call compares the values rebound since
        the last (:class:`_Constants`)."""
        version = self.versions.get(file)
        if version is None or version.source is not source or version.lines is None:
            return None  # (not a text kept here: a module not read, or a worker's)
        if version.constants is None:
            version.constants = _text_members(version.lines)
        members = vars(module)
        name = version.constants.unlike(members)
        if name is not None:
            literal = version.constants.literals[name]
            return constant_line(module.__name__, file, name, members[name], literal)
        name = version.constants.rebound(members, module.__name__, file)
        if name is not None:
            return rebound_line(module.__name__, file, name, members[name],
                                version.constants.defined[name])
        return version.constants.unlike_attribute(members, module.__name__, file)

    def _version(self, name: str, file: str) -> _Version | None:
        """The module's version: read now if first asked for or reloaded since, decided
        again if the file's stat changed (or, stale, the module's code or values did:
        autoreload patches functions in place); None if ``file`` is not the file of
        module ``name`` now."""
        module = sys.modules.get(name)
        if not isinstance(module, types.ModuleType) or getattr(module, "__file__", None) != file:
            return None
        if file in linecache.cache and linecache.cache[file][1] is None:
            return None  # (its text came with it, not from the file: shipped to a worker)
        version = self.versions.get(file)
        try:
            stat = _stat(file)
            if version is None or version.spec is not module.__spec__ or (
                    version.stat != stat and version.source is None):
                return self._first_read(module, file, stat)
            if version.stat != stat:
                _read_again(version, module, file, stat)
            elif version.stale and version.signature != _signature(module, file, version):
                _decide(version, module, file)
        except OSError:  # (gone or unreadable: what was read is all there is)
            pass
        return version

    def _first_read(self, module: types.ModuleType, file: str,
                    stat: tuple[int, int, int]) -> _Version:
        """The module's file read now, kept as its text if it compiles to the module's
        functions (else its text is unknown: it changed before)."""
        source = _read(file)
        lines = _lines(file, source)
        holds = _was_imported_from(module, file, lines)
        if len(self.versions) >= self.limit:
            self.versions.clear()
        version = _Version(module, stat, *((source, lines) if holds else (None, None)))
        self.versions[file] = version
        return version


class _Constants:
    """The names a kept text sets once to a literal (:func:`_constants`), and the objects
    the module held for those of immutable values when last found equal to them. Each
    send compared every value (a 1 MB module of 8,000 constants: 2 ms a send, each task
    of a step); the same immutable object is the same value, so a send compares only
    those rebound since, and the containers, which a module may fill in place.
    And the functions and classes it defines (:func:`_defined`), by name: "function" or
    "class"."""

    __slots__ = ("attributes", "bare_functions", "containers", "defined", "held",
                 "immutable", "literals", "stored")

    def __init__(self, literals: dict[str, Any], defined: dict[str, str],
                 attributes: dict[tuple[str, str], Any] | None = None,
                 stored: collections.Counter[str] | None = None,
                 bare_functions: tuple[str, ...] = ()) -> None:
        self.literals, self.defined = literals, defined
        self.attributes = attributes or {}  # ((class or function, attribute): literal)
        self.stored = stored or collections.Counter()  # (attribute names the text sets)
        self.bare_functions = bare_functions  # (those its top level does not hand on)
        self.immutable = tuple(name for name, value in literals.items() if _immutable(value))
        self.containers = {name: value for name, value in literals.items()
                           if not _immutable(value)}
        self.held: tuple[Any, ...] | None = None  # (the immutable ones' objects, if equal)

    def unlike(self, members: dict[str, Any]) -> str | None:
        """The first name whose value in ``members`` (a module's) is not its literal."""
        now = tuple(map(members.get, self.immutable, itertools.repeat(_ABSENT)))
        same = self.held is not None and all(map(operator.is_, now, self.held))
        checked = self.containers if same else self.literals
        for name, literal in checked.items():
            if name in members and not _equal(members[name], literal):
                self.held = None
                return name
        self.held = now
        return None

    def rebound(self, members: dict[str, Any], module: str, file: str) -> str | None:
        """The first function or class of the text that ``members`` (module ``module``'s,
        read from ``file``) holds as another object: ``feats.clean = better_clean``,
        which a worker importing the text would not run."""
        for name in self.defined:
            value = members.get(name, _ABSENT)
            if value is not _ABSENT and not _made_by_the_text(value, module, name, file):
                return name
        return None

    def unlike_attribute(self, members: dict[str, Any], module: str, file: str
                         ) -> str | None:
        """The line for the first attribute of a class or function of the text that
        holds another value than the text's literal (``Config.lr = 0.5`` where its class
        body says 0.1), or that the text never sets (``rate_fn.rate = 0.7``); None if
        none. Not an attribute the text's code sets as it runs (``cls.count += 1``)."""
        for (owner, attribute), literal in self.attributes.items():
            held = members.get(owner)
            setters = 1 if isinstance(held, types.FunctionType) else 0  # (``f.rate = 2``)
            if type(held) not in (type, types.FunctionType) or self.stored[attribute] > setters:
                continue  # (a metaclass's class, an Enum's, makes its own attributes)
            value = vars(held).get(attribute, _ABSENT)
            if value is not _ABSENT and not _descriptor(value) and not _equal(value, literal):
                return constant_line(module, file, f"{owner}.{attribute}", value, literal)
        for owner in self.bare_functions:
            held = members.get(owner)
            for attribute, value in vars(held).items() if type(held) is types.FunctionType else ():
                if not attribute.startswith("_") and not self.stored[attribute]:
                    return constant_line(module, file, f"{owner}.{attribute}", value, _UNSET)
        return None


def _made_by_the_text(value: Any, module: str, name: str, file: str) -> bool:
    """Whether ``value`` is the function or class that ``def name`` or ``class name`` at
    the top of module ``module``'s text (``file``) made (its code may have been patched
    in place, as autoreload does: the text sent is then the file's, which holds that
    code). A function by its code: ``functools.update_wrapper`` rewrites its names."""
    if isinstance(value, types.FunctionType):
        code = value.__code__
        return code.co_filename == file and code.co_name == name
    return (isinstance(value, type) and value.__module__ == module
            and value.__qualname__ == name)


def _descriptor(value: Any) -> bool:
    """Whether a class holds ``value`` as a descriptor (a NamedTuple's field getter made
    of its body's default, a property): not the body's value, nor what the class gives."""
    return hasattr(type(value), "__get__")


_ABSENT = object()  # (a name the module no longer holds)
_UNSET = object()  # (an attribute its text does not set)
_SCALARS = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))


def _immutable(value: Any) -> bool:
    """Whether ``value`` (a literal's) cannot change in place: a scalar, or a tuple of
    immutable values."""
    if type(value) is tuple:
        return all(map(_immutable, value))
    return type(value) in _SCALARS


def _warn_once(version: _Version, file: str) -> None:
    if version.stale and not version.warned:
        version.warned = True
        warn_user(f"dagnb: {stale_line(version.name, file)}")


def _read_again(version: _Version, module: types.ModuleType, file: str,
                stat: tuple[int, int, int]) -> None:
    """A known text's file whose stat changed: the same text, or another to decide on."""
    version.stat = stat
    source = _read(file)
    if source == version.source:  # (touched, or put back)
        version.stale, version.disk = False, None
        return
    version.disk = source, _lines(file, source)
    _decide(version, module, file)


def _decide(version: _Version, module: types.ModuleType, file: str) -> None:
    """Whether the module runs the file's other text (reloaded or patched, or both
    texts are one program: that text is the module's from now on), the one it was
    imported from (stale: said once), or neither (unknown: none to send a worker)."""
    if version.disk is None:
        return
    runs = _runs(module, file, version.lines, version.disk[1])
    if runs == "disk":
        (version.source, version.lines), version.disk = version.disk, None
        version.stale, version.constants = False, None
        return
    if not version.stale:
        version.warned = False  # (stale again since it was said: said again)
    version.stale = True
    if runs == "neither":
        version.source = version.lines = None
    version.watched = tuple(sorted(_literals(version.disk[1])))
    version.signature = _signature(module, file, version)


def _runs(module: types.ModuleType, file: str, kept: list[str] | None,
          disk: list[str]) -> str:
    """``"disk"`` if the module's code is the file's other text's (or both texts are one
    program), ``"kept"`` if it is the text it was imported from, else ``"neither"``.
    Functions that both texts compile alike do not tell: then the literal values the
    texts give differently do (autoreload re-runs a changed ``RATE = 2``)."""
    if kept is not None and same_program(kept, disk):
        return "disk"
    codes = list(_codes(module, file))
    on_disk = all(loaded_from_file(code, disk) for code in codes)
    as_kept = kept is not None and all(loaded_from_file(code, kept) for code in codes)
    if on_disk and (not as_kept or _holds_new_literals(module, kept, disk)):
        return "disk"
    return "kept" if as_kept else "neither"


def _holds_new_literals(module: types.ModuleType, kept: list[str] | None,
                        disk: list[str]) -> bool:
    """Whether the module holds the file's new values of the literals the two texts give
    differently (``RATE = 2`` where it was ``RATE = 1``), and none of the old ones."""
    old, new = _literals(kept or []), _literals(disk)
    members = vars(module)
    changed = [name for name in new if name in members and (
        name not in old or type(old[name]) is not type(new[name]) or old[name] != new[name])]
    return bool(changed) and all(_equal(members[name], new[name]) for name in changed)


def _equal(value: Any, literal: Any) -> bool:
    try:
        return type(value) is type(literal) and bool(value == literal)
    except Exception:  # (a value whose == raises or is no bool: an array)
        return False


def _literals(lines: list[str]) -> dict[str, Any]:
    """The module-level names a text sets to a literal (``RATE = 2``), with the value."""
    tree = _parsed(lines)
    return {} if tree is None else _literals_of(tree)


def _parsed(lines: list[str]) -> ast.Module | None:
    try:
        return ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None


def _literals_of(tree: ast.Module) -> dict[str, Any]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError,
                                     RecursionError):  # (not a literal)
                found[target.id] = ast.literal_eval(value)
    return found


def _text_members(lines: list[str]) -> _Constants:
    """What a kept text makes that its module must still hold for the text to run as
    the module does: its literal constants and its functions and classes."""
    tree = _parsed(lines)
    if tree is None or _calls_globals(tree):
        return _Constants({}, {})  # (``globals().update(...)`` may set any name)
    bound, used = _bindings(tree), _top_level_loads(tree)
    settled = _after_star_imports(tree)
    defined = _defined(settled, bound)
    # a function the top level hands on (``register(f)``) may get attributes there
    bare = tuple(name for name, kind in defined.items() if kind == "function" and not used[name])
    return _Constants(_constants(settled, bound, used), defined,
                      _attribute_literals(settled, defined), _stored_attributes(tree), bare)


def _calls_globals(tree: ast.Module) -> bool:
    """Whether the text calls ``globals()``, through which it may set any of its names."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id == "globals" for node in ast.walk(tree))


def _after_star_imports(tree: ast.Module) -> ast.Module:
    """The text's top-level statements after its last ``from x import *`` (in a ``try``
    too): a name bound before it may be replaced by it (a fast version of a fallback)."""
    last = max((index for index, node in enumerate(tree.body)
                if any(isinstance(child, ast.ImportFrom)
                       and any(alias.name == "*" for alias in child.names)
                       for child in ast.walk(node))), default=-1)
    return ast.Module(body=tree.body[last + 1:], type_ignores=[])


def _attribute_literals(tree: ast.Module, defined: dict[str, str]
                        ) -> dict[tuple[str, str], Any]:
    """The immutable literals a text gives the attributes of its classes (``lr = 0.1`` in
    a class body) and functions (``rate_fn.rate = 0.7`` at its top level)."""
    found: dict[tuple[str, str], Any] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in defined:
            found.update({(node.name, name): value
                          for name, value in _class_literals(node).items()})
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and defined.get(target.value.id) == "function"):
                with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError,
                                         RecursionError):  # (not a literal)
                    found[target.value.id, target.attr] = ast.literal_eval(node.value)
    return {key: value for key, value in found.items() if _immutable(value)}


def _class_literals(node: ast.ClassDef) -> dict[str, Any]:
    """The names a class body binds once, at its top, to a literal. Not an annotated one
    in a class with bases: a NamedTuple's, a TypedDict's, or a base's
    ``__init_subclass__``'s field, which the class may hold as another object."""
    bound = _class_bindings(node)
    if bound is None:
        return {}
    statements = [statement for statement in node.body
                  if not (node.bases or node.keywords) or not isinstance(statement, ast.AnnAssign)]
    literals = _literals_of(ast.Module(body=statements, type_ignores=[]))
    return {name: value for name, value in literals.items() if bound[name] == 1}


def _class_bindings(node: ast.ClassDef) -> collections.Counter[str] | None:
    """How many times a class body binds each name, in an ``if``, ``for``, ``try`` or
    ``with`` too (its functions' bodies left out: their names are their own); None if it
    calls ``locals()`` or ``vars()``, through which it may bind any."""
    bound: collections.Counter[str] = collections.Counter()
    pending: list[ast.AST] = list(node.body)
    while pending:
        child = pending.pop()
        if (isinstance(child, ast.Call) and isinstance(child.func, ast.Name)
                and child.func.id in ("locals", "vars") and not child.args):
            return None
        bound.update(_names_bound(child))
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pending += child.decorator_list
        elif not isinstance(child, ast.Lambda):
            pending += ast.iter_child_nodes(child)
    return bound


def _stored_attributes(tree: ast.Module) -> collections.Counter[str]:
    """How many times the text sets each attribute name (``x.name = ``, ``x.name += ``),
    on anything: code that sets it as it runs, here as on a worker."""
    return collections.Counter(
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load))


def _defined(tree: ast.Module, bound: collections.Counter[str]) -> dict[str, str]:
    """The functions and classes a text defines once at its top level, undecorated (a
    decorator may return another object), by name: "function" or "class"."""
    return {node.name: "class" if isinstance(node, ast.ClassDef) else "function"
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not node.decorator_list and bound[node.name] == 1}


def _constants(tree: ast.Module, bound: collections.Counter[str],
               used: collections.Counter[str]) -> dict[str, Any]:
    """The names a text sets once, at its top level, to a literal, with the value: what
    its module holds unless set since. Not a name bound elsewhere in the text too (a
    second assignment, ``global``, a loop's target), nor a container that starts empty
    or that the top level uses further (``used``): its module fills it (a registry)."""
    return {name: value for name, value in _literals_of(tree).items()
            if bound[name] == 1 and not (
                isinstance(value, (list, dict, set)) and (not value or used[name]))}


def _bindings(tree: ast.Module) -> collections.Counter[str]:
    """How many times the text binds each name, anywhere (``global`` counts twice)."""
    bound: collections.Counter[str] = collections.Counter()
    for node in ast.walk(tree):
        bound.update(_names_bound(node))
    return bound


def _names_bound(node: ast.AST) -> list[str]:
    """The names one node binds (``global`` and ``nonlocal`` twice)."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return [node.id]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return [*node.names, *node.names]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(alias.asname or alias.name).partition(".")[0] for alias in node.names]
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [node.name]
    return []


def _top_level_loads(tree: ast.Module) -> collections.Counter[str]:
    """The names the text's top level reads as it runs (functions' bodies left out;
    their decorators and defaults run then)."""
    used: collections.Counter[str] = collections.Counter()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending += [*node.decorator_list, *node.args.defaults,
                        *(default for default in node.args.kw_defaults if default)]
        elif not isinstance(node, ast.Lambda):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used[node.id] += 1
            pending += ast.iter_child_nodes(node)
    return used


def _signature(module: types.ModuleType, file: str, version: _Version) -> tuple[int, ...]:
    """What a patch of the module would change (autoreload's, in place): its functions'
    code and the values of the names its new text sets to literals, by identity."""
    members = vars(module)
    return (*map(id, _codes(module, file)), *(id(members.get(name)) for name in version.watched))


def stale_line(name: str, file: str, gone: bool = False) -> str:
    """The one line that says a module changed on disk since it was imported, and the
    fix; ``gone``: its imported code's text is not to be had."""
    shown = _shown_file(file)
    runs = ("the text of the imported code is gone" if gone
            else "the step runs the imported code")
    return (f"{shown} changed on disk since the kernel imported it; {runs}: restart, "
            f"importlib.reload({name}), or %load_ext autoreload / %autoreload 2")


def constant_line(name: str, file: str, constant: str, here: Any, there: Any) -> str:
    """The one line that says module ``name`` holds ``here`` where the text of ``file``
    to be sent sets ``constant`` to ``there``, and the fix."""
    shown = _shown_file(file)
    here_shown, there_shown = _shown_value(here), _shown_value(there)
    if there is _UNSET:
        there_shown = "not set"
    elif there_shown == here_shown:  # (two strings of one length)
        there_shown = f"another {type(there).__name__}"
    return (f"{name}.{constant} is {here_shown} here but {there_shown} in the text of "
            f"{shown} sent along (set since its import, or the file edited before dagnb "
            f"read it): pass it to the step as a parameter, or set it in {shown} and "
            f"importlib.reload({name})")


def rebound_line(name: str, file: str, member: str, here: Any, kind: str) -> str:
    """The one line that says module ``name`` holds ``here`` where the text of ``file``
    to be sent defines the function or class (``kind``) ``member``, and the fix."""
    shown = _shown_file(file)
    here_shown = (f"{here.__module__}.{here.__qualname__}"
                  if isinstance(here, (types.FunctionType, type)) else f"a {type(here).__name__}")
    return (f"{name}.{member} is {here_shown} here but the {kind} {member} in the text of "
            f"{shown} sent along (set since its import): put the new code in {shown} and "
            f"importlib.reload({name}), or run the step on executor='local'")


def _shown_value(value: Any) -> str:
    """A number, a bool or None as written; another value by its type and size: a string
    may be a secret, read from the environment."""
    if value is None or type(value) in (bool, int, float, complex):
        written = repr(value)
        if len(written) <= 40:
            return written
    try:
        size = len(value)
    except Exception:  # (no len(), or one that raises)
        return f"a {type(value).__name__}"
    unit = ("characters" if isinstance(value, str)
            else "bytes" if isinstance(value, (bytes, bytearray)) else "items")
    return f"a {type(value).__name__} of {size} {unit}"


def _shown_file(file: str) -> str:
    return os.path.relpath(file) if _under_cwd(file) else file


def _under_cwd(file: str) -> bool:
    try:
        return not os.path.relpath(file).startswith(os.pardir)
    except ValueError:  # (another drive)
        return False


def _stat(file: str) -> tuple[int, int, int]:
    found = os.stat(file)
    return found.st_mtime_ns, found.st_size, found.st_ino


def _read(file: str) -> bytes:
    with open(file, "rb") as handle:
        return handle.read()


def _was_imported_from(module: types.ModuleType, file: str, lines: list[str]) -> bool:
    """Whether the module was imported from this text of its file: its functions are
    what the text compiles to, or else an import hook made its code (pytest rewrites
    asserts), which no text compiles to: nothing says the file changed."""
    loader = getattr(module.__spec__, "loader", None)
    return not isinstance(loader, importlib.machinery.SourceFileLoader) or all(
        loaded_from_file(code, lines) for code in _codes(module, file))


def _lines(file: str, source: bytes) -> list[str]:
    """A module's text as ``linecache`` reads it (its encoding, newlines made ``\\n``,
    split at ``\\n`` only): linecache's own list if it holds that text (compiled once)."""
    import importlib.util

    lines = io.StringIO(importlib.util.decode_source(source)).readlines()
    cached = linecache.cache.get(file)
    return cached[2] if cached is not None and cached[2] == lines else lines


def _codes(module: types.ModuleType, file: str) -> Iterator[types.CodeType]:
    """The code of the module's functions and classes' functions that its file made."""
    for value in list(vars(module).values()):
        held = _held_code(value)  # (an lru_cache's function: the one it wraps)
        if not isinstance(held, (type, types.FunctionType)) or (
                held.__module__ != module.__name__):
            continue
        for function in _class_functions(held) if isinstance(held, type) else [held]:
            if function.__code__.co_filename == file:
                yield function.__code__


IMPORTED = ImportedSources()
