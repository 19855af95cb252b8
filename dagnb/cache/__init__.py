"""The content-addressed cache: keys, the store of entries, and why a step misses.

The module-level functions act on the default store, in the configured cache
directory (``.dagnb_cache`` in the working directory unless
:func:`set_default_location` says otherwise)::

    import dagnb.cache
    dagnb.cache.entries()            # one row per entry
    dagnb.cache.stats()              # per step: entries, hits, misses, hit_rate, bytes
    dagnb.cache.reduce_size(bytes_limit="1G")
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from dagnb import fingerprint
from dagnb.cache import explain as _explain_module
from dagnb.cache.backend import LocalBackend, StoreBackend, get_backend, register_backend
from dagnb.cache.keys import CACHE_FORMAT, StepKey, key_digest, step_key
from dagnb.cache.store import STORE_FORMAT, DamagedEntryWarning, Entry, SessionStore, Store

__all__ = [
    "CACHE_FORMAT",
    "STORE_FORMAT",
    "DamagedEntryWarning",
    "Entry",
    "LocalBackend",
    "SessionStore",
    "StepKey",
    "Store",
    "StoreBackend",
    "clear",
    "default_location",
    "default_store",
    "entries",
    "explain",
    "explain_frame",
    "get_backend",
    "key_digest",
    "reduce_size",
    "register_backend",
    "session_store",
    "set_default_location",
    "set_default_ttl",
    "stats",
    "step_key",
    "warm",
]

_location = Path(".dagnb_cache")
_ttl: float | str | None = None
_default: Store | None = None
_session: SessionStore | None = None


def set_default_location(path: str | os.PathLike[str]) -> None:
    """Use ``path`` as the cache directory of the default store (and its stat cache)."""
    global _location, _default
    # a relative path stays relative: it follows the working directory, as the runner's does
    _location, _default = Path(path).expanduser(), None
    fingerprint.configure_stat_cache(_location.absolute() / "stat-cache.json")


def set_default_ttl(ttl: float | str | None) -> None:
    """Seconds (or ``"1d"``) after which entries saved by the default store expire."""
    global _ttl, _default
    _ttl, _default = ttl, None


def default_location() -> Path:
    """The cache directory of the default store."""
    return _location.absolute()


def default_store() -> Store:
    """The store in the configured directory (created on first use)."""
    global _default
    # a relative default follows the working directory (a notebook may chdir)
    if _default is None or _default.location != default_location():
        _default = Store(default_location(), default_ttl=_ttl)
        fingerprint.configure_stat_cache(_default.location / "stat-cache.json")
    return _default


def session_store() -> SessionStore:
    """The process-wide store of ``cache="session"`` steps."""
    global _session
    if _session is None:
        _session = SessionStore()
    return _session


def entries(step: str | None = None) -> Any:
    """One row per entry of the default store (see :meth:`Store.entries`)."""
    return default_store().entries(step)


def stats() -> Any:
    """Per-step statistics of the default store (see :meth:`Store.stats`)."""
    return default_store().stats()


def clear(step: str | None = None, older_than: float | str | None = None) -> int:
    """Remove entries of the default store; how many (see :meth:`Store.clear`)."""
    return default_store().clear(step, older_than)


def reduce_size(
    bytes_limit: int | str | None = None,
    items_limit: int | None = None,
    age_limit: timedelta | float | str | None = None,
) -> int:
    """Evict least recently used entries of the default store (see :meth:`Store.reduce_size`)."""
    return default_store().reduce_size(bytes_limit, items_limit, age_limit)


def explain(step_name: str, key: StepKey) -> list[str]:
    """Why ``key`` misses in the default store (see :func:`dagnb.cache.explain.explain`)."""
    return _explain_module.explain(default_store(), step_name, key)


def explain_frame(step_name: str, key: StepKey) -> Any:
    """:func:`explain` as a DataFrame."""
    return _explain_module.explain_frame(default_store(), step_name, key)


def warm(graph: Any, targets: Any = None, **options: Any) -> Any:
    """Pre-fill the cache for a graph's steps (runs what is missing); returns the Run."""
    from dagnb.runtime.plan import warm as _warm

    return _warm(graph, targets, **options)

