"""HTTP/1.1 codec on llhttp (through httptools): the default, and the cheapest per request.

llhttp parses in C and calls back per element; this adapter turns those callbacks
into the neutral events of `proxy.core.messages` and frames outgoing messages with
`h1_framing`. It is the only module that imports httptools.
"""

from __future__ import annotations

import httptools

from proxy.core.codecs import h1_framing
from proxy.core.codecs.base import CodecLimits
from proxy.core.messages import (
    H1_STREAM,
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgraded,
)


class _Oversized(Exception):
    """Raised inside a parser callback to stop parsing; carries the status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _framing(headers: Headers) -> tuple[Headers, int | None, bool, bool]:
    """Split framing headers off: (other headers, content-length, chunked, bad framing).

    llhttp has already rejected conflicting framing (Content-Length with
    Transfer-Encoding, differing duplicate lengths, non-final chunked); here the
    declared values are lifted into fields so codecs can re-frame on the way out.
    """
    rest: Headers = []
    content_length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit():
                return rest, None, False, True
            length = int(value)
            if content_length is not None and content_length != length:
                return rest, None, False, True
            content_length = length
        elif name == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        else:
            rest.append((name, value))
    return rest, content_length, chunked, False


def _check_header(name: bytes, value: bytes) -> str | None:
    """Field shapes llhttp tolerates but RFC 9112 forbids a proxy to forward."""
    if b"\r" in value or b"\n" in value:
        return "obs-fold or bare CR/LF in a header value"
    if not name:
        return "empty header name"
    return None


class LlhttpServerCodec:
    """Server side: parses pipelined requests, frames responses for this client's version."""

    __slots__ = (
        "_events",
        "_failed",
        "_head_bytes",
        "_head_done",
        "_headers",
        "_keep_alive",
        "_limits",
        "_parser",
        "_request_chunked",
        "_response_chunked",
        "_response_close",
        "_target",
        "_trailers",
        "_upgraded",
    )

    def __init__(self, limits: CodecLimits | None = None) -> None:
        self._limits = limits or CodecLimits()
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers = []
        self._target = b""
        self._head_bytes = 0
        self._head_done = True
        self._failed = False
        self._upgraded = False
        self._keep_alive = True
        self._request_chunked = False
        self._response_chunked = False
        self._response_close = False

    # -- parsing -------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._upgraded:
            return [Data(H1_STREAM, data)] if data else []
        if not self._head_done:
            # httptools buffers a header value until it ends; bound what a client can
            # make it hold before any callback of ours can count it.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes + self._limits.max_target_bytes:
                return self._fail(431, "request header section too large")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            self._upgraded = True
            self._events.append(Upgraded(H1_STREAM, data[offset:]))
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _Oversized):
                return self._fail(cause.status, cause.reason)
            return self._fail(400, f"callback error: {cause!r}")
        except httptools.HttpParserError as error:
            return self._fail(400, str(error) or type(error).__name__)
        events = self._events
        self._events = []
        return events

    def _fail(self, status: int, reason: str) -> list[Event]:
        self._failed = True
        self._keep_alive = False
        events = self._events
        events.append(ProtocolError(H1_STREAM, status, reason))
        self._events = []
        return events

    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = []
        self._target = b""
        self._head_done = False
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > self._limits.max_target_bytes:
            raise _Oversized(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the header section, llhttp reports the chunked trailer section here.
        headers = self._trailers if self._head_done else self._headers
        headers.append((name.lower(), value))
        if len(headers) > self._limits.max_header_count:
            raise _Oversized(431, "too many request headers")

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._head_done = True
        size = len(self._target)
        for name, value in self._headers:
            size += len(name) + len(value) + 4
            problem = _check_header(name, value)
            if problem:
                raise _Oversized(400, problem)
        if size > self._limits.max_header_bytes:
            raise _Oversized(431, "request header section too large")
        headers, content_length, chunked, bad = _framing(self._headers)
        if bad:
            raise _Oversized(400, "invalid or conflicting content-length")
        version = parser.get_http_version().encode()
        keep_alive = parser.should_keep_alive()
        self._keep_alive = keep_alive
        self._request_chunked = chunked
        upgrade: bytes | None = None
        expect_continue = False
        for name, value in headers:
            if name == b"upgrade" and parser.should_upgrade():
                upgrade = value
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        self._events.append(
            RequestHead(
                H1_STREAM,
                parser.get_method(),
                self._target,
                headers,
                version,
                keep_alive,
                content_length,
                chunked,
                expect_continue,
                upgrade,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(H1_STREAM, body))

    def on_message_complete(self) -> None:
        self._events.append(EndOfMessage(H1_STREAM, self._trailers))

    # -- framing -------------------------------------------------------------------

    @property
    def keep_alive(self) -> bool:
        return self._keep_alive and not self._failed and not self._response_close

    def send_response_head(self, head: ResponseHead, request: RequestHead) -> bytes:
        status = head.status
        if status < 200:
            return h1_framing.response_head(status, head.reason, head.headers, None, False, False)
        content_length = head.content_length
        bodiless = request.method == b"HEAD" or status in (204, 304)
        close = not (head.keep_alive and self._keep_alive)
        chunked = False
        if status == 101:
            self._upgraded = True
        elif content_length is None and not bodiless:
            if request.http_version == b"1.1":
                chunked = True
            else:
                close = True  # an HTTP/1.0 client reads a body of unknown length to EOF
        self._response_chunked = chunked
        self._response_close = close
        return h1_framing.response_head(
            status, head.reason, head.headers, content_length, chunked, close
        )

    def send_data(self, data: bytes) -> bytes:
        return h1_framing.chunk(data) if self._response_chunked else data

    def send_end(self, trailers: Headers) -> bytes:
        if self._response_chunked:
            self._response_chunked = False
            return h1_framing.last_chunk(trailers)
        return b""


class LlhttpClientCodec:
    """Client side: frames a request upstream, parses the response (1xx and 101 included)."""

    __slots__ = (
        "_close_delimited",
        "_complete",
        "_events",
        "_failed",
        "_head_request",
        "_headers",
        "_in_body",
        "_keep_alive",
        "_parser",
        "_request_chunked",
        "_trailers",
        "_upgraded",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers = []
        self._head_request = False
        self._request_chunked = False
        self._complete = True
        self._in_body = False
        self._close_delimited = False
        self._keep_alive = True
        self._failed = False
        self._upgraded = False

    # -- framing -------------------------------------------------------------------

    def send_request_head(self, head: RequestHead) -> bytes:
        if not self._complete:
            # A request on an unfinished exchange would desynchronise the connection.
            raise RuntimeError("request sent before the previous response was read")
        self._complete = False
        self._head_request = head.method == b"HEAD"
        self._request_chunked = head.chunked
        return h1_framing.request_head(
            head.method, head.target, head.headers, head.content_length, head.chunked
        )

    def send_data(self, data: bytes) -> bytes:
        return h1_framing.chunk(data) if self._request_chunked else data

    def send_end(self, trailers: Headers) -> bytes:
        return h1_framing.last_chunk(trailers) if self._request_chunked else b""

    # -- parsing -------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self._failed and not self._upgraded

    def receive(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._upgraded:
            return [Data(H1_STREAM, data)] if data else []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded = True
            self._events.append(Upgraded(H1_STREAM, data[upgrade.args[0] :]))
        except httptools.HttpParserError as error:
            self._failed = True
            self._events.append(ProtocolError(H1_STREAM, 502, f"upstream: {error}"))
        events = self._events
        self._events = []
        return events

    def connection_closed(self) -> list[Event]:
        if self._complete or self._failed or self._upgraded:
            return []
        self._failed = True
        if self._in_body and self._close_delimited:
            self._complete = True
            return [EndOfMessage(H1_STREAM)]
        return [ProtocolError(H1_STREAM, 502, "upstream connection closed before response end")]

    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the header section, llhttp reports the chunked trailer section here.
        (self._trailers if self._in_body else self._headers).append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers, content_length, chunked, bad = _framing(self._headers)
        if bad:
            raise ValueError("upstream sent invalid or conflicting content-length")
        keep_alive = parser.should_keep_alive()
        head = ResponseHead(
            H1_STREAM,
            status,
            headers,
            b"",
            parser.get_http_version().encode(),
            keep_alive,
            content_length,
            chunked,
        )
        self._events.append(head)
        if status < 200:
            return
        self._keep_alive = keep_alive
        if self._head_request or status in (204, 304):
            # llhttp cannot be told the request was HEAD; the response has no body
            # whatever its Content-Length says, so finish it here and start afresh.
            self._finish()
            self._parser = httptools.HttpResponseParser(self)
            return
        self._in_body = True
        self._close_delimited = content_length is None and not chunked

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(H1_STREAM, body))

    def on_message_complete(self) -> None:
        if self._in_body:
            self._finish()

    def _finish(self) -> None:
        self._in_body = False
        self._complete = True
        self._events.append(EndOfMessage(H1_STREAM, self._trailers))
