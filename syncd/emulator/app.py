"""HTTP handling: routing, Bearer auth, faults, and answers that keep connections usable.

Built on the standard library's threading HTTP server rather than an ASGI server: the
ambiguous fault must close the connection with no answer at all, which an ASGI server
does not allow (an app that fails before answering gets a 500 from uvicorn). Here the
handler owns its socket and simply shuts it.

Order for a ``/v1`` request: route (404/405) → fault draw (down → 503; added latency;
429; 5xx) → auth (401) → endpoint → possibly drop the connection unanswered. A body the
endpoint did not read is read and thrown away before the answer, so a 401 or 413 reaches
the client instead of a broken pipe.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from . import endpoints as ep
from .forms import FORM_OVERHEAD, MAX_FILE_BYTES, Body, ClientGone
from .wire import ApiError, Reply, error_reply

log = structlog.get_logger(__name__)

ROUTES: tuple[tuple[str, str, ep.Endpoint], ...] = (
    ("POST", "/v1/training-asset", ep.upload),
    ("GET", "/v1/my-uploaded-assets", ep.list_assets),
    ("GET", "/v1/assets/{id}", ep.get_asset),
    ("DELETE", "/v1/assets/{id}", ep.delete_asset),
    ("GET", "/files/{id}", ep.get_file),
    ("GET", "/thumbnails/{id}", ep.get_thumbnail),
    ("GET", "/_emulator/state", ep.inspect_state),
    ("GET", "/_emulator/faults", ep.get_faults),
    ("POST", "/_emulator/faults", ep.set_faults),
    ("POST", "/_emulator/api-key", ep.set_api_key),
    ("POST", "/_emulator/reset", ep.reset),
)


def route(method: str, path: str) -> tuple[str, ep.Endpoint, dict[str, str]]:
    """Find the endpoint; the route key (``GET /v1/assets/{id}``) names it in the counts."""
    segments = path.split("/")
    allowed: list[str] = []
    for verb, pattern, endpoint in ROUTES:
        params = _match(pattern.split("/"), segments)
        if params is None:
            continue
        if verb == method:
            return f"{verb} {pattern}", endpoint, params
        allowed.append(verb)
    if allowed:
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed here",
                       {"Allow": ", ".join(allowed)})  # fmt: skip
    raise ApiError(404, "not_found", "no such endpoint")


_CONTROLS_LOCAL = error_reply(403, "forbidden", "the emulator's controls answer this machine only")


def is_loopback_peer(address: Any) -> bool:
    """Whether a client address is this machine (IPv4 127/8, IPv6 ::1 or v4-mapped 127/8)."""
    host = str(address[0]) if isinstance(address, tuple) and address else ""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _match(pattern: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want == "{id}" and got:
            params["id"] = unquote(got)
        elif want != got:
            return None
    return params


class Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, so it may serve many requests."""

    protocol_version = "HTTP/1.1"
    server_version = "AssetsAPIEmulator/1.0"
    timeout = 30  # an idle keep-alive connection is let go after this long
    disable_nagle_algorithm = True  # headers and body go out in two writes
    body: Body

    @property
    def state(self) -> ep.State:
        return cast("EmulatorHTTPServer", self.server).state

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            reply = self._handle()
            if reply is not None and self.body.remaining and not self.body.drain():
                self.close_connection = True
        except ClientGone:
            self.close_connection = True
            return
        if reply is not None:
            self._send(reply)

    def _handle(self) -> Reply | None:
        """The answer to send, or ``None`` when the connection was dropped on purpose."""
        try:
            self.body = self._body()
            key, endpoint, params = route(self.command, urlsplit(self.path).path)
            pattern = key.split(" ", 1)[1]
            if pattern.startswith("/_emulator/") and not is_loopback_peer(self.client_address):
                return _CONTROLS_LOCAL
            if not pattern.startswith("/_emulator/"):
                self.state.count(key)
            request = self._request(params)
            if pattern.startswith("/v1/"):
                return self._api(endpoint, request)
            return endpoint(self.state, request)
        except ApiError as exc:
            return exc.reply()
        except ClientGone:
            raise
        except Exception:
            log.exception("emulator.request_failed", method=self.command, path=self.path)
            return error_reply(500, "internal", "the emulator failed on this request")

    def _body(self) -> Body:
        """Framed by Content-Length only; a body that cannot be framed ends the connection."""
        self.body = Body(self.rfile, None)  # nothing to drain until the framing is known
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise ApiError(411, "length_required", "send the body with a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return self.body
        if not raw.strip().isdigit():
            self.close_connection = True
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        return Body(self.rfile, int(raw))

    def _request(self, params: dict[str, str]) -> ep.Request:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        host = self.headers.get("Host") or self.state.address
        return ep.Request(params, query, self.headers, self.body, f"http://{host}")

    def _api(self, endpoint: ep.Endpoint, request: ep.Request) -> Reply | None:
        decision = self.state.faults.decide()
        if decision.down:
            return error_reply(503, "unavailable", "the service is down for maintenance")
        if decision.latency:
            self.state.stopping.wait(decision.latency)
        if decision.status == 429:
            return error_reply(429, "rate_limited", "too many requests, slow down",
                               {"Retry-After": str(decision.retry_after)})  # fmt: skip
        if decision.status is not None:
            return error_reply(decision.status, "server_error", "the service failed")
        if not self.state.accepts(self.headers.get("Authorization")):
            raise ApiError(401, "unauthorized", "missing or invalid API key",
                           {"WWW-Authenticate": 'Bearer realm="assets"'})  # fmt: skip
        if self.command == "POST" and (late := self.state.faults.late()):
            self._answer_late(request, late)
        try:
            reply = endpoint(self.state, request)
        except ApiError as exc:
            reply = exc.reply()
        if decision.drop_after:
            self._drop()
            return None
        return reply

    def _answer_late(self, request: ep.Request, seconds: float) -> None:
        """A slow server: take the whole body now, store it only after ``seconds``.

        The client may time out and hang up meanwhile; the upload is stored all the same
        (its answer then goes nowhere), which is what a late answer looks like to a client.
        """
        raw = self.body.read_all(MAX_FILE_BYTES + FORM_OVERHEAD)
        request.body = self.body = Body(io.BytesIO(raw), len(raw))
        self.state.stopping.wait(seconds)

    def _drop(self) -> None:
        """The ambiguous failure: the work is done, but the client never hears of it."""
        if self.body.remaining:
            self.body.drain()
        self.state.faults.count_drop()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, reply: Reply) -> None:
        body = reply.body()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            if body:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request counts in the inspection API say what happened."""


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Joins its handler threads on close, and can cut open connections to get there."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], state: ep.State) -> None:
        self.state = state
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Skip the reverse DNS lookup ``HTTPServer`` does: it can stall a start for seconds."""
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Wake handlers blocked on idle keep-alive connections so they can be joined."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal life for this server; anything else is logged."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            log.error("emulator.connection_failed", exc_info=True)
