"""Why a step misses the cache, in sentences.

The new key's components are compared one by one with those stored in the step's
entry closest to it (the fewest components that differ; the newest of those that tie):
the entry this step would have hit but for what changed. The newest entry alone could
be another workflow's step of the same name, sharing the cache folder, or the step
run with other params: its differences would not be this step's. A store URL's local
tier with no entry of the step (a new machine's) has it compared with the store's
newest entries of it instead, read by their ``meta.json`` alone. Each difference
becomes a sentence ("image changed python:3.11 → python:3.12", "input data/raw.csv
changed", "code changed" with a line diff,
"notebook variable `params` changed: {'alpha': 0.1} → {'alpha': 0.5}", "host
variable REGION changed: eu → ap" of a shell step run on this machine, "global
`THRESHOLD` of steps.py changed: 3 → 4" for a module's, where the key says whose
globals its ``var:`` names are: see :data:`~dagnb.cache.keys.GLOBALS_OF`). Only
digests and the descriptions in ``StepKey.describe`` are used, and those never hold a
secret value (secrets count by name).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dagnb.cache.entry import _parse_meta
from dagnb.cache.images import moved
from dagnb.cache.keys import (
    GLOBALS_OF,
    HOST_VARIABLE,
    MOUNT_FILES,
    NOT_SHOWN,
    STARTED_IN,
    StepKey,
    variable_words,
)
from dagnb.cache.remote import RemoteBackend, newer_format_words
from dagnb.cache.store import Entry, GlancedEntry, Store
from dagnb.checks import short_repr

__all__ = ["Change", "explain", "explain_changes", "explain_frame", "without_diff"]

# where a reason's code or command diff starts (see _code_sentence)
DIFF_START = "\n--- cached\n+++ now\n"


@dataclasses.dataclass(frozen=True)
class Change:
    """One difference between a key and the closest entry (one row of explain_frame)."""

    component: str
    change: str  # "changed", "added", "removed", "cached", "expired", "missing", "damaged"
    before: str
    after: str
    message: str


def explain(store: Store, step_name: str, key: StepKey,
            mask: Callable[[str], str] | None = None,
            max_age: float | None = None, workflow: str | None = None) -> list[str]:
    """Sentences saying why ``key`` is (or is not) cached for ``step_name``.

    Parameters
    ----------
    store
        Where to look; nothing is recorded or removed.
    step_name, key
        The step and its new key (from :func:`~dagnb.cache.step_key`).
    mask
        Applied to each described value before it goes into a sentence (the
        secrets' values become ``***``); the sentences' words and names are left alone.
    max_age
        The ttl the step has now (seconds): an entry older than that has expired.
    workflow
        The name of the step's graph: its entries are compared with first.

    Returns
    -------
    list of str
        ``["entry found: it is cached"]``, ``["no entry yet for step 'x'"]``,
        ``["cache entry x/… is damaged (what is wrong): it will run again"]``, or one
        sentence per changed component; "code changed" carries a unified diff of the
        normalized source on the following lines of the same string.
    """
    return [change.message
            for change in explain_changes(store, step_name, key, mask, max_age, workflow)]


def explain_frame(store: Store, step_name: str, key: StepKey) -> Any:
    """:func:`explain` as a DataFrame: component, change, before, after, message."""
    import pandas as pd

    rows = [dataclasses.asdict(c) for c in explain_changes(store, step_name, key)]
    return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(Change)])


def explain_changes(store: Store, step_name: str, key: StepKey,
                    mask: Callable[[str], str] | None = None,
                    max_age: float | None = None,
                    workflow: str | None = None) -> list[Change]:
    """The differences as :class:`Change` records (``mask``, ``max_age``, ``workflow``:
    see :func:`explain`)."""
    exact = store.peek(step_name, key, metadata_only=True)  # (a store's: no download)
    if exact is not None:
        if exact.expired(store.clock(), max_age):
            return [_status("expired", f"entry {key.short} expired: it will run again")]
        return [_status("cached", "entry found: it is cached")]
    unreached = store.backend.unreached()
    if unreached is not None:  # (no answer is not "no entry", nor is the local tier's closest)
        return [_unanswered(unreached, step_name)]
    damage = _damage_at(store, step_name, key)
    if damage is not None:  # (nothing changed: an older entry's differences are not why)
        return [_status("damaged", f"cache entry {step_name}/{key.short} is damaged "
                        f"({damage}): it will run again")]
    newer = _newer_at(store, step_name, key)
    if newer is not None:  # (a miss here, yet no "no entry": upgrading serves it)
        return [_status("missing", f"the store's entry {step_name}/{key.short} "
                        f"{newer_format_words(newer)}: it will run again; upgrade dagnb "
                        "to use it")]
    closest = _closest(store, step_name, key, workflow)
    if closest is None and isinstance(store.backend, RemoteBackend):
        # (a new machine's tier: the store's entries are this step's history)
        found = _closest_in_store(store.backend, step_name, key, workflow,
                                  store.clock(), max_age)
        if isinstance(found, Change):
            return [found]
        closest = found
    if closest is None:
        return [_status("missing", f"no entry yet for step {step_name!r}")]
    changes = _compare(closest, key, mask or _unmasked)
    if not changes:  # same components, other digest: a different hash algorithm
        return [_status("changed", "the key changed but no component did (hash algorithm?)")]
    return changes


def _closest(store: Store, step_name: str, key: StepKey,
             workflow: str | None = None) -> Entry | None:
    """The entry of ``step_name`` (expired ones too) whose components differ from the
    key's in the fewest places, among those of ``workflow`` when given (another
    workflow's step of that name is another step: none of its own is no entry yet);
    the newest of those that tie."""
    return _nearest(store.iter_entries(step_name), key, workflow)


def _nearest(entries: Iterable[Entry], key: StepKey, workflow: str | None) -> Entry | None:
    """Of ``entries``, :func:`_closest`'s choice."""
    if workflow:  # (one with no provenance, saved before dagnb kept it, may be its own)
        entries = (entry for entry in entries if _workflow_of(entry) in (workflow, None))
    return min(entries, default=None,
               key=lambda entry: (_distance(entry.meta.get("components", {}),
                                            key.components), -entry.created))


STORE_ENTRIES_COMPARED = 5  # the newest of a step's entries in a store that a miss
# is compared with when the local tier holds none: a manifest and a meta.json each


def _closest_in_store(backend: RemoteBackend, step_name: str, key: StepKey,
                      workflow: str | None, now: float, max_age: float | None
                      ) -> Entry | Change | None:
    """:func:`_closest` among the store's newest entries of the step (by their
    metadata: no output downloaded), or what is to be said instead: the store could
    not be asked, or holds this very key but will not serve it (expired, cleared here,
    found incomplete: nothing changed, so an older entry's differences are not why)."""
    found = backend.glance_newest(step_name, STORE_ENTRIES_COMPARED)
    unreached = backend.unreached()
    if found is None and unreached is not None:
        return _unanswered(unreached, step_name)
    entries = []
    for stored_key, item, served in found or ():
        meta, problem = _parse_meta(item.meta, step_name, stored_key)
        if problem is not None:
            continue
        entry = GlancedEntry(step_name, stored_key, item.path, meta, item.version)
        if stored_key == key.digest:
            return _unserved(entry, key, served, now, max_age)
        entries.append(entry)
    return _nearest(entries, key, workflow)


def _unserved(entry: Entry, key: StepKey, served: bool, now: float,
              max_age: float | None) -> Change:
    """Why the store's entry at the key itself, which the exact lookup passed by, is a
    miss."""
    if entry.expired(now, max_age):
        return _status("expired", f"entry {key.short} expired: it will run again")
    why = ("cleared, set aside or found incomplete here" if not served
           else "a file of it is missing there")
    return _status("missing", f"the store's entry {entry.step}/{key.short} is not served "
                   f"({why}): it will run again")


def _unanswered(unreached: str, step_name: str) -> Change:
    """The store did not answer (``unreached`` says how): no entry is no "no entry"."""
    return _status("missing", f"{unreached}: the entry of step {step_name!r} may be "
                   "there; try again once it is reachable")


def _damage_at(store: Store, step_name: str, key: StepKey) -> str | None:
    """What the store found wrong with the entry at ``key`` (the peek that missed, or a
    run's lookup before it, found it damaged: a read-only store leaves it in place, a
    writable one sets it aside; a pack record that fails its check stays a miss where it
    is; a store URL's copy whose ``meta.json`` does not match its digest, seen by its
    metadata alone), or None: no entry there.

    The store's list of entries found damaged is taken (emptied): each was reported
    when found, and a read-only store's grows at each look."""
    where = f"{step_name}/{key.digest[:12]} ("
    found = [line for line in store.take_set_aside() if line.startswith(where)]
    if found:
        return found[-1][len(where):].removesuffix(")")
    pack = store.damaged_record(step_name, key.digest)
    if pack is not None:
        return f"its record in pack {pack!r} fails its check"
    backend = store.backend
    if isinstance(backend, RemoteBackend) and backend.damaged_in_store(step_name, key.digest):
        return "a file of the store's copy does not match its digest"
    return None


def _newer_at(store: Store, step_name: str, key: StepKey) -> int | None:
    """The manifest format of the store URL's entry at ``key`` if a newer dagnb wrote it
    (seen by the peek that missed), or None."""
    backend = store.backend
    if not isinstance(backend, RemoteBackend):
        return None
    return backend.remote.written_by_newer(step_name, key.digest)


def _workflow_of(entry: Entry) -> str | None:
    provenance = entry.meta.get("provenance")
    return provenance.get("workflow") if isinstance(provenance, Mapping) else None


def _distance(old: Mapping[str, str], new: Mapping[str, str]) -> int:
    """How many components differ (changed, added or removed)."""
    if not isinstance(old, Mapping):  # (a damaged entry's: as far as can be)
        return len(new) + 1
    return sum(old.get(name) != new.get(name) for name in old.keys() | new.keys())


def _status(change: str, message: str) -> Change:
    return Change("", change, "", "", message)


def _unmasked(text: str) -> str:
    return text


def _compare(entry: Entry, key: StepKey, mask: Callable[[str], str]) -> list[Change]:
    old: Mapping[str, str] = entry.meta.get("components", {})
    old_text: Mapping[str, str] = entry.meta.get("describe", {})
    home = key.describe.get(GLOBALS_OF) or old_text.get(GLOBALS_OF)  # (the code's now)
    changes = []
    for name in sorted(set(old) | set(key.components), key=_order):
        before, after = old.get(name), key.components.get(name)
        if before == after:
            continue
        change = "added" if before is None else "removed" if after is None else "changed"
        shown_before, shown_after = mask(old_text.get(name, "")), mask(key.describe.get(name, ""))
        message = _sentence(name, change, shown_before, shown_after, home)
        if change == "changed" and name.startswith("mount:"):
            listed = f"{MOUNT_FILES}:{name}"
            message += mask(_files_changed(old_text.get(listed), key.describe.get(listed)))
        changes.append(Change(name, change, shown_before, shown_after, message))
    return changes


_ORDER = ("format", "cache_version", "kind", "command", "code", "var", "key_fn", "runs_in",
          STARTED_IN, "image", "default_image", "env", HOST_VARIABLE, "secrets", "workdir",
          "params", "services", "cache_volumes", "mount", "upstream", "arg")


def _order(name: str) -> tuple[int, str]:
    head = name.split(":", 1)[0]
    return (_ORDER.index(head) if head in _ORDER else len(_ORDER), name)


def _sentence(name: str, change: str, before: str, after: str,
              home: str | None = None) -> str:
    head, _, detail = name.partition(":")
    if head == "mount":
        return f"input {detail} {change}"
    if head == "upstream":
        if change == "changed":
            return f"upstream {detail} produced different output"
        return f"upstream {detail} {change}"
    if head == "arg":
        return f"argument {detail} {change}"
    if head == "code":
        return _code_sentence(before, after)
    if head == "command" and change == "changed":
        if before.splitlines() == after.splitlines() or before.strip() == after.strip():
            return f"command changed, {_whitespace_changed(before, after)}"  # (no diff)
        if "\n" in before.strip() + after.strip():
            return _code_sentence(before, after, "command changed")  # (a script: line by line)
        # one line each, less a cell's last newline: the sentence stays on one line, which
        # fail-on-miss and plan's reason column show alone
        return f"command changed {before.strip()} → {after.strip()}"
    if head == "var":
        return _variable_sentence(detail, change, before, after, home)
    if head == HOST_VARIABLE:
        return _host_variable_sentence(detail, change, before, after)
    if head == "env":
        changed = ", ".join(_changed_names(before, after)) or _hidden_names(after)
        return f"env changed ({changed or '?'})"
    if head == "secrets":
        return f"secret names changed: {_names(before)} → {_names(after)}"
    if head == "params":
        return f"params changed: {_as_python(before)} → {_as_python(after)}"
    if head == "format":
        return "the cache format changed (entries of older dagnb versions do not count)"
    if head == "key_fn":
        return f"key_fn value changed {before} → {after}"
    if head == "cache_version":
        return f"cache_version changed {_as_python(before)} → {_as_python(after)}"
    if head == "runs_in":  # a result made on the host is not one made in a container
        return ("it ran on this machine; this run runs it in a container" if change == "added"
                else "it ran in a container; this run runs it on this machine")
    if head == STARTED_IN:
        return _started_in_sentence(change, before, after)
    if head == "default_image":  # (absent: dagnb's own, python:3.12-slim)
        return (f"the executor's default image changed: {before or 'dagnb’s default'} → "
                f"{after or 'dagnb’s default'}")
    if head == "image" and (sentence := moved(before, after)):  # a pinned tag moved
        return sentence
    return f"{head} changed {before or '(none)'} → {after or '(none)'}"


NAMED_FILES = 5  # a folder's changed files named in its sentence; the rest are counted


def _files_changed(before: Any, after: Any) -> str:
    """What follows ``input data changed``: ``: b.txt changed, new.txt added, a.txt
    removed`` (the first :data:`NAMED_FILES`, then ``and 3 more``) from the two listings
    of the folder (keys' ``_files_listing``); ``(250 files, 240 before; too many to name
    which)`` of one too big to list; nothing of an entry made before dagnb kept them, nor
    when only what the listings leave out changed (an empty folder, an exec bit)."""
    old, new = _load(before) if type(before) is str else None, (
        _load(after) if type(after) is str else None)
    if type(old) is dict and type(new) is dict:
        names = _changed_files(old, new)
        shown = ", ".join(names[:NAMED_FILES])
        more = len(names) - NAMED_FILES
        return f": {shown}{f', and {more} more' if more > 0 else ''}" if names else ""
    counts = [len(listing) if type(listing) is dict else listing for listing in (old, new)]
    if not all(type(count) is int for count in counts):
        return ""
    was, now = counts
    return f" ({now:,} files{f', {was:,} before' if was != now else ''}; too many to name which)"


def _changed_files(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``name changed``, then ``name added``, then ``name removed``, each sorted."""
    changed = sorted(name for name in old.keys() & new.keys() if old[name] != new[name])
    return [*(f"{name} changed" for name in changed),
            *(f"{name} added" for name in sorted(new.keys() - old.keys())),
            *(f"{name} removed" for name in sorted(old.keys() - new.keys()))]


def _variable_sentence(name: str, change: str, before: str, after: str,
                       home: str | None = None) -> str:
    """``notebook variable `params` changed: {'alpha': 0.1} → {'alpha': 0.5}``; a
    global of the module ``home`` names (a workflow's ``steps.py``) is ``global
    `THRESHOLD` of steps.py``, another module's (``helpers.FACTOR``) a ``variable``."""
    sentence = f"{variable_words(name, home)} {change}"
    if change == "changed" and before != after and not before.startswith("<"):
        sentence += f": {before} → {after}"
    return sentence


def _host_variable_sentence(name: str, change: str, before: str, after: str) -> str:
    """``host variable REGION changed: eu → ap``; without the values of one named like a
    secret (``TOKENIZER_NAME``), which the key does not describe."""
    sentence = f"host variable {name} {change}"
    if change == "changed" and NOT_SHOWN not in (before, after):
        sentence += f": {before} → {after}"
    elif change == "added" and after != NOT_SHOWN:
        sentence += f": {after}"
    return sentence


def _started_in_sentence(change: str, before: str, after: str) -> str:
    """Where an in-process Python step ran, the folder the process was started in (each
    described as ``/x, not the workflow’s folder``)."""
    if change == "added":
        return f"this run is started in {after}: the in-process step runs there"
    if change == "removed":
        return (f"it ran in {before}, where that run was started; this run is started in "
                "the step’s folder")
    return f"it ran in {before}; this run is started in {after}: the in-process step runs there"


def without_diff(reason: str, shows: str) -> str:
    """``reason`` with its code or command diff cut off, ``shows`` (the command that
    prints it) named instead: a table's row holds one line, and the diff squeezed into
    it, every line break an escape, could not be read."""
    said, diff_start, _ = reason.partition(DIFF_START)
    return f"{said} ({shows} shows the diff)" if diff_start else reason


def _whitespace_changed(before: str, after: str) -> str:
    """What differs between two texts that look the same as lines, or stripped (a
    ``run: |`` made ``run: |-``, which drops the last newline): shown as escapes, never
    the two texts alike."""
    if before.rstrip() == after.rstrip():
        was, now = (_spaces(text[len(text.rstrip()):]) for text in (before, after))
        return f"only in whitespace at its end ({was} → {now})"
    if before.lstrip() == after.lstrip():
        was, now = (_spaces(text[:len(text) - len(text.lstrip())]) for text in (before, after))
        return f"only in whitespace at its start ({was} → {now})"
    return f"only in whitespace or line endings ({short_repr(before)} → {short_repr(after)})"


def _spaces(whitespace: str) -> str:
    return repr(whitespace) if whitespace else "none"


def _code_sentence(before: str, after: str, said: str = "code changed") -> str:
    diff = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "cached", "now", lineterm="", n=2
    )
    lines = list(diff)
    return said + ("\n" + "\n".join(lines) if lines else "")


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _as_python(text: str) -> str:
    return repr(_load(text))


def _names(text: str) -> str:
    names = _load(text)
    return ", ".join(names) if isinstance(names, list) and names else "(none)"


def _hidden_names(described: str) -> str:
    """The variables of an env whose values its description hides (a secret written
    into it), one of which changed where the shown values are the same; "" for none."""
    values = _load(described)
    if not isinstance(values, dict):
        return ""
    hidden = [name for name, value in sorted(values.items())
              if value == NOT_SHOWN or (isinstance(value, str) and ":***@" in value)]
    if len(hidden) == 1:
        return f"{hidden[0]}, whose value is not shown"
    return f"one of {', '.join(hidden)}, whose values are not shown" if hidden else ""


def _changed_names(before: str, after: str) -> list[str]:
    old, new = _load(before), _load(after)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
