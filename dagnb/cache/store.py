"""The Store: cache entries keyed by (step name, key digest), on a backend.

Life cycle of an entry: the runner gets a fresh output directory
(:meth:`Store.scratch_dir`), runs the step into it, and hands it to :meth:`Store.save`,
which writes the logs and the metadata (each file's size, and the digest of each file
up to ``DIGEST_LIMIT``: :mod:`dagnb.cache.entry_files`) into a temporary entry
directory, only then moves the outputs in (so a full disk leaves them where the step
wrote them), and has the backend put the whole into place: a reader sees a whole entry
or none. Nothing is fsync'ed: a crash or power loss may tear a file of a finished
entry, and the first lookup in a process then finds a size or a small file's digest
that differs from the recorded one and treats the entry as damaged (a miss, set aside,
run again). ``dagnb cache verify`` re-hashes every file.
A *small* entry (no output files, a record under 64 KiB with its metadata, lines and
an inline result) is not a folder on the local backend: it is one record appended to
this store's pack (:mod:`dagnb.cache.pack`), no ``mkdir``, no ``rename``, one
``write()``. Records are not fsync'ed either: a power loss can cost the last records
written (misses: those steps run again) and cannot serve a torn or changed record (each
has its length, an end mark and a digest, checked before it is used). Its folder
(:attr:`Entry.path`, ``out_dir``, ``log_file``) is made under ``.unpacked`` when first
asked for. Removing one appends a tombstone; clearing everything deletes the packs.
:meth:`Store.lookup` is the hot path of a cached re-run: a dictionary lookup for a packed
entry (the packs are read once per process, then what they gained, on a miss or when
another process removed or replaced a packed entry: one ``fstat`` per hit), and for
a folder one backend read (one ``stat`` on the local backend) and dictionary hits while
the entry is unchanged. A damaged entry
is a miss, moved aside under ``.damaged`` and reported once; an expired one is removed.
Hits are counted in memory and written to the journal of uses
(:mod:`dagnb.cache.journal`) by :meth:`Store.flush` (also at exit), so a hit never
writes a file.

A store made with ``read_only=True`` (``cache_mode: read-only``) writes nothing through
its backend, whatever the backend is: hits are served but not journalled, an expired
entry is a miss left in place, a damaged one is a miss reported and left where it is,
and saving, removing or locking raises :class:`~dagnb.errors.CacheError`.

Two processes about to run the same key share one execution through
:meth:`Store.lock` (``with``) or :meth:`Store.alock` (``async with``)::

    with store.lock(step.name, key):
        entry = store.lookup(step.name, key)
        if entry is None:
            ...run the step...
            entry = store.save(step.name, key, out_dir=out, logs=lines, ...)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from dagnb.cache.backend import (
    Item,
    KeyRangeLock,
    LocalBackend,
    Lock,
    StoreBackend,
    folder_identity,
    get_backend,
    make_folder,
)
from dagnb.cache.entry import (
    _COMPACT,
    _HEAD_REQUIRED,
    _SORTED,
    STORE_FORMAT,
    Entry,
    PackedEntry,
    _inline_digest,
    _parse_meta,
)
from dagnb.cache.entry_files import (
    _consume,
    _digest_problem,
    _file_sizes,
    _has_out_files,
    _let_owner_in,
    _move,
    _move_logs,
    _no_files,
    _put_back,
    _size_problem,
    _small_digests,
    _small_logs,
    _write_logs,
    _write_meta,
)
from dagnb.cache.forks import WeakRefs, renew_in_child
from dagnb.cache.housekeeping import (
    DAMAGED,
    ENTRY_KEY,
    UNPACKED,
    Housekeeping,
    _Counts,
    damaged_name,
)
from dagnb.cache.journal import FLUSH_EVERY, AccessJournal
from dagnb.cache.keys import StepKey
from dagnb.cache.pack import (
    ENTRY,
    PACKS,
    RECORD_LIMIT,
    TOMBSTONE,
    PackIndex,
    Record,
    encode,
    index_of,
)
from dagnb.cache.pack_records import _DAMAGED
from dagnb.cache.pack_writer import PackWriter
from dagnb.cache.record_text import (
    head_at_a_glance,
    head_bytes,
    head_read_whole,
    packed_head_bytes,
    rest_bytes,
)
from dagnb.cache.sealed import SEALED
from dagnb.cache.unpacked import exchange, first_difference, out_files
from dagnb.checks import is_url, parse_ttl, seconds_to_live, warn_user
from dagnb.errors import CacheError, ConfigError
from dagnb.fingerprint import directory_digest
from dagnb.model.jsontext import scalar_text
from dagnb.model.results import (
    RESULT_FILES,
    decode_inline,
    save_result,
)

__all__ = ["STORE_FORMAT", "DamagedEntryWarning", "Entry", "GlancedEntry", "PackedEntry",
           "SessionStore", "Store", "only_reading"]

_RECENT_S = 0.05  # a lookup's miss reads the packs again only if read longer ago
_REPORTED: set[str] = set()  # damaged entries already reported by this process


# the command that only reads the cache now (plan, explain): a damaged entry the
# read-only store it looks through leaves in place is said so, not "read-only"
_ONLY_READING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dagnb_only_reading", default=None)


@contextlib.contextmanager
def only_reading(command: str) -> Iterator[None]:
    """Within it, ``command`` (``"plan"``) reads the cache and changes nothing: the
    damaged entries found are said left in place for that reason."""
    token = _ONLY_READING.set(command)
    try:
        yield
    finally:
        _ONLY_READING.reset(token)


_SET_ASIDE_KEPT = 100_000  # (a long-lived process that never asks keeps no more)
# a save that finds its key empty waits this long, doubling, for a replacement by
# another writer to end (1 ms to 0.256 s: about half a second in all)
_SWAP_FIRST_S = 0.001
_SWAP_LAST_S = 0.256
# entries assembled and not put in place (a live run read the one there): (pid, folder),
# removed as the process ends (a fork's child removes none of its parent's)
_UNSTORED: list[tuple[int, str]] = []
_WARNED_NOT_STORED: set[tuple[str, str, str]] = set()  # (step, key, reader) said once


@atexit.register
def _remove_unstored() -> None:
    for pid, folder in _UNSTORED:
        if pid == os.getpid():
            shutil.rmtree(folder, ignore_errors=True)


def _warn_not_stored(step_name: str, key: StepKey, reader: str) -> str:
    """Say once a process that ``step_name``'s new entry was not stored, and why (returned)."""
    why = f"entry {step_name}/{key.short} in use by a live run ({reader}); a later run stores it"
    if (step_name, key.digest, reader) not in _WARNED_NOT_STORED:
        _WARNED_NOT_STORED.add((step_name, key.digest, reader))
        warn_user(f"step {step_name!r}: its new result was not stored: {why}")
    return why


class DamagedEntryWarning(UserWarning):
    """A cache entry could not be read; it was moved aside and treated as a miss."""


_LIVE = WeakRefs()  # the stores alive (see __init__)


@atexit.register
def _close_live_stores() -> None:
    """At exit: write the hits counted, and let go of (and seal) the packs written to."""
    for store in list(_LIVE):
        with contextlib.suppress(Exception):
            store.close()


_CELLS_WATCHED: list[bool] = []  # [True] once the kernel's cells end with a flush


def _write_uses_as_cells_end() -> None:
    """In an IPython kernel, have each cell's end write the uses its hits counted (see
    :func:`_write_counted_uses`): a kernel that hits once, then stays quiet for an hour,
    would otherwise keep that use unwritten, and another process's prune would take
    the entry for unused. Once per process; nothing outside a kernel."""
    if _CELLS_WATCHED:
        return
    shell = sys.modules["IPython"].get_ipython()
    if shell is None:  # (IPython imported, no shell: a script that uses its display)
        return
    shell.events.register("post_execute", _write_counted_uses)
    _CELLS_WATCHED.append(True)


def _write_counted_uses() -> None:
    """As a cell ends: each live store writes the uses it counted, once none of its
    own was written yet, or :data:`FLUSH_EVERY` s after its last write (a flush at
    most that often, as hits make them)."""
    for store in list(_LIVE):
        if not store._pending:
            continue
        now = store.clock()
        due = store._flush_due
        if not store._cell_wrote or due is None or now >= due:
            store._cell_wrote, store._flush_due = True, now + FLUSH_EVERY
            with contextlib.suppress(Exception):  # (a cell's end never fails for it)
                store.flush()


def _close_live_stores_in_a_fork(parent: int = os.getpid()) -> None:
    """The same, as a forked ``multiprocessing`` worker ends: it ends with ``os._exit``,
    which runs no ``atexit`` function, after threading's shutdown, which runs this (a
    ProcessPoolExecutor's workers, a Pool's closed and joined; a Pool's terminated are
    killed, their hits lost). Elsewhere ``atexit`` does it, once the threads are done:
    in the process that imported this, unless it is a ``multiprocessing`` worker (a
    forkserver's imports dagnb itself)."""
    multiprocessing = sys.modules.get("multiprocessing")
    if os.getpid() != parent or (
            multiprocessing is not None and multiprocessing.parent_process() is not None):
        _close_live_stores()


# (threading's private hook, concurrent.futures' too: there is no public one that a
# multiprocessing worker runs)
with contextlib.suppress(AttributeError, RuntimeError):
    threading._register_atexit(_close_live_stores_in_a_fork)  # type: ignore[attr-defined]


def _renew_store(store: Store) -> None:
    """In a forked child (see :mod:`dagnb.cache.forks`): a new lock for the hit counts
    (a flush in another thread of the parent may have held it at the fork), and none of
    the parent's hits not written yet (the parent writes them: the child would count
    them twice)."""
    store._moving_counts = threading.Lock()
    store._pending = {}


renew_in_child(_LIVE, _renew_store)


def _key_text(key: StepKey | str) -> str:
    return key if type(key) is str else key.digest  # type: ignore[union-attr]


def _backend_of(location: str | os.PathLike[str], backend: str | StoreBackend, *,
                create: bool) -> StoreBackend:
    """The backend of a store at ``location``: ``backend``, a registered name or an
    instance, or a remote one for a store URL; ``create=False``: a local folder is made
    by the first write, not now."""
    if backend == "local" and is_url(os.fspath(location)):
        backend = "remote"  # dagnb.cache.remote: a local tier in front of the URL
    if type(backend) is not str and isinstance(backend, StoreBackend):
        return backend
    if backend == "local" and not create:
        return LocalBackend(location, create=False)
    return get_backend(backend)(location)  # type: ignore[arg-type]


def _file_in_the_way(location: str | os.PathLike[str]) -> CacheError | None:
    """The error to raise when a cache folder cannot be made at ``location`` because a
    file is there (or in its path); None if none is."""
    if is_url(os.fspath(location)):
        return None
    folder = Path(location).expanduser().absolute()
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            if os.path.isdir(path):
                return None
            where = "is" if path == folder else f"cannot be created: {str(path)!r} is"
            return CacheError(f"cache directory {str(folder)!r} {where} a file, not a "
                              "folder; pass a folder path")
    return None


class GlancedEntry(Entry):
    """An entry of a store URL seen by its metadata alone (:meth:`Store.peek` with
    ``metadata_only``): its expiry, output digest and components; its files are not in
    the local tier (a lookup downloads them)."""


def _add_pending(into: dict[tuple[str, str], list[float]],
                 pending: Mapping[tuple[str, str], list[float]]) -> None:
    """Add ``pending`` hits (``[hits, last used]`` by entry) to ``into``."""
    for where, (hits, last_used) in pending.items():
        mine = into.get(where)
        into[where] = [hits, last_used] if mine is None else [
            mine[0] + hits, max(mine[1], last_used)]


# this process's hits and misses by step, per cache folder (its identity), shared by
# every store on it: a notebook's `dagnb.Memory` counts in its own store, and `%dagger
# cache stats` read the steps' one (4 misses of a Memory function read as 0, its hit
# rate 1.0)
_SESSION_COUNTS: dict[tuple[int, int], tuple[str, tuple[dict[str, int], dict[str, int]]]] = {}


def _session_counts(root: str, identity: tuple[int, int]) -> tuple[dict[str, int],
                                                                    dict[str, int]]:
    """The session's counts of the folder ``root`` (``identity``): those of another
    spelling of it, unless that folder is gone and this one took its inode (a folder
    removed and another made: its counts are its own, as the pack index is)."""
    found = _SESSION_COUNTS.get(identity)
    if found is not None and (found[0] == root or folder_identity(found[0]) == identity):
        return found[1]
    counts: tuple[dict[str, int], dict[str, int]] = ({}, {})
    _SESSION_COUNTS[identity] = (root, counts)
    return counts


class Store(Housekeeping):
    """Cache entries of steps, in ``location``.

    Parameters
    ----------
    location
        The cache directory (created if needed), or a store URL (``s3://bucket/prefix``):
        then :class:`~dagnb.cache.remote.RemoteBackend`, with a local read-through tier.
    backend
        A registered backend name (``"local"``) or a :class:`StoreBackend` instance.
    clock
        Returns the current time in seconds; tests inject a fake one.
    default_ttl
        Seconds (or ``"1d"``) after which entries saved without a ``ttl`` expire;
        None keeps them until removed.
    read_only
        Serve hits and write nothing (see the module docstring).
    create
        False: a missing local folder is made by the first write, not now (a store that
        may never write, a ``fail-on-miss`` Memory's, leaves none behind).
    """

    # What a fresh store starts from, as class attributes (each is replaced, never
    # changed in place): a fresh process's first Memory() sets none of them
    _writer: PackWriter | None = None  # made at the first record appended
    _flush_failed = False  # warned once already
    default_ttl: float | None = None  # (most stores set none)
    _packs: PackIndex | None = None  # a local store's (see __init__)
    _url_tier: LocalBackend | None = None  # a store URL's local tier, when it holds packs
    _flush_due: float | None = None  # when a hit writes the uses out (set by the first)
    _cell_wrote = False  # a cell's end wrote this store's uses (see _write_counted_uses)
    # why a read-only store leaves a damaged entry in place (a listing's says it is one)
    read_only_reason = "the cache is read-only"

    def __init__(
        self,
        location: str | os.PathLike[str] = ".dagnb_cache",
        backend: str | StoreBackend = "local",
        clock: Callable[[], float] = time.time,
        default_ttl: float | str | None = None,
        *,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        self.read_only = read_only
        try:
            if backend == "local" and type(location) is str and "://" not in location:
                # a folder's path, the usual case: asked no more
                made = (LocalBackend(location, create=False) if read_only or not create
                        else get_backend(backend)(location))
            else:
                made = _backend_of(location, backend, create=create and not read_only)
        except CacheError as exc:  # (mkdir's "File exists" names no fix)
            in_the_way = _file_in_the_way(location)
            if in_the_way is None:
                raise
            raise in_the_way from exc
        self.backend = made
        self.clock = clock
        if default_ttl is not None:
            self.default_ttl = parse_ttl(default_ttl, what="default_ttl",
                                         error=ConfigError)
        # small entries as records of packs: the local backend's, and a store URL's local
        # tier's, of what its downloads became (its saves keep folders, which it uploads);
        # see dagnb.cache.pack
        # (two spellings of the folder, through a symlink, share one index)
        counts = None
        if type(made) is LocalBackend:
            self._packs = index_of(f"{made._root_text}/{PACKS}", made.identity)
            counts = (_session_counts(made._root_text, made.identity)
                      if made.identity is not None else None)
        else:
            self._keep_downloads_as_records(made)
        self._entries: dict[tuple[str, str], Entry] = {}  # parsed metadata, checked by version
        self._pending: dict[tuple[str, str], list[float]] = {}  # unflushed [hits, last_used]
        self._moving_counts = threading.Lock()  # held while a flush writes _pending out
        # hits and misses by step in this session, shared by the stores on one folder
        # (see _SESSION_COUNTS; plain dicts: two defaultdicts cost a fresh process's first
        # Memory() 2.5k instructions)
        self._session_hits, self._session_misses = ({}, {}) if counts is None else counts
        self._set_aside_now: list[str] = []  # entries found damaged since last asked
        _LIVE.add(weakref.ref(self, _LIVE.discard))  # (gone with the store)

    def _keep_downloads_as_records(self, backend: StoreBackend) -> None:
        """On a store URL's backend (:class:`~dagnb.cache.remote.RemoteBackend`): read
        the pack records of its local tier, and have a download that a save here would
        have packed kept as one (:meth:`keep_fetched`), as a pull into that folder keeps
        it; a folder each took ten times the space. (Held weakly: the store owns it.)"""
        tier = getattr(backend, "local", None)
        keep_with = getattr(backend, "keep_downloads_with", None)
        if type(tier) is not LocalBackend or keep_with is None:
            return
        self._packs = index_of(f"{tier._root_text}/{PACKS}", tier.identity)
        self._url_tier = tier
        keep_with(weakref.WeakMethod(self.keep_fetched))

    @functools.cached_property
    def _journal(self) -> AccessJournal:
        """The journal of uses, made when first written or read (a hit needs none)."""
        return AccessJournal(self.backend, self._journal_folder, exists=self._exists,
                             created=self._created_of)

    @property
    def location(self) -> Path:
        """The cache directory."""
        return self.backend.root

    def __repr__(self) -> str:
        shown = ", read_only=True" if self.read_only else ""
        return f"{type(self).__name__}({str(self.location)!r}{shown})"

    def _writable(self, action: str, step_name: str | None = None) -> None:
        """Refuse ``action`` (of step ``step_name``) in a read-only store: nothing
        reaches the backend. (The message is made only then: a first run asks twice
        per step.)"""
        if self.read_only:
            of = "" if step_name is None else f" {step_name!r}"
            raise CacheError(
                f"cannot {action}{of}: the cache {str(self.location)!r} is read-only "
                "(cache_mode 'read-only'); use cache_mode 'read-write' to change it"
            )

    # ------------------------------------------------------------------ lookup

    def lookup(self, step_name: str, key: StepKey | str, *, touch: bool = True,
               glance: bool = False, max_age: float | None = None) -> Entry | None:
        """The entry of ``step_name`` under ``key``, or None for a miss.

        An expired entry is removed and is a miss; one older than ``max_age`` seconds
        (the ttl its step has now) is a miss, left to other callers; a damaged one is
        moved aside,
        reported once with a :class:`DamagedEntryWarning`, and is a miss. Never raises
        for what it finds on disk. ``touch=False`` neither counts nor records the use.
        ``glance``: a packed entry's head is read at a glance (its expiry and inline
        result, what a ``Memory`` hit uses), the rest parsed when asked for.
        """
        # Every hit passes here: _key_text, _current's packed case and the hit counted are
        # written inline (a call each less, which a fresh process's hits pay most for).
        if type(key) is not str:
            key = key.digest  # type: ignore[union-attr]
        packs = self._packs
        record = None if packs is None else packs.get(step_name, key)
        if record is not None:
            entry = self._packed(record, glance)
        else:  # a miss may rely on packs read a moment ago: a run's claim (peek) reads
            entry = self._folder_entry(step_name, key, recent=True)  # them again
        now = self.clock()
        # (a packed entry with no expiry asked for no ttl is not expired: said here, no
        # call of expired() for it)
        if entry is not None and (record is None or entry._expires is not None  # type: ignore[attr-defined]
                                  or max_age is not None) and entry.expired(now, max_age):
            if entry.expired(now):  # (past its own ttl; one only this caller's ttl
                self._forget(step_name, key)  # finds too old is another run's to use)
                # (one a live run hands its steps is theirs until it ends: removed, a
                # step would find its input gone midway)
                if not self.read_only and self._live_user_of(step_name, key) is None:
                    self._remove_expired(step_name, key)
            entry = None
        if not touch:
            return entry
        if entry is None:
            self.count_miss(step_name)
            return None
        hits = self._session_hits
        hits[step_name] = hits.get(step_name, 0) + 1
        where = (step_name, key)
        pending = self._pending.get(where)
        if pending is None:
            self._pending[where] = [1, now]
        else:
            pending[0] += 1
            pending[1] = now
        # now and then, so another process's reduce_size sees what this one uses
        due = self._flush_due
        if due is None or now >= due:
            self._flush_due = now + FLUSH_EVERY
            if due is not None:
                self.flush()
            elif "IPython" in sys.modules:  # a kernel may go quiet after this cell
                _write_uses_as_cells_end()
        return entry

    def _remove_expired(self, step_name: str, key: str) -> None:
        """Remove an entry past its ttl. A store URL's backend is not told of a record
        (it has no folder of it): told, it would take the store's copy for one this
        machine distrusts, and never look at it again (as it does for a cleared entry)."""
        if not self._drop_packed(step_name, key) or self._url_tier is None:
            self.backend.remove(step_name, key)

    def count_miss(self, step_name: str) -> None:
        """Count a miss found by :meth:`peek` rather than :meth:`lookup` (a run's look
        under the key's lock, when it took the lock first)."""
        misses = self._session_misses
        misses[step_name] = misses.get(step_name, 0) + 1

    def peek(self, step_name: str, key: StepKey | str, *,
             metadata_only: bool = False) -> Entry | None:
        """Like :meth:`lookup` but expired entries are returned and nothing is recorded.
        ``metadata_only`` (``plan``, ``explain``: they write nothing): an entry of a store
        URL that the local tier lacks is not downloaded into it, but seen by its metadata
        alone, a :class:`GlancedEntry`."""
        key = _key_text(key)
        if metadata_only and type(self.backend) is not LocalBackend:  # (a local store's
            record = None if self._packs is None else self._packs.get(step_name, key)
            if record is None:  # fetches nothing; a store URL's tier may hold a record)
                return self._glanced(step_name, key)
            return self._packed(record)
        return self._current(step_name, key)

    def _glanced(self, step_name: str, key: str) -> Entry | None:
        """:meth:`peek` through the backend's glance: an entry in the tier read as
        :meth:`_folder_entry` reads it; else its metadata, parsed, kept nowhere."""
        item = self.backend.glance(step_name, key)
        if item is None:
            return None
        if os.path.isdir(item.path):  # the tier holds it: checked as a read's
            cached = self._entries.get((step_name, key))
            if (cached is not None and cached.version == item.version
                    and os.path.isdir(cached._out_text)):
                return cached
            return self._load(step_name, key, item, retry=True)
        if item.meta is None:
            return None
        meta, problem = _parse_meta(item.meta, step_name, key)
        if problem is not None:  # (a download would find it damaged: a miss)
            return None
        return GlancedEntry(step_name, key, item.path, meta, item.version)

    def _current(
        self, step_name: str, key: str, retry: bool = True, recent: bool = False,
        glance: bool = False,
    ) -> Entry | None:
        """The entry as stored now: a packed one from the index (no system call), else
        from memory while the backend's version is the same."""
        packs = self._packs
        if packs is not None:
            record = packs.get(step_name, key)
            if record is not None:
                return self._packed(record, glance)
        return self._folder_entry(step_name, key, retry, recent)

    def _folder_entry(self, step_name: str, key: str, retry: bool = True,
                      recent: bool = False) -> Entry | None:
        """:meth:`_current` of a key the packs do not hold now: its folder's entry, from
        memory while the backend's version is the same."""
        packs = self._packs
        if self._url_tier is None:
            item = self.backend.read(step_name, key)
        else:
            item = self._tier_item(step_name, key)
            record = None if item is not None or packs is None else packs.get(step_name, key)
            if record is not None:  # (a download this store kept as a record)
                return self._packed(record)
            if item is None:
                self._entries.pop((step_name, key), None)
                return None
        if item is None:
            self._entries.pop((step_name, key), None)
            return self._fresh_packed(step_name, key, recent) if packs is not None else None
        cached = self._entries.get((step_name, key))
        # On a hit, also check that out/ is still there (a user may have deleted it);
        # everything else was checked when the entry was first read.
        if (
            cached is not None
            and cached.version == item.version
            and os.path.isdir(cached._out_text)
        ):
            return cached
        return self._load(step_name, key, item, retry)

    def _tier_item(self, step_name: str, key: str) -> Item | None:
        """A store URL's :meth:`_folder_entry`'s read: the tier's folder; else the
        records another process wrote since the packs were read (a pull's: not
        downloaded again), then the store's copy, downloaded (:meth:`keep_fetched`).
        None: a miss, or a record now (what the packs hold is asked after)."""
        assert self._url_tier is not None
        item = self._url_tier.read(step_name, key)
        if item is not None or self._fresh_packed(step_name, key) is not None:
            return item
        return self.backend.read(step_name, key)

    def _fresh_packed(self, step_name: str, key: str, recent: bool = False) -> Entry | None:
        """After a miss: what the packs gained meanwhile (another process's saves);
        ``recent``: unless they were read in the last few milliseconds."""
        assert self._packs is not None
        packs = self._packs
        news = True
        if not recent or time.monotonic() - packs.refreshed > _RECENT_S:
            # (nothing written by another process since the look before this one: it
            # holds, no second look: a first run's look under each key's lock)
            news = packs.others_may_have_written()
            if news:
                packs.refresh()
        if packs.may_have_problems:  # (most looks find none: no lock taken for them)
            self._report_pack_damage()
        if not news:
            return None
        record = packs.get(step_name, key)
        return None if record is None else self._packed(record)

    def _packed(self, record: Record, glance: bool = False) -> Entry | None:
        """The entry of a pack record, parsed once per record (``glance``: its head read
        at a glance, see :meth:`lookup`; parsed whole when next asked for without)."""
        where = (record.step, record.key)
        cached = self._entries.get(where)
        if cached is not None and cached.version is record:
            problem = None if glance else cached.read_head()
            if problem is None:
                return cached
            return self._damaged(record.step, record.key, problem, record)
        body = record.body  # its first line, the head (inline: every hit passes here)
        end = body.find(b"\n")  # (the rest is cut when asked for)
        head_bytes = body if end < 0 else body[:end]
        seen = head_at_a_glance(head_bytes, *where) if glance else None
        if seen is not None:
            entry = PackedEntry(record.step, record.key, None, record, self,
                                raw_head=head_bytes, seen=seen)
            self._entries[where] = entry
            return entry
        # (a run's hit: its head read whole in dagnb's layout without the JSON decoder;
        # any other is parsed and checked, and told damaged as before)
        head = head_read_whole(head_bytes, *where)
        if head is None:
            head, problem = _parse_meta(head_bytes, record.step, record.key, _HEAD_REQUIRED)
            if problem is not None:
                return self._damaged(record.step, record.key, problem, record)
        entry = PackedEntry(record.step, record.key, head, record, self)
        self._entries[where] = entry
        return entry

    @functools.cached_property
    def _unpack_root(self) -> str:
        if self.read_only:  # writes nothing in the cache: a folder of this process
            return _read_only_unpack_root()
        backend = self.backend  # (a local one's text: no Path made on a first hit)
        root = backend._root_text if type(backend) is LocalBackend else str(self.location)
        return f"{root}/{UNPACKED}"

    def _unpack(self, entry: PackedEntry, again: bool = False) -> None:
        """Make the folder of a packed entry; one made already is checked against the
        record (:mod:`dagnb.cache.unpacked`), and made ``again`` if it is not as the
        record says (a step, or someone by hand, wrote into it)."""
        target = entry._path
        files = out_files(entry.head_field("inline"))
        if not again and os.path.isdir(target):
            if first_difference(f"{target}/out", files) is None:
                return
            again = True
        build = Path(tempfile.mkdtemp(prefix=".tmp-", dir=make_folder(target.parent)))
        # the old folder is swapped with the new one, not changed: a reader has the old
        # or the new (moved aside first where the system cannot swap: missing between)
        old = f"{target.parent}/.old-{uuid.uuid4().hex}" if again else None
        try:
            (build / "out").mkdir()
            for name, data in files.items():
                (build / "out" / name).write_bytes(data)
            _write_logs(build / "logs.jsonl", entry.meta.get("packed_logs") or ())
            meta = {k: v for k, v in entry.meta.items() if k != "packed_logs"}
            (build / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            if old is not None and exchange(os.fspath(build), os.fspath(target)):
                return  # (build holds the old folder now: removed below)
            if old is not None:
                with contextlib.suppress(FileNotFoundError):  # (another reader moved it)
                    os.rename(target, old)
            os.rename(build, target)
        except OSError:  # raised unless someone else made it (as the record says)
            if not os.path.isdir(target) or (
                    again and first_difference(f"{target}/out", files) is not None):
                raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def damaged_records(self) -> list[str]:
        """The damaged pack records found so far and not yet reported, each as
        ``pack: problem`` (``dagnb cache verify``: they are misses, never served), each
        set aside: a tombstone makes its key a plain miss, not found damaged again."""
        if self._packs is None:
            return []
        problems = self._packs.take_problems()
        for problem in problems:
            if problem.where is not None:
                self._drop_damaged(*problem.where)
        return [f"{problem.pack}: {problem.why}" for problem in problems]

    def _drop_damaged(self, step_name: str, key: str) -> None:
        """Append a tombstone for ``step/key`` unless an entry is served there now (one
        written since the damage was found)."""
        if self.read_only or self._packs is None or self._packs.get(step_name, key) is not None:
            return
        self._append(step_name, key, TOMBSTONE, b"")

    def _report_pack_damage(self) -> None:
        assert self._packs is not None
        for pack, problem, where in self._packs.take_problems():
            if pack.endswith(SEALED):  # (an index: nothing is lost, lookups read more)
                message = (f"cache index {pack!r} is damaged ({problem}); the packs are "
                           "read whole instead until the pack is sealed again")
            elif where is not None:
                message = (f"cache pack {pack!r} is damaged ({problem}); that entry is "
                           "treated as a miss")
            else:
                message = (f"cache pack {pack!r} is damaged ({problem}); its records from "
                           "there on are treated as misses")
            warn_user(message, DamagedEntryWarning)  # (the user's line: a run's)

    def _exists(self, step_name: str, key: str) -> bool:
        """Whether ``step/key`` has an entry, packed or in a folder."""
        if self._packs is not None:
            if self._packs.get(step_name, key) is None and (
                time.monotonic() - self._packs.refreshed > _RECENT_S
            ):
                self._packs.refresh()  # another process may have packed it since
            if self._packs.get(step_name, key) is not None:
                return True
        return self.backend.exists(step_name, key)

    def _created_of(self, step_name: str, key: str) -> float | None:
        """When the entry ``step/key`` holds now was saved, None: there is none (the
        journal's compaction keeps the uses since then). Read from its record's head or
        its ``meta.json`` alone: its files are not checked (a store URL's entries are
        not read: their uses are kept whole, as before)."""
        if not self._exists(step_name, key):
            return None
        record = None if self._packs is None else self._packs.get(step_name, key)
        item = None
        if record is None and type(self.backend) is LocalBackend:
            item = self.backend.read(step_name, key)
        with contextlib.suppress(CacheError, ValueError, TypeError, KeyError):
            if record is not None:
                entry = self._packed(record, glance=True)
                return 0.0 if entry is None else float(entry.created)
            if item is not None and item.meta is not None:
                return float(json.loads(item.meta)["created"])
        return 0.0  # (unknown, or damaged: every use kept, as before)

    def _load(self, step_name: str, key: str, item: Item, retry: bool) -> Entry | None:
        if item.meta is None:
            if ENTRY_KEY.fullmatch(key) is None:  # no entry: see _not_an_entry
                return self._not_an_entry(step_name, key)
            return self._damaged_folder(step_name, key, "meta.json is missing", item.version,
                                        retry)
        meta, problem = _parse_meta(item.meta, step_name, key)
        if problem is not None and ENTRY_KEY.fullmatch(key) is None:
            return self._not_an_entry(step_name, key)
        if problem is None and not _has_out_files(meta) and not os.path.isdir(f"{item.path}/out"):
            problem = "its out/ directory is missing"  # (a file under out/ is checked below)
        if problem is None:
            problem = _size_problem(item.path, meta.get("files"))
        if problem is None:
            problem = _digest_problem(item.path, meta.get("digests"))
        if problem is not None:
            return self._damaged_folder(step_name, key, problem, item.version, retry)
        entry = Entry(step_name, key, item.path, meta, item.version)
        self._entries[(step_name, key)] = entry
        return entry

    def _not_an_entry(self, step_name: str, key: str) -> None:
        """A folder named by no key, without an entry's meta.json: someone else's (a
        project's ``data/raw`` in a folder given as the cache), left in place, unlisted."""
        self._forget(step_name, key)

    def _damaged_folder(
        self, step_name: str, key: str, problem: str, version: Hashable, retry: bool
    ) -> Entry | None:
        """A folder that does not hold what its meta.json says: damaged if it is still
        the one read. Another process may have removed it between the reads (a clear:
        a plain miss) or replaced it (read again, once)."""
        again = self.backend.read(step_name, key)
        if again is not None and again.version == version:
            return self._damaged(step_name, key, problem, version)
        if again is not None and retry:
            return self._current(step_name, key, False)
        self._forget(step_name, key)
        return None

    def _damaged(self, step_name: str, key: str, problem: str, version: Hashable) -> None:
        self._forget(step_name, key)
        where = None if self.read_only else self._set_aside(step_name, key, version)
        if len(self._set_aside_now) < _SET_ASIDE_KEPT:
            self._set_aside_now.append(f"{step_name}/{key[:12]} ({problem})")
        ident = f"{self.location}/{step_name}/{key}"
        if ident not in _REPORTED:
            _REPORTED.add(ident)
            moved = f"moved to {str(where)!r}" if where else "dropped"
            if self.read_only:
                moved = f"left in place ({self._why_left_in_place()})"
            warn_user(f"cache entry {step_name}/{key[:12]} is damaged ({problem}); {moved}, "
                      "treated as a miss", DamagedEntryWarning)  # (the user's line: a run's)
        return None

    def _why_left_in_place(self) -> str:
        """Why this read-only store left a damaged entry in place: the cache is read-only
        (a ``read-only`` run, a folder that cannot be written), or only a command that
        reads it, plan or explain, looks (their store is the read-only one)."""
        command = _ONLY_READING.get()
        if command is None or not os.access(self.location, os.W_OK):
            return self.read_only_reason
        return f"{command} does not change the cache; a run writing to it sets it aside"

    def _set_aside(self, step_name: str, key: str, version: Hashable = None) -> Path | None:
        """Move an entry under ``.damaged/`` (kept for a post-mortem); None if it vanished
        or, given the ``version`` found damaged, was replaced since (a healthy one).
        A packed one is dropped from its pack (a tombstone)."""
        if self._drop_packed(step_name, key):
            return None
        item = self.backend.read(step_name, key)
        if item is None or (version is not None and item.version != version):
            return None
        name = damaged_name(step_name, key, uuid.uuid4().hex[:8])
        _let_owner_in(item.path)
        try:
            self.backend.write(DAMAGED, name, item.path)
        except OSError:  # removed meanwhile, or it cannot be moved: then it goes
            with contextlib.suppress(OSError):
                self.backend.remove(step_name, key)
            return None
        with contextlib.suppress(OSError):
            self.backend.remove(step_name, key)  # what is left of it, if the write copied
        return self.location / DAMAGED / name

    def take_set_aside(self) -> list[str]:
        """The entries found damaged (set aside, or left in place when read-only) since
        the last call, each as ``step/key (problem)``: ``dagnb cache verify`` counts
        those its listing met as well as those whose files it found changed."""
        found, self._set_aside_now = self._set_aside_now, []
        return found

    def damaged_record(self, step_name: str, key: StepKey | str) -> str | None:
        """The pack whose record of ``step/key`` a look found damaged (a miss, until a
        save or ``dagnb cache verify`` writes over it), or None: ``plan`` and ``explain``
        say so, as of a folder entry found damaged (see :meth:`take_set_aside`), which a
        damaged record, reported once, never joins."""
        found = None if self._packs is None else self._packs.records.get(
            (step_name, _key_text(key)))
        return found.pack if type(found) is Record and found.kind == _DAMAGED else None

    def quarantine(self, step_name: str, key: StepKey | str, problem: str,
                   entry: Entry | None = None) -> bool:
        """Set aside an entry found damaged after lookup (its result cannot be read, ...):
        it is moved under ``.damaged/``, reported once, and the next lookup misses.
        ``entry``, the one looked up: if another process removed or replaced it since
        (a clear), its files went with it, not damaged: a plain miss, nothing reported.
        Whether it was found damaged (False: removed or replaced)."""
        key = _key_text(key)
        if entry is not None and not self._holds(entry):
            self._forget(step_name, key)
            return False
        self._damaged(step_name, key, problem, None if entry is None else entry.version)
        return True

    def _holds(self, entry: Entry) -> bool:
        """Whether ``entry`` is still the one stored at its key."""
        version = entry.version
        if isinstance(version, Record):  # (a stamp is a record's, for its key)
            record = None if self._packs is None else self._packs.get(entry.step, entry.key)
            return record is not None and record.stamp == version.stamp
        item = self.backend.read(entry.step, entry.key)
        return item is not None and item.version == version

    def _forget(self, step_name: str, key: str) -> None:
        self._entries.pop((step_name, key), None)
        self._pending.pop((step_name, key), None)

    # ------------------------------------------------------------------ save

    def scratch_dir(self, step_name: str) -> Path:
        """A fresh, empty directory on the store's filesystem for a step's outputs.

        Passing it to :meth:`save` then moves it into the entry with a rename.
        """
        self._writable("make a folder for step", step_name)
        return self._new_folder(f".tmp-{step_name}-")

    def _new_folder(self, prefix: str) -> Path:
        """A fresh folder in ``<location>/.scratch``, where new entries are assembled."""
        path = self.location / ".scratch" / f"{prefix}{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def _journal_folder(self) -> Path:
        """A fresh folder in ``.scratch`` of a cache folder that is there: the journal is
        written after a run, and a cache removed meanwhile must stay removed."""
        if type(self.backend) is not LocalBackend:
            return self._new_folder(".tmp-")  # (a remote's local tier: made as needed)
        scratch = self.backend.root / ".scratch"
        with contextlib.suppress(FileExistsError):
            scratch.mkdir()  # FileNotFoundError when the cache folder was removed
        path = scratch / f".tmp-{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def save(
        self,
        step_name: str,
        key: StepKey | str,
        *,
        out_dir: str | os.PathLike[str] | None,
        logs: Iterable[Mapping[str, Any]] | os.PathLike[str] = (),
        exit_code: int = 0,
        duration_s: float = 0.0,
        ttl: float | str | None = None,
        provenance: Mapping[str, Any] | None = None,
        inline: Mapping[str, Any] | None = None,
        refresh: bool = False,
        result_file: bool = False,
        displays: Sequence[Mapping[str, Any]] = (),
        result_digest: str | None = None,
    ) -> Entry:
        """Store a step's outputs under ``key``, replacing any entry there (``refresh``:
        in a store shared with other machines too).

        Parameters
        ----------
        step_name, key
            Where the entry goes; a :class:`StepKey` also stores its components.
        out_dir
            The step's output directory; it is *moved* (renamed when on the same
            filesystem) into the entry, so it no longer exists afterwards. None (or
            a folder not made): the step wrote no files.
        logs
            Captured lines, already masked: dicts with time, attempt, stream, line; or
            a file of them, one JSON object a line, *moved* into the entry.
        exit_code, duration_s
            How the run ended and how long it took.
        ttl
            Seconds (or ``"1d"``) until the entry expires; None uses the store's
            ``default_ttl``.
        provenance
            What ran, beyond the key (``{"image_ref": "…@sha256:…"}``), kept in the
            metadata as ``provenance``.
        inline
            A few JSON fields kept in the metadata itself, as ``entry.meta["inline"]``:
            :class:`~dagnb.Memory` keeps a small result there, so that its entry has
            no result file to create on a miss or to open on a hit. It is the entry's
            result (:meth:`Entry.result`).
        result_file
            An entry that gets a folder after all (too big for a pack) gets the
            ``inline`` result as a file of its ``out/``, for steps downstream to read.
        displays
            The rich outputs the step showed (already masked): dicts with ``after`` (how
            many of its lines came before it), ``data`` (the mime bundle) and
            ``metadata``, kept in ``displays.jsonl``, their number in the metadata as
            ``displays`` (none: no file, and a hit opens none).
        result_digest
            What the result file in ``out/`` counts by in the output digest, in place of
            its bytes' digest: a ``result.pkl`` holding a set, which pickles in its
            iteration order, changed by hash seeds (the steps downstream would miss in
            another process), or a ``result.json`` holding a dict (its keys' order may
            come from a set: counted sorted). Then ``files_digest`` in the metadata is
            what the files hash to, for :meth:`Entry.verify`.

        An entry with no output files (``out_dir`` None, missing or empty) whose record
        is under 64 KiB is appended to this store's pack instead of getting a folder;
        with displays, which would grow the packs every process reads, it gets a folder
        that holds that record's metadata. Such an entry given a folder (displays, a long
        log, a store with no packs) has its record's output digest, of its result alone:
        what the steps downstream are keyed on does not depend on what a step printed or
        displayed.
        """
        if self.read_only:
            self._writable("save step", step_name)
        step_key = key if isinstance(key, StepKey) else StepKey(str(key), {}, {})
        # (what a refresh replaces may be another process's record: the packs are read
        # before a record is written, in _append, and before a packed one is dropped)
        result_only = out_dir is None or _no_files(out_dir)  # (no output files)
        # (a store URL's saves keep folders: what its backend uploads)
        if self._packs is not None and result_only and self._url_tier is None:
            try:
                entry = self._save_packed(step_name, step_key, out_dir, logs, inline,
                                          exit_code, duration_s, ttl, provenance,
                                          displays, refresh)
            except OSError:  # no flock here: the entry gets a folder
                entry = None
            if entry is not None:
                return entry
        if self._packs is not None:  # the folder takes its place
            replaced = self._drop_packed(step_name, step_key.digest, spare_if_used=True)
            # (of a store URL's record: the store's copy too, as of a folder of its tier)
            refresh = refresh or (replaced and self._url_tier is not None)
        if out_dir is None or not os.path.isdir(out_dir):
            out_dir = self._new_folder(".tmp-out-")
        out = Path(out_dir)
        head = _result_head(inline) if result_only else None
        if inline and (result_file or displays):  # (as a pack record made a folder has it)
            save_result(out, decode_inline(inline))
            inline = None
        build = self._new_folder(".tmp-")
        try:
            # Everything but the outputs first: a full disk then fails here, and the
            # outputs are still where the step wrote them (the run folder).
            if isinstance(logs, os.PathLike):
                count = _move_logs(Path(logs), build / "logs.jsonl")
            else:
                count = _write_logs(build / "logs.jsonl", logs)
            shown = _write_logs(build / "displays.jsonl", displays)  # (its records)
            meta = self._new_meta(step_name, step_key, build, out, exit_code, duration_s, ttl,
                                  result_digest)
            meta["log_lines"] = count  # a hit on a silent step then opens no file
            if shown:
                meta["displays"] = shown  # (absent: a hit looks for no file)
            if provenance:
                meta["provenance"] = dict(provenance)
            if inline:
                meta["inline"] = dict(inline)
                meta["size_bytes"] += len(json.dumps(meta["inline"]))  # what reduce_size frees
            if head is not None:  # its output digest that of its pack record
                meta.update(head)
            data = json.dumps(meta, separators=(",", ":")).encode()  # the C encoder
            _write_meta(build / "meta.json", data)
            _move(os.fspath(out), f"{build}/out")
            reader = self._write(step_name, step_key.digest, build, refresh)
        except BaseException:
            _put_back(build / "out", out)
            if isinstance(logs, os.PathLike):
                _put_back(build / "logs.jsonl", Path(logs))
            shutil.rmtree(build, ignore_errors=True)
            raise
        if reader is not None:
            return self._not_stored(step_name, step_key, build, meta, reader)
        self._forget(step_name, step_key.digest)
        return self._saved(step_name, step_key, meta, data)

    def _write(self, step_name: str, key: str, build: Path, refresh: bool) -> str | None:
        """Put ``build`` in place as ``step/key``; on the local backend (and a store URL's
        tier), unless it would replace an entry a live run reads: then who reads it
        (``pid N``), and ``build`` is left where it is."""
        backend = self.backend
        if type(backend) is LocalBackend or getattr(backend, "keeps_live_entries", False):
            return backend.write(step_name, key, build, refresh=refresh,  # type: ignore[call-arg]
                                 kept_for=functools.partial(self._live_user_of, step_name, key))
        backend.write(step_name, key, build, refresh=refresh)
        return None

    def _not_stored(self, step_name: str, key: StepKey, build: Path, meta: dict[str, Any],
                    reader: str) -> Entry:
        """The entry assembled in ``build`` and not put in place (a live run reads the
        one there): handed to the caller all the same, its folder removed at exit (or
        by a prune, as a crash's leftover)."""
        _UNSTORED.append((os.getpid(), os.fspath(build)))
        entry = Entry(step_name, key.digest, build, meta, None)
        entry.not_stored = _warn_not_stored(step_name, key, reader)
        return entry

    def give_back(self, entry: Entry, out_dir: str | os.PathLike[str],
                  logs: os.PathLike[str] | None) -> None:
        """Return what :meth:`save` moved into an entry it did not store (its
        ``not_stored`` says why) to where the caller had it: its outputs to ``out_dir``,
        its lines to ``logs`` (a packed one took nothing); the entry's folder goes now."""
        if entry.not_stored is None or isinstance(entry, PackedEntry):
            return
        _put_back(entry.path / "out", Path(out_dir))
        if logs is not None:
            _put_back(entry.path / "logs.jsonl", Path(logs))
        shutil.rmtree(entry.path, ignore_errors=True)

    def _save_packed(
        self,
        step_name: str,
        key: StepKey,
        out_dir: str | os.PathLike[str] | None,
        logs: Iterable[Mapping[str, Any]] | os.PathLike[str],
        inline: Mapping[str, Any] | None,
        exit_code: int,
        duration_s: float,
        ttl: float | str | None,
        provenance: Mapping[str, Any] | None,
        displays: Sequence[Mapping[str, Any]],
        refresh: bool,
    ) -> Entry | None:
        """Append the entry as one record of this store's pack; None when it is too big
        for one, or has displays (then it gets a folder)."""
        if displays:  # (they would grow the packs every process reads)
            return None
        # (most steps print nothing: no call for them)
        lines = [] if type(logs) is list and not logs else _small_logs(logs)
        if lines is None:
            return None
        ttl_s = seconds_to_live(self.default_ttl if ttl is None else parse_ttl(ttl))
        created = self.clock()
        texts = (None, None) if inline is None else _inline_texts(inline)
        head, body = _record(
            step_name, key.digest, created, None if ttl_s is None else created + ttl_s,
            float(duration_s), exit_code, _inline_digest(inline, texts[0]), inline, texts,
            provenance, lines, key.components, key.describe)
        if len(body) > RECORD_LIMIT:
            return None
        record = self._append(step_name, key.digest, ENTRY, body)
        # a folder entry it replaces goes, looked for after the record is appended: one
        # saved before, by any process (a look before the step ran is no proof: another
        # process may save a folder meanwhile, with no lock, as Memory.call() does)
        reader = None
        if self.backend.exists(step_name, key.digest):
            reader = self._live_user_of(step_name, key.digest)
            if reader is None:
                self.backend.remove(step_name, key.digest)
            else:  # a live run reads that folder: it stays the key's entry
                self._append(step_name, key.digest, TOMBSTONE, b"")
        where = (step_name, key.digest)
        entry = PackedEntry(step_name, key.digest, head, record, self)
        if reader is not None:  # (what was handed to it stays the caller's)
            entry.not_stored = _warn_not_stored(step_name, key, reader)
            return entry
        if out_dir is not None or type(logs) is not list:  # (a Python step's: nothing)
            _consume(out_dir, logs)
        self._pending.pop(where, None)  # (hits of the entry it replaces)
        self._entries[where] = entry
        return entry

    def keep_fetched(self, step_name: str, key: str, folder: Path) -> bool:
        """Keep the entry a download rebuilt in ``folder`` (a pull's, a store URL's
        lookup's) as a record of this store's pack, as :meth:`save` would have kept it
        here (:func:`_record_of_download`); its times, output digest and provenance are
        the store's copy's, its hits start from none. Whether it did (else it gets its
        folder, as before). A folder of the key, saved meanwhile, goes: the download's
        folder would have replaced it."""
        if self._packs is None or self.read_only:
            return False
        body = _record_of_download(folder, step_name, key)
        if body is None:
            return False
        try:
            self._append(step_name, key, ENTRY, body)
        except OSError:  # (no flock here, a full disk: it gets its folder)
            return False
        self._forget(step_name, key)
        (self._url_tier or self.backend).remove(step_name, key)  # (the tier's: the
        return True  # store's copy is the one kept, not one to distrust)

    def _saved(self, step_name: str, key: StepKey, meta: dict[str, Any], data: bytes) -> Entry:
        """The entry just saved: its metadata is known, so it is not parsed and checked
        again unless another writer replaced it meanwhile."""
        item = self.backend.read(step_name, key.digest)
        if item is not None and item.meta == data:
            entry = Entry(step_name, key.digest, item.path, meta, item.version)
            self._entries[(step_name, key.digest)] = entry
            return entry
        entry = self._current(step_name, key.digest)
        pause = _SWAP_FIRST_S
        while entry is None and pause <= _SWAP_LAST_S:
            # another writer of the key may be between moving the old folder aside and
            # renaming its own in (LocalBackend.write): there again in a moment
            time.sleep(pause)
            pause *= 2
            entry = self._current(step_name, key.digest)
        if entry is None:
            raise CacheError(f"entry {step_name}/{key.short} vanished right after saving")
        return entry

    def _new_meta(
        self,
        step_name: str,
        key: StepKey,
        build: Path,
        out: Path,
        exit_code: int,
        duration_s: float,
        ttl: float | str | None,
        result_digest: str | None = None,
    ) -> dict[str, Any]:
        """The metadata of an entry assembled in ``build``, whose outputs, still in
        ``out``, will be its ``out/`` (``result_digest``: see :meth:`save`)."""
        ttl_s = seconds_to_live(self.default_ttl if ttl is None else parse_ttl(ttl))
        created = self.clock()
        try:
            files = {**_file_sizes(build), **_file_sizes(out, "out")}
        except CacheError as exc:  # (a broken link: name the step it came from)
            raise CacheError(f"step {step_name!r}: {exc}") from None
        hashed: dict[str, str] = {}  # (out's files, read once: for both digests below)
        output_digest = directory_digest(out, use_stat_cache=False, file_digests=hashed)
        files_digest = None
        if result_digest is not None:  # (a set, an unsorted dict: its folder walked again)
            files_digest, output_digest = output_digest, directory_digest(
                out, use_stat_cache=False, extra={_result_file(out): result_digest})
        meta = {
            "format": STORE_FORMAT,
            "step": step_name,
            "key": key.digest,
            "created": created,
            "expires": None if ttl_s is None else created + ttl_s,
            "duration_s": float(duration_s),
            "exit_code": exit_code,
            "components": dict(key.components),
            "describe": dict(key.describe),
            "output_digest": output_digest,
            "files": files,
            "digests": _small_digests(build, out, files, hashed),
            "size_bytes": sum(files.values()),
            "hits": 0,
            "last_used": created,
            "has_result": any(f"out/{name}" in files for name in RESULT_FILES),
        }
        if files_digest is not None:
            meta["files_digest"] = files_digest
        return meta

    # ------------------------------------------------------------------ locks

    def lock(self, step_name: str, key: StepKey | str, timeout: float = -1) -> Lock:
        """An inter-process lock for one key, to use as ``with store.lock(...):``.

        The local backend's locks are ``flock``-based: the operating system releases the
        lock of a process that dies, so a crashed holder never blocks others. ``timeout``
        (seconds, -1 for none) raises a ``TimeoutError`` (``filelock.Timeout``) when
        exceeded.
        """
        if self.read_only:
            self._writable("lock step", step_name)
        return self.backend.lock(step_name, key if type(key) is str else key.digest, timeout)

    @contextlib.asynccontextmanager
    async def alock(
        self, step_name: str, key: StepKey | str, timeout: float = -1
    ) -> AsyncIterator[Lock]:
        """``async with store.alock(...)``: :meth:`lock`, taken at once when free (most
        misses meet no other process), else waited for in tries that a cancel stops
        (:func:`acquire`)."""
        lock = self.lock(step_name, key, timeout)
        await acquire(lock)
        try:
            yield lock
        finally:
            lock.release()

    # ------------------------------------------------------------------ management

    @property
    def pending_hits(self) -> int:
        """How many entries have hits counted in memory and not written yet."""
        return len(self._pending)

    def flush(self, *, compact: bool = True) -> None:
        """Write the hits counted in memory to the store's access journal (a read-only
        store forgets them: they are not its to record); ``compact``: fold the journal
        if it grew long."""
        with self._moving_counts:  # (from memory to the journal: see _counts)
            pending, self._pending = self._pending, {}
            if self.read_only or self._removed():
                return
            try:
                self._journal.append(pending, compact=compact)
            except OSError as exc:  # a full disk, a read-only cache: entries still serve
                if self._removed():
                    return  # removed while being written: nowhere to go
                for where, counts in pending.items():
                    self._pending.setdefault(where, counts)  # a later flush may write them
                if not self._flush_failed:
                    self._flush_failed = True
                    warnings.warn(f"dagnb: hit counts of cache {str(self.location)!r} not "
                                  f"written ({exc}); its entries are still used", stacklevel=2)

    def _removed(self) -> bool:
        """Whether the cache folder was removed (its entries with it): the hits counted
        have nowhere to go, and writing them would make the folder again."""
        backend = self.backend
        return type(backend) is LocalBackend and not os.path.isdir(backend._root_text)

    def _counts(self) -> _Counts:
        """The hits the journal holds and those counted here, not written yet, read
        together: a flush (another thread's) moves them from one to the other. And
        those other stores on this folder counted and did not write yet (a notebook's
        ``Memory`` counts in a store of its own: its hits showed only once written)."""
        with self._moving_counts:
            totals, pending = self._journal.totals(), dict(self._pending)
        for other in list(_LIVE) if self._session_hits else ():
            if other is not self and other._session_hits is self._session_hits:
                with other._moving_counts:
                    _add_pending(pending, other._pending)
        return totals, pending

    def __del__(self) -> None:
        # A store that dies with hits counted (a Memory made at each call, as in
        # ``memory.cache(f)(x)``) writes them now: at exit it is no longer among the live
        # stores closed then. Not folding the journal: a collection may run while this
        # thread holds the pack index's lock, which folding would take again.
        try:
            if self._pending:
                self.flush(compact=False)
        except Exception:  # (at shutdown, what it needs may be gone already)
            pass

    def close(self) -> None:
        """Write the hits counted so far and let go of this store's pack (another
        writer may then append there), sealing it first if it grew enough (a sort of
        its keys: see :mod:`dagnb.cache.sealed`); the store still works, it takes a
        pack again when it next saves."""
        self.flush()
        if self._writer is not None:
            self._writer.close()

    def remove(self, step_name: str, key: StepKey | str) -> bool:
        """Remove one entry; False when there was none."""
        self._writable("remove an entry of step", step_name)
        key = _key_text(key)
        self._forget(step_name, key)
        packed = self._drop_packed(step_name, key)
        return self.backend.remove(step_name, key) or packed

    def _drop_packed(self, step_name: str, key: str, *, spare_if_used: bool = False) -> bool:
        """Append a tombstone for a packed entry of ``step/key``; whether there was one.
        ``spare_if_used``: its folder, if a live run reads it, is left to a later prune
        (named by the record's stamp, no later entry takes its place)."""
        if self._packs is None or self.read_only:
            return False
        self._packs.refresh()  # the entry may be another process's, written since
        record = self._packs.get(step_name, key)
        if record is None:
            return False
        self._append(step_name, key, TOMBSTONE, b"")
        folder = f"{self.location}/{UNPACKED}/{step_name}/{key}-{record.stamp}"
        if not (spare_if_used and os.path.isdir(folder)
                and self._live_user_of(step_name, key) is not None):
            shutil.rmtree(folder, ignore_errors=True)
        return True

    def _append(self, step_name: str, key: str, kind: int, body: bytes) -> Record:
        """Append one record to this store's pack."""
        assert self._packs is not None
        if self._writer is None:
            self._writer = PackWriter(self._packs)
        # what other processes wrote since the packs were read (one fstat when nothing):
        # a record of theirs this one replaces needs the bump, or they keep serving it
        # (a fresh process's memory.cache(f).call(x) had read no pack yet)
        self._packs.refresh()
        stamp, replaces = self._packs.next_stamp(step_name, key)
        record = Record(step_name, key, kind, stamp, body, "")
        self._writer.append(encode(step_name, key, kind, body, stamp), record)
        if replaces:  # other processes may serve what it replaces: they stat, then read
            self._packs.bump()
        return record


def _result_file(out: Path) -> str:
    """The name of the result file in ``out`` (``result.json`` first, as a hit reads)."""
    return next((name for name in RESULT_FILES if (out / name).is_file()), RESULT_FILES[1])


def _result_head(inline: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the pack record of an entry with no output files holds of its result, for
    its folder's metadata when it gets one (a long log, a store with no packs): the same
    output digest, of the result alone (logs and displays are no output, and must not
    change the keys downstream), and the inline result :meth:`Entry.verify` checks."""
    head: dict[str, Any] = {
        "output_digest": _inline_digest(
            inline, None if inline is None else _inline_text(inline)),
        "has_result": inline is not None, "packed": True}
    if inline is not None:
        head["inline"] = dict(inline)
    return head


# what the folder of an entry a save would have packed holds (the tree a download rebuilds)
_PACKABLE_TREE = frozenset({"meta.json", "logs.jsonl", "out"})


def _record_of_download(folder: Path, step_name: str, key: str) -> bytes | None:
    """The record :meth:`Store._save_packed` would have written of the entry a download
    rebuilt in ``folder``; None for one a save gives a folder (output files of its own:
    its metadata not ``packed``; displays; lines or a record too big) or one whose files
    are not as its metadata says (a lookup of its folder finds what is wrong). Its
    ``out/`` holds nothing, or just the result file made from its inline result."""
    try:
        tree = set(os.listdir(folder))
        meta, problem = _parse_meta((folder / "meta.json").read_bytes(), step_name, key)
        inline = meta.get("inline")
        if (problem is not None or meta.get("packed") is not True or "displays" in meta
                or not tree <= _PACKABLE_TREE or type(inline) not in (dict, type(None))
                or _inline_digest(inline) != meta["output_digest"]
                or not (_no_files(folder / "out")
                        or first_difference(f"{folder}/out", out_files(inline)) is None)):
            return None
        lines = _small_logs(folder / "logs.jsonl")
        if lines is None:
            return None
        _, body = _record(
            step_name, key, meta["created"], meta["expires"],
            float(meta.get("duration_s", 0.0)), meta.get("exit_code", 0),
            meta["output_digest"], inline,
            (None, None) if inline is None else _inline_texts(inline),
            meta.get("provenance"), lines, meta["components"], meta.get("describe") or {})
    except (OSError, ValueError, TypeError, KeyError):  # (not as dagnb writes it: a folder)
        return None
    return body if len(body) <= RECORD_LIMIT else None


def _record(step_name: str, key: str, created: float, expires: float | None,
            duration_s: float, exit_code: Any, output_digest: str,
            inline: Mapping[str, Any] | None, texts: tuple[str | None, str | None],
            provenance: Mapping[str, Any] | None, lines: list[Any],
            components: Any, describe: Any) -> tuple[dict[str, Any], bytes]:
    """The head and the bytes of an entry's pack record (``texts``: the inline result's
    :func:`_inline_texts`), as a save writes it and a download is kept."""
    inline_text, compact = texts
    logs_text = _COMPACT(lines) if lines else None
    head: dict[str, Any] = {
        "format": STORE_FORMAT, "step": step_name, "key": key, "created": created,
        "expires": expires, "duration_s": duration_s, "exit_code": exit_code,
        "output_digest": output_digest,
        # what reduce_size frees, counted as a folder entry's files would be
        "size_bytes": (len(inline_text) if inline_text else 0) + (
            len(logs_text) if logs_text else 0),
        "hits": 0, "last_used": created, "has_result": inline is not None,
        "log_lines": len(lines), "packed": True,
    }
    if inline is not None:
        head["inline"] = dict(inline)
    if provenance:
        head["provenance"] = dict(provenance)
    rest = rest_bytes(components, describe, logs_text)
    head_text = (packed_head_bytes(head, compact) if type(exit_code) is int
                 else head_bytes(head))  # (another shape: written as head_bytes does)
    return head, b"%s\n%s" % (head_text, rest)


def _inline_text(inline: Mapping[str, Any]) -> str:
    """``_SORTED(inline)``, the text a packed entry's output digest is of."""
    return _inline_texts(inline)[0]


def _inline_texts(inline: Mapping[str, Any]) -> tuple[str, str | None]:
    """:func:`_inline_text`, and the compact JSON its record's head holds (None: left
    to the encoder): most Python steps' result (None, a bool, an int) written without
    the encoder, whose every call cost a first run some 5,000 instructions a step."""
    if type(inline) is dict and len(inline) == 1:  # (what encode_inline makes)
        text = scalar_text(inline.get("json", inline))  # (inline itself: no scalar)
        if text is not None:
            return f'{{"json": {text}}}', f'{{"json":{text}}}'
    return _SORTED(inline), None


async def acquire(lock: Lock, on_wait: Callable[[], object] | None = None) -> None:
    """Take ``lock``: at once when it is free (most misses meet no other process), else
    (after ``on_wait()``) by tries between short sleeps, which a cancel (Ctrl-C) stops
    at once. A thread blocked on the lock would not stop, and Python waits for such a
    thread at exit: here until the other process let go (at the end of its step). A
    lock with no way to try without waiting (another backend's) is waited for in a
    worker thread all the same."""
    take_now = _taking_now(lock)
    if take_now is None:
        await _acquire_in_a_thread(lock)
        return
    if take_now():
        return
    if on_wait is not None:
        on_wait()
    deadline = _deadline(lock)
    pause = _FIRST_TRY_S
    while True:
        await asyncio.sleep(pause)
        if take_now():
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise filelock.Timeout(getattr(lock, "lock_file", getattr(lock, "path", "")))
        pause = min(2 * pause, _LAST_TRY_S)


_FIRST_TRY_S = 0.01  # a short step of the other run is waited for little longer than it
_LAST_TRY_S = 0.1  # a long one: ten tries a second (an open, a fcntl, a close each)


def _taking_now(lock: Lock) -> Callable[[], bool] | None:
    """How to take ``lock`` without waiting (whether it was taken), if it has a way."""
    if isinstance(lock, KeyRangeLock):
        return lock.acquire_now
    if isinstance(lock, filelock.BaseFileLock):
        return functools.partial(_file_lock_now, lock)
    return None


def _file_lock_now(lock: filelock.BaseFileLock) -> bool:
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        return False
    return True


def _deadline(lock: Lock) -> float | None:
    """When a wait for ``lock`` gives up (its ``timeout``; -1 and none: never)."""
    timeout = getattr(lock, "timeout", -1)
    return None if timeout < 0 else time.monotonic() + timeout


async def _acquire_in_a_thread(lock: Lock) -> None:
    """Should the wait be cancelled, the thread may still get the lock: it is released
    then."""
    acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(lambda done: _release_if_acquired(done, lock))
        raise


def _release_if_acquired(done: asyncio.Future[Any], lock: Lock) -> None:
    if not done.cancelled() and done.exception() is None:
        lock.release()


@functools.lru_cache(maxsize=1)
def _read_only_unpack_root() -> str:
    root = tempfile.mkdtemp(prefix="dagnb-unpacked-")
    atexit.register(shutil.rmtree, root, True)
    return root


class SessionStore(Store):
    """A store that lasts as long as the process (``cache="session"``).

    Entries go through the same code as on-disk ones (so they behave the same), in a
    private temporary directory removed at exit; metadata is served from memory after
    the first read.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        root = tempfile.mkdtemp(prefix="dagnb-session-")
        atexit.register(shutil.rmtree, root, True)
        super().__init__(root, backend=LocalBackend(root), clock=clock)

    def flush(self, *, compact: bool = True) -> None:
        """Nothing outlives the session, so hits stay in memory."""
