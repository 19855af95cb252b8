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

A switch at its default value is written out too (``skip_cache: false`` is ``cache:
true``, ``enable_retry: true`` is ``retries: {enable_retry: true}``), so that a step's
overrides the ``workflow_defaults``' opposite. ``skip_cache`` and ``caching_enabled`` in
one step must agree, and with the step's own ``cache`` (``session`` is on), as
``use_circuit_breaker`` must with its ``circuit_breaker``. ``retries: true`` or
``false`` beside a retry key is ``max_retries: 2`` or ``enable_retry: false`` in the
mapping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from dagnb import checks
from dagnb.errors import WorkflowError
from dagnb.model.step import Step
from dagnb.retry.policy import DEFAULT_JITTER, DEFAULT_RETRIES

__all__ = ["RENAMED", "Canonical", "canonical_retries", "canonical_step", "canonical_workflow"]

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
# switch -> (the field it sets, that field's value for the switch's value)
_SWITCHES: dict[str, tuple[str, Callable[[bool], bool]]] = {
    "skip_cache": ("cache", lambda on: not on),
    "caching_enabled": ("cache", lambda on: on),
    "use_circuit_breaker": ("circuit_breaker", lambda on: on),
}
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
    out = _with_switches(out, fields, where, notes)
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
        raise _already_given(name, where, given)
    out[name] = value
    return out


def _already_given(name: str, where: str, given: str) -> WorkflowError:
    return WorkflowError(
        f"{where}: {given!r} sets {name!r}, which is already given; keep one of the two")


def _flag(key: str, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise WorkflowError(f"{where}: {key}={value!r} is not valid; expected true or false")
    return value


def _with_switches(
    out: dict[str, Any], fields: Mapping[str, Any], where: str, notes: list[str]
) -> dict[str, Any]:
    """``out`` with the switches' fields, a default value written out too: a step's
    ``caching_enabled: true`` must override the defaults' ``false``. Two switches of one
    field (``skip_cache``, ``caching_enabled``) must agree, and a switch beside the field
    itself must agree with it (``cache: session`` is on), which then stays as given."""
    said_by: dict[str, str] = {}  # field -> the switch that set it
    for key, (field, meaning) in _SWITCHES.items():
        if key not in fields:
            continue
        value = meaning(_flag(key, fields[key], where))
        earlier = said_by.get(field)
        if earlier is not None and out[field] != value:
            raise WorkflowError(
                f"{where}: {earlier}: {_yaml_flag(fields[earlier])} and {key}: "
                f"{_yaml_flag(fields[key])} disagree on {field}; give one of the two")
        if earlier is None and field in out:
            _check_agrees(out[field], field, value, where, key)
            notes.append(f"{where}: {key}: {fields[key]} agrees with {field}: {out[field]}")
            continue
        notes.append(f"{where}: {key}: {fields[key]} -> {field}: {value}")
        out[field], said_by[field] = value, key
    return out


def _check_agrees(given: Any, field: str, value: bool, where: str, key: str) -> None:
    """Refuse a switch that contradicts the step's own ``field``: any cache but false is
    on (``session`` too), so only ``true``/``false`` against on/off disagree."""
    on = given is not False if field == "cache" else given is True
    if on != value:
        raise _already_given(field, where, key)


def _yaml_flag(flag: bool) -> str:
    return "true" if flag else "false"


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
        out["retries"] = retries = _retry_mapping(retries, where, notes)
    if not given:
        return out
    settings, said_by = _retry_base(retries, where)
    notes.append(f"{where}: {', '.join(given)} -> retries")
    for key, value in given.items():
        name, setting = _retry_setting(key, value, where, [])
        if name in settings:
            raise WorkflowError(f"{where}: {key!r} and {said_by[name]} both set {name!r}; "
                                "keep one of the two")
        settings[name] = setting
    out["retries"] = settings
    return out


def _retry_base(retries: Any, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A step's ``retries`` as settings the step's retry keys add to, and for each
    setting how the step gave it (for a message naming what the user wrote)."""
    if retries is None:
        return {}, {}
    if isinstance(retries, Mapping):
        return dict(retries), {name: f"retries.{name}" for name in retries}
    if isinstance(retries, bool):  # true: the default count; false: none at all
        name, value = ("max_retries", DEFAULT_RETRIES) if retries else ("enable_retry", False)
        return {name: value}, {name: f"'retries: {_yaml_flag(retries)}'"}
    if isinstance(retries, int):
        return {"max_retries": retries}, {"max_retries": f"'retries: {retries}'"}
    raise WorkflowError(f"{where}: retries {retries!r} is not a retry setting; give a number, "
                        "true/false or a mapping of retry settings")


def canonical_retries(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A ``retries`` mapping in dagnb's spelling (as a workflow file writes it)."""
    return _retry_mapping(settings, where, [])


def _retry_mapping(settings: Mapping[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    """Retry settings with dagnb's names, and jitter true/false as seconds."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name, setting = _retry_setting(key, value, where, notes)
        out = _with(out, name, setting, where, key)
    return out


def _retry_setting(key: Any, value: Any, where: str, notes: list[str]) -> tuple[Any, Any]:
    """One retry setting as (dagnb's name, value): jitter true/false as seconds."""
    name = _RETRY_KEYS.get(key, key)
    if name == "enable_retry":  # (true too: a step's overrides the defaults' false)
        value = _flag(key, value, where)
    if name == "jitter" and isinstance(value, bool):
        notes.append(f"{where}: {key}: {value} -> jitter: {DEFAULT_JITTER if value else 0.0}")
        value = DEFAULT_JITTER if value else 0.0
    elif name != key:
        notes.append(f"{where}: retries.{key} -> {name}")
    return name, value
