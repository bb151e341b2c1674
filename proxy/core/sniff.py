"""Protocol sniffing: classify a connection by its first bytes (HTTP/1, HTTP/2, or opaque TCP).

HTTP must never pass as TCP: a request relayed as opaque bytes skips every check and
header the proxy adds (smuggling shapes, X-Forwarded-For, the request id, telemetry). So
besides the usual methods, a first line of text that ends with an `HTTP/x.y` version after
a space is HTTP/1, however odd its method or separators; the HTTP/1 codec then answers it
or refuses it with a 400. While the first line is still text without its end, the
decision waits for more bytes; lines of other text protocols (memcached's `get key`,
Redis's inline `PING`, SMTP's `EHLO`) end without a version and stay TCP, and binary
protocols (TLS, Postgres, RESP's framing aside) are TCP at their first byte.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9110 methods plus WebDAV's, which real clients send: decided at once, without
# waiting for the end of the request line.
_METHODS: Final = (
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
    b"SEARCH", b"MKCALENDAR", b"PURGE",
)  # fmt: skip
_PREFIXES: Final = tuple(method + b" " for method in _METHODS)
_LONGEST: Final = max(len(prefix) for prefix in _PREFIXES)
# What a request line may hold before its end: printable ASCII, space and tab.
_TEXT: Final = frozenset(range(0x20, 0x7F)) | {0x09}
# A first line this long without its end is a request line the codec will refuse as too
# long (414), as long as it began like one.
LONGEST_LINE: Final = 8192
# RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before a request.
_EMPTY_LINES: Final = b"\r\n"


class Protocol(Enum):
    HTTP1 = "http/1.1"
    HTTP2 = "h2c"
    TCP = "tcp"
    UNDECIDED = "undecided"


def sniff(first_bytes: bytes) -> Protocol:
    """What the connection speaks, or UNDECIDED while the bytes so far fit more than one."""
    if first_bytes.startswith(_PREFIXES):
        return Protocol.HTTP1
    if first_bytes.startswith(H2_PREFACE):
        return Protocol.HTTP2
    if H2_PREFACE.startswith(first_bytes):
        return Protocol.UNDECIDED
    return _request_line(first_bytes.lstrip(_EMPTY_LINES), len(first_bytes))


def _request_line(data: bytes, received: int) -> Protocol:
    """HTTP1 if `data` begins with a request line, UNDECIDED until its end is read."""
    if data.startswith(_PREFIXES):
        return Protocol.HTTP1
    end = data.find(b"\n")
    line = data if end < 0 else data[:end].rstrip(b"\r")
    for byte in line:
        if byte not in _TEXT:
            return Protocol.TCP
    gap = _word_end(line)
    if gap <= 0:
        # One word so far: only the start of a known method is worth waiting on (a
        # client of another protocol may send one word and wait for an answer).
        if end < 0 and gap < 0 and len(data) < _LONGEST and _starts_a_method(data):
            return Protocol.UNDECIDED
        return Protocol.TCP
    if end < 0:
        if received < LONGEST_LINE:
            return Protocol.UNDECIDED
        return Protocol.HTTP1  # too long for a request line: the codec refuses it (414)
    version = line[-9:].upper()
    if (
        len(version) == 9
        and version.startswith(b" HTTP/")
        and version[6] in b"0123456789"
        and version[7] == 0x2E
        and version[8] in b"0123456789"
    ):
        return Protocol.HTTP1
    return Protocol.TCP


def _word_end(line: bytes) -> int:
    """Where the first word of `line` ends (a space or a tab), or -1."""
    space, tab = line.find(b" "), line.find(b"\t")
    return tab if space < 0 or 0 <= tab < space else space


def _starts_a_method(data: bytes) -> bool:
    return any(prefix.startswith(data) for prefix in _PREFIXES)
