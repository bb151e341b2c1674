"""The seam between the data plane and telemetry: called per request and per TCP connection.

The runtime calls `request_start` once the upstream request is built (trace context
and peer metadata go in here), `response_start` before the response head goes to the
client when request_start asked for it (`exchange.observe_response`), and
`request_done` once per exchange when it is over, with the downstream connection and
the exchange record; `tcp_start` and `tcp_done` when an opaque TCP relay opens and
closes, and `tcp_progress` for an open one once a second (the worker's sweep). Metrics,
traces and access logs are implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.core.messages import ResponseHead
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.tcp_proxy import TcpRelay


class ConnectionFacts(Protocol):
    """What telemetry reads of the downstream connection a request came on.

    A structural type: the HTTP/1 and HTTP/2 runtimes pass their connection, and the
    compiled hot path (proxy/_compiled.py) checks no class at the call.
    """

    @property
    def listener_name(self) -> str: ...

    @property
    def destination(self) -> tuple[str, int] | None: ...

    @property
    def client_address(self) -> bytes: ...

    @property
    def remote_address(self) -> str: ...

    @property
    def local_address(self) -> str: ...


class RequestObserver(Protocol):
    def request_start(self, downstream: ConnectionFacts, exchange: Exchange) -> None:
        """Before the request goes upstream: `exchange.upstream_head.headers` may be extended."""
        ...

    def response_start(self, exchange: Exchange, head: ResponseHead) -> None:
        """Before the final response head goes to the client, when `exchange.observe_response`:
        `head.headers` may be replaced."""
        ...

    def request_done(
        self,
        downstream: ConnectionFacts,
        exchange: Exchange,
        now: float,
        listener: str | None = None,
    ) -> None: ...

    def tcp_start(self, relay: TcpRelay) -> None:
        """An opaque TCP relay began (istio_tcp_connections_opened_total counts here)."""
        ...

    def tcp_progress(self, relay: TcpRelay) -> None:
        """An open relay's bytes since the last report count now, as Istio reports a
        long-lived connection's every 15 s rather than only when it closes."""
        ...

    def tcp_done(self, relay: TcpRelay, now: float) -> None: ...
