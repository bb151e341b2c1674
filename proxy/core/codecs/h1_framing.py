"""HTTP/1.1 wire framing shared by the codecs: start lines, header sections, chunks."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final, cast

from proxy.core.codecs.base import ClientCodec, ServerCodec
from proxy.core.messages import Headers, RequestHead, ResponseHead

REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

# Framing headers are owned by the codec: it writes the ones that match how it
# actually frames the body, so a peer's stale or hostile values never pass through.
FRAMING_HEADERS: Final = frozenset((b"content-length", b"transfer-encoding"))

LAST_CHUNK: Final = b"0\r\n\r\n"


# A head is built by appending fields to one bytes object with %-formatting, which
# mypyc turns into one allocation and a copy per format (no list, no join): about 30%
# fewer instructions than joining four pieces per field. Each format also copies the
# head so far and allocates, so up to four fields go in one, and the head's end (its
# framing field and blank line) in the last. Past _BLOCK_BYTES the head so far is set
# aside, so a head with many fields still costs copies linear in its size.
_BLOCK_BYTES: Final = 2048


def _with_fields(block: bytes, headers: Headers, end: bytes, index: int = 0) -> bytes:
    """`block`, then `name: value\r\n` for each header from `index` on, then `end`."""
    set_aside: list[bytes] | None = None
    count = len(headers)
    while True:
        if len(block) > _BLOCK_BYTES:
            if set_aside is None:
                set_aside = []
            set_aside.append(block)
            block = b""
        left = count - index
        if left >= 4:
            name1, value1 = headers[index]
            name2, value2 = headers[index + 1]
            name3, value3 = headers[index + 2]
            name4, value4 = headers[index + 3]
            if left > 4:
                block = b"%s%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n" % (
                    block, name1, value1, name2, value2, name3, value3, name4, value4
                )  # fmt: skip
                index += 4
                continue
            block = b"%s%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n%s" % (
                block, name1, value1, name2, value2, name3, value3, name4, value4, end
            )  # fmt: skip
        elif left == 3:
            name1, value1 = headers[index]
            name2, value2 = headers[index + 1]
            name3, value3 = headers[index + 2]
            block = b"%s%s: %s\r\n%s: %s\r\n%s: %s\r\n%s" % (
                block, name1, value1, name2, value2, name3, value3, end
            )  # fmt: skip
        elif left == 2:
            name1, value1 = headers[index]
            name2, value2 = headers[index + 1]
            block = b"%s%s: %s\r\n%s: %s\r\n%s" % (block, name1, value1, name2, value2, end)
        elif left == 1:
            name1, value1 = headers[index]
            block = b"%s%s: %s\r\n%s" % (block, name1, value1, end)
        elif end:
            block = b"%s%s" % (block, end)
        break
    if set_aside is not None:
        set_aside.append(block)
        return b"".join(set_aside)
    return block


# Longest header section kept by FieldLines: a bound on what a connection holds.
_LINES_KEPT_BYTES: Final = 4096


class FieldLines:
    """The header lines of a connection's last head, kept to reuse the part that repeats.

    A connection's messages mostly carry the same fields in the same order (a client's
    Host, User-Agent, Accept; the X-Forwarded-* appended to them), and only the last
    few differ (X-Request-Id, traceparent). The longest run from the first field that
    repeated is kept as bytes: a head starting with it copies them once instead of
    formatting each field. Fields are compared by identity first (the llhttp codecs hand
    back a connection's repeated fields as the same pair objects), then by value. The
    run shrinks to what the next head shares; a connection whose heads share no first
    field twice in a row stops keeping any.
    """

    __slots__ = ("_fields", "_lines", "_misses")

    def __init__(self) -> None:
        self._fields: list[object] = []  # a copy: the head's list may change once sent
        self._lines = b""
        self._misses = 0

    def request_head(self, method: bytes, target: bytes, headers: Headers, end: bytes) -> bytes:
        """The request line, the header lines, `end`; reusing the kept run of lines."""
        fields = self._fields
        kept = len(fields)
        limit = min(kept, len(headers))
        # Read as objects: a typed pair would be unboxed, and a new tuple is never the same.
        items = cast("list[object]", headers)
        same = 0
        while same < limit:
            field = items[same]
            kept_field = fields[same]
            if field is not kept_field:
                name, value = cast("tuple[bytes, bytes]", field)
                kept_name, kept_value = cast("tuple[bytes, bytes]", kept_field)
                if name != kept_name or value != kept_value:
                    break
            same += 1
        if same:
            self._misses = 0
            lines = self._lines
            if same < kept:  # only this much repeats: keep just that
                size = 0
                for name, value in headers[:same]:
                    size += len(name) + len(value) + 4
                lines = self._lines = lines[:size]
                self._fields = fields[:same]
            # One format for the usual rest (the ids the proxy adds) and the request line.
            left = len(headers) - same
            if left == 2:
                name1, value1 = headers[same]
                name2, value2 = headers[same + 1]
                return b"%s %s HTTP/1.1\r\n%s%s: %s\r\n%s: %s\r\n%s" % (
                    method, target, lines, name1, value1, name2, value2, end
                )  # fmt: skip
            if left == 1:
                name1, value1 = headers[same]
                return b"%s %s HTTP/1.1\r\n%s%s: %s\r\n%s" % (
                    method, target, lines, name1, value1, end
                )  # fmt: skip
            block = b"%s %s HTTP/1.1\r\n%s" % (method, target, lines)
            return _with_fields(block, headers, end, same)
        line = b"%s %s HTTP/1.1\r\n" % (method, target)
        head = _with_fields(line, headers, end)
        if kept:
            self._misses += 1
        if self._misses < 2:
            size = len(head) - len(line) - len(end)
            if size <= _LINES_KEPT_BYTES:
                self._fields = items[:]
                self._lines = head[len(line) : len(line) + size]
        elif kept:
            self._fields = []
            self._lines = b""
        return head


def header_block(headers: Headers) -> bytes:
    """`name: value\r\n` for each header, in order (no terminating blank line)."""
    return _with_fields(b"", headers, b"")


def request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    content_length: int | None,
    chunked: bool,
    lines: FieldLines | None = None,
) -> bytes:
    end = _head_end(content_length, chunked)
    if lines is not None:
        return lines.request_head(method, target, headers, end)
    return _with_fields(b"%s %s HTTP/1.1\r\n" % (method, target), headers, end)


def response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    content_length: int | None,
    chunked: bool,
    close: bool,
) -> bytes:
    line = None if len(reason) else _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or _reason(status))
    if close:
        end = b"%sconnection: close\r\n\r\n" % _framing_line(content_length, chunked)
    else:
        end = _head_end(content_length, chunked)
    return _with_fields(line, headers, end)


def _reason(status: int) -> bytes:
    return REASONS.get(status, b"Unknown")


# "HTTP/1.1 200 OK\r\n" and friends (with the standard reason), built once.
_STATUS_LINES: Final[dict[int, bytes]] = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, _reason(status)) for status in range(100, 600)
}


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: Headers) -> bytes:
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n%s\r\n" % header_block(trailers)


def _framing_line(content_length: int | None, chunked: bool) -> bytes:
    if chunked:
        return b"transfer-encoding: chunked\r\n"
    if content_length is not None:
        return b"content-length: %d\r\n" % content_length
    return b""


# "content-length: N\r\n\r\n" for the small lengths seen so far, by N: formatting the
# number costs about 500 instructions, a list item about 20.
_LENGTH_ENDS_KEPT: Final = 4096
_length_ends: Final[list[bytes]] = [b""] * _LENGTH_ENDS_KEPT
_CHUNKED_END: Final = b"transfer-encoding: chunked\r\n\r\n"


def _head_end(content_length: int | None, chunked: bool) -> bytes:
    """The end of a head that stays open: its framing field, if any, and the blank line."""
    if chunked:
        return _CHUNKED_END
    if content_length is None:
        return b"\r\n"
    if 0 <= content_length < _LENGTH_ENDS_KEPT:
        end = _length_ends[content_length]
        if not len(end):
            end = _length_ends[content_length] = b"content-length: %d\r\n\r\n" % content_length
        return end
    return b"content-length: %d\r\n\r\n" % content_length


class ResponseFraming(ServerCodec):
    """How a server codec frames responses for the client that sent the request.

    Shared by both HTTP/1 server codecs, so they frame alike by construction: chunked
    to an HTTP/1.1 client when the length is unknown, close-delimited to HTTP/1.0, no
    framing once the connection leaves HTTP (101, 2xx to CONNECT), and whether the
    connection stays open decided per answered request.
    """

    __slots__ = (
        "_failed",
        "_keep_alive",
        "_last_chunked",
        "_last_close",
        "_last_head",
        "_last_headers",
        "_last_length",
        "_last_reason",
        "_last_status",
        "_response_chunked",
        "_response_close",
        "_upgraded",
    )

    def __init__(self) -> None:
        self._failed = False
        self._keep_alive = True
        self._response_chunked = False
        self._response_close = False
        self._upgraded = False
        # The last final head framed, and what it was framed from (_framed_head).
        self._last_head = b""
        self._last_status = 0
        self._last_reason = b""
        self._last_headers: Headers = []
        self._last_length = -1
        self._last_chunked = False
        self._last_close = False

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry the next request after the answered one.

        Decided by the answered request and its response alone: a pipelined request that
        failed to parse has its own ProtocolError event, queued behind the requests
        before it, which are still answered (`_failed` only stops further parsing).
        """
        return self._keep_alive and not self._response_close

    def send_response_head(self, head: ResponseHead, request: RequestHead) -> bytes:
        status = head.status
        if status < 200:
            return response_head(status, head.reason, head.headers, None, False, False)
        content_length = head.content_length
        bodiless = request.method == b"HEAD" or status in (204, 304)
        # Decided per answered request: a pipelined request parsed later must not change it.
        self._keep_alive = request.keep_alive
        close = not (head.keep_alive and request.keep_alive)
        chunked = False
        if status == 204:
            content_length = None  # RFC 9110 section 8.6: never sent with a 204
        if status == 101 or (request.method == b"CONNECT" and status < 300):
            # The connection leaves HTTP: no framing (RFC 9110 section 9.3.6 forbids
            # Content-Length and Transfer-Encoding on a 2xx to CONNECT).
            self._upgraded = True
            content_length = None
        elif content_length is None and not bodiless:
            if request.http_version == b"1.1":
                chunked = True
            else:
                close = True  # an HTTP/1.0 client reads a body of unknown length to EOF
        self._response_chunked = chunked
        self._response_close = close
        return self._framed_head(status, head.reason, head.headers, content_length, chunked, close)

    def _framed_head(
        self,
        status: int,
        reason: bytes,
        headers: Headers,
        content_length: int | None,
        chunked: bool,
        close: bool,
    ) -> bytes:
        """response_head, or the bytes it gave last when all it is given is as then.

        A connection's responses mostly come from one upstream with the same fields,
        which the llhttp client codec hands on as equal lists of the same pair objects:
        the compare is an identity check a field, where framing them again is a format
        of every name and value (about 1,000 instructions).
        """
        length = -1 if content_length is None else content_length
        if (
            status == self._last_status
            and length == self._last_length
            and chunked == self._last_chunked
            and close == self._last_close
            and headers == self._last_headers
            and reason == self._last_reason
        ):
            return self._last_head
        framed = response_head(status, reason, headers, content_length, chunked, close)
        self._last_head = framed
        self._last_status = status
        self._last_reason = reason
        self._last_headers = headers[:]  # a copy: the head's own list is its holder's
        self._last_length = length
        self._last_chunked = chunked
        self._last_close = close
        return framed

    def send_data(self, data: bytes) -> bytes:
        return chunk(data) if self._response_chunked else data

    def send_end(self, trailers: Headers) -> bytes:
        if self._response_chunked:
            self._response_chunked = False
            return last_chunk(trailers)
        return b""


class RequestFraming(ClientCodec):
    """How a client codec frames the request it sends, and when its connection is reusable.

    Shared by both HTTP/1 client codecs, as ResponseFraming is by the server codecs: a
    request is chunked upstream when its client sent it chunked (its length is unknown),
    and a connection carries another request only after a complete, keep-alive,
    unbroken response that did not switch protocols.
    """

    __slots__ = (
        "_body_left",
        "_complete",
        "_failed",
        "_field_lines",
        "_keep_alive",
        "_request_chunked",
        "_upgraded",
    )

    def __init__(self) -> None:
        self._field_lines = FieldLines()
        self._request_chunked = False
        self._body_left = 0
        self._complete = True
        self._keep_alive = True
        self._failed = False
        self._upgraded = False

    def _begin_request(self, head: RequestHead) -> None:
        if not self._complete:
            # A request on an unfinished exchange would desynchronise the connection.
            raise RuntimeError("request sent before the previous response was read")
        self._complete = False
        self._request_chunked = head.chunked
        self._body_left = head.content_length or 0

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self._failed and not self._upgraded

    def send_data(self, data: bytes) -> bytes:
        if self._request_chunked:
            return chunk(data)
        self._body_left -= len(data)
        return data

    def send_end(self, trailers: Headers) -> bytes:
        if self._request_chunked:
            return last_chunk(trailers)
        if self._body_left:
            # More or less body than the Content-Length framed: the server reads the
            # difference as (part of) a next request, so the connection is never reused.
            # (Codecs check lengths on the way in; this guards every way out.)
            self._failed = True
        return b""
