"""The orchestration platform's spelling of config keys, and dagnb's one spelling.

dagnb grew out of a Dagger integration for an orchestration platform whose config files
people already have. Those files load as written: each key below is rewritten to its
dagnb name as the file is read, so everything after loading (``Settings``, ``dagnb config
show``, error messages about values) sees one spelling.

Only keys whose meaning is the same are aliases; a key that means something else in
dagnb (the top-level ``timeout_seconds`` is the whole run's limit, while the platform's
``workflow_defaults.timeout_seconds`` is each step's) is mapped by where it appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagnb.errors import ConfigError

__all__ = ["DEFAULTS_ALIASES", "TOP_ALIASES", "canonical_file"]

TOP_ALIASES: dict[str, str] = {}
"""Top-level key -> dagnb's key (none yet: the platform's top-level keys are dagnb's)."""

DEFAULTS_ALIASES: dict[str, str] = {
    "timeout_seconds": "step_timeout_seconds",  # each step's default limit, not the run's
    "jitter": "retry_jitter",
}
"""``workflow_defaults`` key -> dagnb's key."""


def canonical_file(data: Mapping[Any, Any], where: str) -> dict[Any, Any]:
    """``data`` (a config file's mapping) with aliases renamed to dagnb's keys."""
    renamed = _renamed(data, TOP_ALIASES, where)
    defaults = renamed.get("workflow_defaults")
    if isinstance(defaults, Mapping):
        renamed["workflow_defaults"] = _renamed(
            defaults, DEFAULTS_ALIASES, f"{where}: workflow_defaults"
        )
    return renamed


def _renamed(data: Mapping[Any, Any], aliases: Mapping[str, str], where: str) -> dict[Any, Any]:
    """Keys renamed by ``aliases``, order kept; an alias beside its own key is refused."""
    renamed: dict[Any, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key) if isinstance(key, str) else key
        if name in renamed:
            given = [k for k in data if aliases.get(k, k) == name]
            raise ConfigError(f"{where}: {given[0]!r} and {given[1]!r} both set {name}; give one")
        renamed[name] = value
    return renamed
