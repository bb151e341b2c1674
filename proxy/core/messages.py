"""The neutral message model every codec speaks: HTTP/1 and HTTP/2 events keyed by stream id.

Codecs turn bytes into these events and these events back into bytes; everything
above the codecs (connection manager, router, telemetry) sees only these types, so
an HTTP/1.1 request and an HTTP/2 stream travel the same path.

Events are slotted, mutable classes with explicit constructors: several are built for
every request, and that is what the compiled build makes cheapest (see `_Event`).
"""

from __future__ import annotations

from typing import ClassVar, Final

# Header names are lower-cased bytes; values are bytes as received (no decoding on
# the hot path). Order and duplicates are preserved, as RFC 9110 requires for
# fields like Set-Cookie.
Headers = list[tuple[bytes, bytes]]

# HTTP/1 has one stream at a time per connection; it uses stream id 1 throughout,
# like an HTTP/1.1 upgrade to HTTP/2 does (RFC 9113 section 3.2).
H1_STREAM: Final = 1

# What a codec noticed about a head's fields while it parsed them, so the header policy
# above need not scan the list again: bits of `RequestHead.fields` and
# `ResponseHead.fields`. A codec that does not note them leaves ANY_FIELDS (the head may
# hold anything) and the policy scans. `proxy.core.headers.NOTED_FIELDS` names them.
HOP_BY_HOP_FIELDS: Final = 1  # a field never forwarded as it is (RFC 9110 section 7.6.1)
FORWARDING_FIELDS: Final = 2  # x-request-id, x-forwarded-for or x-forwarded-proto
TRACE_FIELDS: Final = 4  # trace context: traceparent, tracestate, b3, x-b3-*
PEER_FIELDS: Final = 8  # Istio's peer metadata exchange: x-envoy-peer-metadata[-id]
ANY_FIELDS: Final = 15


class _Event:
    """Field-wise equality and a readable repr for the events, from their `__slots__`.

    Hand-written classes rather than dataclasses: the compiled build (proxy/_compiled.py)
    turns an explicit `__init__` into C, while a dataclass's generated one stays
    interpreted, and several events are built for every request.
    """

    __slots__: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        # `fields` is what a codec noted about the headers, not part of the message.
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name)
            for name in self.__slots__
            if name != "fields"
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class RequestHead(_Event):
    """A request's start line and header section.

    `content_length` is None when the length is not declared; `chunked` says the
    body is chunk-framed (HTTP/1) — on HTTP/2 both are about DATA frames only. The
    HTTP/1 codecs lift a plain `Connection: keep-alive` or `close` into `keep_alive`
    as they lift the framing fields, so `headers` does not repeat them. `fields` is
    what the codec noted about the headers (HOP_BY_HOP_FIELDS...).
    """

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "fields",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "stream_id",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        stream_id: int,
        method: bytes,
        target: bytes,
        headers: Headers,
        http_version: bytes = b"1.1",
        keep_alive: bool = True,
        content_length: int | None = None,
        chunked: bool = False,
        expect_continue: bool = False,
        upgrade: bytes | None = None,
        fields: int = ANY_FIELDS,
    ) -> None:
        self.stream_id = stream_id
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.fields = fields


class ResponseHead(_Event):
    """A response's status line and header section (1xx included); as RequestHead."""

    __slots__ = (
        "chunked",
        "content_length",
        "fields",
        "headers",
        "http_version",
        "keep_alive",
        "reason",
        "status",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: int,
        status: int,
        headers: Headers,
        reason: bytes = b"",
        http_version: bytes = b"1.1",
        keep_alive: bool = True,
        content_length: int | None = None,
        chunked: bool = False,
        fields: int = ANY_FIELDS,
    ) -> None:
        self.stream_id = stream_id
        self.status = status
        self.headers = headers
        self.reason = reason
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.fields = fields


class Data(_Event):
    """A piece of message body, in order."""

    __slots__ = ("data", "stream_id")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


# The fields of a message that has none, shared: most messages carry no trailers, and
# an empty list made for each (and freed with it) costs about 150 instructions. Never
# added to: code that collects fields into a list that may be this one replaces it
# first (tests/proxy/codecs/test_no_fields.py keeps it empty).
NO_FIELDS: Final[Headers] = []


class EndOfMessage(_Event):
    """The message is complete; trailers (HTTP/1 chunked trailer section or HTTP/2 trailers)."""

    __slots__ = ("stream_id", "trailers")

    def __init__(self, stream_id: int, trailers: Headers | None = None) -> None:
        self.stream_id = stream_id
        self.trailers: Headers = NO_FIELDS if trailers is None else trailers


class Upgraded(_Event):
    """The connection left HTTP (101 Switching Protocols or CONNECT); `data` is what followed."""

    __slots__ = ("data", "stream_id")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


class ProtocolError(_Event):
    """The peer broke the protocol. `status` is the response to send when one still can be.

    400 for a malformed message, 431 for an oversized header section, 414 for an
    oversized request target, 413 for an oversized body; `reason` is for logs and
    `response_code_details`, never echoed to the client.
    """

    __slots__ = ("reason", "status", "stream_id")

    def __init__(self, stream_id: int, status: int, reason: str) -> None:
        self.stream_id = stream_id
        self.status = status
        self.reason = reason


Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgraded | ProtocolError
