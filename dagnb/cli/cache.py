"""``dagnb cache``: check, see, manage and share the cache from the command line.

::

    dagnb cache verify|list|stats [--cache-dir DIR]     (list, stats: [--step NAME])
    dagnb cache clear --step NAME | --older-than AGE | --all
    dagnb cache prune [--max-size SIZE] [--max-entries N] [--max-age AGE]
    dagnb cache push [URL] [--check] | pull [URL]

Each acts on a local cache folder (``--cache-dir``, default: the setting's): one named
that is not there, or that is not a dagnb cache, is refused in one line and nothing is
touched in it; a store URL is synced with push and pull. (:mod:`dagnb.cli` registers
this as its ``cache`` subcommand.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagnb import checks
from dagnb.errors import CacheError, ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from dagnb.cache import Store

__all__ = ["add_parser", "missing_folder", "run"]

_DIR_HELP = "cache folder (default: the setting)"


_WORKFLOW_HELP = ("only the entries saved by runs of the workflow of this name (its name: "
                  "field; the list's workflow column), again for more than one")


def add_parser(sub: Any) -> None:
    """Add ``cache`` and its actions to the ``dagnb`` parser's subparsers."""
    cache = sub.add_parser(
        "cache", help="check, list, clear, prune and sync the cache",
        description="Each action but push and pull works on a local cache folder (--cache-dir, "
                    "default: the setting's); one that is not a dagnb cache is refused. list "
                    "and stats read a store URL too (--cache-dir s3://bucket/prefix), from "
                    "its listing.")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("verify", help="re-hash every entry's files; set aside those that changed")
    listing = actions.add_parser("list", help="the entries as a table, by step then created")
    listing.add_argument("--step", default=None, metavar="NAME", help="only this step's entries")
    listing.add_argument("--workflow", action="append", default=None, metavar="NAME",
                         help=_WORKFLOW_HELP)
    stats = actions.add_parser("stats", help="per step: entries, hits recorded, size on disk")
    stats.add_argument("--step", default=None, metavar="NAME", help="only this step's row")
    clear = actions.add_parser("clear", help="remove entries: of a step, older than AGE, or all")
    clear.add_argument("--step", default=None, metavar="NAME", help="only this step's entries")
    clear.add_argument("--workflow", action="append", default=None, metavar="NAME",
                       help=_WORKFLOW_HELP + "; required with --step when that step's "
                            "entries are of several workflows")
    clear.add_argument("--older-than", default=None, metavar="AGE",
                       help="only entries created more than AGE ago (30m, 12h, 7d)")
    clear.add_argument("--all", action="store_true",
                       help="every entry (required when neither --step nor --older-than is given)")
    prune = actions.add_parser("prune", help="evict least recently used entries to a limit")
    prune.add_argument("--max-size", default=None, metavar="SIZE",
                       help="keep at most this size, with a unit, as stats prints it "
                            "(979B, 1.5K, 10M, 1G; KB, KiB, GB... too, any case; "
                            "1K = 1024 bytes; 500B: 500 bytes)")
    prune.add_argument("--max-entries", default=None, metavar="N", help="keep at most N entries")
    prune.add_argument("--max-age", default=None, metavar="AGE",
                       help="remove entries not used for AGE (30m, 12h, 7d)")
    for parser in actions.choices.values():
        parser.add_argument("--cache-dir", default=None, help=_DIR_HELP)
    for action, where in (("push", "to"), ("pull", "from")):
        sync = actions.add_parser(
            action, help=f"copy entries {where} a remote store (s3://bucket/prefix, "
                         "file:///path/to/folder, ...)")
        sync.add_argument("url", nargs="?", default=None,
                          help="the remote store (default: cache_directory when it is a URL)")
        sync.add_argument("--cache-dir", default=None,
                          help="the local cache folder (default: the setting's local folder)")
    actions.choices["push"].add_argument(
        "--check", action="store_true",
        help="also download and hash each file of the entries the store has (each once) "
             "and replace the entries changed there; without it, a file counts as there "
             "when its size is the one recorded")


def run(args: argparse.Namespace) -> int:
    """``dagnb cache ACTION``; its exit code."""
    return _ACTIONS[args.action](args)


def _verify(args: argparse.Namespace) -> int:
    """`dagnb cache verify`: what a hit checks by size, checked by content."""
    from dagnb.cache import local_folder, store_for
    from dagnb.cache.store import DamagedEntryWarning

    if _no_cache_here(args.cache_dir, "verify"):
        return 0
    # a folder it may not write (a read-only mount): checked all the same, nothing moved
    writable = os.access(local_folder(args.cache_dir), os.W_OK)
    store = store_for(args.cache_dir, read_only=not writable)
    done = "set aside" if writable else "left in place: the folder cannot be written"
    with warnings.catch_warnings():  # (each is one line below, not a warning's two)
        warnings.simplefilter("ignore", DamagedEntryWarning)
        entries = list(store.iter_entries())  # (damage a hit would see: set aside)
        changed = [entry for entry in entries if not entry.verify()]
        for entry in changed:  # (one replaced or removed meanwhile, a --refresh's or a
            # clear's, is no damage: the entry now at its key is left alone)
            store.quarantine(entry.step, entry.key, "its files no longer match their digest",
                             entry=entry)
    damaged = [f"damaged entry: {line}, {done}" for line in store.take_set_aside()]
    damaged += [f"damaged pack record: {record}" for record in store.damaged_records()]
    for line in damaged:
        print(line)
    print(f"verified {len(entries) - len(changed) + len(damaged)} cache entries in "
          f"{store.location}: "
          + (f"{len(damaged)} damaged, {done} (their steps run again)" if damaged
             else "all intact"))
    return 1 if damaged else 0


def _list(args: argparse.Namespace) -> int:
    """`dagnb cache list [--step NAME]`: one row per entry, by step then created; of a
    store URL, by step then stored (what its listing says: no file read)."""
    from dagnb.cache.clearing import held_step

    if args.cache_dir is not None and checks.is_url(args.cache_dir):
        if args.workflow is not None:  # (a store's listing is its file names: no record read)
            raise ConfigError("--workflow lists a local cache folder's entries; a store's "
                              "listing does not say their workflow: drop --workflow")
        return _list_store(args.cache_dir, args.step)
    store = _store(args, "list", read_only=True)
    if store is None:
        return 0
    # (a typo is refused, as clear refuses it; a Memory function's plain name is taken)
    step = None if args.step is None else held_step(store, args.step, otherwise="nothing to list",
                                                    known=_recorded_steps(store))
    # (no DataFrame: pandas' import alone took 0.5 s)
    rows = store.entry_rows(step, on_disk=True)
    if args.workflow is not None:
        wanted = workflows_meant(args.workflow, {row["workflow"] for row in rows},
                                 store.location, step, store)
        rows = [row for row in rows if row["workflow"] in wanted]
    if not rows:
        _say_no_entries(step)
        return 0
    table = _entries_table(rows, store.default_ttl)
    print(text_table(table))
    if any(cell.endswith("*") for cell in table["expires"]):  # (the table alone on stdout)
        print(f"* when the setting cache_ttl_seconds ({_duration(store.default_ttl)}) ends "
              "it, before the ttl it was saved with, unless its step or Memory function "
              "sets a ttl of its own (dagnb plan says)", file=sys.stderr)
    return 0


def _stats_of_store(url: str, step: str | None) -> int:
    """Per step of the store ``url``: its entries and when the newest was stored, from
    its listing (sizes and hits are the local folder's to say once pulled)."""
    from dagnb.cache import store_entries

    found = store_entries(url, step, "stats")
    if not found:
        _say_no_entries(step, url)
        return 0
    counts: dict[str, int] = {}
    newest: dict[str, float] = {}
    for name, _, when in found:
        counts[name] = counts.get(name, 0) + 1
        newest[name] = max(newest.get(name, 0.0), when or 0.0)
    print(text_table({"step": list(counts), "entries": list(counts.values()),
                      "newest": [_stored_at(newest[name] or None) for name in counts]}))
    print(f"{_entries(len(found))} in {url} (sizes and hits: dagnb cache pull {url}, then "
          "dagnb cache stats)")
    return 0


def _say_no_entries(step: str | None, where: object = None) -> None:
    """The line of a list or stats that found nothing: of which step, where."""
    print("no entries" + ("" if step is None else f" of step {step!r}")
          + ("" if where is None else f" in {where}"))


def _stored_at(when: float | None) -> str:
    """When an entry was stored, as ``cache list`` shows times; ``-`` when unknown."""
    return "-" if when is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _list_store(url: str, step: str | None) -> int:
    """The entries of the store ``url``: step, key and when each was stored (pushed, or
    saved by a run on it), from its listing; sizes and hits are the local folder's to
    say once pulled."""
    from dagnb.cache import store_entries

    found = store_entries(url, step)
    if not found:
        _say_no_entries(step, url)
        return 0
    print(text_table({
        "step": [name for name, _, _ in found], "key": [key[:12] for _, key, _ in found],
        "stored": [_stored_at(when) for _, _, when in found]}))
    print(f"{_entries(len(found))} in {url} (dagnb cache pull {url} copies them here)",
          file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    """`dagnb cache stats`: per step, its entries, the hits recorded on them, the bytes
    they take on disk (what ``prune --max-size`` counts); then what else the folder
    holds."""
    from dagnb.cache.clearing import held_step

    if args.cache_dir is not None and checks.is_url(args.cache_dir):
        return _stats_of_store(args.cache_dir, args.step)
    store = _store(args, "show", read_only=True)
    if store is None:
        return 0
    rows, step = store.stats_by_step(), None
    if args.step is not None:  # (as list's --step: a typo refused, a plain name taken)
        step = held_step(store, args.step, otherwise="nothing to show",
                         known=_recorded_steps(store))
        rows = {step: rows[step]} if step in rows else {}
    if rows:
        print(stats_table(rows))
        print(f"{_entries(sum(row['entries'] for row in rows.values()))}, "
              f"{_size(sum(row['bytes'] for row in rows.values()))} in {store.location}")
    else:  # (what else the folder holds is said all the same: it may take megabytes)
        _say_no_entries(step, store.location)
    outside = _outside_entries(store) if args.step is None else ""  # (the folder's)
    if outside:
        print(f"not counted: {outside}")
    return 0


def _outside_entries(store: Store) -> str:
    """What the folder holds beyond its entries: removed records not yet compacted
    away, the run folders kept for `dagnb history` (counted, not walked: one holds a
    folder per step), the damaged entries set aside and what a killed compaction left
    (both freed by a prune)."""
    outside = store.outside_entries()
    parts = []
    if outside.dead_pack_bytes:
        parts.append(f"{_size(outside.dead_pack_bytes)} of removed records in .packs, "
                     "awaiting compaction")
    runs = outside.run_folders
    if runs:
        parts.append(f"{runs} run folder{'s' if runs != 1 else ''} in .runs (the last "
                     "runs' step folders)")
    if outside.damaged:
        parts.append(f"{_damaged(outside.damaged)} set aside in .damaged, "
                     f"{_size(outside.damaged_bytes)} (never served; prune frees them)")
    if outside.leftover_bytes:
        parts.append(f"{_size(outside.leftover_bytes)} an interrupted compaction left in "
                     ".packs (prune frees it)")
    return "; ".join(parts)


def _damaged(count: int) -> str:
    return f"{count} damaged entr{'y' if count == 1 else 'ies'}"


def stats_table(rows: Mapping[str, Mapping[str, int]]) -> str:
    """Entries, hits and size by step, laid out as pandas' ``to_string()`` lays out
    those columns of :meth:`Store.stats`, without pandas, whose import was half of the
    command's 0.6 s: the step names left-aligned under a line naming them; each column
    right-aligned to its widest cell, one space between, a space before each cell and
    before a number column's name."""
    steps = sorted(rows)
    table = {"entries": [rows[step]["entries"] for step in steps],
             "hits": [rows[step]["hits"] for step in steps],
             "size": [_size(rows[step]["bytes"]) for step in steps]}
    named = max(len("step"), *map(len, steps))
    lines = [" " * named, "step".ljust(named), *(step.ljust(named) for step in steps)]
    for name, cells in table.items():
        column = [f" {name}" if all(type(cell) is int for cell in cells) else name, "",
                  *(f" {cell}" for cell in cells)]
        width = max(map(len, column))
        lines = [f"{line} {cell:>{width}}" for line, cell in zip(lines, column, strict=True)]
    return "\n".join(lines)


def _clear(args: argparse.Namespace) -> int:
    """`dagnb cache clear`: of a step, older than AGE, or (``--all``) every entry."""
    from dagnb.cache.clearing import check_clear_options, check_clear_scope, kept_in_store

    _refuse_no_age(args.older_than, "--older-than")
    older = check_clear_options(args.step, args.older_than, args.all)
    if args.all and args.workflow is not None:  # (a workflow's entries are not all)
        raise ConfigError("--all clears every entry; give it alone, or --workflow NAME "
                          "without it")
    store = _store(args, "clear")
    if store is None:
        return 0
    scoped = args.all or args.workflow is not None  # (--workflow alone: its entries)
    step = check_clear_scope(store, "dagnb cache clear", args.step, older, scoped,
                             plain_names=True,
                             known=() if args.step is None else _recorded_steps(store))
    workflows = _workflows_to_clear(store, step, args.workflow)
    removed = store.clear(step, older, workflows)
    if not removed and step is not None and older is None:  # (cleared before: rm -f's way)
        print(f"no cache entry of step {step!r} in {store.location}: nothing to remove")
        return 0
    print(f"removed {_entries(removed)}"
          + ("" if step is None else f" of step {step!r}")
          + ("" if workflows is None else f" of workflow {' and '.join(map(repr, workflows))}")
          + ("" if older is None else f" created more than {args.older_than} ago")
          + f" from {store.location}" + kept_in_store(args.cache_dir, _downloaded_again(step)))
    return 0


def _workflows_to_clear(store: Store, step: str | None, given: list[str] | None
                        ) -> list[str] | None:
    """The workflows whose entries a clear takes (None: any). A step name recurs across
    a project's workflows (extract, report): a clear of one whose entries are of
    several, none named, is refused rather than taking the others' too."""
    if given is None and step is None:
        return None
    held = {entry.workflow for entry in store.iter_entries(step)}
    if given is not None:
        return sorted(workflows_meant(given, held, store.location, step, store))
    named = sorted(name for name in held if name is not None)
    if len(named) < 2:
        return None
    options = " ".join(f"--workflow {name}" for name in named)
    raise ConfigError(f"--step {step!r}: the cache in {str(store.location)!r} holds its "
                      f"entries of {len(named)} workflows ({', '.join(named)}); add the "
                      f"workflow's, e.g. --workflow {named[0]}, or {options} for all")


def workflows_meant(given: list[str], held: set[str | None], where: object,
                    step: str | None = None, store: Store | None = None) -> set[str]:
    """The workflow names given, each one the entries listed are of; a name of none is
    refused, naming those there are (a typo, or a file's name for its name: field). With
    ``step``, a workflow whose runs stored entries of other steps only is said so."""
    unknown = [name for name in given if name not in held]
    if unknown:
        known = sorted(name for name in held if name is not None)
        if step is not None and store is not None and known and unknown[0] in {
                entry.workflow for entry in store.iter_entries(None)}:
            raise ConfigError(
                f"--workflow {unknown[0]!r}: its runs stored no entry of step {step!r} in "
                f"{str(where)!r}; those there are of {', '.join(map(repr, known))} (a step "
                "alike in two workflows is stored once, by the first run of it, and served "
                f"to the other): --workflow {known[0]} --step {step} names them")
        there = (f"its entries are of {', '.join(map(repr, known))}" if known
                 else "none of its entries was saved by a workflow's run")
        raise ConfigError(f"--workflow {unknown[0]!r}: no entry of a workflow of that name "
                          f"in {str(where)!r}; {there} (a workflow's name is its name: "
                          "field, or its file's name without .yml)")
    return set(given)


def _recorded_steps(store: Store) -> set[str]:
    """The steps the runs recorded in the store's folder had: a step the cache holds no
    entry of now (cleared before) is no typo."""
    from dagnb.runtime.history import recorded_runs

    states = (record.get("states") for record in recorded_runs(store.location)[0])
    return {name for found in states if isinstance(found, dict) for name in found}


def _downloaded_again(step: str | None) -> str:
    """What becomes of a store's entries a clear left there: this command's process
    ends, so the next run downloads them; a refresh replaces a bad one there."""
    named = step if step is not None and "." not in step else "NAME"  # (not a function's)
    return (", and a run downloads them again: to replace a bad one there, dagnb run "
            f"WORKFLOW --refresh-step {named}")


def _age(given: str | None, option: str) -> float | None:
    """``--max-age``/``--older-than`` in seconds (None: not given), checked."""
    from dagnb.cache.clearing import age_option

    _refuse_no_age(given, option)
    return age_option(given, option)


def _refuse_no_age(given: str | None, option: str) -> None:
    """Refuse an age that is no duration at all, saying what these options take: a
    number with a unit (a bare number, seconds elsewhere, is refused here, with its own
    message, by ``age_option``)."""
    if given is not None:
        checks.parse_duration(given, what=option, error=ConfigError, forms=checks.AGE_FORMS)


def _prune(args: argparse.Namespace) -> int:
    """`dagnb cache prune`: least recently used entries evicted until every limit holds."""
    from dagnb.cache.eviction import parse_size

    _refuse_bare_size(args.max_size)
    limits = (parse_size(args.max_size, what="--max-size", error=ConfigError),
              _count(args.max_entries, "--max-entries"), _age(args.max_age, "--max-age"))
    if limits == (None, None, None):
        raise ConfigError("dagnb cache prune needs a limit: --max-size SIZE (such as 1G), "
                          "--max-entries N or --max-age AGE (such as 30d)")
    store = _store(args, "prune")
    if store is None:
        return 0
    removed = store.reduce_size(*limits)
    left = store.disk_bytes(store.iter_entries())
    spared = store.spared_for_live_runs
    kept = ("" if not spared else f" ({_entries(spared)} over the limits kept: a run going "
            "on now uses them)")
    damaged = store.damaged_removed
    freed = "" if not damaged else f" and {_damaged(damaged)} set aside in .damaged"
    print(f"removed {_entries(removed)}{freed} from {store.location}; "
          f"{_entries(len(left))} left, {_size(sum(left))}{kept}"
          + _pruned_in_store(args.cache_dir))
    return 0


def _pruned_in_store(given: str | None) -> str:
    """What follows a prune's line when the cache is a store URL (``given`` names a
    folder, or None: the setting): its local tier alone was pruned (a user took the
    store for pruned too); the store's entries stay, and its own rules remove them."""
    from dagnb.cache.clearing import kept_in_store
    from dagnb.config import settings

    url = str(settings().cache_directory) if given is None else given
    removed = ("they stay in its folder until deleted there" if url.lower().startswith("file:")
               else "the bucket's lifecycle rules remove them there")
    return kept_in_store(given, f", which another machine downloads again; {removed}, "
                                "not a prune")


def _refuse_bare_size(given: str | None) -> None:
    """Refuse a --max-size of a bare number: read as bytes, ``--max-size 500`` (500 MB
    meant) emptied the whole cache, where --max-age and --older-than refuse one.
    (The Python API's ``bytes_limit`` keeps joblib's ints as bytes.)"""
    number = None if given is None else given.strip()
    if number and number.replace(".", "", 1).isdigit() and number.isascii():
        raise ConfigError(f"--max-size {given} has no unit; write {number}MB or "
                          f"{number}GB, or {number}B for bytes")


def _cache_sync(args: argparse.Namespace) -> int:
    """`dagnb cache push|pull [URL]`: copy entries between the local cache and a store."""
    from dagnb.cache import sync

    _refuse_memory_store(args.action, args.url)
    if args.action == "push":  # (a typo made an empty folder, pushed it, and exited 0)
        _refuse_missing_source(args.cache_dir)
    done = sync(args.action, args.url, args.cache_dir, check=getattr(args, "check", False))
    print(done.line(args.action))
    if (unanswered := done.unanswered_line()) is not None:
        print(f"dagnb: {unanswered}", file=sys.stderr)
    return 1 if done.unusable or done.damaged or unanswered else 0


def _refuse_missing_source(given: str | None) -> None:
    """ConfigError for a ``--cache-dir`` to push from that names no folder; a URL is
    left to :func:`dagnb.cache.sync`, whose error says what to name."""
    from dagnb.cache import local_folder

    if given is not None and not checks.is_url(given):
        folder = local_folder(given)
        if not folder.exists():
            raise missing_folder(given, folder)


def _refuse_memory_store(action: str, url: str | None) -> None:
    """A ``memory://`` store lives as long as the process: from the command line, what
    push copies there is gone as it exits, and pull finds nothing."""
    from dagnb.config import settings

    given = str(settings().cache_directory if url is None else url)
    if given.lower().startswith("memory://"):
        raise ConfigError(f"dagnb cache {action} {given}: a memory:// store is gone when the "
                          "command exits; name one that lasts (file:///path/to/folder, "
                          "s3://bucket/prefix)")


_ACTIONS = {"verify": _verify, "list": _list, "stats": _stats, "clear": _clear,
            "prune": _prune, "push": _cache_sync, "pull": _cache_sync}


def _store(args: argparse.Namespace, verb: str, *, read_only: bool = False) -> Store | None:
    """The store of the local cache folder ``--cache-dir`` names (or the setting's), or
    None when the setting's is not made yet (said in a line)."""
    from dagnb.cache import local_folder, store_for

    if _no_cache_here(args.cache_dir, args.action, verb):
        return None
    folder = local_folder(args.cache_dir)
    writable = os.access(folder, os.W_OK)
    if not read_only and not writable:
        raise CacheError(f"cannot {verb} the cache in {str(folder)!r}: the folder cannot be "
                         "written (a read-only mount, or no write permission); run it as a "
                         "user who may write there, on a writable mount")
    if not read_only:
        return store_for(folder)
    return _listing_store(folder, f"dagnb cache {args.action}" if writable else None)


def _listing_store(folder: Path, command: str | None) -> Store:
    """A store of this command's own that reads ``folder`` and writes nothing there (a
    listing moves no damaged entry aside): ``command`` is why, in the warning of each
    damaged entry it leaves in place (None: the folder cannot be written)."""
    from dagnb.cache import Store
    from dagnb.config import settings

    store = Store(folder, read_only=True)
    store.default_ttl = settings().cache_ttl_seconds  # (as the process-wide store's)
    store.read_only_reason = ("the folder cannot be written" if command is None else
                              f"{command} moves nothing; dagnb cache verify sets it aside")
    return store


def _no_cache_here(given: str | None, action: str, verb: str | None = None) -> bool:
    """Whether there is no cache at the folder named (or configured): True, said in a
    line, for the configured one not made yet; ConfigError for a folder named that is
    not there, or not a dagnb cache (its folders are not entries to set aside or
    remove), and for a store URL (its entries are copied with pull, then seen here)."""
    from dagnb.cache import is_cache_folder, local_folder

    if given is not None and checks.is_url(given):  # (its local tier alone would be seen)
        raise ConfigError(f"--cache-dir {given!r}: dagnb cache {action} works on a cache "
                          f"folder, not a store URL; {_INSTEAD.get(action, _INSTEAD[''])}")
    folder = local_folder(given)
    if not folder.exists():
        if given is None:
            print(f"no cache at {str(folder)!r} yet: nothing to {verb or action}")
            return True
        raise missing_folder(given, folder)
    if not is_cache_folder(folder):
        raise ConfigError(f"--cache-dir {given or str(folder)!r}: {str(folder)!r} is not a dagnb "
                          "cache folder (none of .packs, .scratch, .locks in it); name the "
                          "folder dagnb run caches in")
    return False


_INSTEAD = {"verify": "pull it (dagnb cache pull URL) and verify that",
            "": "name its local folder (the setting cache_local_directory)"}


def _count(given: str | None, option: str) -> int | None:
    if given is None:
        return None
    return checks.checked(checks.count, given, option, ConfigError, sep=" ", text=True)


def _entries(count: int) -> str:
    return f"{count} cache entry" if count == 1 else f"{count} cache entries"


def _size(count: int) -> str:
    """Bytes as ``ls -h`` shows them, in 1024s (``512B``, ``1.5K``, ``12M``): what
    --max-size reads (:func:`dagnb.cache.eviction.parse_size`)."""
    size = float(count)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            break
        size /= 1024
    return f"{count}B" if unit == "B" else f"{size:.1f}{unit}" if size < 10 else f"{size:.0f}{unit}"


def _entries_table(rows: list[dict[str, Any]], ttl: float | None = None
                   ) -> dict[str, list[str]]:
    """The columns of :meth:`Store.entries` that fit a terminal, as text: the size an
    entry takes on disk (what stats and ``prune --max-size`` count), and when it expires
    (``ttl``: the setting ``cache_ttl_seconds``, the oldest entry served of a step that
    sets no ttl, marked ``*`` where it ends an entry sooner than its own)."""
    return {
        "step": [row["step"] for row in rows], "key": [row["key"] for row in rows],
        "size": [_size(row["disk_bytes"]) for row in rows],
        "created": [_time(row["created"], "-") for row in rows],
        "last_used": [_time(row["last_used"], "-") for row in rows],
        "expires": [_expires(row, ttl) for row in rows],
        # (of several workflows only: a step name may recur across them)
        **({"workflow": [row.get("workflow") or "-" for row in rows]}
           if len({row.get("workflow") for row in rows}) > 1 else {}),
    }


def _expires(row: Mapping[str, Any], ttl: float | None) -> str:
    """When an entry stops being served: the expiry it was saved with, or, marked
    ``*``, its creation plus ``ttl`` when that comes first (a ``plan`` of a step with
    no ttl of its own calls it expired then)."""
    saved, created = row["expires"], row["created"]
    ttl = checks.seconds_to_live(ttl)  # ("never": none)
    if ttl is not None and isinstance(created, (int, float)) and (
            saved is None or created + ttl < saved):
        return f"{_time(created + ttl, 'never')}*"
    return _time(saved, "never")


def _duration(seconds: float | None) -> str:
    """Seconds as the largest whole unit that fits (``7d``, ``12h``, ``90s``)."""
    if seconds is None:
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def text_table(table: Mapping[str, Sequence[object]]) -> str:
    """Columns laid out as pandas' ``to_string(index=False)`` lays them out (each cell as
    text, a tab or line break written as its escape, each column right-aligned to its
    widest cell, one space between), without pandas: with its import and its formatting
    of each cell, ``dagnb cache list`` of 20,000 entries took 1.8 s, without 0.9 s. A
    column of whole numbers has its name one space further from the column before, as
    pandas gives a numeric column's name a leading space."""
    columns = [[f" {name}" if all(isinstance(cell, int) for cell in cells) else name,
                *(str(cell).translate(_ESCAPED) for cell in cells)]
               for name, cells in table.items()]
    widths = [max(map(len, column)) for column in columns]
    return "\n".join(" ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
                     for row in zip(*columns, strict=True))


_ESCAPED = str.maketrans({"\t": "\\t", "\r": "\\r", "\n": "\\n"})  # (as pandas shows them)


def _time(seconds: float | None, missing: str) -> str:
    """A time to the second, in the machine's zone; ``missing`` where there is none (or
    it is 1970's: last used 0, never hit)."""
    if seconds is None or seconds != seconds:  # (None or NaN)
        return missing
    try:
        local = time.localtime(seconds)
    except (OverflowError, OSError, ValueError):  # (past what the platform's clock holds)
        return "?"
    return missing if local.tm_year <= 1970 else time.strftime("%Y-%m-%d %H:%M:%S", local)


def missing_folder(given: str, folder: Path) -> ConfigError:
    """The error of a ``--cache-dir`` naming no folder (a typo: not "no run yet")."""
    return ConfigError(f"--cache-dir {given!r}: there is no folder {str(folder)!r}; name the "
                       "folder dagnb run caches in (the setting cache_directory)")
