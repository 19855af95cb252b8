"""Step: the frozen description of one unit of work.

A step is either a command (shell text, run with ``bash -e -o pipefail -c``, or an argv
list) or a
Python function. Everything else says where and how it runs. Steps are immutable: a
notebook cell that runs again builds a new Step and the graph replaces the old one.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import re
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from types import FunctionType, MappingProxyType
from typing import Any, TypeVar, Union

from dagnb import checks
from dagnb.checks import NEVER_EXPIRES, parse_duration, parse_ttl
from dagnb.errors import InvalidStepError, WorkflowError
from dagnb.model.masking import shared_masker, variable_holding

__all__ = ["CachePolicy", "Step", "cached_per_function", "check_name", "forgetting",
           "host_folders", "mount_path", "parse_duration"]

T = TypeVar("T")

CachePolicy = Union[bool, str]  # noqa: UP007 - a runtime alias on Python 3.10

_CACHE_POLICIES = (True, False, "session")
# The executors a step may name; dagnb.executors builds them (the names live here so that a
# workflow naming another is refused when it is read, not when the step is reached).
EXECUTOR_NAMES = ("auto", "local", "dagger", "dask")
# the retry layer's words for a retries= of no kind it reads (dagnb.retry.policy)
NOT_RETRIES = ("is not a retry setting; expected None, a number of retries, a mapping of "
               "retry settings or a RetryPolicy")
# Linux's MAX_ARG_STRLEN: execve refuses (E2BIG) any one argument, or NAME=value variable,
# this long or longer (its NUL counted), whatever room the total (ARG_MAX) leaves.
ARG_LIMIT = 128 * 1024
# The longest param text exported as DAGNB_PARAM_<NAME> (a longer one is in $DAGNB_PARAMS
# only): a quarter of ARG_LIMIT, so that a few long params together stay well inside
# ARG_MAX too (argv and environ together: 2 MiB on most machines).
PARAM_VARIABLE_LIMIT = 32 * 1024


def _frozen_map(value: Mapping[str, Any] | None, field: str, step: str) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):  # (its type alone: env=["TOKEN=..."] holds a secret)
        raise InvalidStepError(f"step {step!r}: {field} must be a mapping, got a "
                               f"{type(value).__name__}; write it like "
                               f"{_MAP_EXAMPLES.get(field, f'{field}: {{name: value}}')}")
    return MappingProxyType(dict(value))


# an example of each mapping field, for the message of a value that is not one
# (in the words of _not_a_list's, which a workflow file's user and a Python one both read)
_MAP_EXAMPLES = {
    "env": "env: {MODE: fast}",
    "mounts": "mounts: {data: /data} (the host's path: where the step reads it)",
    "params": "params: {n: 3}",
    "cache_volumes": "cache_volumes: {pip: /root/.cache/pip}",
}


def split_names(text: str) -> list[str]:
    """Names written as one string, ``"a, b c"``: split at commas and spaces."""
    return [v for v in re.split(r"[,\s]+", text) if v]


def _names(value: Iterable[str] | str | None, field: str, step: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = split_names(value)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidStepError(_not_a_list(value, field, step))
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            # (a secret's value in its name's place, a PIN as an int: not shown)
            shown = f"<{type(item).__name__}>" if field == "secrets" else repr(item)
            raise InvalidStepError(f"step {step!r}: {field} must be names, got {shown}"
                                   + (_YAML_BOOLEAN.format(field=field)
                                      if isinstance(item, bool) else ""))
    return items


# an example of each field of names, for the message of a value that is not a list
_LIST_EXAMPLES = {"secrets": "[API_TOKEN] (the values stay in the environment)",
                  "exclude": "['*.tmp']"}


# (a step named "on" or "yes", written bare in a YAML list: YAML 1.1 reads a boolean)
_YAML_BOOLEAN = (" (YAML reads a bare on, off, yes, no, true or false as a boolean: quote the"
                 " name, {field}: [\"on\"])")


def _not_a_list(value: Any, field: str, step: str) -> str:
    """The message for a field of names given a number or a mapping (whose keys would
    pass as names: needs: {a: 1} was needs: [a]); a mapping's values are not shown, as
    they may be secrets."""
    shown = "a mapping" if isinstance(value, Mapping) else repr(value)
    example = _LIST_EXAMPLES.get(field, "[a, b]")
    if isinstance(value, bool):
        return f"step {step!r}: {field} is {shown}" + _YAML_BOOLEAN.format(field=field)
    return f"step {step!r}: {field} is {shown}, not a list; write it like {field}: {example}"


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# what every process needs: a secret of that name would be withheld from the other steps
_SYSTEM_VARIABLES = frozenset({"PATH", "HOME", "USER", "SHELL", "PWD", "LANG", "TMPDIR",
                               "TERM", "LOGNAME"})


def _secret_names(names: tuple[str, ...], step: str) -> tuple[str, ...]:
    """Secret names that are environment variable names, and none the system needs."""
    for position, name in enumerate(names, 1):
        if not _VARIABLE.match(name):
            raise InvalidStepError(_not_a_secret_name(name, position, step))
        if name in _SYSTEM_VARIABLES:
            raise InvalidStepError(
                f"step {step!r}: secret {name!r} is a variable every process needs (the "
                "other steps would run without it); keep the secret in a variable of its own")
    return names


def _not_a_secret_name(name: str, position: int, step: str) -> str:
    """The message for a secret's name that is not a variable's name: not shown, as the
    likely slip is the secret's value in its place (``secrets=[os.environ["TOKEN"]]``)."""
    holder = variable_holding(name, os.environ)
    whose = f"; it is the value of ${holder}" if holder else ""
    example = holder or "API_TOKEN"
    return (f"step {step!r}: the {_ordinal(position)} secret name ({len(name)} characters, "
            f"not shown) is not an environment variable name{whose}; give the variable's "
            f"name (letters, digits and _, not first a digit), e.g. {example}, not its value")


def _ordinal(number: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ... ``11th``, ``21st``."""
    teens = 10 <= number % 100 <= 20
    suffix = "th" if teens else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def check_name(name: object) -> str:
    """``name``, refused (InvalidStepError) unless a step may be called so."""
    try:
        return checks.name(name)
    except checks.Invalid as bad:
        raise InvalidStepError(f"step name {name!r} is not valid; use {bad.expected}") from None


def _must(check: Callable[..., Any], value: Any, what: str, **options: Any) -> None:
    """``check(value)``, or InvalidStepError("<what> must be <what would pass>")."""
    try:
        check(value, **options)
    except checks.Invalid as bad:
        raise InvalidStepError(f"{what} must be {bad.expected}") from None


def param_env_name(name: str) -> str:
    """``DAGNB_PARAM_<NAME>``: upper case, anything but letters and digits as '_'."""
    return "DAGNB_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def param_text(value: Any) -> str:
    """A param as its ``DAGNB_PARAM_<NAME>`` holds it: text as it is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def fits_a_variable(text: str, limit: int = PARAM_VARIABLE_LIMIT) -> bool:
    """Whether ``text`` is at most ``limit`` bytes in UTF-8 (encoded only when it may not be)."""
    return len(text) <= limit // 4 or len(text.encode("utf-8", "surrogatepass")) <= limit


def _check_run_size(run: str | tuple[str, ...], step: str) -> None:
    """Refuse a command execve would refuse with E2BIG (a raw OSError when the step starts)."""
    for text in (run,) if isinstance(run, str) else run:
        if not fits_a_variable(text, ARG_LIMIT - 1):  # (- 1: the NUL)
            size = len(text.encode("utf-8", "surrogatepass"))
            raise InvalidStepError(
                f"step {step!r}: run is {size:,} bytes, over the {ARG_LIMIT:,} bytes Linux "
                "takes in one argument; put it in a file (a script the step mounts) and run that")


def _check_long_params(params: Mapping[str, Any], run: Any, step: str) -> None:
    """Refuse a shell step whose command reads the variable of a param too long to be
    one (it would read nothing): the params file has it."""
    for key, value in params.items():
        variable = param_env_name(key)
        if not fits_a_variable(param_text(value)) and variable in str(run):
            raise InvalidStepError(
                f"step {step!r}: param {key!r} is too long for ${variable}, which its run reads "
                f"(params over {PARAM_VARIABLE_LIMIT // 1024} KiB are in $DAGNB_PARAMS only, "
                "as Linux refuses long variables); read it from the JSON file $DAGNB_PARAMS")


def _check_params(params: Mapping[str, Any], step: str) -> int:
    """Check params' names and values; the length of their JSON text."""
    named: dict[str, str] = {}  # variable -> the param it holds: one each, none overwritten
    for key in params:
        if not isinstance(key, str):  # it becomes DAGNB_PARAM_<NAME>: a name, not a number
            raise InvalidStepError(f"step {step!r}: param name {key!r} is not text; "
                                   f"quote it: '{key}'")
        variable = param_env_name(key)
        if variable in named:
            raise InvalidStepError(f"step {step!r}: params {named[variable]!r} and {key!r} "
                                   f"both become ${variable}; rename one of them")
        named[variable] = key
    try:
        return len(json.dumps(dict(params), allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise InvalidStepError(
            f"step {step!r}: {_bad_param(params)}must be a JSON value (str, number, bool, "
            f"None, list, dict); {exc}"
        ) from None


def _bad_param(params: Mapping[str, Any]) -> str:
    """``"param 'client' "``: the first param that is not JSON, named so the fix is plain."""
    for key, value in params.items():
        try:
            json.dumps(value, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError):
            return f"param {key!r} "
    return "each param "  # (not reached: one of them failed)


# The variables the step contract sets for each step (dagnb.model.contract), which an
# env of the same name would not reach: refused rather than silently replaced.
CONTRACT_VARIABLES = ("DAGNB_OUT", "DAGNB_IN", "DAGNB_PARAMS", "DAGNB_STEP", "DAGNB_RUN_ID",
                      "DAGNB_ATTEMPT")
# Set by the Dagger executor alone (the step's key, which keys its exec): refused too.
_EXECUTOR_VARIABLES = ("DAGNB_KEY",)


def _check_env(env: Mapping[str, Any], step: str) -> Mapping[str, str]:
    for key, value in env.items():
        try:
            checks.variable_name(key)
        except checks.Invalid:
            raise InvalidStepError(
                f"step {step!r}: env name {key!r} is not a variable name"
            ) from None
        if (key in CONTRACT_VARIABLES or key in _EXECUTOR_VARIABLES
                or key.startswith("DAGNB_PARAM_")):
            raise InvalidStepError(
                f"step {step!r}: env {key} is set by dagnb for each step (the step contract); "
                "give a param for a value, or use another name")
        if value is None:
            raise InvalidStepError(f"step {step!r}: env {key} is null; give a string, e.g. "
                                   f"{key}: \"\"")
        if not isinstance(value, (str, int, float, bool)):  # (its type: a value may be a
            raise InvalidStepError(  # secret's, as env: {TOKEN: [...]} held one)
                f"step {step!r}: env {key} is a {type(value).__name__}, not a string or a "
                f"number; give its text, e.g. {key}: \"...\""
            )
    return MappingProxyType({k: variable_text(v) for k, v in env.items()})


def _refuse_secrets_in_env(secrets: Iterable[str], env: Mapping[str, str], step: str) -> None:
    """A name in both: the step is given the secret (the environment's value), the env's
    value is dropped, though it counts in the key and was kept in clear with the entry."""
    both = sorted(set(secrets) & set(env))
    if both:
        raise InvalidStepError(
            f"step {step!r}: {both[0]} is in both its secrets and its env; a secret's value "
            f"comes from the environment (the env's would be ignored): remove {both[0]} "
            "from env, and set it in the environment")


# an image reference as the distribution spec has it: [host[:port]/]name[:tag][@digest],
# the host told from the name's first part as docker tells it (a dot, a port, localhost)
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = (rf"(?:(?:localhost|{_HOST_PART}(?:\.{_HOST_PART})+|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
         rf"|{_HOST_PART}:[0-9]+)")
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:{_HOST}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")


def _check_image(image: object, step: str) -> None:
    """Refuse an image that is no image reference (``my image:1``, ``Python:3``): the
    engine refused it only when the step ran, the builder and a save taking it before."""
    if not isinstance(image, str) or not _IMAGE.fullmatch(image):
        raise InvalidStepError(
            f"step {step!r}: image {image!r} is not an image reference; write it like "
            "python:3.12-slim or ghcr.io/org/name:tag (lower case, no spaces)")


def variable_text(value: str | int | float | bool) -> str:
    """A plain value as a variable's text: a bool as ``true``/``false``, as JSON and the
    ``DAGNB_PARAM_*`` variables write it, not Python's ``True``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mount_path(base_dir: Path, host: str) -> Path:
    """Where a mount's host path is: ``~`` expanded, a relative one in ``base_dir`` (the
    workflow's folder). The check before a run, the key and the upload all read this."""
    return Path(base_dir) / Path(host).expanduser()


def host_folders(base: Path, workdir: str, mounts: Mapping[str, str]) -> Iterator[Path]:
    """Where ``workdir`` may be here: first through each mount whose container path
    holds it, the deepest first (``{src: /workspace}`` maps ``/workspace/pkg`` to ``src/pkg``, as a
    container would see it, whatever this machine has at ``/workspace``), then itself
    (relative to the workflow's folder)."""
    inside = PurePosixPath(workdir)
    deepest_first = sorted(mounts.items(), key=lambda mount: -len(PurePosixPath(mount[1]).parts))
    for host, target in deepest_first:  # (a container sees the deeper mount on top)
        if inside.is_absolute() and inside.is_relative_to(target):
            yield mount_path(base, host) / inside.relative_to(target)
    yield base / workdir


def _check_mounts(mounts: Mapping[str, Any], step: str) -> Mapping[str, str]:
    checked = {}
    for host, target in mounts.items():
        if not isinstance(host, str) or not host or not isinstance(target, str) or not target:
            raise InvalidStepError(
                f"step {step!r}: mount {host!r}: {target!r} must map a host path to a path "
                "in the step"
            )
        checked[host] = target
    return MappingProxyType(checked)


def _is_default(field: dataclasses.Field[Any], value: Any) -> bool:
    """Whether a Step's field holds its default (an empty mapping for those made empty)."""
    if field.default_factory is not dataclasses.MISSING:  # (the mappings)
        return not value
    return value is field.default or (type(value) is type(field.default)
                                      and value == field.default)


def _secrets_masked(text: str, secrets: Iterable[str]) -> str:
    """``text`` with the values of the variables ``secrets`` names masked: a step's
    repr (what a notebook shows of it) printed a token written into its ``env`` or its
    command in clear, which a run masks everywhere else."""
    values = [value for name in secrets if (value := os.environ.get(name))]
    return shared_masker(values)(text) if values else text


def _shown_field(value: Any) -> str:
    """A field's value as its repr says it: a function by its name, a mapping as a dict."""
    if callable(value) and hasattr(value, "__qualname__"):
        return value.__qualname__
    return repr(dict(value) if isinstance(value, Mapping) else value)


@dataclasses.dataclass(frozen=True, eq=True, repr=False)
class Step:
    """One unit of work in a :class:`~dagnb.Graph`.

    Parameters
    ----------
    name
        Identifier-like name, unique in its graph; downstream Python steps receive this
        step's result as the argument of this name.
    run
        Shell text (run with ``bash -c``) or an argv list. Exactly one of ``run`` and
        ``func`` is given.
    func
        A sync or async Python function; its parameters named after upstream steps
        receive their results, parameters named after params receive those values.
    image
        Container image for container executors (ignored on the host, with a notice).
    needs
        Names of upstream steps.
    env
        Environment variables (plain values, part of the cache key).
    secrets
        Names of environment variables whose values are read at run time and never
        stored, logged or hashed.
    mounts
        Host path -> path in the step, read-only inputs whose contents are hashed.
    params
        JSON-able values, given as ``$DAGNB_PARAMS`` and ``DAGNB_PARAM_<NAME>`` (one
        whose text passes :data:`PARAM_VARIABLE_LIMIT`: in ``$DAGNB_PARAMS`` only).
    workdir, timeout, tags
        Working directory, time limit (seconds or '10m'), labels for selection.
    cache, ttl, retries, cache_version, key_fn, services, cache_volumes, executor
        Policies for the cache, retries and executors.
    circuit_breaker
        False runs the step even while its executor's circuit breaker is open, and
        leaves the breaker out of its attempts (the platform's ``use_circuit_breaker``).
    user
        The user a container step runs as (``"1000:100"``, ``"jovyan"``), instead of
        its image's ``USER``; its outputs folder and cache volumes belong to it.
    platform
        The platform a container step's image runs as (``"linux/arm64"``); the engine's
        own by default.
    errexit
        Shell text stops at its first failing command (``bash -e -o pipefail``, or
        ``sh -e`` where there is no bash); False runs it as plain ``bash -c``.
    exclude
        Patterns (``"*.tmp"``, ``"**/raw"``) of files left out of mounted host folders on
        container executors, besides version control, virtual environments and caches.
    """

    name: str
    run: str | tuple[str, ...] | None = None
    func: Callable[..., Any] | None = None  # compared as == compares functions: by identity
    image: str | None = None
    needs: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    mounts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    workdir: str | None = None
    timeout: float | None = None
    tags: tuple[str, ...] = ()
    cache: CachePolicy = True
    ttl: float | None = None
    retries: Any = None
    cache_version: str = ""
    key_fn: Callable[..., Any] | None = None
    services: tuple[str, ...] = ()
    cache_volumes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    executor: str | None = None
    description: str = ""
    circuit_breaker: bool = True
    exclude: tuple[str, ...] = ()
    user: str | None = None
    errexit: bool = True
    platform: str | None = None

    def __repr__(self) -> str:
        """``Step('load', func=load, needs=('fetch',))``: the fields given, not all 26 (a
        notebook printing a graph's steps showed a screen of defaults for each)."""
        given = [f"{field.name}={_shown_field(getattr(self, field.name))}"
                 for field in dataclasses.fields(self)[1:]
                 if not _is_default(field, getattr(self, field.name))]
        return _secrets_masked(f"Step({', '.join([repr(self.name), *given])})", self.secrets)

    def __post_init__(self) -> None:
        name = check_name(self.name)
        set_ = object.__setattr__
        set_(self, "run", self._normalized_run(name))
        if self.func is not None and not callable(self.func):
            raise InvalidStepError(f"step {name!r}: func {self.func!r} is not callable")
        if (self.run is None) == (self.func is None):
            raise InvalidStepError(
                f"step {name!r} needs exactly one of run= (a shell command) or func= "
                "(a Python function)"
            )
        set_(self, "needs", _names(self.needs, "needs", name))
        set_(self, "secrets", _secret_names(_names(self.secrets, "secrets", name), name))
        set_(self, "tags", _names(self.tags, "tags", name))
        set_(self, "services", _names(self.services, "services", name))
        set_(self, "exclude", _names(self.exclude, "exclude", name))
        set_(self, "env", _check_env(_frozen_map(self.env, "env", name), name))
        _refuse_secrets_in_env(self.secrets, self.env, name)
        set_(self, "mounts", _check_mounts(_frozen_map(self.mounts, "mounts", name), name))
        set_(self, "params", _frozen_map(self.params, "params", name))
        if _check_params(self.params, name) > PARAM_VARIABLE_LIMIT and self.run is not None:
            _check_long_params(self.params, self.run, name)  # (JSON is at least as long)
        set_(self, "cache_volumes", _frozen_map(self.cache_volumes, "cache_volumes", name))
        if self.image is not None:
            _check_image(self.image, name)
        set_(self, "timeout", parse_duration(self.timeout, what=f"step {name!r} timeout"))
        set_(self, "ttl", parse_ttl(self.ttl, what=f"step {name!r} ttl"))
        if isinstance(self.cache_version, float):  # (1.10 read as 1.1: a bump unseen)
            _refuse_decimal_version(self.cache_version, name)
        self._check_policies(name)

    def _normalized_run(self, name: str) -> str | tuple[str, ...] | None:
        run = self.run
        if run is None or isinstance(run, str):
            if isinstance(run, str) and not run.strip():
                raise InvalidStepError(f"step {name!r}: run is empty; give a shell command")
            if run is not None:
                _check_run_size(run, name)
            return run
        if isinstance(run, (list, tuple)) and run and all(isinstance(a, str) for a in run):
            _check_run_size(tuple(run), name)
            return tuple(run)
        raise InvalidStepError(
            f"step {name!r}: run {run!r} must be shell text or a non-empty list of strings"
        )

    def _check_policies(self, name: str) -> None:
        _must(checks.one_of, self.cache, f"step {name!r}: cache={self.cache!r}",
              choices=_CACHE_POLICIES)
        # True/False (on/off) and the other settings are RetryPolicy.from_value's
        if isinstance(self.retries, int) and not isinstance(self.retries, bool):
            _must(checks.count, self.retries, f"step {name!r}: retries {self.retries!r}")
        elif not _may_be_retries(self.retries):
            raise InvalidStepError(f"step {name!r}: retries {self.retries!r} {NOT_RETRIES}")
        _must(checks.flag, self.circuit_breaker,
              f"step {name!r}: circuit_breaker={self.circuit_breaker!r}")
        if self.image is not None and (not isinstance(self.image, str) or not self.image):
            raise InvalidStepError(f"step {name!r}: image {self.image!r} is not an image "
                                   "reference; write it like 'python:3.12-slim'")
        if self.executor is not None:
            _must(checks.one_of, self.executor, f"step {name!r}: executor={self.executor!r}",
                  choices=EXECUTOR_NAMES)
        if self.executor == "dask" and self.func is None:
            raise InvalidStepError(
                f"step {name!r} is a command and executor='dask' runs Python functions "
                "only; give it executor='local' or 'dagger', or leave executor unset"
            )
        if self.workdir is not None and not isinstance(self.workdir, str):
            raise InvalidStepError(f"step {name!r}: workdir {self.workdir!r} must be a path")
        _must(checks.flag, self.errexit, f"step {name!r}: errexit {self.errexit!r}")
        if self.platform is not None and not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/\w+)?",
                                                          str(self.platform)):
            raise InvalidStepError(
                f"step {name!r}: platform {self.platform!r} must be os/architecture such as "
                "'linux/amd64' or 'linux/arm64'"
            )
        if self.user is not None and (not isinstance(self.user, str) or not self.user.strip()):
            raise InvalidStepError(
                f"step {name!r}: user {self.user!r} must be a user name or id such as "
                "'1000:100'"
            )
        for alias, path in self.cache_volumes.items():  # "/path" or "/path:locked"
            if not PurePosixPath(str(path)).is_absolute():
                raise InvalidStepError(
                    f"step {name!r}: cache volume {alias!r} path {path!r} must be absolute"
                )

    def __hash__(self) -> int:
        # Cheap (steps are dict keys in the scheduler and the cache) and consistent with
        # __eq__: a function hashes by identity, as it compares.
        try:
            return hash((self.name, self.run, self.func))
        except TypeError:  # a callable object that cannot be hashed: equal steps still agree
            return hash((self.name, self.run))

    @property
    def kind(self) -> str:
        """'shell' for shell text, 'argv' for an argv list, 'python' for a function."""
        if self.func is not None:
            return "python"
        return "shell" if isinstance(self.run, str) else "argv"

    @property
    def is_async(self) -> bool:
        """True for a coroutine function step."""
        return _is_coroutine_function(self.func)

    def replace(self, **changes: Any) -> Step:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML; fields left at their defaults are left out.

        Raises
        ------
        InvalidStepError
            For a Python function step (its graph's ``to_yaml(path)`` saves it).
        WorkflowError
            For a step with a ``key_fn``, which no file can hold.
        """
        if self.func is not None:
            raise InvalidStepError(
                f"step {self.name!r} is a Python function: write its graph to a file with "
                "graph.to_yaml(path), which puts its code in a module beside the YAML"
            )
        if self.key_fn is not None:  # (left out, the file's step would key by its command)
            raise WorkflowError(
                f"step {self.name!r} has a key_fn, which a workflow file cannot hold (saved "
                "without it, the step would be keyed by its command alone and serve stale "
                "results); to save it, mount the file key_fn reads (mounts:) or set "
                "cache_version in place of key_fn")
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.name in ("name", "func", "key_fn"):
                continue
            value = getattr(self, field.name)
            if value == _default(field):
                continue
            data[field.name] = "never" if field.name == "ttl" and value == NEVER_EXPIRES else (
                _plain(value))
        return data


STEP_ARGUMENTS = frozenset(field.name for field in dataclasses.fields(Step))


def _naming_typos(init: Callable[..., None]) -> Callable[..., None]:
    """Step's dataclass ``__init__``, refusing a misspelt keyword with the closest one, as
    ``graph.run()`` does (the bare TypeError named no fix); still a TypeError."""

    @functools.wraps(init)  # (help() and inspect.signature still show the fields)
    def __init__(self: Step, *args: Any, **kwargs: Any) -> None:
        if not kwargs.keys() <= STEP_ARGUMENTS:
            checks.known_keys(kwargs, sorted(STEP_ARGUMENTS), "dagnb.Step()", TypeError,
                              noun="argument", see=" (see help(dagnb.Step))")
        init(self, *args, **kwargs)

    return __init__


Step.__init__ = _naming_typos(Step.__init__)  # type: ignore[method-assign]


def _may_be_retries(value: Any) -> bool:
    """Whether ``retries`` is of a kind the retry layer reads (None, a bool or count, a
    mapping, a RetryPolicy); its values are checked as a run starts. (No RetryPolicy
    exists unless its module is loaded: this layer may not import it.)"""
    if value is None or isinstance(value, (int, Mapping)):
        return True
    policy = sys.modules.get("dagnb.retry.policy")
    return policy is not None and isinstance(value, policy.RetryPolicy)


def cached_per_function(compute: Callable[[Any], T]) -> Callable[[Any], T]:
    """``compute(func)``, remembered per function (steps ask on every run), and computed
    afresh for a callable object that cannot be hashed (a ``@dataclass`` with
    ``__call__``: ``eq=True`` leaves it no ``__hash__``). A plain function is held
    weakly, forgotten with it: a notebook defines its functions again at each run of a
    cell, and each held its closure and defaults (a frame it closed over) alive."""
    cached = functools.lru_cache(maxsize=4096)(compute)
    functions: dict[int, tuple[weakref.ref[Any], T]] = {}

    @functools.wraps(compute)
    def lookup(func: Any) -> T:
        if type(func) is FunctionType:
            known = functions.get(id(func))
            if known is not None and known[0]() is func:
                return known[1]
            value = compute(func)
            functions[id(func)] = (weakref.ref(func, forgetting(functions, id(func))), value)
            return value
        try:
            return cached(func)
        except TypeError:
            if _hashable(func):  # raised by compute itself: not ours to hide
                raise
            return compute(func)

    return lookup


def forgetting(table: dict[int, tuple[Any, ...]], ident: int) -> Callable[[Any], None]:
    """The callback of a weak reference kept first in an entry of ``table`` under
    ``ident``: it removes the entry, unless one made since (the id reused) is there.
    (Its table and function bound now: at exit the module's globals may be gone when
    it is called.)"""
    return lambda _, remove=_remove_dead: remove(table, ident)


def _remove_dead(table: dict[int, tuple[Any, ...]], ident: int) -> None:
    found = table.get(ident)
    if found is not None and found[0]() is None:
        del table[ident]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@cached_per_function
def _is_coroutine_function(func: Callable[..., Any] | None) -> bool:
    return func is not None and inspect.iscoroutinefunction(func)


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _refuse_decimal_version(value: float, name: str) -> None:
    """A step's ``cache_version`` that YAML read as a decimal, refused as the setting's
    is: ``1.10`` is 1.1, and the new version would look like the old one. (A whole number
    stays, as written: its key is its own.)"""
    raise InvalidStepError(
        f"step {name!r}: cache_version {value!r} is a number, which loses digits (1.10 is "
        f"read as 1.1); quote it: cache_version: \"1.10\"")
