"""The rules of a clear asked for by hand, shared by ``dagnb cache clear`` and
``%dagger cache clear``: clearing every entry takes ``--all``, given alone, and a step
the cache holds no entry of (a typo) is refused before anything goes."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING

from dagnb import checks
from dagnb.errors import ConfigError
from dagnb.model.step import parse_duration

if TYPE_CHECKING:
    from dagnb.cache.store import Store

__all__ = ["age_option", "check_clear_options", "check_clear_scope"]


def age_option(given: str | None, option: str) -> float | None:
    """A cache age typed by hand (``--older-than``, ``--max-age``), in seconds. A bare
    number is refused: elsewhere it counts seconds, and ``--older-than 30`` meant to
    keep a month cleared everything older than 30 seconds."""
    if given is not None and re.fullmatch(r"\s*[0-9]+(\.[0-9]*)?\s*", str(given)):
        number = str(given).strip()
        raise ConfigError(f"{option} {number} has no unit; write {number}d (days), "
                          f"{number}h (hours), {number}m (minutes) or {number}s (seconds)")
    return parse_duration(given, what=option, error=ConfigError)


def check_clear_options(step: str | None, older_than: str | None, everything: bool
                        ) -> float | None:
    """The ``--older-than`` age in seconds, once ``--all`` is known to come alone."""
    seconds = age_option(older_than, "--older-than")
    if everything and (step is not None or seconds is not None):
        raise ConfigError("--all clears every entry; give it alone, or --step NAME / "
                          "--older-than AGE without it")
    return seconds


def check_clear_scope(store: Store, command: str, step: str | None, older: float | None,
                      everything: bool, *, name_a_step: str = "--step NAME",
                      step_given_as: str = "--step", known: Collection[str] = ()) -> None:
    """Refuse a clear of every entry without ``everything`` (``command`` and
    ``name_a_step`` say how to ask for less), and a ``step`` (given as
    ``step_given_as``) that is neither held nor in ``known`` (the caller's graph's)."""
    if not everything and step is None and older is None:
        raise ConfigError(f"{command} removes every entry in {str(store.location)!r}; add "
                          f"--all to confirm, or {name_a_step} / --older-than AGE")
    if step is not None:
        _refuse_unknown_step(store, step, step_given_as, known)


def _refuse_unknown_step(store: Store, step: str, given_as: str, known: Collection[str]
                         ) -> None:
    """A step the cache holds no entry of, nor the caller knows: a typo."""
    held = sorted({entry.step for entry in store.iter_entries()})
    if step in held or step in known:
        return
    where = str(store.location)
    if not held:  # (it said "holds no entries of that step; it holds no entries")
        hint = checks.did_you_mean(step, sorted(known), otherwise="nothing to clear")
        raise ConfigError(f"{given_as} {step!r}: the cache in {where!r} holds no entries; "
                          f"{hint}")
    shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
    hint = checks.did_you_mean(step, sorted({*held, *known}),
                               otherwise=f"it holds entries of {shown}")
    raise ConfigError(f"{given_as} {step!r}: the cache in {where!r} holds no entries of that "
                      f"step; {hint}")
