"""The HTTP/2 side of a downstream connection: concurrent exchanges, each routed like HTTP/1's.

`DownstreamConnection` hands a connection here once it has seen the HTTP/2 preface.
Each stream becomes an `H2Exchange` (an `Exchange`, so telemetry reads the same
fields) with the same header policy, local replies, flags, stats and observer calls
as HTTP/1. Requests go to an HTTP/2 upstream (the multiplexed h2 pool), as Istio's
USE_DOWNSTREAM_PROTOCOL does; a destination that fails the h2c handshake is remembered
and served over the HTTP/1.1 pool instead, except gRPC, which needs HTTP/2 and fails
fast (UNAVAILABLE). Flow control: request DATA is acknowledged to the client only once the
upstream took it, response DATA only once the client's window and socket took it.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Final, cast

from proxy.core import flags, retry
from proxy.core.codecs.h2 import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    INTERNAL_ERROR,
    NO_ERROR,
    REFUSED_STREAM,
    GoAway,
    H2Limits,
    H2ServerCodec,
    SendDrained,
    StreamReset,
)
from proxy.core.grpc_frames import MessageCount
from proxy.core.headers import forward_request_headers, header_value, strip_hop_by_hop
from proxy.core.local_reply import local_reply
from proxy.core.messages import Data, EndOfMessage, Event, ProtocolError, RequestHead, ResponseHead
from proxy.runtime import retrying
from proxy.runtime.deadlines import DeadlineQueue
from proxy.runtime.exchange import Exchange

monotonic: Final = time.monotonic  # a C static in the compiled build (see http1.py)

if TYPE_CHECKING:
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.upstream import Upstream
    from proxy.runtime.worker import Worker

# Envoy's Grpc::Utility::httpToGrpcStatus, for local replies to gRPC requests.
_GRPC_STATUS: Final = {
    400: b"13",
    401: b"16",
    403: b"7",
    404: b"12",
    429: b"14",
    502: b"14",
    503: b"14",
    504: b"14",
}


def is_grpc(headers: list[tuple[bytes, bytes]]) -> bool:
    content_type = header_value(headers, b"content-type")
    return content_type is not None and content_type.startswith(b"application/grpc")


class H2Exchange(Exchange):
    """One HTTP/2 stream's exchange: an Exchange whose upstream callbacks go to the h2 side."""

    __slots__ = (
        "grpc",
        "h2",
        "idle_mark",
        "idle_since",
        "owed",
        "paused_upstream",
        "stream_id",
        "upstream_blocked",
    )

    def __init__(self, h2: H2Downstream, request: RequestHead, start: float) -> None:
        super().__init__(h2.connection, request, start)
        self.h2 = h2
        self.stream_id = request.stream_id
        self.grpc = False
        self.owed = 0  # request bytes received but not yet acknowledged to the client
        self.upstream_blocked = False  # the upstream cannot take more request body
        self.paused_upstream = False  # we paused the upstream: the client cannot take more
        # Stream idle timeout: the stream's progress at the last sweep, and since when it
        # has not changed (read by the worker's sweep, so the hot path keeps no clock).
        self.idle_mark = 0
        self.idle_since = start

    def upstream_ready(self, connection: Upstream, reused: bool) -> None:
        if self.finished:
            connection.release_to_pool()
        else:
            self.h2.on_upstream_ready(self, connection, reused)

    def upstream_failed(
        self, status: int, flag: str, details: str, transport_failure: str | None = None
    ) -> None:
        if not self.finished:
            self.transport_failure = transport_failure
            self.h2.on_upstream_failed(self, status, flag, details)
            self.h2.mark()

    def upstream_events(self, events: list[Event]) -> None:
        if not self.finished:
            self.h2.on_upstream_events(self, events)

    def upstream_lost(self, connection: Upstream) -> None:
        if not self.finished:
            self.h2.on_upstream_lost(self, connection)

    def upstream_pause_writing(self) -> None:
        self.upstream_blocked = True

    def upstream_resume_writing(self) -> None:
        self.upstream_blocked = False
        if self.owed and not self.finished:
            self.h2.codec.acknowledge(self.stream_id, self.owed)
            self.owed = 0
            self.h2.mark()


class H2Downstream:
    """The HTTP/2 server side of one client connection."""

    __slots__ = (
        "closed",
        "codec",
        "connection",
        "dirty",
        "draining",
        "flusher",
        "goaway_last",
        "high_water",
        "keeps_bodies",
        "route_deadlines",
        "stats",
        "streams",
        "timed",
        "worker",
        "write_paused",
    )

    def __init__(
        self, worker: Worker, connection: DownstreamConnection, first_bytes: bytes
    ) -> None:
        self.worker = worker
        self.connection = connection
        self.stats = worker.stats
        limits = worker.config.limits
        self.codec = H2ServerCodec(
            H2Limits(
                stream_window=limits.buffer_high_water,
                max_header_list_size=limits.max_request_headers_bytes,
                max_header_count=limits.max_request_headers_count,
            )
        )
        self.streams: dict[int, H2Exchange] = {}
        # Framed output past this is written at once (on_upstream_events).
        self.high_water = limits.buffer_high_water
        # Requests that may be retried keep their bodies (up to buffer_high_water).
        self.keeps_bodies = retrying.keeps_bodies(worker, connection.listener_name)
        self.flusher = worker.h2_pool.flusher
        self.dirty = False
        self.write_paused = False
        self.draining = False
        self.closed = False
        self.goaway_last = 0
        self.stats.downstream_cx_http2_active += 1
        # Route timeouts: one timer per connection over its exchanges (they all get the
        # same timeout, so the order they were set in is deadline order).
        self.route_deadlines = DeadlineQueue(worker.loop, self._route_timeout)
        self.data_received(first_bytes)
        if worker.draining:
            self.drain()  # accepted just before the listener closed: GOAWAY at once

    # -- from the connection ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now = monotonic()
        self.connection.last_activity = now
        streams = self.streams
        codec = self.codec
        for event in codec.receive(data, now):
            kind = type(event)
            if kind is Data:
                assert isinstance(event, Data)
                exchange = streams.get(event.stream_id)
                size = len(event.data)
                if exchange is None:
                    codec.acknowledge(event.stream_id, size)  # answered or reset: dropped
                    continue
                exchange.bytes_received += size
                messages = exchange.grpc_messages
                if messages is not None:
                    messages[0].feed(event.data)
                if self.keeps_bodies:
                    exchange.keep_for_retry(event.data, self.worker.config.limits.buffer_high_water)
                upstream = exchange.upstream
                if upstream is not None:
                    upstream.write(upstream.codec.send_data(event.data))
                    if exchange.upstream_blocked:
                        exchange.owed += size
                    else:
                        codec.acknowledge(event.stream_id, size)
                elif exchange.upstream_head is None:
                    codec.acknowledge(event.stream_id, size)
                else:
                    exchange.hold_for_upstream(event.data)
                    exchange.owed += size
            elif kind is RequestHead:
                assert isinstance(event, RequestHead)
                self._start(event, now)
            elif kind is EndOfMessage:
                assert isinstance(event, EndOfMessage)
                exchange = streams.get(event.stream_id)
                if exchange is not None:
                    self._request_end(exchange, event.trailers)
            elif kind is StreamReset:
                assert isinstance(event, StreamReset)
                if event.remote:
                    self.stats.http2_rx_reset += 1
                exchange = streams.get(event.stream_id)
                if exchange is not None:
                    if event.remote:
                        self.stats.downstream_rq_rx_reset += 1
                        exchange.add_flag(flags.DOWNSTREAM_RESET)
                    else:  # the codec reset it: the client broke the stream's protocol
                        exchange.add_flag(flags.DOWNSTREAM_PROTOCOL_ERROR)
                    self._abort_upstream(exchange)
                    self._finish(exchange)
            elif kind is SendDrained:
                assert isinstance(event, SendDrained)
                exchange = streams.get(event.stream_id)
                if exchange is not None and exchange.paused_upstream and not self.write_paused:
                    self._resume_upstream(exchange)
            elif kind is GoAway:
                assert isinstance(event, GoAway)
                if event.local:
                    # We ended the connection (protocol error or abuse): write GOAWAY, close.
                    self.stats.downstream_cx_protocol_error += 1
                    self.stats.http2_goaway_sent += 1
                    if event.error_code == ENHANCE_YOUR_CALM:
                        self.stats.http2_flood_close += 1
                    self._fail_all(flags.DOWNSTREAM_PROTOCOL_ERROR)
                    self.flush()
                    self._close()
                    return
                self.draining = True  # the client is leaving; its streams may finish
        self.mark()

    def connection_lost(self) -> None:
        self.closed = True
        self.stats.downstream_cx_http2_active -= 1
        self._fail_all(flags.DOWNSTREAM_CONNECTION_TERMINATION)
        self.route_deadlines.close()
        # Break the reference cycles (the connection and this object; h2's connection and
        # its own dispatch table) so refcounting frees the HTTP/2 state now: the worker's
        # collector runs its full passes rarely, and a long-lived connection's state is
        # in the oldest generation by the time it closes.
        self.connection.h2 = None
        self.codec.release()

    def _fail_all(self, flag: str) -> None:
        for exchange in list(self.streams.values()):
            if not exchange.finished:
                self.stats.downstream_rq_rx_reset += 1
                exchange.add_flag(flag)
                self._abort_upstream(exchange)
                self._finish(exchange)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.codec.pause()
        for exchange in self.streams.values():
            if not exchange.paused_upstream and exchange.upstream is not None:
                self._pause_upstream(exchange)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.codec.resume()
        pending = self.codec.pending
        for exchange in list(self.streams.values()):
            if exchange.paused_upstream and not pending(exchange.stream_id):
                self._resume_upstream(exchange)
        self.mark()

    def drain(self) -> None:
        """GOAWAY (NO_ERROR): the streams opened so far finish; the connection then closes."""
        if not self.draining and not self.closed:
            self.draining = True
            self.goaway_last = self.codec.highest_stream_id
            self.codec.drain()
            self.stats.downstream_cx_drain_close += 1
            self.stats.http2_goaway_sent += 1
        self.mark()

    def idle_for(self, now: float) -> float:
        return now - self.connection.last_activity if not self.streams else 0.0

    def sweep_idle_streams(self, now: float, limit: float) -> None:
        """Envoy's stream_idle_timeout per stream: 408 (flag SI) before the response
        began, else RST_STREAM; the connection and its other streams go on."""
        for exchange in list(self.streams.values()):
            # Bytes either way, the response head and the request's end are progress.
            progress = (
                exchange.bytes_received
                + exchange.bytes_sent
                + exchange.response_started
                + exchange.request_complete
            )
            if progress != exchange.idle_mark:
                exchange.idle_mark = progress
                exchange.idle_since = now
            elif now - exchange.idle_since > limit and not exchange.finished:
                self._upstream_broke(
                    exchange, flags.STREAM_IDLE_TIMEOUT, "stream_idle_timeout", 408, CANCEL
                )
                self.mark()  # the 408 or the RST_STREAM goes out

    # -- requests ---------------------------------------------------------------------

    def _start(self, request: RequestHead, now: float) -> None:
        stream_id = request.stream_id
        if self.draining and self.goaway_last and stream_id > self.goaway_last:
            self.codec.reset(stream_id, REFUSED_STREAM)  # after our GOAWAY: retry elsewhere
            return
        if len(self.streams) >= self.codec.limits.max_concurrent_streams:
            self.stats.downstream_cx_protocol_error += 1
            self.codec.reset(stream_id, REFUSED_STREAM)  # over SETTINGS_MAX_CONCURRENT_STREAMS
            return
        worker = self.worker
        connection = self.connection
        exchange = H2Exchange(self, request, now)
        self.streams[stream_id] = exchange
        self.stats.downstream_rq_total += 1
        self.stats.downstream_rq_active += 1
        exchange.grpc = grpc = is_grpc(request.headers)
        if grpc:
            exchange.grpc_messages = (MessageCount(), MessageCount())
        destination = connection.destination
        if destination is None or request.method == b"CONNECT":
            self.local_reply(exchange, 404, flags.NO_ROUTE, "route_not_found")
            return
        headers, exchange.request_id = forward_request_headers(
            request.headers, connection.client_address, connection.scheme
        )
        exchange.upstream_head = RequestHead(
            stream_id,
            request.method,
            request.target,
            headers,
            b"1.1",
            True,
            request.content_length,
            request.chunked,
        )
        observer = worker.observer
        if observer is not None:
            observer.request_start(connection, exchange)
        # HTTP/2 upstream, as Istio's USE_DOWNSTREAM_PROTOCOL; a destination that does not
        # speak h2c gets HTTP/1.1 instead (gRPC cannot, and fails fast: UNAVAILABLE).
        worker.h2_pool.acquire(destination, exchange, connection.source, not grpc)

    def _request_end(self, exchange: H2Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        if exchange.end_request(trailers):
            self._arm_route_timeout(exchange)

    # -- the upstream side ----------------------------------------------------------------

    def on_upstream_ready(self, exchange: H2Exchange, upstream: Upstream, reused: bool) -> None:
        self.stats.upstream_rq_total += 1
        if exchange.attach(upstream, reused, monotonic()):
            self._arm_route_timeout(exchange)
        if exchange.owed and not exchange.upstream_blocked:
            self.codec.acknowledge(exchange.stream_id, exchange.owed)
            exchange.owed = 0
            self.mark()
        if self.write_paused:
            self._pause_upstream(exchange)

    def on_upstream_failed(
        self, exchange: H2Exchange, status: int, flag: str, details: str
    ) -> None:
        connection = self.connection
        assert connection.destination is not None
        more = retrying.after_failure(
            self.worker, exchange, connection.destination, connection.listener_name, flag,
            self._send_again,
        )  # fmt: skip
        if more is not None:
            self.local_reply(exchange, status, flag, details, more)

    def _retry(self, exchange: H2Exchange, sent: bool) -> int:
        destination = self.connection.destination
        assert destination is not None
        return retrying.try_again(
            self.worker, exchange, destination, self.connection.listener_name, sent,
            self._send_again,
        )  # fmt: skip

    def _send_again(self, exchange: Exchange) -> None:
        destination = self.connection.destination
        if exchange.finished or destination is None:
            return  # answered meanwhile (route timeout, client gone)
        assert isinstance(exchange, H2Exchange)
        self.worker.h2_pool.acquire(
            destination, exchange, self.connection.source, not exchange.grpc
        )

    def _retry_answer(self, exchange: H2Exchange, head: ResponseHead) -> bool:
        """A retriable answer (503; gRPC cancelled/unavailable) sent again: True if so."""
        grpc_status = header_value(head.headers, b"grpc-status") if exchange.grpc else None
        if not retry.retriable(head.status, grpc_status):
            if exchange.retries:
                self.stats.upstream_rq_retry_success += 1
            return False
        upstream = exchange.upstream
        decision = self._retry(exchange, True)
        if decision == retry.RETRY:
            if upstream is not None:
                upstream.user = None  # its answer is dropped unread, with its stream
                upstream.abort()
            return True
        if decision != retry.NOT_RETRIABLE:
            exchange.add_flag(retry.FLAG_FOR[decision])
        return False

    def on_upstream_events(self, exchange: H2Exchange, events: list[Event]) -> None:
        codec = self.codec
        stream_id = exchange.stream_id
        head: ResponseHead | None = None  # sent with the first DATA, or alone with END_STREAM
        last = len(events) - 1
        ended = False
        for index, event in enumerate(events):
            kind = type(event)
            if kind is Data:
                assert isinstance(event, Data)
                if head is not None:
                    codec.send_response(stream_id, head, False)
                    head = None
                exchange.bytes_sent += len(event.data)
                messages = exchange.grpc_messages
                if messages is not None:
                    messages[1].feed(event.data)
                # The last DATA carries END_STREAM when the end follows without trailers.
                following = events[index + 1] if index < last else None
                ends = type(following) is EndOfMessage and not following.trailers
                left = codec.send_data(stream_id, event.data, ends)
                ended = ends
                if codec.unsent() > self.high_water:
                    # Framed output waits for the end of the loop's turn, while the
                    # turn may read more from every HTTP/1 upstream: write it now, so
                    # the socket's own high mark pauses them (pause_writing) in time.
                    self.flush()
                if (left or self.write_paused) and not exchange.paused_upstream:
                    self._pause_upstream(exchange)
            elif kind is ResponseHead:
                assert isinstance(event, ResponseHead)
                if event.status < 200:
                    continue  # 1xx: nothing an HTTP/2 client needs from an HTTP/1 hop
                if self._retry_answer(exchange, event):
                    return
                exchange.status = event.status
                exchange.response_started = True
                event.headers = strip_hop_by_hop(event.headers)
                exchange.response = head = event
                if exchange.observe_response:
                    self.worker.response_starts(exchange, event)  # peer metadata in and out
            elif kind is EndOfMessage:
                assert isinstance(event, EndOfMessage)
                exchange.response_trailers = event.trailers
                if head is not None and not event.trailers:
                    codec.send_response(stream_id, head, True)  # trailers-only / empty body
                    codec.forget(stream_id)
                else:
                    if head is not None:
                        codec.send_response(stream_id, head, False)
                    if not ended:
                        codec.send_end(stream_id, event.trailers)
                head = None
                exchange.response_complete = True
                self._response_done(exchange)
                if not exchange.request_complete and not codec.pending(stream_id):
                    # RFC 9113 section 8.1: the answer is complete, the rest of the request
                    # is not needed (and the stream stops counting against the limit).
                    codec.reset(stream_id, NO_ERROR)
                break
            elif kind is ProtocolError:
                assert isinstance(event, ProtocolError)
                self.stats.upstream_cx_protocol_error += 1
                if head is not None:
                    codec.send_response(stream_id, head, False)
                    head = None
                self._upstream_broke(
                    exchange, flags.UPSTREAM_PROTOCOL_ERROR, event.reason, 502, INTERNAL_ERROR
                )
                break
        if head is not None:
            codec.send_response(stream_id, head, False)
        self.mark()

    def on_upstream_lost(self, exchange: H2Exchange, upstream: Upstream) -> None:
        events = upstream.codec.connection_closed()
        if events and type(events[0]) is EndOfMessage:
            self.on_upstream_events(exchange, events)  # a close-delimited body ended
            return
        self.stats.upstream_cx_destroy_remote_with_active_rq += 1
        reset_code = cast("int | None", getattr(upstream, "reset_code", None))
        if (
            reset_code is None
            and exchange.reused
            and not upstream.received_any
            and not exchange.retried
            and not exchange.response_started
            and exchange.request.content_length in (None, 0)
            and not exchange.request.chunked
            and self.connection.destination is not None
        ):
            # A pooled HTTP/1 connection the server had closed: the request never got there.
            exchange.retried = True
            exchange.upstream = None
            self.stats.upstream_rq_retry += 1
            self.worker.pool.acquire(self.connection.destination, exchange, self.connection.source)
            return
        exchange.upstream = None
        if reset_code is not None:
            # RST_STREAM from the upstream: the same code to the client, or a 502 UR.
            self._upstream_broke(
                exchange,
                flags.UPSTREAM_REMOTE_RESET,
                "upstream_reset_before_response_started",
                502,
                reset_code or INTERNAL_ERROR,
            )
        else:
            self._upstream_broke(
                exchange,
                flags.UPSTREAM_CONNECTION_TERMINATION,
                "upstream_reset_before_response_started",
                503,
                INTERNAL_ERROR,
            )
        self.mark()

    def _upstream_broke(
        self, exchange: H2Exchange, flag: str, details: str, status: int, code: int
    ) -> None:
        self._abort_upstream(exchange)
        if not exchange.response_started:
            self.local_reply(exchange, status, flag, details)
            return
        # Part of the response went out: only a reset says it is incomplete.
        exchange.add_flag(flag)
        exchange.details = details
        self.codec.reset(exchange.stream_id, code)
        self._finish(exchange)

    def _arm_route_timeout(self, exchange: H2Exchange) -> None:
        # gRPC streams carry their own deadline (grpc-timeout) and may stream for hours;
        # Istio disables the route timeout for them too.
        if exchange.grpc or exchange in self.route_deadlines:
            return
        worker = self.worker
        self.route_deadlines.add(exchange, worker.loop.time() + worker.route_timeout)

    def _route_timeout(self, item: Hashable) -> None:
        exchange = cast(H2Exchange, item)
        if not exchange.finished:
            self.stats.upstream_rq_timeout += 1
            self._upstream_broke(
                exchange, flags.UPSTREAM_REQUEST_TIMEOUT, "response_timeout", 504, CANCEL
            )
        self.mark()

    def _pause_upstream(self, exchange: H2Exchange) -> None:
        upstream = exchange.upstream
        if upstream is not None:
            exchange.paused_upstream = True
            upstream.pause_reading()

    def _resume_upstream(self, exchange: H2Exchange) -> None:
        exchange.paused_upstream = False
        upstream = exchange.upstream
        if upstream is not None:
            upstream.resume_reading()

    # -- finishing --------------------------------------------------------------------

    def _response_done(self, exchange: H2Exchange) -> None:
        upstream = exchange.upstream
        if upstream is not None:
            exchange.upstream = None
            if exchange.paused_upstream:
                exchange.paused_upstream = False
                upstream.resume_reading()
            if exchange.request_complete:
                upstream.release_to_pool()
            else:
                # The server answered before the request ended: that upstream cannot be
                # reused (HTTP/1) or its request half is cancelled (HTTP/2).
                upstream.user = None
                upstream.close()
        self._finish(exchange)

    def _finish(self, exchange: H2Exchange) -> None:
        """Account for the exchange exactly once."""
        if exchange.finished:
            return
        exchange.finished = True
        if exchange.retry_active:
            destination = self.connection.destination
            assert destination is not None
            retrying.release(self.worker, exchange, destination)
        self.route_deadlines.remove(exchange)
        self.streams.pop(exchange.stream_id, None)
        if exchange.owed:
            self.codec.acknowledge(exchange.stream_id, exchange.owed)
            exchange.owed = 0
        stats = self.stats
        stats.downstream_rq_active -= 1
        status = exchange.status
        if 100 <= status < 600:
            stats.count_status(status)
        observer = self.worker.observer
        if observer is not None:
            self.flusher.report(observer, self.connection, exchange, monotonic())

    def _abort_upstream(self, exchange: H2Exchange) -> None:
        upstream = exchange.upstream
        exchange.upstream = None
        if upstream is not None:
            upstream.user = None
            upstream.abort()
        elif exchange.upstream_head is not None:
            self.worker.pool.cancel(exchange)
            self.worker.h2_pool.cancel(exchange)

    def local_reply(
        self, exchange: H2Exchange, status: int, flag: str, details: str, more: str = ""
    ) -> None:
        """Answer from the proxy (Envoy's local reply); gRPC callers get a trailers-only status.

        `more` is a second flag (URX or UO from the retry policy), or empty.
        """
        codec = self.codec
        stream_id = exchange.stream_id
        exchange.add_flag(flag)
        if more:
            exchange.add_flag(more)
        exchange.details = details
        exchange.response_started = True
        exchange.response_complete = True
        head, body = local_reply(
            status, flag, details, exchange.request_id, True, exchange.transport_failure
        )
        if exchange.observe_response:
            self.worker.response_starts(exchange, head)  # inbound: tell the caller who we are
        if exchange.grpc:
            message = body.replace(b"%", b"%25").replace(b"\r", b"").replace(b"\n", b" ")
            head.status = 200
            head.content_length = None
            head.headers = [
                (b"content-type", b"application/grpc"),
                (b"grpc-status", _GRPC_STATUS.get(status, b"2")),
                (b"grpc-message", message),
                *head.headers[1:],
            ]
            codec.send_response(stream_id, head, True)
        else:
            exchange.bytes_sent += len(body)
            codec.send_response(stream_id, head, False)
            codec.send_data(stream_id, body, True)
        exchange.status = head.status
        exchange.response = head
        if not exchange.request_complete and not codec.pending(stream_id):
            codec.reset(stream_id, NO_ERROR)  # RFC 9113 section 8.1: the rest is not needed
        self._abort_upstream(exchange)
        self._finish(exchange)
        self.mark()

    # -- output -----------------------------------------------------------------------

    def mark(self) -> None:
        self.flusher.mark(self)

    def flush(self) -> None:
        codec = self.codec
        if codec.tx_resets or codec.malformed:
            self.stats.http2_tx_reset += codec.tx_resets
            self.stats.http2_rx_messaging_error += codec.malformed
            codec.tx_resets = codec.malformed = 0
        data = codec.data_to_send()
        transport = self.connection.transport
        if data and transport is not None:
            self.stats.downstream_cx_tx_bytes_total += len(data)
            transport.write(data)
        if self.draining and not self.streams and transport is not None and not self.codec.queued:
            transport.close()

    def _close(self) -> None:
        transport = self.connection.transport
        if transport is not None:
            transport.close()
