"""The orchestration platform's spelling of workflow files, read as dagnb's.

dagnb grew out of a Dagger integration for an orchestration platform whose pipeline
files people already have: a list of steps, each with a ``name`` and a ``command``. Such
a file loads as written. :func:`canonical_workflow` rewrites it into dagnb's one
spelling before anything else reads it, so a loaded graph, ``graph.to_yaml()`` and
``dagnb validate --explain`` all show dagnb's keys:

=========================================  ================================================
the platform writes                        dagnb reads
=========================================  ================================================
``workflow_defaults:``                     ``defaults:``
``command: "make all"`` / ``[make, all]``  ``run:`` (text is shell, a list is argv)
``container_image``                        ``image``
``environment``                            ``env``
``depends_on``                             ``needs``
``timeout_seconds``                        ``timeout``
``cache_ttl_seconds``                      ``ttl``
``volumes: [{source, target}]``            ``mounts: {source: target}`` (read-only inputs)
``caching_enabled: false``                 ``cache: false``
``skip_cache: true``                       ``cache: false``
``use_circuit_breaker: false``             ``circuit_breaker: false``
``enable_retry: false``                    ``retries: {enable_retry: false}``
``max_retries``, ``retry_backoff_factor``, ``retries: {max_retries, backoff_factor,
``retry_jitter`` / ``jitter``              jitter}`` (jitter true = 0.1 s, false = 0)
=========================================  ================================================

A switch left at its default (``skip_cache: false``, ``enable_retry: true``,
``use_circuit_breaker: true``) says nothing and is dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from dagnb import checks
from dagnb.errors import WorkflowError
from dagnb.model.step import Step
from dagnb.retry.policy import DEFAULT_JITTER

__all__ = ["RENAMED", "Canonical", "canonical_step", "canonical_workflow"]

WORKFLOW_RENAMED = {"workflow_defaults": "defaults"}
RENAMED = {
    "command": "run",
    "container_image": "image",
    "environment": "env",
    "depends_on": "needs",
    "timeout_seconds": "timeout",
    "cache_ttl_seconds": "ttl",
}
"""Step keys that only change name."""

_RETRY_KEYS = {
    "max_retries": "max_retries",
    "retry_backoff_factor": "backoff_factor",
    "backoff_factor": "backoff_factor",
    "retry_jitter": "jitter",
    "jitter": "jitter",
    "enable_retry": "enable_retry",
}
_SWITCHES = ("skip_cache", "caching_enabled", "use_circuit_breaker")
_VOLUME_KEYS = ("source", "target", "read_only")
_STEP_FIELDS = (
    *(f.name for f in dataclasses.fields(Step) if f.name not in ("name", "func", "key_fn")),
    "python",  # a Python step's FILE.py:FUNCTION (dagnb.workflows.pyfunctions)
)
ALIASES = (*RENAMED, "volumes", *_SWITCHES, *_RETRY_KEYS)


@dataclasses.dataclass
class Canonical:
    """A workflow's data in dagnb's spelling, and one note per key rewritten."""

    data: dict[str, Any]
    notes: list[str]


def canonical_workflow(data: Mapping[str, Any], source: str = "<dict>") -> Canonical:
    """``data`` with the platform's keys rewritten to dagnb's (see the module docstring)."""
    notes: list[str] = []
    out = _renamed(data, WORKFLOW_RENAMED, source, notes)
    if isinstance(out.get("defaults"), Mapping):
        out["defaults"] = canonical_step(out["defaults"], f"{source}: defaults", notes)
    steps = out.get("steps")
    if isinstance(steps, Mapping):
        out["steps"] = {
            name: _maybe_step(fields, f"{source}: step {name!r}", notes)
            for name, fields in steps.items()
        }
    elif isinstance(steps, list):
        out["steps"] = [_listed(item, source, notes) for item in steps]
    return Canonical(out, notes)


def _listed(item: Any, source: str, notes: list[str]) -> Any:
    """One item of a ``steps`` list: its name kept first, its fields rewritten."""
    if not isinstance(item, Mapping) or "name" not in item:
        return item  # the loader says what is wrong with it
    fields = {k: v for k, v in item.items() if k != "name"}
    where = f"{source}: step {item['name']!r}"
    return {"name": item["name"], **canonical_step(fields, where, notes)}


def _maybe_step(fields: Any, where: str, notes: list[str]) -> Any:
    return canonical_step(fields, where, notes) if isinstance(fields, Mapping) else fields


def canonical_step(
    fields: Mapping[str, Any], where: str, notes: list[str] | None = None
) -> dict[str, Any]:
    """One step's (or the defaults') fields in dagnb's spelling.

    Raises
    ------
    WorkflowError
        For a key neither dagnb nor the platform knows (with "did you mean"), a key
        given in both spellings, or a value an alias cannot take.
    """
    notes = [] if notes is None else notes
    _check_known(fields, where)
    plain = {k: v for k, v in fields.items() if k not in _SWITCHES and k not in _RETRY_KEYS}
    out = _renamed(plain, RENAMED, where, notes)
    if "volumes" in out:
        out = _with(out, "mounts", _mounts(out.pop("volumes"), where), where, "volumes")
        notes.append(f"{where}: volumes -> mounts")
    for key, convert in _CONVERTERS.items():
        if key in fields:
            out = convert(out, fields[key], where, notes)
    return _with_retry_settings(out, fields, where, notes)


def _check_known(fields: Mapping[str, Any], where: str) -> None:
    checks.known_keys(fields, (*_STEP_FIELDS, *ALIASES), where, WorkflowError)


def _renamed(
    data: Mapping[str, Any], renamed: Mapping[str, str], where: str, notes: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    given: dict[str, Any] = {}  # dagnb's name -> the key that set it
    for key, value in data.items():
        name = renamed.get(key, key) if isinstance(key, str) else key
        if name in out:
            raise WorkflowError(
                f"{where}: {given[name]!r} and {key!r} both set {name!r}; keep one of the two"
            )
        if name != key:
            notes.append(f"{where}: {key} -> {name}")
        out[name], given[name] = value, key
    return out


def _with(out: dict[str, Any], name: str, value: Any, where: str, given: str) -> dict[str, Any]:
    """``out`` plus ``name: value``, refusing a second spelling of one field."""
    if name in out:
        raise WorkflowError(
            f"{where}: {given!r} sets {name!r}, which is already given; keep one of the two"
        )
    out[name] = value
    return out


def _flag(key: str, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise WorkflowError(f"{where}: {key}={value!r} is not valid; expected true or false")
    return value


def _switch_to(
    key: str, field: str, meaning: Callable[[bool], Any]
) -> Callable[[dict[str, Any], Any, str, list[str]], dict[str, Any]]:
    """A converter for switch ``key``: its value, if not the default, sets ``field``."""

    def convert(out: dict[str, Any], value: Any, where: str, notes: list[str]) -> dict[str, Any]:
        said = meaning(_flag(key, value, where))
        if said is None:
            notes.append(f"{where}: {key}: {value} is the default -> dropped")
            return out
        notes.append(f"{where}: {key}: {value} -> {field}: {said}")
        return _with(out, field, said, where, key)

    return convert


_CONVERTERS = {
    "skip_cache": _switch_to("skip_cache", "cache", lambda on: False if on else None),
    "caching_enabled": _switch_to("caching_enabled", "cache", lambda on: None if on else False),
    "use_circuit_breaker": _switch_to(
        "use_circuit_breaker", "circuit_breaker", lambda on: None if on else False
    ),
}


def _mounts(volumes: Any, where: str) -> dict[str, str]:
    """``[{source, target, read_only}]`` as dagnb's ``{source: target}``."""
    if not isinstance(volumes, list):
        raise WorkflowError(
            f"{where}: volumes={volumes!r} must be a list of {{source, target}} mappings"
        )
    mounts: dict[str, str] = {}
    for volume in volumes:
        source, target = _volume(volume, where)
        mounts = _with(mounts, source, target, where, "volumes")
    return mounts


def _volume(volume: Any, where: str) -> tuple[str, str]:
    if not isinstance(volume, Mapping) or not {"source", "target"} <= volume.keys():
        raise WorkflowError(
            f"{where}: volume {volume!r} needs a 'source' (host path) and a 'target' "
            "(path in the step)"
        )
    checks.known_keys(volume, _VOLUME_KEYS, where, WorkflowError, noun="volume key")
    if _flag("read_only", volume.get("read_only", True), where) is False:
        raise WorkflowError(
            f"{where}: volume {volume['source']!r} has read_only: false, but dagnb mounts "
            "are read-only inputs (their contents are part of the cache key); write "
            "outputs to $DAGNB_OUT instead"
        )
    return str(volume["source"]), str(volume["target"])


def _with_retry_settings(
    out: dict[str, Any], fields: Mapping[str, Any], where: str, notes: list[str]
) -> dict[str, Any]:
    """Step-level retry keys folded into ``retries``; a ``retries`` mapping respelled."""
    given = {k: v for k, v in fields.items() if k in _RETRY_KEYS}
    retries = out.get("retries")
    if isinstance(retries, Mapping):
        out["retries"] = _retry_mapping(retries, where, notes)
    if not given:
        return out
    base = dict(out["retries"]) if isinstance(out.get("retries"), Mapping) else {}
    if isinstance(retries, int) and not isinstance(retries, bool):
        base = {"max_retries": retries}
    notes.append(f"{where}: {', '.join(given)} -> retries")
    for key, value in _retry_mapping(given, where, []).items():
        base = _with(base, key, value, where, key)
    if base:  # enable_retry: true alone says nothing
        out["retries"] = base
    return out


def _retry_mapping(settings: Mapping[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    """Retry settings with dagnb's names, and jitter true/false as seconds."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = _RETRY_KEYS.get(key, key)
        if name == "enable_retry" and _flag(key, value, where):
            notes.append(f"{where}: {key}: true is the default -> dropped")
            continue
        if name == "jitter" and isinstance(value, bool):
            value = DEFAULT_JITTER if value else 0.0
            notes.append(f"{where}: {key}: {settings[key]} -> jitter: {value}")
        elif name != key:
            notes.append(f"{where}: retries.{key} -> {name}")
        out = _with(out, name, value, where, key)
    return out
