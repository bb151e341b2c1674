"""The server name a TLS client asks for, read from its ClientHello (RFC 8446 section 4.1.2,
RFC 6066 section 3).

What Envoy's tls_inspector listener filter gives Istio: a connection relayed as opaque
TCP that carries TLS is logged with the name its client asked for
(`requested_server_name`), so egress to `api.example.com:443` says so, where the
address alone would name a load balancer. Sans-IO: `read_server_name` is given the bytes
the client has sent so far and says whether it has decided, and what it found;
`ClientHelloReader` is fed the bytes as they arrive and reads them again only when a
record is complete, so a client that trickles its hello a byte at a time costs linear
work, not quadratic. Nothing is decrypted, held back or changed; the relay passes the
bytes on as they come and only looks at them.
"""

from __future__ import annotations

from typing import Final

TLS_HANDSHAKE: Final = 22  # TLS record content type: a ClientHello's first byte
_CLIENT_HELLO: Final = 1  # handshake message type
_SERVER_NAME: Final = 0  # extension type (RFC 6066)
_HOST_NAME: Final = 0  # server name type within it
# A record holds at most 2^14 bytes of plaintext (RFC 8446 section 5.1).
_MAX_RECORD: Final = 1 << 14
# A ClientHello larger than this is not worth reading for a log field (post-quantum key
# shares make them about 2 KB); the reader stops looking past it.
MAX_HELLO: Final = 1 << 15
# What RFC 1123 host names are made of (plus "_", which real names carry); a name with
# anything else is not logged.
_NAME_BYTES: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")

# (decided, name): the hello is not all here yet, but could still be one.
MORE: Final[tuple[bool, str | None]] = (False, None)
# Decided, no name: not TLS, not a ClientHello, malformed, too large, or no server_name.
NO_NAME: Final[tuple[bool, str | None]] = (True, None)


def read_server_name(data: bytes) -> tuple[bool, str | None]:
    """From the first bytes a client sent: MORE while the ClientHello may still be
    arriving, NO_NAME when there is none to read (or it names no server), else
    `(True, name)`, the host name in lower case."""
    if not data:
        return MORE
    if data[0] != TLS_HANDSHAKE or (len(data) > 1 and data[1] != 3):
        return NO_NAME
    handshake = b""
    at = 0
    # A ClientHello may span records (RFC 8446 section 5.1 lets a handshake message be
    # fragmented); gather their payloads until the message is whole.
    while len(data) - at >= 5:
        if data[at] != TLS_HANDSHAKE or data[at + 1] != 3:
            return NO_NAME
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if not 0 < length <= _MAX_RECORD:
            return NO_NAME
        payload = data[at + 5 : at + 5 + length]
        handshake += payload
        if len(handshake) >= 4:
            if handshake[0] != _CLIENT_HELLO:
                return NO_NAME
            size = int.from_bytes(handshake[1:4], "big")
            if size > MAX_HELLO:
                return NO_NAME
            if len(handshake) >= 4 + size:
                return True, _server_name(handshake[4 : 4 + size])
        if len(payload) < length:
            return MORE  # this record is still arriving
        at += 5 + length
    return MORE


def _server_name(hello: bytes) -> str | None:
    """The host_name entry of a ClientHello body's server_name extension, if valid."""
    try:
        at = 2 + 32  # legacy_version, random
        at += 1 + hello[at]  # legacy_session_id
        at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher_suites
        at += 1 + hello[at]  # legacy_compression_methods
        if at + 2 > len(hello):
            return None  # no extensions at all
        end = min(at + 2 + int.from_bytes(hello[at : at + 2], "big"), len(hello))
        at += 2
        while at + 4 <= end:
            kind = int.from_bytes(hello[at : at + 2], "big")
            size = int.from_bytes(hello[at + 2 : at + 4], "big")
            at += 4
            if kind == _SERVER_NAME:
                return _host_name(hello[at : min(at + size, end)])
            at += size
    except IndexError:  # a length that points past the end: malformed
        return None
    return None


def _host_name(extension: bytes) -> str | None:
    end = min(2 + int.from_bytes(extension[0:2], "big"), len(extension))
    at = 2
    while at + 3 <= end:
        kind = extension[at]
        size = int.from_bytes(extension[at + 1 : at + 3], "big")
        name = extension[at + 3 : at + 3 + size]
        if kind == _HOST_NAME:
            if len(name) != size or not 0 < size <= 255 or not _NAME_BYTES.issuperset(name):
                return None
            return name.decode("ascii").lower()
        at += 3 + size
    return None


class ClientHelloReader:
    """Fed a client's first bytes as they arrive; `done` once it has decided, and then
    `server_name` is the name it asked for (None when there is none to read)."""

    __slots__ = ("_buffer", "_wanted", "done", "server_name")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._wanted = 1  # bytes to have before reading again: the next record's end
        self.done = False
        self.server_name: str | None = None

    def feed(self, data: bytes) -> bool:
        """Take more of the client's bytes; True once decided."""
        if self.done:
            return True
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._wanted:
            return False
        decided, self.server_name = read_server_name(bytes(buffer))
        if decided or len(buffer) > MAX_HELLO:
            self.done = True
            self._buffer = bytearray()
        else:
            self._wanted = _next_record_end(buffer)
        return self.done


def _next_record_end(data: bytearray) -> int:
    """How many bytes the first record not yet whole needs (its header, then its body)."""
    at = 0
    while len(data) - at >= 5:
        end = at + 5 + int.from_bytes(data[at + 3 : at + 5], "big")
        if len(data) < end:
            return end
        at = end
    return at + 5
