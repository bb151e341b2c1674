"""The HTTP/1 connection manager: requests in order, one upstream exchange each, pipelining.

This is the runtime half of Envoy's HTTP connection manager for HTTP/1. It feeds the
sans-IO server codec, applies the header policy, asks the pool for an upstream, and
moves bytes both ways with backpressure. One `Exchange` per request holds its state;
requests pipelined behind it wait, parsed, until its response is complete. It runs on
a `DownstreamConnection` (which it is mixed into) once sniffing has said HTTP/1.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from proxy.core import flags, retry
from proxy.core.headers import forward_request_headers, forwardable, header_value
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
from proxy.core.targets import normalise_target
from proxy.runtime import pause, retrying
from proxy.runtime.exchange import Exchange
from proxy.telemetry import stats as S

# A Final alias is a C static in the compiled build; a name imported from time is a
# module-dict lookup at every call (about 130 instructions, four a request).
monotonic: Final = time.monotonic

if TYPE_CHECKING:
    from proxy.core.codecs.base import ServerCodec
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.upstream import Destination, Upstream, UpstreamConnection
    from proxy.runtime.worker import Worker

CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# Parsed requests allowed to wait behind the one in flight before reading pauses.
MAX_PIPELINED_EVENTS: Final = 64
# RFC 9110 section 9.2.2: the methods a request may be repeated with, as after a pooled
# connection closed under it.
IDEMPOTENT_METHODS: Final = frozenset(
    (b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE")
)


class Http1ConnectionManager:
    """HTTP/1 request handling, mixed into DownstreamConnection (whose state it shares)."""

    # HTTP/1 state; the connection's own slots are on DownstreamConnection.
    __slots__ = ("close_after", "codec", "exchange", "idle_upstreams", "last_activity", "pending")
    codec: ServerCodec | None
    exchange: Exchange | None
    pending: deque[Event]
    close_after: bool
    last_activity: float
    # The HTTP/1 pool's idle list for this connection's destination, fetched on the first
    # request: later ones skip the pool's lookup by (host, port), which hashes a tuple.
    idle_upstreams: list[UpstreamConnection] | None

    # The connection's state this manager reads (declared on DownstreamConnection).
    worker: Worker
    stats: S.Stats
    transport: asyncio.Transport | None
    destination: Destination | None
    source: str | None
    client_address: bytes
    listener_name: str
    scheme: bytes
    write_paused: bool

    # The connection's plumbing, defined on DownstreamConnection (which overrides these).

    def pause_reading(self, reason: int) -> None: ...

    def resume_reading(self, reason: int) -> None: ...

    def _write(self, data: bytes) -> None: ...

    def _close(self) -> None: ...

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
                    self.pause_reading(pause.PIPELINE_FULL)
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
        # Started when its bytes were read: the connection's last activity is that read
        # (or, for a request that waited behind another, a moment since).
        exchange = Exchange(_connection(self), request, self.last_activity)
        self.exchange = exchange
        self.stats.downstream_rq_total += 1
        self.stats.downstream_rq_active += 1
        if worker.draining:
            self.close_after = True
        destination = self.destination
        if destination is None:
            self._local_reply(exchange, 404, flags.NO_ROUTE, "route_not_found", close=False)
            return
        if request.method == b"CONNECT" or not request.target.startswith(b"/"):
            refused = normalise_target(request)
            if refused is not None:
                self._protocol_error(exchange, ProtocolError(request.stream_id, 400, refused))
                return
        if request.chunked and request.http_version == b"1.0":
            # RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing (an HTTP/1.0 hop before us would have read it differently).
            self._protocol_error(
                exchange,
                ProtocolError(request.stream_id, 400, "transfer-encoding in an HTTP/1.0 request"),
            )
            return
        headers, exchange.request_id = forward_request_headers(
            request.headers,
            self.client_address,
            self.scheme,
            request.upgrade is not None,
            request.fields,
        )
        if request.expect_continue:
            # Envoy's default: answer 100 Continue here and drop Expect upstream. An
            # HTTP/1.0 client's expectation is ignored (RFC 9110 section 10.1.1): it gets
            # no 1xx at all.
            headers = [pair for pair in headers if pair[0] != b"expect"]
            if request.http_version != b"1.0":
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
            observer.request_start(_connection(self), exchange)  # may add headers (trace context)
        self._acquire(exchange, destination)

    def _acquire(self, exchange: Exchange, destination: Destination) -> None:
        """Ask the pool that speaks the destination's protocol for an upstream."""
        worker = self.worker
        head = exchange.upstream_head
        assert head is not None
        if head.method == b"POST" and _is_grpc(head.headers):
            # gRPC needs HTTP/2 upstream (trailers, streaming): the multiplexed h2 pool.
            worker.h2_pool.acquire(destination, exchange, self.source)
        elif destination[1] in worker.http2_ports and not exchange.upgrade_requested:
            # Configured as HTTP/2 (upstream_http2_ports); Upgrade/CONNECT stay HTTP/1.1,
            # and a destination that turns out not to speak h2c gets HTTP/1.1 instead.
            worker.h2_pool.acquire(destination, exchange, self.source, True)
        else:
            pool = worker.pool
            idle = self.idle_upstreams
            if idle is None:
                idle = self.idle_upstreams = pool.idle_list(destination)
            pool.acquire(destination, exchange, self.source, idle)

    def _request_data(self, exchange: Exchange, data: bytes) -> None:
        worker = self.worker
        if retrying.keeps_bodies(worker, self.listener_name):
            exchange.keep_for_retry(data, worker.config.limits.buffer_high_water)
        upstream = exchange.upstream
        if upstream is not None:
            upstream.write(upstream.codec.send_data(data))
            return
        if exchange.upstream_head is None:
            return  # answered locally; the rest of the body is read and dropped
        exchange.hold_for_upstream(data)
        exchange.upstream_buffered += len(data)
        if exchange.upstream_buffered > self.worker.config.limits.buffer_high_water:
            self.pause_reading(pause.NOT_CONNECTED)

    def _tunnel_data(self, exchange: Exchange, data: bytes) -> None:
        upstream = exchange.upstream
        if exchange.upgraded and upstream is not None:
            upstream.write(data)
            return
        if exchange.hold_for_tunnel(data) > self.worker.config.limits.buffer_high_water:
            self.pause_reading(pause.NOT_CONNECTED)

    def _request_end(self, exchange: Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        if exchange.end_request(trailers):
            self._arm_route_timeout(exchange, monotonic())

    # -- HTTP/1: the upstream side -------------------------------------------------------

    def on_upstream_ready(self, exchange: Exchange, upstream: Upstream, reused: bool) -> None:
        self.stats.upstream_rq_total += 1
        now = monotonic()
        if exchange.attach(upstream, reused, now):
            self._arm_route_timeout(exchange, now)
        self.resume_reading(pause.NOT_CONNECTED)
        if self.write_paused:
            upstream.pause_reading()

    def on_upstream_failed(self, exchange: Exchange, status: int, flag: str, details: str) -> None:
        destination = self.destination
        assert destination is not None
        more = retrying.after_failure(
            self.worker, exchange, destination, self.listener_name, flag, self._send_again
        )
        if more is not None:
            self._local_reply(
                exchange, status, flag, details, close=not exchange.request_complete, more=more
            )

    # -- HTTP/1: retries (proxy.core.retry, applied by proxy.runtime.retrying) ------------

    def _retry(self, exchange: Exchange, sent: bool) -> int:
        destination = self.destination
        assert destination is not None
        return retrying.try_again(
            self.worker, exchange, destination, self.listener_name, sent, self._send_again
        )

    def _send_again(self, exchange: Exchange) -> None:
        destination = self.destination
        if exchange.finished or destination is None:
            return  # answered meanwhile (route timeout, client gone)
        self._acquire(exchange, destination)

    def on_upstream_events(self, exchange: Exchange, events: list[Event]) -> None:
        codec = self.codec
        assert codec is not None
        self.last_activity = monotonic()
        if len(events) == 3:
            head, data, end = events
            if type(head) is ResponseHead and type(data) is Data and type(end) is EndOfMessage:
                # The usual answer, read at once: written with one concatenation (no
                # list and join, about 450 instructions less).
                framed = self._response_head_bytes(exchange, head)
                if framed is None:
                    return  # retrying: the rest of this answer is dropped with its connection
                exchange.bytes_sent += len(data.data)
                body = codec.send_data(data.data)
                framed = framed + body if len(body) else framed
                self._end_response(exchange, framed, end.trailers)
                return
        out: list[bytes] = []
        for event in events:
            kind = type(event)
            if kind is Data:
                assert isinstance(event, Data)
                exchange.bytes_sent += len(event.data)
                out.append(codec.send_data(event.data))
            elif kind is ResponseHead:
                assert isinstance(event, ResponseHead)
                framed = self._response_head_bytes(exchange, event)
                if framed is None:
                    if out:  # 1xx answers that came before it
                        self._write(b"".join(out))
                    return  # retrying: the rest of this answer is dropped with its connection
                out.append(framed)
            elif kind is EndOfMessage:
                assert isinstance(event, EndOfMessage)
                self._end_response(exchange, b"".join(out), event.trailers)
                return
            elif kind is Upgraded:
                assert isinstance(event, Upgraded)
                exchange.upgraded = True
                if event.data:
                    out.append(event.data)
                upstream = exchange.upstream
                if exchange.tunnel_pending and upstream is not None:
                    upstream.write(exchange.release_tunnel())
                    self.resume_reading(pause.NOT_CONNECTED)
            elif kind is ProtocolError:
                assert isinstance(event, ProtocolError)
                self._write(b"".join(out))
                self.stats.upstream_cx_protocol_error += 1
                self._upstream_broke(exchange, flags.UPSTREAM_PROTOCOL_ERROR, event.reason, 502)
                return
        if out:
            self._write(b"".join(out))

    def _end_response(
        self, exchange: Exchange, out: bytes, trailers: list[tuple[bytes, bytes]]
    ) -> None:
        """Write `out` and the response's end: the exchange is answered."""
        codec = self.codec
        assert codec is not None
        exchange.response_trailers = trailers
        end = codec.send_end(trailers)
        exchange.response_complete = True
        self._write(out + end if len(end) else out)
        self._response_done(exchange, self.last_activity)  # read just now

    def _response_head_bytes(self, exchange: Exchange, head: ResponseHead) -> bytes | None:
        """The response head framed for the client (b"" for a 1xx it already has), or
        None if the request is retried instead."""
        codec = self.codec
        assert codec is not None
        status = head.status
        if status < 200 and status != 101:
            if status == 100 and exchange.sent_continue:
                return b""  # the client already has its 100 Continue, from us
            if exchange.request.http_version == b"1.0":
                return b""  # RFC 9110 section 15.2: no 1xx to an HTTP/1.0 client
            head.headers = forwardable(head.headers, head.fields)
            return codec.send_response_head(head, exchange.request)
        if retry.retriable(status, None):
            upstream = exchange.upstream
            decision = self._retry(exchange, True)
            if decision == retry.RETRY:
                if upstream is not None:
                    # Its answer is not read to the end: the connection goes with it.
                    upstream.user = None
                    upstream.abort()
                return None
            if decision != retry.NOT_RETRIABLE:
                exchange.add_flag(retry.FLAG_FOR[decision])
        elif exchange.retries:
            self.stats.upstream_rq_retry_success += 1
        exchange.status = status
        exchange.response_started = True
        if status == 101:
            self._cancel_route_timeout(exchange)  # a tunnel has no response to time out
        head.headers = forwardable(head.headers, head.fields, status == 101)
        if (
            exchange.upgrade_requested
            and status != 101
            and not (exchange.request.method == b"CONNECT" and status < 300)
        ):
            # Declined: the client may already have sent tunnel bytes, which are not
            # HTTP; the connection cannot carry another request.
            self.close_after = True
        head.keep_alive = not self.close_after and not self.worker.draining
        exchange.response = head
        if exchange.observe_response:
            self.worker.response_starts(exchange, head)  # peer metadata in and out
        return codec.send_response_head(head, exchange.request)

    def on_upstream_lost(self, exchange: Exchange, upstream: Upstream) -> None:
        events = upstream.codec.connection_closed()
        if events and type(events[0]) is EndOfMessage:
            self.on_upstream_events(exchange, events)  # a close-delimited body ended
            return
        if exchange.upgraded and exchange.response_started:
            exchange.response_complete = True
            self._response_done(exchange, monotonic())
            return
        self.stats.upstream_cx_destroy_remote_with_active_rq += 1
        if (
            exchange.reused
            and not upstream.received_any
            and not exchange.retried
            and not exchange.response_started
            and exchange.request.content_length in (None, 0)
            and not exchange.request.chunked
            and exchange.request.method in IDEMPOTENT_METHODS
            and exchange.upstream_head is not None
        ):
            # A pooled keep-alive connection the server had closed, most likely before
            # our request reached it. A close cannot tell that apart from a server that
            # read the request and died, so only a request that is safe to repeat is
            # sent again (RFC 9112 section 9.3.1: never a non-idempotent one).
            exchange.retried = True
            exchange.upstream = None
            self.stats.upstream_rq_retry += 1
            assert self.destination is not None
            self._acquire(exchange, self.destination)
            return
        exchange.upstream = None
        # Envoy's words for the access log: the client saw a head already, or nothing.
        started = exchange.response_started
        if getattr(upstream, "reset_code", None) is not None:
            # An HTTP/2 upstream reset the stream (RST_STREAM): Envoy's 502 UR.
            self._upstream_broke(
                exchange,
                flags.UPSTREAM_REMOTE_RESET,
                "upstream_reset_after_response_started{remote_reset}"
                if started
                else "upstream_reset_before_response_started",
                502,
            )
            return
        self._upstream_broke(
            exchange,
            flags.UPSTREAM_CONNECTION_TERMINATION,
            "upstream_reset_after_response_started{connection_termination}"
            if started
            else "upstream_reset_before_response_started",
            503,
        )

    def _upstream_broke(self, exchange: Exchange, flag: str, details: str, status: int) -> None:
        """The upstream failed mid-exchange: a 5xx if nothing was sent yet, else a cut."""
        self._abort_upstream(exchange)
        if not exchange.response_started:
            self._local_reply(exchange, status, flag, details, close=True)
            return
        # Part of a response went out: closing is the only honest signal (no fake end).
        exchange.add_flag(flag)
        exchange.details = details
        self._finish(exchange, monotonic())
        if self.transport is not None:
            self.transport.abort()

    def _arm_route_timeout(self, exchange: Exchange, now: float) -> None:
        if not exchange.timed and not exchange.upgraded:
            exchange.timed = True
            worker = self.worker
            worker.route_deadlines.add(exchange, now + worker.route_timeout)

    def _cancel_route_timeout(self, exchange: Exchange) -> None:
        if exchange.timed:
            exchange.timed = False
            self.worker.route_deadlines.remove(exchange)

    def route_timeout(self, exchange: Exchange) -> None:
        exchange.timed = False  # the queue has already dropped it
        if exchange.finished:
            return
        self.stats.upstream_rq_timeout += 1
        self._upstream_broke(exchange, flags.UPSTREAM_REQUEST_TIMEOUT, "response_timeout", 504)

    # -- HTTP/1: finishing -------------------------------------------------------------

    def _response_done(self, exchange: Exchange, now: float) -> None:
        upstream = exchange.upstream
        if upstream is not None:
            exchange.upstream = None
            if exchange.request_complete and not exchange.upgrade_requested:
                upstream.release_to_pool(now)
            else:
                # The server answered before reading the whole request: the rest of it
                # would desynchronise both connections, so both are closed.
                upstream.user = None
                upstream.close()
                self.close_after = True
        self._finish(exchange, now)
        self._next_or_close()

    def _finish(self, exchange: Exchange, now: float) -> None:
        """Account for the exchange exactly once (`now`: the loop's time, as the caller read it)."""
        if exchange.finished:
            return
        exchange.finished = True
        self._cancel_route_timeout(exchange)
        if exchange.retry_active:
            assert self.destination is not None
            retrying.release(self.worker, exchange, self.destination)
        stats = self.stats
        stats.downstream_rq_active -= 1
        status = exchange.status
        if 100 <= status < 600:
            stats.count_status(status)
        observer = self.worker.observer
        if observer is not None:
            observer.request_done(_connection(self), exchange, now, self.listener_name)

    def _next_or_close(self) -> None:
        self.exchange = None
        codec = self.codec
        if self.close_after or self.worker.draining or codec is None or not codec.keep_alive:
            if self.worker.draining:
                self.stats.downstream_cx_drain_close += 1
            self._close()
            return
        self._start_pending()

    def _start_pending(self) -> None:
        """Start the requests pipelined behind the one that just finished.

        A method of its own, not the tail of `_next_or_close`: there `self.exchange` was
        just set to None, and mypy (so the compiled build) would keep assuming it is
        None after `_on_request_event` has started a new exchange.
        """
        pending = self.pending
        while pending:
            exchange = self.exchange
            if exchange is not None and exchange.request_complete:
                break
            self._on_request_event(pending.popleft())
        if len(pending) <= MAX_PIPELINED_EVENTS:
            self.resume_reading(pause.PIPELINE_FULL)

    def _abort_upstream(self, exchange: Exchange) -> None:
        upstream = exchange.upstream
        exchange.upstream = None
        if upstream is not None:
            upstream.user = None
            upstream.abort()
        else:
            # Still waiting for one: in the HTTP/1 pool's queue, or in the HTTP/2 pool's
            # (gRPC and `upstream_http2_ports` destinations), where it would hold a slot.
            worker = self.worker
            worker.pool.cancel(exchange)
            worker.h2_pool.cancel(exchange)

    def _protocol_error(self, exchange: Exchange | None, error: ProtocolError) -> None:
        self.stats.downstream_cx_protocol_error += 1
        if exchange is None:
            exchange = Exchange(_connection(self), _UNPARSED_REQUEST, monotonic())
            self.exchange = exchange
            self.stats.downstream_rq_total += 1
            self.stats.downstream_rq_active += 1
        if exchange.response_started:
            exchange.add_flag(flags.DOWNSTREAM_PROTOCOL_ERROR)
            self._abort_upstream(exchange)
            self._finish(exchange, monotonic())
            self._close()
            return
        self._abort_upstream(exchange)
        self._local_reply(
            exchange, error.status, flags.DOWNSTREAM_PROTOCOL_ERROR, error.reason, close=True
        )

    def _local_reply(
        self, exchange: Exchange, status: int, flag: str, details: str, close: bool, more: str = ""
    ) -> None:
        """Answer from the proxy itself (Envoy's local reply), then carry on or close.

        `more` is a second flag (URX or UO from the retry policy), or empty.
        """
        if close:
            self.close_after = True
        exchange.add_flag(flag)
        if more:
            exchange.add_flag(more)
        exchange.details = details
        exchange.status = status
        exchange.response_started = True
        exchange.response_complete = True
        keep_alive = not self.close_after and not self.worker.draining
        head, body = local_reply(
            status, flag, details, exchange.request_id, keep_alive, exchange.transport_failure
        )
        if exchange.observe_response:
            self.worker.response_starts(exchange, head)  # inbound: tell the caller who we are
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
        self._finish(exchange, monotonic())
        self._next_or_close()

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
            exchange.add_flag(flags.STREAM_IDLE_TIMEOUT)
            self._abort_upstream(exchange)
            self._finish(exchange, monotonic())
            if self.transport is not None:
                self.transport.abort()
            return
        self._local_reply(
            exchange, 408, flags.STREAM_IDLE_TIMEOUT, "stream_idle_timeout", close=True
        )


def _connection(manager: Http1ConnectionManager) -> DownstreamConnection:
    """The connection this manager is part of (the mixin only ever runs on one)."""
    return manager  # type: ignore[return-value]


def _is_grpc(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"application/grpc")
    return False


_UNPARSED_REQUEST: Final = RequestHead(1, b"-", b"-", [], b"1.1", False)
