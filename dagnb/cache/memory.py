"""Memory: joblib.Memory's interface for caching Python function calls, on dagnb's store.

::

    memory = Memory(".dagnb_cache")

    @memory.cache
    def load(path, n=10): ...

    @memory.cache(ignore=["verbose"], ttl="1d")
    async def fetch(url, verbose=False): ...

Code written for ``joblib.Memory`` runs unchanged: ``Memory(location=None)`` caches
nothing, ``mmap_mode`` memory-maps numpy results, ``cache_validation_callback`` takes
``joblib.expires_after(...)``, and a cached function has joblib's ``func``, ``ignore``,
``call`` (returning ``(result, metadata)``), ``check_call_in_cache``, ``clear`` and
``call_and_shelve`` (returning a :class:`ShelvedResult` with ``get()`` and ``clear()``).
What differs from joblib is listed in the README's Memory section.

``cache_mode`` (default: the setting) works as for runs: ``read-only`` serves hits and
runs a miss without storing it (no entry, lock or hit count is written), ``fail-on-miss``
runs nothing: it raises :class:`~dagnb.errors.CacheMissError` for a miss (once it has read
the packs again, so a call another process just stored is a hit) and for ``.call()``,
which always runs (it stores nothing, so it makes no cache folder), ``off`` is
``location=None``.

A call's key is the function's :func:`~dagnb.fingerprint.code_digest` plus one
:func:`~dagnb.fingerprint.value_digest` per bound argument (``arg:<name>``
components, so :func:`dagnb.cache.explain` can name the argument that changed). Results
go into the same store layout as steps, under ``<module>.<qualname>`` (step names never
contain a dot, so the two never collide), a workflow's ``python:`` module's under
``dagnb_steps.<file stem>.<qualname>`` (path-free, as step keys: checkouts share them);
a script's functions under
``__main__-<file stem>-<path digest>.<qualname>``, so that two scripts' ``load`` on one
cache are cleared apart (a notebook's, with no file, under ``__main__.<qualname>``).

A small result (up to 2 KiB) is kept in the entry's record of a pack
(:mod:`dagnb.cache.pack`): a miss appends one record, and a hit on a call stored by
another process is a dictionary lookup once this process has read the packs. A repeat
hit on a result nobody can change in place (a number, a string, a tuple of them, an
array mapped read-only) returns the one kept in memory while the entry is the same (for
an entry with a folder, one ``stat`` of its ``meta.json`` says so); any other result (a
frame, a list, a dict) is loaded anew at each hit, as joblib does, so a caller that
changes what it got changes no later hit.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import logging
import operator
import os
import re
import shutil
import sys
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from dagnb.cache import refuse_foreign_folder
from dagnb.cache.backend import LocalBackend, backend_names
from dagnb.cache.call_keys import CallKeys, label, target_of
from dagnb.cache.eviction import checked_limits
from dagnb.cache.keys import StepKey
from dagnb.cache.secret_scan import (
    SecretsInForce,
    known_secrets,
    outside_steps,
    pickle_holds,
    secrets_in_force,
)
from dagnb.cache.store import Entry, Store
from dagnb.checks import checked, is_url, parse_ttl, seconds_to_live, short_repr, user_stacklevel
from dagnb.checks import location as checked_location
from dagnb.config import CACHE_MODES, check_cache_mode, settings
from dagnb.errors import CacheError, CacheMissError, ConfigError, DagnbError
from dagnb.fingerprint import (
    WRAPPER_MARK,
    adopt_sources,
    environ_unkeyed,
    main_spelled,
    script_sources,
    source_table,
)
from dagnb.fingerprint.environ import WHOLE, UnkeyedEnvironmentWarning, unkeyed_reads_said
from dagnb.model.masking import environ_secrets
from dagnb.model.moved_modules import STEPS_MODULE_PREFIX
from dagnb.model.results import NO_RESULT, decode_inline, encode_inline, save_result
from dagnb.model.step import forgetting

__all__ = ["CachedFunction", "Memory", "ShelvedResult"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_LOADED_LIMIT = 128  # results kept in memory per function, most recently used
# what makes "cannot be written" true of a cache folder (other errors, a file another
# process removed meanwhile, say what they are)
_UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC,
                         getattr(errno, "EDQUOT", errno.ENOSPC)})  # (none on Windows)
# what makes a folder one this user may not change (a clear there says so in one line)
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_MMAP_MODES = (None, "r+", "r", "w+", "c")
_MMAP_FILE = "result.joblib"  # joblib's own format: arrays stored raw, so they can be mapped
_INLINE_LIMIT = 2048  # bytes: a result this small lives in meta.json, with no file of its own
_log = logging.getLogger("dagnb.memory")
Validity = Callable[[Mapping[str, Any]], Any]


class CachedFunction(Protocol[P, R_co]):
    """What ``@memory.cache`` returns: the function, plus joblib's cache controls."""

    func: Callable[..., Any]
    ignore: list[str]
    mmap_mode: str | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def call(self, *args: P.args, **kwargs: P.kwargs) -> tuple[R_co, dict[str, Any]]:
        """Run the function even if cached, store its result; ``(result, metadata)``
        (CacheMissError under ``fail-on-miss``, which runs nothing)."""
        ...

    def check_call_in_cache(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether this call has a valid entry (nothing runs, nothing is recorded)."""
        ...

    def call_and_shelve(self, *args: P.args, **kwargs: P.kwargs) -> ShelvedResult:
        """Run the call unless cached; a handle on the stored result, not the result."""
        ...

    def clear(self, warn: bool = True) -> None:
        """Remove every cached call of this function."""
        ...


def _step_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` made safe as a directory name.

    A partial is named after the function it wraps (its bound arguments are in the
    key); a callable object with no ``__qualname__`` after its class. A script's
    function is named after the script's file (:func:`_script_module`), a workflow's
    steps module's after its file's stem alone (:func:`_path_free`).
    """
    target = target_of(func)
    module = main_spelled(getattr(target, "__module__", None) or type(target).__module__)
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    suffix = ".partial" if target is not func else ""
    if module == "__main__":
        module = _script_module(target)
    elif module.startswith(STEPS_MODULE_PREFIX):
        module = _path_free(module)
    return _safe_name(f"{module}.{qualname}{suffix}")


# a ``python: FILE.py:func`` step's module as dagnb imports it (dagnb.workflows):
# ``dagnb_steps_<file stem>_<8 hex digits of its path>``
_STEPS_MODULE = re.compile(re.escape(STEPS_MODULE_PREFIX) + r"(.+)_[0-9a-f]{8}")


def _path_free(module: str) -> str:
    """A workflow's steps module as ``dagnb_steps.<file stem>``: its name without the
    digest of its path, which a teammate's checkout, CI's or a moved folder does not
    share (their calls computed everything again under a name of their own), as a
    step's key holds no path. Under dagnb's own ``dagnb_steps``, no importable module's
    name (an installed ``steps``' functions are cleared apart), nor a step's (no dot).
    Two workflows' ``steps.py`` share the name, as two workflows' steps of one name
    do; their keys hold their code. Any other module keeps its name."""
    named = _STEPS_MODULE.fullmatch(module)
    return module if named is None else f"{STEPS_MODULE_PREFIX[:-1]}.{named[1]}"


def _script_module(target: Any) -> str:
    """``__main__``'s name for ``target``: ``__main__-<stem>-<path digest>`` when its code
    is the script file's (the module's ``__file__``), so that two scripts' functions of
    one name on one cache are two (``load.clear()`` in one keeps the other's entries),
    as joblib names them after the file. Read from the function itself, as a spawn
    worker's ``__mp_main__`` keeps it, and cloudpickle, which sends its ``__file__``
    (its code named ``<dynamic-code>``); a notebook cell, ``python -c`` or a class has
    no such file: ``__main__``."""
    function = _function_behind(target)
    if function is None:
        return "__main__"
    script = function.__globals__.get("__file__")
    if type(script) is not str or function.__code__.co_filename not in (script, _SENT_CODE):
        return "__main__"
    return _script_tag(script)


_SENT_CODE = "<dynamic-code>"  # cloudpickle's file name of code it sends by value


def _function_behind(target: Any) -> types.FunctionType | None:
    """The Python function whose code ``target`` runs: the one it wraps (a decorator's
    wrapper may be a library's code), a method's, a callable object's ``__call__``;
    None for anything else (a class, a builtin)."""
    if type(target) is types.FunctionType and "__wrapped__" not in target.__dict__:
        return target  # (the usual case, without inspect)
    try:
        inner = inspect.unwrap(target)
    except ValueError:  # (a cycle of __wrapped__)
        return None
    if type(inner) is types.FunctionType:
        return inner
    if isinstance(inner, type):  # (a class cached itself: its code is its methods')
        return next((member for member in map(_plain_function, vars(inner).values())
                     if member is not None and member.__module__ == inner.__module__), None)
    for candidate in (getattr(inner, "__func__", None),
                      inspect.getattr_static(type(inner), "__call__", None)):
        if type(candidate) is types.FunctionType:
            return candidate
    return None


def _plain_function(member: Any) -> types.FunctionType | None:
    """A class's member as a Python function (a static or class method's own), or None."""
    member = getattr(member, "__func__", member)
    return member if type(member) is types.FunctionType else None


@functools.lru_cache(maxsize=64)
@functools.lru_cache(maxsize=256)  # (a few stats up the tree, once a script)
def _script_tag(script: str) -> str:
    """The module name of a script's functions: its file's stem (no dot: the name's
    first dot ends the module) and 8 hex digits of its path within its project (two
    ``train.py`` of two folders are two scripts, and two checkouts of one project, a
    teammate's on a shared store, name a script alike; a digest the hash setting does
    not change)."""
    path = os.path.normcase(os.path.abspath(script))
    digest = hashlib.blake2b(_within_project(path).encode(), digest_size=4).hexdigest()
    return f"__main__-{Path(path).stem.replace('.', '_')}-{digest}"


_PROJECT_TOPS = (".git", "pyproject.toml", "setup.cfg", "setup.py")  # a checkout's top


def _within_project(path: str) -> str:
    """``path`` from the nearest folder above it that is a project's top (holds ``.git``
    or ``pyproject.toml``...), with ``/`` between names; the absolute path where none
    is (a script in a folder of its own)."""
    folder = os.path.dirname(path)
    while True:
        if any(os.path.exists(os.path.join(folder, top)) for top in _PROJECT_TOPS):
            return os.path.relpath(path, folder).replace(os.sep, "/")
        parent = os.path.dirname(folder)
        if parent == folder:
            return path
        folder = parent


def _shown(name: str) -> str:
    """A stored name as messages give it: a script's function as ``__main__.qualname``
    (the file's tag of :func:`_script_tag` left out), any other as stored."""
    if name.startswith("__main__-"):
        return "__main__" + name[name.index("."):]
    return name


@functools.lru_cache(maxsize=1024)  # (each Memory(...).cache(func) names it again)
def _safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name.replace("<locals>", "locals").replace("<lambda>", "lambda"))


def _is_async(func: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction`` of the function a partial calls; a plain function's
    flags read directly (inspect's checks cost a fresh process's first call 5 µs), one
    with attributes (a marker of Python 3.12's ``markcoroutinefunction``) by inspect."""
    target = target_of(func)
    if type(target) is types.FunctionType and not target.__dict__:
        return bool(target.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(target)


def _location(value: Any) -> str | os.PathLike[str] | None:
    """``location`` as Memory takes it: refused in one line naming what it takes, not
    left to os.fspath's TypeError about bytes and PathLike objects."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    shown = short_repr(value, 80, one_line=True)  # (a frame, an array: its type)
    raise ConfigError(f"Memory(location={shown}) is not a location; it takes a folder "
                      "path, a store URL (s3://bucket/cache), or None to cache nothing")


def _memory_ttl(value: Any) -> float | None:
    """Memory's ``ttl``, its second positional argument: a backend's name there (or an
    object that is no duration), as joblib takes it (``Memory("cache", "local")``), is
    refused naming ``backend=``. Any other word (``ttl="forever"``, given by keyword
    as often as not) is refused as the duration it is not."""
    try:
        return parse_ttl(value, error=ConfigError)
    except ConfigError:
        if isinstance(value, (int, float)) or (
                isinstance(value, str) and value not in backend_names()):
            raise  # (a duration mistyped: parse_ttl's words say how to write one)
        shown = short_repr(value, 60, one_line=True)
        backend = repr(value) if isinstance(value, str) else "..."
        raise ConfigError(
            f"Memory(location, {shown}): dagnb's second positional argument is ttl (a "
            f"duration: seconds, '10m', '1d', 'never'), not joblib's backend; pass the "
            f"backend by keyword: Memory(location, backend={backend})") from None


def _refuse_joblib_options(compress: Any, backend_options: Any) -> None:
    """joblib's ``compress`` and ``backend_options``, which dagnb has no use for (their
    no-op values, ``compress=False``, ``backend_options={}``, pass): refused in one line.
    The options' values are not shown: a backend's may hold credentials."""
    if compress:
        raise ConfigError(
            f"Memory(compress={short_repr(compress, 40, one_line=True)}): dagnb does not "
            "compress results (stored as written, a hit loads them without decompressing, "
            "and mmap_mode maps them); drop the argument")
    raise ConfigError(
        "Memory(backend_options=...): dagnb's store backends take no options (a store "
        "URL as location says where: s3://bucket/cache, with the credentials of the "
        "environment); drop the argument")


def _mmap_mode(value: Any) -> str | None:
    if value not in _MMAP_MODES:
        raise ConfigError(
            f"mmap_mode={value!r} is not valid; use None, 'r+', 'r', 'w+' or 'c' (numpy.load's)"
        )
    return value


def _verbose(value: Any, where: str) -> int:
    """``verbose`` as joblib compares it: a whole number (a bool or a numpy integer as
    its int), refused otherwise in one line, not by a TypeError at the first call."""
    try:
        return operator.index(value)
    except TypeError:
        shown = short_repr(value, 80, one_line=True)
        raise ConfigError(f"{where}(verbose={shown}) is not valid: verbose is an int, such "
                          "as 0 (silent) or 1 (each call that runs)") from None


def _ignored(value: Iterable[str]) -> list[str]:
    """``ignore`` as a list of the parameter names it gives."""
    if isinstance(value, str):  # (list() of it: each letter a name to leave out)
        raise ConfigError(  # (a ValueError, as joblib's is)
            f"ignore={value!r} is a string, not a list of parameter names; "
            f"write ignore=[{value!r}]")
    try:
        return list(value)
    except TypeError:  # (memory.cache(f, 1): joblib's verbose, say, given by position)
        shown = short_repr(value, 60, one_line=True)
        raise ConfigError(
            f"ignore={shown} is not a list of parameter names (memory.cache's second "
            "positional argument is ignore, as joblib's); give the other options by "
            "keyword: memory.cache(f, verbose=1)") from None


def _validity(value: Any) -> Validity | None:
    if value is not None and not callable(value):
        # joblib's words, so code that matches joblib's message keeps working
        raise ConfigError(
            f"cache_validation_callback needs to be callable. Got {value!r}. Pass a "
            "function of the call's metadata, such as joblib.expires_after(hours=1)."
        )
    return value


def _metadata(entry: Entry) -> dict[str, Any]:
    """joblib's metadata of a cached call: duration, input_args (reprs) and time."""
    describe = entry.meta.get("describe") or {}
    inputs = {k[4:]: v for k, v in describe.items() if k.startswith("arg:")}
    return {"duration": entry.meta["duration_s"], "input_args": inputs, "time": entry.created}


class Memory:
    """Cache function results on disk, keyed by code and arguments.

    Parameters
    ----------
    location
        Cache directory (shared with dagnb steps' cache if you like). None caches
        nothing: decorated functions simply run, as with ``joblib.Memory(None)``.
    ttl
        Default time to live of entries (seconds or ``"1d"``); None keeps them. Checked
        whatever the mode, as ``verbose`` is.
    backend
        A registered store backend name.
    verbose
        An int (a bool is one), as joblib's: 0 is silent; 1 prints each call that runs
        and its duration (joblib's lines); above 4 also cache loads, above 10 what is
        computed where, 20 logs each query.
    clock
        Current time in seconds; tests inject a fake one.
    mmap_mode
        None, or a ``numpy.load`` mode ('r', 'r+', 'w+', 'c'): numpy arrays in results
        come back memory-mapped, from the first call on.
    bytes_limit
        The size :meth:`reduce_size` keeps when called with no limit (``"1G"`` or bytes).
    cache_mode
        ``"read-write"``, ``"read-only"``, ``"fail-on-miss"`` or ``"off"`` (see the
        module docstring); None for the ``cache_mode`` setting.
    compress, backend_options
        joblib's: refused in one line unless they ask for what dagnb does (no
        compression, no options).
    """

    def __init__(
        self,
        location: str | Path | None = ".dagnb_cache",
        ttl: float | str | None = None,
        backend: str = "local",
        verbose: int = 0,
        clock: Callable[[], float] = time.time,
        *,
        mmap_mode: str | None = None,
        bytes_limit: int | str | None = None,
        cache_mode: str | None = None,
        compress: bool | int = False,
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        if compress or backend_options:
            _refuse_joblib_options(compress, backend_options)
        if type(location) is not str:  # (a str, the usual case, with no call)
            location = _location(location)
        elif ":/" in location and "://" not in location:  # (s3:/bucket: a slash short, it
            location = checked(checked_location, location, "Memory location", ConfigError,
                               sep=" ")  # (made a folder named s3:)
        self.location = location
        if ttl is not None:  # (checked whatever the mode: code that runs uncached runs cached)
            ttl = _memory_ttl(ttl)
        if type(verbose) is not int:
            verbose = _verbose(verbose, "Memory")
        mode = settings().cache_mode if cache_mode is None else cache_mode
        if type(mode) is not str or mode not in CACHE_MODES:  # (spelled otherwise, or wrong)
            mode = check_cache_mode(mode, "cache_mode")
        self.cache_mode = mode
        self.store = (
            None
            if location is None or mode == "off"
            else Store(location, backend, clock, ttl, read_only=mode == "read-only",
                       # fail-on-miss stores nothing: a folder only if it is there
                       create=mode != "fail-on-miss")
        )
        self.verbose = verbose
        self.mmap_mode = None if mmap_mode is None else _mmap_mode(mmap_mode)
        if bytes_limit is not None:  # (refused now, not at the first reduce_size())
            checked_limits(bytes_limit, None, None)
        self.bytes_limit = bytes_limit
        self._names: set[str] = set()
        self._made_with = (ttl, backend, clock)  # (for _spec(), when it is pickled)

    _folder_checked = False  # (a class attribute: a fresh process's Memory() sets none)

    def refuse_foreign_folder(self) -> None:
        """Before its first write, refuse a local folder that holds other files and is
        no cache yet (a project's, ``Memory(".")``), as runs do: its folders would be
        mixed with entries. Checked once, at the first miss, not at each ``Memory()``."""
        if self._folder_checked:
            return
        store = self.store
        if store is not None and not store.read_only and type(store.backend) is LocalBackend:
            refuse_foreign_folder(store.location)
        self._folder_checked = True

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (as joblib's is, inside a scikit-learn pipeline sent to workers): the
        same cache and settings, there."""
        if self.store is None:
            return Memory, (None,)
        spec = self._spec()
        if spec is None:
            raise TypeError(f"{self!r} is on a store backend object, which cannot be sent "
                            "to another process; name the backend (backend='local')")
        return _memory_of, (spec,)

    def _spec(self) -> tuple[Any, ...] | None:
        """What makes this Memory again in another process; None for one on a backend
        object (or none)."""
        ttl, backend, clock = self._made_with
        if self.store is None or not isinstance(backend, str):
            return None
        return (_shared_location(self.location, self.store), ttl, backend, self.verbose,
                clock, self.mmap_mode, self.bytes_limit, self.cache_mode)

    def __repr__(self) -> str:
        """Where entries go: the folder, or the store's URL (not its local tier's folder)."""
        where = (None if self.store is None
                 else os.fspath(_shared_location(self.location, self.store)))
        return f"Memory(location={where!r})"

    @overload
    def cache(self, func: Callable[P, R]) -> CachedFunction[P, R]: ...

    @overload
    def cache(
        self,
        func: None = None,
        ignore: Iterable[str] | None = None,
        *,
        ttl: float | str | None = None,
        verbose: int | None = None,
        mmap_mode: str | bool | None = False,
        cache_validation_callback: Validity | None = None,
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...

    def cache(
        self,
        func: Callable[P, R] | None = None,
        ignore: Iterable[str] | None = None,
        *,
        ttl: float | str | None = None,
        verbose: int | None = None,
        mmap_mode: str | bool | None = False,
        cache_validation_callback: Validity | None = None,
    ) -> Any:
        """Decorate a sync or async function (or a partial, or a callable) to cache it.

        Usable bare (``@memory.cache``) or with options (``@memory.cache(ignore=["v"],
        ttl="1h")``). The wrapper keeps the function's signature. A function defined in
        a class body is a method (its object is an argument); any other cached in a class
        body (``_read = memory.cache(read_csv)``), or a ``staticmethod``, is a static
        method: called through an instance it is not given the instance, as joblib's. One
        of module level pickles (a ``multiprocessing.Pool`` sends it to its workers) to the
        same function on the same cache, as joblib's.

        Parameters
        ----------
        ignore
            Parameter names left out of the key (the one option also taken by position,
            second, as joblib's: ``memory.cache(f, ["verbose"])``).
        ttl
            Time to live of this function's entries.
        verbose, mmap_mode
            This function's own, instead of the Memory's (``mmap_mode=False``: the
            Memory's).
        cache_validation_callback
            ``callback(metadata) -> bool``: a stored call whose metadata (``duration``,
            ``input_args``, ``time``) it does not accept runs again, as in joblib
            (``joblib.expires_after(minutes=5)`` works).
        """
        # (each option checked, no dict of them made: a fresh process's .cache() pays
        # for every instruction)
        ignore = [] if ignore is None else _ignored(ignore)
        if ttl is not None:  # (checked even where nothing is cached, as in Memory())
            parse_ttl(ttl, error=ConfigError)
        if verbose is None:
            verbose = self.verbose
        elif type(verbose) is not int:
            verbose = _verbose(verbose, ".cache")
        mmap_mode = self.mmap_mode if mmap_mode is False else _mmap_mode(mmap_mode)
        if cache_validation_callback is not None:
            _validity(cache_validation_callback)
        if func is None:
            return _decorator(self, ignore, ttl, verbose, mmap_mode, cache_validation_callback)
        static = type(func) is staticmethod  # (@memory.cache over @staticmethod)
        # (over @classmethod: as @classmethod over @memory.cache, cls an argument; it was
        # "<classmethod(...)> is not a callable object", from inspect)
        of_class = type(func) is classmethod
        func = _function_cached_by(func.__func__ if static or of_class else func)
        if self.store is None:
            calls: _Uncached | _CachedCall = _Uncached(func, ignore, ttl, verbose, mmap_mode,
                                                       cache_validation_callback)
        else:
            calls = _CachedCall(self, func, ignore, ttl, verbose, mmap_mode,
                                cache_validation_callback)
        cached = calls.wrapper()
        if not calls.asynchronous and _sent_by_value(func):
            cached = _CachedUnderAnotherName(cached, calls)
        if of_class:
            return classmethod(cached)  # type: ignore[return-value]
        if static or (not _defined_in_a_class(func) and _called_in_a_class_body()):
            return staticmethod(cached)  # (a function would be bound: a descriptor)
        return cached

    def eval(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``func(*args, **kwargs)`` through the cache (joblib's ``Memory.eval``)."""
        return self.cache(func)(*args, **kwargs)  # type: ignore[no-any-return]

    def clear(self, warn: bool = True) -> None:
        """Remove the entries of every function cached in this location, those of
        functions not cached in this process too, as joblib's empties its folder
        (``warn``: said in a logged warning, as joblib's says it).

        Unlike joblib's, the rest of the cache directory (steps' entries) is kept.
        """
        if warn and self.store is not None and is_url(os.fspath(self.location or "")):
            # (a new process downloads the store's copies again: said, not left to find)
            _log.warning("[%r]: Flushing the cache of every cached function in the local "
                         "tier %r only; the store keeps its copies%s", self,
                         str(self.store.location), _kept_how(os.fspath(self.location or "")))
        elif warn:
            _log.warning("[%r]: Flushing the cache of every cached function", self)
        if self.store is None:
            return
        with _refused_where_unwritable(self.store, "clear"):
            for name in sorted(self._names.union(_function_names(self.store))):
                self.store.clear(name)

    def reduce_size(
        self,
        bytes_limit: int | str | None = None,
        items_limit: int | None = None,
        age_limit: timedelta | float | str | None = None,
    ) -> int:
        """Evict least recently used entries until every limit given holds.

        As ``joblib.Memory.reduce_size``: ``bytes_limit`` (bytes or ``"10M"``) and
        ``items_limit`` cap the whole cache directory, ``age_limit`` (timedelta, seconds
        or ``"7d"``) removes entries not used for that long. With no limit given, the
        Memory's ``bytes_limit`` applies, else nothing is removed. Returns how many were.
        """
        if bytes_limit is None and items_limit is None and age_limit is None:
            bytes_limit = self.bytes_limit
        if self.store is None:  # (nothing to remove; the limits refused as a store would)
            checked_limits(bytes_limit, items_limit, age_limit)
            return 0
        with _refused_where_unwritable(self.store, "reduce the size of"):
            return self.store.reduce_size(bytes_limit, items_limit, age_limit)


@contextlib.contextmanager
def _refused_where_unwritable(store: Store, action: str) -> Iterator[None]:
    """A clear or an eviction in a folder this user may not change (a read-only mount,
    another user's cache) in one line with the fix, as ``dagnb cache clear`` says it:
    the store meets it as an OSError naming a pack file it could not make."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NOT_WRITABLE:
            raise
        raise CacheError(
            f"cannot {action} the cache in {str(store.location)!r}: the folder cannot be "
            f"written ({os.strerror(exc.errno)}); run it as a user who may write there, on "
            "a writable mount") from None


def _function_names(store: Store) -> list[str]:
    """The names the functions cached in ``store`` are stored under: ``module.qualname``
    (see :func:`_step_name`), with a dot no workflow step's name may have."""
    return [name for name in store.step_names() if "." in name]


def _function_cached_by(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function ``func`` caches if it is a cached function; ``func`` otherwise:
    caching it again caches that one, with the new options, as joblib does (a wrapper
    of a wrapper would never see them). A cached function is a ``run`` made by a
    wrapper below, known by its code, its calls in its closure (no table of them kept,
    none to clean up)."""
    if type(func) is _FUNCTION:
        cell = _RUN_CELLS.get(id(func.__code__))
        if cell is not None:
            return func.__closure__[cell].cell_contents.func  # type: ignore[index]
        if func.__dict__.get(WRAPPER_MARK) is func.__code__:  # (one cloudpickle sent by
            return func.__dict__["func"]  #                      value: code of its own)
    elif type(func) is _CachedUnderAnotherName:
        return func.func
    return func


def _module_member(obj: Any) -> Any:
    """What ``obj``'s module holds under ``obj``'s qualified name (None for nothing):
    ``obj`` itself where pickle can send it by name."""
    named = sys.modules.get(getattr(obj, "__module__", None) or "")
    for part in getattr(obj, "__qualname__", "").split("."):
        named = getattr(named, part, None)
    return named


def _sent_by_value(func: Callable[..., Any]) -> bool:
    """Whether the cached ``func`` pickles only as an object of its own: a function its
    module names (its wrapper cannot be found by that name), a partial or a bound method
    (``memory.cache(model.fit)``), which pickle sends with their arguments or object."""
    return _module_member(func) is func or isinstance(func, (functools.partial,
                                                             types.MethodType))


class _CachedUnderAnotherName:
    """A cached function kept under a name of its own (``f_cached = memory.cache(f)``,
    joblib's way): its wrapper, which pickle sends by its name only, where the module's
    ``f`` is the function, in an object that pickles as joblib's MemorizedFunc does, so
    a ``multiprocessing.Pool`` or a ``ProcessPoolExecutor`` can send it: the function and
    its Memory's settings, made again there on the same cache. (``@memory.cache``'s
    wrapper, which its module names, stays a function: pickle sends it by name.)"""

    def __init__(self, run: Callable[..., Any], calls: _Uncached | _CachedCall) -> None:
        # (joblib's attributes, and __wrapped__ the function, as the wrapper has them)
        self.__dict__.update({name: value for name, value in run.__dict__.items()
                              if name != WRAPPER_MARK})
        for name in ("__module__", "__name__", "__qualname__", "__doc__", "__annotations__"):
            setattr(self, name, getattr(run, name))
        self._run, self._calls = run, calls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(*args, **kwargs)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        """Bound as the function it caches would be, set on a class
        (``Model.fit_cached = memory.cache(Model.fit)``)."""
        return self if obj is None else types.MethodType(self, obj)

    def __reduce__(self) -> Any:
        """Sent by its name where its module names it so (``f = memory.cache(f)``: the
        function is not found by its name, this object is); otherwise its calls object
        goes (the function by its name, the Memory's settings, see
        :meth:`_CachedCall.__reduce__`), a wrapper made of it there."""
        if _module_member(self) is self:
            return self.__qualname__
        return _cached_again, (self._calls,)

    def __repr__(self) -> str:
        return f"<cached function {self.__module__}.{self.__qualname__}>"


def _cached_again(calls: _Uncached | _CachedCall) -> _CachedUnderAnotherName:
    """A pickled :class:`_CachedUnderAnotherName`, made again in this process."""
    return _CachedUnderAnotherName(calls.wrapper(), calls)


def _defined_in_a_class(func: Callable[..., Any]) -> bool:
    """Whether ``func`` is a function defined in a class body (``Model.fit``, not
    ``read_csv`` nor ``make.<locals>.helper``): a method, its wrapper bound to the
    object as the function would be. Anything else (a partial, a bound method, a
    callable object) Python does not bind, nor does dagnb."""
    if type(func) is not _FUNCTION:
        return False
    owner = func.__qualname__.rpartition(".")[0]
    return bool(owner) and not owner.endswith("<locals>")


def _called_in_a_class_body() -> bool:
    """Whether :meth:`Memory.cache`'s caller (or ``@memory.cache(...)``'s) is a class
    body: a class namespace's frame, neither a function's (optimized) nor a module's."""
    frame = sys._getframe(2)  # (1: cache(); 2: what called it)
    if frame.f_code is _DECORATOR_CODE:
        frame = frame.f_back
    if frame is None or frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        return False
    namespace = frame.f_locals  # (a class body's own dict: no copy made)
    return (namespace is not frame.f_globals and "__qualname__" in namespace
            and "__module__" in namespace)


# functools.update_wrapper's assignments are these (3.12 adds __type_params__): a plain
# function's are then made directly (a fresh process's .cache() pays for its loop)
_FUNCTION = types.FunctionType
_PLAIN_WRAP = functools.WRAPPER_ASSIGNMENTS == (
    "__module__", "__name__", "__qualname__", "__doc__", "__annotations__")


def _decorator(memory: Memory, ignore: list[str], ttl: float | str | None, verbose: int,
               mmap_mode: str | None, valid: Validity | None) -> Callable[..., Any]:
    """``@memory.cache(...)``: the decorator caching a function with these options."""
    return lambda f: memory.cache(f, ignore=ignore, ttl=ttl, verbose=verbose,
                                  mmap_mode=mmap_mode, cache_validation_callback=valid)


_DECORATOR_CODE = next(code for code in _decorator.__code__.co_consts
                       if isinstance(code, types.CodeType))  # (its lambda's)


def _options_of(options: Mapping[str, Any]) -> tuple[Any, ...]:
    """A pickled call's options (see :attr:`_Calls.options`) as its constructor takes them."""
    return (options["ignore"], options["ttl"], options["verbose"], options["mmap_mode"],
            options["valid"])


class ShelvedResult:
    """A handle on one stored call's result (joblib's ``MemorizedResult``).

    ``get()`` loads the result (KeyError once it is gone from the cache), ``clear()``
    removes it. The result is not loaded until ``get()`` asks for it. It pickles, with
    ``pickle`` too for a function cached at module level, to the same cache.
    """

    def __init__(self, call: _CachedCall, key: str) -> None:
        self._call, self.args_id = call, key
        self.func = call.name

    def get(self) -> Any:
        """The stored result; KeyError when it is no longer in the cache."""
        value = self._call.cached(self.args_id, check=False)
        if value is NO_RESULT:  # (or stored by another process since the packs were read)
            value = self._call.cached_again(self.args_id, check=False)
        if value is NO_RESULT:
            raise KeyError(
                f"the result of {_shown(self.func)} with argument hash {self.args_id[:12]} is no "
                "longer in the cache; call the function again"
            )
        return value

    def clear(self) -> None:
        """Remove the stored result (nothing happens if it is already gone)."""
        self._call.loaded.pop(self.args_id, None)
        with _refused_where_unwritable(self._call.store, "clear a result from"):
            self._call.store.remove(self.func, self.args_id)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (sent to a Pool's workers, as joblib's MemorizedResult is): a handle on
        the same result in the same cache, there. The function goes as pickle finds it
        by its name: cached at module level, that name gives the cached function. Its
        ``cache_validation_callback`` stays (``get()`` asks none; ``joblib.expires_after``'s
        is a local function, which pickle refuses)."""
        call = self._call
        return _shelved_rebuilt, (call.sent_spec(), _as_named(call.func),
                                  {**call.options, "valid": None}, self.args_id, call.name)

    def __repr__(self) -> str:
        return (
            f'ShelvedResult(location="{self._call.store.location}", func="{self.func}", '
            f'args_id="{self.args_id}")'
        )


def _as_named(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, or the cached function its module names by ``func``'s name (which plain
    pickle sends by that name, and ``func`` it cannot)."""
    named = _module_member(func)
    return named if named is not func and _function_cached_by(named) is func else func


def _shelved_rebuilt(spec: tuple[Any, ...], func: Callable[..., Any],
                     options: Mapping[str, Any], key: str,
                     name: str | None = None) -> ShelvedResult:
    """A pickled ShelvedResult, made again in this process (its Memory when first used);
    ``name`` None: pickled by a version before names were sent, named here as there."""
    call = _call_rebuilt(spec, _function_cached_by(func), options, {}, name)
    return ShelvedResult(call, key)


class _Value:
    """A result kept only in memory: ``Memory(location=None)``'s shelved result."""

    def __init__(self, value: Any) -> None:
        self.value, self.valid = value, True

    def get(self) -> Any:
        if not self.valid:
            raise KeyError("this result was cleared; Memory(location=None) keeps nothing")
        return self.value

    def clear(self) -> None:
        self.valid = False
        self.value = None

    def __repr__(self) -> str:
        return f"ShelvedResult(value={short_repr(self.value, 60)})"


# A plain function (by id, with a weak reference to it) -> the objects its traits were
# made of, and its traits (keys kept without the function: they would keep it alive).
# A function cached again (nilearn's memory.cache(f)(x) at each call, Memory.eval, a
# fresh process's Memory on a second folder) is not read again.
_TRAITS: dict[int, tuple[Any, ...]] = {}


def _traits_of(func: Callable[..., Any], ignore: list[str]) -> tuple[CallKeys[Any], str, bool]:
    """``func``'s call keys, step name and whether it is async: remembered for a plain
    function cached with no ``ignore`` while its code, defaults, module and name stay
    the very same objects and it has no attributes (``__wrapped__``, ``__signature__``,
    a coroutine mark)."""
    if ignore or type(func) is not types.FunctionType or func.__dict__:
        return CallKeys(func, ignore), _step_name(func), _is_async(func)
    found = _TRAITS.get(id(func))
    if found is not None:  # (each compared by identity: a code object's == reads it whole)
        ref, code, defaults, kwdefaults, module, qualname, keys, name, asynchronous = found
        if (ref() is func and func.__code__ is code and func.__defaults__ is defaults
                and func.__kwdefaults__ is kwdefaults and func.__module__ is module
                and func.__qualname__ is qualname):
            return keys.copy(func), name, asynchronous
    keys, name, asynchronous = CallKeys(func, ignore), _step_name(func), _is_async(func)
    ident = id(func)
    _TRAITS[ident] = (weakref.ref(func, forgetting(_TRAITS, ident)), func.__code__,
                      func.__defaults__, func.__kwdefaults__, func.__module__,
                      func.__qualname__, keys.copy(None), name, asynchronous)
    return keys, name, asynchronous


class _Calls:
    """What cached and uncached functions share: options, messages, the wrapper."""

    name: str

    def __init__(self, func: Callable[..., Any], ignore: list[str], ttl: float | str | None,
                 verbose: int, mmap_mode: str | None, valid: Validity | None) -> None:
        self.func, self.ignore, self.ttl = func, ignore, ttl
        self.verbose, self.mmap_mode, self.valid = verbose, mmap_mode, valid
        self.keys, self.name, self.asynchronous = _traits_of(func, ignore)

    @property
    def options(self) -> dict[str, Any]:
        """The options it was cached with (what a pickled call carries)."""
        return {"ignore": self.ignore, "ttl": self.ttl, "verbose": self.verbose,
                "mmap_mode": self.mmap_mode, "valid": self.valid}

    def before(self, args: tuple[Any, ...], kwargs: dict[str, Any],
               secrets: SecretsInForce | None = None) -> None:
        if self.verbose > 0:
            # (keywords cut as positional ones are: a list of 100,000 texts is not
            # printed whole, and one whose repr raises does not fail the call)
            shown = ", ".join([*map(short_repr, args),
                               *(f"{k}={short_repr(v)}" for k, v in kwargs.items())])
            shown = shown if secrets is None else secrets.mask(shown)
            print("_" * 80)
            print(f"[Memory] Calling {_shown(self.name)}...")
            print(f"{label(self.func)}({shown})")

    def after(self, took: float, context: str = "") -> None:
        if self.verbose > 0:
            line = f"{label(self.func)} {context}- {took:.1f}s, {took / 60:.1f}min"
            print("_" * max(0, 80 - len(line)) + line)

    def metadata(self, args: Any, kwargs: Any, took: float, start: float) -> dict[str, Any]:
        inputs = {k: repr(v) for k, v in self.keys.arguments(args, kwargs).items()}
        return {"duration": took, "input_args": inputs, "time": start}

    def decorate(self, run: Any, call: Any, shelve: Any, check: Any, clear: Any) -> Any:
        """``run`` as ``functools.wraps(func)`` makes it, with joblib's attributes of a
        cached function (all in one dict: a fresh process's .cache() pays for each
        instruction)."""
        func = self.func
        if type(func) is _FUNCTION and _PLAIN_WRAP:
            run.__module__ = func.__module__
            run.__name__ = func.__name__
            run.__qualname__ = func.__qualname__
            run.__doc__ = func.__doc__
            run.__annotations__ = func.__annotations__
            inherited = func.__dict__
        else:
            functools.update_wrapper(run, func)  # (skips what a partial lacks)
            inherited = run.__dict__
        # (WRAPPER_MARK: the fingerprint knows it by it where its file is not known, a
        # worker's copy sent by cloudpickle; its code, which pickling keeps its own)
        run.__dict__ = {**inherited, "__wrapped__": func, "func": func, "ignore": self.ignore,
                        "mmap_mode": self.mmap_mode, "call": call, "call_and_shelve": shelve,
                        "store_name": self.name, "check_call_in_cache": check, "clear": clear,
                        WRAPPER_MARK: run.__code__}
        if type(func) is types.MethodType:
            self.wrap_method(run, func)
        return run

    def wrap_method(self, run: Any, method: types.MethodType) -> None:
        """A bound method's wrapper (``self.fit_cached = memory.cache(self.fit)``) as the
        fingerprint reads a cached function's, as the function it caches: its
        ``__wrapped__`` the method's function (its ``__signature__`` the method's, with
        no ``self``). The object it is set on is hashed, ``self`` of its calls: read as
        code, the wrapper's closure, dagnb's calls object, was hashed as the user's
        (warned of at each process's first call, in dagnb's file)."""
        function = _function_cached_by(method.__func__)  # (a cached method's: its own)
        if type(function) is _FUNCTION:
            run.__wrapped__ = function
            run.__signature__ = self.keys.signature


class _Uncached(_Calls):
    """``Memory(location=None)``: the function runs every time, nothing is stored."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _Uncached, (self.func, *_options_of(self.options))

    def wrapper(self) -> Any:
        if self.asynchronous:

            async def run(*args: Any, **kwargs: Any) -> Any:
                return (await self.call_async(*args, **kwargs))[0]

            return self.decorate(run, self.call_async, self.call_and_shelve_async,
                                 _never_cached, _nothing_to_clear)

        def run(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
            return self.call(*args, **kwargs)[0]

        return self.decorate(run, self.call, self.call_and_shelve, _never_cached,
                             _nothing_to_clear)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        value = self.func(*args, **kwargs)
        return value, self.metadata(args, kwargs, time.time() - start, start)

    async def call_async(self, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        value = await self.func(*args, **kwargs)
        return value, self.metadata(args, kwargs, time.time() - start, start)

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> Any:
        return _Value(self.call(*args, **kwargs)[0])

    async def call_and_shelve_async(self, *args: Any, **kwargs: Any) -> Any:
        return _Value((await self.call_async(*args, **kwargs))[0])


def _never_cached(*args: Any, **kwargs: Any) -> bool:
    """``check_call_in_cache`` of ``Memory(location=None)``'s functions."""
    return False


def _nothing_to_clear(warn: bool = True) -> None:
    """``clear`` of ``Memory(location=None)``'s functions."""


class _CachedCall(_Calls):
    """The lookup/run/save logic behind one decorated function."""

    store: Store
    memory: Memory
    max_age: float | None  # seconds: the oldest entry served (the ttl), None for any

    def __init__(self, memory: Memory | None, func: Callable[..., Any], ignore: list[str],
                 ttl: float | str | None, verbose: int, mmap_mode: str | None,
                 valid: Validity | None) -> None:
        # (_Calls.__init__'s fields set here: super() costs a fresh process's .cache())
        self.func, self.ignore, self.ttl = func, ignore, ttl
        self.verbose, self.mmap_mode, self.valid = verbose, mmap_mode, valid
        self.keys, self.name, self.asynchronous = _traits_of(func, ignore)
        self.loaded: dict[str, tuple[Entry, Any]] = {}  # key -> (entry, its result)
        if memory is not None:
            self._attach(memory)

    def _attach(self, memory: Memory) -> None:
        store: Store = memory.store  # type: ignore[assignment]  # (a Memory with a cache)
        self.store = store
        self.memory = memory
        # the ttl counts from each entry's creation, so that one saved before with none
        # (or a longer one) is not served past it
        ttl = self.ttl
        self.max_age = seconds_to_live(store.default_ttl if ttl is None else parse_ttl(ttl))
        memory._names.add(self.name)

    @property
    def fail_on_miss(self) -> bool:
        """``cache_mode='fail-on-miss'``: a call not stored raises CacheMissError (asked
        only on a miss, so not set up front)."""
        return self.memory.cache_mode == "fail-on-miss"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (joblib.Parallel's and dask's workers get a cached function with its
        closure, by cloudpickle): the same function on the same cache, there, with the
        sources its key was made of, which a function sent by value lacks (so that its
        keys there are the ones it has here), and its name (cloudpickle sends a script's
        code without its file, which the name is made of)."""
        spec = self.sent_spec()
        try:
            sources = source_table(self.func)
        except DagnbError:  # (not hashable here either: each call runs uncached)
            sources = {}
        # (and the script's own: an argument may hold one, sent by value too)
        sources = {**script_sources(), **sources}
        return _call_rebuilt, (spec, self.func, self.options, sources, self.name)

    def sent_spec(self) -> tuple[Any, ...]:
        """Its Memory's :meth:`Memory._spec`, to pickle it; TypeError when there is none."""
        spec = self.memory._spec()
        if spec is None:
            raise TypeError(
                f"{_shown(self.name)} is cached on a store backend object, which cannot be sent to "
                "another process; name the backend (Memory(location, backend='local'))"
            )
        return spec

    def entry(self, key: str, *, check: bool = True) -> Entry | None:
        """The entry for ``key`` if there is one that ``cache_validation_callback`` accepts."""
        entry = self.store.lookup(self.name, key, max_age=self.max_age)
        if entry is None or not check or self.valid is None:
            return entry
        return entry if self.valid(_metadata(entry)) else None

    def cached(self, key: str, *, check: bool = True) -> Any:
        """The cached result for ``key``, or NO_RESULT on a miss."""
        if self.valid is not None:
            entry = self.entry(key, check=check)
        elif self.max_age is None:  # (every hit: see load(); most set no ttl)
            entry = self.store.lookup(self.name, key, glance=True)
        else:
            entry = self.store.lookup(self.name, key, glance=True, max_age=self.max_age)
        if entry is None:
            self.loaded.pop(key, None)
            return NO_RESULT
        if not self._environment_looked:  # (once: its first hit)
            self._warn_of_environment()
        known = self.loaded.get(key)
        if known is not None and known[0] is entry:  # same meta.json: same result
            if self.verbose > 4:  # (kept in memory: loaded in no time, as joblib says it)
                self.after(0.0, "cache loaded ")
            return known[1]
        start = time.perf_counter() if self.verbose > 4 else 0.0
        try:
            inline = entry.inline  # (load()'s usual case inline: a call less a hit)
            value = self.load(entry) if inline is None else decode_inline(inline)
        except Exception as exc:  # a torn or foreign result file: a miss, as the design says
            self.loaded.pop(key, None)
            self.store.quarantine(self.name, key, f"its result cannot be loaded: {exc}", entry)
            return NO_RESULT
        if self.verbose > 4:
            self.after(time.perf_counter() - start, "cache loaded ")
        if known is None and type(value) in _ATOMS and len(self.loaded) < _LOADED_LIMIT:
            self.loaded[key] = (entry, value)  # (remember()'s usual case inline, as load's)
        else:
            self.remember(key, entry, value)
        return value

    _environment_looked = False  # (a class attribute: set at the first hit)

    def _warn_of_environment(self) -> None:
        """At the first hit: a function whose code takes ``os.environ`` whole, or reads it
        by names made at run time, reads variables its key cannot name; said once (a
        step served from the cache is warned of so too)."""
        self._environment_looked = True
        unkeyed = environ_unkeyed(self.keys.keyed)
        if unkeyed:
            said = unkeyed_reads_said(whole=WHOLE in unkeyed)
            warnings.warn(f"{label(self.func)} was served from the cache, but {said}, or pass "
                          "it as an argument", UnkeyedEnvironmentWarning,
                          stacklevel=user_stacklevel())

    def load(self, entry: Entry) -> Any:
        """The entry's result; memory-mapped arrays under ``mmap_mode``."""
        inline = entry.inline
        if inline is not None:  # a small result, kept in the entry's metadata itself
            return decode_inline(inline)
        files = entry.meta.get("files")  # the entry's manifest spares a stat per hit
        if isinstance(files, dict) and f"out/{_MMAP_FILE}" not in files:
            return entry.result()
        path = entry.out_dir / _MMAP_FILE
        if not path.exists():
            return entry.result()
        import joblib

        return joblib.load(path, mmap_mode=self.mmap_mode)

    def remember(self, key: str, entry: Entry, value: Any) -> None:
        """Keep the result for repeat hits, if no caller can change it (a number, a
        string, a tuple of them, an array mapped read-only): a frame, a list or a dict
        (one holding mapped arrays too) is loaded anew at each hit, as joblib does, so
        ``df["b"] = 1`` on one changes no later one. Only the most recent few."""
        self.loaded.pop(key, None)
        if type(value) not in _ATOMS and not _unchangeable(value):  # (most are atoms)
            return
        if len(self.loaded) >= _LOADED_LIMIT:
            # the oldest: another thread hitting at once may have dropped it first (or
            # changed the dict between iter and next)
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del self.loaded[next(iter(self.loaded))]
        self.loaded[key] = (entry, value)

    def save(self, key: StepKey, value: Any, took: float,
             secrets: SecretsInForce | None = None) -> Any:
        """Store the result; the value returned (memory-mapped under ``mmap_mode``).
        A read-only store keeps nothing, nor is a result holding a secret in force kept."""
        if self.store.read_only:
            return value
        if secrets is not None and secrets.finder:
            held = pickle_holds(value, secrets.finder)
            if held is not None:
                return self.holding_secret(value, held)
        inline = None if self.mmap_mode is not None else encode_inline(value, _INLINE_LIMIT)
        out = None
        try:
            if inline is None:  # (a cache it may not write: no scratch folder either)
                out = self.store.scratch_dir(self.name)
                self.write(out, value)
        except Exception as exc:  # the call worked: return its value, uncached (joblib's way)
            return self.uncached(value, out, exc)
        try:
            entry = self.store.save(self.name, key, out_dir=out, duration_s=took,
                                    ttl=self.ttl, inline=inline)
            if self.mmap_mode is not None:  # mapped from the first call on, as joblib does
                value = self.load(entry)
        except (OSError, CacheError) as exc:  # (a full disk; the entry removed by another
            return self.uncached(value, out, exc)  # process at once): as steps do
        self.remember(key.digest, entry, value)
        return value

    def uncached(self, value: Any, out: Path | None, exc: Exception) -> Any:
        """``value``, not stored because of ``exc``, said in a warning that says what to
        do: a full disk or a folder it may not write without the temporary file's name,
        so the warning is the same at each call (shown once, as warnings are). It names
        the caller's line, however deep in this module the call came here from."""
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
            why = (f"the call ran but was not cached: cache {str(self.store.location)!r} "
                   f"cannot be written ({os.strerror(exc.errno)})")
        elif isinstance(exc, (OSError, CacheError)):
            why = f"the call ran but was not cached: {exc}"
        else:
            why = (f"the result cannot be stored ({exc}), so this call is not cached; "
                   "return a picklable value to cache it")
        warnings.warn(f"{_shown(self.name)}: {why}", stacklevel=user_stacklevel())
        return value

    def holding_secret(self, value: Any, secret: str) -> Any:
        """``value``, not stored: it holds the value of secret ``secret`` (its name, never
        its value, said once in a warning, as :meth:`uncached` says why)."""
        remembered = "" if not outside_steps() else (
            " (a variable of this process's environment named as a secret)"
            if secret not in known_secrets() and secret in environ_secrets() else
            " (given to a run of this process, it stays known until the process ends or "
            "dagnb.cache.forget_secrets())")
        warnings.warn(f"{_shown(self.name)}: the call ran but was not cached: its result holds the "
                      f"value of secret {secret!r}{remembered}, and the cache keeps no "
                      "secret; return a result without the secret to cache it",
                      stacklevel=user_stacklevel())
        return value

    def write(self, out: Path, value: Any) -> None:
        if self.mmap_mode is None:
            save_result(out, value)
            return
        import joblib

        joblib.dump(value, out / _MMAP_FILE)

    def query(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.verbose >= 20:
            shown, secrets = short_repr(args, 80), secrets_in_force()
            _log.info(
                "Querying %s with signature %s(%s).\n(argument hash %s)\n"
                "The store location is %s.", self.name, label(self.func),
                shown if secrets is None else secrets.mask(shown), key, self.store.location,
            )

    def computing(self, key: str) -> None:
        if self.verbose > 10:
            _log.warning(
                "[Memory] Computing func %s, argument hash %s in location %s",
                self.name, key, self.store.location,
            )

    def wrapper(self) -> Any:
        # The key is computed once, before running: the call may mutate its arguments
        # or the globals its code reads. (Only ``run`` is made here, joblib's ``call``,
        # ``call_and_shelve`` and the rest are methods: a fresh process's .cache() pays
        # for each closure it makes.)
        keys = self.keys
        if self.asynchronous:

            async def run(*args: Any, **kwargs: Any) -> Any:
                key = keys.digest(args, kwargs)
                value = self.cached(key) if self.verbose < 20 else self.lookup(key, args, kwargs)
                if value is NO_RESULT:
                    async with self.claim(key, asynchronous=True):
                        value = self.computed_meanwhile(key, args, kwargs)
                        if value is NO_RESULT:
                            components = keys.components(args, kwargs)
                            value, _, _ = await self.execute_async(components, args, kwargs)
                return value

            return self.decorate(run, self.call_async, self.call_and_shelve_async,
                                 self.check_call_in_cache, self.clear)

        def run(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
            key = keys.digest(args, kwargs)
            value = self.cached(key) if self.verbose < 20 else self.lookup(key, args, kwargs)
            if value is NO_RESULT:
                # one process computes a key at a time; the others wait, then hit
                with self.claim(key):
                    value = self.computed_meanwhile(key, args, kwargs)
                    if value is NO_RESULT:
                        value, _, _ = self.execute(keys.components(args, kwargs), args, kwargs)
            return value

        return self.decorate(run, self.call, self.call_and_shelve, self.check_call_in_cache,
                             self.clear)

    def execute(self, components: dict[str, str], args: Any, kwargs: Any) -> Any:
        """Run and store; ``(value, took, start)`` (metadata only if asked for)."""
        key, secrets = self._starting(components, args, kwargs)
        start, clock = time.time(), time.perf_counter()
        value = self.func(*args, **kwargs)
        took = time.perf_counter() - clock
        return self._finished(key, value, took, components, secrets), took, start

    async def execute_async(self, components: dict[str, str], args: Any, kwargs: Any) -> Any:
        """:meth:`execute` of a coroutine function."""
        key, secrets = self._starting(components, args, kwargs)
        start, clock = time.time(), time.perf_counter()
        value = await self.func(*args, **kwargs)
        took = time.perf_counter() - clock
        return self._finished(key, value, took, components, secrets), took, start

    def _starting(self, components: dict[str, str], args: Any,
                  kwargs: Any) -> tuple[StepKey, SecretsInForce | None]:
        """A miss about to run (refused under ``fail-on-miss``): its key (descriptions
        masked by the secrets in force, a step's when one runs the call), said as verbose
        asks."""
        self.refuse_miss()
        self.memory.refuse_foreign_folder()  # (.call() takes no lock)
        secrets = secrets_in_force()
        key = self.keys.step_key(components, args, kwargs,
                                 None if secrets is None else secrets.mask)
        self.computing(key.digest)
        self.before(args, kwargs, secrets)
        return key, secrets

    def _finished(self, key: StepKey, value: Any, took: float, components: dict[str, str],
                  secrets: SecretsInForce | None) -> Any:
        """A miss that ran: said, warned of state it read, stored; the value returned."""
        self.after(took)
        self.keys.warn_of_state(components)
        return self.save(key, value, took, secrets)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """joblib's ``call``: run even if cached, store; ``(result, metadata)``. Refused
        under ``fail-on-miss``, which runs nothing."""
        self.refuse_call()
        value, took, start = self.execute(self.keys.components(args, kwargs), args, kwargs)
        return value, self.metadata(args, kwargs, took, start)

    async def call_async(self, *args: Any, **kwargs: Any) -> Any:
        self.refuse_call()
        components = self.keys.components(args, kwargs)
        value, took, start = await self.execute_async(components, args, kwargs)
        return value, self.metadata(args, kwargs, took, start)

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> ShelvedResult | _Value:
        """Run the call unless cached; a handle on the stored result."""
        digest = self.keys.digest(args, kwargs)
        if self.entry(digest) is None:
            # one process computes a key at a time, as a call does: the others wait, then
            # take its entry (each computed it before)
            with self.claim(digest):
                if self.entry_again(digest) is None:
                    value, _, _ = self.execute(self.keys.components(args, kwargs), args,
                                               kwargs)
                    if self.store.read_only or self.store.peek(self.name, digest) is None:
                        return _Value(value)  # (not stored: a secret, a full disk)
        elif not self._environment_looked:  # (a hit)
            self._warn_of_environment()
        return ShelvedResult(self, digest)

    async def call_and_shelve_async(self, *args: Any, **kwargs: Any) -> ShelvedResult | _Value:
        digest = self.keys.digest(args, kwargs)
        if self.entry(digest) is None:
            async with self.claim(digest, asynchronous=True):  # (see call_and_shelve)
                if self.entry_again(digest) is None:
                    components = self.keys.components(args, kwargs)
                    value, _, _ = await self.execute_async(components, args, kwargs)
                    if self.store.read_only or self.store.peek(self.name, digest) is None:
                        return _Value(value)  # (not stored: a secret, a full disk)
        elif not self._environment_looked:  # (a hit)
            self._warn_of_environment()
        return ShelvedResult(self, digest)

    def claim(self, key: str, *, asynchronous: bool = False) -> Any:
        """After a miss: the key's lock (``with`` or ``async with``); none where nothing is
        stored (``read-only``; ``fail-on-miss``, whose lock would make the cache folder)."""
        if self.store.read_only or self.fail_on_miss:
            return contextlib.nullcontext()
        self.memory.refuse_foreign_folder()  # (before the lock makes .locks there)
        if asynchronous:
            return self.store.alock(self.name, key)
        return self.store.lock(self.name, key)

    def refuse_miss(self) -> None:
        """Under ``fail-on-miss``, a call about to run raises CacheMissError (its callers
        have looked for it afresh: see :meth:`cached_again`)."""
        if self.fail_on_miss:
            reason = "no stored call with these arguments"
            raise CacheMissError(
                f"{_shown(self.name)}: {reason}, and cache_mode is 'fail-on-miss'; store it "
                "with a call under 'read-write' first, or pull the cache that holds it "
                "(dagnb cache pull URL)",
                misses=[(_shown(self.name), reason)],
            )

    def refuse_call(self) -> None:
        """Under ``fail-on-miss``, ``.call()``, which always runs, raises CacheMissError."""
        if self.fail_on_miss:
            reason = ".call() always runs the function"
            raise CacheMissError(
                f"{_shown(self.name)}: {reason}, and cache_mode 'fail-on-miss' runs nothing; "
                "call the function itself to take its stored result",
                misses=[(_shown(self.name), reason)])

    def cached_again(self, key: str, *, check: bool = True) -> Any:
        """:meth:`cached` after it missed: the call may have been stored by another process
        since this one read the packs (a lookup's miss reads them again only if they were
        not read a moment ago), so they are read again first (:meth:`Store.peek` does)."""
        if self.store.peek(self.name, key) is None:
            return NO_RESULT
        return self.cached(key, check=check)

    def entry_again(self, key: str) -> Entry | None:
        """:meth:`entry` after it found none, the packs read again first (see
        :meth:`cached_again`)."""
        return None if self.store.peek(self.name, key) is None else self.entry(key)

    def computed_meanwhile(self, key: str, args: Any, kwargs: Any) -> Any:
        """After a miss, with the key's lock held: the result another process stored while
        this one waited, or NO_RESULT (a second miss is not counted twice)."""
        if self.store.peek(self.name, key) is None:
            return NO_RESULT
        return self.lookup(key, args, kwargs)

    def lookup(self, key: str, args: Any, kwargs: Any) -> Any:
        """The cached value of a call (``key``, its digest), or NO_RESULT; verbose
        callers hear of the query."""
        if self.verbose >= 20:
            self.query(key, args, kwargs)
        return self.cached(key)

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        now = self.store.clock()
        entry = self.store.peek(self.name, self.keys.digest(args, kwargs))
        if entry is None or entry.expired(now, self.max_age):
            return False
        return self.valid is None or bool(self.valid(_metadata(entry)))

    def clear(self, warn: bool = True) -> None:
        """Remove every cached call of this function."""
        if warn and self.verbose > 0:
            print(f"[Memory] Clearing function cache identified by {self.name}")
        self.loaded.clear()
        with _refused_where_unwritable(self.store, "clear"):
            self.store.clear(self.name)



def _runs_made_by(*wrappers: Callable[..., Any]) -> dict[int, int]:
    """The code of each ``run`` the ``wrapper`` methods make (by id: it lives as long as
    this module) -> where its closure holds the calls object (``self``)."""
    return {id(code): code.co_freevars.index("self") for wrapper in wrappers
            for code in wrapper.__code__.co_consts
            if isinstance(code, types.CodeType) and code.co_name == "run"}


_RUN_CELLS = _runs_made_by(_Uncached.wrapper, _CachedCall.wrapper)  # (see _function_cached_by)

_ATOMS = (type(None), bool, int, float, complex, str, bytes, range)


def _unchangeable(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` cannot be changed in place: an atom, an array mapped
    read-only, or a tuple or frozenset of such (a few levels deep)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind in (tuple, frozenset) and depth < 3:
        return all(_unchangeable(item, depth + 1) for item in value)
    return _mapped_read_only(value)


def _mapped_read_only(value: Any) -> bool:
    """A memory map numpy will not make writable again (``mmap_mode="r"``'s); an array
    loaded from an entry stored without ``mmap_mode`` is writable, so not one."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.memmap) and not value.flags.writeable


def _shared_location(location: str | Path | None, store: Store) -> str | Path:
    """The cache's location as another process finds it: absolute (a worker may start
    elsewhere), a URL as given; a ``Path`` given stays one (``memory.location / "x"``
    in a worker, as with joblib's)."""
    text = os.fspath(location or "")
    if is_url(text):
        return text
    return Path(store.location) if isinstance(location, PurePath) else str(store.location)


_REBUILT: dict[tuple[Any, ...], Memory] = {}  # spec -> the Memory made for it here


class _SentCall(_CachedCall):
    """A cached call sent from another process (see :meth:`_CachedCall.__reduce__`): its
    Memory is made when first used, so a dask scheduler, which unpickles and passes on
    what it is given, makes no cache. (A class of its own: a ``__getattr__`` keeps
    CPython from specializing every attribute read of the calls that have none.)"""

    def __init__(self, spec: tuple[Any, ...], func: Callable[..., Any],
                 options: Mapping[str, Any], sources: Mapping[str, Any],
                 name: str | None = None) -> None:
        super().__init__(None, func, *_options_of(options))
        if name is not None:  # (None: sent by a version that sent no name)
            self.name = name  # (the sender's: where its entries are)
        self.sent = (spec, sources)

    def __getattr__(self, name: str) -> Any:
        if name not in ("store", "memory", "max_age"):
            raise AttributeError(name)
        self._attach(_memory_of(self.sent[0]))
        return getattr(self, name)

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent on as it came."""
        return _call_rebuilt, (self.sent[0], self.func, self.options, self.sent[1], self.name)


def _call_rebuilt(spec: tuple[Any, ...], func: Callable[..., Any], options: Mapping[str, Any],
                  sources: Mapping[str, Any], name: str | None = None) -> _CachedCall:
    """A pickled cached call, made again in this process (its Memory when first used);
    ``name`` None: pickled by a version before names were sent, named here as there."""
    adopt_sources(sources)
    return _SentCall(spec, func, options, sources, name)


def _memory_of(spec: tuple[Any, ...]) -> Memory:
    """A pickled Memory, made again in this process: one per cache and settings (its
    store counts the hits of every call sent here)."""
    location, ttl, backend, verbose, clock, mmap_mode, bytes_limit, mode = spec
    shared = (location, ttl, backend, verbose, mmap_mode, bytes_limit, mode)  # (a clock
    try:  #                                          sent by value is new each time)
        memory = _REBUILT.get(shared)
    except TypeError:  # (settings that do not hash: a Memory for this one alone)
        memory, shared = None, None
    if memory is None:
        memory = Memory(location, ttl, backend, verbose, clock, mmap_mode=mmap_mode,
                        bytes_limit=bytes_limit, cache_mode=mode)
        if shared is not None:
            _REBUILT[shared] = memory
    return memory


def _kept_how(url: str) -> str:
    """What becomes of a store's copies a clear of the local tier left there."""
    from dagnb.cache.clearing import in_memory_only

    if in_memory_only(url):  # (fsspec's memory store: this process's alone)
        return ", in this process only (a memory:// store ends with it)"
    if url.lower().startswith("file:"):
        return (", which another process downloads again (they stay in its folder until "
                "deleted there)")
    return ", which another process downloads again (the bucket's lifecycle rules remove them)"
