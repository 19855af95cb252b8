"""The key of code that imports a project module the process had not imported yet.

Importing a module at key time would run the user's code, so a module a function's body
imports that is not imported yet counts by its file; once imported, by the members the
code reaches (their code, and their data's values at each run). The two keys differ: a
``%%dagger`` cell whose run first imported ``helpers`` ran again on its second execution;
and of two steps importing ``helpers`` in their bodies, the second, keyed by members
once the first one's run had imported it, ran again after a kernel restart (the first
served from the cache, ``helpers`` was not imported when the second was keyed: by file).

Two notes reconcile them, in this process only:

* A module a dagnb run first imported here (:func:`watching`: a Python step run inline
  whose key was made with it not imported) is noted as its import left it, the moment
  its text has run (:class:`_Fresh`): each of its members by identity, with its data's
  digests (the soft digests of :mod:`.values`), its own functions' code, defaults and
  attributes, its own classes' members, its partials' arguments; and so the members of
  the project's modules that import first imported (``import config`` at its top).
  Code whose body imports it is then keyed as though it were not imported, by the
  file's digest, the key a fresh process makes, while the module is the one imported
  then, runs the text of the file it was keyed and imported by, and every member of
  those modules the code's walk reads is as noted. A member bound or rebound since
  (``helpers.FACTOR = 5``, by the run that imported it too, or by a cell), data changed
  in place, data no digest takes, a file edited, a module reloaded: keyed by members,
  as before. Not noted at the run's end: that run may change the data after importing
  it, and another step then keyed by the file would store, under the key of the file's
  text, a result made of data a fresh import does not hold.
* Code keyed with such a module not imported that ran here, its run importing it, is
  noted too: the key it makes now stands for the one it was run under while the
  modules' data it reads is as its run left it (:func:`remember`). Its own result came
  from the fresh import, whatever its run then did to the module (``helpers.CACHE``
  filled): a second run of it is served from the cache.

Not covered, keyed by members as before (a miss after a restart, never a wrong hit): a
module a cell of the user's imported (not noted: its import is no run's); one imported
by a step run in a container, on a dask worker (nothing imported here), or by a call of
a ``Memory``-cached function (no step run); one whose import an import hook the user
puts before :func:`watching`'s on ``sys.meta_path`` takes. And state no member shows is
not compared, so a change a run makes there goes unseen by code then keyed by the file:
what a function of the module keeps in its closure, a library module's state
(``np.random.seed``), a project module imported before it (a fresh process's key by the
file counts none of these either).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from typing import Any

from dagnb.fingerprint.members import _CODE_MEMBERS, _class_members, _member_digest
from dagnb.fingerprint.sources import _of_user
from dagnb.fingerprint.values import _soft_digest
from dagnb.fingerprint.walker import _MISSING, _SCALARS, _is_code

_LIMIT = 1024  # (one per code whose run first imported a project module: few)


class _Before:
    """The key a code digest stood for: the code digest then, the globals it read then,
    and the digests of the modules' data read since they are imported."""

    __slots__ = ("code", "data", "labels")

    def __init__(self, code: str, labels: tuple[str, ...], data: dict[str, str]) -> None:
        self.code, self.labels, self.data = code, labels, data


# code digest with the modules imported -> the key it stands for
KEYED_BEFORE: dict[str, _Before] = {}


def remember(code_now: str, code_before: str, labels_before: tuple[str, ...],
             values_now: Mapping[str, Any]) -> None:
    """Note that ``code_now`` (read with ``values_now``) stands for ``code_before`` (read
    with the values of ``labels_before``): the data read now that was not read before
    (the modules') must still hash as now. Data no hash takes: nothing noted."""
    data = {}
    for label, value in values_now.items():
        if label not in labels_before:
            digest = _soft_digest(value)
            if digest is None:
                return
            data[label] = digest
    if len(KEYED_BEFORE) >= _LIMIT:
        KEYED_BEFORE.clear()
    KEYED_BEFORE[code_now] = _Before(code_before, labels_before, data)


def keyed_before(code_now: str, values_now: Mapping[str, Any]
                 ) -> tuple[str, dict[str, Any]] | None:
    """The code digest and the globals' values of the key ``code_now`` stands for, if the
    modules' data it reads is as noted; else None."""
    before = KEYED_BEFORE.get(code_now)
    if before is None:
        return None
    for label, digest in before.data.items():
        value = values_now.get(label, _MISSING)
        if value is _MISSING or _soft_digest(value) != digest:
            return None
    return before.code, {label: values_now[label] for label in before.labels
                         if label in values_now}


class _Fresh:
    """A module as the import a run made left it: its spec (a reload makes another),
    its file and the digest that file was keyed by, and the members of it and of the
    project's modules its import first imported (``__builtins__`` aside), each with what
    a change to it in place would change (:func:`_state`)."""

    __slots__ = ("digest", "file", "namespaces", "spec")

    def __init__(self, module: types.ModuleType, file: str, digest: str,
                 imported_with: Iterable[types.ModuleType]) -> None:
        self.spec, self.file, self.digest = module.__spec__, file, digest
        # id of a module's namespace -> (it, its module's name, its members then)
        self.namespaces = {id(vars(made)): (vars(made), made.__name__, _members(made))
                           for made in (module, *imported_with)}

    def holds(self, deps: Iterable[tuple[Any, str, Any]]) -> bool:
        """Whether each member of those modules that ``deps`` (a code record's: the
        names its walk read, with their objects) names is as the import left it: the
        same object, not changed in place; one absent then is absent since."""
        for namespace, name, value in deps:
            found = self.namespaces.get(id(namespace))
            if found is None or found[0] is not namespace:
                continue
            then = found[2].get(name)
            if then is None:
                if value is not _MISSING:  # (bound since the import)
                    return False
            elif then[0] is not value or not _same_state(then[1],
                                                         _state(name, value, found[1])):
                return False
        return True


def _members(module: types.ModuleType) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    return {name: (value, _state(name, value, module.__name__))
            for name, value in list(vars(module).items()) if name != "__builtins__"}


# module name -> the module as the run that first imported it left it: read at each key
# of code whose body imports a module (one dict's truth while no run imported any)
FRESH: dict[str, _Fresh] = {}

_UNDIGESTED = object()  # (data no digest takes: never the same as then)


def _state(name: str, value: Any, module: str) -> tuple[Any, ...]:
    """What of a module's member can change with the member still the same object:
    data's digest, a function's code, defaults and attributes, a class's members (of
    the module's own: another's is taken as it is), a partial's arguments; nothing for
    an immutable value, a module, or a dunder the import sets."""
    if type(value) in _SCALARS or isinstance(value, types.ModuleType) or (
            name.startswith("__") and name.endswith("__")):
        return ()
    if isinstance(value, partial):
        return (value.func, _digest((value.args, value.keywords)))
    if not _is_code(value):
        return (_digest(value),)
    if getattr(value, "__module__", None) != module:
        return ()
    if isinstance(value, types.FunctionType):
        return (value.__code__, value.__defaults__, value.__kwdefaults__,
                _digest(value.__dict__) if value.__dict__ else "")
    if isinstance(value, type):  # (each member's name, then its object or its digest)
        return tuple(part for member, held in _class_members(value)
                     for part in (member, _class_part(member, held)))
    return ()


def _class_part(name: str, value: Any) -> Any:
    """A class's member as its key counts it: code by itself, data by its digest (a
    dunder's not: :func:`~.members._data_members`)."""
    if isinstance(value, _CODE_MEMBERS):
        return value
    return "" if name.startswith("__") and name.endswith("__") else _member_digest(value)


def _digest(value: Any) -> Any:
    digest = _soft_digest(value)
    return _UNDIGESTED if digest is None else digest


def _same_state(then: tuple[Any, ...], now: tuple[Any, ...]) -> bool:
    """Whether two :func:`_state` are one: texts (digests, names) equal, the rest the
    very objects, and no digest missing."""
    return len(then) == len(now) and all(map(_same_part, then, now))


def _same_part(then: Any, now: Any) -> bool:
    if type(then) is str:
        return then == now
    return then is now and then is not _UNDIGESTED


# module name -> (its file, the digest it was keyed by) while a run that may first import
# it goes on, and how many such runs there are
_WATCHED: dict[str, tuple[str, str]] = {}
_WATCHERS: Counter[str] = Counter()
_LOCK = threading.Lock()


@contextlib.contextmanager
def watching(unimported: Iterable[tuple[str, str, str]]) -> Iterator[None]:
    """While the block runs (a step's run), note each module of ``unimported`` ((name,
    file, the file's digest) each: those its key found not imported) that an import
    loads from that file as its text leaves it (:data:`FRESH`)."""
    names = [(name, file, digest) for name, file, digest in unimported]
    if not names:
        yield
        return
    with _LOCK:
        for name, file, digest in names:
            _WATCHED[name] = (file, digest)
            _WATCHERS[name] += 1
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    try:
        yield
    finally:
        with _LOCK:
            for name, _, _ in names:
                _WATCHERS[name] -= 1
                if _WATCHERS[name] <= 0:
                    del _WATCHERS[name]
                    _WATCHED.pop(name, None)
            if not _WATCHED:
                with contextlib.suppress(ValueError):
                    sys.meta_path.remove(_FINDER)


class _FirstImports:
    """A finder first on ``sys.meta_path`` while a run is watched: a watched module's
    spec is the one the finders after it give (the import goes on as without it), its
    loader set to note the module once its text has run (:func:`_noting`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        watched = _WATCHED.get(name)
        if watched is None:
            return None
        spec = _later_spec(self, name, path, target)
        if spec is not None and spec.origin == watched[0]:
            _noting(spec.loader, *watched)
        return spec


def _later_spec(finder: Any, name: str, path: Any, target: Any) -> Any:
    """The spec the finders after ``finder`` on ``sys.meta_path`` give ``name``."""
    finders = list(sys.meta_path)
    for later in finders[finders.index(finder) + 1:] if finder in finders else finders:
        find = getattr(later, "find_spec", None)
        spec = find(name, path, target) if find is not None else None
        if spec is not None:
            return spec
    return None


def _noting(loader: Any, file: str, digest: str) -> None:
    """Have ``loader`` note the module it executes next, once, as its text left it: its
    own ``exec_module`` shadowed on the instance (the module's ``__loader__`` stays the
    very loader) until then."""
    execute = getattr(loader, "exec_module", None)
    if execute is None:
        return

    def exec_module(module: types.ModuleType) -> None:
        with contextlib.suppress(AttributeError):
            del loader.exec_module
        before = set(sys.modules)
        execute(module)
        if getattr(module, "__file__", None) == file:
            _note(module, file, digest, before)

    with contextlib.suppress(AttributeError, TypeError):  # (a loader with no __dict__)
        loader.exec_module = exec_module


def _note(module: types.ModuleType, file: str, digest: str, before: set[str]) -> None:
    """Note ``module`` as its import left it, with the project's modules that import
    first imported (not imported ``before``): code reaching it reads theirs too. Never
    fails the import: a note not to be made is none (keyed by members, as before)."""
    try:
        imported_with = [made for name, made in list(sys.modules.items())
                         if name not in before and made is not module
                         and isinstance(made, types.ModuleType) and _of_user(name)]
        fresh = _Fresh(module, file, digest, imported_with)
    except Exception:  # (a member whose pickling raises what no digest catches)
        FRESH.pop(module.__name__, None)
        return
    if len(FRESH) >= _LIMIT:
        FRESH.clear()
    FRESH[module.__name__] = fresh


_FINDER = _FirstImports()
