"""Which listeners a mode opens, and where each sends its connections (the route per listener)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config.model import ProxyConfig
from proxy.runtime.original_dst import original_destination

Destination = tuple[str, int]
# Where a connection goes, the source address to send it from (None: any), and the
# address its client dialled when the capture redirected it to us (SO_ORIGINAL_DST;
# None when the client connected to this listener itself).
Route = tuple[Destination | None, str | None, Destination | None]
Resolver = Callable[[asyncio.Transport], Route]


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str
    host: str
    port: int
    resolve: Resolver
    direction: str  # "outbound" | "inbound" | "explicit"


def _fixed(destination: Destination) -> Resolver:
    def resolve(transport: asyncio.Transport) -> Route:
        return destination, None, None

    return resolve


def _original(transport: asyncio.Transport) -> Destination | None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    destination = original_destination(sock)
    local = transport.get_extra_info("sockname")
    if destination is None or (local and destination == (local[0], local[1])):
        return None  # not redirected, or redirected to ourselves: nowhere safe to send it
    return destination


def outbound_resolver(transport: asyncio.Transport) -> Route:
    """Outbound capture: to wherever the app was connecting (Istio's PassthroughCluster)."""
    original = _original(transport)
    return original, None, original


def inbound_resolver(source: str) -> Resolver:
    """Inbound capture: to the app on loopback at the original port, from the exempt source."""

    def resolve(transport: asyncio.Transport) -> Route:
        original = _original(transport)
        if original is None:
            return None, None, None
        return ("127.0.0.1", original[1]), source, original

    return resolve


def listener_specs(config: ProxyConfig) -> list[ListenerSpec]:
    if config.mode == "explicit":
        assert config.listen is not None and config.upstream is not None
        upstream = (config.upstream.host, config.upstream.port)
        return [
            ListenerSpec(
                "explicit", config.listen.host, config.listen.port, _fixed(upstream), "explicit"
            )
        ]
    return [
        ListenerSpec(
            "virtualOutbound", "0.0.0.0", config.outbound_port, outbound_resolver, "outbound"
        ),
        ListenerSpec(
            "virtualInbound",
            "0.0.0.0",
            config.inbound_port,
            inbound_resolver(config.inbound_source),
            "inbound",
        ),
    ]
