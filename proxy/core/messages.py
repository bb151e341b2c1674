"""The neutral message model every codec speaks: HTTP/1 and HTTP/2 events keyed by stream id.

Codecs turn bytes into these events and these events back into bytes; everything
above the codecs (connection manager, router, telemetry) sees only these types, so
an HTTP/1.1 request and an HTTP/2 stream travel the same path.

Events are slotted but not frozen: a frozen dataclass pays an `object.__setattr__`
per field on construction, and several of these are built for every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Header names are lower-cased bytes; values are bytes as received (no decoding on
# the hot path). Order and duplicates are preserved, as RFC 9110 requires for
# fields like Set-Cookie.
Headers = list[tuple[bytes, bytes]]

# HTTP/1 has one stream at a time per connection; it uses stream id 1 throughout,
# like an HTTP/1.1 upgrade to HTTP/2 does (RFC 9113 section 3.2).
H1_STREAM = 1


@dataclass(slots=True)
class RequestHead:
    """A request's start line and header section.

    `content_length` is None when the length is not declared; `chunked` says the
    body is chunk-framed (HTTP/1) — on HTTP/2 both are about DATA frames only.
    """

    stream_id: int
    method: bytes
    target: bytes
    headers: Headers
    http_version: bytes = b"1.1"
    keep_alive: bool = True
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    upgrade: bytes | None = None


@dataclass(slots=True)
class ResponseHead:
    """A response's status line and header section (1xx included)."""

    stream_id: int
    status: int
    headers: Headers
    reason: bytes = b""
    http_version: bytes = b"1.1"
    keep_alive: bool = True
    content_length: int | None = None
    chunked: bool = False


@dataclass(slots=True)
class Data:
    """A piece of message body, in order."""

    stream_id: int
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The message is complete; trailers (HTTP/1 chunked trailer section or HTTP/2 trailers)."""

    stream_id: int
    trailers: Headers = field(default_factory=list)


@dataclass(slots=True)
class Upgraded:
    """The connection left HTTP (101 Switching Protocols or CONNECT); `data` is what followed."""

    stream_id: int
    data: bytes


@dataclass(slots=True)
class ProtocolError:
    """The peer broke the protocol. `status` is the response to send when one still can be.

    400 for a malformed message, 431 for an oversized header section, 414 for an
    oversized request target, 413 for an oversized body; `reason` is for logs and
    `response_code_details`, never echoed to the client.
    """

    stream_id: int
    status: int
    reason: str


Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgraded | ProtocolError
