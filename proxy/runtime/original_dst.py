"""The address a redirected connection was originally sent to (netfilter's SO_ORIGINAL_DST)."""

from __future__ import annotations

import socket
import struct

# linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: both are option 80.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """(ip, port) before iptables REDIRECT rewrote it, or None for a connection not redirected."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            if host.startswith("::ffff:"):
                host = host[7:]
            return host, port
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntoa(raw[4:8]), port
    except OSError:
        return None
