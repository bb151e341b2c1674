"""The capture flags (Istio's `istio-iptables` spelling), parsed and validated into one value."""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass
from typing import NoReturn

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL); iptables
# accepts a trailing "+" as a prefix wildcard, so it is allowed here too.
_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")


class UsageError(Exception):
    """A flag value that cannot be used; the message names the flag."""


@dataclass(frozen=True, slots=True)
class CaptureFlags:
    """Everything the rule builder needs; the defaults are Istio's injected defaults."""

    outbound_capture_port: int = 15001
    inbound_capture_port: int = 15006
    proxy_uids: tuple[int, ...] = (1337,)
    proxy_gids: tuple[int, ...] = (1337,)
    mode: str = "REDIRECT"
    # None means "*" (capture every destination); an empty tuple captures none.
    include_outbound_cidrs: tuple[IPNetwork, ...] | None = None
    exclude_outbound_cidrs: tuple[IPNetwork, ...] = ()
    # None means "*" (every inbound port); an empty tuple disables inbound capture.
    include_inbound_ports: tuple[int, ...] | None = None
    # The sidecar's own health and metrics ports, as Istio's injector passes them.
    exclude_inbound_ports: tuple[int, ...] = (15090, 15021, 15020)
    include_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    dry_run: bool = False
    cleanup: bool = False

    def mentions_ipv6(self) -> bool:
        """True when a flag names an IPv6 range, which asks for ip6tables rules by itself."""
        ranges = (self.include_outbound_cidrs or ()) + self.exclude_outbound_cidrs
        return any(network.version == 6 for network in ranges)


class _Parser(argparse.ArgumentParser):
    """argparse, but errors become a UsageError instead of exiting the interpreter."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _port(flag: str, text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{flag}: {text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"{flag}: port {port} is out of range 1-65535")
    return port


def _ports(flag: str, text: str) -> tuple[int, ...]:
    return tuple(_port(flag, item) for item in _split(text))


def _ids(flag: str, text: str) -> tuple[int, ...]:
    items = _split(text)
    if not items:
        raise UsageError(f"{flag}: needs at least one numeric id")
    for item in items:
        if not item.isdigit():
            raise UsageError(f"{flag}: {item!r} is not a numeric id")
    return tuple(int(item) for item in items)


def _cidrs(flag: str, text: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for item in _split(text):
        try:
            # strict=False: Istio accepts host bits in a range (10.1.2.3/8 means 10.0.0.0/8).
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise UsageError(f"{flag}: {item!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _interfaces(flag: str, text: str) -> tuple[str, ...]:
    names = tuple(_split(text))
    for name in names:
        if not _INTERFACE_NAME.match(name):
            raise UsageError(f"{flag}: {name!r} is not an interface name")
    return names


def _parser() -> _Parser:
    parser = _Parser(
        prog="pilotfish iptables",
        # Exact flag names only: an init container's arguments should not mean something
        # different when a new long option happens to share a prefix.
        allow_abbrev=False,
        description="Install (or remove) the nat rules that send a pod's TCP through the sidecar.",
    )
    add = parser.add_argument
    add("-p", "--envoy-port", default="15001", help="outbound capture port (15001)")
    add("-z", "--inbound-capture-port", default="15006", help="inbound capture port (15006)")
    add("-u", "--proxy-uid", default="1337", help="proxy UID(s) whose traffic is not captured")
    add("-g", "--proxy-gid", default="1337", help="proxy GID(s) whose traffic is not captured")
    add("-m", "--inbound-interception-mode", default="REDIRECT", help="only REDIRECT")
    add("-i", "--include-outbound-cidrs", default="*", help="outbound CIDRs to capture, or *")
    add("-x", "--exclude-outbound-cidrs", default="", help="outbound CIDRs never captured")
    add("-b", "--include-inbound-ports", default="*", help="inbound ports to capture, or *")
    add(
        "-d",
        "--exclude-inbound-ports",
        default="15090,15021,15020",
        help="inbound ports never captured (only with -b '*')",
    )
    add("-q", "--include-outbound-ports", default="", help="outbound ports always captured")
    add("-o", "--exclude-outbound-ports", default="", help="outbound ports never captured")
    add("-c", "--exclude-interfaces", default="", help="interfaces whose traffic is not captured")
    add("--dry-run", action="store_true", help="print the iptables-restore input, change nothing")
    add("--cleanup", action="store_true", help="remove exactly the rules and chains we add")
    return parser


def parse_flags(argv: list[str]) -> CaptureFlags:
    """Parse and validate; every problem raises UsageError naming the flag."""
    args = _parser().parse_args(argv)
    mode = str(args.inbound_interception_mode)
    if mode != "REDIRECT":
        raise UsageError(f"-m: unsupported interception mode {mode!r} (only REDIRECT)")
    include_cidrs_text = str(args.include_outbound_cidrs).strip()
    include_ports_text = str(args.include_inbound_ports).strip()
    return CaptureFlags(
        outbound_capture_port=_port("-p", str(args.envoy_port)),
        inbound_capture_port=_port("-z", str(args.inbound_capture_port)),
        proxy_uids=_ids("-u", str(args.proxy_uid)),
        proxy_gids=_ids("-g", str(args.proxy_gid)),
        mode=mode,
        include_outbound_cidrs=(
            None if include_cidrs_text == "*" else _cidrs("-i", include_cidrs_text)
        ),
        exclude_outbound_cidrs=_cidrs("-x", str(args.exclude_outbound_cidrs)),
        include_inbound_ports=(
            None if include_ports_text == "*" else _ports("-b", include_ports_text)
        ),
        exclude_inbound_ports=_ports("-d", str(args.exclude_inbound_ports)),
        include_outbound_ports=_ports("-q", str(args.include_outbound_ports)),
        exclude_outbound_ports=_ports("-o", str(args.exclude_outbound_ports)),
        exclude_interfaces=_interfaces("-c", str(args.exclude_interfaces)),
        dry_run=bool(args.dry_run),
        cleanup=bool(args.cleanup),
    )
