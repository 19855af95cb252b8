"""Where a step meets the cache: its key, the entry to restore, storing what it made.

:class:`StepCache` is the one object that the scheduler, ``plan``/``explain`` and
``warm`` ask, for one run, about steps and the cache::

    key = cache.key(step, upstream_digests, base_dir)
    entry = cache.lookup(step, key)
    if entry is None:
        async with cache.claim(step, key) as entry:   # the key's lock, and a second look
            if entry is None:
                ...run the step into out_dir...
                entry = cache.save(step, key, out_dir=out_dir, result=result, ...)
    result = cache.restore(step, entry)               # a hit: the result, loaded lazily

A step's key is made from its own spec and its upstream steps' *output* digests, so
an upstream step that runs again and writes the same outputs leaves its dependents
cached (early cutoff).

The run's ``cache_mode`` decides what it may write: ``read-only`` restores hits from a
read-only store and stores, locks and counts nothing (a step that runs keeps its
outputs in the run's folder); ``fail-on-miss`` reads and writes as ``read-write``, and a
step found missing when it is claimed fails instead of running (the run checks every
step before it starts: :func:`dagnb.runtime.plan.misses`).
"""

from __future__ import annotations

import base64
import builtins
import copyreg
import functools
import itertools
import operator
import os
import pickle
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from dagnb.cache import session_store, store_for
from dagnb.cache.backend import KeyRangeLock, surely_absent
from dagnb.cache.entry import _SORTED, COUNTED_AS, _inline_digest
from dagnb.cache.explain import explain as explain_key
from dagnb.cache.images import ImagePins
from dagnb.cache.keys import StepKey, step_key
from dagnb.cache.location import local_folder
from dagnb.cache.store import Entry, GlancedEntry, Store, _taking_now, acquire
from dagnb.checks import parse_ttl, warn_user
from dagnb.config import check_cache_mode, settings
from dagnb.errors import CacheError, CacheMissError, ConfigError, StepFailed, exception_line
from dagnb.fingerprint import (
    directory_digest,
    main_spelled,
    new_hasher,
    of_user_code,
    text_digest,
    user_class_digest,
    value_digest,
)
from dagnb.model.jsontext import encoder
from dagnb.model.masking import MIN_LINE, Masker
from dagnb.model.results import (
    NO_RESULT,
    RESULT_FILES,
    encode_inline,
    json_text,
    save_result,
)
from dagnb.model.step import Step

__all__ = ["MUST_WAIT", "CachedResult", "StepCache", "has_files", "refresh_setting"]


def refresh_setting(refresh: Any) -> bool | frozenset[str]:
    """``refresh`` as True, False or the step names it lists (one name alone: a step's
    name, not its letters); anything else is refused in one line."""
    if isinstance(refresh, bool):
        return refresh
    if isinstance(refresh, str):
        return frozenset([refresh])
    if isinstance(refresh, Iterable) and not isinstance(refresh, Mapping):
        names = list(refresh)
        if all(isinstance(name, str) for name in names):
            return frozenset(names)
    raise ConfigError(f"refresh={refresh!r} must be True, False or a list of step names")


class StepCache:
    """The cache as one run sees it: the store, what to refresh, the version salt.

    Parameters
    ----------
    directory
        The cache directory; None for the ``cache_directory`` setting.
    refresh
        True to run every step again and overwrite its entry, or the names of such steps.
    version
        A salt mixed into every key; empty for the ``cache_version`` setting.
    ttl
        Seconds (or ``"1h"``) until the entries of steps that set no ``ttl`` expire;
        None for the ``cache_ttl_seconds`` setting.
    mode
        ``"read-write"``, ``"read-only"`` or ``"fail-on-miss"`` (a run with the cache
        ``"off"`` has no StepCache); None for the ``cache_mode`` setting.
    secrets
        The values of the secrets the run knows: masked as ``***`` in the descriptions
        keys store and in the values :meth:`explain` shows (one under ``MIN_LINE``
        characters where it is a word of its own: ``a`` would mask every ``a``).
    in_container
        Whether the run executes a step in a container (the runtime knows each step's
        executor; the cache does not): those steps' keys say so, so that a result made
        on the host is never served to a container run, nor the other way round. None:
        every step on the host.
    read_only
        Write nothing to the cache folder whatever the ``mode`` (a ``fail-on-miss`` run
        on a folder it may not write).
    workflow
        The name of the graph whose steps it keys: kept in each entry it stores, so that
        ``explain`` compares a step with its own workflow's entries first (two workflows
        sharing a folder may both have a step ``build``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        refresh: bool | Iterable[str] = False,
        version: str | None = None,
        ttl: float | str | None = None,
        mode: str | None = None,
        secrets: Iterable[str] = (),
        in_container: Callable[[Step], bool | str] | None = None,
        read_only: bool = False,
        workflow: str | None = None,
    ) -> None:
        config = settings()
        self.in_container = in_container
        self.mask = Masker(secrets, words_below=MIN_LINE)
        self._key_mask = self.mask if self.mask else None  # (asked once, not per key)
        self.mode = check_cache_mode(config.cache_mode if mode is None else mode, "mode")
        if self.mode == "off":
            raise CacheError("a StepCache with mode 'off' caches nothing; run without one")
        self.writes = self.mode != "read-only" and not read_only
        self.workflow = workflow
        self.store: Store = store_for(directory, read_only=not self.writes)
        self.folder = local_folder(directory)  # (left out of the steps' mounted folders)
        self.version = version or config.cache_version
        # for steps that set none; a Store is shared, so not its default
        self.ttl = config.cache_ttl_seconds if ttl is None else parse_ttl(ttl, error=ConfigError)
        wanted = refresh_setting(refresh)
        self._refresh_all = wanted is True
        self._refresh = frozenset() if isinstance(wanted, bool) else wanted
        # pin_images: tags count by the digest pinned in <cache>/images.json (read-only:
        # a new tag is pinned for this run only)
        self.images = (ImagePins(self.store.location, writes=self.writes)
                       if config.pin_images else None)

    # -- looking up -----------------------------------------------------------------
    def enabled_for(self, step: Step) -> bool:
        """False for ``cache=False`` steps."""
        return step.cache is not False

    def key(self, step: Step, upstream_digests: Mapping[str, str], base_dir: Path,
            variables: Mapping[str, Any] | None = None) -> StepKey:
        """The step's key from its spec, inputs and upstream output digests (its image
        by digest when ``pin_images`` pinned its tag); ``variables``: values its code's
        globals of those names will hold (see :func:`~dagnb.cache.keys.step_key`)."""
        if self.images is not None:
            step = self.images.pinned(step)
        return step_key(
            step, upstream_digests=upstream_digests, base_dir=base_dir,
            cache_version=self.version, mask=self._key_mask,
            container=self.in_container is not None and self.in_container(step),
            cache_folder=self.folder, variables=variables,
        )

    def lookup(self, step: Step, key: StepKey) -> Entry | None:
        """The entry a run restores, or None (always for refreshed or uncached steps);
        the use is counted."""
        # (refreshes, _store_of and ttl_of written out: every hit of a re-run passes here)
        if step.cache is False or self._refresh_all or step.name in self._refresh:
            return None
        store = session_store() if step.cache == "session" else self.store
        return store.lookup(step.name, key, max_age=step.ttl if step.ttl is not None else self.ttl)

    def ttl_of(self, step: Step) -> float | None:
        """The step's ttl in seconds (the run's, or the setting's, when it sets none):
        what its next entry is saved with, and the oldest entry it is served now."""
        return step.ttl if step.ttl is not None else self.ttl

    def refreshes(self, step: Step) -> bool:
        """Whether this run runs ``step`` again whatever the cache holds (``refresh``)."""
        return self._refresh_all or step.name in self._refresh

    def passed_over(self, step: Step, entry: Entry) -> str | None:
        """Why a run would not restore ``entry`` though it is stored, or None."""
        if self.refreshes(step):
            return "refresh asks to run it again"
        if entry.expired(self._store_of(step).clock(), self.ttl_of(step)):
            return "its cache entry has expired"
        return None

    def peek(self, step: Step, key: StepKey, *, metadata_only: bool = False) -> Entry | None:
        """The entry under ``key`` (expired ones too), counting nothing: for a plan.
        ``metadata_only``: a store URL's entry that the local tier lacks is seen by its
        metadata alone (see :meth:`with_files`): a plan downloads no outputs; a run's
        own checks (``fail-on-miss``) look as the run will be served, whole."""
        if not self.enabled_for(step):
            return None
        return self._store_of(step).peek(step.name, key, metadata_only=metadata_only)

    def with_files(self, step: Step, entry: Entry) -> Entry | None:
        """``entry`` with its files at hand: one :meth:`peek` saw by its metadata alone,
        downloaded into the tier as a run's lookup would (counting nothing), for a
        result it keeps in a file; else ``entry`` itself. None when that download finds
        the store's copy unusable (damaged, removed): a run would run the step."""
        if type(entry) is not GlancedEntry or entry.inline is not None:
            return entry
        return self._store_of(step).peek(step.name, entry.key)

    def expired(self, step: Step, entry: Entry) -> bool:
        """Whether a :meth:`peek`'s entry has passed its ttl (a lookup would miss)."""
        return entry.expired(self._store_of(step).clock(), self.ttl_of(step))

    def claim(self, step: Step, key: StepKey, *, looked: bool = True,
              on_wait: Callable[[Step, int | None], object] | None = None) -> _Claim:
        """After a miss, ``async with cache.claim(step, key) as entry``: hold the key's
        lock for the block and look again. The entry another process stored meanwhile,
        or None: then run the step and :meth:`save` it (others wait, then hit).

        ``looked=False``: no :meth:`lookup` came first (a run whose steps keep missing
        claims first): the look under the lock is the only one, and counts the use.
        ``on_wait(step, pid)`` is called once if another process holds the lock (it is
        running the step): the claim waits for it; ``pid`` is that process's, where the
        system tells (Linux), else None.

        A read-only run takes no lock (a lock is a file); a ``fail-on-miss`` run raises
        :class:`~dagnb.errors.CacheMissError` rather than let the step run.
        """
        return _Claim(self, step, key, looked, on_wait)

    def _refused(self, step: Step, key: StepKey, entry: Entry | None) -> Entry | None:
        """``entry``; but a miss of a ``fail-on-miss`` run is an error, never a run."""
        if entry is None and self.mode == "fail-on-miss":
            reason = (self.explain(step, key) or ["it is not cached"])[0].splitlines()[0]
            raise CacheMissError(
                f"step {step.name!r} is not cached and cache_mode is 'fail-on-miss': {reason}",
                misses=[(step.name, reason)],
            )
        return entry

    def explain(self, step: Step, key: StepKey) -> list[str]:
        """Why ``key`` misses for ``step`` (or that it is cached), in sentences; the
        values they show are masked (an entry stored by an older dagnb may describe a
        secret's value), not dagnb's words or the names."""
        return explain_key(self._store_of(step), step.name, key,
                           mask=self.mask if self.mask else None, max_age=self.ttl_of(step),
                           workflow=self.workflow)

    # -- storing and restoring ------------------------------------------------------
    def save(
        self,
        step: Step,
        key: StepKey,
        *,
        out_dir: Path | str,
        result: Any,
        logs: list[dict[str, Any]],
        exit_code: int,
        duration_s: float,
        provenance: Mapping[str, Any] | None = None,
        may_hold_files: bool = True,
        displays: Sequence[Mapping[str, Any]] = (),
    ) -> Entry | None:
        """Store the outputs (and the Python result) of a step that ran; ``provenance``
        (the image digest that ran) goes into the entry's metadata, ``displays`` (the
        rich outputs it showed, masked) into the entry beside its lines.
        ``may_hold_files=False``: the caller knows ``out_dir`` holds nothing (the run made
        no folder for its steps, or it looked: :func:`has_files`), so it is not looked
        at again.

        Returns None, with a warning saying why, when nothing was stored: a result that
        cannot be pickled, or a store that cannot be written (a full disk). The step
        still succeeded; its result stays in memory. A read-only run stores nothing and
        says nothing. An entry not put in place, as a live run reads the one under its
        key, has ``not_stored`` saying so (warned), and what the step made is given back
        to ``out_dir`` and ``logs``: the run's folder keeps it, as a step's not stored.
        """
        if not self.writes:
            return None
        try:
            # a step that wrote no files and returned a small result: the result goes
            # into the entry's record (a pack record: no folder, no file of its own)
            # an empty out/ (a shell step's, made before it ran) stays in the run's
            # folder, as with the cache off: removing it cost a shell step more on the
            # loop than its whole record
            wrote_files = may_hold_files and has_files(out_dir)
            inline = _inline(result) if not wrote_files else None
            counted = None  # (what its result.pkl counts by, when not by its bytes)
            if inline is None:
                out_dir = Path(out_dir)
                out_dir.mkdir(parents=True, exist_ok=True)
                if result is not NO_RESULT:
                    saved, counted = _saved(step, out_dir, result)
                    if not saved:
                        return None
            # (_store_of and refreshes written out: a first run saves every step)
            store = session_store() if step.cache == "session" else self.store
            entry = store.save(
                step.name,
                key,
                out_dir=out_dir if wrote_files or inline is None else None,
                logs=logs,
                exit_code=exit_code,
                duration_s=duration_s,
                ttl=self.ttl_of(step),
                provenance=self._with_workflow(provenance),
                refresh=self._refresh_all or step.name in self._refresh,
                inline=inline or None,
                result_file=True,
                displays=displays,
                result_digest=counted,
            )
            if entry.not_stored is not None:  # (a live run reads the one there: warned)
                store.give_back(entry, out_dir, logs if isinstance(logs, os.PathLike) else None)
            return entry
        except (OSError, CacheError) as exc:
            warn_user(f"step {step.name!r} ran but was not cached: {exc}")
            return None

    def _with_workflow(self, provenance: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """``provenance`` and the workflow the entry is of (see ``workflow``)."""
        if self.workflow is None:
            return provenance
        return {"workflow": self.workflow} if not provenance else {
            **provenance, "workflow": self.workflow}

    def restore(self, step: Step, entry: Entry) -> CachedResult:
        """The result of a hit, loaded when first asked for (most are never read)."""
        return CachedResult(self, step, entry)

    def quarantine(self, step: Step, entry: Entry, problem: str) -> bool:
        """Set aside an entry found damaged after lookup; reported once, the next run
        misses and rebuilds it. False: it was not damaged but removed (or replaced)
        since the lookup, by a clear or an eviction: nothing set aside or reported."""
        return self._store_of(step).quarantine(entry.step, entry.key, problem, entry)

    @staticmethod
    def digest_of(out_dir: Path, result: Any) -> str:
        """Output digest of a step that was not stored: the one :meth:`save` would store
        for it, so that a step cached or not (``cache=False``) leaves its dependents'
        keys alone (early cut-off). Made as stored entries' are, which keeps their keys,
        without the stat cache: its files are in the run's folder, whose paths no later
        run hashes again, and their names may hold a secret (then it was not stored).
        """
        if not has_files(out_dir):
            inline = _inline(result)
            if inline is not None:  # save packs it, its result inline
                return _inline_digest(inline or None)
        if result is NO_RESULT:
            return directory_digest(out_dir, use_stat_cache=False)
        try:  # save writes the result file into the folder it stores
            return directory_digest(out_dir, use_stat_cache=False,
                                    extra=dict([_result_file_digest(result)]))
        except Exception:  # an unpicklable result, which save would not store either
            files = (directory_digest(out_dir, use_stat_cache=False) if out_dir.is_dir()
                     else "no-files")
            return text_digest(files + _result_digest(result))

    def close(self) -> None:
        """Write the hit counts kept in memory, as the run ends: one journal file for
        the run (a file per entry would cost a fully cached re-run more than all its
        lookups), written before the caller has the run, so a cache folder removed
        right after it (a TemporaryDirectory left) has nothing written into it as it
        goes. A run that hit nothing (a first run) writes nothing."""
        if self.store.pending_hits:
            self.store.flush()  # warns of what it cannot write; never raises for it

    def _store_of(self, step: Step) -> Store:
        # made on first use: most runs have no session step, and it is a temporary folder
        return session_store() if step.cache == "session" else self.store


class CachedResult:
    """A cached step's Python result, loaded only when a downstream step (or the user)
    asks for it.

    A result that cannot be loaded raises one :class:`~dagnb.errors.StepFailed` naming
    the step, never a traceback from unpickling, nor a stand-in value: damaged, its
    entry is set aside; removed since the lookup (a clear, an eviction), it is gone.
    The run does not run the step again then: it was settled as cached and its output
    digest keyed its dependents; the next run misses and rebuilds it. Every later ask
    raises the same error (a second reader of a result set aside would find it gone).
    """

    __slots__ = ("_cache", "_entry", "_failure", "_step", "_value")

    def __init__(self, cache: StepCache, step: Step, entry: Entry) -> None:
        self._cache, self._step, self._entry, self._value = cache, step, entry, _UNSET
        self._failure: str | None = None  # why it cannot be loaded, once found

    def get(self) -> Any:
        """The result (``NO_RESULT`` for a step that returned none)."""
        if self._value is _UNSET:
            self._value = self._load()
        return self._value

    def log_files(self) -> list[Path]:
        """The entry's log file (made only now: a packed entry's folder on first use)."""
        return [self._entry.log_file]

    def _load(self) -> Any:
        if self._failure is None:
            try:
                return self._entry.result()
            except Exception as exc:
                self._failure = self._unloadable(exc)
        raise StepFailed(self._failure, step=self._step.name)

    def _unloadable(self, exc: Exception) -> str:
        """Why the result cannot be had, in one line, its entry set aside if damaged."""
        problem = f"its result cannot be loaded ({exception_line(exc)})"
        name = self._step.name
        if self._cache.quarantine(self._step, self._entry, problem):
            return (f"the cached result of step {name!r} was damaged and has been set "
                    "aside; run again to rebuild it")
        return (f"the cached result of step {name!r} is gone: its cache entry was removed "
                "(a cache clear or eviction) while this run used it; run again to rebuild it")


_UNSET = object()


class _Claim:
    """:meth:`StepCache.claim` as a plain async context manager: on every miss of a
    first run, two generator-based ones cost as much as the lock itself. The lock is
    taken at once when free (most misses meet no other process), else waited for
    (:func:`~dagnb.cache.store.acquire`)."""

    __slots__ = ("_cache", "_key", "_lock", "_looked", "_on_wait", "_step")

    def __init__(self, cache: StepCache, step: Step, key: StepKey, looked: bool,
                 on_wait: Callable[[Step, int | None], object] | None = None) -> None:
        self._cache, self._step, self._key, self._looked = cache, step, key, looked
        self._on_wait = on_wait
        self._lock: Any = None

    async def __aenter__(self) -> Entry | None:
        # (once enter_now said to wait, the lock it made is waited for)
        entry = self.enter_now() if self._lock is None else MUST_WAIT
        if entry is not MUST_WAIT:
            return entry  # type: ignore[return-value]
        await acquire(self._lock, self._waiting)
        return self._look()

    def enter_now(self) -> Entry | object | None:
        """:meth:`__aenter__` when it need not wait (the lock free, or none needed):
        its entry; else :data:`MUST_WAIT`, and ``await`` :meth:`__aenter__` waits for
        the lock. Either way the caller leaves with :meth:`release` (no coroutine made:
        a first run claims every step)."""
        cache, step, key = self._cache, self._step, self._key
        if step.cache == "session" or not cache.writes:  # nothing will be stored
            return cache._refused(step, key, None if self._looked else cache.lookup(step, key))
        lock = self._lock = cache.store.lock(step.name, key)
        # at once when free: most misses meet no other process
        if lock.acquire_now() if type(lock) is KeyRangeLock else _taken_now(lock):
            return self._look()
        return MUST_WAIT

    def _look(self) -> Entry | None:
        """The look under the lock, which it lets go of should the look fail."""
        cache, step, key = self._cache, self._step, self._key
        store = cache.store
        try:
            found = store.peek(step.name, key) is not None
            if not found and not self._looked:
                store.count_miss(step.name)  # else the lookup before this one counted it
            return cache._refused(step, key, cache.lookup(step, key) if found else None)
        except BaseException:
            self.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def _waiting(self) -> None:
        if self._on_wait is not None:
            self._on_wait(self._step, lock_holder(self._lock))

    def release(self) -> None:
        """Let go of the key's lock (once: again does nothing)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


MUST_WAIT = object()  # _Claim.enter_now: the lock is held elsewhere, to be waited for


def lock_holder(lock: Any) -> int | None:
    """The pid of the process holding ``lock``, a key's lock (Linux: the process with an
    open file of the lock file that ``/proc/<pid>/fdinfo`` lists the lock of: the key's
    byte of a KeyRangeLock, the whole file's flock of a FileLock); None where it cannot be
    told. Read once, as a run starts to wait: every process's open files are looked at."""
    path = lock.path if type(lock) is KeyRangeLock else getattr(lock, "lock_file", None)
    if not path or not sys.platform.startswith("linux"):
        return None
    offset = getattr(lock, "_offset", None)  # (a KeyRangeLock's byte)
    try:
        held = os.stat(path)
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        for fd in _open_files(pid):
            if _is_file(f"/proc/{pid}/fd/{fd}", held) and _locks(pid, fd, offset):
                return int(pid)
    return None


def _open_files(pid: str) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or another user's
        return []


def _is_file(link: str, held: os.stat_result) -> bool:
    try:
        found = os.stat(link)
    except OSError:
        return False
    return (found.st_ino, found.st_dev) == (held.st_ino, held.st_dev)


def _locks(pid: str, fd: str, offset: int | None) -> bool:
    """Whether descriptor ``fd`` of ``pid`` holds a write lock (of byte ``offset``)."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as file:
            info = file.read().decode("ascii", "replace")
    except OSError:
        return False
    for line in info.splitlines():  # lock:\t1: OFDLCK ADVISORY WRITE -1 fe:00:42 7 7
        fields = line.split()
        if fields[:1] == ["lock:"] and "WRITE" in fields and (
                offset is None or fields[-2:] == [str(offset)] * 2):
            return True
    return False


def _taken_now(lock: Any) -> bool:
    """Whether ``lock`` (not a KeyRangeLock) was taken at once (False: no way to try)."""
    take_now = _taking_now(lock)
    return take_now is not None and take_now()


def _result_digest(result: Any) -> str:
    try:
        return value_digest(result)
    except Exception:  # an unhashable result: downstream keys cannot be trusted
        return "unhashable-" + str(id(result))


def _result_file_digest(result: Any) -> tuple[str, str]:
    """The name and content digest of the file ``save_result`` writes for ``result``
    (or the digest it counts by: :func:`_order_free_json`, :func:`_set_free_digest`,
    :func:`_with_classes`); a pickle is streamed into the hasher, never held whole in
    memory."""
    text = json_text(result)
    hasher = new_hasher()
    if text is not None:
        hasher.update(_order_free_json(result, text.encode("utf-8")))
        return RESULT_FILES[0], hasher.hexdigest()
    marks = _SetMarks()
    pickler = _ClassNoting(marks.writing_to(_Feed(hasher)))
    pickler.dump(result)
    counted = (_set_free_digest(result) if marks.seen else None) or hasher.hexdigest()
    classes = pickler.user_classes()
    return RESULT_FILES[1], _with_classes(counted, classes) if classes else counted


def _order_free_json(result: Any, text: bytes) -> bytes:
    """What the ``result.json`` of ``result`` (``text``) counts by in the output digest:
    its JSON with sorted keys, as an inline result's (:func:`_inline_digest`). A dict
    keeps its keys' order, which a set it was built from takes from the hash seed
    (``{w: len(w) for w in words}``). ``text`` itself when it holds no dict, or its
    keys came sorted: what a dict of several MB sorted costs, about one more encoding
    (its items met out of the order they were made in), is paid only when needed."""
    try:
        if b"{" not in text or _in_key_order(result):
            return text
        # (the encoder's sort_keys sorts (key, value) pairs: 3 times slower)
        return _IN_ORDER(_keys_sorted(result)).encode("utf-8")
    except RecursionError:  # (nested deeper than a walk in Python goes)
        return _SORTED(result).encode("utf-8")


_IN_ORDER = encoder()  # _SORTED's text, keys in the order they come
_CONTAINERS = frozenset((dict, list))


def _in_key_order(value: Any) -> bool:
    """Whether the keys of each dict in ``value`` (JSON data) are sorted (each key
    compared with the next, up to the first out of order)."""
    kind = type(value)
    if kind is dict:
        keys = list(value)
        return all(map(operator.lt, keys, itertools.islice(keys, 1, None))) and all(
            _in_key_order(item) for item in value.values() if type(item) in _CONTAINERS)
    if kind is list:
        return all(_in_key_order(item) for item in value if type(item) in _CONTAINERS)
    return True


def _keys_sorted(value: Any) -> Any:
    """``value`` (JSON data) with the keys of each dict in it sorted (a call for each
    dict and list only: a scalar is taken as it is, a list of scalars too)."""
    kind = type(value)
    if kind is dict:
        keys = sorted(value)
        rebuilt = dict(zip(keys, map(value.__getitem__, keys), strict=True))
        if not _CONTAINERS.isdisjoint(map(type, rebuilt.values())):
            for key, item in rebuilt.items():
                if type(item) in _CONTAINERS:
                    rebuilt[key] = _keys_sorted(item)
        return rebuilt
    if kind is list and not _CONTAINERS.isdisjoint(map(type, value)):
        return [_keys_sorted(item) if type(item) in _CONTAINERS else item for item in value]
    return value  # (a str holding "{")


def _json_counted(result: Any, path: Path) -> str | None:
    """The digest the ``result.json`` at ``path`` counts by when not by its bytes
    (:func:`_order_free_json`); None when they are the same (its keys came sorted)."""
    written = path.read_bytes()
    counted = _order_free_json(result, written)
    if counted is written:
        return None
    hasher = new_hasher()
    hasher.update(counted)
    return hasher.hexdigest()


class _Feed:
    """A file object that hands what is written to it to a hasher."""

    __slots__ = ("write",)

    def __init__(self, hasher: Any) -> None:
        self.write = hasher.update


# How a set with members and a frozenset show in a protocol 5 pickle, whatever they hold:
# EMPTY_SET, MEMOIZE, MARK (its first ADDITEMS), and FROZENSET, MEMOIZE. Their members
# come in the set's iteration order, which hash seeds change (a set of strings pickles
# apart in each process). Data may hold these bytes too: _pickles_a_set tells.
_SET_MARKS = (b"\x8f\x94(", b"\x91\x94")


def _holds_set_marks(data: bytes) -> bool:
    return _SET_MARKS[0] in data or _SET_MARKS[1] in data


# The longest write of the pickler looked at: its frames (64 KiB, a little more to end
# an opcode). A longer one is a payload written apart (32 MB of bytes, a long text),
# data whose chance marks would have the result pickled again whole, in memory.
_FRAMES_UP_TO = 1 << 18


class _SetMarks:
    """Whether a pickle written through it may hold a set: it passes each write on, and
    looks for :data:`_SET_MARKS` in its frames (the C pickler writes each frame whole, a
    set's marks within one; a large array's buffer apart, as a PickleBuffer: data, not
    looked at). A look at bytes in C, where telling whether a result holds a set would
    walk it in Python."""

    __slots__ = ("_write", "seen", "used")

    def __init__(self) -> None:
        self.seen = self.used = False

    def writing_to(self, file: Any) -> _SetMarks:
        self._write, self.used = file.write, True
        return self

    def write(self, data: Any) -> Any:
        if not self.seen and type(data) is bytes and len(data) <= _FRAMES_UP_TO:
            self.seen = _holds_set_marks(data)
        return self._write(data)

    def read(self, path: Path) -> None:
        """Look at a pickle written elsewhere (by the step, or in its container)."""
        tail = b""  # (the end of the block before: a mark may span two)
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                if _holds_set_marks(tail + block):
                    self.seen = True
                    return
                tail = block[-2:]


class _SetsByDigest(pickle.Pickler):
    """Pickles a value with each set and frozenset in it as its value digest (its
    members' digests, sorted: as an argument of a ``Memory``-cached function counts),
    noting whether it met one."""

    met_a_set = False

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) in _SETS:
            self.met_a_set = True
            return value_digest(obj)
        return None


_SETS = (set, frozenset)


# A set or frozenset pickled by protocol 3 is reduced to its type, named as a global.
_SETS_BY_NAME = (b"cbuiltins\nset\n", b"cbuiltins\nfrozenset\n")


def _pickles_a_set(result: Any) -> bool:
    """Whether pickling ``result`` meets a set or a frozenset (or may: it does not
    pickle with protocol 3). Asked of a pickle whose bytes hold :data:`_SET_MARKS`,
    which data may hold too (about one float in 10,000): one more pickling, in C,
    where a ``persistent_id`` would be a Python call for every object it holds (five
    times the pickle's time for 200,000 tuples)."""
    try:
        data = pickle.dumps(result, protocol=3)
    except Exception:  # (one protocol 3 cannot pickle: _set_free_digest tells)
        return True
    return _SETS_BY_NAME[0] in data or _SETS_BY_NAME[1] in data


def _set_free_digest(result: Any) -> str | None:
    """What a result whose pickle holds :data:`_SET_MARKS` counts by in its step's
    output digest, in place of its pickle's bytes: the digest of its pickle with each
    set as its value digest, the same in every process. None when it holds no set
    after all (its pickle's bytes, the same in every process, count), or when a set's
    member cannot be fingerprinted (the bytes count, as before)."""
    if not _pickles_a_set(result):
        return None
    hasher = new_hasher()
    hasher.update(b"pickle with sets by digest:")
    pickler = _SetsByDigest(_Feed(hasher), protocol=5)
    try:
        pickler.dump(result)
    except Exception:  # (a member value_digest refuses: by the pickle's bytes)
        return None
    return hasher.hexdigest() if pickler.met_a_set else None


_INLINE_LIMIT = 2048  # bytes: a result this small is kept in the entry's metadata


def _inline(result: Any) -> dict[str, Any] | None:
    """A small result as inline fields (``{}`` for no result), or None: a file then. A
    pickle holding a set, or an object of a user class, gets the digest it counts by
    (:data:`COUNTED_AS`)."""
    if result is NO_RESULT:
        return {}
    inline = encode_inline(result, _INLINE_LIMIT)
    if inline is None or "pickle" not in inline:
        return inline
    data = base64.b64decode(inline["pickle"])
    counted = _set_free_digest(result) if _holds_set_marks(data) else None
    # (a pickle naming no class or function, plain data, holds no class: not pickled again)
    classes = _classes_in(result) if _STACK_GLOBAL in data else []
    if classes:
        counted = _with_classes(counted or _inline_digest(inline), classes)
    if counted is not None:
        inline[COUNTED_AS] = counted
    return inline


_STACK_GLOBAL = b"\x93"  # (the opcode a protocol 5 pickle names each class or function by)


def has_files(out_dir: Path | str) -> bool:
    """Whether the step wrote anything into its output folder (made or not)."""
    if surely_absent(os.fspath(out_dir)):  # not made: told without an exception
        return False
    try:
        with os.scandir(out_dir) as found:
            return next(found, None) is not None
    except (FileNotFoundError, NotADirectoryError):
        return False


def _saved(step: Step, out_dir: Path, result: Any) -> tuple[bool, str | None]:
    """Whether ``result`` was written into ``out_dir``, and what its result file counts
    by in the output digest when not by its bytes (:func:`_json_counted`,
    :func:`_set_free_digest`, :func:`_with_classes`)."""
    marks = _SetMarks()
    try:
        path, classes = _written(out_dir, result, marks)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        warn_user(f"step {step.name!r}: its result cannot be pickled ({exc}), so it is not "
                  "cached; return plain data or write files to dagnb.current().out_dir")
        return False, None
    if path.name != RESULT_FILES[1]:
        return True, _json_counted(result, path)
    if not marks.used:  # (a result.pkl the step wrote, kept: read to look at it)
        marks.read(path)
    counted = _set_free_digest(result) if marks.seen else None
    if classes is None:  # (not pickled here: the step's own file, kept or written anew)
        classes = _classes_in(result)
    if classes:
        counted = _with_classes(counted or _file_digest(path), classes)
    return True, counted


def _written(out_dir: Path, result: Any, marks: _SetMarks
             ) -> tuple[Path, list[tuple[str, str]] | None]:
    """The file :func:`save_result` wrote ``result`` to in ``out_dir``, and the user
    classes its pickle holds, noted as it was written (None: not pickled here, JSON or
    a result file the step wrote itself)."""
    made: list[_ClassNoting] = []

    def noting(handle: BinaryIO) -> _ClassNoting:
        made.append(_ClassNoting(marks.writing_to(handle)))
        return made[-1]

    path = save_result(out_dir, result, pickler=noting)
    return path, made[0].user_classes() if made else None


def _file_digest(path: Path) -> str:
    """The digest of a file's bytes (as the pickle's, streamed into a hasher)."""
    hasher = new_hasher()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


# -- the user classes a result holds ------------------------------------------------
# Pickle names a class by reference: a step's result holding a Model pickles to the same
# bytes after an edit of Model.predict (or of the data it reads), so its output digest
# stayed, and a step calling ``load.predict(1)`` was served its old result. A pickled
# result counts the digests of the user classes of the objects it holds too (as an
# argument's key counts them: by their code and the data their methods read).

# What pickle calls to reduce an object of a type copyreg has no reducer for.
_REDUCE_EX = operator.methodcaller("__reduce_ex__", 5)


class _TypesMet(dict):  # type: ignore[type-arg]
    """A pickler's dispatch table that notes each type pickle reduces an object of (any
    object met first but None, bools, ints, floats, texts, bytes, exact dicts, lists,
    tuples and sets, and classes and functions, named): asked once a type, it then
    answers as pickle does without one (copyreg's reducer, else ``__reduce_ex__``), in
    C. A ``reducer_override`` is a call in Python for each such object: a list of
    200,000 datetimes pickled a third slower, one of numpy floats 15% slower."""

    def __init__(self) -> None:
        super().__init__()
        self.met: list[type] = []

    def __missing__(self, kind: type) -> Any:
        self.met.append(kind)
        if issubclass(kind, type):  # (a class of a metaclass: named, as without a table)
            raise KeyError(kind)
        found = self[kind] = copyreg.dispatch_table.get(kind, _REDUCE_EX)
        return found


class _ClassNoting(pickle.Pickler):
    """Pickles as ``pickle.Pickler(file, protocol=5)`` does (the same bytes), noting the
    types of the objects it reduces (:class:`_TypesMet`) and the module of each class
    or function it names (:func:`_dump_naming`): a class or function held itself
    (``{"kind": Model}``, ``{"f": helper}``) is named without a look at the table."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=5)
        self.dispatch_table = self.types_met = _TypesMet()
        self.modules_named: list[str] = []

    def dump(self, obj: Any) -> None:
        self.modules_named += _dump_naming(self, obj)

    def user_classes(self) -> list[tuple[str, str]]:
        """The user classes of the objects it reduced, and the user classes and functions
        it named besides them (looked for in its memo only then: see :func:`_named_apart`)."""
        met = self.types_met.met
        found = _user_classes(met)
        if _named_apart(self.modules_named, met):
            found = sorted({*found, *_held_by_name(self.memo.copy(), met)})
        return found


# The modules a pickle names classes and functions of. The C pickler imports the module of
# each global it names (once: then its memo) with the ``__import__`` of the builtins of the
# Python frame that called ``dump`` (PyImport_Import, CPython 3.10 to 3.13); _dump_naming
# calls it from a frame whose builtins note the names: a call in Python a name, never one
# an object (see _TypesMet), and no look through the memo (a list of 200,000 datetimes
# leaves 600,000 entries there: copied, longer than the pickling itself).

_NAMED = "__dagnb_named__"  # (the list of names, in the globals of the frame calling dump)


def _import_noting(name: str, globals: Mapping[str, Any] | None = None,
                   locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    named = None if globals is None else globals.get(_NAMED)
    if named is not None:
        named.append(name)
    return builtins.__import__(name, globals, locals, fromlist, level)


_NOTING_BUILTINS = {**vars(builtins), "__import__": _import_noting}


def _dumping(dump: Callable[[Any, Any], None], pickler: Any, obj: Any) -> None:
    """``dump(pickler, obj)``: its code runs with globals of its own (:func:`_dump_naming`)."""
    dump(pickler, obj)


def _dump_naming(pickler: pickle.Pickler, obj: Any) -> list[str]:
    """Pickle ``obj`` with ``pickler``; the module of each class or function it named."""
    named: list[str] = []
    run = types.FunctionType(_dumping.__code__, {
        "__builtins__": _NOTING_BUILTINS, "__name__": __name__, _NAMED: named})
    run(pickle.Pickler.dump, pickler, obj)
    return named


@functools.cache
def _names_noted() -> bool:
    """Whether :func:`_dump_naming` sees the names pickle writes (else each pickle's
    memo is looked through: what another Python's pickler names goes unseen)."""
    return __name__ in _dump_naming(pickle.Pickler(_Discard(), protocol=5), _Discard)


def _named_apart(modules: list[str], met: Iterable[type]) -> bool:
    """Whether a pickle named classes or functions of the user's code (``modules``: the
    module of each name it wrote) besides the classes of the objects it reduced through
    ``object.__reduce_ex__``, which names each (a pickle holding user classes' objects
    and nothing else of the user's: no look through its memo)."""
    if not _names_noted():
        return True
    users = set(filter(of_user_code, set(modules)))
    if not users:  # (the common case: Python's, numpy's, pandas' names only)
        return False
    named = sum(map(users.__contains__, modules))
    return named > sum(1 for kind in met if _names_its_class(kind) and kind.__module__ in users)


def _names_its_class(kind: type) -> bool:
    """Whether pickle names ``kind`` to rebuild an object of it: reduced by
    ``object.__reduce_ex__`` (NEWOBJ), not a reducer of its own or of copyreg's."""
    return (not issubclass(kind, type) and kind not in copyreg.dispatch_table
            and kind.__reduce_ex__ is object.__reduce_ex__
            and kind.__reduce__ is object.__reduce__)


_NAMED_KINDS = (type, types.FunctionType)  # (what pickle names, and classes of metaclasses)


def _held_by_name(memo: Mapping[int, tuple[int, Any]], met: Iterable[type]
                  ) -> list[tuple[str, str]]:
    """The user classes and functions among the objects a pickler's ``memo`` holds (each
    named in its pickle once, and kept there), sorted out in C (map, compress)."""
    kinds = {*_NAMED_KINDS, *(kind for kind in met if issubclass(kind, type))}
    objects = list(map(operator.itemgetter(1), memo.values()))
    return _user_classes(itertools.compress(objects, map(kinds.__contains__, map(type, objects))))


class _Discard:
    """A file object that keeps nothing written to it."""

    __slots__ = ()

    @staticmethod
    def write(data: Any) -> None:
        return None


def _classes_in(result: Any) -> list[tuple[str, str]]:
    """The user classes ``result``'s pickle holds, pickled again to find them (a small
    result kept inline, a result file the step wrote); none if it does not pickle."""
    pickler = _ClassNoting(_Discard())
    try:
        pickler.dump(result)
    except Exception:  # (a value loaded from a file the step wrote: by its bytes, as before)
        return []
    return pickler.user_classes()


def _user_classes(found: Iterable[Any]) -> list[tuple[str, str]]:
    """The classes and functions of the user's code among ``found`` (a library's and
    Python's count by name, in the pickle), each by name and digest, sorted."""
    counted = set()
    for obj in found:
        try:
            digest = _user_code_digest(obj)
        except Exception as exc:  # (one that cannot be fingerprinted)
            digest = _stand_in(obj, exc)
        if digest is not None:
            counted.add((f"{main_spelled(obj.__module__)}.{obj.__qualname__}", digest))
    return sorted(counted)


def _user_code_digest(obj: Any) -> str | None:
    """A class by its code and the data its methods read, as inside an argument; a
    function as one inside an argument counts (its code and the data it reads, now);
    None for a library's or Python's."""
    if isinstance(obj, type):
        return user_class_digest(obj)
    return value_digest(obj) if of_user_code(obj.__module__) else None


_SAID_UNHASHABLE: set[str] = set()


def _stand_in(obj: Any, exc: Exception) -> str:
    """What a class or function of the user's code that cannot be fingerprinted counts
    by: a new digest each time (said once a name). Its code and data cannot be told
    unchanged, so the steps reading a result holding it run again whenever the step
    returning it does: never served a result made with other code. (By its module
    file's bytes, an edit of the helpers of other files it calls, or of the data it
    reads, would go unseen; by its id, a class made again, reloaded, may have its old
    one's, and another process the same.)"""
    name = f"{main_spelled(obj.__module__)}.{obj.__qualname__}"
    if name not in _SAID_UNHASHABLE:
        _SAID_UNHASHABLE.add(name)
        kind = "class" if isinstance(obj, type) else "function"
        warn_user(f"{kind} {name}, in a step's result, cannot be fingerprinted "
                  f"({exception_line(exc)}): the steps reading that result run again each "
                  f"time its step runs; return plain data rather than {name} to have them "
                  "cached")
    return "unhashable-" + os.urandom(16).hex()


def _with_classes(digest: str, classes: Sequence[tuple[str, str]]) -> str:
    """What a pickled result counts by, ``digest`` being what its pickle counts by, when
    it holds objects of user classes (:func:`_user_classes`)."""
    return text_digest("\n".join([f"pickle {digest} with classes:",
                                  *(f"{name} {code}" for name, code in classes)]))

