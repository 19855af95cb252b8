"""Which entries :meth:`~dagnb.cache.store.Store.reduce_size` evicts, with
``joblib.Memory.reduce_size``'s limits (bytes, items, age) and order (oldest use first)."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import TYPE_CHECKING

from dagnb.checks import checked, count
from dagnb.errors import CacheError
from dagnb.model.step import parse_duration

if TYPE_CHECKING:
    from dagnb.cache.entry import Entry


def _items_to_delete(
    items: list[tuple[Entry, float, int]],
    bytes_limit: int | None,
    items_limit: int | None,
    age_limit: float | None,
    now: float,
    kept: Collection[tuple[str, str]] = (),
    passed_over: list[Entry] | None = None,
) -> list[Entry]:
    """joblib's ``_get_items_to_delete``: oldest use first until every limit holds,
    passing over the entries ``kept`` (step, key): runs going on now use them. Those kept
    over a limit (past the age limit, or the size or count limit left unmet without
    them: not those others were taken in place of) are appended to ``passed_over``,
    when given."""
    if not items:
        return []
    excess_bytes = sum(size for _, _, size in items) - bytes_limit if bytes_limit is not None else 0
    excess_items = len(items) - items_limit if items_limit is not None else 0
    deadline = None if age_limit is None else now - age_limit
    doomed: list[Entry] = []
    spared: list[tuple[Entry, bool]] = []  # (entry, whether past the age limit)
    freed = 0
    for entry, last_used, size in sorted(items, key=lambda item: item[1]):
        too_old = deadline is not None and last_used <= deadline
        if not too_old and freed >= excess_bytes and len(doomed) >= excess_items:
            break
        if kept and (entry.step, entry.key) in kept:
            spared.append((entry, too_old))
            continue
        doomed.append(entry)
        freed += size
    if passed_over is not None:
        met = freed >= excess_bytes and len(doomed) >= excess_items
        passed_over += [entry for entry, too_old in spared if too_old or not met]
    return doomed


SIZE_FORMS = ("a number of bytes (0 or more), or one with a unit as `dagnb cache stats` "
              "prints it: 979B, 500K, 1.5M, 10MB, 1GiB (B, K/KB/KiB, M/MB/MiB, G/GB/GiB, "
              "T/TB/TiB, any case; 1K = 1024 bytes)")

# A number, then a unit: a letter of _POWERS (B for bytes), with an optional "B" or "iB".
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(
    limit: int | str | None, *, what: str = "bytes_limit",
    error: Callable[[str], Exception] = CacheError,
) -> int | None:
    """Bytes of a size limit: a whole number (text too, ``"1000"``) or a size as
    ``dagnb cache stats`` prints it (``"979B"``, ``"1.5K"``, ``"10M"``) or as it is
    usually written (``"1GB"``, ``"1GiB"``, ``"500kb"``); K, M, G, T count in 1024s, as
    ``ls -h``, joblib and the stats do. None stays None (no limit). A negative size
    (``-3``, ``"-3K"``: every entry would go) is refused as ``error``, naming ``what``."""
    if limit is None:
        return None
    size = _size_or_none(limit)
    if size is None or size < 0:
        raise error(f"{what} {limit!r} is not a size; use {SIZE_FORMS}")
    return size


def _size_or_none(limit: object) -> int | None:
    if isinstance(limit, int) and not isinstance(limit, bool):
        return limit
    if isinstance(limit, numbers.Real) and not isinstance(limit, bool):
        # (1e9, as joblib takes it, a numpy number; not NaN nor inf)
        return int(limit) if math.isfinite(limit) else None
    if not isinstance(limit, str):
        return None
    found = _SIZE.fullmatch(limit)
    if found is None:
        return None
    number, unit = found.groups()
    return int(float(number) * 1024 ** _POWERS.get((unit or "").lower(), 0))


def _items_limit(limit: object) -> int | None:
    """A count of entries to keep: a whole number >= 0 (not a bool) or None (no limit);
    a negative one would remove every entry."""
    if limit is None:
        return None
    return checked(count, limit, "items_limit", CacheError, sep=" ")


def checked_limits(bytes_limit: object, items_limit: object,
                   age_limit: timedelta | float | str | None
                   ) -> tuple[int | None, int | None, float | None]:
    """``reduce_size``'s limits, each checked before anything goes (a negative one
    would take every entry): bytes, entries and seconds, None for none given."""
    return parse_size(bytes_limit), _items_limit(items_limit), _age_seconds(age_limit)


def _age_seconds(limit: timedelta | float | str | None) -> float | None:
    if isinstance(limit, timedelta):  # (0 removes every entry, as in joblib)
        if limit < timedelta(0):
            raise CacheError(f"age_limit {limit!r} has to be a positive timedelta (every "
                             "entry would go); use a positive timedelta such as "
                             "timedelta(days=7), or '7d'")  # (joblib's words, then the fix)
        return limit.total_seconds()
    return parse_duration(limit, what="age_limit")
