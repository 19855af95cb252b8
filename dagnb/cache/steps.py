"""The runner's side of the cache: which store a step uses, its key, save and restore.

A step's key is made from its own spec and its upstream steps' *output* digests, so
an upstream step that runs again and writes the same outputs leaves its dependents
cached (early cutoff).
"""

from __future__ import annotations

import atexit
import contextlib
import pickle
import threading
import warnings
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from dagnb import cache as _cache
from dagnb.cache.keys import StepKey, step_key
from dagnb.cache.store import Entry, SessionStore, Store
from dagnb.fingerprint import directory_digest, text_digest, value_digest
from dagnb.model.results import NO_RESULT, save_result
from dagnb.model.step import Step

__all__ = ["StepCache", "store_at", "wait_for_flushes"]

_lock = threading.Lock()
_stores: dict[Path, Store] = {}
_flushing: list[threading.Thread] = []


def store_at(location: Path) -> Store:
    """The process-wide Store for ``location`` (one per folder keeps its memory warm)."""
    location = location.absolute()
    if location == _cache.default_location():
        return _cache.default_store()
    with _lock:
        if location not in _stores:
            _stores[location] = Store(location)
        return _stores[location]


class StepCache:
    """Cache decisions for one run: the store, refresh, the version salt."""

    def __init__(
        self,
        location: Path,
        *,
        refresh: bool | Any = False,
        version: str = "",
        ttl: float | None = None,
    ) -> None:
        self.store = store_at(location)
        self.ttl = ttl  # for steps that set none; a Store is shared, so not its default
        self.session: SessionStore = _cache.session_store()
        self.version = version
        self._refresh_all = refresh is True
        self._refresh = set() if isinstance(refresh, bool) else set(refresh)

    def enabled_for(self, step: Step) -> bool:
        """False for ``cache=False`` steps."""
        return step.cache is not False

    def _store(self, step: Step) -> Store | SessionStore:
        return self.session if step.cache == "session" else self.store

    def key(self, step: Step, upstream_digests: Mapping[str, str], base_dir: Path) -> StepKey:
        """The step's key from its spec, inputs and upstream output digests."""
        return step_key(
            step, upstream_digests=upstream_digests, base_dir=base_dir, cache_version=self.version
        )

    def lookup(self, step: Step, key: StepKey, *, recheck: bool = False) -> Entry | None:
        """The entry to reuse, or None (always None for steps being refreshed).

        ``recheck`` is the second look, under the lock: a miss there was counted already.
        """
        if self._refresh_all or step.name in self._refresh:
            return None
        store = self._store(step)
        if recheck and store.peek(step.name, key) is None:
            return None
        return store.lookup(step.name, key)

    @contextlib.asynccontextmanager
    async def lock(self, step: Step, key: StepKey) -> AsyncIterator[None]:
        """Across processes, one runs a key while the others wait, then hit."""
        if step.cache == "session":
            yield
            return
        async with self.store.alock(step.name, key):
            yield

    def save(
        self,
        step: Step,
        key: StepKey,
        *,
        out_dir: Path,
        result: Any,
        logs: list[dict[str, Any]],
        exit_code: int,
        duration_s: float,
    ) -> Entry | None:
        """Store the outputs (and the Python result); None if the result cannot be stored."""
        out_dir.mkdir(parents=True, exist_ok=True)
        if result is not NO_RESULT and not _saved(step, out_dir, result):
            return None
        return self._store(step).save(
            step.name,
            key,
            out_dir=out_dir,
            logs=logs,
            exit_code=exit_code,
            duration_s=duration_s,
            ttl=step.ttl if step.ttl is not None else self.ttl,
        )

    @staticmethod
    def digest_of(out_dir: Path, result: Any) -> str:
        """Output digest of a step that was not stored: its files and its result."""
        files = directory_digest(out_dir) if out_dir.is_dir() else "no-files"
        value = "no-result" if result is NO_RESULT else _result_digest(result)
        return text_digest(files + value)

    def close(self) -> None:
        """Write the hit counts kept in memory, off the run's path: a file per entry
        would cost a fully cached re-run more than all its lookups (the store also
        flushes at exit)."""
        thread = threading.Thread(target=self.store.flush, name="dagnb-cache-flush")
        with _lock:
            _flushing.append(thread)
        thread.start()


def wait_for_flushes() -> None:
    """Wait until hit counts of finished runs are written (before removing a cache)."""
    with _lock:
        threads, _flushing[:] = list(_flushing), []
    for thread in threads:
        thread.join()


def _result_digest(result: Any) -> str:
    try:
        return value_digest(result)
    except Exception:  # an unhashable result: downstream keys cannot be trusted
        return "unhashable-" + str(id(result))


def _saved(step: Step, out_dir: Path, result: Any) -> bool:
    try:
        save_result(out_dir, result)
        return True
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        warnings.warn(
            f"step {step.name!r}: its result cannot be pickled ({exc}), so it is not cached; "
            "return plain data or write files to dagnb.current().out_dir",
            stacklevel=2,
        )
        return False


atexit.register(wait_for_flushes)
