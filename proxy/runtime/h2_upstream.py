"""Multiplexed upstream HTTP/2 connections and their pool: many streams each, more when full.

An exchange gets an `H2UpstreamStream`, which looks to it like an HTTP/1
`UpstreamConnection` (a `codec` whose send methods return bytes, `write`, a
`transport` to pause, `pool.release`), so HTTP/1 and HTTP/2 downstreams drive either
kind of upstream the same way. Behind that face the stream queues into the shared
connection's h2 state, and one write per connection per loop turn carries it all.
Backpressure: response DATA is acknowledged to the server only while the exchange
has not paused the stream's "transport" (its downstream could not take more).
A stream the server never processed (RST_STREAM REFUSED_STREAM, or above a GOAWAY's
last stream id; RFC 9113 section 8.7) is sent again once on another connection, as
Envoy does, while its request can still be replayed whole; the exchange never notices.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol, cast

from proxy.core import flags
from proxy.core.addresses import address_of
from proxy.core.codecs.base import ClientCodec
from proxy.core.codecs.h2 import (
    CANCEL,
    REFUSED_STREAM,
    GoAway,
    H2ClientCodec,
    H2Limits,
    SendDrained,
    SettingsChanged,
    StreamReset,
)
from proxy.core.messages import Data, EndOfMessage, Event, RequestHead
from proxy.runtime.upstream import (
    PendingRequests,
    Upstream,
    UpstreamUser,
    connect,
    fail_connect,
)
from proxy.telemetry import stats as S

if TYPE_CHECKING:
    from proxy.config.model import ProxyConfig
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.upstream import Destination, UpstreamPool
    from proxy.telemetry.observer import ConnectionFacts, RequestObserver


# A request waiting for a stream: (who, source address, may it go to HTTP/1.1 instead).
_Waiter = tuple[UpstreamUser, "str | None", bool]
# How long a destination that failed the h2c handshake is sent HTTP/1.1 without trying.
HTTP1_ONLY_MEMORY: Final = 60.0


class FlushQueue:
    """Objects with output pending, written once per loop turn (one write per batch of events).

    Telemetry for the exchanges that finished in the turn (`report`) runs after the
    writes: metrics, span and access log are off the path between a response arriving
    and it leaving.
    """

    __slots__ = ("items", "loop", "reports", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[Flushable] = []
        self.reports: list[tuple[RequestObserver, ConnectionFacts, Exchange, float]] = []
        self.scheduled = False

    def mark(self, item: Flushable) -> None:
        if not item.dirty:
            item.dirty = True
            self.items.append(item)
            if not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self.run)

    def report(
        self, observer: RequestObserver, downstream: ConnectionFacts, exchange: Exchange, now: float
    ) -> None:
        """`observer.request_done(downstream, exchange, now)`, after this turn's writes."""
        self.reports.append((observer, downstream, exchange, now))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        # Flushing may mark more (a downstream write unblocks an upstream ack): bounded
        # rounds, the rest on the next turn.
        for _ in range(4):
            items, self.items = self.items, []
            if not items:
                break
            for item in items:
                item.dirty = False
                item.flush()
        if self.items and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)
        reports = self.reports
        if reports:
            self.reports = []
            for observer, downstream, exchange, now in reports:
                observer.request_done(downstream, exchange, now)


class Flushable(Protocol):
    dirty: bool

    def flush(self) -> None: ...


class H2UpstreamStream(ClientCodec, Upstream):
    """One exchange on a shared HTTP/2 connection, with the face of an HTTP/1 upstream.

    It is its own client codec (a ClientCodec, so the compiled exchange calls it natively).
    """

    __slots__ = (
        "blocked",
        "connection",
        "destination",
        "ended",
        "finished",
        "head",
        "held",
        "local_address",
        "owed",
        "pool",
        "prebuffer",
        "received_any",
        "replay",
        "replay_size",
        "reset_code",
        "retried",
        "retrying",
        "stream_id",
        "trailers",
        "user",
    )

    def __init__(self, connection: H2UpstreamConnection, user: UpstreamUser) -> None:
        self.connection = connection
        self.pool = connection.pool
        self.destination = connection.destination
        self.local_address = connection.local_address
        self.user: UpstreamUser | None = user
        self.stream_id = 0
        self.head: RequestHead | None = None
        self.prebuffer: list[bytes] = []
        self.ended = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.held = False
        self.owed = 0
        self.blocked = False
        self.received_any = False
        self.reset_code: int | None = None
        self.finished = False
        # The request body so far, kept while a refused stream could still be sent again:
        # None once it outgrew the pool's limit, the response began or it was retried.
        self.replay: list[bytes] | None = []
        self.replay_size = 0
        self.retried = False
        self.retrying = False  # refused, waiting in the pool for another connection

    # `codec` is a property, not an attribute: an attribute naming the stream itself
    # would make every stream a reference cycle, left for the cycle collector (about 15
    # objects a call, a 1 ms collection every few hundred calls).

    @property
    def codec(self) -> ClientCodec:
        """The exchange calls codec.send_*: this object is its own codec."""
        return self

    # Backpressure from a slow client holds the stream's acknowledgements, not the
    # shared socket.

    def pause_reading(self) -> None:
        self.held = True

    def resume_reading(self) -> None:
        self.held = False
        if self.owed and self.stream_id:
            self.connection.codec.acknowledge(self.stream_id, self.owed)
            self.owed = 0
            self.connection.mark()

    # -- the HTTP/1 codec face (bytes out are always empty: the connection writes) ----

    def send_request_head(self, head: RequestHead) -> bytes:
        self.head = head
        self.connection.opening.append(self)
        self.connection.mark()
        return b""

    def send_data(self, data: bytes) -> bytes:
        if not data or (self.finished and not self.retrying):
            return b""
        replay = self.replay
        if replay is not None:
            self.replay_size += len(data)
            if self.replay_size <= self.pool.high_water:
                replay.append(data)
            else:
                self.replay = None
        if not self.stream_id:
            self.prebuffer.append(data)
            if self.retrying and not self.blocked:
                # No connection to take it yet: the exchange stops reading until there is.
                self.blocked = True
                if self.user is not None:
                    self.user.upstream_pause_writing()
            return b""
        connection = self.connection
        left = connection.codec.send_data(self.stream_id, data)
        connection.mark()
        if left and not self.blocked:
            # The server's window is shut: the exchange stops sending until it opens.
            self.blocked = True
            if self.user is not None:
                self.user.upstream_pause_writing()
        return b""

    def send_end(self, trailers: list[tuple[bytes, bytes]]) -> bytes:
        if self.finished and not self.retrying:
            return b""
        self.ended = True
        self.trailers = trailers  # kept: a refused stream sends them again
        if not self.stream_id:
            return b""
        self.connection.codec.send_end(self.stream_id, trailers)
        self.connection.mark()
        return b""

    def receive(self, data: bytes) -> list[Event]:
        """Never given bytes: the shared connection parses them and hands each stream
        its events (`H2UpstreamConnection.data_received`)."""
        return []

    def connection_closed(self) -> list[Event]:
        return []  # an HTTP/2 response is never delimited by the connection closing

    @property
    def reusable(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        """Bytes are never produced for the exchange to write (see the codec face)."""

    # -- lifecycle --------------------------------------------------------------------

    def open(self) -> None:
        """Called by the connection's flush, in order, so stream ids go out ascending."""
        head = self.head
        assert head is not None
        connection = self.connection
        codec = connection.codec
        end_now = self.ended and not self.prebuffer and not self.trailers
        self.stream_id = codec.send_request(head, b"http", end_now)
        connection.streams[self.stream_id] = self
        pieces = self.prebuffer
        self.prebuffer = []
        # A request that ended without trailers ends on its last DATA frame, not on an
        # empty one after it (a unary gRPC call: one frame fewer for the next hop).
        end_on_data = self.ended and not self.trailers and bool(pieces)
        last = len(pieces) - 1
        for index, piece in enumerate(pieces):
            codec.send_data(self.stream_id, piece, end_on_data and index == last)
        if self.ended and not end_now and not end_on_data:
            codec.send_end(self.stream_id, self.trailers)
        if codec.pending(self.stream_id):
            if not self.blocked:
                self.blocked = True
                if self.user is not None:
                    self.user.upstream_pause_writing()
        elif self.blocked and not connection.write_paused:
            # Paused on a connection that refused it (or while it waited for this one).
            self.blocked = False
            if self.user is not None:
                self.user.upstream_resume_writing()

    def adopt(self, connection: H2UpstreamConnection) -> None:
        """Move a refused stream to `connection`, which has a slot for it; it opens there."""
        self.connection = connection
        self.local_address = connection.local_address
        self.retrying = False
        self.finished = False
        self.stream_id = 0
        self.reset_code = None
        if self.user is not None:
            self.user.upstream_moved(self)
        connection.opening.append(self)
        connection.mark()

    def release_to_pool(self, now: float = -1.0) -> None:
        self.pool.release(self)

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        """The exchange gave up: reset the stream (CANCEL), as Envoy does on a downstream reset."""
        self.user = None
        if not self.finished:
            self.finished = True
            if self.stream_id:
                self.connection.codec.reset(self.stream_id, CANCEL)
            self.connection.stream_done(self)

    def __repr__(self) -> str:
        return f"<H2UpstreamStream {self.stream_id} on {self.connection!r}>"


class _Retry(UpstreamUser):
    """Stands in the pool's queue for a refused stream; gives it the connection it gets."""

    __slots__ = ("stream",)

    def __init__(self, stream: H2UpstreamStream) -> None:
        self.stream = stream

    def upstream_ready(self, connection: Upstream, reused: bool) -> None:
        slot = cast(H2UpstreamStream, connection)  # a fresh stream: only its slot is used
        if self.stream.user is None:  # the exchange gave up while it waited
            slot.pool.release(slot)
            return
        self.stream.adopt(slot.connection)

    def upstream_failed(
        self, status: int, flag: str, details: str, transport_failure: str | None = None
    ) -> None:
        stream = self.stream
        stream.retrying = False
        user, stream.user = stream.user, None
        if user is not None:
            user.upstream_failed(status, flag, details, transport_failure)

    def upstream_moved(self, upstream: Upstream) -> None:
        """Never called: the stand-in's own stream is never opened."""

    def upstream_events(self, events: list[Event]) -> None:
        """Never called: the stand-in's own stream is never opened."""

    def upstream_lost(self, connection: Upstream) -> None:
        """Never called (as above)."""

    def upstream_pause_writing(self) -> None:
        """Never called (as above)."""

    def upstream_resume_writing(self) -> None:
        """Never called (as above)."""


class H2UpstreamConnection(asyncio.Protocol):
    """One h2c connection to an upstream, shared by up to MAX_CONCURRENT_STREAMS exchanges."""

    def __init__(
        self, pool: H2UpstreamPool, destination: Destination, source: str | None = None
    ) -> None:
        self.pool = pool
        self.destination = destination
        self.source = source
        self.stats = pool.stats
        self.codec = H2ClientCodec(pool.limits)
        self.transport: asyncio.Transport | None = None
        self.local_address = ""
        self.streams: dict[int, H2UpstreamStream] = {}
        self.opening: list[H2UpstreamStream] = []
        self.active = 0  # streams handed out and not yet done (capacity accounting)
        self.capacity = pool.limits.max_concurrent_streams
        self.goaway = False
        # No stream goes out before the server's first SETTINGS: its stream limit may be
        # lower than ours, and streams over it would come back REFUSED_STREAM.
        self.ready = False
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.write_paused = False
        self.dirty = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.local_address = address_of(transport, "sockname")
        transport.set_write_buffer_limits(self.pool.high_water)
        self.stats.upstream_cx_total += 1
        self.stats.upstream_cx_active += 1
        # A server that never sends SETTINGS (not HTTP/2, or stuck) must not hold the
        # requests waiting for this connection: after the connect timeout it is given up.
        self.handshake_timer = self.pool.loop.call_later(
            self.pool.connect_timeout, self._handshake_timeout
        )
        self.mark()

    def _handshake_timeout(self) -> None:
        self.handshake_timer = None
        if not self.ready and self.transport is not None:
            self.transport.abort()

    def mark(self) -> None:
        self.pool.flusher.mark(self)

    def flush(self) -> None:
        codec = self.codec
        if codec.tx_resets:
            self.stats.http2_tx_reset += codec.tx_resets
            codec.tx_resets = 0
        opening = self.opening
        if opening and self.transport is not None:
            self.opening = []
            for stream in opening:
                if stream.finished:
                    continue
                try:
                    stream.open()
                except Exception:  # h2 refused (stream limit, connection closing): lost
                    self.opening.append(stream)
                    self._lost(stream, not stream.stream_id)
        data = self.codec.data_to_send()
        if data and self.transport is not None:
            self.stats.upstream_cx_tx_bytes_total += len(data)
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.stats.upstream_cx_rx_bytes_total += len(data)
        events = self.codec.receive(data, self.pool.loop.time())
        streams = self.streams
        batch: list[Event] = []
        batch_stream: H2UpstreamStream | None = None
        for event in events:
            kind = type(event)
            if kind is Data:
                assert isinstance(event, Data)
                stream = streams.get(event.stream_id)
                if stream is None or stream.user is None:
                    self.codec.acknowledge(event.stream_id, len(event.data))
                    continue
                # Acknowledged once the exchange has passed it on, unless it is held.
                stream.owed += len(event.data)
            elif kind is StreamReset:
                assert isinstance(event, StreamReset)
                if event.remote:
                    self.stats.http2_rx_reset += 1
                self._deliver(batch_stream, batch)
                batch, batch_stream = [], None
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.reset_code = event.error_code
                    self._lost(
                        stream,
                        event.remote
                        and event.error_code == REFUSED_STREAM
                        and not stream.received_any,
                    )
                continue
            elif kind is SendDrained:
                assert isinstance(event, SendDrained)
                stream = streams.get(event.stream_id)
                if (
                    stream is not None
                    and stream.blocked
                    and self.transport is not None
                    and not self.write_paused
                ):
                    stream.blocked = False
                    if stream.user is not None:
                        stream.user.upstream_resume_writing()
                continue
            elif kind is SettingsChanged:
                assert isinstance(event, SettingsChanged)
                self.capacity = min(
                    event.max_concurrent_streams, self.pool.limits.max_concurrent_streams
                )
                if not self.ready:
                    self.ready = True
                    self.stats.upstream_cx_http2_total += 1  # the server speaks h2c
                    if self.handshake_timer is not None:
                        self.handshake_timer.cancel()
                        self.handshake_timer = None
                    self.pool.connection_ready(self)
                else:
                    self.pool.capacity_changed(self)
                continue
            elif kind is GoAway:
                assert isinstance(event, GoAway)
                self._deliver(batch_stream, batch)
                batch, batch_stream = [], None
                self._on_goaway(event)
                continue
            stream_id = getattr(event, "stream_id", 0)
            stream = streams.get(stream_id)
            if stream is None:
                continue
            stream.received_any = True
            stream.replay = None  # a stream the server answers was not refused
            if stream is not batch_stream:
                self._deliver(batch_stream, batch)
                batch, batch_stream = [], stream
            batch.append(cast(Event, event))
            if type(event) is EndOfMessage:
                self._deliver(batch_stream, batch)
                batch, batch_stream = [], None
        self._deliver(batch_stream, batch)
        self.mark()

    def _deliver(self, stream: H2UpstreamStream | None, batch: list[Event]) -> None:
        if stream is None or not batch:
            return
        ended = type(batch[-1]) is EndOfMessage
        if ended:
            # The server finished this stream; from here the exchange only releases it.
            stream.finished = True
            self.stream_done(stream)
        user = stream.user
        if user is not None:
            user.upstream_events(batch)
        if stream.owed and not stream.held and not ended:
            self.codec.acknowledge(stream.stream_id, stream.owed)
            stream.owed = 0

    def _lost(self, stream: H2UpstreamStream, refused: bool = False) -> None:
        """The stream ended without a response; `refused`: the server never processed it."""
        if refused and self.pool.retry(self, stream):
            return
        stream.finished = True
        self.stream_done(stream)
        user = stream.user
        stream.user = None
        if user is not None:
            stream.received_any = True  # never retried on the HTTP/1 pool
            user.upstream_lost(stream)

    def _on_goaway(self, event: GoAway) -> None:
        self.goaway = True
        self.pool.retire(self)
        if event.local:
            # We broke off (the server broke the protocol): every stream is lost.
            self.mark()
            for stream in list(self.streams.values()):
                self._lost(stream)
            self.close()
            return
        for stream_id, stream in list(self.streams.items()):
            if stream_id > event.last_stream_id:
                self._lost(stream, True)  # never processed by the server
        if not self.streams:
            self.close()

    def stream_done(self, stream: H2UpstreamStream) -> None:
        """Exactly once per stream handed out: its slot is free again."""
        if stream.stream_id:
            self.streams.pop(stream.stream_id, None)
            self.codec.forget(stream.stream_id)
            if stream.owed:
                # The stream is over; what it held back still counts against the
                # connection's window, which every other stream shares.
                self.codec.acknowledge(stream.stream_id, stream.owed)
                stream.owed = 0
                self.mark()
        elif stream in self.opening:
            self.opening.remove(stream)
        self.active -= 1
        self.pool.stream_freed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.stats.upstream_cx_active -= 1
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        if not self.ready:
            self.ready = True  # once: it will never be
            self.pool.handshake_failed(self)
        self.pool.retire(self)
        for stream in list(self.streams.values()) + self.opening:
            if stream.user is not None:
                self.stats.upstream_cx_destroy_remote_with_active_rq += 1
            self._lost(stream, not stream.stream_id)  # not yet sent: safe to send elsewhere
        self.opening = []
        self.codec.release()  # frees h2's state now, not at the next full collection

    def pause_writing(self) -> None:
        self.write_paused = True
        self.codec.pause()
        for stream in self.streams.values():
            if not stream.blocked:
                stream.blocked = True
                if stream.user is not None:
                    stream.user.upstream_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.codec.resume()
        self.mark()
        for stream in list(self.streams.values()):
            if stream.blocked and not self.codec.pending(stream.stream_id):
                stream.blocked = False
                if stream.user is not None:
                    stream.user.upstream_resume_writing()

    def close(self) -> None:
        if self.transport is not None:
            self.mark()
            self.transport.close()

    def __repr__(self) -> str:
        host, port = self.destination
        return f"<H2UpstreamConnection {host}:{port} streams={self.active}/{self.capacity}>"


class H2UpstreamPool:
    """HTTP/2 connections per destination; a new one only when the open ones are full."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ProxyConfig,
        stats: S.Stats,
        http1: UpstreamPool | None = None,
    ) -> None:
        self.loop = loop
        # Where requests that may fall back go when a destination does not speak h2c.
        self.http1 = http1
        # Destinations whose h2c handshake failed, until when (then they are tried again).
        self.http1_only: dict[Destination, float] = {}
        self.stats = stats
        self.limits = H2Limits(stream_window=config.limits.buffer_high_water)
        self.connect_timeout = config.timeouts.connect
        self.max_connections = config.limits.max_upstream_connections
        self.high_water = config.limits.buffer_high_water
        self.flusher = FlushQueue(loop)
        self.connections: dict[Destination, list[H2UpstreamConnection]] = {}
        self.pending: PendingRequests[_Waiter] = PendingRequests(
            config.limits.max_pending_requests, stats
        )
        self.connecting: dict[Destination, int] = {}
        self.closing = False
        # 1 h: Envoy's cluster idle_timeout; idle connections are looked for on one timer.
        self.idle_timeout = config.timeouts.upstream_idle or float("inf")  # 0: off, as Envoy
        self.sweep_timer: asyncio.TimerHandle | None = None
        self.streams_per_connection: dict[Destination, int] = {}

    def acquire(
        self,
        destination: Destination,
        user: UpstreamUser,
        source: str | None,
        http1_fallback: bool = False,
    ) -> None:
        """A stream now, or once a connection has its SETTINGS; `http1_fallback`: an
        HTTP/1.1 connection instead if the destination turns out not to speak h2c."""
        if self.http1_only and destination in self.http1_only:
            if self.loop.time() < self.http1_only[destination]:
                self._without_h2(destination, (user, source, http1_fallback))
                return
            del self.http1_only[destination]
        for connection in self.connections.get(destination, ()):
            if connection.active < connection.capacity and not connection.goaway:
                self._hand_out(connection, user, True)
                return
        self._queue(destination, (user, source, http1_fallback))

    def _queue(self, destination: Destination, waiter: _Waiter) -> None:
        """Wait for a stream; open a connection if those opening cannot serve the queue."""
        queue = self.pending.add(destination, waiter)
        if queue is None:
            return
        source = waiter[1]
        open_count = len(self.connections.get(destination, ())) + self.connecting.get(
            destination, 0
        )
        # One connection attempt serves up to a connection's worth of waiters (as many
        # streams as this server allowed last time).
        limit = self.limits.max_concurrent_streams
        per_connection = self.streams_per_connection.get(destination, limit) or 1
        wanted = -(-len(queue) // per_connection)
        if self.connecting.get(destination, 0) < wanted and open_count < self.max_connections:
            self.connecting[destination] = self.connecting.get(destination, 0) + 1
            self.loop.create_task(self._connect(destination, source))

    def _hand_out(self, connection: H2UpstreamConnection, user: UpstreamUser, reused: bool) -> None:
        connection.active += 1
        if reused:
            self.stats.upstream_cx_pool_reuse += 1
        stream = H2UpstreamStream(connection, user)
        user.upstream_ready(stream, reused)

    def cancel(self, user: UpstreamUser) -> None:
        self.pending.cancel(user)

    def retry(self, connection: H2UpstreamConnection, stream: H2UpstreamStream) -> bool:
        """Send a refused stream again on another connection; False if it cannot be.

        Once per request, and only while the request so far is held whole (`replay`).
        """
        if stream.retried or stream.user is None or stream.replay is None:
            return False
        stream.retried = True
        self.stats.upstream_rq_retry += 1
        stream.finished = True  # holds no slot while it waits
        connection.stream_done(stream)
        stream.retrying = True
        stream.stream_id = 0
        stream.prebuffer, stream.replay = stream.replay, None
        waiter = _Retry(stream)
        destination = connection.destination
        for other in self.connections.get(destination, ()):
            if other is not connection and other.active < other.capacity and not other.goaway:
                self._hand_out(other, waiter, True)
                return True
        self._queue(destination, (waiter, connection.source, False))
        return True

    def release(self, stream: H2UpstreamStream) -> None:
        """The exchange is done with its stream (the response ended)."""
        stream.user = None
        if not stream.finished:
            stream.abort()
        elif not stream.ended and stream.stream_id:
            # The server answered before the request ended: stop the request half too.
            stream.connection.codec.reset(stream.stream_id, CANCEL)
            stream.connection.mark()

    def stream_freed(self, connection: H2UpstreamConnection) -> None:
        if connection.active <= 0:
            connection.idle_since = self.loop.time()
            if connection.goaway or self.closing:
                connection.close()
                return
            self._schedule_sweep()
        self._serve_waiters(connection)

    def capacity_changed(self, connection: H2UpstreamConnection) -> None:
        self.streams_per_connection[connection.destination] = connection.capacity
        self._serve_waiters(connection)

    def _serve_waiters(self, connection: H2UpstreamConnection) -> None:
        queue = self.pending.get(connection.destination)
        while (
            queue
            and connection.active < connection.capacity
            and not connection.goaway
            and connection.transport
        ):
            self._hand_out(connection, queue.popleft()[0], True)

    def retire(self, connection: H2UpstreamConnection) -> None:
        """No new streams on this connection (GOAWAY or closed)."""
        connections = self.connections.get(connection.destination)
        if connections and connection in connections:
            connections.remove(connection)

    async def _connect(self, destination: Destination, source: str | None) -> None:
        connection = H2UpstreamConnection(self, destination, source)
        reason = await connect(
            self.loop, connection, destination, source, self.connect_timeout, self.stats
        )
        if reason is not None:
            self.connecting[destination] -= 1
            queue = self.pending.get(destination)
            # A failed attempt fails the waiters it was opened for.
            for _ in range(min(len(queue or ()), self.limits.max_concurrent_streams)):
                assert queue is not None
                fail_connect(queue.popleft()[0], reason)
            return
        # Streams go out once the server's SETTINGS arrive (connection_ready).

    def connection_ready(self, connection: H2UpstreamConnection) -> None:
        destination = connection.destination
        self.connecting[destination] -= 1
        self.streams_per_connection[destination] = connection.capacity
        self.connections.setdefault(destination, []).append(connection)
        self._serve_waiters(connection)
        if connection.active == 0:
            connection.idle_since = self.loop.time()
            self._schedule_sweep()

    def handshake_failed(self, connection: H2UpstreamConnection) -> None:
        """Closed before its SETTINGS (an upstream that does not speak h2c, say)."""
        destination = connection.destination
        self.connecting[destination] -= 1
        self.stats.upstream_cx_protocol_error += 1
        # Remembered for a while, so the next requests go straight to HTTP/1.1.
        self.http1_only[destination] = self.loop.time() + HTTP1_ONLY_MEMORY
        queue = self.pending.pop(destination, None)
        while queue:
            self._without_h2(destination, queue.popleft())

    def _without_h2(self, destination: Destination, waiter: _Waiter) -> None:
        user, source, http1_fallback = waiter
        if http1_fallback and self.http1 is not None:
            self.http1.acquire(destination, user, source)
        else:
            user.upstream_failed(
                503, flags.UPSTREAM_PROTOCOL_ERROR, "upstream does not speak HTTP/2 (h2c)"
            )

    def _schedule_sweep(self) -> None:
        if self.sweep_timer is None and not self.closing and self.idle_timeout != float("inf"):
            self.sweep_timer = self.loop.call_later(self.idle_timeout, self._sweep)

    def _sweep(self) -> None:
        self.sweep_timer = None
        self.sweep(self.loop.time(), self.idle_timeout)
        if any(c.active <= 0 for conns in self.connections.values() for c in conns):
            self._schedule_sweep()

    def sweep(self, now: float, idle_timeout: float) -> None:
        deadline = now - idle_timeout
        for connections in list(self.connections.values()):
            for connection in [c for c in connections if c.active <= 0 and c.idle_since < deadline]:
                self.stats.upstream_cx_idle_timeout += 1
                self.retire(connection)
                connection.close()

    def close_idle(self) -> None:
        self.closing = True
        for connections in list(self.connections.values()):
            for connection in list(connections):
                if connection.active <= 0:
                    connection.close()

    def __repr__(self) -> str:
        parts = [
            f"{host}:{port} connections={len(conns)} streams={sum(c.active for c in conns)} "
            f"pending={len(self.pending.get((host, port), ()))}"
            for (host, port), conns in sorted(self.connections.items())
        ]
        return f"<H2UpstreamPool {'; '.join(parts) or 'empty'}>"
