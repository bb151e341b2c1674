"""A downstream connection: sniffs the protocol, then runs HTTP/1 exchanges or an opaque TCP relay.

This is the runtime half of Envoy's HTTP connection manager for HTTP/1: it feeds the
sans-IO server codec, applies the header policy, asks the pool for an upstream, and
moves bytes both ways with backpressure. One `Exchange` per request holds its state;
requests pipelined behind it wait, parsed, until its response is complete.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

from proxy.core import flags
from proxy.core.headers import forward_request_headers, header_value, strip_hop_by_hop
from proxy.core.local_reply import local_reply
from proxy.core.messages import (
    Data,
    EndOfMessage,
    Event,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgraded,
)
from proxy.core.sniff import Protocol, sniff
from proxy.runtime.listeners import Resolver
from proxy.runtime.tcp_proxy import TcpRelay
from proxy.telemetry import stats as S

if TYPE_CHECKING:
    from proxy.core.codecs.base import ServerCodec
    from proxy.runtime.h2_downstream import H2Downstream
    from proxy.runtime.upstream import Destination, UpstreamConnection
    from proxy.runtime.worker import Worker

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
# Parsed requests allowed to wait behind the one in flight before reading pauses.
MAX_PIPELINED_EVENTS = 64


class Exchange:
    """One request/response pair in flight: its upstream, and what logs and metrics need."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "details",
        "downstream",
        "finished",
        "flags",
        "request",
        "request_complete",
        "request_id",
        "response",
        "response_complete",
        "response_started",
        "response_trailers",
        "retried",
        "reused",
        "sent_continue",
        "start",
        "status",
        "telemetry",
        "timed",
        "trailers",
        "tunnel_pending",
        "upgrade_requested",
        "upgraded",
        "upstream",
        "upstream_buffer",
        "upstream_buffered",
        "upstream_head",
        "upstream_start",
    )

    def __init__(
        self, downstream: DownstreamConnection, request: RequestHead, start: float
    ) -> None:
        self.downstream = downstream
        self.request = request
        self.start = start
        self.upstream_start = 0.0
        self.request_id = b""
        self.upstream_head: RequestHead | None = None
        self.upstream: UpstreamConnection | None = None
        # Request body received before an upstream connection was ready (unframed:
        # the upstream codec frames it once it exists, so its state stays true).
        self.upstream_buffer: list[bytes] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        # CONNECT and Upgrade requests may turn the connection into a byte tunnel; what
        # the client sends after one is held until the upstream's 101 (or 2xx to
        # CONNECT) says so, since after a refusal those bytes must never reach it.
        self.upgrade_requested = request.upgrade is not None or request.method == b"CONNECT"
        self.tunnel_pending: list[bytes] = []
        self.upstream_buffered = 0
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.finished = False
        self.sent_continue = False
        self.upgraded = False
        self.reused = False
        self.retried = False
        self.status = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.flags: list[str] = []
        self.details = "via_upstream"
        # The response as the upstream sent it (headers after hop-by-hop removal), and
        # its trailers: telemetry reads grpc-status and friends from them.
        self.response: ResponseHead | None = None
        self.response_trailers: list[tuple[bytes, bytes]] = []
        # Per-request state a RequestObserver keeps (a span, say); None when unused.
        self.telemetry: object = None
        self.timed = False  # a route timeout is running (in the worker's deadline queue)

    # The pool and the upstream connection call these (UpstreamUser); an exchange that
    # has already finished ignores late callbacks instead of disturbing its successor.

    def upstream_ready(self, connection: UpstreamConnection, reused: bool) -> None:
        if self.finished:
            connection.pool.release(connection)
        else:
            self.downstream.on_upstream_ready(self, connection, reused)

    def upstream_failed(self, status: int, flag: str, details: str) -> None:
        if not self.finished:
            self.downstream.on_upstream_failed(self, status, flag, details)

    def upstream_events(self, events: list[Event]) -> None:
        if not self.finished:
            self.downstream.on_upstream_events(self, events)

    def upstream_lost(self, connection: UpstreamConnection) -> None:
        if not self.finished:
            self.downstream.on_upstream_lost(self, connection)

    def upstream_pause_writing(self) -> None:
        self.downstream.pause_reading(1)

    def upstream_resume_writing(self) -> None:
        self.downstream.resume_reading(1)


# Reasons reading from the client is paused; reading resumes when none is left.
_PAUSE_UPSTREAM_FULL = 1
_PAUSE_PIPELINE_FULL = 2
_PAUSE_NOT_CONNECTED = 4


class DownstreamConnection(asyncio.Protocol):
    """One accepted client connection."""

    __slots__ = (
        "client_address",
        "close_after",
        "codec",
        "destination",
        "exchange",
        "h2",
        "last_activity",
        "listener_name",
        "local_address",
        "mode",
        "paused",
        "pending",
        "relay",
        "resolve",
        "scheme",
        "sniff_buffer",
        "sniff_timer",
        "source",
        "stats",
        "transport",
        "worker",
        "write_paused",
    )

    def __init__(self, worker: Worker, resolve: Resolver, listener_name: str) -> None:
        self.worker = worker
        self.stats = worker.stats
        self.resolve = resolve
        self.listener_name = listener_name
        self.transport: asyncio.Transport | None = None
        self.mode = Protocol.UNDECIDED
        self.codec: ServerCodec | None = None
        self.exchange: Exchange | None = None
        self.pending: deque[Event] = deque()
        self.relay: TcpRelay | None = None
        self.sniff_buffer = b""
        self.sniff_timer: asyncio.TimerHandle | None = None
        self.destination: Destination | None = None
        self.source: str | None = None
        self.client_address = b"unknown"
        self.local_address = ""
        self.scheme = b"http"
        self.paused = 0
        self.write_paused = False
        self.close_after = False
        self.last_activity = 0.0
        self.h2: H2Downstream | None = None  # set once the HTTP/2 preface is seen

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = transport
        worker = self.worker
        transport.set_write_buffer_limits(worker.config.limits.buffer_high_water)
        self.stats[S.DOWNSTREAM_CX_TOTAL] += 1
        self.stats[S.DOWNSTREAM_CX_ACTIVE] += 1
        worker.connections.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_address = str(peer[0]).encode()
        local = transport.get_extra_info("sockname")
        if local:
            self.local_address = f"{local[0]}:{local[1]}"
        self.destination, self.source = self.resolve(transport)
        self.last_activity = worker.loop.time()
        self.sniff_timer = worker.loop.call_later(worker.config.timeouts.sniff, self._sniff_timeout)

    def data_received(self, data: bytes) -> None:
        self.stats[S.DOWNSTREAM_CX_RX_BYTES] += len(data)
        if self.mode is Protocol.HTTP1:
            self.last_activity = self.worker.loop.time()
            assert self.codec is not None
            self._dispatch(self.codec.receive(data))
        elif self.h2 is not None:
            self.h2.data_received(data)
        elif self.relay is not None:
            self.relay.from_downstream(data)
        else:
            self._sniff(data)

    def eof_received(self) -> bool | None:
        if self.relay is not None:
            return self.relay.downstream_eof()
        # As Envoy does for HTTP/1 by default: a client's FIN ends the connection and
        # any request in flight is reset (flag DC), since most clients that half-close
        # have in fact gone away.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats[S.DOWNSTREAM_CX_ACTIVE] -= 1
        if self.sniff_timer is not None:
            self.sniff_timer.cancel()
        if self.relay is not None:
            self.relay.downstream_lost()
        if self.h2 is not None:
            self.h2.connection_lost()
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            if not exchange.upgraded:  # closing a tunnel is how tunnels end
                self.stats[S.DOWNSTREAM_RQ_RX_RESET] += 1
                exchange.flags.append(flags.DOWNSTREAM_CONNECTION_TERMINATION)
            self._abort_upstream(exchange)
            self._finish(exchange)
        self.transport = None
        self.worker.connections.discard(self)
        self.worker.check_drained()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.relay is not None:
            self.relay.pause_upstream()
            return
        if self.h2 is not None:
            self.h2.pause_writing()
            return
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            transport = exchange.upstream.transport
            if transport is not None:
                transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.relay is not None:
            self.relay.resume_upstream()
            return
        if self.h2 is not None:
            self.h2.resume_writing()
            return
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            transport = exchange.upstream.transport
            if transport is not None:
                transport.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None:
                self.transport.resume_reading()

    # -- sniffing --------------------------------------------------------------------

    def _sniff(self, data: bytes) -> None:
        buffered = self.sniff_buffer + data
        protocol = sniff(buffered)
        if protocol is Protocol.UNDECIDED:
            self.sniff_buffer = buffered
            return
        self._decided(protocol, buffered)

    def _sniff_timeout(self) -> None:
        self.sniff_timer = None
        if self.mode is Protocol.UNDECIDED and self.transport is not None:
            self._decided(Protocol.TCP, self.sniff_buffer)

    def _decided(self, protocol: Protocol, first_bytes: bytes) -> None:
        if self.sniff_timer is not None:
            self.sniff_timer.cancel()
            self.sniff_timer = None
        self.sniff_buffer = b""
        self.mode = protocol
        if protocol is Protocol.HTTP1:
            self.stats[S.DOWNSTREAM_CX_HTTP1_TOTAL] += 1
            self.codec = self.worker.new_server_codec()
            self._dispatch(self.codec.receive(first_bytes))
        elif protocol is Protocol.HTTP2:
            self.stats[S.DOWNSTREAM_CX_HTTP2_TOTAL] += 1
            from proxy.runtime.h2_downstream import H2Downstream  # h2 loads on first use

            self.h2 = H2Downstream(self.worker, self, first_bytes)
        else:
            self.stats[S.DOWNSTREAM_CX_TCP_TOTAL] += 1
            assert self.transport is not None
            if self.destination is None:
                self._close()
                return
            self.relay = TcpRelay(self.worker, self, self.destination, self.source, first_bytes)

    # -- HTTP/1: requests from downstream ----------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        pending = self.pending
        for event in events:
            exchange = self.exchange
            if pending or (
                exchange is not None
                and exchange.request_complete
                and not exchange.upgrade_requested
            ):
                pending.append(event)
                if len(pending) > MAX_PIPELINED_EVENTS:
                    self.pause_reading(_PAUSE_PIPELINE_FULL)
                continue
            self._on_request_event(event)

    def _on_request_event(self, event: Event) -> None:
        kind = type(event)
        exchange = self.exchange
        if kind is RequestHead:
            assert isinstance(event, RequestHead)
            self._start(event)
        elif exchange is None:
            if kind is ProtocolError:
                assert isinstance(event, ProtocolError)
                self._protocol_error(None, event)
        elif kind is Data:
            assert isinstance(event, Data)
            exchange.bytes_received += len(event.data)
            if exchange.request_complete:  # only after an upgrade request: tunnel bytes
                self._tunnel_data(exchange, event.data)
            else:
                self._request_data(exchange, event.data)
        elif kind is EndOfMessage:
            assert isinstance(event, EndOfMessage)
            self._request_end(exchange, event.trailers)
        elif kind is Upgraded:
            assert isinstance(event, Upgraded)
            # Bytes after an upgrade request belong to the tunnel the upstream may accept.
            if event.data:
                exchange.bytes_received += len(event.data)
                self._tunnel_data(exchange, event.data)
        elif kind is ProtocolError:
            assert isinstance(event, ProtocolError)
            self._protocol_error(exchange, event)

    def _start(self, request: RequestHead) -> None:
        worker = self.worker
        exchange = Exchange(self, request, worker.loop.time())
        self.exchange = exchange
        self.stats[S.DOWNSTREAM_RQ_TOTAL] += 1
        self.stats[S.DOWNSTREAM_RQ_ACTIVE] += 1
        if worker.draining:
            self.close_after = True
        destination = self.destination
        if destination is None:
            self._local_reply(exchange, 404, flags.NO_ROUTE, "route_not_found", close=False)
            return
        headers, exchange.request_id = forward_request_headers(
            request.headers,
            self.client_address,
            self.scheme,
            worker.new_request_id,
            request.upgrade is not None,
        )
        if request.expect_continue:
            # Envoy's default: answer 100 Continue here and drop Expect upstream.
            headers = [pair for pair in headers if pair[0] != b"expect"]
            exchange.sent_continue = True
            self._write(CONTINUE_100)
        if request.http_version == b"1.0" and header_value(headers, b"host") is None:
            # HTTP/1.1 upstream needs a Host (RFC 9112 section 3.2); a 1.0 client may
            # omit it, so name the destination, as Envoy's default_host_for_http_10 does.
            headers.append((b"host", f"{destination[0]}:{destination[1]}".encode()))
        exchange.upstream_head = RequestHead(
            request.stream_id,
            request.method,
            request.target,
            headers,
            b"1.1",
            True,
            request.content_length,
            request.chunked,
            False,
            request.upgrade,
        )
        observer = worker.observer
        if observer is not None:
            observer.request_start(self, exchange)  # may add headers (trace context)
        if request.method == b"POST" and _is_grpc(headers):
            # gRPC needs HTTP/2 upstream (trailers, streaming): the multiplexed h2 pool.
            worker.h2_pool.acquire(destination, exchange, self.source)
        else:
            worker.pool.acquire(destination, exchange, self.source)

    def _request_data(self, exchange: Exchange, data: bytes) -> None:
        upstream = exchange.upstream
        if upstream is not None:
            upstream.write(upstream.codec.send_data(data))
            return
        if exchange.upstream_head is None:
            return  # answered locally; the rest of the body is read and dropped
        exchange.upstream_buffer.append(data)
        exchange.upstream_buffered += len(data)
        if exchange.upstream_buffered > self.worker.config.limits.buffer_high_water:
            self.pause_reading(_PAUSE_NOT_CONNECTED)

    def _tunnel_data(self, exchange: Exchange, data: bytes) -> None:
        upstream = exchange.upstream
        if exchange.upgraded and upstream is not None:
            upstream.write(data)
            return
        exchange.tunnel_pending.append(data)
        if sum(map(len, exchange.tunnel_pending)) > self.worker.config.limits.buffer_high_water:
            self.pause_reading(_PAUSE_NOT_CONNECTED)

    def _request_end(self, exchange: Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        exchange.request_complete = True
        upstream = exchange.upstream
        if upstream is not None:
            upstream.write(upstream.codec.send_end(trailers))
            self._arm_route_timeout(exchange)
        else:
            exchange.trailers = trailers

    # -- HTTP/1: the upstream side -------------------------------------------------------

    def on_upstream_ready(
        self, exchange: Exchange, upstream: UpstreamConnection, reused: bool
    ) -> None:
        exchange.upstream = upstream
        exchange.reused = reused
        exchange.upstream_start = self.worker.loop.time()
        self.stats[S.UPSTREAM_RQ_TOTAL] += 1
        assert exchange.upstream_head is not None
        codec = upstream.codec
        out = [codec.send_request_head(exchange.upstream_head)]
        if exchange.upstream_buffer:
            out += [codec.send_data(piece) for piece in exchange.upstream_buffer]
            exchange.upstream_buffer = []
            exchange.upstream_buffered = 0
        if exchange.request_complete:
            out.append(codec.send_end(exchange.trailers))
        upstream.write(b"".join(out))
        self.resume_reading(_PAUSE_NOT_CONNECTED)
        if exchange.request_complete:
            self._arm_route_timeout(exchange)
        if self.write_paused and upstream.transport is not None:
            upstream.transport.pause_reading()

    def on_upstream_failed(self, exchange: Exchange, status: int, flag: str, details: str) -> None:
        self._local_reply(exchange, status, flag, details, close=not exchange.request_complete)

    def on_upstream_events(self, exchange: Exchange, events: list[Event]) -> None:
        codec = self.codec
        assert codec is not None
        self.last_activity = self.worker.loop.time()
        out: list[bytes] = []
        for event in events:
            kind = type(event)
            if kind is Data:
                assert isinstance(event, Data)
                exchange.bytes_sent += len(event.data)
                out.append(codec.send_data(event.data))
            elif kind is ResponseHead:
                assert isinstance(event, ResponseHead)
                self._on_response_head(exchange, event, out)
            elif kind is EndOfMessage:
                assert isinstance(event, EndOfMessage)
                exchange.response_trailers = event.trailers
                out.append(codec.send_end(event.trailers))
                exchange.response_complete = True
                self._write(b"".join(out))
                self._response_done(exchange)
                return
            elif kind is Upgraded:
                assert isinstance(event, Upgraded)
                exchange.upgraded = True
                if event.data:
                    out.append(event.data)
                upstream = exchange.upstream
                if exchange.tunnel_pending and upstream is not None:
                    upstream.write(b"".join(exchange.tunnel_pending))
                    exchange.tunnel_pending = []
                    self.resume_reading(_PAUSE_NOT_CONNECTED)
            elif kind is ProtocolError:
                assert isinstance(event, ProtocolError)
                self._write(b"".join(out))
                self.stats[S.UPSTREAM_CX_PROTOCOL_ERROR] += 1
                self._upstream_broke(exchange, flags.UPSTREAM_PROTOCOL_ERROR, event.reason, 502)
                return
        if out:
            self._write(b"".join(out))

    def _on_response_head(self, exchange: Exchange, head: ResponseHead, out: list[bytes]) -> None:
        codec = self.codec
        assert codec is not None
        status = head.status
        if status < 200 and status != 101:
            if status == 100 and exchange.sent_continue:
                return  # the client already has its 100 Continue, from us
            head.headers = strip_hop_by_hop(head.headers)
            out.append(codec.send_response_head(head, exchange.request))
            return
        exchange.status = status
        exchange.response_started = True
        if status == 101:
            self._cancel_route_timeout(exchange)  # a tunnel has no response to time out
        head.headers = strip_hop_by_hop(head.headers, status == 101)
        if exchange.upgrade_requested and status != 101 and not (
            exchange.request.method == b"CONNECT" and status < 300
        ):
            # Declined: the client may already have sent tunnel bytes, which are not
            # HTTP; the connection cannot carry another request.
            self.close_after = True
        head.keep_alive = not self.close_after and not self.worker.draining
        exchange.response = head
        out.append(codec.send_response_head(head, exchange.request))

    def on_upstream_lost(self, exchange: Exchange, upstream: UpstreamConnection) -> None:
        events = upstream.codec.connection_closed()
        if events and type(events[0]) is EndOfMessage:
            self.on_upstream_events(exchange, events)  # a close-delimited body ended
            return
        if exchange.upgraded and exchange.response_started:
            exchange.response_complete = True
            self._response_done(exchange)
            return
        self.stats[S.UPSTREAM_CX_DESTROY_REMOTE_WITH_ACTIVE_RQ] += 1
        if (
            exchange.reused
            and not upstream.received_any
            and not exchange.retried
            and not exchange.response_started
            and exchange.request.content_length in (None, 0)
            and not exchange.request.chunked
            and exchange.upstream_head is not None
        ):
            # A pooled keep-alive connection the server had already closed: the request
            # never reached it, so sending it again on a fresh connection is safe.
            exchange.retried = True
            exchange.upstream = None
            self.stats[S.UPSTREAM_RQ_RETRY] += 1
            assert self.destination is not None
            self.worker.pool.acquire(self.destination, exchange, self.source)
            return
        exchange.upstream = None
        if getattr(upstream, "reset_code", None) is not None:
            # An HTTP/2 upstream reset the stream (RST_STREAM): Envoy's 502 UR.
            self._upstream_broke(
                exchange, flags.UPSTREAM_REMOTE_RESET, "upstream_reset_before_response_started", 502
            )
            return
        self._upstream_broke(
            exchange,
            flags.UPSTREAM_CONNECTION_TERMINATION,
            "upstream_reset_before_response_started",
            503,
        )

    def _upstream_broke(self, exchange: Exchange, flag: str, details: str, status: int) -> None:
        """The upstream failed mid-exchange: a 5xx if nothing was sent yet, else a cut."""
        self._abort_upstream(exchange)
        if not exchange.response_started:
            self._local_reply(exchange, status, flag, details, close=True)
            return
        # Part of a response went out: closing is the only honest signal (no fake end).
        exchange.flags.append(flag)
        exchange.details = details
        self._finish(exchange)
        if self.transport is not None:
            self.transport.abort()

    def _arm_route_timeout(self, exchange: Exchange) -> None:
        if not exchange.timed and not exchange.upgraded:
            exchange.timed = True
            worker = self.worker
            worker.route_deadlines.add(exchange, worker.loop.time() + worker.config.timeouts.route)

    def _cancel_route_timeout(self, exchange: Exchange) -> None:
        if exchange.timed:
            exchange.timed = False
            self.worker.route_deadlines.remove(exchange)

    def route_timeout(self, exchange: Exchange) -> None:
        exchange.timed = False  # the queue has already dropped it
        if exchange.finished:
            return
        self.stats[S.UPSTREAM_RQ_TIMEOUT] += 1
        self._upstream_broke(exchange, flags.UPSTREAM_REQUEST_TIMEOUT, "response_timeout", 504)

    # -- HTTP/1: finishing -------------------------------------------------------------

    def _response_done(self, exchange: Exchange) -> None:
        upstream = exchange.upstream
        if upstream is not None:
            exchange.upstream = None
            if exchange.request_complete and not exchange.upgrade_requested:
                upstream.pool.release(upstream)
            else:
                # The server answered before reading the whole request: the rest of it
                # would desynchronise both connections, so both are closed.
                upstream.user = None
                upstream.close()
                self.close_after = True
        self._finish(exchange)
        self._next_or_close()

    def _finish(self, exchange: Exchange) -> None:
        """Account for the exchange exactly once."""
        if exchange.finished:
            return
        exchange.finished = True
        self._cancel_route_timeout(exchange)
        stats = self.stats
        stats[S.DOWNSTREAM_RQ_ACTIVE] -= 1
        status = exchange.status
        if 100 <= status < 600:
            stats[S.DOWNSTREAM_RQ_1XX + status // 100 - 1] += 1
        observer = self.worker.observer
        if observer is not None:
            observer.request_done(self, exchange, self.worker.loop.time())

    def _next_or_close(self) -> None:
        self.exchange = None
        codec = self.codec
        if self.close_after or self.worker.draining or codec is None or not codec.keep_alive:
            if self.worker.draining:
                self.stats[S.DOWNSTREAM_CX_DRAIN_CLOSE] += 1
            self._close()
            return
        pending = self.pending
        while pending and (self.exchange is None or not self.exchange.request_complete):
            self._on_request_event(pending.popleft())
        if len(pending) <= MAX_PIPELINED_EVENTS:
            self.resume_reading(_PAUSE_PIPELINE_FULL)

    def _abort_upstream(self, exchange: Exchange) -> None:
        upstream = exchange.upstream
        exchange.upstream = None
        if upstream is not None:
            upstream.user = None
            upstream.abort()
        else:
            self.worker.pool.cancel(exchange)

    def _protocol_error(self, exchange: Exchange | None, error: ProtocolError) -> None:
        self.stats[S.DOWNSTREAM_CX_PROTOCOL_ERROR] += 1
        if exchange is None:
            exchange = Exchange(self, _UNPARSED_REQUEST, self.worker.loop.time())
            self.exchange = exchange
            self.stats[S.DOWNSTREAM_RQ_TOTAL] += 1
            self.stats[S.DOWNSTREAM_RQ_ACTIVE] += 1
        if exchange.response_started:
            exchange.flags.append(flags.DOWNSTREAM_PROTOCOL_ERROR)
            self._abort_upstream(exchange)
            self._finish(exchange)
            self._close()
            return
        self._abort_upstream(exchange)
        self._local_reply(
            exchange, error.status, flags.DOWNSTREAM_PROTOCOL_ERROR, error.reason, close=True
        )

    def _local_reply(
        self, exchange: Exchange, status: int, flag: str, details: str, close: bool
    ) -> None:
        """Answer from the proxy itself (Envoy's local reply), then carry on or close."""
        if close:
            self.close_after = True
        exchange.flags.append(flag)
        exchange.details = details
        exchange.status = status
        exchange.response_started = True
        exchange.response_complete = True
        keep_alive = not self.close_after and not self.worker.draining
        head, body = local_reply(status, flag, details, exchange.request_id, keep_alive)
        assert self.codec is not None
        exchange.bytes_sent += len(body)
        self._write(
            self.codec.send_response_head(head, exchange.request)
            + self.codec.send_data(body)
            + self.codec.send_end([])
        )
        if not exchange.request_complete:
            self.close_after = True
        self._abort_upstream(exchange)
        self._finish(exchange)
        self._next_or_close()

    # -- plumbing --------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and data:
            self.stats[S.DOWNSTREAM_CX_TX_BYTES] += len(data)
            transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def drain(self) -> None:
        """The worker is draining: close now if idle, else after the response in flight."""
        self.close_after = True
        if self.h2 is not None:
            self.h2.drain()
            return
        if self.relay is None and (self.exchange is None or self.exchange.finished):
            self.stats[S.DOWNSTREAM_CX_DRAIN_CLOSE] += 1
            self._close()

    def idle_for(self, now: float) -> float:
        if self.h2 is not None:
            return self.h2.idle_for(now)
        return now - self.last_activity if self.exchange is None and self.relay is None else 0.0

    def stream_idle_for(self, now: float) -> float:
        """How long the request in flight has seen no bytes either way (0 if none is)."""
        exchange = self.exchange
        if exchange is None or exchange.finished or exchange.upgraded:
            return 0.0
        return now - self.last_activity

    def stream_idle_timeout(self) -> None:
        """Envoy's stream_idle_timeout: 408 (flag SI) before the response began, else a cut."""
        exchange = self.exchange
        if exchange is None or exchange.finished:
            return
        if exchange.response_started:
            exchange.flags.append(flags.STREAM_IDLE_TIMEOUT)
            self._abort_upstream(exchange)
            self._finish(exchange)
            if self.transport is not None:
                self.transport.abort()
            return
        self._local_reply(
            exchange, 408, flags.STREAM_IDLE_TIMEOUT, "stream_idle_timeout", close=True
        )


def _is_grpc(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"application/grpc")
    return False


_UNPARSED_REQUEST = RequestHead(1, b"-", b"-", [], b"1.1", False)
