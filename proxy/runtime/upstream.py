"""Upstream HTTP/1 connections and the per-destination keep-alive pool that owns them.

A connection belongs to at most one exchange at a time. The pool hands out idle
connections, opens new ones up to the per-destination cap (Envoy's max_connections
circuit breaker), queues requests beyond it up to max_pending_requests, refuses the
rest (503 UO), and never reuses a connection whose last response was not read to
the end or that the server marked close.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABCMeta, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from mypy_extensions import mypyc_attr, trait

from proxy.core import flags
from proxy.core.addresses import address_of
from proxy.core.codecs.base import ClientCodec
from proxy.core.local_reply import CONNECT_TIMEOUT_DETAILS
from proxy.core.messages import Event
from proxy.telemetry import stats as S

monotonic: Final = time.monotonic  # a C static in the compiled build

if TYPE_CHECKING:
    from proxy.config.model import ProxyConfig

Destination = tuple[str, int]


@trait
class Upstream:
    """What an exchange holds while it has an upstream: an HTTP/1 `UpstreamConnection`, or
    one stream of an HTTP/2 connection wearing the same face (`h2_upstream`).

    A mypyc trait rather than a Protocol: both classes implement it, so the compiled
    exchange and connection managers reach its members through the method table; a
    Protocol's are looked up by name (about five Python-level calls and attribute reads
    a request).
    """

    user: UpstreamUser | None
    received_any: bool
    local_address: str  # this end of the connection, `ip:port` (the access log's)

    @property
    @abstractmethod
    def codec(self) -> ClientCodec:
        """The client codec that frames this upstream's requests and parses its answers."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes the codec framed (an HTTP/2 stream's codec sends them itself)."""

    @abstractmethod
    def pause_reading(self) -> None:
        """Stop reading the answer for now: the client is not keeping up (backpressure)."""

    @abstractmethod
    def resume_reading(self) -> None:
        """Read the answer again."""

    @abstractmethod
    def release_to_pool(self, now: float = -1.0) -> None:
        """The exchange is done with this upstream: its pool reuses, hands on or closes it.

        `now`: the caller's time.monotonic() reading if it has one from this turn (else
        the pool reads the clock)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (an HTTP/2 stream: reset it)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the connection at once, unsent bytes included."""


@mypyc_attr(allow_interpreted_subclasses=True)  # tests stand in for exchanges
class UpstreamUser(metaclass=ABCMeta):
    """What an exchange waiting on the pool must accept (the downstream side implements it).

    A base class rather than a Protocol: the compiled hot path calls a class's methods
    through its method table, and a Protocol's by name lookup on every call (two of
    those per request cost about 800 instructions).
    """

    __slots__ = ()

    @abstractmethod
    def upstream_ready(self, connection: Upstream, reused: bool) -> None:
        """The pool has a connection (or HTTP/2 stream) for this exchange."""

    @abstractmethod
    def upstream_failed(
        self, status: int, flag: str, details: str, transport_failure: str | None = None
    ) -> None:
        """No connection: answer `status` with Envoy's response `flag`; a failed connect
        says why in Envoy's words (`transport_failure`, see `connect`)."""

    @abstractmethod
    def upstream_events(self, events: list[Event]) -> None:
        """What the upstream's codec parsed from its answer."""

    @abstractmethod
    def upstream_lost(self, connection: Upstream) -> None:
        """The connection closed under the exchange."""

    @abstractmethod
    def upstream_pause_writing(self) -> None:
        """The upstream is not keeping up: stop reading the client's request body."""

    @abstractmethod
    def upstream_resume_writing(self) -> None:
        """The upstream caught up."""

    @abstractmethod
    def upstream_moved(self, upstream: Upstream) -> None:
        """`upstream` now goes over another connection (an HTTP/2 stream the server
        refused, opened again elsewhere): its `local_address` has changed."""


class UpstreamConnection(asyncio.Protocol, Upstream):
    """One HTTP/1.1 connection to an upstream server, driven by a client codec."""

    __slots__ = (
        "codec",
        "destination",
        "idle",
        "idle_since",
        "local_address",
        "paused",
        "pool",
        "received_any",
        "stats",
        "transport",
        "user",
    )
    codec: ClientCodec  # an attribute here, a read-only property on the trait

    def __init__(
        self,
        pool: UpstreamPool,
        destination: Destination,
        codec: ClientCodec,
        idle: list[UpstreamConnection],
    ) -> None:
        self.pool = pool
        self.destination = destination
        # The pool's idle list for this destination: released into without a lookup.
        self.idle = idle
        self.codec = codec
        self.stats = pool.stats
        self.transport: asyncio.Transport | None = None
        self.user: UpstreamUser | None = None
        self.idle_since = 0.0
        self.received_any = False
        self.local_address = ""
        self.paused = False  # reading paused for a client that is not keeping up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = transport
        transport.set_write_buffer_limits(self.pool.high_water)
        self.local_address = address_of(transport, "sockname")
        self.stats.upstream_cx_total += 1
        self.stats.upstream_cx_http1_total += 1
        self.stats.upstream_cx_active += 1

    def data_received(self, data: bytes) -> None:
        self.stats.upstream_cx_rx_bytes_total += len(data)
        self.received_any = True
        user = self.user
        if user is None:
            # Bytes on an idle keep-alive connection: the server broke the exchange
            # (or is closing); it can carry nothing more.
            self.close()
            return
        user.upstream_events(self.codec.receive(data))

    def write(self, data: bytes) -> None:
        if len(data) and self.transport is not None:
            self.stats.upstream_cx_tx_bytes_total += len(data)
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too: HTTP/1 has no half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.upstream_cx_active -= 1
        self.pool.forget(self)
        user = self.user
        self.user = None
        self.transport = None
        if user is not None:
            user.upstream_lost(self)  # may read the codec's last events first
        self.codec.release()

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_resume_writing()

    def release_to_pool(self, now: float = -1.0) -> None:
        if self.paused:
            # Paused for the client it served (whose answer just went out whole): the
            # next exchange's client may be keeping up, and an idle connection must read
            # to see the server close it.
            self.resume_reading()
        self.pool.release(self, now)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self) -> str:
        host, port = self.destination
        state = "busy" if self.user else "idle"
        return f"<UpstreamConnection {host}:{port} {state} reusable={self.codec.reusable}>"


Waiter = TypeVar("Waiter", bound=tuple[Any, ...])


class PendingRequests(dict[Destination, deque[Waiter]]):
    """Requests waiting for a connection, per destination: Envoy's max_pending_requests.

    A waiter is a tuple whose first item is the UpstreamUser; both pools (HTTP/1 and
    HTTP/2) queue, refuse (503 UO) and cancel through this one place.
    """

    def __init__(self, limit: int, stats: S.Stats) -> None:
        super().__init__()
        self.limit = limit
        self.stats = stats

    def add(self, destination: Destination, waiter: Waiter) -> deque[Waiter] | None:
        """Queue `waiter` and return its queue, or refuse it (503 UO) when the queue is full."""
        queue = self.setdefault(destination, deque())
        if len(queue) >= self.limit:
            self.stats.upstream_rq_pending_overflow += 1
            waiter[0].upstream_failed(503, flags.UPSTREAM_OVERFLOW, "upstream_pool_overflow")
            return None
        queue.append(waiter)
        return queue

    def cancel(self, user: UpstreamUser) -> None:
        """A waiting exchange went away before it got a connection."""
        for queue in self.values():
            for waiter in queue:
                if waiter[0] is user:
                    queue.remove(waiter)
                    return


async def connect(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.Protocol,
    destination: Destination,
    source: str | None,
    timeout: float,
    stats: S.Stats,
) -> str | None:
    """Open a TCP connection to `destination` for `protocol` (from `source` when given).

    Every upstream connection is made here (the HTTP/1 and HTTP/2 pools', the TCP
    relay's): a failure is counted (connect_fail, and connect_timeout) and returned as
    Envoy names it (`CONNECT_TIMEOUT`, or the transport failure reason such as
    `delayed_connect_error:_Connection_refused`) for `fail_connect`. Must run in a task.
    """
    local = (source, 0) if source else None
    # The timeout is a timer that cancels this task, not asyncio.wait_for, which runs the
    # connect in a task of its own with a future and callbacks besides: that was a fifth
    # of the instructions of a relayed TCP connection's whole life.
    expiry = _Expiry(asyncio.current_task(loop))
    timer = loop.call_later(timeout, expiry.fire)
    try:
        await loop.create_connection(
            lambda: protocol, destination[0], destination[1], local_addr=local
        )
    except asyncio.CancelledError:
        if not expiry.fired:
            raise  # cancelled from outside (the worker stopping): not ours to answer
        expiry.task.uncancel()
        stats.upstream_cx_connect_fail += 1
        stats.upstream_cx_connect_timeout += 1
        return CONNECT_TIMEOUT
    except OSError as error:
        stats.upstream_cx_connect_fail += 1
        return transport_failure(error)
    finally:
        timer.cancel()
    return None


class _Expiry:
    """The connect timeout's timer callback: cancels the connecting task and says so.

    (uvloop's create_connection closes a transport it made when cancelled at that moment.)
    """

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        if task is None:
            raise RuntimeError("connect() must run in a task")
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


# What `connect` returns when the connect timeout passed (Envoy's reset reason; there is
# no transport failure to report then).
CONNECT_TIMEOUT: Final = "connection_timeout"


def transport_failure(error: OSError) -> str:
    """Envoy's upstream transport failure reason for a failed connect, spaces as
    underscores as in its response code details: `delayed_connect_error:_Connection_refused`
    (the connect is non-blocking, so its error arrives later: "delayed")."""
    reason = error.strerror or type(error).__name__
    return "delayed_connect_error:_" + reason.replace(" ", "_")


def fail_connect(user: UpstreamUser, reason: str) -> None:
    """Tell `user` its upstream connect failed (`reason` from `connect`): a 503 with flag
    UF, the response code details and transport failure reason as Envoy words them."""
    if reason == CONNECT_TIMEOUT:
        user.upstream_failed(503, flags.UPSTREAM_CONNECT_FAILURE, CONNECT_TIMEOUT_DETAILS)
        return
    details = f"upstream_reset_before_response_started{{remote_connection_failure|{reason}}}"
    user.upstream_failed(503, flags.UPSTREAM_CONNECT_FAILURE, details, reason)


class UpstreamPool:
    """Keep-alive connections per destination, with Envoy's circuit-breaker limits."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ProxyConfig,
        stats: S.Stats,
        codec_factory: Callable[[], ClientCodec],
    ) -> None:
        self.loop = loop
        self.stats = stats
        self.codec_factory = codec_factory
        self.connect_timeout = config.timeouts.connect
        self.idle_timeout = config.timeouts.upstream_idle or float("inf")  # 0: off, as Envoy
        self.max_connections = config.limits.max_upstream_connections
        self.high_water = config.limits.buffer_high_water
        self.inbound_source = config.inbound_source
        self.idle: dict[Destination, list[UpstreamConnection]] = {}
        self.open_count: dict[Destination, int] = {}
        self.pending: PendingRequests[tuple[UpstreamUser, str | None]] = PendingRequests(
            config.limits.max_pending_requests, stats
        )
        self.closing = False

    def idle_list(self, destination: Destination) -> list[UpstreamConnection]:
        """The destination's idle connections: the one list the pool keeps for it."""
        idle = self.idle.get(destination)
        if idle is None:
            idle = self.idle[destination] = []
        return idle

    def acquire(
        self,
        destination: Destination,
        user: UpstreamUser,
        source: str | None,
        idle: list[UpstreamConnection] | None = None,
    ) -> None:
        """Give `user` a connection now (idle), later (new or queued), or a 503 UO.

        `idle` is `idle_list(destination)` when the caller keeps it (a downstream
        connection does, for its one destination).
        """
        if idle is None:
            idle = self.idle.get(destination)
        while idle:
            connection = idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                connection.user = user
                self.stats.upstream_cx_pool_reuse += 1
                user.upstream_ready(connection, True)
                return
        if self.open_count.get(destination, 0) < self.max_connections:
            self._open(destination, user, source)
            return
        self.pending.add(destination, (user, source))

    def cancel(self, user: UpstreamUser) -> None:
        self.pending.cancel(user)

    def release(self, connection: UpstreamConnection, now: float = -1.0) -> None:
        """An exchange is done with `connection`: reuse it, hand it on, or close it.

        `now`: the caller's time.monotonic() reading, if it has a fresh one."""
        connection.user = None
        if not connection.codec.reusable or self.closing or connection.transport is None:
            connection.close()
            return
        connection.received_any = False
        # Nothing has ever queued unless the per-destination cap was reached: skip the
        # lookup, which builds and hashes the (host, port) tuple.
        queue = self.pending.get(connection.destination) if self.pending else None
        if queue:
            user, _ = queue.popleft()
            connection.user = user
            self.stats.upstream_cx_pool_reuse += 1
            user.upstream_ready(connection, True)
            return
        # The clock the sweep reads (serve.py).
        connection.idle_since = now if now >= 0.0 else monotonic()
        connection.idle.append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        """The connection closed: stop counting it, and open one for a waiter if any."""
        destination = connection.destination
        self.open_count[destination] = self.open_count.get(destination, 1) - 1
        idle = connection.idle
        if idle and connection in idle:
            idle.remove(connection)
        queue = self.pending.get(destination)
        if queue and not self.closing:
            user, source = queue.popleft()
            self._open(destination, user, source)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        deadline = now - self.idle_timeout
        for connections in self.idle.values():
            for connection in [c for c in connections if c.idle_since < deadline]:
                self.stats.upstream_cx_idle_timeout += 1
                connection.close()

    def close_idle(self) -> None:
        self.closing = True
        for connections in list(self.idle.values()):
            for connection in list(connections):
                connection.close()

    def _open(self, destination: Destination, user: UpstreamUser, source: str | None) -> None:
        self.open_count[destination] = self.open_count.get(destination, 0) + 1
        self.loop.create_task(self._connect(destination, user, source))

    async def _connect(
        self, destination: Destination, user: UpstreamUser, source: str | None
    ) -> None:
        connection = UpstreamConnection(
            self, destination, self.codec_factory(), self.idle_list(destination)
        )
        connection.user = user
        reason = await connect(
            self.loop, connection, destination, source, self.connect_timeout, self.stats
        )
        if reason is not None:
            self.open_count[destination] = self.open_count.get(destination, 1) - 1
            if connection.user is user:
                connection.user = None
                fail_connect(user, reason)
            return
        if connection.user is None:
            # The exchange went away while we were connecting: keep the connection.
            self.release(connection)
            return
        user.upstream_ready(connection, False)

    def __repr__(self) -> str:
        parts = [
            f"{host}:{port} open={self.open_count.get((host, port), 0)} "
            f"idle={len(self.idle.get((host, port), []))} "
            f"pending={len(self.pending.get((host, port), ()))}"
            for host, port in sorted(set(self.open_count) | set(self.idle))
        ]
        return f"<UpstreamPool {'; '.join(parts) or 'empty'}>"
