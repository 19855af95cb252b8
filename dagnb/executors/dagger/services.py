"""Long-running service containers (a database, an API) for steps and for the notebook.

``start("db", "postgres:16", ports=[5432], env={...})`` starts the image as a Dagger
service and opens a tunnel from this machine to each of its ports, so the notebook can
connect to ``info.endpoint`` (``localhost:<random port>``) while Dagger steps declared
with ``services=["db"]`` reach it as host ``db`` inside their containers.

Services live on the process's Dagger connection and stop with it. A session found lost
(the engine restarted) is reopened, as for steps: a start then tries once more in the new
session, and a stop finds its service gone with the old one. Engine errors are one line
naming the service, its secrets masked. The functions here
are synchronous and run on dagnb's background loop (:mod:`dagnb.executors.loop`); each has an
``a``-prefixed coroutine twin for code already running there.

Limits: the Dagger API offers no stream of a service's output. It goes to the engine's
progress display (``dagger run`` or the SDK's ``log_output``), so :func:`logs` returns
what dagnb saw: the start, the endpoints and the stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from dagnb.errors import ConfigError, DagnbError, ExecutorError, TransientError
from dagnb.executors.dagger import connection
from dagnb.model.masking import Masker, looks_like_token, name_shown

__all__ = [
    "ServiceInfo",
    "alogs",
    "astart",
    "astop",
    "get",
    "logs",
    "running",
    "start",
    "stop",
]

@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """A service as :func:`start` left it."""

    name: str
    image: str
    ports: tuple[int, ...]
    endpoint: str | None  # host:port on this machine for the first port
    endpoints: Mapping[int, str]  # service port -> host:port on this machine
    state: str  # "running" or "stopped"
    started: datetime.datetime


@dataclasses.dataclass
class _Running:
    info: ServiceInfo
    service: Any  # the dagger.Service steps bind
    tunnels: list[Any]
    events: list[str]
    session: int  # connection.session_number() it was started in; it dies with that session
    client: Any  # the session's client (connection.reopen's, should a stop find it lost)
    secrets: tuple[str, ...] = ()  # values masked in the engine's words


SERVICE_LABEL = "dev.dagnb.service"  # the container label holding a service's name

_lock = threading.Lock()
_running: dict[str, _Running] = {}
_starting: set[str] = set()  # names being started


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _run_sync(coro: Any) -> Any:
    from dagnb.executors.loop import run_sync

    return run_sync(coro)


@dataclasses.dataclass(frozen=True)
class _Definition:
    """What :func:`start` was asked for."""

    name: str
    image: str
    ports: Sequence[int]
    env: Mapping[str, str]
    secrets: Mapping[str, str]  # name -> value, sent only as Dagger secrets
    args: Sequence[str] | None


def _secret_values(name: str, secrets: Mapping[str, str] | Sequence[str] | None
                   ) -> dict[str, str]:
    """``{"PW": value}`` as given, or names read from the environment now."""
    if secrets is None:
        return {}
    if isinstance(secrets, Mapping):
        return {str(k): str(v) for k, v in secrets.items()}
    missing = [n for n in secrets if n not in os.environ]
    if missing and looks_like_token(missing[0]):  # (a value pasted where its name goes)
        raise ConfigError(f"service {name!r}: secret {name_shown(missing[0])} is not set in "
                          "the environment; give the name of the variable that holds it")
    if missing:
        raise ConfigError(
            f"service {name!r}: secret {missing[0]!r} is not set in the environment; set it "
            f"(export {missing[0]}=...) or pass secrets={{{missing[0]!r}: value}}"
        )
    return {n: os.environ[n] for n in secrets}


async def astart(
    name: str,
    image: str,
    ports: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    secrets: Mapping[str, str] | Sequence[str] | None = None,
) -> ServiceInfo:
    """Coroutine of :func:`start`."""
    _reserve(name, ports)
    try:
        definition = _Definition(name, image, ports, dict(env or {}),
                                 _secret_values(name, secrets), args)
        dag, (service, tunnels, endpoints) = await _on_engine(
            name, "start", definition.secrets.values(),
            functools.partial(_start_service, spec=definition))
    finally:
        with _lock:
            _starting.discard(name)
    started = _now()
    first = endpoints[ports[0]] if ports else None
    info = ServiceInfo(name, image, tuple(ports), first, endpoints, "running", started)
    events = [f"{started:%H:%M:%S} started {image}"]
    events += [f"{started:%H:%M:%S} port {p} -> {e}" for p, e in endpoints.items()]
    with _lock:
        _running[name] = _Running(info, service, tunnels, events, connection.session_number(),
                                  dag, tuple(definition.secrets.values()))
    return info


async def _on_engine(name: str, doing: str, secrets: Iterable[str],
                     call: Callable[[Any], Awaitable[Any]], *, again: bool = True
                     ) -> tuple[Any, Any]:
    """``(dag, await call(dag))`` on the process's session. A session that no longer
    answers is reopened and ``call`` tried once more in the new one, as a step's retry
    would be (without it every later start failed on the dead client); errors are
    one line naming the service."""
    dag = None
    try:
        dag = await connection.client()
        return dag, await call(dag)
    except DagnbError as exc:  # (no engine to connect to: one line already)
        raise _named(exc, name) from None
    except Exception as exc:
        if again and connection.is_transient(exc) and await connection.reopen(dag):
            return await _on_engine(name, doing, secrets, call, again=False)
        raise _engine_error(name, doing, exc, secrets) from None


def _named(exc: DagnbError, name: str) -> DagnbError:
    exc.args = (f"service {name!r}: {exc}", *exc.args[1:])
    return exc


def _engine_error(name: str, doing: str, exc: Exception, secrets: Iterable[str]
                  ) -> DagnbError:
    """The engine's failure to ``doing`` ("start", "stop") service ``name``, in one
    line saying what to do; its words masked (the engine may quote the service's env)."""
    dagger = connection.require_sdk()
    words = Masker(list(secrets))(str(exc) or type(exc).__name__)
    if connection.is_transient(exc):
        return TransientError(f"service {name!r}: lost the Dagger engine ({words}); {doing} "
                              "it again once the engine answers", masked=True)
    if isinstance(exc, dagger.QueryError) and connection.network_error(words):
        return TransientError(f"service {name!r} could not {doing}: Dagger engine error: "
                              f"{words}; {doing} it again", masked=True)
    hint = "; check its image, ports, env and args" if doing == "start" else ""
    return ExecutorError(f"service {name!r} could not {doing}: Dagger engine error: "
                         f"{words}{hint}")


def _service(dag: Any, spec: _Definition) -> Any:
    """The lazy service. Dagger keys services by definition and session, so two names
    with the same image, env and ports would be one service (stopping one would stop
    both): the name is a label of the container, which keeps them apart."""
    ctr = dag.container().from_(spec.image).with_label(SERVICE_LABEL, spec.name)
    for key, value in sorted(spec.env.items()):
        ctr = ctr.with_env_variable(key, str(value))
    for key, value in sorted(spec.secrets.items()):  # never in a query but setSecret's
        ctr = ctr.with_secret_variable(key, dag.set_secret(f"service-{spec.name}-{key}", value))
    for port in spec.ports:
        ctr = ctr.with_exposed_port(port)
    # Without args, run the image's entrypoint and command as `docker run` would.
    if spec.args:
        return ctr.as_service(args=list(spec.args))
    return ctr.as_service(use_entrypoint=True)


async def _start_service(dag: Any, *, spec: _Definition
                         ) -> tuple[Any, list[Any], dict[int, str]]:
    """The started service and its tunnels; on a failure, what was started is stopped."""
    ports = spec.ports
    service = await _service(dag, spec).start()
    tunnels: list[Any] = []
    try:
        endpoints = await _open_tunnels(dag, service, ports, tunnels)
    except BaseException:
        for handle in [*tunnels, service]:
            with contextlib.suppress(Exception):
                await handle.stop()
        raise
    return service, tunnels, endpoints


async def _open_tunnels(dag: Any, service: Any, ports: Sequence[int],
                        tunnels: list[Any]) -> dict[int, str]:
    """Endpoints by port; each started tunnel is appended to ``tunnels`` at once."""
    import dagger

    endpoints = {}
    for port in ports:  # one tunnel per port, so each endpoint maps to a known port
        tunnel = await dag.host().tunnel(service, ports=[dagger.PortForward(backend=port)]).start()
        tunnels.append(tunnel)
        endpoints[port] = await tunnel.endpoint()
    return endpoints


def _reserve(name: str, ports: Sequence[int]) -> None:
    """Check a start request and hold ``name`` while it starts (two starts cannot race)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"service name {name!r} must be an identifier such as 'db'")
    for port in ports:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(f"service {name!r}: port {port!r} must be a number 1-65535")
    _mark_lost()  # (one that went with a lost session may start again)
    with _lock:
        running = _running.get(name)
        if name in _starting or (running and running.info.state == "running"):
            raise ConfigError(f"service {name!r} is already running; stop({name!r}) it first")
        _starting.add(name)


def start(
    name: str,
    image: str,
    ports: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    secrets: Mapping[str, str] | Sequence[str] | None = None,
) -> ServiceInfo:
    """Start ``image`` as service ``name`` and tunnel its ports to this machine.

    Parameters
    ----------
    name
        The alias steps bind (``services=["db"]``) and the name used here.
    image
        Image reference, e.g. ``"postgres:16"``.
    ports
        Ports the service listens on; each gets a tunnel from ``localhost``.
    env
        Environment of the service container.
    args
        Command to run instead of the image's entrypoint and default command.
    secrets
        Variables whose values must stay out of queries and IDs (``POSTGRES_PASSWORD``):
        ``{"NAME": value}``, or names read from this process's environment. They reach
        the service as Dagger secrets; ``env`` values are plain text in every query.

    Returns
    -------
    ServiceInfo
        With ``endpoint``, the ``host:port`` to connect to from the notebook.
    """
    return _run_sync(astart(name, image, ports, env, args, secrets))


async def astop(name: str) -> ServiceInfo:
    """Coroutine of :func:`stop`."""
    running = _lookup(name)
    if running.info.state == "stopped":  # stopped already, or gone with its lost session
        return running.info
    try:
        for handle in [*running.tunnels, running.service]:
            await handle.stop()
    except Exception as exc:
        if connection.is_transient(exc):  # the session may be gone, and the service with it
            await connection.reopen(running.client)
            _mark_lost()
        if running.info.state != "stopped":
            raise _engine_error(name, "stop", exc, running.secrets) from None
        return running.info
    info = dataclasses.replace(running.info, state="stopped")
    with _lock:
        running.info = info
        running.events.append(f"{_now():%H:%M:%S} stopped")
    return info


def stop(name: str) -> ServiceInfo:
    """Stop service ``name`` and its tunnels."""
    return _run_sync(astop(name))


def running() -> Any:
    """Services started in this process: name, image, ports, endpoint, state, started
    (a pandas DataFrame; stopped ones too, with ``state`` saying so)."""
    import pandas as pd

    columns = ["name", "image", "ports", "endpoint", "state", "started"]
    _mark_lost()
    with _lock:
        infos = [r.info for r in _running.values()]
    rows = [{c: getattr(info, c) for c in columns} for info in infos]
    return pd.DataFrame(rows, columns=columns)


async def alogs(name: str) -> str:
    """Coroutine of :func:`logs`."""
    return logs(name)


def logs(name: str) -> str:
    """What dagnb saw of service ``name`` (Dagger's API does not stream service output)."""
    running = _lookup(name)
    with _lock:
        return "\n".join(running.events)


def get(alias: str) -> Any:
    """The running ``dagger.Service`` named ``alias``, for steps that bind it."""
    running = _lookup(alias)
    if running.info.state != "running":
        raise ExecutorError(
            f"service {alias!r} is stopped; start it again with "
            f"dagnb.services.start({alias!r}, image=...) before running steps that bind it"
        )
    return running.service


def _mark_lost() -> None:
    """Services of a session that has gone (the engine restarted) are stopped."""
    session = connection.session_number()
    with _lock:
        for running in _running.values():
            if running.info.state == "running" and running.session != session:
                running.info = dataclasses.replace(running.info, state="stopped")
                running.events.append(f"{_now():%H:%M:%S} stopped: the Dagger session was lost")


def _lookup(name: str) -> _Running:
    _mark_lost()
    with _lock:
        running, known = _running.get(name), sorted(_running) or "none"
    if running is None:
        raise ExecutorError(
            f"no service named {name!r} (started: {known}); start it with "
            f"dagnb.executors.dagger.services.start({name!r}, image=...)"
        )
    return running


def _forget_all() -> None:
    """Drop every record (for tests; the connection closing stops the services)."""
    with _lock:
        _running.clear()
        _starting.clear()


def __getattr__(name: str) -> Any:
    if name == "list":  # the old name, served without shadowing the builtin in this module
        return running
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
