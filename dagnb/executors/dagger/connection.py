"""The Dagger engine: whether one is reachable, and the one connection to it per process.

Detection is cheap and opens nothing: an engine is assumed reachable when a ``dagger``
CLI is on ``PATH`` (the SDK starts a session with it), when ``_EXPERIMENTAL_DAGGER_CLI_BIN``
names one, or when ``DAGGER_SESSION_PORT`` and ``DAGGER_SESSION_TOKEN`` point at a running
session (``dagger run``, or a test's stub engine).

The connection is opened on first use, explicitly, before the first query: a lazily
connected client whose first query resolves several IDs at once opens the session
twice and fails. It belongs to the event loop that opened it (dagnb runs everything on
one background loop, see :mod:`dagnb.executors.loop`); a call from another loop reconnects, with a
log line, instead of hanging in the SDK's retries. It is closed at interpreter exit on
its own loop.

A lost session (the engine restarted, the ``dagger`` session process died) fails every
query on the old client: the first step that sees such a failure calls :func:`reopen`,
which drops that client once, whichever step saw it first, so the runner's retry opens a
new session. Objects of the old session are no use in the new one: each session has a
number (:func:`session_number`), and the pipeline objects dagnb keeps between steps
(an upstream step's output directory) are checked with :func:`from_this_session`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib.util
import logging
import os
import re
import shutil
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

from dagnb.errors import DagnbError, ExecutorUnavailable, TransientError
from dagnb.executors.base import Availability
from dagnb.executors.dagger.enginelog import EngineLog

if TYPE_CHECKING:
    import dagger

__all__ = [
    "INSTALL_HINT",
    "AutoChoice",
    "aclose",
    "adopt",
    "client",
    "constant",
    "detect",
    "engine_log",
    "engine_version",
    "fresh_session",
    "from_this_session",
    "is_transient",
    "network_error",
    "pick_auto",
    "remembered",
    "reopen",
    "require_sdk",
    "session_number",
]

log = logging.getLogger("dagnb.executors.dagger.connection")

INSTALL_HINT = "pip install 'dagnb[dagger]'"
_NO_ENGINE = (
    "no Dagger engine found: install the dagger CLI (https://docs.dagger.io/install) and a "
    "container runtime such as Docker, or point DAGGER_SESSION_PORT and "
    "DAGGER_SESSION_TOKEN at a running session"
)
_CLOSE_TIMEOUT = 10.0  # seconds the exit hook waits for the session to close
_PROBE_TIMEOUT = 5.0  # seconds a session that may be lost has to answer


def require_sdk() -> Any:
    """The ``dagger`` module, or ExecutorUnavailable naming the extra to install."""
    try:
        import dagger
    except ImportError:
        raise ExecutorUnavailable(
            f"executor 'dagger' needs the Dagger SDK, which is not installed; run {INSTALL_HINT}"
        ) from None
    return dagger


def detect() -> Availability:
    """Whether a Dagger engine can be reached from here (cheap; opens no connection)."""
    if importlib.util.find_spec("dagger") is None:
        return Availability(False, f"the Dagger SDK is not installed; run {INSTALL_HINT}")
    if os.environ.get("DAGGER_SESSION_PORT") and os.environ.get("DAGGER_SESSION_TOKEN"):
        port = os.environ["DAGGER_SESSION_PORT"]
        return Availability(True, f"Dagger session on 127.0.0.1:{port} (DAGGER_SESSION_PORT)")
    if cli := os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN"):
        return Availability(True, f"Dagger CLI {cli} (_EXPERIMENTAL_DAGGER_CLI_BIN)")
    if cli := shutil.which("dagger"):
        return Availability(True, f"Dagger CLI {cli} on PATH")
    return Availability(False, _NO_ENGINE)


class AutoChoice(NamedTuple):
    """What ``executor='auto'`` resolves to, and why (printed once by the caller)."""

    executor: str  # "dagger" or "local"
    reason: str


def pick_auto() -> AutoChoice:
    """'dagger' when an engine is reachable, else 'local', with the reason."""
    found = detect()
    if found.available:
        return AutoChoice("dagger", found.reason)
    return AutoChoice("local", found.reason)


# -- errors ----------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """True for failures of the connection rather than of the work (retry them)."""
    dagger = require_sdk()
    import httpx
    import tenacity
    from gql.transport.exceptions import TransportClosed, TransportConnectionFailed

    transient = (
        dagger.TransportError,
        dagger.ClientConnectionError,
        httpx.TransportError,
        TransportClosed,
        TransportConnectionFailed,
        ConnectionError,
        tenacity.RetryError,  # the SDK's own retries gave up on one of the above
    )
    return isinstance(exc, transient)


# Engine errors that are about the network rather than the step (a registry hiccup):
# phrases Go's net, net/http, TLS and registry clients write, never a bare "timeout"
# or "eof" inside a word (a path "/data/thereof", an image "geoffrey/etl").
_TRANSIENT_HINT = re.compile(
    r"i/o timeout|TLS handshake timeout|Client\.Timeout exceeded|context deadline exceeded|"
    r"\btimed out\b|connection reset|connection refused|temporarily unavailable|"
    r"too many requests|unexpected EOF|(?-i:\bEOF\b)|"
    r"(?:status(?: code)?:?|HTTP(?:/[\d.]+)?)\s+(?:429|50[234])\b|"
    r"\b(?:429 Too Many|502 Bad Gateway|503 Service Unavailable|504 Gateway Time-?out)",
    re.IGNORECASE,
)
# Signals that the work itself is wrong: retrying cannot help, whatever else the
# message says ("failed to stat /src/timeout_settings.yaml: no such file or directory").
_PERMANENT_HINT = re.compile(
    r"no such file or directory|pull access denied|\bnot found\b|\bunauthorized\b|"
    r"\binvalid\b",
    re.IGNORECASE,
)


def network_error(message: str) -> bool:
    """Whether an engine error's text says the network failed rather than the work (a
    step, a service): worth retrying."""
    return not _PERMANENT_HINT.search(message) and bool(_TRANSIENT_HINT.search(message))


# -- the client's own logs --------------------------------------------------------------

_LEFT_OUT = "(a setSecret request, left out of the log: it holds a secret's value)"


class _NoSecretValues(logging.Filter):
    """gql logs every request it sends, and the call it builds, at DEBUG; a ``setSecret``
    request holds the secret's value in plain text (the engine keeps it out of its
    own logs and traces), so a user's ``logging.basicConfig(level=DEBUG)`` printed it.
    Such a record keeps its place, with its text left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "setSecret" in record.getMessage():
            record.msg, record.args = _LEFT_OUT, ()
        return True


_SECRET_FILTER = _NoSecretValues()
for _name in ("gql.transport.httpx", "gql.dsl"):  # the request, and the call's arguments
    logging.getLogger(_name).addFilter(_SECRET_FILTER)


# -- the connection --------------------------------------------------------------------


class _Connection:
    """The process's one session: its client, the loop it belongs to, its exit stack."""

    def __init__(self) -> None:
        self.client: dagger.Client | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stack: contextlib.AsyncExitStack | None = None
        self.memo: dict[Any, Any] = {}  # key -> its answer's task, for the session (remembered)
        self.number = 0  # of the session; 0 before the first
        self.handles: dict[int, weakref.ref[Any]] = {}  # objects made in this session
        self.log = EngineLog()  # the SDK's log_output, for every session of the process
        # Weak, so the loops of finished asyncio.run() calls are not kept alive.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        self._guard = threading.Lock()

    def lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        """One opening at a time per loop; queries themselves never take it."""
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
            return lock

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        dagger = require_sdk()
        _prefer_cli_on_path()
        stack = contextlib.AsyncExitStack()
        begun = self.log.begin_session()
        noted: dict[str, str] = {}
        try:
            client = await stack.enter_async_context(dagger.Connection(_config(dagger, noted)))
        except BaseException as exc:
            await stack.aclose()
            if not isinstance(exc, Exception):  # cancelled or interrupted: as it is
                raise
            raise _connect_error(dagger, exc, begun) from exc
        self.client, self.loop, self.stack = client, loop, stack
        self.number += 1
        if "version" in noted:  # (the SDK's check on connecting asked it: not asked again)
            answered = self.memo["version"] = loop.create_future()
            answered.set_result(noted["version"])

    def abandon(self) -> None:
        """Drop a session whose loop is gone or elsewhere, closing it there if it can."""
        loop, stack = self.loop, self.stack
        self.forget()
        if stack is not None and loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(stack.aclose(), loop)

    def forget(self) -> None:
        """Drop everything that belongs to the session (the caller closes its stack)."""
        self.client = self.loop = self.stack = None
        self.memo, self.handles = {}, {}

    async def close(self) -> None:
        stack = self.stack
        self.forget()
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()


_connection = _Connection()


async def client() -> dagger.Client:
    """The connected Dagger client of this process, opened on first use.

    Raises
    ------
    ExecutorUnavailable
        No SDK, or no engine could be started or reached.
    TransientError
        The engine was reachable but the connection failed (worth retrying).
    """
    loop = asyncio.get_running_loop()
    conn = _connection
    if conn.client is not None and conn.loop is loop:
        return conn.client
    async with conn.lock(loop):
        if conn.client is not None and conn.loop is not loop:
            log.warning(
                "dagnb: the event loop changed since the Dagger connection was opened; "
                "reconnecting on the new loop"
            )
            conn.abandon()
        if conn.client is None:
            await conn.open(loop)
    assert conn.client is not None
    return conn.client


@contextlib.asynccontextmanager
async def fresh_session() -> Any:
    """``async with fresh_session() as dag``: a client of its own in a new engine
    session, closed after; the engine resolves tags once per session, so only a new
    one sees a tag that moved. Under ``dagger run`` (``DAGGER_SESSION_PORT``) every
    client joins that run's session, and a moved tag is seen after it restarts."""
    dagger = require_sdk()
    _prefer_cli_on_path()
    begun = _connection.log.begin_session()
    try:
        opened = dagger.Connection(_config(dagger))
        dag = await opened.__aenter__()
    except Exception as exc:
        raise _connect_error(dagger, exc, begun) from exc
    try:
        yield dag
    finally:
        await opened.close()


async def remembered(key: Hashable, ask: Callable[[], Awaitable[Any]]) -> Any:
    """``await ask()`` once per session: the engine's version, an image's user (tags
    resolve once per session in the engine too). A new session asks again.

    Steps that start together ask together: the first asks, the others await its
    answer. The asking runs as a task of its own (shielded), so a caller cancelled
    (its step's timeout) cancels no one else's wait; a failed answer is forgotten, so
    the next caller asks again."""
    await client()
    memo = _connection.memo
    asking = memo.get(key)
    if asking is None:
        asking = memo[key] = asyncio.ensure_future(ask())
        asking.add_done_callback(functools.partial(_forget_failed, memo, key))
    return await asyncio.shield(asking)


def _forget_failed(memo: dict[Any, Any], key: Hashable, asked: asyncio.Future[Any]) -> None:
    # Reading the exception also keeps asyncio from logging it as never retrieved.
    if (asked.cancelled() or asked.exception() is not None) and memo.get(key) is asked:
        del memo[key]


async def reopen(stale: Any) -> bool:
    """After a connection failure on client ``stale``: if the session does not answer
    any more, close it, once, so that the next :func:`client` opens a new one.

    False when the session still answers (a passing hiccup: its services and objects
    stay) or another step already closed it.
    """
    conn = _connection
    if stale is None or conn.client is not stale:
        return False
    if await _answers(stale) or conn.client is not stale:
        return False
    log.warning("dagnb: lost the Dagger session; the next step opens a new one")
    if conn.loop is asyncio.get_running_loop():
        stack = conn.stack
        conn.forget()
        if stack is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(stack.aclose(), _CLOSE_TIMEOUT)
    else:
        conn.abandon()
    return True


async def _answers(dag: Any) -> bool:
    """Whether the session still answers a trivial query (within a few seconds)."""
    try:
        await asyncio.wait_for(dag.version(), _PROBE_TIMEOUT)
    except Exception:
        return False
    return True


def engine_log() -> EngineLog:
    """The stream the engine's progress output goes to (see
    :mod:`dagnb.executors.dagger.enginelog`): attach a run's folder to keep it."""
    return _connection.log


def session_number() -> int:
    """The current session's number (0: none yet); each new session counts one more."""
    return _connection.number if _connection.client is not None else 0


def adopt(handle: Any) -> Any:
    """Note that ``handle`` (a Directory, a Service) was made in the current session."""
    handles = _connection.handles
    key = id(handle)
    handles[key] = weakref.ref(handle, lambda _ref: handles.pop(key, None))
    return handle


def from_this_session(handle: Any) -> bool:
    """Whether ``handle`` was :func:`adopt`-ed in the current session (usable in it)."""
    ref = _connection.handles.get(id(handle))
    return ref is not None and ref() is handle


async def constant(key: Hashable, make: Callable[[], Any]) -> Any:
    """``make()``, an object that stays the same all session (an empty directory, a
    cache volume), whose ID is asked once: the SDK otherwise resolves every object
    argument with a round trip of its own, for every step that uses it."""
    obj = make()
    ident = await remembered(("id", key), obj.id)
    known = _known_id_type(type(obj))(obj._ctx)  # the SDK's query context, as it copies it
    known._dagnb_id = ident
    return known


@functools.cache
def _known_id_type(cls: type) -> type:
    """A subclass of an SDK type whose ``id()`` answers from memory."""
    async def id(self: Any) -> str:
        return self._dagnb_id

    return type(cls.__name__, (cls,), {"__slots__": ("_dagnb_id",), "id": id,
                                       "__module__": __name__})


async def engine_version() -> tuple[int, ...]:
    """The engine's version as numbers (``v0.21.8`` -> ``(0, 21, 8)``), asked once per
    session: features such as ``withVolatileVariable`` (0.21.4) depend on it."""
    dag = await client()
    return _version_numbers(await remembered("version", dag.version))


def _version_numbers(text: str) -> tuple[int, ...]:
    """``"v0.21.8"`` -> ``(0, 21, 8)``; a development build (no numbers) counts as newest."""
    numbers = re.findall(r"\d+", text.split("-", 1)[0])
    return tuple(int(n) for n in numbers[:3]) or (999,)


async def aclose() -> None:
    """Close the connection (on its own loop); the next :func:`client` reopens it."""
    if _connection.loop is asyncio.get_running_loop():
        await _connection.close()
    else:
        _connection.abandon()


def _close_at_exit() -> None:
    """Close the session on the loop that owns it (a background thread's, usually)."""
    loop = _connection.loop
    if _connection.client is None or loop is None or loop.is_closed():
        return
    try:
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(_connection.close(), loop)
            future.result(timeout=_CLOSE_TIMEOUT)
        else:
            loop.run_until_complete(_connection.close())
    except Exception as exc:  # exiting anyway; say why the engine may log a lost client
        log.debug("dagnb: closing the Dagger connection at exit failed: %s", exc)


atexit.register(_close_at_exit)


def _prefer_cli_on_path() -> None:
    # The SDK only uses a CLI named by this variable and would otherwise download one
    # (which fails offline); a user who installed `dagger` expects that one to be used.
    if os.environ.get("DAGGER_SESSION_PORT") or os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN"):
        return
    if cli := shutil.which("dagger"):
        os.environ["_EXPERIMENTAL_DAGGER_CLI_BIN"] = cli


def _config(dagger: Any, noted: dict[str, str] | None = None) -> Any:
    """SDK settings: dagnb's runner retries steps, so the SDK retries a query only once;
    the engine's progress output goes to the runs' ``engine.log`` (:func:`engine_log`).
    Given ``noted``, the engine's version the SDK asks on connecting goes there
    (:func:`_noting_version`).

    Only ``Exception``s are retried: tenacity catches ``BaseException``, and retrying a
    ``CancelledError`` would swallow a step's timeout or cancel (the request would be
    sent again and awaited to its end). An answered query (``TransportQueryError``,
    an exec that failed) is never sent twice.
    """
    import tenacity
    from gql.transport.exceptions import TransportQueryError

    execute = tenacity.retry(
        retry=(tenacity.retry_if_exception_type(Exception)
               & tenacity.retry_if_not_exception_type(TransportQueryError)),
        stop=tenacity.stop_after_attempt(2),
        wait=tenacity.wait_fixed(0.5),
        reraise=True,
    )
    connect = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.5),
                             reraise=True)
    if noted is not None:
        execute = _noting_version(execute, noted)
    return dagger.Config(retry=dagger.Retry(connect=connect, execute=execute),
                         log_output=_connection.log)


def _noting_version(retry: Callable[[Any], Any], noted: dict[str, str]) -> Callable[[Any], Any]:
    """The SDK's ``execute`` retry decorator, which also puts the answer of the first
    ``{ version }`` query into ``noted``: the SDK asks it on connecting (a compatibility
    check) and drops it, and dagnb would otherwise ask the same again
    (:func:`engine_version`). Every answer passes here: only its keys are looked at."""
    def decorate(execute: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        retried = retry(execute)

        async def noting(*args: Any, **kwargs: Any) -> Any:
            answer = await retried(*args, **kwargs)
            data = getattr(answer, "data", None)
            if not noted and isinstance(data, dict) and data.keys() == {"version"}:
                noted["version"] = data["version"]
            return answer

        return noting

    return decorate


def _connect_error(dagger: Any, exc: Exception, begun: int) -> DagnbError:
    """``begun``: the engine log's :meth:`~EngineLog.begin_session` for this opening."""
    found = detect()
    if not found.available:
        return ExecutorUnavailable(f"executor 'dagger' is not available: {found.reason}")
    if isinstance(exc, dagger.SessionError):
        # The CLI is there but could not start an engine (no container runtime, ...).
        return ExecutorUnavailable(
            f"executor 'dagger' could not start an engine: {_cli_reason(exc, begun)}")
    if isinstance(exc, (dagger.ProvisionError, dagger.DownloadError)):
        return ExecutorUnavailable(f"executor 'dagger' could not start an engine: {exc}")
    if status := _token_refused(exc):
        return ExecutorUnavailable(_TOKEN_REFUSED.format(
            where=_session_named(os.environ.get("DAGGER_SESSION_PORT")), status=status))
    if (port := os.environ.get("DAGGER_SESSION_PORT")) and _refused(exc):
        return TransientError(
            f"could not connect to the Dagger session on 127.0.0.1:{port} "
            "(DAGGER_SESSION_PORT): nothing answers there; restart `dagger run` (the "
            "session ends with it), or unset DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN "
            "so that dagnb starts an engine with the dagger CLI")
    return TransientError(f"could not connect to the Dagger engine: {exc}")


_TOKEN_REFUSED = (
    "could not connect to the Dagger session{where}: it refused DAGGER_SESSION_TOKEN "
    "({status}); set DAGGER_SESSION_TOKEN to that session's token (`dagger run` sets it "
    "for the command it runs), or unset DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN so "
    "that dagnb starts an engine with the dagger CLI")


def _session_named(port: str | None) -> str:
    return f" on 127.0.0.1:{port} (DAGGER_SESSION_PORT)" if port else ""


def _token_refused(exc: BaseException) -> str:
    """"401 Unauthorized" (or 403) when the engine refused the session token: the
    token is wrong, which no retry mends; "" otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(getattr(seen, "response", None), "status_code", None)  # httpx's
        if status is None:
            status = getattr(seen, "code", None)  # gql's TransportServerError
        if status in (401, 403):
            return "401 Unauthorized" if status == 401 else "403 Forbidden"
        seen = seen.__cause__ or seen.__context__
    return ""


def _cli_reason(exc: Exception, begun: int) -> str:
    """The CLI's own reason, masked as the engine log is, and where all its words are:
    the SDK's message says only that the command exited (it keeps no copy of a stderr
    it hands to ``log_output``)."""
    log = _connection.log
    reason = log.reason(begun) or str(exc)
    where = " and ".join(str(path) for path in log.paths())
    return reason + (f" (the dagger CLI's output is in {where})" if where else "")


def _refused(exc: BaseException) -> bool:
    """Whether nothing listens at the session's port (a ``dagger run`` that ended)."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx.ConnectError, ConnectionRefusedError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
