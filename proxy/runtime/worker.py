"""Per-process runtime context: the loop, config, pool, stats and drain state of one worker."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import ClientCodec, CodecLimits, ServerCodec
from proxy.runtime.deadlines import DeadlineQueue
from proxy.runtime.upstream import Destination, UpstreamPool

if TYPE_CHECKING:
    from proxy.config.model import ProxyConfig
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.h2_upstream import H2UpstreamPool
    from proxy.telemetry.pipeline import Telemetry


_random_bits: Final = random.getrandbits  # reseeded in each forked worker by the random module

# X-Request-Id values, made a batch at a time: RFC 9562 UUIDv4 text, version nibble 4,
# variant bits 10. Formatting one id (hex, six slices, a format) cost about 3,900
# instructions; a batch places each random hex digit of all its ids with one strided
# copy (30 copies per batch), and an id is then one slice of the batch.
_BATCH: Final = 64
_ID_LENGTH: Final = 36
_TEMPLATE: Final = b"00000000-0000-4000-8000-000000000000" * _BATCH
# (position in the id, position in its 32 random hex digits) for each random digit;
# id position 14 is the version, 19 the variant (from digit 16), the rest dashes.
_LAYOUT: Final = tuple(
    zip(
        [*range(0, 8), *range(9, 13), *range(15, 18), *range(20, 23), *range(24, 36)],
        [*range(0, 8), *range(8, 12), *range(13, 16), *range(17, 20), *range(20, 32)],
        strict=True,
    )
)
# A hex digit -> one of 8, 9, a, b (the variant's two fixed bits, two random ones).
_VARIANT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_ready_ids: Final[list[bytes]] = []
# Ids made before a fork would be handed out by every child: each starts empty.
os.register_at_fork(after_in_child=_ready_ids.clear)


def new_request_id() -> bytes:
    """A random UUIDv4 for X-Request-Id.

    Request ids need uniqueness, not secrecy, so the Mersenne Twister replaces the
    getrandom() syscall that uuid4 makes per call; 128 random bits are drawn per id.
    """
    if not _ready_ids:
        _make_ids()
    return _ready_ids.pop()


def _make_ids() -> None:
    digits = _random_bits(128 * _BATCH).to_bytes(16 * _BATCH, "big").hex().encode()
    text = bytearray(_TEMPLATE)
    for position, digit in _LAYOUT:
        text[position::_ID_LENGTH] = digits[digit::32]
    text[19::_ID_LENGTH] = digits[16::32].translate(_VARIANT)
    batch = bytes(text)
    _ready_ids.extend(
        [batch[start : start + _ID_LENGTH] for start in range(0, len(batch), _ID_LENGTH)]
    )


def _route_timeout(exchange: object) -> None:
    exchange.downstream.route_timeout(exchange)  # type: ignore[attr-defined]


class Worker:
    """Everything the connections of one worker process share; built once per process."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ProxyConfig,
        stats: memoryview,
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
        self.new_request_id = new_request_id
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
        self.draining = False
        self.drained = loop.create_future()

    @property
    def h2_pool(self) -> H2UpstreamPool:
        """Multiplexed HTTP/2 upstream connections, made on first use (h2 loads only then)."""
        if self._h2_pool is None:
            from proxy.runtime.h2_upstream import H2UpstreamPool

            self._h2_pool = H2UpstreamPool(self.loop, self.config, self.stats, self.pool)
        return self._h2_pool

    def flush(self) -> None:
        """Write what this turn left pending and report what finished (before exit)."""
        if self._h2_pool is not None:
            self._h2_pool.flusher.run()

    def start_drain(self) -> None:
        """Stop reusing connections: idle ones close now, busy ones after their response."""
        if self.draining:
            return
        self.draining = True
        self.pool.close_idle()
        if self._h2_pool is not None:
            self._h2_pool.close_idle()
        for connection in list(self.connections):
            connection.drain()
        self.check_drained()

    def check_drained(self) -> None:
        if self.draining and not self.connections and not self.drained.done():
            self.drained.set_result(None)
