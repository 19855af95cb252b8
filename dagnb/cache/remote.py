"""A cache on object storage: a local read-through tier in front of blobs and manifests.

``cache_directory: s3://bucket/prefix`` (or any fsspec URL: ``gs://``, ``az://``,
``file://``, ``memory://``) makes :class:`RemoteBackend` the store's backend. It keeps the
six-method backend interface by putting a :class:`~dagnb.cache.backend.LocalBackend` (the
local tier, ``cache_local_directory``) in front of an :class:`ObjectStore`:

- a read of an entry in the local tier costs what it costs today (one ``stat``); a local
  miss looks remote, downloads the entry into the local tier, and then hits there (a
  small one, which a local save packs, as a record of the tier's packs, as a pull keeps
  it: :meth:`~dagnb.cache.store.Store.keep_fetched`);
  ``plan`` and ``explain`` only glance: the manifest and the ``meta.json`` blob, nothing
  written to the tier (:meth:`RemoteBackend.glance`);
- a new entry is written to the local tier, then uploaded;
- names, removals, locks, the journal of hits and damaged entries stay local: the remote
  store is shared, what it keeps is the bucket's business (lifecycle rules: a save keeps
  the blobs it names young enough for an age-based one, see below).
- a read-only store (``cache_mode: read-only``) never writes to the remote store; a hit
  found there is still downloaded into the local tier, which is how it is served.

Layout of the remote store::

    <url>/blobs/<digest>               one object per distinct file content (empty
                                       files have none: the manifest says enough)
    <url>/entries/<step>/<key>.json    the manifest: every file of the entry by digest
                                       and size, every folder, the executable files and
                                       the links (with their target text); written last

Links stay links, as in the local store (a link to a folder is not a folder of copies),
and executable files stay executable. A manifest with either is format 2, which readers
before it refuse (a miss, not a tree without them); one with neither stays format 1.

An upload puts the blobs a store lacks (identical outputs of different steps are stored
once), then the manifest, created only if absent (S3's ``If-None-Match: *`` through
s3fs' ``mode="create"``; stores without a conditional write check, then write). A reader
trusts an entry only when its manifest parses and every blob it names exists with the
recorded size and, as it is downloaded, hashes to its name, so an upload cut short
(process killed, server gone) leaves nothing a reader accepts: blobs without a manifest
are ignored, and an S3 object only exists once its PUT (or multipart upload) completed.
A blob changed in the store is a miss, downloaded once per process (not again for its
other entries, nor by a run's second look under the key's lock), and the process that met
it mends it when it saves the step again (a refresh sends every blob again too). Two
writers of one key leave one good entry: the first manifest stays, unless it is broken or
expired, then it is replaced. An upload looks for the manifest first and sends nothing when
a good one is there (another machine stored the key while the step ran); the loser of a
race has sent its blobs, and those the kept manifest does not name (its ``meta.json``, an
output of another content) stay in the store named by no entry: nothing removes them.
Files move through ``put_file``/``get_file``, which stream in chunks: memory stays
bounded whatever a file's size.

A blob is shared, and an upload skips one the store has, so its date was its first
upload's: a lifecycle rule expiring objects N days after their creation deleted it while
entries saved the day before named it (a miss for everyone: the step ran again). A save
that reuses a blob older than :data:`BLOB_REDATED_AFTER` gives it a new date
(:meth:`ObjectStore._redate`), so such a rule counts from the last save that named it: on
S3 a copy of the object onto itself (one CopyObject, done by the server: no bytes move;
a blob over 5 GB, more than one copy takes, is sent again), in a folder a new
modification time, elsewhere (``gs://``, ``az://``) the blob sent again from the local
tier. Younger blobs cost nothing: the date comes with the size the save asks for anyway.
One that cannot be given a new date is said once, and the save goes on. A hit gives no
blob a new date (a read would then write).

Credentials come from the store library's usual places (environment variables, profiles,
instance roles); dagnb's settings refuse them (:func:`dagnb.config.settings`). Code may
pass ``key`` and ``secret`` in ``storage_options``, whose URLs are checked as the
setting's are (:func:`dagnb.checks.store_options`).
:func:`push` and :func:`pull` copy entries between a local cache and a remote store; a
push also sends the refreshes and rebuilds the store missed (:func:`owe_replacement`). A
push takes a blob the store has by its size (one request; a blob changed there with its
size kept passes), or, with ``check``, by its content, downloaded and hashed.

fsspec with s3fs was chosen over obstore: one API for every store fsspec knows (local
files and memory included, which the tests use), the conditional create that S3 offers,
streaming ``put_file``/``get_file``, and credentials resolved by botocore as the AWS CLI
does; obstore is faster per request but adds a Rust build and its own credential story.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import datetime
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO, TypeVar

import xxhash

from dagnb import checks
from dagnb.cache.backend import (
    Item,
    LocalBackend,
    StoreBackend,
    is_entry_name,
    register_backend,
)
from dagnb.cache.entry import Entry, PackedEntry
from dagnb.cache.forks import WeakRefs, renew_in_child
from dagnb.cache.housekeeping import live_user_of
from dagnb.errors import CacheError
from dagnb.fingerprint import new_hasher

if TYPE_CHECKING:
    from dagnb.cache.store import Store

__all__ = [
    "MANIFEST_FORMAT",
    "HeldUploads",
    "ObjectStore",
    "RemoteBackend",
    "RemoteCacheWarning",
    "Transfer",
    "Upload",
    "progress_line",
    "pull",
    "push",
]

MANIFEST_FORMAT = 2  # the newest; a tree with no links or executable files is still 1
_READABLE_FORMATS = (1, 2)
RETRY_AFTER = 60.0  # seconds a store that failed is left alone
# seconds uploads stop after one is refused: a read-only user's saves try no more, yet a
# refusal that passes (a token refreshed, a policy fixed) costs minutes of saves, not all
REFUSED_RETRY_AFTER = 600.0
GLANCE_KEPT = 30.0  # seconds a plan's look at a store entry is taken for the store's
# seconds after which a blob a save reuses is given a new date (see _redate): lifecycle
# rules count whole days (S3 rounds up to the next midnight UTC), so a day late costs a
# rule at most a day of an entry's life, while a blob many saves share is copied once a
# day rather than at each save
BLOB_REDATED_AFTER = 86400.0
_S3_COPY_LIMIT = 5 << 30  # bytes: the largest object one CopyObject copies
# small blobs of an entry sent or fetched at once: a small file's transfer is mostly the
# wait for answers, which a folder of 1,000 paid one after the other (larger ones go one
# at a time: each streams through buffers of its own, and fills the line alone)
_BLOBS_AT_ONCE = 8
_AT_ONCE_UP_TO = 4 << 20  # bytes
_NOTICED_WAIT = 1.0  # seconds a failed request made a run wait: said, even mid-outage
_UNANSWERED = object()  # what RemoteBackend._ask returns for a request that failed
_NOT_READ = object()  # ObjectStore.upload's ``found`` when its caller read no manifest
_GLANCED = "store"  # the version of an Item RemoteBackend.glance made from the store
_GLANCING = "a lookup of an entry's metadata"  # what RemoteBackend.glance asks (see _failed)
_CHUNK = 1 << 20  # bytes read at a time when hashing
_META = "meta.json"  # the entry's metadata, the one file a glance downloads
_S3_CHUNK = 32 << 20  # s3fs part size: an upload holds at most two of these in memory
# seconds an S3 request waits to connect, and for the server's next bytes: a cache is
# worth no long wait (a failed request is a miss, the local tier goes on); S3 itself
# answers a lookup in well under a second (s3fs' own are 5 and 15)
_S3_CONNECT_TIMEOUT = 4.0
_S3_READ_TIMEOUT = 4.0
# what a request moving a blob waits for the server's answer once it is sent: the server
# stores a part (32 MB) before it answers, and joins the parts of a large upload when it
# completes (S3 answers at once and keeps the line alive; moto and other S3 servers do
# the work first): 4 s failed a 192 MB upload to a busy server, which a second attempt
# then found completed, and the store rested for a minute with the entry left local
_S3_TRANSFER_READ_TIMEOUT = 30.0
# seconds between looks, as a multipart upload goes, at whether its run was interrupted;
# and the wait for the abort of its parts then (Ctrl-C waits for it: best effort)
_STOP_CHECKED_EVERY = 0.1
_ABORT_WAIT = 2.0

Progress = Callable[[int, int, int], None]  # (entries done, entries in all, bytes moved)
T = TypeVar("T")


class RemoteCacheWarning(UserWarning):
    """The remote store could not be reached or written; the local tier went on alone."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """The content digest that names a file's blob (read in chunks)."""
    hasher = new_hasher()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _fsspec(url: str) -> Any:
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the extra
        raise CacheError(
            f"cache directory {url!r} needs fsspec; install it with pip install 'dagnb[s3]'"
        ) from None
    return fsspec


_FOLDER_PROTOCOLS = frozenset({"file", "local", "memory"})  # a path, not a bucket, follows
_OPTIONS_FIX = (
    "give credentials in the key and secret options, or where the store library reads them "
    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE)"
)


def _unquoted(url: str) -> str:
    """A ``file://`` URL with its path percent-decoded, as RFC 8089 writes it
    (``Path.as_uri()``: ``my%20store``); fsspec takes the rest of a local URL as the
    path, and would make a folder literally named ``my%20store``."""
    protocol, sep, path = url.partition("://")
    if protocol in ("file", "local") and "%" in path:
        return f"{protocol}{sep}{urllib.parse.unquote(path)}"
    return url


def _checked_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options given in code, checked as the ``cache_storage_options`` setting is: a URL's
    password reached botocore's errors, and so the warnings, in plain text. Code may
    pass ``key`` and ``secret`` (no ``config show`` prints them)."""
    if options is None:
        return {}
    return checks.checked(checks.store_options, options, "storage_options", CacheError,
                          sep="=", fix=_OPTIONS_FIX, credentials=True)


def _keys_from_variables(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with each encryption key given by its variable (``SSECustomerKey_env:
    MY_SSE_KEY``, see :func:`dagnb.checks.key_variables`) as the variable's value: a
    setting holds no key, as ``config show`` prints them all."""
    suffix = checks.KEY_FROM_VARIABLE
    given: dict[str, Any] = {}
    for key, value in options.items():
        option = str(key)
        if isinstance(value, Mapping):
            given[key] = _keys_from_variables(value)
        elif option[:-len(suffix)] in checks.key_variables({option: value}):
            secret = os.environ.get(value, "")
            if not secret:
                raise CacheError(f"cache_storage_options: {option} names variable {value!r}, "
                                 f"which is not set; export {value}=... (the key) first")
            given[option[:-len(suffix)]] = secret
        else:
            given[key] = value
    return given


def _let_go_of_client(store: ObjectStore) -> None:
    """In a forked child (see :mod:`dagnb.cache.forks`; a Pool's worker): forget the
    parent's clients, which their next use makes again (:meth:`ObjectStore.__getattr__`).
    s3fs' client of the parent refuses to work there ("not fork-safe"), which read as an
    unreachable store, so whatever the workers computed stayed on this machine. Made at
    that use, not here: fsspec's own renewal in the child (its event loop) may not have
    run yet."""
    for client in _CLIENTS:
        store.__dict__.pop(client, None)


_CLIENTS = ("fs", "transfers")  # an ObjectStore's clients (see ObjectStore._connect)
_STORES = WeakRefs()  # the object stores alive (see ObjectStore.__init__)
renew_in_child(_STORES, _let_go_of_client)


class ObjectStore:
    """Cache entries on an fsspec filesystem: blobs by content digest, manifests last.

    Parameters
    ----------
    url
        Where the store is: ``s3://bucket/prefix``, ``gs://...``, ``file:///path``...
    storage_options
        Keyword arguments for the filesystem (``endpoint_url``, ``profile``, ...).
    check_content
        Take a blob as stored only once it is downloaded and hashes to its name (each
        once), not by its size alone: ``dagnb cache push --check``.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 check_content: bool = False) -> None:
        # every message below names the URL: one with credentials in it goes no further
        self.url = checks.checked(checks.location, url, "cache store", CacheError,
                                  sep=" ").rstrip("/")
        protocol, _, where = url.partition("://")
        protocol = protocol.lower()  # (S3:// is s3://, as self.url has it)
        if protocol not in _FOLDER_PROTOCOLS and not where.split("/", 1)[0]:
            # (s3:// lost its slashes to rstrip and became a local folder named "s3:")
            raise CacheError(f"cache store {url!r} names no bucket; write it as "
                             f"{protocol}://BUCKET/prefix")
        options = _keys_from_variables(_checked_options(storage_options))
        if protocol in ("file", "local"):
            options.setdefault("auto_mkdir", True)  # object stores have no folders to make
        s3_retries, transfer_options = 1, None
        if protocol in ("s3", "s3a"):
            if (fault := _unknown_s3_option(options)) is not None:
                raise CacheError(fault)  # (s3fs took it, and failed at the first request)
            if (fault := _config_kwargs_fault(options.get("config_kwargs"))) is not None:
                raise CacheError(fault)  # (a traceback, or a store said unreachable)
            if (fault := checks.endpoint_variable_fault(options)) is not None:
                raise CacheError(fault)  # (botocore took it for an unreachable store)
            if (fault := checks.endpoint_config_fault(options)) is not None:
                raise CacheError(fault)  # (the same, set in botocore's config file)
            if (variable := checks.endpoint_variable(options)) is not None:
                # (named, as botocore reads it: fsspec keeps one client per options, and
                # a variable changed later in the process reached the first endpoint)
                options["endpoint_url"] = os.environ[variable]
            s3_retries = options.pop("retries", s3_retries)
            transfer_options = _s3_defaults(dict(options), _S3_TRANSFER_READ_TIMEOUT)
            options = _s3_defaults(options, _S3_READ_TIMEOUT)
        self._options, self._s3_retries = options, s3_retries
        self._transfer_options = transfer_options  # (None: the one client moves blobs too)
        self._connect()
        _STORES.add(weakref.ref(self, _STORES.discard))  # (gone with the store)
        is_s3 = "s3" in _protocols(self.fs)
        # blobs whose content did not match their name (their digest) when downloaded,
        # and the entries that named them: a save replaces both (see _put_blob)
        self.damaged_blobs: set[str] = set()
        self.damaged_entries: set[tuple[str, str]] = set()
        # entries whose manifest named a blob missing, damaged or of another size: not
        # downloaded again by this process (a run's claim looks twice) until it saves them
        self.unusable_entries: set[tuple[str, str]] = set()
        # entries whose manifest a newer dagnb wrote (step, key -> its format): a miss
        # here, neither damaged nor replaced (an older writer would undo the newer's)
        self.newer_entries: dict[tuple[str, str], int] = {}
        self.check_content = check_content
        self.bytes_checked = 0  # read back from the store to check blobs' content
        self._checked_blobs: set[str] = set()  # found whole by that check, or sent from here
        self.expired = False  # whether the last download found its entry expired
        self._redate_failure_said = False  # a blob not given a new date: said once
        # parts of _S3_CHUNK bytes, two in flight: what a transfer holds in memory (s3fs'
        # defaults read ten 50 MB parts of a download at once)
        self._part_options = {"chunksize": _S3_CHUNK, "max_concurrency": 2} if is_s3 else {}

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def _connect(self) -> None:
        """Make this process's clients of the store: :attr:`fs` for manifests, sizes and
        listings (short waits: a store that does not answer is found out in seconds) and
        :attr:`transfers` for blobs (on S3, a client whose requests wait longer for the
        server to store or join what it was sent; see _S3_TRANSFER_READ_TIMEOUT)."""
        fs, path = self._client(self._options)
        self.path = path.rstrip("/")
        options = self._transfer_options
        self.transfers = fs if options is None else self._client(options)[0]
        self.fs = fs

    def _client(self, options: Mapping[str, Any]) -> tuple[Any, str]:
        try:
            fs, path = _fsspec(self.url).core.url_to_fs(_unquoted(self.url), **options)
        except ImportError as exc:  # s3fs, gcsfs or adlfs missing
            raise CacheError(
                f"cache directory {self.url!r} needs {exc.name or 'its store library'}; "
                "install it with pip install 'dagnb[s3]' (or gcsfs / adlfs)"
            ) from None
        except ValueError as exc:  # fsspec's "Protocol not known: s4"
            if "Protocol not known" not in str(exc):
                raise
            scheme = self.url.partition("://")[0]
            raise CacheError(f"cache directory {self.url!r}: no store library knows the "
                             f"scheme {scheme!r}; write s3://, gs://, az:// or file://") from None
        except OSError as exc:  # a library that connects as it is made (ftp://, sftp://)
            raise CacheError(f"cache directory {self.url!r} cannot be reached "
                             f"({type(exc).__name__}: {exc}); check its host, or use an "
                             "s3://, gs://, az:// or file:// store") from None
        if "s3" in _protocols(fs):
            fs.retries = self._s3_retries  # s3fs' own loop (botocore's beneath: _s3_defaults)
        return fs, path

    def __getattr__(self, name: str) -> Any:
        # (only for what the instance lacks: the clients a forked child let go of)
        if name not in _CLIENTS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._connect()
        return self.__dict__[name]

    def blob_path(self, digest: str) -> str:
        """Where the blob of ``digest`` is."""
        return f"{self.path}/blobs/{digest}"

    def manifest_path(self, step: str, key: str) -> str:
        """Where the manifest of ``step/key`` is."""
        return f"{self.path}/entries/{step}/{key}.json"

    # -- reading ----------------------------------------------------------------------
    def manifest(self, step: str, key: str) -> dict[str, Any] | None:
        """The parsed manifest of ``step/key``, or None when absent or unreadable (one a
        newer dagnb wrote is noted in :attr:`newer_entries`)."""
        try:
            raw = self.fs.cat_file(self.manifest_path(step, key))
        except FileNotFoundError:
            raw = b""
        manifest = _parse_manifest(raw, step, key) if raw else None
        newer = None if manifest is not None or not raw else _newer_format(raw)
        if newer is None:
            self.newer_entries.pop((step, key), None)
        else:
            self.newer_entries[(step, key)] = newer
        return manifest

    def written_by_newer(self, step: str, key: str) -> int | None:
        """The format of ``step/key``'s manifest if a newer dagnb wrote it, as last read."""
        return self.newer_entries.get((step, key))

    def download(self, step: str, key: str, into: Path) -> int | None:
        """Rebuild the entry ``step/key`` in the local folder ``into`` (made if need be,
        empty if there); the bytes moved, or None when there is no entry a reader may
        trust (nothing absent, expired, or with a blob missing, of the wrong size or not
        of its digest: then it is in :attr:`damaged_entries`)."""
        manifest = self.manifest(step, key)
        self.expired = manifest is not None and _expired(manifest, time.time())
        if manifest is None or self.expired:
            return None
        into.mkdir(parents=True, exist_ok=True)  # (a miss makes no folder: see fetch_into)
        for folder in manifest["dirs"]:
            (into / folder).mkdir(parents=True, exist_ok=True)
        if not self._fetch_files(manifest["files"], into):
            self.unusable_entries.add((step, key))
            if any(digest in self.damaged_blobs for digest, _ in manifest["files"].values()):
                self.damaged_entries.add((step, key))
            return None
        _restore_modes_and_links(manifest, into)
        return sum(size for _, size in manifest["files"].values())

    def glance(self, step: str, key: str) -> bytes | None:
        """The ``meta.json`` of the entry ``step/key``, downloading nothing else: None
        unless :meth:`download` would rebuild it (the manifest unexpired and whole, its
        other blobs seen by size) and the blob hashes to its name."""
        manifest = self.manifest(step, key)
        if manifest is None or not self.whole(step, key, manifest):
            return None
        return self.meta_of(step, key, manifest)

    def meta_of(self, step: str, key: str, manifest: Mapping[str, Any]) -> bytes | None:
        """The ``meta.json`` blob that the parsed ``manifest`` of ``step/key`` names, if it
        hashes to its name (else None, and the entry is damaged: see :meth:`download`)."""
        ref = manifest["files"].get(_META)
        if ref is None:  # (no entry without one: the tier would find it damaged)
            return None
        digest, size = ref
        try:
            data = self.transfers.cat_file(self.blob_path(digest))
        except FileNotFoundError:  # (removed since its size was seen)
            return None
        hasher = new_hasher()
        hasher.update(data)
        if len(data) != size or hasher.hexdigest() != digest:
            self.damaged_blobs.add(digest)  # as a download that met it (see download)
            self.damaged_entries.add((step, key))
            self.unusable_entries.add((step, key))
            return None
        return data

    def _fetch_files(self, files: Mapping[str, list[Any]], into: Path) -> bool:
        """Download an entry's files into ``into``, each blob once (a repeated digest is
        copied locally), :data:`_BLOBS_AT_ONCE` at a time; False when one is missing,
        damaged or of another size than its manifest says."""
        first: dict[str, Path] = {}  # digest -> the file it is downloaded into
        for relative, (digest, size) in files.items():
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if size == 0:
                target.touch()  # empty files have no blob: nothing to fetch
            else:
                first.setdefault(digest, target)
        sizes = {digest: size for digest, size in files.values()}
        if not all(_at_once(lambda job: self._fetch_blob(*job), list(first.items()),
                            [sizes[digest] for digest in first])):
            return False
        for relative, (digest, size) in files.items():
            target = into / relative
            if size and first[digest] != target:
                shutil.copyfile(first[digest], target)
            if os.stat(target).st_size != size:
                return False
        return True

    def _fetch_blob(self, digest: str, target: Path) -> bool:
        """Download one blob; False when it is absent, or is not the content its name
        says (changed in the store, by a bug or by hand: never served, and in
        :attr:`damaged_blobs`, not downloaded again by this process until it sends the
        blob itself)."""
        if digest in self.damaged_blobs:
            return False
        try:
            self.transfers.get_file(self.blob_path(digest), os.fspath(target),
                                    **self._part_options)
        except FileNotFoundError:
            return False
        if file_digest(target) != digest:
            self.damaged_blobs.add(digest)
            return False
        return True

    def entries(self) -> Iterator[tuple[str, str]]:
        """Every (step, key) with a manifest, whether or not its blobs are all there."""
        for step, key, _when in self.entries_modified():
            yield step, key

    def entries_modified(self, of_step: str | None = None
                         ) -> Iterator[tuple[str, str, float | None]]:
        """:meth:`entries` with when each manifest was last written (epoch seconds, as
        the listing says, at no extra request; None where it does not say); ``of_step``:
        that step's alone, one listing of its folder."""
        prefix = f"{self.path}/entries/"
        try:
            found = self.fs.find(prefix + of_step if of_step else prefix.rstrip("/"),
                                 detail=True)
        except FileNotFoundError:
            return
        for path in sorted(found):
            relative = path[path.find(prefix) + len(prefix):] if prefix in path else ""
            step, _, name = relative.partition("/")
            if of_step is not None and step != of_step:
                continue
            if step and name.endswith(".json") and "/" not in name:
                if is_entry_name(step) and is_entry_name(key := name[: -len(".json")]):
                    yield step, key, _modified(found[path])
                else:
                    _warn_not_entry(relative)

    def newest_metas(self, step: str, count: int) -> list[tuple[str, bytes | None]]:
        """The keys of the ``count`` entries of ``step`` whose manifests were written last
        (expired ones too), each with its ``meta.json`` (None: unreadable, or not of its
        digest): one listing, then a manifest and that blob each, fetched at once. The
        other blobs are not looked at: what is compared with a key is not served."""
        listed = sorted(self.entries_modified(step), key=lambda found: -(found[2] or 0.0))
        keys = [key for _, key, _ in listed[:count]]
        return list(zip(keys, _at_once(lambda key: self._meta_if_any(step, key), keys,
                                       [0] * len(keys)), strict=True))

    def _meta_if_any(self, step: str, key: str) -> bytes | None:
        manifest = self.manifest(step, key)
        return None if manifest is None else self.meta_of(step, key, manifest)

    # -- writing ----------------------------------------------------------------------
    def upload(self, step: str, key: str, folder: Path, *, meta: Mapping[str, Any],
               replace: bool = False, found: Any = _NOT_READ) -> Upload:
        """Upload the local entry ``folder``: missing blobs first, the manifest last.

        ``meta`` is the entry's metadata (its ``expires`` goes into the manifest). Unless
        ``replace`` (a refresh, or a rebuild of an entry found damaged), another writer's
        good entry is kept: one there already is sent nothing, and one that came while the
        blobs were sent leaves them in the store, those it does not name unreferenced.
        ``found``: the manifest of ``step/key`` the caller read just now (None: there was
        none), not whole; else it is read here first (a run's save comes after its step).
        """
        manifest = _manifest_of(folder, step, key, meta)
        # a refresh or a rebuild sends its blobs again: a blob damaged in the store keeps
        # its name and size, so only sending it mends it
        replace = replace or (step, key) in self.damaged_entries
        if replace:
            found = None
            self.manifest(step, key)  # (one a newer dagnb wrote stays: looked at first)
        elif found is _NOT_READ:
            found = self.manifest(step, key)
            if found is not None and self.whole(step, key, found):
                return Upload(0, kept_other=True)  # stored while the step ran: sent nothing
        if found is None and (newer := self.written_by_newer(step, key)) is not None:
            return Upload(0, kept_other=True, newer=newer)  # sent nothing
        sent = self._put_blobs(folder, _distinct(manifest["files"]), replace)
        self.damaged_entries.discard((step, key))
        self.unusable_entries.discard((step, key))
        kept = self._put_manifest(step, key, manifest, replace)
        if kept is None:
            return Upload(sum(sent.values()))
        named = {digest for digest, _ in kept["files"].values()}
        # (the same manifest as before the blobs: they made the store's entry whole)
        return Upload(sum(sent.values()), kept_other=kept != found,
                      unreferenced=sum(size for digest, size in sent.items()
                                       if digest not in named))

    def _put_blobs(self, folder: Path, files: Mapping[str, list[Any]],
                   replace: bool) -> dict[str, int]:
        """Upload the blobs of ``files`` (relative path -> digest, size; one per digest)
        that the store lacks, :data:`_BLOBS_AT_ONCE` at a time; the bytes sent by digest.
        The first failure is raised once the others have ended."""
        jobs = [(folder / relative, digest, size) for relative, (digest, size) in files.items()]
        sending = _SENDING.get()  # (read here: the threads of _at_once start with none)

        def put(job: tuple[Path, str, int]) -> int:
            count = self._put_blob(*job, replace)
            if sending is not None:  # (a blob stored, or found there: the store answers)
                sending.moved()
            return count

        counts = _at_once(put, jobs, [size for _, _, size in jobs])
        return {digest: size for (_, digest, size), count in zip(jobs, counts, strict=True)
                if count}

    def _put_blob(self, path: Path, digest: str, size: int, replace: bool = False) -> int:
        """Upload one blob unless the store has it already (see :meth:`_has_blob`) and
        it is not to be replaced; the bytes sent."""
        if size == 0:
            return 0
        if not replace and (stored := self._stored_blob(digest, size)) is not None:
            self._keep_young(path, digest, stored)
            return 0  # stored once, whatever step made it
        try:
            self._put_file(path, self.blob_path(digest), size)
        except Exception:
            if replace or not self._stored_after_all(digest, size):
                raise
        self.damaged_blobs.discard(digest)
        self._checked_blobs.add(digest)
        return size

    def _put_file(self, path: Path, blob: str, size: int) -> None:
        """Send ``path`` to ``blob``. A multipart one (an S3 blob of two parts or more)
        stops when the run sending it is interrupted (:class:`HeldUploads`' ``stopping``):
        its parts are aborted (S3 bills them until then) and :class:`UploadStopped` is
        raised; a process that exited mid-upload left them behind."""
        stopping, options = _STOPPING.get(), self._noting_parts(self._part_options)
        if stopping is None or not self._part_options or size < 2 * _S3_CHUNK:
            self.transfers.put_file(os.fspath(path), blob, **options)
            return
        fs, begun = self.transfers, []
        if (held := _SENDING.get()) is not None:
            held.begun = begun  # (the interrupt waits for their abort)
        bucket, key, _ = fs.split_path(blob)
        sending = asyncio.run_coroutine_threadsafe(
            _put_noting_uploads(fs, path, blob, options, begun), fs.loop)
        # (waited on, not its result(timeout): a TimeoutError of the upload's own is one)
        while not concurrent.futures.wait([sending], _STOP_CHECKED_EVERY).done:
            if stopping():
                break
        if sending.done():
            begun.clear()  # (completed or failed: nothing of it to abort)
            sending.result()  # (its error, if any)
            return
        sending.cancel()  # (s3fs aborts on an Exception only; a cancellation is none)
        for upload_id in begun:
            with contextlib.suppress(Exception):  # (best effort: the interrupt waits)
                asyncio.run_coroutine_threadsafe(
                    fs._abort_mpu(bucket, key, upload_id), fs.loop).result(_ABORT_WAIT)
        raise UploadStopped(blob)

    def _noting_parts(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` of a ``put_file`` of a held upload (:class:`HeldUploads`) with a
        callback that notes each part the store took as the upload's progress: a large
        blob's parts, not only its end, keep its deadline off."""
        sending = _SENDING.get()
        if sending is None:
            return options
        callbacks = _fsspec(self.url).callbacks
        return {**options, "callback": callbacks.Callback(
            hooks={"moved": lambda _size, _value, **_: sending.moved()})}

    def _stored_after_all(self, digest: str, size: int) -> bool:
        """Whether an upload of the blob of ``digest`` that failed stored it all the same,
        its answer lost: a completion the server ended after the wait ran out, whose
        second attempt was told "no such upload". (Not asked of a blob being replaced:
        the old one has its name and size.) False when the store does not answer: the
        upload's own error is the one said."""
        try:
            return self._has_blob(digest, size)
        except Exception:
            return False

    def _has_blob(self, digest: str, size: int) -> bool:
        """Whether the store has the blob of ``digest`` (see :meth:`_stored_blob`)."""
        return self._stored_blob(digest, size) is not None

    def _stored_blob(self, digest: str, size: int) -> dict[str, Any] | None:
        """The store's ``info`` of the blob of ``digest`` if it has it: of its size (one
        request, all that can be seen without downloading it), not found damaged by this
        process, and, when :attr:`check_content`, hashing to its name; else None."""
        if digest in self.damaged_blobs:
            return None
        info = self._info(self.blob_path(digest))
        if info is None or int(info["size"]) != size:
            return None
        if self.check_content and not self._hashes_to_name(digest):
            return None
        return info

    def _keep_young(self, path: Path, digest: str, info: Mapping[str, Any]) -> None:
        """Give the stored blob of ``digest`` (``info``: what the store said of it; ``path``:
        the tier's copy) a new date if it is older than :data:`BLOB_REDATED_AFTER`, so an
        age-based lifecycle rule counts from this save. A failure fails no save: said once."""
        modified = _modified(info)
        if modified is None or time.time() - modified < BLOB_REDATED_AFTER:
            return
        try:
            self._redate(path, digest, int(info["size"]))
        except Exception as exc:
            self._say_not_redated(digest, exc)

    def _redate(self, path: Path, digest: str, size: int) -> None:
        """A new date for the stored blob of ``digest``, its content the same: on S3 the
        object copied onto itself by the server (metadata replaced, which S3 requires of
        a copy in place), in a folder its modification time, elsewhere (and for an S3
        blob too large for one copy) the tier's copy at ``path`` sent again."""
        blob = self.blob_path(digest)
        protocols = set(_protocols(self.fs))
        if "s3" in protocols and size <= _S3_COPY_LIMIT:
            self._copy_in_place(blob)
        elif protocols & {"file", "local"}:
            self.fs.touch(blob, truncate=False)
        else:
            self.transfers.put_file(os.fspath(path), blob, **self._part_options)

    def _copy_in_place(self, blob: str) -> None:
        """One CopyObject of ``blob`` onto itself: S3 makes it a new object (a new
        LastModified) without a byte sent. An SSE-C key (``s3_additional_kwargs``) is
        the source's as well as the copy's."""
        fs = self.transfers  # (its longer wait: the server copies before it answers)
        bucket, key, _ = fs.split_path(blob)
        source_keys = {f"CopySource{name}": value
                       for name, value in fs.s3_additional_kwargs.items()
                       if name.startswith("SSECustomer")}
        fs.call_s3("copy_object", Bucket=bucket, Key=key,
                   CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="REPLACE",
                   Metadata={"dagnb-used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                   **source_keys)
        fs.invalidate_cache(blob)

    def _say_not_redated(self, digest: str, exc: Exception) -> None:
        if self._redate_failure_said:
            return
        self._redate_failure_said = True
        checks.warn_user(
            f"remote cache {self.url!r}: blob {digest[:12]}, which a new entry names, could "
            f"not be given a new date ({type(exc).__name__}: {checks.redact_url(str(exc))}); "
            "the entry is saved, but an age-based lifecycle rule counts from the blob's first "
            "upload and may delete it early (the step then runs again): let these "
            "credentials copy an object onto itself (s3:GetObject and s3:PutObject), or "
            "lengthen the rule (said once)", RemoteCacheWarning)

    def _hashes_to_name(self, digest: str) -> bool:
        """Whether the stored blob of ``digest`` hashes to it, read in chunks (once per
        blob); one that does not joins :attr:`damaged_blobs`."""
        if digest in self._checked_blobs:
            return True
        hasher, sending = new_hasher(), _SENDING.get()
        try:
            with self.transfers.open(self.blob_path(digest), "rb",
                                     block_size=_S3_CHUNK) as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
                    self.bytes_checked += len(chunk)
                    if sending is not None:  # (a push --check's upload reading a large
                        sending.moved()      # blob back: the store answers, no stall)
        except FileNotFoundError:  # (removed since its size was seen)
            return False
        if hasher.hexdigest() != digest:
            self.damaged_blobs.add(digest)
            return False
        self._checked_blobs.add(digest)
        return True

    def _info(self, path: str) -> dict[str, Any] | None:
        """What the store says of the object at ``path`` (size, date), or None if absent."""
        self.fs.invalidate_cache(path)  # a listing made earlier must not answer for now
        try:
            return dict(self.fs.info(path))
        except FileNotFoundError:
            return None

    def _put_manifest(self, step: str, key: str, manifest: dict[str, Any],
                      replace: bool = False) -> dict[str, Any] | None:
        """Create the manifest if absent; replace one no reader would trust, or any one
        when ``replace``. None when written, else the other writer's that stays."""
        path, data = self.manifest_path(step, key), json.dumps(manifest).encode()
        if replace:  # the blobs are up already: a reader sees the old entry or this one
            self.fs.pipe_file(path, data)
            return None
        try:  # s3fs sends If-None-Match: * and turns S3's 412 into FileExistsError
            self.fs.pipe_file(path, data, mode="create")
            return None
        except FileExistsError:
            pass
        there = self.manifest(step, key)
        if there is not None and self.whole(step, key, there):
            return there
        self.fs.pipe_file(path, data)
        return None

    def trusted(self, step: str, key: str) -> bool:
        """Whether ``step/key`` has a manifest a reader accepts: parsed, not expired,
        every blob there (:meth:`_has_blob`). One naming a blob found damaged joins
        :attr:`damaged_entries` (its replacement sends every blob again)."""
        manifest = self.manifest(step, key)
        return manifest is not None and self.whole(step, key, manifest)

    def whole(self, step: str, key: str, manifest: Mapping[str, Any]) -> bool:
        """Whether the parsed ``manifest`` of ``step/key`` is unexpired and has every
        blob it names in the store (see :meth:`trusted`)."""
        if _expired(manifest, time.time()):
            return False
        blobs = set(map(tuple, manifest["files"].values()))
        if all(size == 0 or self._has_blob(digest, size) for digest, size in blobs):
            return True
        if any(digest in self.damaged_blobs for digest, _ in blobs):
            self.damaged_entries.add((step, key))
        return False


async def _put_noting_uploads(fs: Any, path: Path, blob: str, options: Mapping[str, Any],
                              begun: list[str]) -> None:
    """s3fs' ``put_file`` of ``path`` to ``blob``, noting in ``begun`` the id of the
    multipart upload it starts: one cut short by a cancellation is aborted by that id
    (another machine's upload of the same blob, the same content, is left alone)."""
    key = fs.split_path(blob)[1]

    def note(parsed: Mapping[str, Any], **_: Any) -> None:
        if parsed.get("Key") == key and parsed.get("UploadId"):
            begun.append(parsed["UploadId"])

    events = (await fs.set_session()).meta.events
    hook = f"dagnb-upload-{uuid.uuid4().hex}"
    events.register("after-call.s3.CreateMultipartUpload", note, unique_id=hook)
    try:
        await fs._put_file(os.fspath(path), blob, **options)
    finally:
        events.unregister("after-call.s3.CreateMultipartUpload", unique_id=hook)


class UploadStopped(BaseException):
    """An upload stopped because the run sending it was interrupted (a BaseException:
    no store failure, which would rest the store and say it was down)."""


class Upload(NamedTuple):
    """What :meth:`ObjectStore.upload` did: the bytes it sent; whether another writer's
    entry, written since the caller looked, stays instead of this one; and the bytes
    sent of blobs that entry does not name (left in the store, named by no entry)."""

    sent: int
    kept_other: bool = False
    unreferenced: int = 0
    newer: int | None = None  # the format of the store's, kept: a newer dagnb wrote it


def _manifest_of(folder: Path, step: str, key: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of the local entry ``folder`` of ``step/key`` (``meta``: its metadata)."""
    tree = _entry_tree(folder, f"{step}/{key[:12]}")
    manifest = {
        "format": MANIFEST_FORMAT if tree["links"] or tree["executable"] else 1,
        "step": step,
        "key": key,
        "created": meta.get("created"),
        "expires": meta.get("expires"),
        "dirs": tree["dirs"],
        "files": {rel: [file_digest(folder / rel), size]
                  for rel, size in tree["files"].items()},
    }
    manifest.update({name: tree[name] for name in ("links", "executable") if tree[name]})
    return manifest


# what s3fs takes besides its own parameters: fsspec's, and dagnb's retries
_S3_OTHER_OPTIONS = frozenset({"use_listings_cache", "listings_expiry_time", "max_paths",
                               "skip_instance_cache", "retries"})


def _unknown_s3_option(options: Mapping[str, Any]) -> str | None:
    """The line refusing an option s3fs does not take (``endpoint`` for
    ``endpoint_url``): it passes it on to its session, which raised a TypeError at the
    first request, reported as the store unreachable ("check the network"); None when
    every one is known, or s3fs cannot be asked."""
    try:
        import inspect

        import s3fs
        from aiobotocore.session import AioSession
    except ImportError:
        return None
    known = {*inspect.signature(s3fs.S3FileSystem.__init__).parameters,
             *inspect.signature(AioSession.__init__).parameters, *_S3_OTHER_OPTIONS}
    known -= {"self", "kwargs"}
    for name in options:
        if name not in known:
            hint = checks.did_you_mean(name, sorted(known), otherwise="see s3fs' S3FileSystem")
            return (f"cache_storage_options: {name!r} is no option of an s3:// store; "
                    f"{hint}")
    return None


_CONFIG_EXAMPLE = "{connect_timeout: 5, read_timeout: 60, retries: {max_attempts: 3}}"


def _config_kwargs_fault(config: Any) -> str | None:
    """The line refusing an s3:// store's ``config_kwargs`` that botocore's ``Config``
    would refuse or misread (``5``, ``retries: 3``, ``read_timeout: soon``): it raised
    a TypeError with a traceback, or failed each request, said as the store unreachable.
    None when it is fine, or botocore cannot be asked."""
    where = "cache_storage_options: config_kwargs"
    if config is None:
        return None
    if not isinstance(config, Mapping):
        return f"{where} must be a mapping of botocore's Config options, e.g. {_CONFIG_EXAMPLE}"
    if (fault := _odd_config_value(config)) is not None:
        return f"{where}: {fault}, e.g. {_CONFIG_EXAMPLE}"
    try:
        from botocore.config import Config
    except ImportError:
        return None
    try:
        Config(**config)
    except Exception as exc:  # (botocore's own: TypeError, ValueError, its errors)
        return f"{where} is refused by botocore ({exc}); e.g. {_CONFIG_EXAMPLE}"
    return None


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _odd_config_value(config: Mapping[str, Any]) -> str | None:
    """What botocore would misread in ``config`` without a clear word of its own."""
    for name in ("connect_timeout", "read_timeout"):
        seconds = config.get(name)
        if seconds is not None and not _seconds(seconds):
            return f"{name} must be a number of seconds above 0, not {seconds!r}"
    retries = config.get("retries")
    if retries is not None and not isinstance(retries, Mapping):
        return f"retries must be a mapping (max_attempts, mode), not {retries!r}"
    return None


def _s3_defaults(options: dict[str, Any], read_timeout: float) -> dict[str, Any]:
    """Short timeouts and two attempts of each request, unless the user chose (in
    ``config_kwargs``, or ``AWS_MAX_ATTEMPTS`` for the attempts). A store that accepts
    connections and never answers (a hung server, a stuck proxy) cost the first lookup
    s3fs' 15 s read timeout three times (botocore's ``max_attempts`` counts retries, not
    attempts): 47 s of a run with nothing said. Now it costs two timeouts, about 9 s,
    then the store rests (RETRY_AFTER). A read timeout bounds one wait for the server's
    next bytes (its first, once a request is sent whole), not a transfer: a large upload
    or download is not cut short by it; but the server's work before it answers is
    (storing a part, joining the parts), hence the blobs' own ``read_timeout``."""
    config = dict(options.get("config_kwargs") or {})
    for name, seconds in (("connect_timeout", _S3_CONNECT_TIMEOUT),
                          ("read_timeout", read_timeout)):
        config.setdefault(name, seconds)
    if "retries" not in config and "AWS_MAX_ATTEMPTS" not in os.environ:
        config["retries"] = {"total_max_attempts": 2, "mode": "standard"}
    options["config_kwargs"] = config
    return options


# where fsspec filesystems say when an object was last written: s3fs, a folder, gcsfs,
# adlfs, memory (a date-time, a Unix time, or ISO 8601 text)
_DATE_FIELDS = ("LastModified", "mtime", "updated", "last_modified", "created")


def _modified(info: Mapping[str, Any]) -> float | None:
    """When the store last wrote the object ``info`` describes (Unix time), or None."""
    for field in _DATE_FIELDS:
        value = info.get(field)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # ("Z": Python 3.10's fromisoformat)
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _parse_manifest(raw: bytes, step: str, key: str) -> dict[str, Any] | None:
    """A manifest that is whole and names only safe relative paths, or None."""
    try:
        manifest = json.loads(raw)
        ok = (
            manifest["format"] in _READABLE_FORMATS
            and manifest["step"] == step
            and manifest["key"] == key
            and all(_safe(rel) for rel in [*manifest["files"], *manifest["dirs"]])
            and all(_is_blob_ref(ref) for ref in manifest["files"].values())
            and _links_ok(manifest)
            and _apart(manifest)
            and set(manifest.get("executable", [])) <= set(manifest["files"])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest if ok else None


def _newer_format(raw: bytes) -> int | None:
    """The format of a manifest newer than this dagnb reads, or None."""
    try:
        number = json.loads(raw)["format"]
    except (ValueError, KeyError, TypeError):
        return None
    newer = isinstance(number, int) and not isinstance(number, bool) and number > MANIFEST_FORMAT
    return number if newer else None


def _links_ok(manifest: Mapping[str, Any]) -> bool:
    """Links at safe paths, with target text, and nothing of the entry at or beneath
    one: a download never writes through a link (it makes them last, too)."""
    links = manifest.get("links", {})
    if not isinstance(links, dict) or not all(
        _safe(rel) and _inside(rel, to) for rel, to in links.items()
    ):
        return False
    paths = [*manifest["files"], *manifest["dirs"]]
    if set(links) & set(paths):
        return False
    return not any(str(parent) in links
                   for path in [*paths, *links] for parent in Path(path).parents)


def _apart(manifest: Mapping[str, Any]) -> bool:
    """No file where a folder of the entry is or above another of its paths: writing
    it would fail on the reader's disk, which read as a store that cannot be reached."""
    files = {Path(path) for path in manifest["files"]}
    paths = [Path(path) for path in [*manifest["files"], *manifest["dirs"],
                                     *manifest.get("links", {})]]
    return not files & {Path(path) for path in manifest["dirs"]} and not any(
        parent in files for path in paths for parent in path.parents)


def _inside(link: str, target: Any) -> bool:
    """Whether link ``link``'s target text points inside the entry: relative, and not
    up past its folder (a writer of the store cannot plant a link to a reader's
    ``~/.aws/credentials``)."""
    if not isinstance(target, str) or not target or "\0" in target or os.path.isabs(target):
        return False
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    return resolved != ".." and not resolved.startswith(("../", "/"))


def _warn_not_entry(relative: str) -> None:
    checks.warn_user(f"store object {'entries/' + relative!r} is named as no cache entry is "
                  "('..', '.git': a pull would write outside the cache folder): left alone",
                  RemoteCacheWarning)


def _is_blob_ref(ref: Any) -> bool:
    return (
        isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str)
        and ref[0].isalnum() and isinstance(ref[1], int) and ref[1] >= 0
    )


def _safe(relative: Any) -> bool:
    """A path inside the entry (a manifest never writes outside its folder)."""
    return (
        isinstance(relative, str) and bool(relative) and not os.path.isabs(relative)
        and ".." not in Path(relative).parts and Path(relative).parts != ()  # (not ".")
    )


def _expired(manifest: Mapping[str, Any], now: float) -> bool:
    expires = manifest.get("expires")
    return isinstance(expires, (int, float)) and expires <= now


def _entry_tree(folder: Path, entry: str) -> dict[str, Any]:
    """A local entry as the manifest lists it: relative ``files`` -> size, ``dirs``,
    ``links`` -> target text and the ``executable`` files. A link inside the entry is
    kept as a link (as the local store keeps it); one that leads out of it is stored as
    what it points to (a reader's machine has its own files there), a folder walked once:
    another way to it becomes a link to where it was walked, one to a folder above it
    (a loop) is left out. ``entry`` names it in a warning."""
    tree: dict[str, Any] = {"files": {}, "dirs": [], "links": {}, "executable": []}
    walked = {os.path.realpath(folder): "."}
    for root, subdirs, names in os.walk(folder, followlinks=True):
        for name in list(subdirs):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            if _add_link(tree, path, relative):
                subdirs.remove(name)
            elif (first := _walked_at(path, relative, walked)) is None:
                tree["dirs"].append(relative)
            else:
                subdirs.remove(name)
                if first != "." and not relative.startswith(first + os.sep):
                    tree["links"][relative] = os.path.relpath(first, os.path.dirname(relative)
                                                              or ".")
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            if not _add_link(tree, path, relative):
                _add_file(tree, path, relative, entry)
    tree["dirs"].sort()
    tree["executable"].sort()
    return tree


def _walked_at(path: str, relative: str, walked: dict[str, str]) -> str | None:
    """Where in the entry the folder ``path`` really is was walked (two links to one
    folder, a link to a folder above it), or None: then it is walked from ``relative``.
    (The second of two links to one folder was left out: a reader's tree lacked it.)"""
    real = os.path.realpath(path)
    first = walked.get(real)
    if first is None:
        walked[real] = relative
    return first


def _add_link(tree: dict[str, Any], path: str, relative: str) -> bool:
    """List ``path`` as a link if it is one whose target stays inside the entry."""
    if not os.path.islink(path):
        return False
    target = os.readlink(path)
    if not _inside(relative, target):
        return False
    tree["links"][relative] = target
    return True


def _add_file(tree: dict[str, Any], path: str, relative: str, entry: str) -> None:
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):  # (a pipe in a folder a link leads out to:
        _warn_left_out(entry, relative)    # reading it for its digest waited forever)
        return
    tree["files"][relative] = status.st_size
    if status.st_mode & 0o111:
        tree["executable"].append(relative)


def _warn_left_out(entry: str, relative: str) -> None:
    """A pipe, socket or device under an entry (through a link out of it: the local
    store keeps the link, and refuses such outputs of a step's own): no content to copy."""
    checks.warn_user(f"entry {entry}: {relative!r} is not a file (a pipe, socket or device, "
                  "reached through a link out of the entry): left out of the store's copy "
                  "of the entry", RemoteCacheWarning)


def _restore_modes_and_links(manifest: Mapping[str, Any], into: Path) -> None:
    """What a format 2 manifest adds to the files: executable bits, then the links
    (last: nothing is written through one)."""
    for relative in manifest.get("executable", ()):
        _make_executable(into / relative)
    for relative, target in manifest.get("links", {}).items():
        (into / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, into / relative)


def _make_executable(path: Path) -> None:
    """Executable by whoever may read it, as git checks out a file whose mode is 755."""
    mode = os.stat(path).st_mode
    os.chmod(path, mode | (mode & 0o444) >> 2)


def _at_once(transfer: Callable[[Any], T], jobs: list[Any], sizes: list[int]) -> list[T]:
    """``transfer`` of each job, in order: those of at most :data:`_AT_ONCE_UP_TO` bytes
    :data:`_BLOBS_AT_ONCE` at a time, the larger ones one after the other; the first
    failure is raised once the others have ended."""
    small = [i for i, size in enumerate(sizes) if size <= _AT_ONCE_UP_TO]
    results: dict[int, T] = {}
    if len(small) > 1:
        results.update(zip(small, _on_daemon_threads(lambda i: transfer(jobs[i]), small,
                                                     _BLOBS_AT_ONCE), strict=True))
    for i, job in enumerate(jobs):
        if i not in results:
            results[i] = transfer(job)
    return [results[i] for i in range(len(jobs))]


def _on_daemon_threads(call: Callable[[Any], T], items: list[Any], width: int) -> list[T]:
    """``call`` of each item, in order, ``width`` at a time; the first failure (in the
    items' order) is raised once every call has ended. Daemon threads, not a
    ThreadPoolExecutor's: Python joins those as it exits, so a request to a store that
    took the connection and never answered kept a process SIGTERM ended from exiting
    (a held upload left on its thread: see HeldUploads)."""
    pending = iter(range(len(items)))
    taking = threading.Lock()
    outcomes: dict[int, tuple[Any, BaseException | None]] = {}

    def work() -> None:
        while True:
            with taking:
                i = next(pending, None)
            if i is None:
                return
            try:
                outcomes[i] = (call(items[i]), None)
            except BaseException as exc:  # (raised by the caller, in its thread)
                outcomes[i] = (None, exc)

    threads = [threading.Thread(target=work, name="dagnb-transfer", daemon=True)
               for _ in range(min(width, len(items)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(len(items)):
        if (failure := outcomes[i][1]) is not None:
            raise failure
    return [outcomes[i][0] for i in range(len(items))]


def _distinct(files: Mapping[str, list[Any]]) -> dict[str, tuple[str, int]]:
    """One file per distinct digest: relative path -> (digest, size)."""
    seen: dict[str, tuple[str, str, int]] = {}
    for relative, (digest, size) in files.items():
        seen.setdefault(digest, (relative, digest, size))
    return {relative: (digest, size) for relative, digest, size in seen.values()}


KeepFetched = Callable[[str, str, Path], bool]  # (step, key, folder): kept as a record


def fetch_into(remote: ObjectStore, backend: StoreBackend, step: str, key: str,
               replacing: Callable[[], object] | None = None,
               keep: KeepFetched | None = None,
               kept_for: list[str] | None = None) -> int | None:
    """Download ``step/key`` from ``remote`` and put it in ``backend``; the bytes moved,
    or None when the remote has no entry to trust. ``replacing``: called once the
    download is whole, before the write (a pull drops the older local copy it replaces,
    which may be a pack's record, not a folder the write would replace). ``keep``: the
    local store's :meth:`~dagnb.cache.store.Store.keep_fetched`, which keeps a small
    entry as a pack record, as a save there would have (then no folder is written).
    A local copy a live run uses stays, the download dropped: who uses it (``pid N``)
    is added to ``kept_for``."""
    # (made by the download once an entry is found: a miss, a fail-on-miss run's
    # lookups, leaves no local tier behind)
    folder = backend.root / ".scratch" / f".tmp-pull-{uuid.uuid4().hex}"
    try:
        moved = remote.download(step, key, folder)
        if moved is not None:
            # (asked once the download is whole: a run may have taken it up meanwhile)
            reader = _live_user_here(backend, step, key, replacing is not None)
            if reader is None and replacing is not None:
                replacing()
            if reader is None and (keep is None or not keep(step, key, folder)):
                reader = _write_unless_used(backend, step, key, folder)
            if reader is not None and kept_for is not None:
                kept_for.append(reader)
        return moved
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _live_user_here(backend: StoreBackend, step: str, key: str, replacing: bool) -> str | None:
    """Who among the live runs uses the local copy of ``step/key`` a download would
    replace (``pid N``): a step reading its files would read two versions of them. Asked
    of a local folder's runs, when there is a copy (``replacing``: a pull's, maybe a
    pack's record; else a folder another process saved or fetched meanwhile)."""
    if type(backend) is not LocalBackend or not (replacing or backend.exists(step, key)):
        return None
    return live_user_of(backend.root, step, key)


def _write_unless_used(backend: StoreBackend, step: str, key: str, folder: Path) -> str | None:
    """``backend.write``, which on a local folder leaves a folder there that a live run
    uses (then returned: who, ``pid N``)."""
    if type(backend) is not LocalBackend:
        backend.write(step, key, folder)
        return None
    return backend.write(step, key, folder,
                         kept_for=lambda: live_user_of(backend.root, step, key))


class RemoteBackend(StoreBackend):
    """A store URL behind a local read-through tier (see the module's docs).

    Parameters
    ----------
    url
        The remote store (any fsspec URL).
    local
        The local tier's folder; None for the ``cache_local_directory`` setting.
    storage_options
        Options for the store library; None for the ``cache_storage_options`` setting.
    """

    name = "remote"

    def __init__(
        self,
        url: str,
        local: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from dagnb.config import settings

        config = settings()
        options = config.cache_storage_options if storage_options is None else storage_options
        self.remote = ObjectStore(url, options)
        # the tier is made by its first write (a fail-on-miss run, which writes none,
        # leaves no folder behind, as with a local cache folder)
        self.local = LocalBackend(config.cache_local_directory if local is None else local,
                                  create=False)
        self.root = self.local.root
        self._warned = False  # one warning per outage: reset when the store answers
        self._down_until = 0.0  # after a failure the store rests: no call waits on it
        self._failed_at = 0.0  # (monotonic) when a request last failed
        # keys removed from the tier here (set aside as damaged, cleared): the store's copy
        # is not fetched again, and the next save of the key replaces it; known to every
        # backend of this store and tier in the process (the read-only one of a plan said
        # "cached" of an entry cleared in a kernel, which its next run ran again)
        self._distrusted = _distrusted_here(self.remote.url, self.root)
        # the store refused an upload (no write permission, no credentials, no bucket):
        # asking again gets the same answer, so this process stops uploading
        self._uploads_refused_until = 0.0  # (monotonic) uploads refused: none until then
        self._reads_refused_until = 0.0  # (monotonic) a read refused: none until then
        self._a_read_refused = False  # (ever: then a refused upload is no read-only case)
        # the store's answers to glances (a plan's): (when, meta.json or None), kept
        # GLANCE_KEPT s; a save here forgets its own
        self._glances: dict[tuple[str, str], tuple[float, bytes | None]] = {}
        self._refusals_said: set[str] = set()  # each refusal's fix is said once
        self._keeper: weakref.WeakMethod[KeepFetched] | None = None  # (its store's)
        self._unsent: set[tuple[str, str]] | None = None  # (read at the first hit)
        self._newer_said: set[tuple[str, str]] = set()  # (entries a newer dagnb wrote)

    def __repr__(self) -> str:
        return f"RemoteBackend({self.remote.url!r}, local={str(self.root)!r})"

    def keep_downloads_with(self, keeper: weakref.WeakMethod[KeepFetched]) -> None:
        """Have the store on this backend keep what a lookup downloads as a record of
        the tier's packs when a save there would have packed it (``keeper``: its
        :meth:`~dagnb.cache.store.Store.keep_fetched`, held weakly: the store holds
        this backend), rather than as a folder of the tier."""
        self._keeper = keeper

    def read(self, step: str, key: str) -> Item | None:
        item = self.local.read(step, key)
        if item is not None or step.startswith(".") or not self._may_fetch(step, key):
            return item  # the store's own folders are local
        if not self._readable():
            return None
        # (an unreachable store is a miss, never a failed run; one kept as a record is
        # no folder: the store finds it in its packs)
        keep = None if self._keeper is None else self._keeper()
        moved = self._ask("a download", fetch_into, self.remote, self.local, step, key,
                          None, keep)
        if moved is _UNANSWERED:
            return None
        if moved is None:
            self._warn_if_damaged(step, key)
            self._warn_if_newer(step, key)
        return None if moved is None else self.local.read(step, key)

    def hold_if_unsent(self, step: str, key: str, held: HeldUploads) -> None:
        """A run's hit in the tier of an entry whose upload never ended (an interrupted
        run, a killed process, the store down): its upload joins ``held``, so teammates
        stop computing it again. Once a process (a push sends it otherwise)."""
        if self._unsent is None:  # (read once: most tiers have none, one listdir)
            self._unsent = unsent_entries(self.root)
        if (step, key) not in self._unsent:
            return
        self._unsent.discard((step, key))
        item = self.local.read(step, key)
        # a refresh or a rebuild still replaces the store's copy: sent as a first save,
        # it kept the output it replaced there, and was then noted as sent
        owes = replacement_owed(self.root, step, key)
        if item is not None and item.meta is not None:
            self._hold(held, step, key, lambda: self._send(step, key, item, owes, owes))

    def _warn_if_damaged(self, step: str, key: str) -> None:
        """Say that the store's ``step/key`` was found changed there (once: it is not
        asked for again, see :meth:`_may_fetch`)."""
        if (step, key) in self.remote.damaged_entries:
            checks.warn_user(
                f"remote cache {self.remote.url!r}: entry {step}/{key[:12]} has a file whose "
                "content does not match its digest (changed in the store); it is a miss, and "
                "saving the step again replaces it there", RemoteCacheWarning)

    def _warn_if_newer(self, step: str, key: str) -> None:
        """Say that a newer dagnb wrote the store's ``step/key`` (once: it is not asked
        for again, see :meth:`_may_fetch`, and a save keeps it)."""
        newer = self.remote.written_by_newer(step, key)
        if newer is not None and (step, key) not in self._newer_said:
            self._newer_said.add((step, key))
            checks.warn_user(
                f"remote cache {self.remote.url!r}: entry {step}/{key[:12]} "
                f"{newer_format_words(newer)}: it is a miss here, and the store's copy is "
                "kept; upgrade dagnb (pip install -U dagnb) to use it", RemoteCacheWarning)

    def damaged_in_store(self, step: str, key: str) -> bool:
        """Whether this process found the store's copy of ``step/key`` damaged (a file
        whose content does not match its digest: its ``meta.json``, met by a plan's
        :meth:`glance`, or one a download met): a miss until a save replaces it there."""
        return (step, key) in self.remote.damaged_entries

    def glance(self, step: str, key: str) -> Item | None:
        """:meth:`read` without the download: an entry the tier lacks is the store's
        ``meta.json`` alone (:meth:`ObjectStore.glance`), nothing written to the tier;
        its Item's ``path`` (the tier's folder it would have) is not there."""
        item = self.local.read(step, key)
        if item is not None or step.startswith(".") or not self._may_fetch(step, key):
            return item
        if not self._readable():
            return None
        now = time.monotonic()
        seen = self._glances.get((step, key))
        if seen is not None and now - seen[0] < GLANCE_KEPT:
            meta = seen[1]
        else:
            meta = self._ask(_GLANCING, self.remote.glance, step, key)
            if meta is None:
                self._warn_if_damaged(step, key)
                self._warn_if_newer(step, key)
            if meta is not _UNANSWERED:  # (kept a while: a notebook's plan at each cell
                self._glances[(step, key)] = (now, meta)  # asked the store again)
        if meta is None or meta is _UNANSWERED:  # (unreachable: absent, as for read)
            return None
        return Item(self.local.root / step / key, meta, (_GLANCED, meta))

    def glance_newest(self, step: str, count: int) -> list[tuple[str, Item, bool]] | None:
        """The store's ``count`` newest entries of ``step`` by their ``meta.json`` alone
        (:meth:`ObjectStore.newest_metas`; nothing written to the tier), each as
        ``(key, item, served)``: ``served`` False for a key this process would not fetch
        (cleared or set aside here, found unusable). None when the store could not be
        asked (unreachable, or reads refused: :meth:`unreached` says which)."""
        if step.startswith(".") or not self._readable():
            return None
        found = self._ask(_GLANCING, self.remote.newest_metas, step, count)
        if found is _UNANSWERED:
            return None
        return [(key, Item(self.local.root / step / key, meta, (_GLANCED, meta)),
                 self._may_fetch(step, key)) for key, meta in found if meta is not None]

    keeps_live_entries = True  # (Store._write: asks who reads an entry it replaces)

    def write(self, step: str, key: str, folder: Path, *, refresh: bool = False,
              kept_for: Callable[[], str | None] | None = None) -> str | None:
        """:meth:`LocalBackend.write`'s, in the tier, then the upload. An entry there that
        a live run reads (``kept_for``, asked only when one is there) is kept, and so is
        the store's copy: who reads it is returned, ``folder`` left as it is (a refresh
        replaced a folder a running step was reading from, files and all)."""
        if kept_for is not None and self.local.exists(step, key):
            reader = kept_for()
            if reader is not None:
                return reader
        # an entry this machine replaces (a refresh, a rebuild of a damaged or cleared
        # one, or of one found damaged in the store) replaces the store's copy too, now or
        # at the next push; a first save keeps another writer's
        replace = (refresh or (step, key) in self._distrusted or self.local.exists(step, key)
                   or (step, key) in self.remote.damaged_entries)
        self._distrusted.discard((step, key))
        self._glances.pop((step, key), None)
        owes = replace and not step.startswith(".")
        if owes:  # owed before the entry is: a process killed while it uploads (OOM, a CI
            owe_replacement(self.root, step, key)  # timeout) left the store's old copy,
        if not step.startswith("."):               # which a push then took as there
            mark_unsent(self.root, step, key)  # (so a later run's hit sends it)
        reader = self.local.write(step, key, folder, kept_for=kept_for)
        if reader is not None:  # (taken up by a run since it was asked: kept all the same)
            paid_replacement(self.root, step, key)
            sent_at_last(self.root, step, key)
            return reader
        item = self.local.read(step, key)
        if step.startswith(".") or item is None or item.meta is None:
            return None
        held = _HELD_UPLOADS.get()
        if held is not None:  # (a run's save: sent once its step is said done)
            self._hold(held, step, key, lambda: self._send(step, key, item, replace, owes))
            return None
        self._send_now(step, key, lambda: self._send(step, key, item, replace, owes))
        return None

    def _hold(self, held: HeldUploads, step: str, key: str, send: Callable[[], bool]) -> None:
        """Have ``held`` send ``send``, the upload of ``step/key``, given up once the store
        moves none of it for ``cache_upload_timeout_seconds``."""
        held.add(send, self.remote.url, deadline=upload_deadline(),
                 unanswered=self._upload_unanswered, entry=(step, key))

    def _send_now(self, step: str, key: str, send: Callable[[], bool]) -> None:
        """A save outside a run (``Store.save``, a ``Memory``'s): its upload sent at once
        under a run's deadline (:meth:`HeldUploads.now`), and one given up said in a line
        (its entry stays unsent in the tier; uploads then rest, so the line says that the
        saves of the next minutes stay local too, unsaid one by one)."""
        held = HeldUploads.now(send, self.remote.url, (step, key), self._upload_unanswered)
        for store, deadline in held.unanswered.items():
            checks.warn_user(
                unanswered_words(store, deadline, 1) + ", kept in the local tier (as are "
                f"those saved in the next {REFUSED_RETRY_AFTER / 60:g} minutes); dagnb "
                "cache push sends them once the store answers", RemoteCacheWarning)

    def _upload_unanswered(self) -> None:
        """A held upload the store moved none of for its deadline, given up
        (its entry stays marked unsent; the run says so as it ends): the store rests as
        after a failure, and uploads for :data:`REFUSED_RETRY_AFTER` s, since each would
        wait that long again. The upload left on its thread may fail later: unsaid."""
        now = time.monotonic()
        self._down_until, self._failed_at, self._warned = now + RETRY_AFTER, now, True
        self._uploads_refused_until = now + REFUSED_RETRY_AFTER

    def _send(self, step: str, key: str, item: Item, replace: bool, owes: bool) -> bool:
        """Upload the tier's new entry ``item``; whether it got there (else the entry is
        saved locally; a push uploads it later)."""
        sent = self._upload(step, key, item, replace)
        if sent:
            sent_at_last(self.root, step, key)
        if sent and owes:
            paid_replacement(self.root, step, key)
        return sent

    def _upload(self, step: str, key: str, item: Item, replace: bool) -> bool:
        """Send the tier's entry ``item`` to the store; whether it got there (or the
        store keeps another writer's copy)."""
        if time.monotonic() < self._uploads_refused_until or not self._reachable():
            return False
        sent = self._ask("an upload", self.remote.upload, step, key, item.path,
                         meta=json.loads(item.meta or b"{}"), replace=replace)
        if sent is _UNANSWERED:
            return False
        self._warn_if_newer(step, key)
        return True

    def _may_fetch(self, step: str, key: str) -> bool:
        """Whether the store's copy of ``step/key`` is worth asking for: not when this
        process set it aside or cleared it here, nor when it found the store's copy
        unusable (a run's claim looks again under the lock: that downloaded a damaged
        entry twice and warned twice)."""
        return ((step, key) not in self._distrusted
                and (step, key) not in self.remote.unusable_entries
                and (step, key) not in self.remote.newer_entries)

    def _reachable(self) -> bool:
        return time.monotonic() >= self._down_until

    def unreached(self) -> str | None:
        # (a read refused rests the reads as an outage does: a miss then is no "no entry")
        if self._readable():
            return None
        if time.monotonic() < self._down_until:
            return f"store {self.remote.url!r} could not be reached"
        return f"store {self.remote.url!r} refused a read (its credentials may not read it)"

    def _readable(self) -> bool:
        """Reachable, and no read refused in the last :data:`RETRY_AFTER` s (credentials
        that may not read: each lookup asked again, a round trip a step)."""
        now = time.monotonic()
        return now >= self._down_until and now >= self._reads_refused_until

    def _ask(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``'s result, or ``_UNANSWERED`` when it failed (then
        the store rests: :meth:`_failed`)."""
        started = time.monotonic()
        try:
            result = call(*args, **kwargs)
        except Exception as exc:
            self._failed(what, exc, started)
            return _UNANSWERED
        self._warned = False
        return result

    def _failed(self, what: str, exc: BaseException, started: float) -> None:
        """Rest the store for ``RETRY_AFTER`` seconds (an offline laptop must not wait on
        each lookup for the library's connect timeouts and retries); warn once per outage
        (a kernel open for days said nothing of the second, whose saves stayed local),
        and in one line each time asking again after the rest made the run wait (a store
        that never answers: those pauses said nothing). Requests begun before the
        outage's first failure was known (other threads') were part of it: not said.
        A refusal is no outage: see :meth:`_refused`."""
        fix = _refusal_fix(exc, what, self.remote, reads_refused=self._a_read_refused)
        if fix is not None:
            self._refused(what, exc, fix)
            return
        now = time.monotonic()
        waited = now - started
        retried = started >= self._failed_at
        self._down_until, self._failed_at = now + RETRY_AFTER, now
        if self._warned:
            if retried and waited >= _NOTICED_WAIT:
                checks.warn_user(
                    f"remote cache {self.remote.url!r}: {what} waited {waited:.0f} s and "
                    f"failed again; asking again in {RETRY_AFTER:g} s",
                    RemoteCacheWarning)
            return
        self._warned = True
        after = f" after {waited:.0f} s" if waited >= _NOTICED_WAIT else ""
        checks.warn_user(  # (the library's error may name a URL of the environment's)
            f"remote cache {self.remote.url!r}: {what} failed{after} "
            f"({type(exc).__name__}: {checks.redact_url(str(exc))}); "
            f"the local tier goes on alone, asking the store again every {RETRY_AFTER:g} s"
            + ("" if what == _GLANCING else  # (a plan, an explain: they save nothing)
               " (entries saved meanwhile stay local: dagnb cache push uploads them later)"),
            RemoteCacheWarning)

    def _refused(self, what: str, exc: BaseException, fix: str) -> None:
        """The store answered no (see :func:`_refusal_fix`): after a refused upload (or
        no credentials) uploads stop for :data:`REFUSED_RETRY_AFTER` s (a push could not
        send them either) while reads go on (a read-only user's steps in the store were
        run again for a minute); a refused read (one object's: a key the user may not
        use) is a miss, and reads rest for :data:`RETRY_AFTER` s (each lookup asked again,
        a round trip a step, for credentials that may read nothing), uploads going on.
        With no credentials, nothing is asked for a while. Said once per fix."""
        now = time.monotonic()
        if what == "an upload" or _is_no_credentials(exc):
            self._uploads_refused_until = now + REFUSED_RETRY_AFTER
        else:
            self._reads_refused_until = now + RETRY_AFTER
            self._a_read_refused = True
        if _is_no_credentials(exc):
            self._down_until = now + RETRY_AFTER
        if fix in self._refusals_said:
            return
        self._refusals_said.add(fix)
        now = time.monotonic()
        reads = ("the store is still read" if self._readable()
                 else f"the store is asked again in {RETRY_AFTER:g} s")
        saves = (f"entries are saved locally only for {REFUSED_RETRY_AFTER / 60:g} min and "
                 if now < self._uploads_refused_until and what != _GLANCING else "")
        checks.warn_user(
            f"remote cache {self.remote.url!r}: {what} was refused ({type(exc).__name__}: "
            f"{checks.redact_url(str(exc))}); {saves}{reads}; {fix}",
            RemoteCacheWarning)

    def exists(self, step: str, key: str) -> bool:
        if self.local.exists(step, key):
            return True
        if step.startswith(".") or not self._may_fetch(step, key) or not self._readable():
            return False
        manifest = self._ask("a lookup", self.remote.manifest, step, key)
        return manifest is not None and manifest is not _UNANSWERED  # (unreachable: absent)

    def names(self, step: str | None = None) -> list[str]:
        """The local tier's names: listing, clearing and evicting act on this machine."""
        return self.local.names(step)

    def remove(self, step: str, key: str) -> bool:
        if not self._expired_here(step, key):  # (set aside, cleared: not fetched again)
            self._distrusted.add((step, key))
        return self.local.remove(step, key)

    def _expired_here(self, step: str, key: str) -> bool:
        """Whether the tier's copy of ``step/key`` is past its ttl: removed for that, it
        says nothing against the store's copy, maybe another machine's fresh one (which
        was not fetched, and the step's re-run replaced it in the store)."""
        item = self.local.read(step, key)
        try:
            expires = None if item is None else json.loads(item.meta or b"{}").get("expires")
        except ValueError:
            return False
        return isinstance(expires, (int, float)) and expires <= time.time()

    def lock(self, step: str, key: str, timeout: float = -1) -> Any:
        return self.local.lock(step, key, timeout)


register_backend("remote", RemoteBackend)


def _distrusted_here(url: str, tier: Path) -> set[tuple[str, str]]:
    """The keys of the store ``url`` removed from its local tier ``tier`` in this
    process (its context: a test's is a new process's), shared by their backends."""
    from dagnb.config.live import context

    known: dict[tuple[str, str], set[tuple[str, str]]] = context().get(
        "cache.distrusted", dict)
    return known.setdefault((url, os.fspath(tier)), set())


class HeldUploads:
    """In a ``with HeldUploads() as held:`` block, a save to a store URL writes its entry
    to the local tier and puts its upload off until ``held.send()``: a run's step is done,
    and timed, once its entry is in the tier; the upload, however slow the line, is not
    the step's time (the scheduler sends it right after saying the step succeeded)."""

    __slots__ = ("_sends", "_token", "interrupted", "unanswered", "unsent")

    def __init__(self) -> None:
        self._sends: list[_Held] = []
        self._token: contextvars.Token[HeldUploads | None] | None = None
        self.unsent: list[str] = []  # the stores the last send() left entries unsent to
        self.interrupted = False  # whether it stopped for its run's interrupt
        # the stores that moved none of an upload for its deadline: store -> the deadline
        self.unanswered: dict[str, float] = {}

    def __enter__(self) -> HeldUploads:
        self._token = _HELD_UPLOADS.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _HELD_UPLOADS.reset(self._token)
            self._token = None

    def __bool__(self) -> bool:
        return bool(self._sends)

    def add(self, send: Callable[[], bool], store: str = "", *, deadline: float | None = None,
            unanswered: Callable[[], object] | None = None,
            entry: tuple[str, str] | None = None) -> None:
        """Hold ``send``, the upload of an entry to ``store`` (its URL, no credentials),
        given up once the store moved none of it for ``deadline`` seconds (None: never),
        then ``unanswered()`` called (the store's backend rests it). ``entry``: its
        (step, key), not sent while an upload of it given up goes on (:func:`_still_left`)."""
        self._sends.append(_Held(send, store, deadline, unanswered, entry))

    @classmethod
    def now(cls, send: Callable[[], bool], store: str, entry: tuple[str, str],
            unanswered: Callable[[], object] | None = None) -> HeldUploads:
        """``send`` sent at once (an upload outside a run: a push's, a save's), as a run
        sends a held one: given up once the store moves none of it for
        ``cache_upload_timeout_seconds`` (a store that took the connection and never
        answered held the push, or the kernel's save, forever). The HeldUploads that sent
        it: its :attr:`unanswered` names the store when it was given up."""
        line = checks.user_line()  # (what it warns of names the caller's line, as before,
                                   # not the thread's: a notebook's cell)

        def send_naming_line() -> bool:
            if line is not None:
                checks.warn_at_run_caller(line)
            return send()

        held = cls()
        held.add(send_naming_line, store, deadline=upload_deadline(), unanswered=unanswered,
                 entry=entry)
        held.send()
        return held

    def send(self, stopping: Callable[[], bool] | None = None) -> tuple[float, bool]:
        """Send them, as the saves would have; the seconds it took, and whether all got
        there (a store resting after a failure is not asked: a push sends them later).
        Once ``stopping()`` (the run was interrupted), none starts and one under way is
        left, a multipart one aborted (:meth:`ObjectStore._put_file`): :attr:`interrupted`.
        One the store moves none of for its deadline is left too: its store joins
        :attr:`unanswered`. The stores of those not sent are :attr:`unsent`."""
        started = time.monotonic()
        sends, self._sends, self.unsent = self._sends, [], []
        for held in sends:  # (each sent, whatever the others did)
            if not self._sent(held, stopping):
                self.unsent.append(held.store)
        return time.monotonic() - started, not self.unsent

    def _sent(self, held: _Held, stopping: Callable[[], bool] | None) -> bool:
        if self.interrupted or (stopping is not None and stopping()):
            self.interrupted = True
            return False
        if (deadline := _still_left(held)) is not None:  # (it would wait as long again)
            return self._given_up(held, deadline)
        try:
            return self._waited(held, stopping)
        except UploadStopped:
            self.interrupted = True
            return False

    def _waited(self, held: _Held, stopping: Callable[[], bool] | None) -> bool:
        """``held.send()``, on a thread of its own, waited for while the store moves it.
        A store that took the connection and never answered held the run (Ctrl-C and
        SIGTERM too, the thread joined at exit) for as long as it kept the line: botocore's
        read timeout starts only once a request's body is sent, which such a store never
        takes (S3's ``Expect: 100-continue``). Left, it goes on alone (a daemon thread:
        no exit waits for it), its entry marked unsent until it ends."""
        sending = _Sending(held.send)
        try:
            while not sending.ended(_STOP_CHECKED_EVERY):
                if stopping is not None and stopping():
                    sending.let_go()
                    raise UploadStopped(held.store)
                if held.deadline is not None and sending.still_for() >= held.deadline:
                    sending.leave()
                    _note_left(held, sending)
                    return self._given_up(held, held.deadline)
        except KeyboardInterrupt:  # (Ctrl-C, or SIGTERM in the CLI, outside a run: a push)
            sending.let_go()
            raise
        return sending.result()

    def _given_up(self, held: _Held, deadline: float) -> bool:
        """``held`` left unsent, its store given up on for ``deadline`` s."""
        self.unanswered.setdefault(held.store, deadline)
        if held.unanswered is not None:
            held.unanswered()
        return False


class _Held(NamedTuple):
    """An upload :class:`HeldUploads` holds (see :meth:`HeldUploads.add`)."""

    send: Callable[[], bool]
    store: str
    deadline: float | None
    unanswered: Callable[[], object] | None
    entry: tuple[str, str] | None = None


def unanswered_words(store: str, deadline: float, count: int) -> str:
    """The head of what is said of a store (its URL, no credentials) that moved none of
    an upload for ``deadline`` seconds, ``count`` entries left unsent (a run's, a push's,
    a save's line: each adds what sends them)."""
    entries = "1 entry" if count == 1 else f"{count} entries"
    return (f"remote cache {store!r} did not answer an upload for {deadline:g} s "
            f"(cache_upload_timeout_seconds): {entries} left unsent")


def upload_deadline() -> float | None:
    """``cache_upload_timeout_seconds``, read at each upload: a setting changed in a
    kernel holds from the next one on."""
    from dagnb.config import settings

    return settings().cache_upload_timeout_seconds


# The uploads given up and maybe still under way, by (store, step, key), with the deadline
# each was given up at: its thread goes on until the store answers or drops the line, which
# may be never. In a long-lived process (a kernel) a second upload of the same entry is not
# started meanwhile: it would wait as long, and leave one more thread (and connection)
# behind at each save or push; so at most one is left per entry, each ended one forgotten.
_LEFT: dict[tuple[str, str, str], tuple[_Sending, float]] = {}


def _note_left(held: _Held, sending: _Sending) -> None:
    """Note ``held``'s upload, given up, as going on (``sending``); forget those ended."""
    for name, (left, _) in list(_LEFT.items()):
        if left.ended(0):
            _LEFT.pop(name, None)
    if held.entry is not None and held.deadline is not None:
        _LEFT[(held.store, *held.entry)] = (sending, held.deadline)


def _still_left(held: _Held) -> float | None:
    """The deadline an upload of ``held``'s entry to its store was given up at, if that
    upload still goes on; else None."""
    if held.entry is None:
        return None
    name = (held.store, *held.entry)
    found = _LEFT.get(name)
    if found is None:
        return None
    if found[0].ended(0):
        _LEFT.pop(name, None)
        return None
    return found[1]


class _Sending:
    """A held upload under way on a daemon thread of its own (:meth:`HeldUploads._waited`),
    and when the store last moved it: its start, a blob or a part it took
    (:meth:`ObjectStore._put_blobs`, :meth:`ObjectStore._noting_parts`)."""

    def __init__(self, send: Callable[[], bool]) -> None:
        self.moved_at = time.monotonic()
        self.begun: list[str] = []  # the multipart upload under way (ObjectStore._put_file)
        self._left = threading.Event()
        self._outcome: list[tuple[bool, BaseException | None]] = []
        context = contextvars.copy_context()  # (the run's: its log lines, its secrets)
        context.run(_SENDING.set, self)
        context.run(_STOPPING.set, self._left.is_set)  # (a multipart one then aborts)
        self._thread = threading.Thread(target=context.run, args=(self._send, send),
                                        name="dagnb-upload", daemon=True)
        self._thread.start()

    def _send(self, send: Callable[[], bool]) -> None:
        try:
            self._outcome.append((send(), None))
        except BaseException as exc:  # (raised by result(), in the waiting thread)
            self._outcome.append((False, exc))

    def moved(self) -> None:
        self.moved_at = time.monotonic()

    def still_for(self) -> float:
        """Seconds since the store last moved the upload."""
        return time.monotonic() - self.moved_at

    def ended(self, wait: float) -> bool:
        self._thread.join(wait)
        return not self._thread.is_alive()

    def leave(self) -> None:
        """Let it go on alone, told to stop where it can (a multipart upload)."""
        self._left.set()

    def let_go(self) -> None:
        """:meth:`leave`, then wait a moment for a multipart upload begun to be aborted
        (S3 bills its parts until then)."""
        self.leave()
        if self.begun:
            self.ended(_ABORT_WAIT + 2 * _STOP_CHECKED_EVERY)

    def result(self) -> bool:
        sent, failure = self._outcome[0]
        if failure is not None:
            raise failure
        return sent


_HELD_UPLOADS: contextvars.ContextVar[HeldUploads | None] = contextvars.ContextVar(
    "dagnb_held_uploads", default=None)
# what tells a held upload under way that its run was interrupted, or that it was left
# (HeldUploads._waited), and where it notes its progress
_STOPPING: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "dagnb_uploads_stopping", default=None)
_SENDING: contextvars.ContextVar[_Sending | None] = contextvars.ContextVar(
    "dagnb_upload_sending", default=None)

_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError")  # botocore's


def _is_no_credentials(exc: BaseException) -> bool:
    """Whether ``exc`` says the store library found no credentials (botocore's errors,
    named rather than imported: it comes with the s3 extra only)."""
    return any(cls.__name__ in _NO_CREDENTIALS for cls in type(exc).__mro__)


def _refusal_fix(exc: BaseException, what: str, remote: ObjectStore, *,
                 reads_refused: bool = False) -> str | None:
    """What fixes a request the store refused (no credentials, no permission, no bucket),
    or None for an outage (no answer): waiting, then ``dagnb cache push``, fixes that;
    for a refusal it cannot, and the warning said to. ``reads_refused``: a read was
    refused before, so ``cache_mode: read-only`` would not help a refused upload."""
    if _is_no_credentials(exc):
        return ("no credentials were found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or the store library's own)")
    if isinstance(exc, PermissionError):
        code = _error_code(exc)
        if code in _PASSING_REFUSALS:  # (a token expired: refreshed, it works)
            return None
        check = _check_credentials(remote)
        if code in _UNKNOWN_CREDENTIALS:
            return f"the store does not know these credentials: {check}"
        if what == "an upload" and reads_refused:
            return f"these credentials may neither read nor write the store: {check}"
        if what == "an upload":
            return ("these credentials may not write to the store: set cache_mode: "
                    "read-only, or use credentials that may write")
        return f"these credentials may not read the store: {check}, and that they may read it"
    if isinstance(exc, FileNotFoundError) and (bucket := _no_bucket(remote)) is not None:
        return f"there is no bucket {bucket!r}: check the bucket name in the store's URL"
    return None


# What S3 answers with a 403 that a retry later gets past (s3fs makes each of them a
# PermissionError): said as an outage, whose warning says to push later.
_PASSING_REFUSALS = frozenset({"ExpiredToken", "TokenRefreshRequired", "RequestExpired",
                               "RequestTimeTooSkewed", "SignatureDoesNotMatch"})


# What S3 answers for credentials it does not know (a mistyped key id, a token from
# elsewhere): neither read nor write works, so cache_mode: read-only cannot help.
_UNKNOWN_CREDENTIALS = frozenset({"InvalidAccessKeyId", "InvalidToken"})
_CHECK_CREDENTIALS = {  # where each store library reads them, by URL scheme
    "s3": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE",
    "gs": "check GOOGLE_APPLICATION_CREDENTIALS (or gcloud auth application-default login)",
    "az": "check AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME / "
          "AZURE_STORAGE_ACCOUNT_KEY",
}


def _check_credentials(remote: ObjectStore) -> str:
    """What to check of the credentials of ``remote``'s store library."""
    scheme = remote.url.partition("://")[0].lower()
    return _CHECK_CREDENTIALS.get(checks.STORE_FAMILIES.get(scheme, scheme),
                                  "check the credentials the store library reads")


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind a store library's error (botocore's ClientError, which
    s3fs raises its PermissionError from), or None."""
    response = getattr(exc.__cause__, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _no_bucket(remote: ObjectStore) -> str | None:
    """The bucket of ``remote`` when it is not there (a request that found nothing may
    also be a file removed meanwhile), else None."""
    try:
        missing = _missing_part(remote)
    except Exception:  # (no answer: an outage, said as one)
        return None
    if missing is None or not missing.startswith("bucket"):
        return None
    return remote.path.split("/", 1)[0]

_OWED = ".unsent-replacements"  # in the local tier: <step>/<key>, one empty file each


def owe_replacement(root: Path, step: str, key: str, replace: bool = True) -> None:
    """Remember that the entry ``step/key`` of the tier ``root`` replaces the store's
    copy (a refresh, a rebuild) that could not be sent: a push, which skips the keys the
    store has, sends it then, else the store keeps the result the refresh replaced."""
    if replace:
        with contextlib.suppress(OSError):  # (a tier that cannot take it: as before)
            marker = root / _OWED / step / key
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()


def owed_replacements(root: Path) -> set[tuple[str, str]]:
    """The (step, key) of the tier ``root`` whose store copies are to be replaced."""
    try:
        steps = os.listdir(root / _OWED)
    except OSError:
        return set()
    return {(step, key) for step in steps
            for key in (os.listdir(root / _OWED / step) if (root / _OWED / step).is_dir()
                        else ())}


def replacement_owed(root: Path, step: str, key: str) -> bool:
    return (root / _OWED / step / key).exists()


def paid_replacement(root: Path, step: str, key: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(root / _OWED / step / key)


_UNSENT = ".unsent"  # in the local tier: <step>/<key>, one empty file each


def mark_unsent(root: Path, step: str, key: str) -> None:
    """Note that the tier ``root``'s new entry ``step/key`` is not in the store yet: set
    before its upload and cleared once it ends (:func:`sent_at_last`), so one an
    interrupt, a killed process or a store down cut short is sent by a later run's hit."""
    with contextlib.suppress(OSError):  # (a tier that cannot take it: as before)
        marker = root / _UNSENT / step / key
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def unsent_entries(root: Path) -> set[tuple[str, str]]:
    """The (step, key) of the tier ``root`` whose upload never ended."""
    return _markers(root / _UNSENT)


def sent_at_last(root: Path, step: str, key: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(root / _UNSENT / step / key)


def _markers(folder: Path) -> set[tuple[str, str]]:
    try:
        steps = os.listdir(folder)
    except OSError:
        return set()
    return {(step, key) for step in steps
            for key in (os.listdir(folder / step) if (folder / step).is_dir() else ())}


# -- explicit sync ------------------------------------------------------------------------
class Transfer:
    """What a :func:`push` or :func:`pull` did: entries copied (a push's ``mended``
    among them: replacing a copy found damaged in the store; a pull's ``replaced``:
    older local copies of keys the store holds a newer entry of), skipped (there already; a
    push's ``meanwhile`` among them: written by another writer while it sent them; a
    pull's ``same_output``: the store's newer copy holds the same output as the local
    copy, which stays; its ``in_use``: a live run uses the local copy, which stays),
    expired, unusable (a pull's: in the store, expired, or with a file missing or
    damaged) and damaged (a push's: here, files no longer matching their digest, set
    aside and not sent), bytes moved (``unreferenced`` among them: a push's, of blobs
    that no entry kept names), and bytes read back to check the store's (a
    ``push --check``'s). A push the store stopped answering: :attr:`unanswered` (the
    store and the deadline), and :attr:`unsent`, the entries it then left unsent."""

    __slots__ = ("bytes", "checked", "copied", "damaged", "expired", "in_use", "kept_since",
                 "meanwhile", "mended", "newer", "replaced", "same_output", "skipped",
                 "unanswered", "unreferenced", "unsent", "unusable", "users")

    def __init__(self) -> None:
        self.copied = self.skipped = self.expired = self.unusable = self.damaged = 0
        self.mended = self.meanwhile = self.bytes = self.unreferenced = self.checked = 0
        self.replaced = self.same_output = 0
        self.in_use = 0  # a pull's: older local copies kept, as a live run uses them
        self.newer: dict[int, int] = {}  # store's entries a newer dagnb wrote, by format
        self.users: list[str] = []  # (who: ``pid N``, each once)
        self.kept_since: float | None = None  # the earliest manifest time of those kept
        # a push's: the store that moved none of an upload for its deadline, and that
        # deadline (the push stopped there), and the entries left unsent (that one, the rest)
        self.unanswered: tuple[str, float] | None = None
        self.unsent = 0

    def __repr__(self) -> str:
        return (f"Transfer(copied={self.copied}, mended={self.mended}, "
                f"skipped={self.skipped}, meanwhile={self.meanwhile}, "
                f"expired={self.expired}, unusable={self.unusable}, damaged={self.damaged}, "
                f"bytes={self.bytes}, unreferenced={self.unreferenced}, "
                f"checked={self.checked})")

    def keep_for(self, user: str, modified: float | None) -> None:
        """Count a local copy a pull leaves as it is, as ``user`` (a live run) uses it;
        ``modified``: when the store's newer copy was written."""
        self.skipped += 1
        self.in_use += 1
        if user not in self.users:
            self.users.append(user)
        if modified is not None and (self.kept_since is None or modified < self.kept_since):
            self.kept_since = modified

    def written_by_newer(self, newer: int | None) -> bool:
        """Count an entry of the store a newer dagnb wrote (format ``newer``): left as
        it is. Whether there was one."""
        if newer is not None:
            self.newer[newer] = self.newer.get(newer, 0) + 1
        return newer is not None

    def _newer_said(self) -> str:
        if not self.newer:
            return ""
        count, them = sum(self.newer.values()), "it" if sum(self.newer.values()) == 1 else "them"
        said = newer_format_words(max(self.newer)).replace("was written", "written", 1)
        left = "left as it is" if count == 1 else "left as they are"
        return f", {count} {said}: {left}; upgrade dagnb to use {them}"

    def _kept_in_use(self) -> str:
        if not self.in_use:
            return ""
        them = "it" if self.in_use == 1 else "them"
        runs = "a run going on uses" if len(self.users) == 1 else "runs going on use"
        ends = "it ends" if len(self.users) == 1 else "they end"
        return (f" ({self.in_use} kept: {runs} {them} ({', '.join(self.users)}); "
                f"pull again once {ends})")

    def unanswered_line(self) -> str | None:
        """What ``dagnb cache push`` and the magic say of a push the store stopped
        answering (None: it answered): the store, the entries left unsent, the setting."""
        if self.unanswered is None:
            return None
        store, deadline = self.unanswered
        return (unanswered_words(store, deadline, self.unsent)
                + ", kept in the local cache; push again once the store answers")

    def line(self, action: str) -> str:
        """The one-line summary ``dagnb cache push|pull`` and the magic print."""
        mended = (f" ({self.mended} replacing a copy damaged in the store)" if self.mended
                  else "")
        mended += (f" ({self.replaced} replaced by "
                   f"{'a newer copy' if self.replaced == 1 else 'newer copies'})"
                   if self.replaced else "")
        meanwhile = (f" ({self.meanwhile} written meanwhile by another push or run)"
                     if self.meanwhile else "")
        meanwhile += (f" ({self.same_output} of the same output as the store's newer "
                      "copy: kept, nothing downloaded)" if self.same_output else "")
        meanwhile += self._kept_in_use()
        checked = f" (read back and checked: {_amount(self.checked)})" if self.checked else ""
        expired = f", {self.expired} expired" if self.expired else ""
        them = "it" if self.unusable == 1 else "them"
        unusable = (f", {self.unusable} not usable (a file missing or damaged in the store: "
                    f"{_steps_run(self.unusable)} again; dagnb cache push --check from a "
                    f"machine that has {them} mends {them})") if self.unusable else ""
        damaged = (f", {self.damaged} left out (damaged here: set aside, "
                   f"{_steps_run(self.damaged)} again)") if self.damaged else ""
        unreferenced = (f" ({_amount(self.unreferenced)} of it unreferenced: files of "
                        "entries the store kept another copy of, left there named by no "
                        "entry, where nothing removes them)") if self.unreferenced else ""
        return (f"{action}: {_entries(self.copied)} copied{mended}, {self.skipped} already "
                f"there{meanwhile}{checked}{expired}{unusable}{damaged}{self._newer_said()}, "
                f"{_amount(self.bytes)}{unreferenced}")


def newer_format_words(newer: int) -> str:
    """How a message says that a newer dagnb wrote a manifest of format ``newer``."""
    readable = " and ".join(map(str, _READABLE_FORMATS))
    return (f"was written by a newer dagnb (manifest format {newer}; this one reads "
            f"formats {readable})")


def _entries(count: int) -> str:
    return "1 entry" if count == 1 else f"{count} entries"


def _steps_run(count: int) -> str:
    """What becomes of the steps of ``count`` entries that cannot be used."""
    return "its step runs" if count == 1 else "their steps run"


def _amount(count: int) -> str:
    """Bytes in MB, or in kB below 0.05 MB (entries' small files: 16 packed entries,
    30 kB, read "0.0 MB", as if nothing was copied), 0 as "0 bytes"."""
    if not count:
        return "0 bytes"
    return f"{count / 1e6:.1f} MB" if count >= 50_000 else f"{count / 1e3:.1f} kB"


def push(local: Store, url: str, *, progress: Progress | None = None,
         check: bool = False) -> Transfer:
    """Upload every unexpired entry of the ``local`` store that ``url`` lacks and whose
    files still match their digests; a damaged one is set aside, as verify does.

    The store has an entry when it has its manifest and every blob it names, of its size;
    ``check``: and hashing to its name, each blob downloaded (else a blob changed in the
    store, its size kept, is seen only by the readers who download it, and never
    mended by a push)."""
    remote = _object_store(url, check_content=check)
    now = local.clock()
    local.take_set_aside()  # (those found before were reported then: count this push's)
    entries = [entry for entry in local.iter_entries() if not entry.expired(now)]
    owed = owed_replacements(local.location)  # refreshes the store did not get
    done = Transfer()
    with tempfile.TemporaryDirectory(prefix="dagnb-push-") as scratch:
        for number, entry in enumerate(entries, 1):
            if done.unanswered is None:
                _push_one(done, local, remote, entry, (entry.step, entry.key) in owed, scratch)
            else:  # (each would wait as long again: none is tried, all kept for a later push)
                done.unsent += 1
            if progress is not None:
                progress(number, len(entries), done.bytes)
    done.damaged = len(local.take_set_aside())  # (the listing's finds too: sizes changed)
    done.checked = remote.bytes_checked
    return done


def _push_one(done: Transfer, local: Store, remote: ObjectStore, entry: Entry, replace: bool,
              scratch: str) -> None:
    """Upload ``entry`` unless the store has it whole, or it is damaged here."""
    found = None if replace else remote.manifest(entry.step, entry.key)
    if found is not None and remote.whole(entry.step, entry.key, found):
        done.skipped += 1  # (not re-hashed: the store has it already)
    elif _intact(local, entry):
        with _folder_to_upload(local, entry, scratch) as folder:
            _count_upload(done, local, remote, entry, folder, replace, found)


@contextlib.contextmanager
def _folder_to_upload(local: Store, entry: Entry, scratch: str) -> Iterator[Path]:
    """The folder to upload of ``entry``: a folder entry's own; a packed entry's made
    from its record in a folder of ``scratch`` (outside the cache), removed once sent.
    Not the one under the cache's ``.unpacked``, which is for the runs whose steps read
    it: a push left one there for each record, a cache of small entries grew tenfold."""
    if not isinstance(entry, PackedEntry):
        yield entry.path
        return
    root = tempfile.mkdtemp(dir=scratch)
    try:
        made_here = _UnpackedIn(local, root)
        yield PackedEntry(entry.step, entry.key, dict(entry.head), entry.version,
                          made_here).path
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _UnpackedIn:
    """Makes packed entries' folders under ``root`` as ``store`` makes them under its
    ``.unpacked`` (the owner a :class:`~dagnb.cache.entry.PackedEntry` asks)."""

    def __init__(self, store: Store, root: str) -> None:
        self._store, self._unpack_root = store, root

    def _unpack(self, entry: PackedEntry, again: bool = False) -> None:
        self._store._unpack(entry, again)


def _count_upload(done: Transfer, local: Store, remote: ObjectStore, entry: Entry,
                  folder: Path, replace: bool, found: Mapping[str, Any] | None) -> None:
    """Upload ``entry`` (its files in ``folder``) and count it: copied, or there already
    when another writer's copy came while this push looked and sent (the bytes it sent
    are counted all the same: a store that had lost a blob got it again)."""
    mending = (entry.step, entry.key) in remote.damaged_entries
    try:
        sent = _upload_in_time(done, remote, entry, folder, replace, found)
    except FileNotFoundError:  # (s3fs' "The specified bucket does not exist": said as pull's)
        if (bucket := _no_bucket(remote)) is None:
            raise
        raise CacheError(f"cache push {remote.url}: there is no bucket {bucket!r}; check the "
                         "bucket name in the URL (or make the bucket first)") from None
    if sent is None:
        return
    done.bytes += sent.sent
    done.unreferenced += sent.unreferenced
    if done.written_by_newer(sent.newer):
        return
    if sent.kept_other:
        done.skipped += 1
        done.meanwhile += 1
        return
    done.copied += 1
    done.mended += mending
    paid_replacement(local.location, entry.step, entry.key)


def _upload_in_time(done: Transfer, remote: ObjectStore, entry: Entry, folder: Path,
                    replace: bool, found: Mapping[str, Any] | None) -> Upload | None:
    """``remote.upload`` of ``entry``, sent as a run sends a held upload
    (:meth:`HeldUploads.now`); None when given up, the store moving none of it for
    ``cache_upload_timeout_seconds`` (then noted in ``done``: the push stops there)."""
    got: list[Upload] = []

    def send() -> bool:
        got.append(remote.upload(entry.step, entry.key, folder, meta=entry.meta,
                                 replace=replace, found=found))
        return True

    held = HeldUploads.now(send, remote.url, (entry.step, entry.key))
    if held.unanswered:  # (its thread may end it yet: uncounted, a later push finds it)
        done.unanswered = next(iter(held.unanswered.items()))
        done.unsent += 1
        return None
    return got[0]


def _intact(local: Store, entry: Entry) -> bool:
    """Whether an entry's files still hash to its digest: a listing checks sizes only,
    and an upload names blobs by the files as they are now, so a file edited in place
    would reach every machine that pulls. One that does not is set aside, reported once;
    one replaced or removed meanwhile is not sent now, and the entry at its key is left."""
    if entry.verify():
        return True
    local.quarantine(entry.step, entry.key, "its files no longer match their digest",
                     entry=entry)
    return False


def pull(url: str, local: Store, *, progress: Progress | None = None) -> Transfer:
    """Download every entry of ``url`` that the ``local`` store lacks (trusted ones), or
    holds an older entry of the key of (:func:`_newer_in_store`: a teammate's refresh,
    which a local hit never asks the store about); an older one of the same output stays
    (:func:`_same_output`: its files are not downloaded)."""
    remote = _object_store(url)
    refuse_no_store(remote)
    seen = _pulled_up_to(local, url)
    keys = list(remote.entries_modified())
    done = Transfer()
    for number, (step, key, modified) in enumerate(keys, 1):
        here, expired_for = _unexpired(local, step, key)
        newer = (_newer_in_store(remote, here, step, key)
                 if here is not None and _written_since(modified, seen) else None)
        older = newer is not None
        if expired_for is not None:  # (expired here, but a live run uses it)
            done.keep_for(expired_for, modified)
        # (the store's newer copy of the same output: the local one takes its times)
        elif here is not None and (newer is None or _same_output(remote, here, newer)):
            done.skipped += 1
            done.same_output += older
            if older:  # (a refresh here not pushed yet is no longer owed to the store)
                paid_replacement(local.location, step, key)
        elif older and (reader := live_user_of(local.location, step, key)) is not None:
            done.keep_for(reader, modified)  # (checked again once downloaded, below)
        else:
            kept_for: list[str] = []
            moved = fetch_into(remote, local.backend, step, key,
                               _dropping(local, step, key) if older else None,
                               keep=local.keep_fetched, kept_for=kept_for)
            done.bytes += moved or 0
            if kept_for:  # (a run took it up while it downloaded: the download goes)
                done.keep_for(kept_for[0], modified)
            else:
                done.copied += moved is not None
                done.replaced += older and moved is not None
                newer = moved is None and done.written_by_newer(
                    remote.written_by_newer(step, key))
                done.expired += moved is None and remote.expired
                done.unusable += moved is None and not remote.expired and not newer
        if progress is not None:
            progress(number, len(keys), done.bytes)
    # (a kept entry's manifest is read again by the next pull: listed as not seen yet)
    _note_pulled(local, url, [_seen_up_to(modified, done.kept_since)
                              for _step, _key, modified in keys])
    return done


_PULLED = ".pulled"  # in the local tier: the newest manifest time each store's last pull saw


def _seen_up_to(modified: float | None, kept_since: float | None) -> float | None:
    """A listed manifest time as a pull notes it: no later than the earliest of an entry
    it kept for a live run (``kept_since``), so that the next pull compares that one again
    (:func:`_written_since`)."""
    if modified is None or kept_since is None:
        return modified
    return min(modified, kept_since)


def _written_since(modified: float | None, seen: float | None) -> bool:
    """Whether a listed manifest of a key the tier holds may name a newer entry than
    the tier's: written no earlier than the newest the last whole pull listed (that
    pull compared those). Both times are the store's (its clock, not this machine's,
    which may differ); a time unknown, or no pull before: it may."""
    return modified is None or seen is None or modified >= seen


def _pulled_up_to(local: Store, url: str) -> float | None:
    """The newest manifest time the last whole pull of ``url`` into ``local`` listed."""
    try:
        return float((local.location / _PULLED / _url_name(url)).read_text())
    except (OSError, ValueError):
        return None


def _note_pulled(local: Store, url: str, listed: list[float | None]) -> None:
    """Note what the pull's listing showed, once the pull went through."""
    times = [modified for modified in listed if modified is not None]
    if not times or len(times) < len(listed):  # (a listing without times: none noted)
        return
    with contextlib.suppress(OSError):  # (unnoted: the next pull reads more manifests)
        (local.location / _PULLED).mkdir(exist_ok=True)
        (local.location / _PULLED / _url_name(url)).write_text(repr(max(times)))


def _url_name(url: str) -> str:
    return xxhash.xxh3_64_hexdigest(url.rstrip("/").encode())


def _unexpired(local: Store, step: str, key: str) -> tuple[Entry | None, str | None]:
    """``local``'s entry of ``step/key`` if unexpired; an expired copy is removed, as a
    lookup does: it hid the store's fresh copy, counted as there. One a live run uses
    stays, as for a lookup (its step may be reading it): then (None, who: ``pid N``)."""
    entry = local.peek(step, key)
    if entry is None or not entry.expired(local.clock()):
        return entry, None
    reader = live_user_of(local.location, step, key)
    if reader is None:
        local.remove(step, key)
    return None, reader


def _newer_in_store(remote: ObjectStore, here: Entry, step: str,
                    key: str) -> dict[str, Any] | None:
    """The manifest of the store's unexpired entry of ``step/key`` if it is another one,
    created after ``here`` (the local copy): another machine replaced it (``--refresh``);
    else None. One created here later (a refresh not pushed yet) stays; so does the same
    entry (same time)."""
    manifest = remote.manifest(step, key)
    created = None if manifest is None else manifest.get("created")
    if type(created) not in (int, float) or _expired(manifest or {}, time.time()):
        return None
    return manifest if created > here.created else None


def _same_output(remote: ObjectStore, here: Entry, newer: Mapping[str, Any]) -> bool:
    """Whether the store's ``newer`` entry of ``here``'s key (a ``--refresh`` that made
    it again) holds the same output as ``here``, the local copy: then its files are not
    downloaded again, only its ``meta.json`` read. The local copy keeps its own times
    and logs (``dagnb logs --run`` of the run that made it still finds its lines)."""
    meta = remote.meta_of(here.step, here.key, newer)
    try:
        theirs = json.loads(meta) if meta is not None else None
    except ValueError:
        return False
    ours = here.output_digest
    return (ours is not None and isinstance(theirs, dict)
            and theirs.get("output_digest") == ours)


def _dropping(local: Store, step: str, key: str) -> Callable[[], None]:
    """What a pull does before it writes the store's newer copy of ``step/key``: drop
    the local one (a pack's record would hide the folder written), and what this
    machine owed the store for it (its refresh is older than the store's)."""
    def drop() -> None:
        local.remove(step, key)
        paid_replacement(local.location, step, key)
    return drop


def refuse_no_store(remote: ObjectStore, action: str = "pull") -> None:
    """CacheError for a store to pull from (or list) that is not there (its folder, or its
    bucket) or that holds something else: a mistyped URL pulled 0 entries and exited 0, a
    typo in CI passing silently. An empty folder, or a bucket's prefix with nothing under
    it (object stores have no folders), is a store nothing was pushed to yet."""
    fs, path = remote.fs, remote.path
    fix = "check the URL: name the store dagnb cache push wrote to"
    fs.invalidate_cache(path)  # (a listing made earlier in this process must not answer)
    try:
        names = {name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(path, detail=False)}
    except FileNotFoundError:
        missing = _missing_part(remote)
        if missing is not None:  # (a folder made for a store nothing was pushed to yet)
            made = " (or make the folder, for a store nothing was pushed to yet)" if (
                missing.startswith("folder")) else ""
            raise CacheError(f"cache {action} {remote.url}: there is no {missing}; {fix}{made}"
                             ) from None
        return
    if names and not names & {"entries", "blobs"}:
        raise CacheError(f"cache {action} {remote.url}: it holds no dagnb store (no entries "
                         f"or blobs in it); {fix}")


def _missing_part(remote: ObjectStore) -> str | None:
    """What is absent of a store location that lists nothing: its folder, or its bucket;
    None for a bucket's empty prefix. (s3fs' ``exists`` of a bucket says False for any
    error, an unreachable endpoint too: ``info`` raises FileNotFoundError for no bucket.)"""
    if remote.url.partition("://")[0] in _FOLDER_PROTOCOLS:
        return f"folder {remote.path!r}"
    bucket = remote.path.split("/", 1)[0]
    try:
        remote.fs.info(bucket)
    except FileNotFoundError:
        return f"bucket {bucket!r}"
    except PermissionError:  # (credentials for a prefix alone may not see the bucket)
        pass
    return None


def _object_store(url: str, *, check_content: bool = False) -> ObjectStore:
    from dagnb.config import settings

    return ObjectStore(url, settings().cache_storage_options, check_content=check_content)


PLAIN_EVERY = 10.0  # seconds between two progress lines where stderr is no terminal


def progress_line(verb: str, stream: TextIO | None = None,
                  clock: Callable[[], float] = time.monotonic) -> Progress:
    """A progress callback drawing one line (``push: 3/10 entries, 1.2 MB``) on stderr.
    Where that is no terminal (a CI log, a file), a ``\r`` redraw would pile every state
    into one growing line: there it prints plain lines, one each ``PLAIN_EVERY`` seconds
    and the last."""
    out = sys.stderr if stream is None else stream
    if not _is_terminal(out):
        return _plain_lines(verb, out, clock)

    def show(done: int, total: int, moved: int) -> None:
        end = "\n" if done == total else ""
        out.write(f"\r{_progress(verb, done, total, moved)}{end}")
        out.flush()

    return show


def _progress(verb: str, done: int, total: int, moved: int) -> str:
    """``push: 3/10 entries, 1.2 MB`` (``1/1 entry``: the noun agrees with the total)."""
    return f"{verb}: {done}/{_entries(total)}, {_amount(moved)}"


def _plain_lines(verb: str, out: TextIO, clock: Callable[[], float]) -> Progress:
    last = clock()  # when a line was last printed (a quick sync prints only its last)

    def show(done: int, total: int, moved: int) -> None:
        nonlocal last
        now = clock()
        if done == total or now - last >= PLAIN_EVERY:
            last = now
            print(_progress(verb, done, total, moved), file=out, flush=True)

    return show


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # (a closed stream)
        return False
