"""Translate a :class:`~dagnb.executors.base.Task` into a Dagger container pipeline.

The step contract inside the container::

    /dagnb/out           $DAGNB_OUT, empty, exported to the task's out_dir afterwards
    /dagnb/in/<name>     $DAGNB_IN/<name>, each upstream's outputs (read-only)
    /dagnb/params.json   $DAGNB_PARAMS; params also as DAGNB_PARAM_<NAME>

An upstream that ran on Dagger is mounted from its output ``Directory`` itself, so its
files go container to container and never through the host; other upstreams are
uploaded from their host folders (one whose container's links were set aside here, as
a copy with them put back: :func:`staged_inputs`). Secrets become Dagger secrets
(``setSecret`` is the only query that carries a value); they are never plain
environment variables. Building the pipeline sends nothing: the SDK is lazy until a
field is awaited.

Host reads: the engine caches ``host.directory``/``host.file`` per client, so within one
kernel an edited file could be served from an earlier read while dagnb's key (which
did see the edit) stores the stale result under the new key. Every host read therefore
passes ``no_cache=True``; the upload is still content-digested, so Dagger's own exec
cache is not defeated. Folders leave out what no step should need and that can be
large: version control, virtual environments, bytecode, notebook checkpoints and
dagnb's cache (:data:`DEFAULT_EXCLUDES`), and dotenv files, which hold secrets' values
(:data:`~dagnb.cache.mounts.DOTENV_EXCLUDES`), then the step's ``exclude`` patterns.
``.gitignore`` is not applied: data folders are commonly ignored by git, and a step
that mounts ``data/`` must see its files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from dagnb.cache.mounts import DEFAULT_EXCLUDES, upload_excludes
from dagnb.errors import ConfigError, InvalidStepError, SecretError, StepFailed
from dagnb.executors.base import Input, Task
from dagnb.executors.dagger import links
from dagnb.executors.dagger.connection import from_this_session
from dagnb.executors.dagger.shim import python_argv, python_files
from dagnb.executors.shell import container_argv
from dagnb.model.expand import expanded_argv, unset_in_script
from dagnb.model.results import NO_RESULT, RESULT_FILES, save_result
from dagnb.model.step import Step, mount_path

__all__ = [
    "CONTAINER_IN",
    "CONTAINER_OUT",
    "CONTAINER_PARAMS",
    "DEFAULT_EXCLUDES",
    "DEFAULT_IMAGE",
    "VOLATILE",
    "VOLATILE_SINCE",
    "RegistryAuth",
    "build_container",
    "cache_volume",
    "command_argv",
    "container_env",
    "expanded_command",
    "host_excludes",
    "image_container",
    "image_from",
    "image_registry",
    "known_secrets",
    "volume_key",
]

DEFAULT_IMAGE = "python:3.12-slim"
_CONTRACT_ROOT = "/dagnb"  # no mount may cover it or sit inside it
CONTAINER_OUT = "/dagnb/out"
CONTAINER_IN = "/dagnb/in"
CONTAINER_PARAMS = "/dagnb/params.json"
_CONTRACT_PATHS = {"DAGNB_OUT": CONTAINER_OUT, "DAGNB_IN": CONTAINER_IN,
                   "DAGNB_PARAMS": CONTAINER_PARAMS}

# Set without entering the exec's cache key: it changes every run. The engine keeps a
# volatile value per session, the last set winning, and an exec reads it as it runs, so
# a step may see the run id of another run of the session running at the same time.
# The attempt is a plain variable: as a volatile one, a retry's attempt 2 reached the
# first attempt of a step starting beside it; as a plain one, every first attempt keys
# its exec alike (a retry's exec, keyed by its number, runs unless one was cached).
VOLATILE = ("DAGNB_RUN_ID",)
VOLATILE_SINCE = (0, 21, 4)  # the engine version that added withVolatileVariable

# Dagger (buildkit) patterns, relative to the mounted folder.

ServiceLookup = Callable[[str], Any]  # alias -> dagger.Service


@dataclasses.dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry; the password is read from the environment at run time."""

    address: str
    username: str
    secret_env: str  # the variable holding the password or token
    env_key: str = "password_env"  # the setting that names it (or "token_env")

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> RegistryAuth:
        """From ``{"address", "username", "password_env" | "token_env"}``."""
        if not isinstance(value, Mapping):
            raise ConfigError(f"registry_auth entry {value!r} must be a mapping")
        env_keys = [key for key in ("password_env", "token_env") if value.get(key)]
        unknown = set(value) - {"address", "username", "password_env", "token_env"}
        if unknown or len(env_keys) != 1 or not value.get("address") or not value.get("username"):
            raise ConfigError(
                f"registry_auth entry {dict(value)!r} must have 'address', 'username' and one "
                "of 'password_env' or 'token_env' (the name of a variable, not the password)"
            )
        return cls(str(value["address"]), str(value["username"]), str(value[env_keys[0]]),
                   env_keys[0])

    @property
    def registry(self) -> str:
        """The registry's host as an image reference names it (``docker.io`` for Docker
        Hub's other names): ``ghcr.io`` of ``https://ghcr.io/org``."""
        host = self.address.partition("://")[2] or self.address
        return _hub(host.partition("/")[0].lower())

    def serves(self, image: str) -> bool:
        """Whether ``image`` is pulled from this registry."""
        return image_registry(image) == self.registry

    def secret_value(self) -> str:
        try:
            return os.environ[self.secret_env]
        except KeyError:
            raise SecretError(
                f"container_credentials for {self.address!r}: {self.env_key} names "
                f"{self.secret_env!r}, which is not set in the environment; export it"
            ) from None


_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io",
                         "registry.hub.docker.com"})


def _hub(host: str) -> str:
    return "docker.io" if host in _DOCKER_HUB else host


def image_registry(image: str) -> str:
    """The registry ``image`` is pulled from, as Docker reads a reference: its first
    part when that has a '.' or ':' or is ``localhost`` (``ghcr.io/org/app``,
    ``localhost:5000/app``), else Docker Hub (``alpine:3.20``, ``library/python``)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return _hub(first.lower())
    return "docker.io"


def parse_registry_auth(value: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None
                        ) -> tuple[RegistryAuth, ...]:
    """One mapping or a list of them (one per registry)."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        value = [value]
    return tuple(RegistryAuth.parse(item) for item in value)


def command_argv(task: Task) -> list[str]:
    """The exec's argv: shell text as on every executor (bash -e -o pipefail where the
    image has bash, sh -e where not; :mod:`dagnb.executors.shell`), or an argv list
    with its ``$DAGNB_...`` variables expanded (:func:`expanded_command`)."""
    step = task.step
    if step.func is not None:
        return python_argv()
    if isinstance(step.run, str):
        line = unset_in_script(step.name, step.run, _exec_variables(task))
        if line is not None:
            raise StepFailed(line, step=step.name)
        return container_argv(step)
    return expanded_command(task)


def expanded_command(task: Task) -> list[str]:
    """An argv step's items, dagnb's ``$DAGNB_...`` variables expanded with their values
    in the container (its paths there) before the exec is sent, everything else as
    written (:mod:`dagnb.model.expand`): the engine's own ``expand`` takes every name,
    and reads one it does not know as empty (v0.21.8 core/container.go
    ExpandContainerInput: os.Expand)."""
    argv = list(task.step.run or ())
    if not any("$" in item for item in argv):
        return argv
    try:
        return expanded_argv(task.step.name, argv, _exec_variables(task).get)
    except ValueError as exc:
        raise StepFailed(str(exc), step=task.step.name) from None


def _exec_variables(task: Task) -> dict[str, str]:
    """The plain variables the step's exec has (:func:`_with_env`), the run id too."""
    env = {**task.env, **container_env(task)}
    if task.key:
        env["DAGNB_KEY"] = task.key
    return env


def container_env(task: Task) -> dict[str, str]:
    """The task's env with the contract's paths rewritten to their container paths,
    without the values that change every run (:data:`VOLATILE`)."""
    env = {name: value for name, value in task.env.items() if name not in VOLATILE}
    for name, path in _CONTRACT_PATHS.items():
        env[name] = path
    return env


def _with_env(ctr: Any, task: Task, volatile_variables: bool) -> Any:
    """Plain variables are part of the exec's cache key; the run id is set with
    ``withVolatileVariable`` so that it is not (engines before 0.21.4 lack it: there a
    step gets none, rather than an exec cache defeated on every run). The
    step's key (``DAGNB_KEY``) keys the exec too, so that a step dagnb's key misses
    (a new ``cache_version``, ``key_fn`` value) is not served an exec of the old one. A
    step the run must run again (``task.fresh``: cache=False, refresh, a ttl) gets its
    run id as a plain variable: the engine would otherwise serve an earlier run's exec."""
    env = container_env(task)
    if task.key:
        env["DAGNB_KEY"] = task.key
    if task.fresh and "DAGNB_RUN_ID" in task.env:
        env["DAGNB_RUN_ID"] = task.env["DAGNB_RUN_ID"]
    for name, value in sorted(env.items()):
        ctr = ctr.with_env_variable(name, value)
    if volatile_variables:
        for name in VOLATILE:
            if name in task.env and name not in env:
                ctr = ctr.with_volatile_variable(name, task.env[name])
    return ctr


def image_container(dag: Any, task: Task, *, default_image: str = DEFAULT_IMAGE,
                    registry_auth: Iterable[RegistryAuth] = ()) -> Any:
    """The step's image (lazy) for its platform, pulled with the registries' credentials."""
    return image_from(dag, task.step.image or default_image, task.step.platform, registry_auth)


def image_from(dag: Any, image: str, platform: str | None = None,
               registry_auth: Iterable[RegistryAuth] = ()) -> Any:
    """``container(platform).from(image)`` (lazy), pulled with the registries' credentials."""
    ctr = dag.container(platform=_sdk().Platform(platform)) if platform else dag.container()
    # Only the image's registry's: another's token is not needed, and may not be set.
    for auth in (auth for auth in registry_auth if auth.serves(image)):
        # (before from_(), so the pull itself is authenticated)
        secret = dag.set_secret(f"registry-{auth.address}", auth.secret_value())
        ctr = ctr.with_registry_auth(auth.address, auth.username, secret)
    return ctr.from_(image)


def build_container(
    dag: Any,
    task: Task,
    *,
    default_image: str = DEFAULT_IMAGE,
    registry_auth: Iterable[RegistryAuth] = (),
    services: ServiceLookup | None = None,
    volatile_variables: bool = True,
    owner: str = "",
    image: Any = None,
    empty: Any = None,
    volumes: Mapping[str, Any] | None = None,
    staged: Mapping[str, Path] | None = None,
) -> Any:
    """The lazy pipeline for one attempt, ending with its exec.

    ``volatile_variables``: whether the engine has ``withVolatileVariable`` (0.21.4+).
    ``owner``: the user that runs the step (the image's ``USER`` or the step's
    ``user``); ``$DAGNB_OUT`` and cache volumes are given to it, since the engine makes
    new directories and volumes root's and a non-root user could not write them, and so
    are its inputs and mounts (:func:`_with_contract_dirs`), so that it reads them.
    ``image``: the :func:`image_container` to start from, when the caller has one (the
    SDK resolves an argument's ID once per pipeline object it has built, so sharing it
    saves the round trips). ``empty`` (an empty Directory) and ``volumes`` (alias ->
    CacheVolume): objects whose IDs the caller already knows (:func:`connection.constant`).
    ``staged``: upstream name -> the host folder :func:`staged_inputs` made for it.
    ``registry_auth``: pulls the image (without ``image``), and its passwords are among
    the secrets no shipped global may hold (:func:`known_secrets`).
    """
    dagger = _sdk()
    step = task.step
    ctr = image if image is not None else image_container(
        dag, task, default_image=default_image, registry_auth=registry_auth)
    if step.user:
        ctr = ctr.with_user(step.user)
    ctr = _with_env(ctr, task, volatile_variables)
    for name, value in sorted(task.secrets.items()):
        ctr = ctr.with_secret_variable(name, dag.set_secret(name, value))
    ctr = _with_contract_dirs(ctr, dag, task, _owner(owner), empty, staged or {})
    mounts = [*_host_mounts(dag, task, _owner(owner)),
              *_cache_mounts(dag, task, dagger, owner, volumes)]
    ctr = _with_mounts(ctr, task.step, mounts)
    ctr = _with_services(ctr, task, services)
    if step.func is not None:
        known = known_secrets(task, registry_auth)
        for path, text in python_files(step, list(task.inputs), known).items():
            ctr = ctr.with_new_file(path, text)
    if step.workdir:
        ctr = ctr.with_workdir(step.workdir)
    # The default expect (SUCCESS): a non-zero exit is an ExecError, which the engine
    # does not cache (a retry really runs again) and its UI shows as a failure.
    return ctr.with_exec(command_argv(task))


def known_secrets(task: Task, registry_auth: Iterable[RegistryAuth] = ()) -> dict[str, str]:
    """Every secret the run knows for ``task``, name -> value: its own, those other steps
    declare (withheld from it; the run read them from the environment too) and the
    registries' passwords. No text a Python step ships may hold one: it travels in the
    query and sits in the engine's cache."""
    names = [*sorted(task.withheld), *(auth.secret_env for auth in registry_auth)]
    known = {name: os.environ[name] for name in names if os.environ.get(name)}
    return {**known, **task.secrets}


_SHARING = {"shared": "SHARED", "private": "PRIVATE", "locked": "LOCKED"}


def cache_volume(value: str) -> tuple[str, str]:
    """``"/root/.cache/pip"`` or ``"/root/.cache/pip:locked"`` -> (path, Dagger sharing).

    ``shared`` (the default) lets concurrent steps use the volume at once, ``locked``
    one at a time (for tools that do not lock their cache), ``private`` gives each
    concurrent step its own copy.
    """
    path, _, mode = value.rpartition(":")
    if path and mode.lower() in _SHARING:
        return path, _SHARING[mode.lower()]
    return value, "SHARED"


def volume_key(task: Task, alias: str) -> str:
    """The engine-wide name of cache volume ``alias``: the engine is shared by every
    notebook and CI job that uses it, so the name says whose volume it is (the
    ``project`` setting, else the project folder's name)."""
    from dagnb.config import settings

    project = settings().project or Path(task.base_dir).resolve().name or "dagnb"
    return "dagnb-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{project}-{alias}")


def _owner(user: str) -> str:
    """The ``owner=`` argument for ``user``: "" (the default, left out of the query) for
    root."""
    return "" if user.split(":")[0] in ("", "root", "0") else user


def _sdk() -> Any:
    import dagger

    return dagger


def _with_contract_dirs(ctr: Any, dag: Any, task: Task, owner: str, empty: Any,
                        staged: Mapping[str, Path]) -> Any:
    # Real (empty) directories, so they exist for commands and for export even when a
    # step has no upstreams or writes nothing.
    empty = empty if empty is not None else dag.directory()
    ctr = ctr.with_directory(CONTAINER_OUT, empty, owner=owner)
    ctr = ctr.with_directory(CONTAINER_IN, empty)
    for name, item in sorted(task.inputs.items()):
        source = _input_source(dag, item, staged.get(name), empty)
        # Given to the step's user: the engine makes an upload root's, keeping its
        # modes (a private 0600 file was unreadable to a non-root step when its upstream
        # was cached), and a container's directory keeps its owner (the upstream's user,
        # maybe another); chowned alike, a step reads the same whichever it got.
        ctr = ctr.with_mounted_directory(f"{CONTAINER_IN}/{name}", source, owner=owner,
                                         read_only=True)
    return ctr.with_new_file(CONTAINER_PARAMS, _params_text(task))


def _input_source(dag: Any, item: Input, staged: Path | None, empty: Any) -> Any:
    """``$DAGNB_IN/<name>``: the upstream's container directory when this session made
    it (no trip through the host), else a host folder: the one :func:`staged_inputs`
    made, or the upstream's own; an in-process upstream that wrote no file has none."""
    if _made_here(item):
        return item.handle
    folder = staged or Path(item.path).resolve()
    if staged is None and not folder.is_dir():
        return empty
    return dag.host().directory(str(folder), no_cache=True)


@contextlib.contextmanager
def staged_inputs(task: Task) -> Iterator[dict[str, Path]]:
    """Host folders for the upstreams whose folder is not what the step is to see,
    removed after the step. Each gets the upstream's files (hard links where they can
    be), and:

    - its value as ``result.json`` or ``result.pkl``, for an upstream whose value is
      not in its folder: one that ran in this process (local, dask) and whose value the
      run did not store (cache=False, caching off) keeps it in memory only, and the
      shim would hand the step the folder's Path instead;
    - its links as its container made them, for a Dagger upstream of a session since
      lost whose links leading out were set aside here (:mod:`links`): the new session
      has no container directory of it, and a step must see the same whether or not
      the engine's session was reopened between the two.
    """
    missing = {name: _value_not_in_folder(item) for name, item in task.inputs.items()}
    staged = [name for name, item in task.inputs.items()
              if missing[name] or _links_set_aside(item)]
    if not staged:
        yield {}
        return
    into = task.out_dir.parent / "inputs"
    shutil.rmtree(into, ignore_errors=True)  # what a killed attempt left
    try:
        yield {name: _stage(task.inputs[name], into / name, with_value=missing[name])
               for name in staged}
    finally:
        shutil.rmtree(into, ignore_errors=True)


def _value_not_in_folder(item: Input) -> bool:
    """Whether the upstream has a value that no file in its host folder holds."""
    if item.result is NO_RESULT or _made_here(item):
        return False
    return not any((item.path / file).exists() for file in RESULT_FILES)


def _links_set_aside(item: Input) -> bool:
    """Whether the upstream ran on Dagger in a session since lost and left links set
    aside in its folder (only such a step's can hold any: they are never stored)."""
    return (item.handle is not None and not from_this_session(item.handle)
            and links.holds_set_aside(item.path))


def _stage(item: Input, target: Path, *, with_value: bool) -> Path:
    if item.path.is_dir():
        shutil.copytree(item.path, target, symlinks=True, copy_function=_link_or_copy)
        links.put_back_set_aside(target)  # (new links: the upstream's stay as they are)
    else:
        target.mkdir(parents=True)
    if with_value:  # (not into a file linked to the upstream's: there is none)
        save_result(target, item.result)
    return target


def _made_here(item: Input) -> bool:
    """Whether the upstream's outputs are a directory this session's containers made."""
    return item.handle is not None and from_this_session(item.handle)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _params_text(task: Task) -> str:
    try:
        return task.params_file.read_text(encoding="utf-8")
    except FileNotFoundError:  # a runner that did not write one: the step's own params
        import json

        return json.dumps(dict(task.step.params), sort_keys=True)


# One mount to make: (target, Container method, source, keyword arguments).
Mount = tuple[str, str, Any, dict[str, Any]]


def _with_mounts(ctr: Any, step: Step, mounts: list[Mount]) -> Any:
    """Mount parents before their children: the engine drops every mount at or under a
    new mount's target (core/container.go ContainerMounts.With), so ``/work`` mounted
    after ``/work/data`` would hide it."""
    _check_targets(step, [target for target, *_ in mounts])
    for target, method, source, options in sorted(mounts, key=lambda m: _parents_first(m[0])):
        ctr = getattr(ctr, method)(target, source, **options)
    return ctr


def _parents_first(target: str) -> tuple[int, str]:
    path = PurePosixPath(target)
    return len(path.parts), str(path)


def _check_targets(step: Step, targets: list[str]) -> None:
    """No two mounts at one path (the later would replace the earlier), none over or
    under the contract's folder (it would hide ``$DAGNB_OUT``, ``$DAGNB_IN`` or the
    params, or be hidden by them)."""
    seen: set[PurePosixPath] = set()
    for target in targets:
        path = PurePosixPath(target)
        contract = PurePosixPath(_CONTRACT_ROOT)
        if path == contract or contract in path.parents or path in contract.parents:
            raise InvalidStepError(
                f"step {step.name!r}: mount target {target!r} overlaps {_CONTRACT_ROOT!r}, "
                "where dagnb puts $DAGNB_OUT, $DAGNB_IN and the params; mount it elsewhere"
            )
        if path in seen:
            raise InvalidStepError(
                f"step {step.name!r}: two mounts or cache volumes target {target!r}; the "
                "engine keeps only the last, so give each its own path"
            )
        seen.add(path)


def _host_mounts(dag: Any, task: Task, owner: str) -> list[Mount]:
    """The step's host folders and files, given to its user (``owner``): uploads are
    root's with their modes, and a step must read what it mounts."""
    mounts = []
    for host, target in task.step.mounts.items():
        path = mount_path(task.base_dir, host).resolve()  # as the cache key reads it
        if path.is_dir():
            folder = dag.host().directory(str(path),
                                          exclude=host_excludes(task.step, path,
                                                                task.cache_folder),
                                          no_cache=True)
            mounts.append((target, "with_mounted_directory", folder,
                           {"owner": owner, "read_only": True}))
        elif path.is_file():
            source = dag.host().file(str(path), no_cache=True)
            mounts.append((target, "with_mounted_file", source, {"owner": owner}))
        else:
            raise InvalidStepError(
                f"step {task.step.name!r}: mount source {host!r} does not exist (looked for "
                f"{str(path)!r}); give a file or directory relative to {str(task.base_dir)!r}"
            )
    return mounts


def _cache_mounts(dag: Any, task: Task, dagger: Any, owner: str,
                  volumes: Mapping[str, Any] | None) -> list[Mount]:
    mounts = []
    for alias, value in task.step.cache_volumes.items():
        path, sharing = cache_volume(value)
        volume = volumes[alias] if volumes else dag.cache_volume(volume_key(task, alias))
        options = {"owner": _owner(owner), "sharing": getattr(dagger.CacheSharingMode, sharing)}
        mounts.append((path, "with_mounted_cache", volume, options))
    return mounts


def host_excludes(step: Step, folder: Path, cache: Path | None = None) -> list[str]:
    """What an upload of ``folder`` leaves out: what the step's key leaves out of it,
    and dotenv files (:func:`dagnb.cache.mounts.upload_excludes`; ``cache``: the run's
    cache folder)."""
    return upload_excludes(step, folder, cache)


def _with_services(ctr: Any, task: Task, services: ServiceLookup | None) -> Any:
    if not task.step.services:
        return ctr
    if services is None:
        from dagnb.executors.dagger.services import get as services

    for alias in task.step.services:
        ctr = ctr.with_service_binding(alias, services(alias))
    return ctr
