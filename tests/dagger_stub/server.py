"""A Dagger engine stand-in: GraphQL over HTTP on 127.0.0.1, for the real dagger-io client.

The client POSTs ``{"query": ...}`` to ``/query`` with HTTP Basic auth (the session
token as user name, an empty password), introspects the schema, sends ``{ version }``,
then one query per awaited call with the whole call chain and its arguments inlined.
Like the engine, every GraphQL answer is HTTP 200 (the client retries anything else);
failures are ``errors`` entries. Every request is recorded for the tests to inspect.

Like the engine, an exec whose client goes away (a cancelled request, a client-side
timeout) is killed and its result is not kept.

A request with another session token is answered ``401 Unauthorized``, as the engine
answers it, and counted (:attr:`StubServer.unauthorized`), not recorded.

Faults for tests: :meth:`StubServer.fail` makes the next matching requests drop the
connection without an answer, answer HTTP 500, or answer a GraphQL error.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import select
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import graphql

from .resolvers import Obj, StubEngine

__all__ = ["Fault", "RecordedQuery", "StubServer"]

SCHEMA_FILE = Path(__file__).with_name("schema.graphql")


@dataclasses.dataclass(frozen=True)
class RecordedQuery:
    """One request as the stub received it."""

    query: str
    variables: dict[str, Any] | None
    at: float
    traceparent: str | None = None  # the OpenTelemetry context the client sent


@dataclasses.dataclass
class Fault:
    """Answer the next ``times`` requests whose query contains ``match`` with ``kind``."""

    kind: str  # "drop" | "http500" | "error"
    match: str = ""
    times: int = 1
    message: str = "stub: injected failure"


def _resolve_field(obj: Obj, info: graphql.GraphQLResolveInfo, **args: Any) -> Any:
    # Every field is a method r_<field> on the object; arguments keep their GraphQL names.
    return getattr(obj, "r_" + info.field_name)(**args)


def build_stub_schema() -> graphql.GraphQLSchema:
    """The stub's SDL with Node resolving to each object's own type."""
    schema = graphql.build_schema(SCHEMA_FILE.read_text())
    node = schema.get_type("Node")
    assert isinstance(node, graphql.GraphQLInterfaceType)
    node.resolve_type = lambda obj, _info, _type: obj.type_name
    return schema


class StubServer:
    """The stub engine on an ephemeral port, served from a daemon thread."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="dagger-stub-")
        self.engine = StubEngine(Path(workdir or self._tmp.name))
        self.schema = build_stub_schema()
        self.token = secrets.token_hex(16)
        self.queries: list[RecordedQuery] = []
        self.faults: list[Fault] = []
        self.session_lost = False  # see lose_session
        self.unauthorized = 0  # requests refused for a wrong session token
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def env(self) -> dict[str, str]:
        """The variables that point the dagger SDK at this stub."""
        return {"DAGGER_SESSION_PORT": str(self.port), "DAGGER_SESSION_TOKEN": self.token}

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._tmp:
            self._tmp.cleanup()

    def reset(self) -> None:
        """Forget recorded queries, faults, exec results and counters (between tests)."""
        with self._lock:
            self.queries.clear()
            self.faults.clear()
            self.session_lost = False
            self.unauthorized = 0
        self.engine.reset()

    def lose_session(self) -> None:
        """The session dies and the engine restarts: every request of the old client is
        dropped, and a new session (which starts by introspecting the schema) finds an
        engine that knows none of the old objects."""
        self.engine.restart()
        self.session_lost = True

    def fail(self, kind: str, match: str = "", times: int = 1, message: str = "") -> None:
        """Inject a fault; see :class:`Fault`."""
        fault = Fault(kind, match, times, message or Fault.message)
        with self._lock:
            self.faults.append(fault)

    def texts(self, contains: str = "") -> list[str]:
        """The recorded query texts (optionally only those containing a string)."""
        return [q.query for q in self.queries if contains in q.query]

    # -- request handling -------------------------------------------------------------

    def take_fault(self, query: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.match in query and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def record(self, body: dict[str, Any], traceparent: str | None = None) -> RecordedQuery:
        entry = RecordedQuery(body.get("query", ""), body.get("variables"), time.monotonic(),
                              traceparent)
        with self._lock:
            self.queries.append(entry)
        return entry

    def execute(self, body: dict[str, Any]) -> dict[str, Any]:
        result = graphql.graphql_sync(
            self.schema,
            body.get("query", ""),
            root_value=self.engine.make("Query", {}),
            variable_values=body.get("variables"),
            operation_name=body.get("operationName"),
            field_resolver=_resolve_field,
        )
        return result.formatted


def _handler_for(server: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test output stays clean

        def do_POST(self) -> None:
            if self.path != "/query":
                return self._answer(404, {"message": f"no route {self.path}"})
            if not self._authorized():
                return self._unauthorized()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            server.record(body, self.headers.get("traceparent"))
            if server.session_lost and "IntrospectionQuery" not in body.get("query", ""):
                return self._inject(Fault("drop"))
            server.session_lost = False
            if "IntrospectionQuery" in body.get("query", ""):  # a client's new session
                server.engine.new_session()
            fault = server.take_fault(body.get("query", ""))
            if fault:
                return self._inject(fault)
            server.engine.request.alive = self._client_alive
            try:
                answer = server.execute(body)
            finally:
                server.engine.request.alive = None
            self._answer(200, answer)

        def _client_alive(self) -> bool:
            """False once the client closed its end (a cancelled request, a timeout)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return not readable or self.connection.recv(1, socket.MSG_PEEK) != b""
            except OSError:
                return False

        def _authorized(self) -> bool:
            expected = base64.b64encode(f"{server.token}:".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"

        def _unauthorized(self) -> None:
            """The engine's answer to a wrong token (engine/client/client.go ServeHTTP)."""
            self.rfile.read(int(self.headers.get("Content-Length", 0)))  # (kept alive)
            with server._lock:
                server.unauthorized += 1
            self._answer(401, {"message": "invalid session token"}, {
                "WWW-Authenticate": 'Basic realm="Access to the Dagger engine session"'})

        def _inject(self, fault: Fault) -> None:
            if fault.kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif fault.kind == "http500":
                self._answer(500, {"message": fault.message})
            else:
                self._answer(200, {"data": None, "errors": [{"message": fault.message}]})

        def _answer(self, status: int, payload: dict[str, Any],
                    headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (it was cancelled)

    return Handler
