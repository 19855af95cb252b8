"""Memory: joblib.Memory-style caching of Python function calls on dagnb's store.

::

    memory = Memory(".dagnb_cache")

    @memory.cache
    def load(path, n=10): ...

    @memory.cache(ignore=["verbose"], ttl="1d")
    async def fetch(url, verbose=False): ...

A call's key is the function's :func:`~dagnb.fingerprint.code_digest` plus one
:func:`~dagnb.fingerprint.value_digest` per bound argument (``arg:<name>``
components, so :func:`dagnb.cache.explain` can name the argument that changed). Results
go into the same store layout as steps, under ``<module>.<qualname>`` (step names never
contain a dot, so the two never collide).

A repeat hit is a dictionary lookup and one ``stat``: the loaded result is kept in
memory while the entry's ``meta.json`` is unchanged, so it is the *same object* each
time: do not mutate a cached result in place.
"""

from __future__ import annotations

import functools
import inspect
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from dagnb.cache.keys import CACHE_FORMAT, StepKey, key_digest
from dagnb.cache.store import Entry, Store
from dagnb.errors import DagnbError
from dagnb.fingerprint import code_digest, code_source_parts, value_digest
from dagnb.model.results import NO_RESULT, save_result

__all__ = ["CachedFunction", "Memory"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_LOADED_LIMIT = 128  # results kept in memory per function, most recently used


class CachedFunction(Protocol[P, R_co]):
    """What ``@memory.cache`` returns: the function, plus cache controls."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def call(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Run the function even if cached, store and return its result."""
        ...

    def check_call_in_cache(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether this call has a valid entry (nothing runs, nothing is recorded)."""
        ...

    def clear(self) -> None:
        """Remove every cached call of this function."""
        ...


def _step_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` made safe as a directory name."""
    name = f"{func.__module__}.{func.__qualname__}"
    return _UNSAFE.sub("_", name.replace("<locals>", "locals").replace("<lambda>", "lambda"))


class _CallKeys(Generic[P]):
    """Turns a call's arguments into a key; the signature is bound once."""

    __slots__ = ("func", "ignore", "signature")

    def __init__(self, func: Callable[P, Any], ignore: Iterable[str]) -> None:
        self.func = func
        self.signature = inspect.signature(func)
        self.ignore = frozenset(ignore)
        unknown = self.ignore - set(self.signature.parameters)
        if unknown:
            raise DagnbError(
                f"ignore={sorted(unknown)!r} names no parameter of {func.__qualname__}; "
                f"its parameters are {list(self.signature.parameters)!r}"
            )

    def components(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        components = {"format": CACHE_FORMAT, "code": code_digest(self.func)}
        for name, value in bound.arguments.items():
            if name not in self.ignore:
                components[f"arg:{name}"] = value_digest(value)
        return components

    def step_key(
        self, components: dict[str, str], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> StepKey:
        """The full key, with descriptions for explain (only built on a miss)."""
        describe = {"code": "\n\n".join(code_source_parts(self.func).values())}
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            if name not in self.ignore:
                describe[f"arg:{name}"] = _short_repr(value)
        return StepKey(key_digest(components), components, describe)


def _short_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Memory:
    """Cache function results on disk, keyed by code and arguments.

    Parameters
    ----------
    location
        Cache directory (shared with dagnb steps' cache if you like).
    ttl
        Default time to live of entries (seconds or ``"1d"``); None keeps them.
    backend
        A registered store backend name.
    verbose
        0 is silent; 1 prints a line when a call runs instead of hitting the cache.
    clock
        Current time in seconds; tests inject a fake one.
    """

    def __init__(
        self,
        location: str = ".dagnb_cache",
        ttl: float | str | None = None,
        backend: str = "local",
        verbose: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = Store(location, backend=backend, clock=clock, default_ttl=ttl)
        self.verbose = verbose
        self._names: set[str] = set()

    def __repr__(self) -> str:
        return f"Memory(location={str(self.store.location)!r})"

    @overload
    def cache(self, func: Callable[P, R]) -> CachedFunction[P, R]: ...

    @overload
    def cache(
        self, func: None = None, *, ignore: Iterable[str] = (), ttl: float | str | None = None
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...

    def cache(
        self,
        func: Callable[P, R] | None = None,
        *,
        ignore: Iterable[str] = (),
        ttl: float | str | None = None,
    ) -> Any:
        """Decorate a sync or async function so its results are cached.

        Usable bare (``@memory.cache``) or with options
        (``@memory.cache(ignore=["verbose"], ttl="1h")``). The wrapper keeps the
        function's signature and adds ``call``, ``check_call_in_cache`` and ``clear``.
        """
        if func is None:
            return lambda f: self.cache(f, ignore=ignore, ttl=ttl)
        return _CachedCall(self, func, ignore, ttl).wrapper()

    def clear(self) -> None:
        """Remove the entries of every function cached through this Memory."""
        for name in self._names:
            self.store.clear(name)

    def reduce_size(
        self,
        bytes_limit: int | str | None = None,
        items_limit: int | None = None,
        age_limit: timedelta | float | str | None = None,
    ) -> int:
        """Evict least recently used entries (``joblib.Memory.reduce_size`` semantics)."""
        return self.store.reduce_size(bytes_limit, items_limit, age_limit)


class _CachedCall:
    """The lookup/run/save logic behind one decorated function."""

    def __init__(
        self, memory: Memory, func: Callable[..., Any], ignore: Iterable[str], ttl: Any
    ) -> None:
        self.memory, self.store, self.func, self.ttl = memory, memory.store, func, ttl
        self.name = _step_name(func)
        self.keys = _CallKeys(func, ignore)
        self.loaded: dict[str, tuple[Entry, Any]] = {}  # key -> (entry, its result)
        memory._names.add(self.name)

    def cached(self, key: str) -> Any:
        """The cached result for ``key``, or NO_RESULT on a miss."""
        entry = self.store.lookup(self.name, key)
        if entry is None:
            self.loaded.pop(key, None)
            return NO_RESULT
        known = self.loaded.get(key)
        if known is not None and known[0] is entry:  # same meta.json: same result
            return known[1]
        try:
            value = entry.result()
        except Exception as exc:  # a torn or foreign result file: a miss, as the design says
            self.loaded.pop(key, None)
            self.store.quarantine(self.name, key, f"its result cannot be loaded: {exc}")
            return NO_RESULT
        self.remember(key, entry, value)
        return value

    def remember(self, key: str, entry: Entry, value: Any) -> None:
        """Keep the result for repeat hits; only the most recent few, not every call's."""
        self.loaded.pop(key, None)
        if len(self.loaded) >= _LOADED_LIMIT:
            del self.loaded[next(iter(self.loaded))]
        self.loaded[key] = (entry, value)

    def save(self, key: StepKey, value: Any, took: float) -> Any:
        out = self.store.scratch_dir(self.name)
        try:
            save_result(out, value)
        except Exception as exc:  # the call worked: return its value, uncached (joblib's way)
            shutil.rmtree(out, ignore_errors=True)
            warnings.warn(
                f"{self.name}: the result cannot be stored ({exc}), so this call is not "
                "cached; return a picklable value to cache it",
                stacklevel=4,
            )
            return value
        entry = self.store.save(self.name, key, out_dir=out, duration_s=took, ttl=self.ttl)
        self.remember(key.digest, entry, value)
        return value

    def note(self, args: tuple[Any, ...]) -> None:
        if self.memory.verbose:
            print(f"[Memory] calling {self.name}{_short_repr(args, 80)}")

    def wrapper(self) -> Any:
        # The key is computed once, before running: the call may mutate its arguments
        # or the globals its code reads.
        func, keys = self.func, self.keys
        if inspect.iscoroutinefunction(func):

            async def run(*args: Any, **kwargs: Any) -> Any:
                components = keys.components(args, kwargs)
                value = self.cached(key_digest(components))
                return await execute(components, args, kwargs) if value is NO_RESULT else value

            async def execute(components: dict[str, str], args: Any, kwargs: Any) -> Any:
                key = keys.step_key(components, args, kwargs)
                self.note(args)
                start = time.perf_counter()
                value = await func(*args, **kwargs)
                return self.save(key, value, time.perf_counter() - start)

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await execute(keys.components(args, kwargs), args, kwargs)

        else:

            def run(*args: Any, **kwargs: Any) -> Any:
                components = keys.components(args, kwargs)
                value = self.cached(key_digest(components))
                return execute(components, args, kwargs) if value is NO_RESULT else value

            def execute(components: dict[str, str], args: Any, kwargs: Any) -> Any:
                key = keys.step_key(components, args, kwargs)
                self.note(args)
                start = time.perf_counter()
                value = func(*args, **kwargs)
                return self.save(key, value, time.perf_counter() - start)

            def call(*args: Any, **kwargs: Any) -> Any:
                return execute(keys.components(args, kwargs), args, kwargs)

        return self.decorate(run, call)

    def decorate(self, run: Any, call: Any) -> Any:
        functools.update_wrapper(run, self.func)
        run.call = call
        run.check_call_in_cache = self.check_call_in_cache
        run.clear = functools.partial(self.store.clear, self.name)
        run.store_name = self.name
        return run

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        now = self.store.clock()
        entry = self.store.peek(self.name, key_digest(self.keys.components(args, kwargs)))
        return entry is not None and not entry.expired(now)
