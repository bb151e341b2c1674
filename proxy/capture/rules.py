"""The pure rule builder: capture flags and an IP family in, nat rule lines out."""

from __future__ import annotations

import ipaddress
from typing import Literal

from proxy.capture.flags import CaptureFlags, IPNetwork

Family = Literal["ipv4", "ipv6"]

INBOUND = "PF_INBOUND"
REDIRECT = "PF_REDIRECT"
IN_REDIRECT = "PF_IN_REDIRECT"
OUTPUT = "PF_OUTPUT"
# Declaration order in the batch; every rule we add lives in one of these chains except
# the two jumps from the built-in chains (see BUILTIN_JUMPS).
CHAINS: tuple[str, ...] = (INBOUND, REDIRECT, IN_REDIRECT, OUTPUT)
# (built-in chain, our chain) pairs: the only rules we put into chains we do not own.
BUILTIN_JUMPS: tuple[tuple[str, str], ...] = (("PREROUTING", INBOUND), ("OUTPUT", OUTPUT))

# Reserved for the HBONE/mTLS tunnel, as in Istio: never captured in either direction.
TUNNEL_PORT = 15008

# Per family: the loopback host route, and the source the sidecar binds when it hands
# inbound traffic to the app (Istio's "inbound passthrough" address).
_LOOPBACK = {"ipv4": "127.0.0.1/32", "ipv6": "::1/128"}
_PASSTHROUGH_SOURCE = {"ipv4": "127.0.0.6/32", "ipv6": "::6/128"}
_LOOPBACK_ADDRESS = {
    "ipv4": ipaddress.ip_address("127.0.0.1"),
    "ipv6": ipaddress.ip_address("::1"),
}


def _of_family(networks: tuple[IPNetwork, ...], family: Family) -> list[IPNetwork]:
    version = 4 if family == "ipv4" else 6
    return [network for network in networks if network.version == version]


def _inbound(flags: CaptureFlags) -> list[str]:
    rules = [f"-A {INBOUND} -i {name} -j RETURN" for name in flags.exclude_interfaces]
    include = flags.include_inbound_ports
    if include is not None and not include:
        # An empty include list switches inbound capture off, as `-b ''` does in Istio.
        return rules
    rules.append(f"-A PREROUTING -p tcp -j {INBOUND}")
    if include is None:
        rules += [f"-A {INBOUND} -p tcp --dport {p} -j RETURN" for p in flags.exclude_inbound_ports]
        rules.append(f"-A {INBOUND} -p tcp -j {IN_REDIRECT}")
    else:
        # With an explicit list the exclusions are moot: only the listed ports are captured.
        rules += [f"-A {INBOUND} -p tcp --dport {p} -j {IN_REDIRECT}" for p in include]
    return rules


def _owner_rules(flags: CaptureFlags, family: Family) -> list[str]:
    loopback = _LOOPBACK[family]
    # If the user asked to capture loopback itself, app-to-app traffic over lo must not
    # be waved through (Istio drops the same rule in that case).
    included = _of_family(flags.include_outbound_cidrs or (), family)
    captures_loopback = any(_LOOPBACK_ADDRESS[family] in network for network in included)
    rules: list[str] = []
    for kind, ids in (("uid", flags.proxy_uids), ("gid", flags.proxy_gids)):
        for owner in ids:
            # The proxy calling a non-loopback local address over lo is the app calling its
            # own service VIP (app -> outbound -> inbound -> app): send it to inbound capture.
            rules.append(
                f"-A {OUTPUT} -o lo ! -d {loopback} -p tcp ! --dport {TUNNEL_PORT}"
                f" -m owner --{kind}-owner {owner} -j {IN_REDIRECT}"
            )
            if not captures_loopback:
                # The app calling its own pod IP goes over lo: leave it alone.
                rules.append(f"-A {OUTPUT} -o lo -m owner ! --{kind}-owner {owner} -j RETURN")
            # The proxy's own upstream connections are never captured again (no loop).
            rules.append(f"-A {OUTPUT} -m owner --{kind}-owner {owner} -j RETURN")
    return rules


def _outbound(flags: CaptureFlags, family: Family) -> list[str]:
    rules = [f"-A {OUTPUT} -o {name} -j RETURN" for name in flags.exclude_interfaces]
    rules.append(f"-A OUTPUT -j {OUTPUT}")
    # Port exclusions come before the loopback rules so they also hold for the VIP hairpin.
    rules += [f"-A {OUTPUT} -p tcp --dport {p} -j RETURN" for p in flags.exclude_outbound_ports]
    rules.append(f"-A {OUTPUT} -o lo -s {_PASSTHROUGH_SOURCE[family]} -j RETURN")
    rules += _owner_rules(flags, family)
    # Envoy-aware apps and container-to-container calls use localhost explicitly.
    rules.append(f"-A {OUTPUT} -d {_LOOPBACK[family]} -j RETURN")
    excluded = _of_family(flags.exclude_outbound_cidrs, family)
    rules += [f"-A {OUTPUT} -d {network} -j RETURN" for network in excluded]
    rules += [f"-A {OUTPUT} -p tcp --dport {p} -j {REDIRECT}" for p in flags.include_outbound_ports]
    if flags.include_outbound_cidrs is None:
        rules.append(f"-A {OUTPUT} -j {REDIRECT}")
    else:
        included = _of_family(flags.include_outbound_cidrs, family)
        rules += [f"-A {OUTPUT} -d {network} -j {REDIRECT}" for network in included]
    return rules


def build_rules(flags: CaptureFlags, family: Family) -> list[str]:
    """The nat rules for one family, in Istio's order, as `-A CHAIN ...` lines."""
    return [
        f"-A {INBOUND} -p tcp --dport {TUNNEL_PORT} -j RETURN",
        f"-A {REDIRECT} -p tcp -j REDIRECT --to-ports {flags.outbound_capture_port}",
        f"-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {flags.inbound_capture_port}",
        *_inbound(flags),
        *_outbound(flags, family),
    ]
