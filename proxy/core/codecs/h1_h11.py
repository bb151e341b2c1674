"""HTTP/1.1 codec on h11: the compat codec, and the oracle the llhttp codec is tested against.

h11 parses; a strict framing guard in front of it makes it refuse what llhttp
refuses. h11 is more lenient than llhttp on several smuggling shapes (bare LF line
ends, obs-fold, duplicate equal Content-Length, whitespace after a chunk size, chunk
sizes past 64 bits, control bytes in values, unknown methods), so this adapter finds
message boundaries itself (the head up to CRLF CRLF, then the body by its framing),
checks them, and hands each message to its own `h11.Connection`; if h11 and the
guard disagree on where a body ends, the message is refused. One connection per
exchange also lets requests be parsed ahead of their responses (pipelining), which
one h11 connection does not allow. Outgoing messages are framed by `h1_framing`,
as in the llhttp codec, so both make the same framing decisions byte for byte.
The differences that remain are listed in tests/proxy/codecs/test_divergences.py.
It is the only module that imports h11.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import h11

from proxy.core.codecs import h1_framing
from proxy.core.codecs.base import CodecLimits
from proxy.core.headers import is_plain_connection_value
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

# The methods llhttp knows in HTTP mode; it rejects any other token, h11 would not.
_METHODS: Final = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
    b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
    b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE "
    b"QUERY".split()
)
_VERSIONS: Final = (b"1.1", b"1.0")
_LEADING_LINE_ENDS: Final = re.compile(rb"[\r\n]+")
_HTTP_NAME: Final = b"HTTP/"
_HEAD_END: Final = b"\r\n\r\n"
_LINE_ENDS: Final = b"\r\n"
# Lengths are unsigned 64-bit in llhttp; anything larger is an overflow there.
_MAX_LENGTH: Final = 2**64 - 1
# Control bytes other than HTAB, CR and LF among them (h11 lets \x01-\x08, \x0e-\x1f,
# \x7f by in values; llhttp needs CRLF everywhere, h11 takes a bare LF as a line end).
_VALUE_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_TOKEN_RE: Final = re.compile(_TOKEN)
# RFC 9112 section 7.1.1 chunk line, without the whitespace llhttp refuses.
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# llhttp takes empty extensions (`;=v`, `;;a`) but not a `;` that ends the line.
_EXT_VALUE: Final = rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb")?)"
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)(?:;(?:" + _TOKEN + _EXT_VALUE + rb"?|" + _EXT_VALUE + rb")?)*(?<!;)\r\n"
)
_HEX: Final = re.compile(rb"[0-9A-Fa-f]*")
# llhttp's request line: it tolerates runs of spaces (h11 does not: a known divergence).
_REQUEST_LINE: Final = re.compile(rb"([^ ]+) +([^ ]+) +HTTP/(\d\.\d)")
# Request targets as llhttp takes them: origin form or `*` (then any visible ASCII),
# absolute form (a letters-only scheme, an authority without `#`), and for CONNECT
# authority characters until a `/` or `?` (then anything visible).
_AUTHORITY: Final = rb"!$%&'()*+,.0-9:;=@A-Z\[\]_a-z~-"
_TARGET: Final = re.compile(
    rb"[/*][\x21-\x7e]*|[A-Za-z]+://([" + _AUTHORITY + rb"]*)(?:[/?][\x21-\x7e]*)?"
)
_CONNECT_TARGET: Final = re.compile(rb"([" + _AUTHORITY + rb"]*)(?:[/?][\x21-\x7e]*)?")
# The llhttp codec bounds neither chunk extensions nor an upstream's head; these
# bounds only keep this adapter's buffer from growing without end.
_MAX_CHUNK_LINE: Final = 64 * 1024
_MAX_RESPONSE_HEAD: Final = 1024 * 1024
# h11's own bound on an unfinished event: above every bound the guard enforces first.
_H11_BUFFER: Final = 2 * _MAX_RESPONSE_HEAD
_STATUS_LINE: Final = re.compile(rb"HTTP/(\d\.\d) (\d{3})(?: [^\r\n]*)?")


# Unfinished input waits in a bytearray (appending is amortised O(1)); a read that
# holds whole messages is parsed straight from the bytes it came in.
Buffer: TypeAlias = bytes | bytearray


class _Reject(Exception):
    """Stops parsing; carries the status to answer and the reason for logs."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _connection_tokens(headers: Headers) -> set[bytes]:
    # llhttp reads the legacy Proxy-Connection as Connection (keep-alive, close,
    # upgrade); so does this codec, its oracle.
    tokens: set[bytes] = set()
    for name, value in headers:
        if name in (b"connection", b"proxy-connection"):
            tokens.update(token.strip(b" \t").lower() for token in value.split(b","))
    return tokens


def _lifted(headers: Headers) -> Headers:
    """Without a plain `Connection: keep-alive` or `close`: `keep_alive` carries it
    (messages.RequestHead), as in the llhttp codec."""
    return [
        pair
        for pair in headers
        if pair[0] != b"connection" or not is_plain_connection_value(pair[1])
    ]


def _keep_alive(version: bytes, headers: Headers, needs_eof: bool) -> bool:
    """llhttp's `should_keep_alive`: HTTP/1.0 keep-alive is opt-in (h11 never keeps it)."""
    if needs_eof:
        return False
    tokens = _connection_tokens(headers)
    if version == b"1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens


def _check_fields(lines: Sequence[Buffer], status: int) -> tuple[int | None, bool]:
    """Refuse field lines llhttp refuses; return (content-length, chunked) from the raw lines.

    h11 folds obs-fold lines, merges equal duplicate Content-Length values and
    accepts control bytes, so the framing must be read from the lines as received.
    """
    content_length: int | None = None
    lengths = 0
    encodings = 0
    for line in lines:
        if not line or line[0] in (0x20, 0x09):
            raise _Reject(status, "obs-fold or empty field name")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise _Reject(status, "invalid field name (or whitespace before colon)")
        if _VALUE_CONTROL.search(value):
            raise _Reject(status, "control character in field value")
        name = name.lower()
        if name == b"content-length":
            lengths += 1
            value = value.strip(b" \t")
            if not value.isdigit() or int(value) > _MAX_LENGTH:
                raise _Reject(status, "invalid content-length")
            content_length = int(value)
        elif name == b"transfer-encoding":
            encodings += 1
            # Only plain `chunked` is framed here: anything else (gzip, chunked; a
            # repeated header) is an ambiguity a proxy must not resolve on its own.
            if value.strip(b" \t").lower() != b"chunked":
                raise _Reject(status, "unsupported transfer-encoding")
    if lengths > 1 or encodings > 1 or (lengths and encodings):
        raise _Reject(status, "conflicting content-length / transfer-encoding")
    return content_length, encodings == 1


def _check_lines(data: Buffer, status: int) -> None:
    """Bare CR/LF and control bytes in a head or trailer, finished or not.

    Run on unfinished lines too, so h11 rejects as soon as llhttp does; a final CR
    may still be followed by its LF.
    """
    if data.endswith(b"\r"):
        data = data[:-1]
    if _VALUE_CONTROL.search(data.replace(_LINE_ENDS, b"")):
        raise _Reject(status, "bare CR or LF, or a control character")


def _h11_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[Headers, int]:
    """Lower-cased names and stripped values without the framing fields, and the head size."""
    rest: Headers = []
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name not in h1_framing.FRAMING_HEADERS:
            rest.append((bytes(name), bytes(value)))
    return rest, size


class _Body:
    """Finds where a body ends on the raw bytes and checks its chunk lines and trailers."""

    __slots__ = (
        "_chunk_left",
        "_crlf",
        "_max_bytes",
        "_max_count",
        "_remaining",
        "_state",
        "_status",
        "_trailer_bytes",
        "_trailers",
    )

    # States of a chunked body.
    SIZE = 0
    DATA = 1
    DATA_END = 2
    TRAILERS = 3

    def __init__(
        self, content_length: int | None, status: int, max_count: int, max_bytes: int
    ) -> None:
        self._remaining = content_length  # None: chunked
        self._state = self.SIZE
        self._chunk_left = 0
        self._crlf = 0
        self._trailers = 0
        self._trailer_bytes = 0
        # Trailers are bounded like a header section: unfinished lines wait in our buffer.
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._status = status

    def scan(self, data: Buffer) -> tuple[int, bool]:
        """How many bytes of `data` belong to this body, and whether it ends there."""
        if self._remaining is not None:
            take = min(self._remaining, len(data))
            self._remaining -= take
            return take, self._remaining == 0
        position = 0
        size = len(data)
        status = self._status
        while position < size:
            state = self._state
            if state == self.DATA:
                take = min(self._chunk_left, size - position)
                position += take
                self._chunk_left -= take
                if not self._chunk_left:
                    self._state = self.DATA_END
                    self._crlf = 0
            elif state == self.DATA_END:
                if data[position] != _LINE_ENDS[self._crlf]:
                    raise _Reject(status, "chunk data not followed by CRLF")
                position += 1
                self._crlf += 1
                if self._crlf == 2:
                    self._state = self.SIZE
            else:
                end = data.find(b"\n", position)
                if end < 0:
                    partial = data[position:]
                    if state == self.SIZE:
                        digits = _HEX.match(partial)
                        rest = partial[digits.end() :] if digits else partial
                        if rest[:1] not in (b"", b";", b"\r") or len(partial) > _MAX_CHUNK_LINE:
                            raise _Reject(status, "invalid chunk size")
                    else:
                        _check_lines(partial, status)
                        if self._trailer_bytes + len(partial) > self._max_bytes:
                            raise _Reject(431 if status == 400 else status, "trailers too large")
                    break
                line = data[position : end + 1]
                position = end + 1
                if state == self.SIZE:
                    match = _CHUNK_LINE.fullmatch(line)
                    if match is None or len(line) > _MAX_CHUNK_LINE:
                        raise _Reject(status, "invalid chunk size line")
                    chunk_size = int(match[1], 16)
                    if chunk_size > _MAX_LENGTH:
                        raise _Reject(status, "chunk size overflow")
                    self._chunk_left = chunk_size
                    self._state = self.DATA if chunk_size else self.TRAILERS
                elif line == _LINE_ENDS:
                    return position, True
                else:
                    if not line.endswith(_LINE_ENDS):
                        raise _Reject(status, "bare LF in trailer")
                    _check_lines(line, status)
                    _check_fields([line[:-2]], status)
                    name = bytes(line.partition(b":")[0].lower())
                    if name in h1_framing.FRAMING_HEADERS:
                        raise _Reject(status, "framing field in trailers")
                    self._trailers += 1
                    self._trailer_bytes += len(line)
                    if self._trailers > self._max_count or self._trailer_bytes > self._max_bytes:
                        raise _Reject(431, "too many trailer fields")
        return position, False


def _drain(connection: h11.Connection, events: list[Event]) -> bool:
    """Translate h11's events into neutral ones; True once the message has ended."""
    while True:
        event = connection.next_event()
        if type(event) is h11.Data:
            # h11 declares bytes but may hand out a bytearray: read it untyped, so the
            # compiled build (proxy._compiled) does not insist on the declared type.
            data: Any = getattr(event, "data")  # noqa: B009
            events.append(Data(H1_STREAM, bytes(data)))
        elif type(event) is h11.EndOfMessage:
            trailers = [(bytes(name), bytes(value)) for name, value in event.headers]
            events.append(EndOfMessage(H1_STREAM, trailers))
            return True
        else:
            return False


def _as_bytes(data: Buffer) -> bytes:
    # A whole `bytes` read slices to itself; only leftovers kept in a bytearray copy.
    return data if isinstance(data, bytes) else bytes(data)


def _feed_body(
    body: _Body, connection: h11.Connection, data: Buffer, events: list[Event], status: int
) -> tuple[int, bool]:
    """Feed h11 the body bytes the framing guard measured: (bytes used, message ended)."""
    used, done = body.scan(data)
    if used:  # h11 takes empty data as the end of the stream
        connection.receive_data(_as_bytes(data[:used]))
    if _drain(connection, events) != done:
        raise _Reject(status, "h11 and the framing guard disagree on the body's end")
    return used, done


def _skip_line_ends(data: Buffer) -> int:
    """How many CR/LF bytes come first: llhttp skips them before a start line."""
    match = _LEADING_LINE_ENDS.match(data)
    return match.end() if match else 0


class _HeadScan:
    """How far an unfinished head has been checked, so each read checks only new bytes.

    Without it a head trickled in small reads would be re-scanned on every read
    (quadratic in the head size).
    """

    __slots__ = ("chars", "fields", "lines")

    def __init__(self) -> None:
        self.chars = 0  # bytes checked for bare CR/LF and control bytes
        self.lines = 0  # offset after the last finished line checked
        self.fields = 0  # field lines seen

    def check_chars(self, data: Buffer, status: int, first: int = 0) -> None:
        """Bare CR/LF and control bytes in `data[first:]` that were not checked yet."""
        checked = min(max(self.chars, first), len(data))
        if checked and data[checked - 1] == 0x0D:
            checked -= 1  # a CR that was waiting for its LF
        _check_lines(data[checked:], status)
        self.chars = len(data)

    def finished_lines(self, data: Buffer) -> list[Buffer]:
        """The lines finished since the last call (without their CRLF)."""
        end = data.rfind(_LINE_ENDS, self.lines)
        if end < 0:
            return []
        lines: list[Buffer] = list(data[self.lines : end].split(_LINE_ENDS))
        self.lines = end + 2
        return lines


def _keep(codec: H11ServerCodec | H11ClientCodec, rest: Buffer) -> None:
    """Keep what is left of a read for the next one (nothing once upgraded)."""
    if codec._upgraded or not rest:
        codec._buffer = bytearray()
    elif rest is not codec._buffer:
        codec._buffer = bytearray(rest)


class H11ServerCodec(h1_framing.ResponseFraming):
    """Server side: parses pipelined requests, frames responses for this client's version."""

    __slots__ = (
        "_body",
        "_buffer",
        "_closing",
        "_connection",
        "_limits",
        "_request_keep_alive",
        "_scan",
    )

    def __init__(self, limits: CodecLimits | None = None) -> None:
        super().__init__()
        self._limits = limits or CodecLimits()
        self._buffer = bytearray()
        self._scan = _HeadScan()
        self._connection: h11.Connection | None = None
        self._body: _Body | None = None
        self._request_keep_alive = True
        # The last request was not keep-alive: only CR/LF may follow it, as in llhttp.
        self._closing = False

    # -- parsing -------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._upgraded:
            return [Data(H1_STREAM, data)] if data else []
        buffer: Buffer = data
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        events: list[Event] = []
        try:
            while buffer and not self._upgraded:
                if self._body is None:
                    used = self._read_head(buffer, events)
                else:
                    used = self._read_body(buffer, events)
                if not used:
                    break
                buffer = buffer[used:]
        except _Reject as reject:
            return self._fail(events, reject.status, reject.reason)
        except h11.ProtocolError as error:
            return self._fail(events, 400, f"h11: {error}")
        _keep(self, buffer)
        return events

    def _fail(self, events: list[Event], status: int, reason: str) -> list[Event]:
        self._failed = True
        self._buffer = bytearray()
        events.append(ProtocolError(H1_STREAM, status, reason))
        return events

    def _read_head(self, data: Buffer, events: list[Event]) -> int:
        limits = self._limits
        skipped = _skip_line_ends(data)
        if skipped:
            return skipped
        if self._closing:
            raise _Reject(400, "data after connection: close")
        scan = self._scan
        end = data.find(_HEAD_END, max(scan.lines - 2, 0))
        if end < 0:
            self._check_unfinished(data)
            return 0
        end += 4
        self._scan = _HeadScan()
        head = bytes(data[:end])
        # h11 splits lines on a bare LF too: refuse those before it sees them.
        _check_lines(head[:-2], 400)
        lines = head[:-4].split(_LINE_ENDS)
        self._check_request_line(lines[0])
        content_length, chunked = _check_fields(lines[1:], 400)
        if len(lines) - 1 > limits.max_header_count:
            raise _Reject(431, "too many request headers")
        # Sizes are bounded by the guard before h11 sees the bytes.
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_H11_BUFFER)
        connection.receive_data(head)
        request = connection.next_event()
        if type(request) is not h11.Request:
            raise _Reject(400, "no request in head")
        method = request.method
        target = request.target
        version = request.http_version
        headers, size = _h11_headers(request.headers)
        if len(target) + size > limits.max_header_bytes:
            raise _Reject(431, "request header section too large")
        keep_alive = _keep_alive(version, headers, False)
        # Whether the connection stays open is decided per answered request (in
        # send_response_head); this one only says whether more requests may follow.
        self._request_keep_alive = keep_alive
        upgrade: bytes | None = None
        expect_continue = False
        upgrade_proposed = False
        for name, value in headers:
            if name == b"upgrade":
                upgrade = value
                upgrade_proposed = True
            elif name == b"expect":
                # The last Expect field decides, as in the llhttp codec.
                expect_continue = value.lower() == b"100-continue"
        # llhttp switches protocols on CONNECT, or on Upgrade with a `Connection: upgrade`.
        switching = method == b"CONNECT" or (
            upgrade_proposed and b"upgrade" in _connection_tokens(headers)
        )
        if not switching:
            upgrade = None
        events.append(
            RequestHead(
                H1_STREAM,
                method,
                target,
                _lifted(headers),
                version,
                keep_alive,
                content_length,
                chunked,
                expect_continue,
                upgrade,
            )
        )
        if switching:
            # Like llhttp through httptools: no body is read; what follows the head
            # belongs to the new protocol.
            events.append(EndOfMessage(H1_STREAM))
            events.append(Upgraded(H1_STREAM, bytes(data[end:])))
            self._upgraded = True
            return len(data)
        if chunked or content_length:
            self._connection = connection
            self._body = _Body(
                None if chunked else content_length,
                400,
                limits.max_header_count,
                limits.max_header_bytes,
            )
            return end
        if not _drain(connection, events):
            raise _Reject(400, "h11 did not end a request without a body")
        self._closing = not keep_alive
        return end

    def _check_request_line(self, line: bytes) -> None:
        """The request line by llhttp's rules, in the order it finds faults."""
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            raise _Reject(400, "invalid request line")
        method, target, version = match.groups()
        if method not in _METHODS:
            raise _Reject(400, "unknown method")
        if len(target) > self._limits.max_target_bytes:
            raise _Reject(414, "request target too long")
        target_match = (_CONNECT_TARGET if method == b"CONNECT" else _TARGET).fullmatch(target)
        # llhttp refuses `@@` in an authority (an empty userinfo after another).
        if target_match is None or (target_match[1] or b"").find(b"@@") >= 0:
            raise _Reject(400, "invalid request target")
        if version not in _VERSIONS:
            raise _Reject(400, "unsupported HTTP version")

    def _check_unfinished(self, partial: Buffer) -> None:
        """Refuse an unfinished head as early as llhttp would, looking at new bytes only."""
        limits = self._limits
        if len(partial) > limits.max_header_bytes + limits.max_target_bytes:
            raise _Reject(431, "request header section too large")
        scan = self._scan
        scan.check_chars(partial, 400)
        request_line_done = scan.lines > 0
        lines = scan.finished_lines(partial)
        if lines and not request_line_done:
            self._check_request_line(bytes(lines[0]))
            lines = lines[1:]
            request_line_done = True
        if lines:
            # Finished field lines: llhttp refuses a bad one before the head ends.
            _check_fields(lines, 400)
            scan.fields += len(lines)
            if scan.fields > limits.max_header_count:
                raise _Reject(431, "too many request headers")
        if request_line_done:
            return
        # The request line is unfinished: llhttp refuses an unknown method at its first
        # wrong byte and counts the target as it streams.
        space = partial.find(b" ", 0, 32)
        if space >= 0:
            known = bytes(partial[:space]) in _METHODS
        else:
            known = len(partial) < 32 and any(method.startswith(partial) for method in _METHODS)
        if not known:
            raise _Reject(400, "unknown method")
        target_end = partial.find(b" ", space + 1)
        if (len(partial) if target_end < 0 else target_end) - space - 1 > limits.max_target_bytes:
            raise _Reject(414, "request target too long")

    def _read_body(self, data: Buffer, events: list[Event]) -> int:
        assert self._body is not None and self._connection is not None
        used, done = _feed_body(self._body, self._connection, data, events, 400)
        if done:
            self._body = None
            self._connection = None
            self._closing = not self._request_keep_alive
        return used


class H11ClientCodec(h1_framing.RequestFraming):
    """Client side: frames a request upstream, parses the response (1xx and 101 included)."""

    __slots__ = (
        "_body",
        "_buffer",
        "_close_delimited",
        "_closing",
        "_connection",
        "_method",
        "_scan",
    )

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._scan = _HeadScan()
        self._connection: h11.Connection | None = None
        self._body: _Body | None = None
        self._method = b""
        self._close_delimited = False
        self._closing = False

    # -- framing -------------------------------------------------------------------

    def send_request_head(self, head: RequestHead) -> bytes:
        self._begin_request(head)
        self._method = head.method
        # h11 reads a response only after it has seen the request it answers; only the
        # method and the upgrade proposal matter to how it reads the response.
        connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=_H11_BUFFER)
        proposal: list[tuple[bytes, bytes]] = [(b"host", b"upstream")]
        if head.upgrade is not None or any(name == b"upgrade" for name, _ in head.headers):
            proposal.append((b"upgrade", b"proposed"))
        connection.send(h11.Request(method=head.method, target=b"/", headers=proposal))
        connection.send(h11.EndOfMessage())
        self._connection = connection
        return h1_framing.request_head(
            head.method,
            head.target,
            head.headers,
            head.content_length,
            head.chunked,
            self._field_lines,
        )

    # -- parsing -------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._upgraded:
            return [Data(H1_STREAM, data)] if data else []
        buffer: Buffer = data
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        events: list[Event] = []
        try:
            while buffer and not self._upgraded:
                if self._complete:
                    if buffer.lstrip(_LINE_ENDS):
                        raise _Reject(502, "upstream sent data with no request outstanding")
                    buffer = b""
                    break
                if self._closing and buffer.lstrip(_LINE_ENDS):
                    raise _Reject(502, "upstream sent data after connection: close")
                if self._body is None:
                    used = self._read_head(buffer, events)
                else:
                    used = self._read_body(buffer, events)
                if not used:
                    break
                buffer = buffer[used:]
        except _Reject as reject:
            return self._fail(events, reject.reason)
        except h11.ProtocolError as error:
            return self._fail(events, f"h11: {error}")
        _keep(self, buffer)
        return events

    def _fail(self, events: list[Event], reason: str) -> list[Event]:
        self._failed = True
        self._buffer = bytearray()
        events.append(ProtocolError(H1_STREAM, 502, f"upstream: {reason}"))
        return events

    def connection_closed(self) -> list[Event]:
        if self._complete or self._failed or self._upgraded:
            return []
        self._failed = True
        connection = self._connection
        if self._body is not None and self._close_delimited and connection is not None:
            connection.receive_data(b"")
            events: list[Event] = []
            if _drain(connection, events):
                self._complete = True
                return events
        return [ProtocolError(H1_STREAM, 502, "upstream connection closed before response end")]

    def _read_head(self, data: Buffer, events: list[Event]) -> int:
        skipped = _skip_line_ends(data)
        if skipped:
            return skipped
        scan = self._scan
        end = data.find(_HEAD_END, max(scan.lines - 2, 0))
        if end < 0:
            # llhttp refuses a start that cannot become `HTTP/` at once.
            if not _HTTP_NAME.startswith(data[:5]) or len(data) > _MAX_RESPONSE_HEAD:
                raise _Reject(502, "not an HTTP/1 response")
            self._check_status_line(data)
            return 0
        end += 4
        if end > _MAX_RESPONSE_HEAD:
            raise _Reject(502, "response head too large")
        head = bytes(data[:end])
        self._check_status_line(head[:-2])
        self._scan = _HeadScan()
        lines = head[:-4].split(_LINE_ENDS)
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise _Reject(502, "invalid status line")
        content_length, chunked = _check_fields(lines[1:], 502)
        connection = self._connection
        assert connection is not None
        # The reason phrase is not used (RFC 9112 section 4): h11 gets a plain one.
        connection.receive_data(
            b"HTTP/%s %s OK\r\n" % status_line.groups() + head[len(lines[0]) + 2 :]
        )
        response = connection.next_event()
        if not isinstance(response, (h11.InformationalResponse, h11.Response)):
            raise _Reject(502, "no response in head")
        status = response.status_code
        version = response.http_version
        if version not in _VERSIONS:
            raise _Reject(502, "unsupported HTTP version")
        if not 100 <= status <= 599:
            raise _Reject(502, "status code out of range")
        headers, _ = _h11_headers(response.headers)
        bodiless = status < 200 or status in (204, 304) or self._method == b"HEAD"
        needs_eof = not bodiless and content_length is None and not chunked
        keep_alive = _keep_alive(version, headers, needs_eof)
        if status == 101 and not (
            any(name == b"upgrade" for name, _ in headers)
            and b"upgrade" in _connection_tokens(headers)
        ):
            # RFC 9110 section 7.8 (and llhttp, which stops on such a 101).
            raise _Reject(502, "101 without Upgrade and Connection: upgrade")
        events.append(
            ResponseHead(
                H1_STREAM,
                status,
                _lifted(headers),
                b"",
                version,
                keep_alive,
                content_length,
                chunked,
            )
        )
        if status == 101 or (self._method == b"CONNECT" and 200 <= status < 300):
            # h11 switched protocols (it refuses a 101 nobody asked for).
            if connection.next_event() is not h11.PAUSED:
                raise _Reject(502, "h11 did not switch protocols")
            self._upgraded = True
            events.append(Upgraded(H1_STREAM, bytes(data[end:])))
            return len(data)
        if status < 200:
            if not keep_alive:
                # llhttp takes a 1xx with `Connection: close` as the last message.
                self._closing = True
            return end
        self._keep_alive = keep_alive
        if bodiless or content_length == 0:
            if not _drain(connection, events):
                raise _Reject(502, "h11 did not end a response without a body")
            self._complete = True
            return end
        self._close_delimited = needs_eof
        # A close-delimited body has no end on the wire; the guard never ends it.
        limit = 2**63 if needs_eof else content_length
        self._body = _Body(None if chunked else limit, 502, _MAX_RESPONSE_HEAD, _MAX_RESPONSE_HEAD)
        return end

    def _check_status_line(self, head: Buffer) -> None:
        """Bare CR/LF anywhere; control bytes only after the status line.

        llhttp takes any byte but CR and LF in a reason phrase (which is never used).
        """
        scan = self._scan
        line_end = head.find(b"\n")
        if line_end < 0:
            if head.find(b"\r", scan.chars, len(head) - 1) >= 0:
                raise _Reject(502, "bare CR in the status line")
            scan.chars = max(len(head) - 1, 0)
            return
        if head[line_end - 1] != 0x0D or head.find(b"\r", scan.chars, line_end - 1) >= 0:
            raise _Reject(502, "bare CR or LF in the status line")
        scan.check_chars(head, 502, line_end + 1)
        scan.lines = line_end + 1

    def _read_body(self, data: Buffer, events: list[Event]) -> int:
        assert self._body is not None and self._connection is not None
        used, done = _feed_body(self._body, self._connection, data, events, 502)
        if done:
            self._body = None
            self._complete = True
        return used
