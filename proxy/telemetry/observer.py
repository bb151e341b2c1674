"""The seam between the data plane and telemetry: called once per finished request or TCP connection.

The runtime calls these at the end of each exchange, with the downstream connection
and the exchange record; metrics, traces and access logs are implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.runtime.downstream import DownstreamConnection, Exchange
    from proxy.runtime.tcp_proxy import TcpRelay


class RequestObserver(Protocol):
    def request_done(self, downstream: DownstreamConnection, exchange: Exchange, now: float) -> None: ...

    def tcp_done(self, relay: TcpRelay, now: float) -> None: ...
