"""The Sippy simulator's HTTP side: the Digest-protected XML-RPC endpoint `POST /xmlapi/xmlapi`,
the JSON control API under `/_sim/` (never behind digest), fault injection, and the lifecycle a
test or the `smsledger sippy-sim` command drives (sippy-api.md, "Its interface").

The switch itself (accounts, payments, methods) lives in `sim_state`. Standard library only: the
server must not share code paths with the `requests`-based client it is there to test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
import sys
import threading
import xmlrpc.client
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs
from urllib.request import parse_http_list, parse_keqv_list

from sippy_simulator.switch import (
    FAULT_BAD_PARAMETER,
    FAULT_CODES,
    FAULT_NOT_XMLRPC,
    FaultRule,
    SimulatorState,
)

XMLAPI_PATH = "/xmlapi/xmlapi"
REALM = "sippy"
# What one XML-RPC call answers: its struct (as dumps() wants it, in a 1-tuple) or a fault.
_Answer = tuple[dict[str, Any]] | xmlrpc.client.Fault
_MAX_NONCES = 4096  # issued nonces remembered; the oldest are forgotten (clients re-challenge)


class _Server(ThreadingHTTPServer):
    """One simulator: the shared state, the credentials and the nonces it issued."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a handler sleeping in a `slow` fault

    def __init__(
        self, address: tuple[str, int], state: SimulatorState, login: tuple[str, str] | None
    ) -> None:
        super().__init__(address, _Handler)
        self.state, self.login = state, login
        self.stopping = threading.Event()  # wakes sleeping handlers when the server stops
        self.opaque = secrets.token_hex(16)
        self._nonces: OrderedDict[str, None] = OrderedDict()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def issue_nonce(self) -> str:
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces[nonce] = None
            while len(self._nonces) > _MAX_NONCES:
                self._nonces.popitem(last=False)
        return nonce

    def knows_nonce(self, nonce: str) -> bool:
        with self._lock:
            return nonce in self._nonces

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, reset) or a connection cut by stop() is expected.
        if not self.stopping.is_set() and not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Wake handler threads blocked reading a kept-alive connection."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Apache answers the real client
    server_version = "SippySimulator/1.0"
    timeout = 30  # an idle kept-alive connection frees its thread after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle and the client's
        # delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests and demos read the state, not an access log."""

    @property
    def sim(self) -> _Server:
        return cast(_Server, self.server)

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def _route(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():  # no chunked bodies: every client here sends a length
            self.close_connection = True
            return self._send(400, b"bad Content-Length", "text/plain")
        body = self.rfile.read(int(length))
        path, _, query = self.path.partition("?")
        if path == XMLAPI_PATH:
            if self.command != "POST":
                return self._send(405, b"POST only", "text/plain")
            return self._xmlapi(body)
        if path.startswith("/_sim/"):
            return self._control(path, query, body)
        return self._send_json(404, {"error": f"no such path: {path}"})

    # -- the XML-RPC endpoint ------------------------------------------------------------------

    def _xmlapi(self, body: bytes) -> None:
        if self.sim.login is not None and not self._digest_ok():
            return self._challenge(self.sim.issue_nonce())
        try:
            params, method = xmlrpc.client.loads(body)
        except Exception:  # expat and the unmarshaller raise many types for a bad body
            fault = xmlrpc.client.Fault(FAULT_NOT_XMLRPC, FAULT_CODES[FAULT_NOT_XMLRPC])
            return self._send_xml(fault)
        if method is None:
            return self._send_xml(xmlrpc.client.Fault(FAULT_NOT_XMLRPC, "not a method call"))
        if len(params) != 1 or not isinstance(params[0], dict):
            text = f"{FAULT_CODES[FAULT_BAD_PARAMETER]}: exactly one struct parameter expected"
            return self._send_xml(xmlrpc.client.Fault(FAULT_BAD_PARAMETER, text))
        struct_param: dict[str, Any] = params[0]
        rule = self.sim.state.take_fault(method, struct_param)
        if rule is None:
            return self._send_xml(self._apply(method, struct_param))
        self._injected(rule, lambda: self._apply(method, struct_param))

    def _injected(self, rule: FaultRule, apply: Callable[[], _Answer]) -> None:
        """Act out one injected fault (docs/sippy-simulator.md, "Fault injection")."""
        if rule.kind == "fault":
            self._send_xml(xmlrpc.client.Fault(rule.fault_code, rule.fault_string))
        elif rule.kind == "http_401":
            # A nonce the server never accepts: requests' digest auth retries a 401 once with
            # the new challenge; that retry fails too, so one client call sees one 401.
            self._challenge(secrets.token_hex(16))
        elif rule.kind == "http_5xx":
            status = rule.fault_code if 500 <= rule.fault_code <= 599 else 500
            self._send(status, rule.fault_string.encode(), "text/plain; charset=utf-8")
        elif rule.kind == "reset":
            self._reset_connection()
        elif rule.kind == "slow":
            if self._sleep(rule.delay_s):
                self._send_xml(apply())
        else:  # timeout_after_apply: the charge happens, the answer comes too late
            answer = apply()
            if self._sleep(rule.delay_s):
                self._send_xml(answer)

    def _apply(self, method: str, params: dict[str, Any]) -> _Answer:
        try:
            return (self.sim.state.call(method, params),)
        except xmlrpc.client.Fault as fault:
            return fault

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops meanwhile; False (and the connection closed) if so."""
        if self.sim.stopping.wait(seconds):
            self.close_connection = True
            return False
        return True

    def _reset_connection(self) -> None:
        # SO_LINGER (on, 0 s) makes close() send RST instead of FIN: the client sees a reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.rfile.close()  # makefile() holds a reference: the socket really closes only now
        self.close_connection = True

    def _send_xml(self, answer: _Answer) -> None:
        text = xmlrpc.client.dumps(answer, methodresponse=True, allow_none=True)
        self._send(200, text.encode(), "text/xml")

    # -- HTTP Digest (RFC 7616, MD5, qop="auth") ------------------------------------------------

    def _digest_ok(self) -> bool:
        assert self.sim.login is not None
        scheme, _, rest = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "digest":
            return False
        try:
            given = parse_keqv_list(parse_http_list(rest))
        except ValueError:  # an element without "="
            return False
        username, password = self.sim.login
        wanted = {"username": username, "realm": REALM, "uri": self.path, "qop": "auth"}
        if any(given.get(key) != value for key, value in wanted.items()):
            return False
        if given.get("algorithm", "MD5").upper() != "MD5" or "response" not in given:
            return False
        if given.get("opaque", self.sim.opaque) != self.sim.opaque:
            return False
        nonce, nc, cnonce = given.get("nonce", ""), given.get("nc", ""), given.get("cnonce", "")
        if not (self.sim.knows_nonce(nonce) and nc and cnonce):
            return False
        ha1 = _md5(f"{username}:{REALM}:{password}")
        ha2 = _md5(f"{self.command}:{self.path}")
        expected = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        return hmac.compare_digest(expected, given["response"].lower())

    def _challenge(self, nonce: str) -> None:
        challenge = (
            f'Digest realm="{REALM}", qop="auth", algorithm=MD5, nonce="{nonce}", '
            f'opaque="{self.sim.opaque}"'
        )
        self._send(401, b"401 Unauthorized", "text/plain", {"WWW-Authenticate": challenge})

    # -- the control API ----------------------------------------------------------------------

    def _control(self, path: str, query: str, body: bytes) -> None:
        state, verb = self.sim.state, self.command
        try:
            document = json.loads(body, parse_float=Decimal) if body.strip() else None
            if (verb, path) == ("GET", "/_sim/accounts"):
                return self._send_json(200, state.accounts())
            if (verb, path) == ("POST", "/_sim/accounts"):
                return self._send_json(200, state.put_account(_object(document)))
            if (verb, path) == ("GET", "/_sim/payments"):
                wanted = parse_qs(query).get("i_account", [""])[-1]
                i_account = int(wanted) if wanted else None
                return self._send_json(200, state.payments(i_account))
            if (verb, path) == ("GET", "/_sim/faults"):
                return self._send_json(200, state.faults())
            if (verb, path) == ("POST", "/_sim/faults"):
                return self._send_json(200, state.inject_fault(**_object(document)))
            if (verb, path) == ("DELETE", "/_sim/faults"):
                state.clear_faults()
                return self._send_json(200, {"result": "OK"})
            if (verb, path) == ("POST", "/_sim/reset"):
                state.reset()
                return self._send_json(200, {"result": "OK"})
        except (ValueError, TypeError) as error:  # json, int() and the state's checks
            return self._send_json(400, {"error": str(error)})
        known = ("/_sim/accounts", "/_sim/payments", "/_sim/faults", "/_sim/reset")
        status = 405 if path in known else 404
        self._send_json(status, {"error": f"{verb} {path} is not part of the control API"})

    def _send_json(self, status: int, document: object) -> None:
        body = json.dumps(document, default=_json_default, indent=1).encode()
        self._send(status, body, "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _object(document: object) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ValueError("the body must be a JSON object")
    return document


def _json_default(value: object) -> str:
    """Money as decimal strings ("100.00"), instants as RFC 3339 UTC."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class SimulatorHandle:
    """A running simulator: its URLs, its state, and `stop()`."""

    url: str  # "http://127.0.0.1:PORT" (base)
    xmlapi_url: str  # url + "/xmlapi/xmlapi"
    state: SimulatorState  # the same in-memory state the server uses
    _server: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        """Shut the server down promptly, even while handler threads sleep in injected faults."""
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self._thread.join(timeout=2)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_simulator(
    *,
    accounts: list[dict[str, Any]] | None = None,
    username: str = "smsledger",
    password: str = "secret",
    digest: bool = True,
    clock: Callable[[], datetime] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    strict_credit: bool = True,
) -> SimulatorHandle:
    """Serve a simulator from a daemon thread (port 0: a free port) and return its handle.

    Raises: ValueError for malformed accounts; OSError when the port cannot be bound.
    """
    state = SimulatorState(accounts, clock=clock, strict_credit=strict_credit)
    server = _Server((host, port), state, (username, password) if digest else None)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sippy-sim", daemon=True
    )
    thread.start()
    url_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    url = f"http://{url_host}:{server.server_port}"
    return SimulatorHandle(url, url + XMLAPI_PATH, state, server, thread)


def load_accounts(path: str) -> list[dict[str, Any]]:
    """The accounts file: a JSON list of {"i_account", "username", "currency", "balance",
    "credit_limit"}; fractional numbers are read as Decimal, never float.

    Raises: ValueError when it is not such a list; OSError when it cannot be read.
    """
    accounts = json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
        raise ValueError(f"{path}: expected a JSON list of account objects")
    return accounts


def serve(
    host: str, port: int, accounts_file: str | None, username: str, password: str, digest: bool
) -> None:
    """Run the simulator until interrupted (the `smsledger sippy-sim` command).

    Raises: ValueError for a malformed accounts file; OSError when the port cannot be bound.
    """
    accounts = load_accounts(accounts_file) if accounts_file else None
    handle = start_simulator(
        accounts=accounts, username=username, password=password, digest=digest, host=host, port=port
    )
    auth = f"digest as {username!r}" if digest else "no auth"
    print(
        f"Sippy simulator: {handle.xmlapi_url} ({auth}); control API {handle.url}/_sim/", flush=True
    )
    try:
        while handle._thread.is_alive():
            handle._thread.join(timeout=0.5)  # a timeout keeps Ctrl-C responsive
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
