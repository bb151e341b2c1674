"""Opaque TCP relay for connections that are not HTTP: byte-exact, counted, with backpressure."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, cast

from proxy.core import flags
from proxy.core.addresses import address_of
from proxy.core.tls_hello import TLS_HANDSHAKE, ClientHelloReader
from proxy.runtime import pause
from proxy.runtime.upstream import CONNECT_TIMEOUT, connect

monotonic: Final = time.monotonic  # a C static in the compiled build (see http1.py)

if TYPE_CHECKING:
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.upstream import Destination
    from proxy.runtime.worker import Worker


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.upstream_connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.relay.from_upstream(data)

    def eof_received(self) -> bool | None:
        return self.relay.upstream_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.upstream_lost()

    def pause_writing(self) -> None:
        self.relay.pause_downstream()

    def resume_writing(self) -> None:
        self.relay.resume_downstream()


class TcpRelay:
    """Both directions of one relayed connection; half-closes pass through (write_eof)."""

    def __init__(
        self,
        worker: Worker,
        downstream: DownstreamConnection,
        destination: Destination,
        source: str | None,
        first_bytes: bytes,
    ) -> None:
        self.worker = worker
        self.stats = worker.stats
        self.downstream = downstream
        self.upstream: asyncio.Transport | None = None
        self.buffer = [first_bytes] if first_bytes else []
        self.downstream_done = False
        self.upstream_done = False
        self.closed = False
        self.start = monotonic()
        self.received = 0
        self.sent = 0
        # How much of each the metrics have counted (telemetry's tcp_progress, each second).
        self.reported_received = 0
        self.reported_sent = 0
        # Idleness as Envoy's tcp_proxy idle_timeout sees it (no bytes either way), read
        # by the worker's once-a-second sweep from the byte counts, so the bytes' own
        # path pays nothing for it: when they moved since its last look, and when.
        self.idle_mark = 0
        self.idle_since = self.start
        # For the access log: Envoy's response flags ("UF" when the connect failed) and
        # its words for why; this end of the upstream connection once there is one.
        self.flags = "-"
        self.transport_failure: str | None = None
        self.upstream_local = ""
        # The server name a TLS client asked for (proxy.core.tls_hello), read from its
        # first bytes as they pass; `_hello` reads them until it has decided. Bytes that
        # do not begin a TLS handshake record decide it at once: no reader for them.
        self.server_name: str | None = None
        self._hello: ClientHelloReader | None = None
        if not first_bytes or first_bytes[0] == TLS_HANDSHAKE:
            self._hello = ClientHelloReader()
            self._look_for_server_name(first_bytes)
        self.stats.tcp_downstream_cx_total += 1
        if worker.observer is not None:
            worker.observer.tcp_start(self)
        self.received += len(first_bytes)
        self.stats.tcp_downstream_cx_rx_bytes_total += len(first_bytes)
        worker.loop.create_task(self._connect(destination, source))

    async def _connect(self, destination: Destination, source: str | None) -> None:
        worker = self.worker
        timeout = worker.config.timeouts.connect
        failure = await connect(
            worker.loop, _UpstreamSide(self), destination, source, timeout, self.stats
        )
        if failure is not None:
            self.flags = flags.UPSTREAM_CONNECT_FAILURE
            if failure != CONNECT_TIMEOUT:
                self.transport_failure = failure
            self._close_downstream()

    def upstream_connected(self, transport: asyncio.Transport) -> None:
        self.stats.upstream_cx_total += 1
        self.upstream_local = address_of(transport, "sockname")
        if self.closed:
            transport.close()
            return
        self.upstream = transport
        if self.buffer:
            transport.write(b"".join(self.buffer))
            self.buffer = []
        if self.downstream_done and transport.can_write_eof():
            transport.write_eof()
        self.downstream.resume_reading(pause.NOT_CONNECTED)

    # downstream -> upstream
    def from_downstream(self, data: bytes) -> None:
        self.received += len(data)
        self.stats.tcp_downstream_cx_rx_bytes_total += len(data)
        if self._hello is not None:
            self._look_for_server_name(data)
        if self.upstream is not None:
            self.upstream.write(data)
        else:
            self.buffer.append(data)
            if sum(map(len, self.buffer)) > self.worker.config.limits.buffer_high_water:
                self.downstream.pause_reading(pause.NOT_CONNECTED)

    def _look_for_server_name(self, data: bytes) -> None:
        hello = self._hello
        if hello is not None and hello.feed(data):
            self.server_name = hello.server_name
            self._hello = None

    def downstream_eof(self) -> bool:
        self.downstream_done = True
        if self.upstream_done:
            self._close_both()
        elif self.upstream is not None and self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True  # keep our write side open for the upstream's answer

    def downstream_lost(self) -> None:
        if not self.closed:
            observer = self.worker.observer
            if observer is not None:
                observer.tcp_done(self, monotonic())
        self.closed = True
        if self.upstream is not None:
            self.upstream.close()

    # upstream -> downstream
    def from_upstream(self, data: bytes) -> None:
        self.sent += len(data)
        self.stats.tcp_downstream_cx_tx_bytes_total += len(data)
        transport = self.downstream.transport
        if transport is not None:
            self.stats.downstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    def upstream_eof(self) -> bool:
        self.upstream_done = True
        if self.downstream_done:
            self._close_both()
            return True
        transport = self.downstream.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        return True

    def idle_for(self, now: float) -> float:
        progress = self.received + self.sent
        if progress != self.idle_mark:
            self.idle_mark = progress
            self.idle_since = now
        return now - self.idle_since

    def idle_timeout(self) -> None:
        """No bytes either way for `timeouts.downstream_idle` (1 h, Envoy's tcp_proxy
        default): both connections close, as a peer that went away would leave them."""
        self.stats.tcp_idle_timeout += 1
        self._close_both()

    def _close_both(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        self._close_downstream()

    def upstream_lost(self) -> None:
        self.upstream = None
        self._close_downstream()

    def _close_downstream(self) -> None:
        if not self.closed:
            observer = self.worker.observer
            if observer is not None:
                observer.tcp_done(self, monotonic())
        self.closed = True
        transport = self.downstream.transport
        if transport is not None:
            transport.close()

    # backpressure
    def pause_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def pause_downstream(self) -> None:
        self.downstream.pause_reading(pause.TCP_UPSTREAM_FULL)

    def resume_downstream(self) -> None:
        self.downstream.resume_reading(pause.TCP_UPSTREAM_FULL)
