"""The Store: cache entries keyed by (step name, key digest), on a backend.

Life cycle of an entry: the runner gets a fresh output directory
(:meth:`Store.scratch_dir`), runs the step into it, and hands it to :meth:`Store.save`,
which writes the logs and the metadata (each file's size, and the digest of each file
up to ``DIGEST_LIMIT``) into a temporary entry directory, only then moves the outputs in
(so a full disk leaves them where the step wrote them), and has the backend put the
whole into place: a reader sees a whole entry or none. Nothing is fsync'ed: a crash or
power loss may tear a file of a finished entry, and the first lookup in a process then
finds a size or a small file's digest that differs from the recorded one and treats the
entry as damaged (a miss, set aside, run again). ``dagnb cache verify`` re-hashes every
file.
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
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from dagnb.cache.backend import (
    Item,
    KeyRangeLock,
    LocalBackend,
    Lock,
    StoreBackend,
    get_backend,
    make_folder,
)
from dagnb.cache.forks import renew_in_child
from dagnb.cache.journal import AccessJournal, Totals
from dagnb.cache.keys import StepKey
from dagnb.cache.pack import (
    ENTRY,
    PACKS,
    RECORD_LIMIT,
    TOMBSTONE,
    PackWriter,
    Record,
    compact,
    encode,
    index_of,
    iter_pack_files,
)
from dagnb.cache.sealed import SEALED
from dagnb.checks import is_url
from dagnb.errors import CacheError
from dagnb.fingerprint import directory_digest, new_hasher, path_digest, text_digest
from dagnb.model.results import (
    NO_RESULT,
    RESULT_FILES,
    decode_inline,
    load_result,
    save_result,
)
from dagnb.model.step import parse_duration

__all__ = ["STORE_FORMAT", "DamagedEntryWarning", "Entry", "PackedEntry", "SessionStore", "Store"]

STORE_FORMAT = 1  # the entry layout; an entry of another format is treated as damaged
_REQUIRED = frozenset(
    {"step", "key", "format", "created", "expires", "output_digest", "components"})
_HEAD_REQUIRED = _REQUIRED - {"components"}  # a packed entry's head: components in the rest
# What a hit reads of a packed entry: parsed at once; the rest (components, describe,
# files, logs) only when someone reads ``entry.meta``.
_HEAD_FIELDS = frozenset({
    "format", "step", "key", "created", "expires", "duration_s", "exit_code",
    "output_digest", "size_bytes", "hits", "last_used", "has_result", "log_lines",
    "packed", "inline", "provenance",
})
_TEMP_MAX_AGE = 3600.0  # leftover build directories older than this are someone's crash
_TEMP_PREFIXES = (".tmp-", ".old-", ".trash-")
_DAMAGED = ".damaged"
_RECENT_S = 0.05  # a lookup's miss reads the packs again only if read longer ago
_UNPACKED = ".unpacked"  # folders of packed entries, made when a caller needs one
_REPORTED: set[str] = set()  # damaged entries already reported by this process


_SET_ASIDE_KEPT = 100_000  # (a long-lived process that never asks keeps no more)


class DamagedEntryWarning(UserWarning):
    """A cache entry could not be read; it was moved aside and treated as a miss."""


class Entry:
    """One cached result of one step.

    Attributes
    ----------
    step, key
        The step name and the key digest.
    path
        The entry directory; ``out_dir`` holds the output files.
    meta
        The metadata as saved (created, expires, duration_s, exit_code, components,
        describe, output_digest, size_bytes, has_result, ...).
    version
        The backend's version of the entry when it was read.
    """

    def __init__(
        self, step: str, key: str, path: Path, meta: Mapping[str, Any], version: Hashable = None
    ) -> None:
        self.step, self.key, self._path, self.meta, self.version = step, key, path, meta, version

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step!r}, key={self.key!r}, path={self._path!r})"

    @property
    def path(self) -> Path:
        """The entry directory."""
        return self._path

    @functools.cached_property
    def out_dir(self) -> Path:
        """The directory of the step's output files."""
        return self.path / "out"

    @property
    def out_ref(self) -> str | os.PathLike[str]:
        """Where the outputs are, as text (a packed entry's folder made when first used)."""
        return self._out_text

    @property
    def log_file(self) -> Path:
        """The file of the captured lines (absent when the step printed nothing)."""
        return self.path / "logs.jsonl"

    @property
    def inline(self) -> Mapping[str, Any] | None:
        """The result kept in the metadata itself (``meta["inline"]``), or None."""
        return self.meta.get("inline")

    @functools.cached_property
    def _out_text(self) -> str:
        return f"{self._path}/out"  # a str: checked on every hit, Path costs two calls

    @property
    def output_digest(self) -> str:
        """Digest of the output directory; downstream keys use it (early cutoff)."""
        return self.meta["output_digest"]

    @property
    def created(self) -> float:
        """When the entry was saved (seconds since the epoch, the store's clock)."""
        return self.meta["created"]

    @property
    def expires(self) -> float | None:
        """When the entry expires, or None."""
        return self.meta["expires"]

    def expired(self, now: float) -> bool:
        """Whether the entry's TTL has passed at ``now``."""
        return self.expires is not None and self.expires <= now

    def logs(self) -> list[dict[str, Any]]:
        """The captured log lines: dicts with time, attempt, stream, line."""
        return list(self.iter_logs())

    def iter_logs(self) -> Iterator[dict[str, Any]]:
        """:meth:`logs` one line at a time, read as they are asked for: replaying a
        gigabyte of logs costs one line of memory. Undecodable bytes are replaced and
        torn lines skipped (a damaged log is not an error)."""
        if self.meta.get("log_lines") == 0:
            return
        try:
            with open(self.path / "logs.jsonl", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    record = _log_record(line)
                    if record:
                        yield record
        except OSError:  # gone or unreadable: nothing to replay
            return

    def result(self) -> Any:
        """The step's Python result, or ``NO_RESULT``."""
        inline = self.meta.get("inline")
        if inline is not None:  # a small result kept in the metadata itself
            return decode_inline(inline)
        return load_result(self._out_text)

    def verify(self) -> bool:
        """Re-hash the output files (no stat cache) and compare with the saved digest."""
        if self.meta.get("packed"):  # a packed entry pushed or pulled as a folder
            return _inline_digest(self.meta.get("inline")) == self.output_digest
        try:
            return directory_digest(self.out_dir, use_stat_cache=False) == self.output_digest
        except OSError:
            return False


class PackedEntry(Entry):
    """An entry kept as a record of a pack (:mod:`dagnb.cache.pack`): its metadata, logs
    and result are in memory; its folder (``path``, ``out_dir``, ``log_file``) is made
    from them under ``.unpacked`` the first time someone asks for it."""

    def __init__(
        self, step: str, key: str, path: str, head: dict[str, Any], rest: bytes,
        version: Hashable, unpack: Callable[[PackedEntry], None],
    ) -> None:
        self.step, self.key, self.version = step, key, version
        self._folder = path  # text: a Path is made only if the folder is asked for
        self._head, self._rest = head, rest
        self._unpack = unpack
        self._unpacked = False

    @functools.cached_property
    def meta(self) -> Mapping[str, Any]:  # type: ignore[override]
        """The metadata: the head at once, the rest of the record parsed on first use."""
        return _PackedMeta(self._head, self._rest)

    @property
    def inline(self) -> Mapping[str, Any] | None:
        return self._head.get("inline")

    @property
    def output_digest(self) -> str:
        return self._head["output_digest"]

    @property
    def created(self) -> float:
        return self._head["created"]

    @property
    def expires(self) -> float | None:
        return self._head["expires"]

    @functools.cached_property
    def _path(self) -> Path:  # type: ignore[override]
        return Path(self._folder)

    @property
    def path(self) -> Path:
        if not self._unpacked:
            self._unpack(self)
            self._unpacked = True
        return self._path

    @property
    def out_ref(self) -> os.PathLike[str]:
        return _Unpacked(self, "out")

    @property
    def log_file(self) -> Path:
        return _Unpacked(self, "logs.jsonl")  # type: ignore[return-value]  # Path-like

    def iter_logs(self) -> Iterator[dict[str, Any]]:
        if self._head.get("log_lines") == 0:
            return
        yield from self.meta.get("packed_logs") or ()

    def result(self) -> Any:
        inline = self._head.get("inline")
        return NO_RESULT if inline is None else decode_inline(inline)

    def verify(self) -> bool:
        """The record was checked against its digest when read; its result still gives
        the output digest it was saved with."""
        return _inline_digest(self._head.get("inline")) == self.output_digest


class _PackedMeta(Mapping[str, Any]):
    """A packed entry's metadata: what a hit reads (exit code, provenance, inline result,
    times) from the head parsed with the entry; components, descriptions and logs from
    the rest of the record, parsed only if someone asks for them."""

    __slots__ = ("_head", "_rest", "_whole")

    def __init__(self, head: dict[str, Any], rest: bytes) -> None:
        self._head, self._rest = head, rest
        self._whole: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> Any:
        if name in self._head:
            return self._head[name]
        if name in _HEAD_FIELDS:
            raise KeyError(name)  # a head field the entry has not: no need for the rest
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def _all(self) -> dict[str, Any]:
        if self._whole is None:
            try:
                rest = json.loads(self._rest) if self._rest else {}
            except ValueError:  # the record's digest held: a record of another format
                rest = {}
            self._whole = {**(rest if isinstance(rest, dict) else {}), **self._head}
        return self._whole


class _Unpacked(os.PathLike):  # type: ignore[type-arg]
    """A file or folder of a packed entry, made only when used as a path."""

    __slots__ = ("_entry", "_name")

    def __init__(self, entry: PackedEntry, name: str) -> None:
        self._entry, self._name = entry, name

    def __fspath__(self) -> str:
        return f"{self._entry.path}/{self._name}"

    def __str__(self) -> str:
        return f"{self._entry._folder}/{self._name}"

    def __repr__(self) -> str:
        return f"<packed {self._name} of {self._entry.step}/{self._entry.key[:12]}>"

    def __getattr__(self, name: str) -> Any:  # exists(), read_text(), ... on the made folder
        return getattr(Path(self.__fspath__()), name)

    def __truediv__(self, other: str) -> Path:
        return Path(self.__fspath__()) / other


# ASCII out: a str may hold lone surrogates (os.fsdecode of a non-UTF-8 file name),
# which a UTF-8 encode refuses and a \u escape keeps
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode
_SORTED = json.JSONEncoder(sort_keys=True).encode  # made once: json.dumps with options
#                                                   makes an encoder per call


def _json_bytes(value: Any) -> bytes:
    return _COMPACT(value).encode()


def _inline_digest(inline: Any) -> str:
    return _packed_digest(None if inline is None else _SORTED(inline))


def _packed_digest(inline_text: str | None) -> str:
    """The output digest of a packed entry: of its inline result (it has no files), as
    JSON with sorted keys."""
    return text_digest("packed:" + ("none" if inline_text is None else inline_text))


_LIVE: weakref.WeakSet[Store] = weakref.WeakSet()
# the hits a store's journal holds, and those it counted and has not written yet
_Counts = tuple[Totals, dict[tuple[str, str], list[float]]]


@atexit.register
def _close_live_stores() -> None:
    """At exit: write the hits counted, and let go of (and seal) the packs written to."""
    for store in list(_LIVE):
        with contextlib.suppress(Exception):
            store.close()


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


class Store:
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
    """

    def __init__(
        self,
        location: str | os.PathLike[str] = ".dagnb_cache",
        backend: str | StoreBackend = "local",
        clock: Callable[[], float] = time.time,
        default_ttl: float | str | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only
        if backend == "local" and is_url(os.fspath(location)):
            backend = "remote"  # dagnb.cache.remote: a local tier in front of the URL
        if type(backend) is not str and isinstance(backend, StoreBackend):
            self.backend = backend
        elif backend == "local" and read_only:  # writes nothing, not even its folder
            self.backend = LocalBackend(location, create=False)
        else:
            self.backend = get_backend(backend)(location)
        self.clock = clock
        self.default_ttl = parse_duration(default_ttl, what="default_ttl")
        self._journal = AccessJournal(
            self.backend, lambda: self._new_folder(".tmp-"), exists=self._exists
        )
        # small entries as records of packs: the local backend only (a remote store
        # shares folders); see dagnb.cache.pack
        # (two spellings of the folder, through a symlink, share one index)
        self._packs = (index_of(f"{self.backend._root_text}/{PACKS}", self.backend.identity)
                       if type(self.backend) is LocalBackend else None)
        self._writer: PackWriter | None = None
        self._absent: tuple[str, str] | None = None  # the last key found with no folder
        self._entries: dict[tuple[str, str], Entry] = {}  # parsed metadata, checked by version
        self._pending: dict[tuple[str, str], list[float]] = {}  # unflushed [hits, last_used]
        self._moving_counts = threading.Lock()  # held while a flush writes _pending out
        self._session_hits: defaultdict[str, int] = defaultdict(int)
        self._session_misses: defaultdict[str, int] = defaultdict(int)
        self._flush_failed = False  # warned once already
        self._set_aside_now: list[str] = []  # entries found damaged since last asked
        _LIVE.add(self)

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

    def lookup(self, step_name: str, key: StepKey | str, *, touch: bool = True) -> Entry | None:
        """The entry of ``step_name`` under ``key``, or None for a miss.

        An expired entry is removed and is a miss; a damaged one is moved aside,
        reported once with a :class:`DamagedEntryWarning`, and is a miss. Never raises
        for what it finds on disk. ``touch=False`` neither counts nor records the use.
        """
        key = _key_text(key)
        # a miss may rely on packs read a moment ago: a run's claim (peek) reads them again
        entry = self._current(step_name, key, recent=True)
        now = self.clock()
        if entry is not None and entry.expired(now):
            self._forget(step_name, key)
            if not self.read_only:
                self._drop_packed(step_name, key)
                self.backend.remove(step_name, key)
            entry = None
        if touch:
            self._count(step_name, key, entry, now)
        return entry

    def count_miss(self, step_name: str) -> None:
        """Count a miss found by :meth:`peek` rather than :meth:`lookup` (a run's look
        under the key's lock, when it took the lock first)."""
        self._session_misses[step_name] += 1

    def peek(self, step_name: str, key: StepKey | str) -> Entry | None:
        """Like :meth:`lookup` but expired entries are returned and nothing is recorded."""
        return self._current(step_name, _key_text(key))

    def _count(self, step_name: str, key: str, entry: Entry | None, now: float) -> None:
        if entry is None:
            self._session_misses[step_name] += 1
            return
        self._session_hits[step_name] += 1
        pending = self._pending.get((step_name, key))
        if pending is None:
            self._pending[(step_name, key)] = [1, now]
        else:
            pending[0] += 1
            pending[1] = now

    def _current(
        self, step_name: str, key: str, retry: bool = True, recent: bool = False
    ) -> Entry | None:
        """The entry as stored now: a packed one from the index (no system call), else
        from memory while the backend's version is the same."""
        packs = self._packs
        if packs is not None:
            record = packs.get(step_name, key)
            if record is not None:
                return self._packed(record)
        item = self.backend.read(step_name, key)
        if item is None:
            self._entries.pop((step_name, key), None)
            self._absent = (step_name, key)  # no folder: a save next need not look again
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

    def _fresh_packed(self, step_name: str, key: str, recent: bool = False) -> Entry | None:
        """After a miss: what the packs gained meanwhile (another process's saves);
        ``recent``: unless they were read in the last few milliseconds."""
        assert self._packs is not None
        if not recent or time.monotonic() - self._packs.refreshed > _RECENT_S:
            self._packs.refresh()
        self._report_pack_damage()
        record = self._packs.get(step_name, key)
        return None if record is None else self._packed(record)

    def _packed(self, record: Record) -> Entry | None:
        """The entry of a pack record, parsed once per record."""
        where = (record.step, record.key)
        cached = self._entries.get(where)
        if cached is not None and cached.version is record:
            return cached
        head_bytes, _, rest = record.body.partition(b"\n")
        head, problem = _parse_meta(head_bytes, record.step, record.key, _HEAD_REQUIRED)
        if problem is not None:
            return self._damaged(record.step, record.key, problem, record)
        folder = f"{self._unpack_root}/{record.step}/{record.key}-{record.stamp}"
        entry = PackedEntry(record.step, record.key, folder, head, rest, record, self._unpack)
        self._entries[where] = entry
        return entry

    @functools.cached_property
    def _unpack_root(self) -> str:
        if self.read_only:  # writes nothing in the cache: a folder of this process
            return _read_only_unpack_root()
        backend = self.backend  # (a local one's text: no Path made on a first hit)
        root = backend._root_text if type(backend) is LocalBackend else str(self.location)
        return f"{root}/{_UNPACKED}"

    def _unpack(self, entry: PackedEntry) -> None:
        """Make the folder of a packed entry (once: it is never changed afterwards)."""
        target = entry._path
        if os.path.isdir(target):
            return
        build = Path(tempfile.mkdtemp(prefix=".tmp-", dir=make_folder(target.parent)))
        try:
            (build / "out").mkdir()
            inline = entry.meta.get("inline")
            if inline is not None:
                save_result(build / "out", decode_inline(inline))
            _write_logs(build / "logs.jsonl", entry.meta.get("packed_logs") or ())
            meta = {k: v for k, v in entry.meta.items() if k != "packed_logs"}
            (build / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            os.rename(build, target)
        except OSError:
            if not os.path.isdir(target):  # nobody else made it either
                raise
        finally:
            shutil.rmtree(build, ignore_errors=True)

    def damaged_records(self) -> list[str]:
        """The damaged pack records found so far and not yet reported, each as
        ``pack: problem`` (``dagnb cache verify``: they are misses, never served)."""
        if self._packs is None:
            return []
        return [f"{pack}: {problem}" for pack, problem in self._packs.take_problems()]

    def _report_pack_damage(self) -> None:
        assert self._packs is not None
        for pack, problem in self._packs.take_problems():
            if pack.endswith(SEALED):  # (an index: nothing is lost, lookups read more)
                message = (f"cache index {pack!r} is damaged ({problem}); the packs are "
                           "read whole instead until the pack is sealed again")
            else:
                message = (f"cache pack {pack!r} is damaged ({problem}); its records from "
                           "there on are treated as misses")
            warnings.warn(message, DamagedEntryWarning, stacklevel=4)

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

    def _load(self, step_name: str, key: str, item: Item, retry: bool) -> Entry | None:
        if item.meta is None:
            return self._damaged(step_name, key, "meta.json is missing", None, retry)
        meta, problem = _parse_meta(item.meta, step_name, key)
        if problem is None and not _has_out_files(meta) and not os.path.isdir(f"{item.path}/out"):
            problem = "its out/ directory is missing"  # (a file under out/ is checked below)
        if problem is None:
            problem = _size_problem(item.path, meta.get("files"))
        if problem is None:
            problem = _digest_problem(item.path, meta.get("digests"))
        if problem is not None:
            return self._damaged(step_name, key, problem, item.version, retry)
        entry = Entry(step_name, key, item.path, meta, item.version)
        self._entries[(step_name, key)] = entry
        return entry

    def _damaged(
        self, step_name: str, key: str, problem: str, version: Hashable, retry: bool = False
    ) -> Entry | None:
        # A refresh may have swapped the entry between our reads: look again before blaming.
        if retry and not isinstance(version, Record):
            again = self.backend.read(step_name, key)
            if again is not None and again.version != version:
                return self._current(step_name, key, False)
        self._forget(step_name, key)
        where = None if self.read_only else self._set_aside(step_name, key)
        if len(self._set_aside_now) < _SET_ASIDE_KEPT:
            self._set_aside_now.append(f"{step_name}/{key[:12]} ({problem})")
        ident = f"{self.location}/{step_name}/{key}"
        if ident not in _REPORTED:
            _REPORTED.add(ident)
            moved = f"moved to {str(where)!r}" if where else "dropped"
            if self.read_only:
                moved = "left in place (the cache is read-only)"
            warnings.warn(
                f"cache entry {step_name}/{key[:12]} is damaged ({problem}); {moved}, "
                "treated as a miss",
                DamagedEntryWarning,
                stacklevel=4,
            )
        return None

    def _set_aside(self, step_name: str, key: str) -> Path | None:
        """Move an entry under ``.damaged/`` (kept for a post-mortem); None if it vanished.
        A packed one is dropped from its pack (a tombstone)."""
        if self._drop_packed(step_name, key):
            return None
        item = self.backend.read(step_name, key)
        if item is None:
            return None
        name = f"{step_name}--{key}--{uuid.uuid4().hex[:8]}"
        _let_owner_in(item.path)
        try:
            self.backend.write(_DAMAGED, name, item.path)
        except OSError:  # removed meanwhile, or it cannot be moved: then it goes
            with contextlib.suppress(OSError):
                self.backend.remove(step_name, key)
            return None
        with contextlib.suppress(OSError):
            self.backend.remove(step_name, key)  # what is left of it, if the write copied
        return self.location / _DAMAGED / name

    def take_set_aside(self) -> list[str]:
        """The entries found damaged (set aside, or left in place when read-only) since
        the last call, each as ``step/key (problem)``: ``dagnb cache verify`` counts
        those its listing met as well as those whose files it found changed."""
        found, self._set_aside_now = self._set_aside_now, []
        return found

    def quarantine(self, step_name: str, key: StepKey | str, problem: str) -> None:
        """Set aside an entry found damaged after lookup (its result cannot be read, ...):
        it is moved under ``.damaged/``, reported once, and the next lookup misses."""
        self._damaged(step_name, _key_text(key), problem, None)

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

        An entry with no output files (``out_dir`` None, missing or empty) whose record
        is under 64 KiB is appended to this store's pack instead of getting a folder.
        """
        self._writable("save step", step_name)
        step_key = key if isinstance(key, StepKey) else StepKey(str(key), {}, {})
        if self._packs is not None and refresh:
            self._packs.refresh()  # what it replaces may be another process's record
        if self._packs is not None and _no_files(out_dir):
            try:
                entry = self._save_packed(step_name, step_key, out_dir, logs, inline,
                                          exit_code, duration_s, ttl, provenance)
            except OSError:  # no flock here: the entry gets a folder
                entry = None
            if entry is not None:
                return entry
        if self._packs is not None:
            self._drop_packed(step_name, step_key.digest)  # the folder takes its place
        if out_dir is None or not os.path.isdir(out_dir):
            out_dir = self._new_folder(".tmp-out-")
        out = Path(out_dir)
        if inline and result_file:
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
            meta = self._new_meta(step_name, step_key, build, out, exit_code, duration_s, ttl)
            meta["log_lines"] = count  # a hit on a silent step then opens no file
            if provenance:
                meta["provenance"] = dict(provenance)
            if inline:
                meta["inline"] = dict(inline)
                meta["size_bytes"] += len(json.dumps(meta["inline"]))  # what reduce_size frees
            data = json.dumps(meta, separators=(",", ":")).encode()  # the C encoder
            _write_meta(build / "meta.json", data)
            _move(os.fspath(out), f"{build}/out")
            self.backend.write(step_name, step_key.digest, build, refresh=refresh)
        except BaseException:
            _put_back(build / "out", out)
            if isinstance(logs, os.PathLike):
                _put_back(build / "logs.jsonl", Path(logs))
            shutil.rmtree(build, ignore_errors=True)
            raise
        self._forget(step_name, step_key.digest)
        return self._saved(step_name, step_key, meta, data)

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
    ) -> Entry | None:
        """Append the entry as one record of this store's pack; None when it is too big
        for one (then it gets a folder)."""
        lines = _small_logs(logs)
        if lines is None:
            return None
        ttl_s = self.default_ttl if ttl is None else parse_duration(ttl, what="ttl")
        created = self.clock()
        inline_text = None if inline is None else _SORTED(inline)
        head: dict[str, Any] = {
            "format": STORE_FORMAT, "step": step_name, "key": key.digest,
            "created": created, "expires": None if ttl_s is None else created + ttl_s,
            "duration_s": float(duration_s), "exit_code": exit_code,
            "output_digest": _packed_digest(inline_text),
            # what reduce_size frees, counted as a folder entry's files would be
            "size_bytes": (len(inline_text) if inline_text else 0) + (
                len(_COMPACT(lines)) if lines else 0),
            "hits": 0, "last_used": created, "has_result": inline is not None,
            "log_lines": len(lines), "packed": True,
        }
        if inline is not None:
            head["inline"] = dict(inline)
        if provenance:
            head["provenance"] = dict(provenance)
        rest_fields = {"components": key.components, "describe": key.describe,
                       "files": {}, "digests": {}}
        if lines:
            rest_fields["packed_logs"] = lines
        rest = _json_bytes(rest_fields)
        body = b"%s\n%s" % (_json_bytes(head), rest)
        if len(body) > RECORD_LIMIT:
            return None
        record = self._append(step_name, key.digest, ENTRY, body)
        if self._absent != (step_name, key.digest) and self.backend.exists(
            step_name, key.digest
        ):  # a folder entry it replaces
            self.backend.remove(step_name, key.digest)
        _consume(out_dir, logs)
        self._forget(step_name, key.digest)
        folder = f"{self._unpack_root}/{step_name}/{key.digest}-{record.stamp}"
        entry = PackedEntry(step_name, key.digest, folder, head, rest, record, self._unpack)
        self._entries[(step_name, key.digest)] = entry
        return entry

    def _saved(self, step_name: str, key: StepKey, meta: dict[str, Any], data: bytes) -> Entry:
        """The entry just saved: its metadata is known, so it is not parsed and checked
        again unless another writer replaced it meanwhile."""
        item = self.backend.read(step_name, key.digest)
        if item is not None and item.meta == data:
            entry = Entry(step_name, key.digest, item.path, meta, item.version)
            self._entries[(step_name, key.digest)] = entry
            return entry
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
    ) -> dict[str, Any]:
        """The metadata of an entry assembled in ``build``, whose outputs, still in
        ``out``, will be its ``out/``."""
        ttl_s = self.default_ttl if ttl is None else parse_duration(ttl, what="ttl")
        created = self.clock()
        files = {**_file_sizes(build), **_file_sizes(out, "out")}
        return {
            "format": STORE_FORMAT,
            "step": step_name,
            "key": key.digest,
            "created": created,
            "expires": None if ttl_s is None else created + ttl_s,
            "duration_s": float(duration_s),
            "exit_code": exit_code,
            "components": dict(key.components),
            "describe": dict(key.describe),
            "output_digest": directory_digest(out, use_stat_cache=False),
            "files": files,
            "digests": _small_digests(build, out, files),
            "size_bytes": sum(files.values()),
            "hits": 0,
            "last_used": created,
            "has_result": any(f"out/{name}" in files for name in RESULT_FILES),
        }

    # ------------------------------------------------------------------ locks

    def lock(self, step_name: str, key: StepKey | str, timeout: float = -1) -> Lock:
        """An inter-process lock for one key, to use as ``with store.lock(...):``.

        The local backend's locks are ``flock``-based: the operating system releases the
        lock of a process that dies, so a crashed holder never blocks others. ``timeout``
        (seconds, -1 for none) raises a ``TimeoutError`` (``filelock.Timeout``) when
        exceeded.
        """
        self._writable("lock step", step_name)
        return self.backend.lock(step_name, _key_text(key), timeout)

    @contextlib.asynccontextmanager
    async def alock(
        self, step_name: str, key: StepKey | str, timeout: float = -1
    ) -> AsyncIterator[Lock]:
        """``async with store.alock(...)``: :meth:`lock`, acquired in a worker thread
        unless it is free (then at once: most misses meet no other process)."""
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

    def flush(self) -> None:
        """Write the hits counted in memory to the store's access journal (a read-only
        store forgets them: they are not its to record)."""
        with self._moving_counts:  # (from memory to the journal: see _counts)
            pending, self._pending = self._pending, {}
            if self.read_only:
                return
            try:
                self._journal.append([
                    {"step": step_name, "key": key, "hits": int(hits), "last_used": last_used}
                    for (step_name, key), (hits, last_used) in pending.items()
                ])
            except OSError as exc:  # a full disk, a read-only cache: entries still serve
                for where, counts in pending.items():
                    self._pending.setdefault(where, counts)  # a later flush may write them
                if not self._flush_failed:
                    self._flush_failed = True
                    warnings.warn(f"dagnb: hit counts of cache {str(self.location)!r} not "
                                  f"written ({exc}); its entries are still used", stacklevel=2)

    def _counts(self) -> _Counts:
        """The hits the journal holds and those counted here, not written yet, read
        together: a flush (another thread's) moves them from one to the other."""
        with self._moving_counts:
            return self._journal.totals(), dict(self._pending)

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

    def _drop_packed(self, step_name: str, key: str) -> bool:
        """Append a tombstone for a packed entry of ``step/key``; whether there was one."""
        if self._packs is None or self.read_only:
            return False
        self._packs.refresh()  # the entry may be another process's, written since
        record = self._packs.get(step_name, key)
        if record is None:
            return False
        self._append(step_name, key, TOMBSTONE, b"")
        shutil.rmtree(f"{self.location}/{_UNPACKED}/{step_name}/{key}-{record.stamp}",
                      ignore_errors=True)
        return True

    def _append(self, step_name: str, key: str, kind: int, body: bytes) -> Record:
        """Append one record to this store's pack."""
        assert self._packs is not None
        if self._writer is None:
            self._writer = PackWriter(self._packs)
        stamp, replaces = self._packs.next_stamp(step_name, key)
        record = Record(step_name, key, kind, stamp, body, "")
        self._writer.append(encode(step_name, key, kind, body, stamp), record)
        if replaces:  # other processes may serve what it replaces: they stat, then read
            self._packs.bump()
        return record

    def iter_entries(self, step: str | None = None) -> Iterator[Entry]:
        """Every readable entry (expired ones included), of one step or all."""
        seen: set[tuple[str, str]] = set()
        if self._packs is not None:
            for record in self._packs.live(step):
                entry = self._packed(record)
                if entry is not None:
                    seen.add((record.step, record.key))
                    yield entry
        for step_name in [step] if step is not None else self.backend.names():
            for key in self.backend.names(step_name):
                if (step_name, key) in seen:
                    continue
                entry = self._current(step_name, key)
                if entry is not None:
                    yield entry

    def usage(self, entry: Entry) -> tuple[int, float]:
        """(hits, last_used) of an entry: persisted plus counted in this process."""
        return self._usage(entry, self._counts())

    def _usage(self, entry: Entry, counts: _Counts) -> tuple[int, float]:
        totals, unwritten = counts
        hits, last_used = totals.get((entry.step, entry.key), (0, 0.0))
        last_used = max(last_used, entry.meta.get("last_used", 0.0))
        pending = unwritten.get((entry.step, entry.key))
        if pending is not None:
            hits, last_used = hits + int(pending[0]), max(last_used, pending[1])
        return hits, last_used

    def newest(self, step_name: str, *, include_expired: bool = False) -> Entry | None:
        """The most recently saved entry of ``step_name``, or None."""
        now = self.clock()
        candidates = [
            e for e in self.iter_entries(step_name) if include_expired or not e.expired(now)
        ]
        return max(candidates, key=lambda e: e.created, default=None)

    def entries(self, step: str | None = None) -> Any:
        """A pandas DataFrame with one row per entry (see the module docs for columns)."""
        return _entries_frame(self, step)

    def stats(self) -> Any:
        """A pandas DataFrame per step: entries, hits, misses, hit_rate, bytes."""
        return _stats_frame(self)

    def clear(self, step: str | None = None, older_than: float | str | None = None) -> int:
        """Remove entries (of one step; created more than ``older_than`` ago); how many.

        ``older_than`` is seconds or a duration such as ``"1d"``. Clearing everything
        also deletes damaged entries moved aside and leftover temporary directories.
        """
        self._writable("clear entries")
        seconds = parse_duration(older_than, what="older_than")
        deadline = None if seconds is None else self.clock() - seconds
        doomed = [e for e in self.iter_entries(step) if deadline is None or e.created < deadline]
        if step is None and seconds is None:  # the packs go whole: no tombstone each
            removed = sum(isinstance(e, PackedEntry) for e in doomed)
            self._remove_packs()
            removed += sum(self.remove(e.step, e.key) for e in doomed
                           if not isinstance(e, PackedEntry))
            for name in self.backend.names(_DAMAGED):
                self.backend.remove(_DAMAGED, name)
            self._remove_temporaries(_TEMP_MAX_AGE)
        else:
            removed = sum(self.remove(e.step, e.key) for e in doomed)
            self._compact()
        return removed

    def _compact(self) -> None:
        """After removals: rewrite the packs if removed records take most of them."""
        if self._packs is None:
            return
        if self._writer is not None:
            self._writer.close(seal=False)  # (its pack may be rewritten: not sealed)
        if compact(self._packs):
            self._entries.clear()

    def _remove_packs(self) -> None:
        """Clearing everything: the packs go whole (writers notice and start new ones)."""
        if self._packs is None:
            return
        for path in iter_pack_files(self._packs.folder):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if os.path.isdir(self._packs.folder):
            self._packs.bump()  # other processes' indexes: they read the packs again
        self._packs.reset()
        self._entries.clear()
        shutil.rmtree(self.location / _UNPACKED, ignore_errors=True)

    def _remove_temporaries(self, older_than: float) -> int:
        """Delete folders left in ``.scratch`` by a crash more than ``older_than`` s ago."""
        deadline = time.time() - older_than
        removed = 0
        for path in _children(self.location / ".scratch"):
            if path.name.startswith(_TEMP_PREFIXES) and _mtime(path) < deadline:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    def reduce_size(
        self,
        bytes_limit: int | str | None = None,
        items_limit: int | None = None,
        age_limit: timedelta | float | str | None = None,
    ) -> int:
        """Evict least recently used entries, with ``joblib.Memory.reduce_size`` semantics.

        Parameters
        ----------
        bytes_limit
            Keep at most this many bytes: an int or a string such as ``"10M"``, ``"1G"``.
        items_limit
            Keep at most this many entries.
        age_limit
            Remove entries not used for this long (timedelta, seconds or ``"7d"``).

        Returns
        -------
        int
            The number of entries removed.
        """
        self._writable("evict entries")
        doomed = _items_to_delete(
            self._usage_items(),
            _bytes(bytes_limit),
            items_limit,
            _age_seconds(age_limit),
            self.clock(),
        )
        removed = sum(self.remove(e.step, e.key) for e in doomed)
        self._compact()
        return removed

    def _usage_items(self) -> list[tuple[Entry, float, int]]:
        items, counts = [], self._counts()
        for entry in self.iter_entries():
            _, last_used = self._usage(entry, counts)
            items.append((entry, last_used, int(entry.meta.get("size_bytes", 0))))
        return items


def _items_to_delete(
    items: list[tuple[Entry, float, int]],
    bytes_limit: int | None,
    items_limit: int | None,
    age_limit: float | None,
    now: float,
) -> list[Entry]:
    """joblib's ``_get_items_to_delete``: oldest use first until every limit holds."""
    if not items:
        return []
    excess_bytes = sum(size for _, _, size in items) - bytes_limit if bytes_limit is not None else 0
    excess_items = len(items) - items_limit if items_limit is not None else 0
    deadline = None if age_limit is None else now - age_limit
    doomed: list[Entry] = []
    freed = 0
    for entry, last_used, size in sorted(items, key=lambda item: item[1]):
        too_old = deadline is not None and last_used <= deadline
        if not too_old and freed >= excess_bytes and len(doomed) >= excess_items:
            break
        doomed.append(entry)
        freed += size
    return doomed


def _bytes(limit: int | str | None) -> int | None:
    if limit is None or isinstance(limit, int):
        return limit
    from joblib.disk import memstr_to_bytes  # joblib's "10M" / "1G" parser

    try:
        return int(memstr_to_bytes(limit))
    except ValueError:
        raise CacheError(f"bytes_limit {limit!r} is not a size; use bytes or '10M', '1G'") from None


def _age_seconds(limit: timedelta | float | str | None) -> float | None:
    if isinstance(limit, timedelta):
        return limit.total_seconds()
    return parse_duration(limit, what="age_limit")


async def acquire(lock: Lock) -> None:
    """Take ``lock``: at once when it is free (most misses meet no other process), else
    in a worker thread. Should the wait be cancelled, the thread may still get it: it
    is released then."""
    if isinstance(lock, KeyRangeLock) and lock.acquire_now():
        return
    acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(lambda done: _release_if_acquired(done, lock))
        raise


def _release_if_acquired(done: asyncio.Future[Any], lock: Lock) -> None:
    if not done.cancelled() and done.exception() is None:
        lock.release()


_SCAN = json.JSONDecoder().scan_once  # the C scanner: one value from an offset


def _json(raw: bytes) -> Any:
    """``json.loads(raw)``, by its C scanner alone when ``raw`` is UTF-8 JSON with
    nothing around it (what dagnb writes): a hit parses one such head."""
    try:
        text = raw.decode()
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):
        pass
    return json.loads(raw)  # whitespace around it, another encoding, or the error


def _parse_meta(
    raw: bytes, step_name: str, key: str, required: frozenset[str] = _REQUIRED
) -> tuple[dict[str, Any], str | None]:
    try:
        meta = _json(raw)
    except ValueError:
        return {}, "meta.json is not valid JSON"
    if type(meta) is not dict or not required <= meta.keys():
        return {}, "meta.json lacks required fields"
    if meta["format"] != STORE_FORMAT:
        return {}, f"format {meta['format']!r} is not {STORE_FORMAT!r}"
    if meta["step"] != step_name or meta["key"] != key:
        return {}, "meta.json belongs to another entry"
    created, expires = meta["created"], meta["expires"]
    if type(created) not in _TIMES or not (expires is None or type(expires) in _TIMES):
        return {}, f"its times are not numbers (expires {expires!r})"
    if not isinstance(meta["output_digest"], str):
        return {}, "its output digest is not text"
    return meta, None


_TIMES = (int, float)  # (not bool, nor a subclass: what json.loads makes of a number)


def _log_record(line: str) -> dict[str, Any] | None:
    """One captured line, or None for a blank or torn one (a damaged log is not an error)."""
    try:
        record = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _file_sizes(root: Path, prefix: str = "") -> dict[str, int]:
    """Every file under ``root`` (``prefix/`` + relative path -> bytes), what a hit
    checks the entry's files against."""
    sizes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            sizes[os.path.join(prefix, os.path.relpath(path, root))] = os.stat(path).st_size
    return sizes


def _put_back(moved: Path, out: Path) -> None:
    """After a failed save, return the outputs to where the step wrote them."""
    if os.path.exists(moved) and not os.path.exists(out):
        with contextlib.suppress(OSError):
            shutil.move(os.fspath(moved), out)


def _has_out_files(meta: Mapping[str, Any]) -> bool:
    """Whether the manifest lists a file under ``out/`` (whose size check finds out/)."""
    files = meta.get("files")
    return isinstance(files, dict) and any(name.startswith("out/") for name in files)


def _size_problem(root: Path, files: Any) -> str | None:
    """Why the entry's files are not those it was saved with (sizes), or None.

    This is what lets a save skip fsync: after a power loss or a hand edit, a torn,
    truncated or deleted file no longer has its recorded size, so the entry is a miss,
    set aside, instead of being served. (Same-size damage is ``dagnb cache verify``'s,
    which re-hashes the files.) Entries from before the manifest have none to check.
    """
    if not isinstance(files, dict):
        return None
    for relative, size in files.items():
        try:
            actual = os.stat(f"{root}/{relative}").st_size  # text: a hit's path
        except OSError:
            return f"its file {relative} is missing"
        if actual != size:
            return f"its file {relative} is {actual} bytes, not the {size} it was saved with"
    return None


DIGEST_LIMIT = 64 * 1024  # files up to this size are hashed on a hit (first read per process)


def _small_digests(build: Path, out: Path, sizes: Mapping[str, int]) -> dict[str, str]:
    """Content digests of an entry's small files (``result.json``, ``logs.jsonl``, small
    outputs), read from ``build`` and (for ``out/...``) from ``out``: cheap to check on
    a hit, and what catches same-size edits there."""
    def where(relative: str) -> Path:
        head, _, rest = relative.partition(os.sep)
        return out / rest if head == "out" and rest else build / relative

    return {
        relative: path_digest(where(relative), use_stat_cache=False)
        for relative, size in sizes.items()
        if size <= DIGEST_LIMIT
    }


def _digest_problem(root: Path, digests: Any) -> str | None:
    """Which small file no longer has the content it was saved with, or None."""
    if not isinstance(digests, dict):
        return None  # an entry saved before digests were recorded
    for relative, digest in digests.items():
        try:
            if _small_file_digest(f"{root}/{relative}") != digest:
                return f"its file {relative} was changed since it was saved"
        except OSError:
            return f"its file {relative} cannot be read"
    return None


def _small_file_digest(path: str) -> str:
    """``path_digest`` of a small file, read whole: one open and one read, no walk (a
    cold re-run checks one such file per step)."""
    with open(path, "rb") as handle:
        data = handle.read()
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def _let_owner_in(folder: Path) -> None:
    """Give back the owner's access to an entry whose mode was changed (``chmod 000``),
    so it can be moved aside; a folder of someone else stays as it is."""
    with contextlib.suppress(OSError):
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            os.chmod(folder, 0o700)


@functools.lru_cache(maxsize=1)
def _read_only_unpack_root() -> str:
    root = tempfile.mkdtemp(prefix="dagnb-unpacked-")
    atexit.register(shutil.rmtree, root, True)
    return root


def _move(source: str, target: str) -> None:
    """Move a folder: a rename on one file system (always, for a scratch folder)."""
    try:
        os.rename(source, target)
    except OSError:
        shutil.move(source, target)


def _no_files(out_dir: str | os.PathLike[str] | None) -> bool:
    """Whether a step wrote no output files (no folder, or an empty one)."""
    if out_dir is None:
        return True
    try:
        return not os.listdir(out_dir)
    except (FileNotFoundError, NotADirectoryError):
        return True


def _small_logs(
    logs: Iterable[Mapping[str, Any]] | os.PathLike[str],
) -> list[dict[str, Any]] | None:
    """The captured lines, if they are few enough for a pack record; else None."""
    if type(logs) is list and not logs:  # (most steps print nothing)
        return []
    if not isinstance(logs, os.PathLike):
        if isinstance(logs, (list, tuple)):
            lines = [dict(record) for record in logs]
            return lines if len(lines) < 1000 else None
        return None  # a stream of lines: written as it comes, into a folder
    try:
        if os.stat(logs).st_size > RECORD_LIMIT // 2:
            return None
        with open(logs, encoding="utf-8", errors="replace") as handle:
            return [r for r in map(_log_record, handle) if r]
    except FileNotFoundError:
        return []
    except OSError:
        return None


def _consume(out_dir: str | os.PathLike[str] | None, logs: Any) -> None:
    """A packed entry took what was handed to it: its empty out folder and log file go,
    as :meth:`Store.save` moves them into a folder entry."""
    if type(logs) is not list and isinstance(logs, os.PathLike):
        with contextlib.suppress(OSError):
            os.unlink(logs)
    if out_dir is not None:
        with contextlib.suppress(OSError):
            os.rmdir(out_dir)


def _write_meta(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _write_logs(path: Path, logs: Iterable[Mapping[str, Any]]) -> int:
    """Write the lines as they come (never all in memory); how many. No lines, no file:
    a silent step's entry costs one inode less."""
    count = 0
    handle = None
    try:
        for record in logs:
            if handle is None:
                handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
            handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return count


def _move_logs(source: Path, target: Path) -> int:
    """Move a file of log records into an entry (a rename); how many lines it has."""
    if not source.exists() or source.stat().st_size == 0:
        return 0
    shutil.move(os.fspath(source), target)
    lines = 0
    with open(target, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return lines


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")




_ENTRY_COLUMNS = [
    "step", "key", "created", "last_used", "expires", "hits", "size_bytes", "duration_s",
    "exit_code", "path",
]
_STATS_COLUMNS = ["entries", "hits", "misses", "hit_rate", "bytes", "session_hits"]


def _entries_frame(store: Store, step: str | None) -> Any:
    import pandas as pd

    rows, counts = [], store._counts()
    for entry in store.iter_entries(step):
        hits, last_used = store._usage(entry, counts)
        meta = entry.meta
        rows.append({
            "step": entry.step, "key": entry.key[:12], "created": meta["created"],
            "last_used": last_used, "expires": meta["expires"], "hits": hits,
            "size_bytes": int(meta.get("size_bytes", 0)),
            "duration_s": float(meta.get("duration_s", 0.0)),
            "exit_code": meta.get("exit_code"), "path": str(entry.path),
        })
    frame = pd.DataFrame(rows, columns=_ENTRY_COLUMNS)
    for column in ("created", "last_used", "expires"):
        frame[column] = pd.to_datetime(frame[column].astype("float64"), unit="s", utc=True)
    return frame.sort_values(["step", "created"], ignore_index=True)


def _stats_frame(store: Store) -> Any:
    """Per step: entries and bytes on disk, hits recorded on them (all processes), and
    this store's misses; ``hit_rate`` is hits / (hits + misses)."""
    import pandas as pd

    table: dict[str, dict[str, float]] = {}
    counts = store._counts()
    for entry in store.iter_entries():
        row = table.setdefault(entry.step, dict.fromkeys(_STATS_COLUMNS, 0))
        row["entries"] += 1
        row["hits"] += store._usage(entry, counts)[0]
        row["bytes"] += int(entry.meta.get("size_bytes", 0))
    for step in set(store._session_hits) | set(store._session_misses):
        row = table.setdefault(step, dict.fromkeys(_STATS_COLUMNS, 0))
        row["misses"] = store._session_misses[step]
        row["session_hits"] = store._session_hits[step]
    frame = pd.DataFrame.from_dict(table, orient="index", columns=_STATS_COLUMNS)
    lookups = frame["hits"] + frame["misses"]
    frame["hit_rate"] = (frame["hits"] / lookups.where(lookups > 0)).astype("float64")
    frame.index.name = "step"
    return frame.astype({c: "int64" for c in _STATS_COLUMNS if c != "hit_rate"}).sort_index()


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

    def flush(self) -> None:
        """Nothing outlives the session, so hits stay in memory."""
