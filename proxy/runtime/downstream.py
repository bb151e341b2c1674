"""A downstream connection: sniffs the protocol, then serves HTTP/1, HTTP/2 or an opaque TCP relay.

The asyncio.Protocol callbacks and the plumbing (writes, reading pauses, draining)
live here; HTTP/1's request flow is `proxy.runtime.http1`, HTTP/2's is
`proxy.runtime.h2_downstream`, opaque TCP is `proxy.runtime.tcp_proxy`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Final, cast

from proxy.core import flags
from proxy.core.addresses import address_of, address_text
from proxy.core.messages import Event
from proxy.core.sniff import Protocol, sniff
from proxy.runtime.http1 import Http1ConnectionManager
from proxy.runtime.listeners import Resolver
from proxy.runtime.tcp_proxy import TcpRelay

monotonic: Final = time.monotonic  # a C static in the compiled build (see http1.py)

if TYPE_CHECKING:
    from proxy.core.codecs.base import ServerCodec
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.h2_downstream import H2Downstream
    from proxy.runtime.upstream import Destination
    from proxy.runtime.worker import Worker


# Read on every read: a C static, not an Enum attribute looked up each time.
_HTTP1: Final = Protocol.HTTP1
# How many sniff timeouts a client whose first bytes trickle in may take to decide.
SNIFF_PATIENCE: Final = 10


class DownstreamConnection(Http1ConnectionManager, asyncio.Protocol):
    """One accepted client connection."""

    __slots__ = (
        "client_address",
        "destination",
        "h2",
        "listener_name",
        "local_address",
        "mode",
        "paused",
        "relay",
        "remote_address",
        "resolve",
        "scheme",
        "sniff_buffer",
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
        self.destination: Destination | None = None
        self.source: str | None = None
        self.client_address = b"unknown"  # the client's IP, as X-Forwarded-For carries it
        self.remote_address = "unknown"  # and with its port, as the access log has it
        self.local_address = ""
        self.scheme = b"http"
        self.paused = 0
        self.write_paused = False
        self.close_after = False
        self.idle_upstreams = None
        self.last_activity = 0.0
        self.h2: H2Downstream | None = None  # set once the HTTP/2 preface is seen

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = transport
        worker = self.worker
        transport.set_write_buffer_limits(worker.config.limits.buffer_high_water)
        self.stats.downstream_cx_total += 1
        self.stats.downstream_cx_active += 1
        worker.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = str(peer[0])
            self.client_address = host.encode()
            self.remote_address = address_text(host, peer[1])
        self.destination, self.source, dialled = self.resolve(transport)
        # Our end of the connection as its client sees it: the address it dialled when
        # the capture redirected it here (as Envoy's original-destination listeners
        # report it), not the capture port.
        if dialled is not None:
            self.local_address = address_text(*dialled)
        else:
            self.local_address = address_of(transport, "sockname")
        self.last_activity = now = monotonic()
        worker.sniff_deadlines.add(self, now + worker.sniff_timeout)

    def data_received(self, data: bytes) -> None:
        self.stats.downstream_cx_rx_bytes_total += len(data)
        if self.mode is _HTTP1:
            self.last_activity = monotonic()
            assert self.codec is not None
            self._dispatch(self.codec.receive(data))
        elif self.h2 is not None:
            self.h2.data_received(data)
        elif self.relay is not None:
            self.relay.from_downstream(data)
        else:
            self._sniff(data)

    def eof_received(self) -> bool | None:
        if self.mode is Protocol.UNDECIDED and self.sniff_buffer and self.transport is not None:
            # Nothing more will come to decide by, and a request line never ends in a
            # FIN: relay what came, then the half-close. (With nothing at all, as from a
            # port probe, the connection just closes: no upstream is dialled for it.)
            self._decided(Protocol.TCP, self.sniff_buffer)
        if self.relay is not None:
            return self.relay.downstream_eof()
        # As Envoy does for HTTP/1 by default: a client's FIN ends the connection and
        # any request in flight is reset (flag DC), since most clients that half-close
        # have in fact gone away.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.downstream_cx_active -= 1
        if self.mode is Protocol.UNDECIDED:
            self.worker.sniff_deadlines.remove(self)
        if self.relay is not None:
            self.relay.downstream_lost()
        if self.h2 is not None:
            self.h2.connection_lost()
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            if not exchange.upgraded:  # closing a tunnel is how tunnels end
                self.stats.downstream_rq_rx_reset += 1
                exchange.add_flag(flags.DOWNSTREAM_CONNECTION_TERMINATION)
            self._abort_upstream(exchange)
            self._finish(exchange, monotonic())
        if self.codec is not None:
            self.codec.release()
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
            exchange.upstream.pause_reading()

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
            exchange.upstream.resume_reading()

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
            # The client is still saying something that may be HTTP: its wait restarts
            # from these bytes (a request trickling in is not taken for TCP), up to ten
            # sniff timeouts after the accept (`last_activity` until decided).
            worker = self.worker
            timeout = worker.sniff_timeout
            deadline = min(monotonic() + timeout, self.last_activity + SNIFF_PATIENCE * timeout)
            worker.sniff_deadlines.remove(self)  # re-added last: the queue is in deadline order
            worker.sniff_deadlines.add(self, deadline)
            return
        self._decided(protocol, buffered)

    def sniff_timeout(self) -> None:
        """The client sent nothing that decides (worker.sniff_deadlines): relay as TCP."""
        if self.mode is Protocol.UNDECIDED and self.transport is not None:
            self._decided(Protocol.TCP, self.sniff_buffer)

    def _decided(self, protocol: Protocol, first_bytes: bytes) -> None:
        self.worker.sniff_deadlines.remove(self)
        self.sniff_buffer = b""
        self.mode = protocol
        if protocol is Protocol.HTTP1:
            self.stats.downstream_cx_http1_total += 1
            self.codec = self.worker.new_server_codec()
            self.last_activity = monotonic()  # the first request's start
            self._dispatch(self.codec.receive(first_bytes))
        elif protocol is Protocol.HTTP2:
            self.stats.downstream_cx_http2_total += 1
            from proxy.runtime.h2_downstream import H2Downstream  # h2 loads on first use

            self.h2 = H2Downstream(self.worker, self, first_bytes)
        else:
            self.stats.downstream_cx_tcp_total += 1
            assert self.transport is not None
            if self.destination is None:
                self._close()
                return
            self.relay = TcpRelay(self.worker, self, self.destination, self.source, first_bytes)

    # -- plumbing --------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and len(data):
            self.stats.downstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def start_draining(self) -> None:
        """The worker began draining: an HTTP/2 client gets GOAWAY now; an HTTP/1 one
        gets `Connection: close` on its next response, and the sweep closes the
        connection once it has been quiet for a moment (`drain`). Closing a kept-alive
        connection at once would lose a request already on its way."""
        self.close_after = True
        if self.h2 is not None:
            self.h2.drain()

    def drain(self) -> None:
        """The worker is draining: close now if idle, else after the response in flight."""
        self.close_after = True
        if self.h2 is not None:
            self.h2.drain()
            return
        if self.relay is None and (self.exchange is None or self.exchange.finished):
            self.stats.downstream_cx_drain_close += 1
            self._close()

    def idle_timeout(self) -> None:
        """Envoy's idle_timeout: nothing in flight for that long, so the connection closes
        (an HTTP/2 one with GOAWAY first, so the client knows no stream was lost)."""
        self.stats.downstream_cx_idle_timeout += 1
        self.close_after = True
        if self.h2 is not None:
            self.h2.drain()
            return
        if self.relay is not None:
            self.relay.idle_timeout()
            return
        self._close()

    def idle_for(self, now: float) -> float:
        if self.h2 is not None:
            return self.h2.idle_for(now)
        if self.relay is not None:
            return self.relay.idle_for(now)
        return now - self.last_activity if self.exchange is None else 0.0
