"""The rules of a clear asked for by hand, shared by ``dagnb cache clear`` and
``%dagger cache clear``: clearing every entry takes ``--all``, given alone, and a step
the cache holds no entry of (a typo) is refused before anything goes (``dagnb cache
list --step`` too); ``dagnb cache`` takes a Memory function's plain name (``square``).
Both say, of a store URL's cache, that the store keeps what its local tier lost
(:func:`kept_in_store`)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING

from dagnb import checks
from dagnb.errors import ConfigError
from dagnb.model.step import parse_duration

if TYPE_CHECKING:
    from dagnb.cache.store import Store

__all__ = ["age_option", "check_clear_options", "check_clear_scope", "held_step",
           "in_memory_only", "kept_in_store"]


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
                      step_given_as: str = "--step", known: Collection[str] = (),
                      plain_names: bool = False) -> str | None:
    """Refuse a clear of every entry without ``everything`` (``command`` and
    ``name_a_step`` say how to ask for less), and a ``step`` (given as
    ``step_given_as``) that is neither held nor in ``known`` (the caller's graph's).
    The step to clear: ``step``, or (``plain_names``) the full name of the Memory
    function it names plainly (see :func:`held_step`)."""
    if not everything and step is None and older is None:
        raise ConfigError(f"{command} removes every entry in {str(store.location)!r}; add "
                          f"--all to confirm, or {name_a_step} / --older-than AGE")
    if step is None:
        return None
    return held_step(store, step, step_given_as, known, plain_names=plain_names)


def held_step(store: Store, step: str, given_as: str = "--step", known: Collection[str] = (),
              *, plain_names: bool = True, otherwise: str = "nothing to clear") -> str:
    """The name of the step ``step`` (given as ``given_as``) stands for: itself when the
    cache holds entries of it or the caller knows it (``known``); with ``plain_names``,
    the one Memory function whose name it is without its module
    (``__main__-mem-91dd9af6.square`` for ``square``). Anything else is refused, a
    typo (``otherwise``: the hint when the cache holds no entries at all), and a plain
    name of several functions, naming them."""
    if step in known or (step in store.step_names()
                         and next(store.iter_entries(step), None) is not None):
        return step
    held = sorted({entry.step for entry in store.iter_entries()})
    named = _named_plainly(step, held)
    if plain_names and len(named) == 1:
        return named[0]
    where = str(store.location)
    if named:  # (several, or the caller takes full names only)
        listed = ", ".join(repr(name) for name in named)
        which = ("2 functions of that name; give one of their full names" if len(named) > 1
                 else "a function of that name; give its full name")
        if len(named) > 2:
            which = which.replace("2", str(len(named)), 1)
        raise ConfigError(f"{given_as} {step!r}: the cache in {where!r} holds entries of "
                          f"{which}: {listed}")
    if not held:  # (it said "holds no entries of that step; it holds no entries")
        hint = checks.did_you_mean(step, sorted(known), otherwise=otherwise)
        raise ConfigError(f"{given_as} {step!r}: the cache in {where!r} holds no entries; "
                          f"{hint}")
    shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
    hint = checks.did_you_mean(step, _spellings(held, known, plain_names),
                               otherwise=f"it holds entries of {shown}")
    raise ConfigError(f"{given_as} {step!r}: the cache in {where!r} holds no entries of that "
                      f"step; {hint}")


def kept_in_store(given: str | None, then: str) -> str:
    """What follows the line of a clear of the cache ``given`` (None: the setting
    ``cache_directory``) when that is a store URL, whose local tier alone was cleared:
    the store keeps its entries (a user took them for gone), ``then`` saying what
    becomes of them, as the front end knows it. Nothing for a cache folder."""
    from dagnb.config import settings

    url = str(settings().cache_directory) if given is None else given
    if not checks.is_url(url):
        return ""
    if in_memory_only(url):  # (no other process, machine or kernel ever sees it)
        return f" (the local tier); the store {url} keeps its entries, in this process only"
    return f" (the local tier); the store {checks.redacted(url)} keeps its entries{then}"


def in_memory_only(url: str) -> bool:
    """Whether ``url`` names fsspec's memory store, which lives in this process alone."""
    return url.lower().startswith("memory:")


def _named_plainly(plain: str, held: list[str]) -> list[str]:
    """The held names of the functions named ``plain`` in their module: a Memory
    function's step is ``<module>.<qualname>`` (``.partial`` after it for a partial)."""
    return [name for name in held
            if name.endswith((f".{plain}", f".{plain}.partial")) and name != plain]


def _spellings(held: list[str], known: Collection[str], plain_names: bool) -> list[str]:
    """The names a typo is compared with: those held and known, and (``plain_names``)
    each function's plain name that stands for one step only."""
    names = {*held, *known}
    if plain_names:
        plain = [name.removesuffix(".partial").rpartition(".")[2] for name in held
                 if "." in name]
        names.update(name for name in plain if len(_named_plainly(name, held)) == 1)
    return sorted(names)
