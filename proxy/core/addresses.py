"""Socket addresses as Envoy writes them in access logs and admin output: `ip:port`,
an IPv6 address in brackets (`[::1]:8080`).

Compiled with the hot path (proxy/_compiled.py): a relayed connection formats two or
three of these, so they are native code, not Python-level calls from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


def address_text(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:8080`)."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def address_of(transport: asyncio.BaseTransport, end: str) -> str:
    """One end of a connection ("sockname" or "peername") as `address_text` writes it;
    "" when the transport does not know it (closed, or not an IP socket)."""
    name = transport.get_extra_info(end)
    if not isinstance(name, tuple) or len(name) < 2:
        return ""
    return address_text(str(name[0]), name[1])
