"""Per-process runtime context: the loop, config, pool, stats and drain state of one worker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import ClientCodec, CodecLimits, ServerCodec
from proxy.runtime.deadlines import DeadlineQueue
from proxy.runtime.upstream import Destination, UpstreamPool
from proxy.telemetry.stats import Stats

if TYPE_CHECKING:
    from proxy.config.model import ProxyConfig
    from proxy.core.messages import ResponseHead
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.h2_upstream import H2UpstreamPool
    from proxy.telemetry.pipeline import Telemetry


def _route_timeout(exchange: object) -> None:
    exchange.downstream.route_timeout(exchange)  # type: ignore[attr-defined]


def _sniff_timeout(connection: object) -> None:
    connection.sniff_timeout()  # type: ignore[attr-defined]


class Worker:
    """Everything the connections of one worker process share; built once per process."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ProxyConfig,
        stats: Stats,
        observer: Telemetry | None = None,
        index: int = 0,
    ) -> None:
        self.loop = loop
        self.config = config
        self.stats = stats
        self.index = index
        # The concrete class, not the RequestObserver protocol: the compiled build calls
        # a native method directly where a protocol costs a Python-level call, twice
        # per request.
        self.observer = observer
        limits = CodecLimits(
            config.limits.max_request_headers_bytes,
            config.limits.max_request_target_bytes,
            config.limits.max_request_headers_count,
        )
        codec = config.codec
        self.new_server_codec: Callable[[], ServerCodec] = lambda: server_codec(codec, limits)
        self.new_client_codec: Callable[[], ClientCodec] = lambda: client_codec(codec)
        self.random = random.random  # retry back-off draws
        # Listeners whose requests the retry policy covers: the caller's side only, as in
        # Istio (retries belong to the client's outbound route; inbound delivers once).
        self.retrying_listeners = frozenset(
            ("virtualOutbound", "explicit")
            if config.telemetry.explicit_direction == "outbound"
            else ("virtualOutbound",)
        )
        # Router retries running now, per destination (the max_retries circuit breaker).
        self.active_retries: dict[Destination, int] = {}
        self.pool = UpstreamPool(loop, config, stats, self.new_client_codec)
        # Destination ports configured as HTTP/2: the HTTP/1 manager sends their requests
        # over the h2 pool (one set lookup per request).
        self.http2_ports = frozenset(config.upstream_http2_ports)
        self._h2_pool: H2UpstreamPool | None = None
        self.connections: set[DownstreamConnection] = set()
        self.route_deadlines = DeadlineQueue(loop, _route_timeout)
        # New connections whose first bytes have not said what they speak: after the
        # sniff timeout they are relayed as TCP (a server-first protocol). One queue, as
        # for route timeouts: a timer per connection cost a libuv handle each.
        self.sniff_deadlines = DeadlineQueue(loop, _sniff_timeout)
        self.sniff_timeout = config.timeouts.sniff
        # Read once per request; the config's dataclasses are interpreted (two
        # Python-level attribute reads from compiled code).
        self.route_timeout = config.timeouts.route
        self.draining = False
        self.drained = loop.create_future()

    @property
    def h2_pool(self) -> H2UpstreamPool:
        """Multiplexed HTTP/2 upstream connections, made on first use (h2 loads only then)."""
        if self._h2_pool is None:
            from proxy.runtime.h2_upstream import H2UpstreamPool

            self._h2_pool = H2UpstreamPool(self.loop, self.config, self.stats, self.pool)
        return self._h2_pool

    def response_starts(self, exchange: Exchange, head: ResponseHead) -> None:
        """The final response head is about to go to the client, from the upstream or a
        local reply: the observer sees it first when it asked to (exchange.observe_response)."""
        observer = self.observer
        if observer is not None:
            observer.response_start(exchange, head)

    def flush(self) -> None:
        """Write what this turn left pending and report what finished (before exit)."""
        if self._h2_pool is not None:
            self._h2_pool.flusher.run()

    def start_drain(self) -> None:
        """Stop reusing connections: downstream ones close after their response in
        flight or once quiet (the sweep), idle upstream ones now."""
        if self.draining:
            return
        self.draining = True
        self.pool.close_idle()
        if self._h2_pool is not None:
            self._h2_pool.close_idle()
        for connection in list(self.connections):
            connection.start_draining()
        self.check_drained()

    def check_drained(self) -> None:
        if self.draining and not self.connections and not self.drained.done():
            self.drained.set_result(None)
