"""The content-addressed cache: keys, the store of entries, and why a step misses.

:func:`store_for` is the one way to the store of a folder: it reads the settings when
called (``cache_directory`` unless a folder is named; a relative one follows the working
directory) and keeps one :class:`Store` per folder in :func:`dagnb.config.context`. The
module-level functions act on the store of the configured directory::

    import dagnb.cache
    dagnb.cache.entries()            # one row per entry
    dagnb.cache.stats()              # per step: entries, hits, misses, hit_rate, bytes
    dagnb.cache.reduce_size(bytes_limit="1G")
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from dagnb import checks, fingerprint
from dagnb.cache import explain as _explain_module
from dagnb.cache import remote as _remote
from dagnb.cache.backend import Item, LocalBackend, StoreBackend, get_backend, register_backend
from dagnb.cache.forks import ForkSafeLock
from dagnb.cache.housekeeping import ENTRY_KEY
from dagnb.cache.keys import CACHE_FORMAT, StepKey, key_digest, step_key
from dagnb.cache.location import absolute, default_location, local_folder, made_by_a_store
from dagnb.cache.remote import RemoteBackend  # registers the "remote" backend
from dagnb.cache.secret_scan import forget_secrets
from dagnb.cache.store import STORE_FORMAT, DamagedEntryWarning, Entry, SessionStore, Store
from dagnb.checks import is_url
from dagnb.config import context, settings
from dagnb.errors import CacheError, ConfigError

__all__ = [
    "CACHE_FORMAT",
    "STORE_FORMAT",
    "DamagedEntryWarning",
    "Entry",
    "Item",
    "LocalBackend",
    "RemoteBackend",
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
    "forget_secrets",
    "get_backend",
    "is_cache_folder",
    "key_digest",
    "local_folder",
    "reduce_size",
    "refuse_foreign_folder",
    "register_backend",
    "session_store",
    "stats",
    "step_key",
    "store_entries",
    "store_for",
    "sync",
]


# folders a store makes in its cache folder: a used one holds at least one of them
# files dagnb writes at a cache's top (image pins, file digests), maybe before any entry
_STORE_FILES = ("images.json", "stat-cache.json")


def is_cache_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (or can become) a dagnb cache folder: one holding a folder a
    store makes, or nothing of anyone else's: hidden files (``.gitignore``,
    ``.DS_Store``), the files dagnb writes at a cache's top, steps' folders of entries
    (a cache copied without its hidden folders). Commands that walk or write entries
    refuse anything else: the folders of a project are not entries to set aside."""
    try:
        names = os.listdir(path)
    except NotADirectoryError:
        return False
    if made_by_a_store(names):
        return True
    return all(name.startswith(".") or name in _STORE_FILES
               or _holds_entries(os.path.join(path, name)) for name in names)


def _holds_entries(folder: str) -> bool:
    """Whether ``folder`` is a step's folder of entries: entries' folders (named by their
    key, each with its ``meta.json``) and nothing else but hidden files. (Read once per
    folder and process, and only for a folder with none of a store's own folders.)"""
    try:
        with os.scandir(folder) as children:
            found = [child for child in children if not child.name.startswith(".")]
    except OSError:  # a file, or unreadable
        return False
    return bool(found) and all(
        ENTRY_KEY.fullmatch(child.name) is not None
        and os.path.isfile(os.path.join(child.path, "meta.json")) for child in found)


def refuse_foreign_folder(folder: Path) -> None:
    """Refuse to cache in ``folder`` when it holds other things (a project folder given as
    the cache): entries would be mixed with the user's files, and ``cache verify`` would
    set aside those named like a step. A new or empty folder, or a cache, passes."""
    try:
        ours = is_cache_folder(folder)
    except FileNotFoundError:
        return  # made when first needed
    except OSError:
        return  # unreadable: the store's own error says so when it uses it
    if ours:
        return
    if not folder.is_dir():
        raise ConfigError(f"cache directory {str(folder)!r} is a file, not a folder; name a "
                          "new or empty folder for the cache")
    if _holds_joblib_cache(folder):  # (joblib.Memory("cachedir") ported as is)
        raise ConfigError(
            f"cache directory {str(folder)!r} holds a joblib cache, "
            "which dagnb does not read; name another folder for dagnb's, such as "
            f"{str(folder / '.dagnb_cache')!r}, or remove the joblib folder (its results "
            "are computed again either way)")
    raise ConfigError(
        f"cache directory {str(folder)!r} holds other files and is not a dagnb cache "
        "(nothing dagnb makes, such as .runs or .packs, in it); name a new or empty folder, "
        f"such as {str(folder / '.dagnb_cache')!r}")


def _holds_joblib_cache(folder: Path) -> bool:
    """Whether ``folder`` is a joblib.Memory location, and nothing else but hidden files:
    its ``joblib`` folder (a location given as text), or the module folders joblib makes
    in it (given as a Path)."""
    names = [name for name in os.listdir(folder) if not name.startswith(".")]
    if names == ["joblib"]:
        return (folder / "joblib").is_dir()
    return bool(names) and all(_joblib_module_folder(folder / name) for name in names)


def _joblib_module_folder(path: Path) -> bool:
    """``<module>/<function>/func_code.py``, or ``<function>/<call>/output.pkl`` (a
    process writes ``func_code.py`` once: another's cache may have none)."""
    with contextlib.suppress(OSError):
        return any((function / "func_code.py").is_file()
                   or any((call / "output.pkl").is_file() for call in function.iterdir())
                   for function in path.iterdir() if function.is_dir())
    return False


def store_for(
    directory: str | os.PathLike[str] | None = None, *, read_only: bool = False
) -> Store:
    """The process-wide store of ``directory`` (the configured one when None).

    A store URL (``s3://bucket/prefix``, any fsspec URL) gives a store on object storage
    with a local read-through tier (:mod:`dagnb.cache.remote`).

    One store per folder keeps its memory of entries warm across runs; entries saved
    without a ``ttl`` expire after the ``cache_ttl_seconds`` setting in force now.
    ``read_only=True`` gives the folder's read-only store (``cache_mode: read-only``),
    which writes nothing there, not even the file digests remembered beside it.
    """
    config = settings()
    configured = absolute(config.cache_directory)
    location = configured if directory is None else absolute(directory)
    # a store URL's store is also of its local tier and options: configure() changing
    # either makes a new one (the old one went on with what it was made with)
    made_with = (_remote_settings(config) if isinstance(location, str) else None)
    store = context().get("cache.stores", _RecentStores).get(
        location, read_only, configured, made_with)
    store.default_ttl = config.cache_ttl_seconds
    if read_only:  # digests of files are kept in memory only
        fingerprint.configure_stat_cache(None)
    elif location == configured:
        # file digests are remembered beside the configured cache (a no-op when unchanged)
        fingerprint.configure_stat_cache(store.location / "stat-cache.json")
    return store


class _RecentStores:
    """The stores of the local folders used last, most recent last. One that falls out
    is closed (its hits written, its pack let go of): a process that runs in hundreds
    of cache folders, a test suite's, no longer keeps files open in each. It still works
    for whoever holds it; the folder's next ``store_for`` makes a new one, whose session
    counts start again. The configured folder's store (the one :func:`stats` reports)
    and stores on object storage (which remember the entries cleared here) stay."""

    KEEP = 8  # (a process rarely uses more than one or two cache folders)

    def __init__(self) -> None:
        self._lock = ForkSafeLock()
        self._stores: OrderedDict[tuple[Path | str, bool], Store] = OrderedDict()
        self._made_with: dict[tuple[Path | str, bool], Hashable] = {}

    def get(self, location: Path | str, read_only: bool, configured: Path | str,
            made_with: Hashable = None) -> Store:
        """The store of ``location``, made if it is not one of the recent ones, or if it
        was made with other settings than ``made_with`` (that one is closed)."""
        key = (location, read_only)
        with self._lock:
            found = self._stores.get(key)
            if found is not None and self._made_with.get(key) != made_with:
                stale, found = self._stores.pop(key), None
            else:
                stale = None
        if stale is not None:  # (not under the lock: a close writes)
            stale.close()
        if found is None:  # (made unlocked: a store reads its folder)
            found = Store(location, read_only=read_only)
        return self.put(location, read_only, found, configured, made_with)

    def put(self, location: Path | str, read_only: bool, store: Store,
            configured: Path | str, made_with: Hashable = None) -> Store:
        """Make ``store`` the store of ``location`` (unless another thread made one
        meanwhile: then that one), the most recent; those that fall out are closed."""
        key = (location, read_only)
        with self._lock:
            if key not in self._stores:
                self._stores[key], self._made_with[key] = store, made_with
            store = self._stores[key]
            self._stores.move_to_end(key)
            dropped = [(old_key, old) for old_key, old in self._stores.items()
                       if old_key[0] != configured and not isinstance(old_key[0], str)]
            dropped = dropped[:max(0, len(dropped) - self.KEEP)]
            for old_key, _ in dropped:
                del self._stores[old_key]
                self._made_with.pop(old_key, None)
        for _, old in dropped:  # (not under the lock: a close writes)
            old.close()
        return store


def _remote_settings(config: Any) -> Hashable:
    """What a store URL's backend reads from the settings when made (see RemoteBackend)."""
    options = json.dumps(config.cache_storage_options, sort_keys=True, default=repr)
    return (str(absolute(config.cache_local_directory)), options)


def default_store() -> Store:
    """The store of the configured cache directory: :func:`store_for` with no folder."""
    return store_for()


def session_store() -> SessionStore:
    """The process-wide store of ``cache="session"`` steps."""
    return context().get("cache.session", SessionStore)


def entries(step: str | None = None) -> Any:
    """One row per entry of the default store (see :meth:`Store.entries`); ``step``
    as ``dagnb cache list --step`` takes it (see :func:`_step_held`)."""
    store = default_store()
    return store.entries(None if step is None else _step_held(store, step, "entries"))


def stats() -> Any:
    """Per-step statistics of the default store (see :meth:`Store.stats`)."""
    return default_store().stats()


def clear(step: str | None = None, older_than: float | str | None = None) -> int:
    """Remove entries of the default store; how many (see :meth:`Store.clear`); ``step``
    as ``dagnb cache clear --step`` takes it (see :func:`_step_held`)."""
    store = default_store()
    return store.clear(None if step is None else _step_held(store, step, "clear"), older_than)


def _step_held(store: Store, step: str, call: str) -> str:
    """The step ``step`` names in ``store``: a Memory function's plain name
    (``square``) stands for its one full name, as the CLI takes it. One the store holds
    no entries of is warned of (a typo, say, with the name meant), not refused: a
    script's clear before the first run has nothing to clear. Silent before: ``sqaure``
    matched nothing, and a clear of nothing looked done."""
    from dagnb.cache.clearing import held_step

    try:
        return held_step(store, step, given_as=f"dagnb.cache.{call}: step",
                         otherwise="it holds none")
    except ConfigError as refused:
        checks.warn_user(f"{refused} (nothing {'listed' if call == 'entries' else 'cleared'})")
        return step


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


def _store_hint(action: str, given: str | os.PathLike[str] | None, command: str) -> str:
    """How to name the store: a folder given as a path, as its file URL (which works);
    the setting (a local folder, the cache itself), any store's URL; in ``command``'s
    words (``%dagger cache`` in a notebook)."""
    if given is None:
        return (f"name one ({command} {action} s3://bucket/prefix, or file:///path/to/folder "
                "for a folder) or set cache_directory to one")
    return (f"name a folder as a file URL ({command} {action} {Path(given).resolve().as_uri()}), "
            "another store by its URL (s3://bucket/prefix), or set cache_directory to one")


def store_entries(url: str, step: str | None = None, action: str = "list",
                  ) -> list[tuple[str, str, float | None]]:
    """The entries of the store ``url`` (``step``'s alone, given one) as ``(step, key,
    stored)``, by step then stored time, from one listing: no manifest or file read
    (``dagnb cache list --cache-dir URL``, and ``stats``: the ``action`` a refusal
    names). A store that is not there, or holds something else, is refused as a pull
    from it would be."""
    url = checks.checked(checks.location, url, "the remote store", CacheError, sep=" ")
    remote = _remote._object_store(url)
    with _store_errors(action, url):
        _remote.refuse_no_store(remote, action)
        found = list(remote.entries_modified(step))
    return sorted(found, key=lambda entry: (entry[0], entry[2] or 0.0, entry[1]))


@contextlib.contextmanager
def _store_errors(action: str, url: str) -> Iterator[None]:
    """The store library's own errors (no route, no bucket, no rights) as one CacheError
    line naming ``url`` (its credentials as ***) and what to check."""
    try:
        yield
    except (CacheError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise CacheError(f"cache {action} {url}: {type(exc).__name__}: "
                         f"{checks.redact_url(str(exc))}; check the "
                         "URL, the network and the store's credentials") from None


def sync(
    action: str,
    url: str | None = None,
    local: str | os.PathLike[str] | None = None,
    stream: TextIO | None = None,
    *,
    check: bool = False,
    command: str = "dagnb cache",
) -> _remote.Transfer:
    """``dagnb cache push|pull``: copy entries between the local cache folder (the
    setting's when None) and the store ``url`` (``cache_directory`` when None), with a
    progress line on ``stream`` (stderr); ``check``: a push downloads and hashes the
    blobs of the entries the store has (``push --check``, see :func:`~dagnb.cache.remote.push`);
    ``command``: the one a refusal names (``%dagger cache`` in a notebook)."""
    given = url
    url = settings().cache_directory if url is None else url
    # (named as its check shows it: credentials in it as ***)
    url = checks.checked(checks.location, url, "the remote store", CacheError, sep=" ")
    if not is_url(url):
        raise CacheError(f"cache {action} needs a store URL, not {url!r}; "
                         + _store_hint(action, given, command))
    folder = local_folder(local)
    refuse_foreign_folder(folder)  # (pull writes entries there)
    store = store_for(folder)
    show = _remote.progress_line(action, stream)
    with _store_errors(action, url):
        if action == "push":
            return _remote.push(store, url, progress=show, check=check)
        return _remote.pull(url, store, progress=show)
