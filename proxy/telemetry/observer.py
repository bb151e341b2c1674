"""The seam between the data plane and telemetry: called per request and per TCP connection.

The runtime calls `request_start` once the upstream request is built (trace context
goes in here) and `request_done` once per exchange when it is over, with the
downstream connection and the exchange record; `tcp_start` and `tcp_done` when an
opaque TCP relay opens and closes. Metrics, traces and access logs are implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.tcp_proxy import TcpRelay


class RequestObserver(Protocol):
    def request_start(self, downstream: DownstreamConnection, exchange: Exchange) -> None:
        """Before the request goes upstream: `exchange.upstream_head.headers` may be extended."""
        ...

    def request_done(
        self, downstream: DownstreamConnection, exchange: Exchange, now: float
    ) -> None: ...

    def tcp_start(self, relay: TcpRelay) -> None:
        """An opaque TCP relay began (istio_tcp_connections_opened_total counts here)."""
        ...

    def tcp_done(self, relay: TcpRelay, now: float) -> None: ...
