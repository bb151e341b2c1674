"""Protocol sniffing: classify a connection by its first bytes (HTTP/1, HTTP/2, or opaque TCP)."""

from __future__ import annotations

from enum import Enum

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9110 methods plus WebDAV's, which real clients send; a first line starting
# with anything else is not HTTP/1 and is passed through as TCP.
_METHODS = (
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
    b"SEARCH", b"MKCALENDAR", b"PURGE",
)  # fmt: skip
_PREFIXES = tuple(method + b" " for method in _METHODS)
_LONGEST = max(len(p) for p in _PREFIXES)


class Protocol(Enum):
    HTTP1 = "http/1.1"
    HTTP2 = "h2c"
    TCP = "tcp"
    UNDECIDED = "undecided"


def sniff(first_bytes: bytes) -> Protocol:
    """What the connection speaks, or UNDECIDED while the bytes so far fit more than one."""
    if first_bytes.startswith(H2_PREFACE):
        return Protocol.HTTP2
    if H2_PREFACE.startswith(first_bytes):
        return Protocol.UNDECIDED
    if first_bytes.startswith(_PREFIXES):
        return Protocol.HTTP1
    if len(first_bytes) < _LONGEST and any(p.startswith(first_bytes) for p in _PREFIXES):
        return Protocol.UNDECIDED
    return Protocol.TCP
