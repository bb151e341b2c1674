"""The webhook's HTTPS server: HTTP/1.1 (h11) over asyncio TLS, routing to review.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11

from injector import review
from injector.metrics import CONTENT_TYPE, InjectorMetrics, make_metrics
from injector.mutate import Injector
from injector.tls import ReloadingServerTLS

log = logging.getLogger("pilotfish.injector")

# The API server's request body limit is 3 MiB; a review cannot be larger.
MAX_BODY = 3 * 1024 * 1024
# The API server waits at most timeoutSeconds (10) for us: no point holding a request longer.
REQUEST_TIMEOUT = 10.0
# Keep-alive connections from the API server are reused; an idle one is closed after this.
IDLE_TIMEOUT = 90.0
# Bounds every connection's loop, even a well-behaved keep-alive one.
MAX_REQUESTS_PER_CONNECTION = 10_000
# A request trickled in byte by byte still ends: waiting for it plus reading it, at most.
REQUEST_DEADLINE = IDLE_TIMEOUT + REQUEST_TIMEOUT
# The API server keeps a few connections per replica; more than this is not the API server.
MAX_CONNECTIONS = 256


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _text(status: int, text: str) -> Reply:
    return Reply(status, (text + "\n").encode())


class WebhookServer:
    """Routes: POST /inject, GET /healthz, GET /readyz, GET /metrics."""

    def __init__(
        self,
        injector: Injector,
        tls: ReloadingServerTLS,
        metrics: InjectorMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.injector = injector
        self.tls = tls
        self.metrics = metrics or make_metrics()
        self.clock = clock
        self.ready = True
        self._server: asyncio.Server | None = None
        self._connections = 0

    # -- routing (no I/O) --------------------------------------------------------------

    def route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path = target.split("?", 1)[0]
        if path == "/inject":
            if method != "POST":
                return _text(405, "POST an AdmissionReview to /inject")
            return self._inject(headers.get("content-type"), body)
        if method != "GET":
            return _text(405, f"{method} is not allowed on {path}")
        if path == "/healthz":
            return _text(200, "ok")
        if path == "/readyz":
            return _text(200, "ready") if self.ready else _text(503, "not ready")
        if path == "/metrics":
            return Reply(200, self.metrics.exposition(), CONTENT_TYPE)
        return _text(404, f"no route for {path}")

    def _inject(self, content_type: str | None, body: bytes) -> Reply:
        started = self.clock()
        try:
            outcome = review.handle_review(body, content_type, self.injector)
        except Exception:  # a bug must cost one pod a clear denial, never a 500
            log.exception("review failed")
            outcome = review.Outcome(200, _internal_error(body), review.FAILED, "internal")
        self.metrics.record(outcome, self.clock() - started)
        if outcome.result != review.IGNORED:
            log.info("review %s: %s", outcome.result, outcome.reason)
        if isinstance(outcome.body, str):
            return _text(outcome.http_status, outcome.body)
        payload = json.dumps(outcome.body, separators=(",", ":")).encode()
        return Reply(outcome.http_status, payload, "application/json")

    # -- I/O ---------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._connection, host, port, ssl=self.tls.context, ssl_handshake_timeout=10.0
        )
        sockets = self._server.sockets
        bound: int = sockets[0].getsockname()[1] if sockets else port
        return bound

    async def watch_certificates(self, interval: float, stop: asyncio.Event) -> None:
        """Poll the TLS files until `stop` is set (a Secret rotates within a minute or so)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            reloaded = self.tls.maybe_reload()
            if reloaded is not None:
                self.metrics.cert_reloads.labels("ok" if reloaded else "error").inc()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections <= MAX_CONNECTIONS:
                await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, h11.ProtocolError, OSError):
            pass  # the peer went away or misbehaved; nothing to answer
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _next_event(
        self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float
    ) -> Any:
        # Bounded: each pass reads data or hits EOF (which ends it), and the caller's
        # REQUEST_DEADLINE caps the whole request.
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            # asyncio.timeout, not wait_for: no extra task per read (3.11's wait_for makes one).
            async with asyncio.timeout(timeout):
                data = await reader.read(65536)
            conn.receive_data(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            try:
                async with asyncio.timeout(REQUEST_DEADLINE):
                    reply = await self._read_request(conn, reader)
                if reply is None:
                    return
            except h11.RemoteProtocolError as exc:
                if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                    return
                reply = _text(exc.error_status_hint, f"bad request: {exc}")
                await self._send(conn, writer, reply, close=True)
                return
            too_large = reply.status == 413
            await self._send(conn, writer, reply, close=too_large)
            if too_large or conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return  # the client still has an unread body in flight: close

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Reply | None:
        """One request read and routed; None when the client closed or broke off."""
        event = await self._next_event(conn, reader, IDLE_TIMEOUT)
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed, or PAUSED after a pipelined close
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in event.headers
        }
        body = bytearray()
        for _ in range(MAX_BODY):  # bounded: every pass adds at least one byte or ends
            part = await self._next_event(conn, reader, REQUEST_TIMEOUT)
            if isinstance(part, h11.EndOfMessage):
                break
            if not isinstance(part, h11.Data):
                return None
            body += part.data
            if len(body) > MAX_BODY:
                self.metrics.failed.labels("too-large").inc()
                return _text(413, f"body over {MAX_BODY} bytes")
        return self.route(
            event.method.decode("latin-1"), event.target.decode("latin-1"), headers, bytes(body)
        )

    @staticmethod
    async def _send(
        conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply, close: bool
    ) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
        ]
        if close:
            headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        data = (data or b"") + (conn.send(h11.Data(data=reply.body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        await writer.drain()


def _internal_error(body: bytes) -> dict[str, Any]:
    """A denial that still echoes the uid when the body had one."""
    uid = ""
    with contextlib.suppress(Exception):
        uid = str(json.loads(body)["request"]["uid"])
    return {
        "apiVersion": review.API_VERSION,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {"code": 500, "message": "pilotfish: internal error in the injector"},
        },
    }
