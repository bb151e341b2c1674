"""The HTTP/1.1 server codec on llhttp: a client's pipelined requests in, responses framed
for that client's version (`h1_framing.ResponseFraming`).

A request whose head is whole in the read it begins in is parsed by the quiet parser,
its fields, target and end read off the bytes; the read is cut where each such request
ends. Anything else goes to the field parser (`h1_llhttp`). A read that begins with the
connection's last request head again, one llhttp accepted, without a body and keeping
the connection open, is answered from what was made of it then (`_repeat_request`).
"""

from __future__ import annotations

from typing import Any, Final

import httptools

from proxy.core.codecs import h1_framing
from proxy.core.codecs.base import CodecLimits
from proxy.core.codecs.h1_fields import (
    CONNECTION,
    CONTENT_LENGTH,
    EXPECT,
    HOST,
    TRANSFER_ENCODING,
    UPGRADE,
    Field,
    RepeatedFields,
    framing_field,
)
from proxy.core.codecs.h1_llhttp import (
    HEAD_END,
    RELEASED_REQUEST_PARSER,
    VERSIONS,
    FieldCallbacks,
    end_of_message,
)
from proxy.core.headers import is_plain_connection_value
from proxy.core.messages import (
    H1_STREAM,
    HOP_BY_HOP_FIELDS,
    NO_FIELDS,
    Data,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    Upgraded,
)


class _Oversized(Exception):
    """Raised inside a parser callback to stop parsing; carries the status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# httptools' get_http_version() formats a str ("{}.{}".format, about 2,200 instructions,
# twice a proxied request). When a message's first line is known to start at the start
# of a read, the version is read from those bytes instead; anything else asks httptools.
_REQUEST_LINE_END: Final = b" HTTP/1.1\r\n"
_GET: Final = b"GET"
_GET_SP: Final = b"GET "
_HTTP_11: Final = b" HTTP/1.1"
_HTTP_10: Final = b" HTTP/1.0"


def _holds_at(data: bytes, offset: int, expected: bytes) -> bool:
    """`data.startswith(expected, offset)`: compiled, a slice and a compare, where the
    two-argument startswith is a Python-level method call (about 500 instructions)."""
    return data[offset : offset + len(expected)] == expected


class _KeptRequest:
    """The last request head `_read_request_fields` read off the bytes and what it made
    of it, for the same head again; and once llhttp has accepted it, the request to
    repeat for it (`LlhttpServerCodec._repeat_request`): a private copy, as the event
    handed on may be changed."""

    __slots__ = (
        "connection_named",
        "content_length",
        "expect_continue",
        "fields",
        "head",
        "head_size",
        "headers",
        "hosts",
        "repeat",
        "target",
    )

    head: bytes
    target: bytes
    headers: list[Any]
    head_size: int
    hosts: int
    content_length: int | None
    expect_continue: bool
    fields: int
    connection_named: bool
    repeat: RequestHead | None

    def __init__(self) -> None:
        self.keep(b"", b"", [], 0, 0, None, False, 0, False)

    def keep(
        self,
        head: bytes,
        target: bytes,
        headers: list[Any],
        head_size: int,
        hosts: int,
        content_length: int | None,
        expect_continue: bool,
        fields: int,
        connection_named: bool,
    ) -> None:
        """A new head's facts, in place (not a new record: one a request when heads
        differ); nothing to repeat until llhttp accepts it."""
        self.head = head
        self.target = target
        self.headers = headers
        self.head_size = head_size
        self.hosts = hosts
        self.content_length = content_length
        self.expect_continue = expect_continue
        self.fields = fields
        self.connection_named = connection_named
        self.repeat = None


class LlhttpServerCodec(h1_framing.ResponseFraming):
    """Server side: parses pipelined requests, frames responses for this client's version."""

    __slots__ = (
        "_body_left",
        "_closing",
        "_connection_named",
        "_content_length",
        "_events",
        "_expect_continue",
        "_field_parser",
        "_fields",
        "_framing_error",
        "_head_bytes",
        "_head_done",
        "_head_end",
        "_head_size",
        "_headers",
        "_hosts",
        "_in_message",
        "_kept",
        "_limits",
        "_line_read",
        "_max_count",
        "_messages_ended",
        "_names",
        "_parser",
        "_quiet_parser",
        "_read",
        "_read_fresh",
        "_request_chunked",
        "_target",
        "_trailers",
        "_upgrade",
    )

    def __init__(self, limits: CodecLimits | None = None) -> None:
        super().__init__()
        self._limits = limits or CodecLimits()
        self._max_count = self._limits.max_header_count
        # Per-message facts gathered from its fields (one pass, in _take).
        self._head_size = 0
        self._hosts = 0
        self._content_length: int | None = None
        self._framing_error = False
        self._expect_continue = False
        self._upgrade: bytes | None = None
        self._fields = 0
        self._connection_named = False  # Connection or Proxy-Connection: ask llhttp
        self._names = RepeatedFields()
        # Two parsers, as the client codec's: the quiet one (made on the codec, no field
        # callbacks) parses each request whose head is whole in the read it begins in,
        # its fields read off the bytes (`_read_request_head`); the field parser (made
        # when first needed) parses from the first request that is not (a head split over
        # reads, chunked framing with its trailers, Upgrade and CONNECT) to the end of the
        # read. A read is cut where each request ends, so the quiet parser is never
        # handed a request it has not had read for it.
        # No on_body for it either: httptools would copy each body slice it reports into
        # new bytes; `_feed_quiet_head` and `_feed_quiet_body` cut the body from the reads.
        self._quiet_parser = httptools.HttpRequestParser(
            FieldCallbacks(None, None, None, self.on_headers_complete, None, None)
        )
        self._field_parser: Any = None
        self._parser = self._quiet_parser  # the one holding the message in progress
        self._body_left = 0  # what is left of the quiet parser's request body
        self._head_end = 0  # where the head `_read_request_head` read ends in its read
        # The last request closes the connection: llhttp refuses anything after it, so
        # the parser that read it reads on (a fresh one would take it as a new request).
        self._closing = False
        self._kept = _KeptRequest()
        self._events: list[Event] = []
        self._headers: list[Any] = []  # field pairs, as Field.pair
        self._trailers: Headers = NO_FIELDS
        self._target = b""
        self._head_bytes = 0
        self._head_done = True
        self._messages_ended = 0
        self._request_chunked = False
        # The read being parsed, and whether the parser was between messages when it
        # began (so the first message it begins starts at its first byte, unless llhttp
        # skipped empty lines there); the read a message's request line began in.
        self._read = b""
        self._read_fresh = False
        self._line_read: bytes | None = None
        self._in_message = False

    # -- parsing -------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._upgraded:
            return [Data(H1_STREAM, data)] if data else []
        ended = self._messages_ended
        try:
            parser = self._parser
            if not self._in_message and not self._closing:
                self._feed_messages(data, 0)
            elif parser is self._quiet_parser and self._in_message:
                self._feed_quiet_body(data)
            else:
                self._feed(parser, data, False)
            self._read = b""  # not kept past the read (a message's first one may be)
            if not self._head_done:
                # httptools holds an unfinished header line itself, out of our callbacks'
                # sight; bound how much a client can make it hold (one read at most past it).
                if self._messages_ended == ended:
                    self._head_bytes += len(data)  # the whole read is head (or CR/LF)
                else:
                    # The head began after a message that ended in this read (a large
                    # upload, many pipelined requests): counting the whole read would
                    # refuse a small head; count what the callbacks have seen of it.
                    self._head_bytes = self._head_size + len(self._target)
                limits = self._limits
                if self._head_bytes > limits.max_header_bytes + limits.max_target_bytes:
                    return self._fail(431, "request header section too large")
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]  # into the bytes the parser was handed
            self._upgraded = True
            self._events.append(Upgraded(H1_STREAM, self._read[offset:]))
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

    def _feed(self, parser: Any, data: bytes, fresh: bool) -> None:
        """Hand `data` to `parser`; `fresh`: a message may begin at its first byte."""
        self._read = data
        self._read_fresh = fresh
        parser.feed_data(data)

    def _feed_messages(self, data: bytes, start: int) -> None:
        """Parse the read from `start`, where a message may begin: each request whose
        head is whole here by the quiet parser, cut off where it ends; from the first
        that is not, the rest by the field parser."""
        size = len(data)
        quiet = self._quiet_parser
        while start < size:
            kept = self._kept
            repeat = kept.repeat
            if repeat is not None and start == 0 and data.startswith(kept.head):
                self._repeat_request(repeat, kept.headers)
                start = len(kept.head)
                continue
            end = self._read_request_head(data, start)
            if end < 0:
                self._parser = self._fields_parser()
                self._feed(self._parser, data[start:] if start else data, True)
                return
            self._parser = quiet
            head = self._head_end - start
            if end >= size:  # the usual: the request ends with the read, or its body goes on
                self._body_left = end - size
                self._feed_quiet_head(data[start:] if start else data, head)
                if end == size:
                    self.message_complete()
                return
            self._feed_quiet_head(data[start:end], head)
            self.message_complete()
            if self._closing:
                self._feed(quiet, data[end:], True)  # for llhttp to refuse
                return
            start = end

    def _repeat_request(self, repeat: RequestHead, headers: list[Any]) -> None:
        """The connection's last request head again, the very bytes llhttp accepted the
        last time, with no body and the connection kept open: what llhttp would say of
        them is what it said then, and the quiet parser is between messages, as it would
        be after parsing them again (about 2,500 instructions saved a request). So the
        request is the one made then, with a list of fields of its own."""
        self._parser = self._quiet_parser
        self._events.append(
            RequestHead(
                H1_STREAM,
                repeat.method,
                repeat.target,
                headers[:],
                repeat.http_version,
                True,
                repeat.content_length,
                False,
                repeat.expect_continue,
                None,
                repeat.fields,
            )
        )
        self._trailers = NO_FIELDS
        self.message_complete()

    def _feed_quiet_head(self, data: bytes, head: int) -> None:
        """A request `_read_request_head` read, from its first byte, to the quiet parser,
        which calls no callback at its start: the message begins here. What follows its
        `head` bytes is body, passed on once llhttp has accepted it."""
        self._line_read = data
        self._in_message = True
        self._target = self._kept.target
        self._head_done = False
        self._head_bytes = 0
        self._feed(self._quiet_parser, data, False)
        if len(data) > head:
            self._events.append(Data(H1_STREAM, data[head:]))

    def _feed_quiet_body(self, data: bytes) -> None:
        """More of the quiet parser's request body: the request ends where its
        Content-Length says (the quiet parser calls no callback there); what follows
        begins the next. A read that is all body is passed on as it came, not copied."""
        left = self._body_left
        parser = self._quiet_parser
        if len(data) < left:
            self._body_left = left - len(data)
            self._feed(parser, data, False)
            self._events.append(Data(H1_STREAM, data))
            return
        self._body_left = 0
        ours = data[:left] if len(data) > left else data
        self._feed(parser, ours, False)
        if left:
            self._events.append(Data(H1_STREAM, ours))
        self.message_complete()
        if len(data) > left:
            if self._closing:
                self._feed(parser, data[left:], True)  # for llhttp to refuse
            else:
                self._feed_messages(data, left)

    def _fields_parser(self) -> Any:
        parser = self._field_parser
        if parser is None:
            parser = self._field_parser = httptools.HttpRequestParser(
                FieldCallbacks(
                    self.message_begin,
                    self.url,
                    self.on_field,
                    self.on_headers_complete,
                    self.on_body,
                    self.message_complete,
                )
            )
        return parser
    def _read_request_head(self, data: bytes, start: int) -> int:
        """Take the fields of a request head that is whole in `data` from `start` straight
        off the bytes, for the quiet parser, and return where the request ends in
        `data`; -1 leaves it to the field parser.

        As for responses (LlhttpClientCodec._read_head), llhttp still checks every byte
        and nothing read here is used unless it accepts the head. The quiet parser takes
        only requests it can be cut after: a Content-Length body or none, no Upgrade and
        no CONNECT (llhttp stops at their head), and not more lines than the count limit
        (the field parser refuses those as it always did). A head equal to the
        connection's last, or the same fields after another request line, is found by a
        compare instead of a search (a `find` is about 900 instructions) and gives the
        same facts without a line read.
        """
        kept = self._kept
        if start == 0 and len(kept.head) and data.startswith(kept.head):
            self._restore_fields(kept)  # the last request's head again, request line and all
            end = len(kept.head)
        else:
            end = self._read_request_fields(data, start)
            if end < 0:
                return -1
        self._head_end = end
        length = self._content_length
        return end if length is None else end + length

    def _read_request_fields(self, data: bytes, start: int) -> int:
        """_read_request_head past its first compare: where the head ends, or -1.

        Each Python-level call on bytes (`find`, `split`) costs about 1,000
        instructions, so a head is found and cut with as few as can be: a read that ends
        with CRLF CRLF (a request without a body, nearly always) is split as it is, the
        head ending at its first empty line; otherwise one `find` for the end, then the
        split.
        """
        first = data[start]
        if first == 13 or first == 10:
            return -1  # empty lines before the request line: llhttp's to skip or refuse
        if first == 67 and _holds_at(data, start, b"CONNECT "):
            return -1
        if start == 0 and data.endswith(HEAD_END):
            lines = data[: len(data) - 4].split(b"\r\n")
            head_end = -2
            for index in range(len(lines)):
                size = len(lines[index])
                if not size:  # the head ended before (pipelined requests, or a body)
                    lines = lines[:index]
                    break
                head_end += size + 2
        else:
            head_end = data.find(HEAD_END, start) if start else data.find(HEAD_END)
            if head_end < 0:
                return -1
            lines = data[start:head_end].split(b"\r\n")
        if len(lines) > self._max_count + 1:
            return -1
        target = self._request_target(lines[0])
        if not len(target):
            return -1
        self._begin_fields()
        names = self._names
        for index in range(1, len(lines)):
            line = lines[index]
            field = names.line(line)
            if field is None:
                return -1
            self._take(field)
        if self._request_chunked or self._framing_error or self._upgrade is not None:
            return -1
        end = head_end + 4
        self._kept.keep(
            data[start:end],
            target,
            self._headers[:],
            self._head_size,
            self._hosts,
            self._content_length,
            self._expect_continue,
            self._fields,
            self._connection_named,
        )
        return end

    def _request_target(self, line: bytes) -> bytes:
        """The target of a request line laid out `method SP target SP HTTP/1.x`; b""
        leaves the request to the field parser (and its on_url). llhttp accepts no SP
        inside a target, so in a line it accepts, one without SP at either end is the
        one it reports."""
        if not (line.endswith(_HTTP_11) or line.endswith(_HTTP_10)):
            return b""
        version = len(line) - len(_HTTP_11)
        space = 0
        while space < version and line[space] != 32:  # after the method, a few bytes
            space += 1
        if space + 1 >= version:
            return b""  # no SP before the version (a compiled slice must not run backwards)
        target = line[space + 1 : version]
        size = len(target)
        if target[0] == 32 or target[size - 1] == 32:
            return b""
        if size > self._limits.max_target_bytes:
            return b""  # the field parser answers 414, as always
        return target

    def _restore_fields(self, kept: _KeptRequest) -> None:
        """The facts of the fields `_read_request_fields` read last, again."""
        self._headers = kept.headers[:]  # the head's list is handed on
        self._trailers = NO_FIELDS
        self._head_size = kept.head_size
        self._hosts = kept.hosts
        self._content_length = kept.content_length
        self._request_chunked = False
        self._framing_error = False
        self._expect_continue = kept.expect_continue
        self._upgrade = None
        self._fields = kept.fields
        self._connection_named = kept.connection_named

    def release(self) -> None:
        self._failed = True  # nothing is parsed after this
        self._parser = self._quiet_parser = self._field_parser = RELEASED_REQUEST_PARSER
        self._events = []

    def _fail(self, status: int, reason: str) -> list[Event]:
        self._failed = True
        events = self._events
        events.append(ProtocolError(H1_STREAM, status, reason))
        self._events = []
        return events

    def message_begin(self) -> None:
        """A message begins in the field parser (its on_message_begin)."""
        self._line_read = self._read if self._read_fresh else None
        self._read_fresh = False
        self._in_message = True
        self._target = b""
        self._head_done = False
        self._head_bytes = 0
        self._begin_fields()

    def _begin_fields(self) -> None:
        self._names.begin()
        self._headers = []
        self._trailers = NO_FIELDS
        self._head_size = 0
        self._hosts = 0
        self._content_length = None
        self._request_chunked = False
        self._framing_error = False
        self._expect_continue = False
        self._upgrade = None
        self._fields = 0
        self._connection_named = False

    def url(self, url: bytes) -> None:
        """The field parser's on_url: the request target, perhaps in pieces."""
        # Nearly always in one piece: taken as it is (a compiled += copies even onto b"").
        self._target = self._target + url if len(self._target) else url
        if len(self._target) > self._limits.max_target_bytes:
            raise _Oversized(414, "request target too long")

    def on_field(self, name: bytes, value: bytes) -> None:
        """A field reported by the field parser (FieldCallbacks)."""
        # llhttp has already refused CR, LF and NUL in values and whitespace before
        # the colon.
        field = self._names.field(name, value)
        if self._head_done:  # llhttp reports the chunked trailer section here
            name = field.name
            value = field.value
            if field.kind in (CONTENT_LENGTH, TRANSFER_ENCODING):
                # RFC 9110 section 6.5.1: framing is decided by the head; a trailer that
                # claims it is refused, as the h11 codec does.
                raise _Oversized(400, "framing field in trailers")
            if self._trailers is NO_FIELDS:
                self._trailers = []
            self._trailers.append((name, value))
            self._head_size += len(name) + len(value) + 4
            if len(self._trailers) > self._max_count:
                raise _Oversized(431, "too many trailer fields")
            if self._head_size > self._limits.max_header_bytes:
                raise _Oversized(431, "trailer section too large")
            return
        self._take(field)

    def _take(self, field: Field) -> None:
        """A head's field into its facts: what a proxy must know is picked out in one pass."""
        value = field.value
        kind = field.kind
        self._head_size += len(field.name) + len(value) + 4
        if kind < CONTENT_LENGTH:
            if kind == HOP_BY_HOP_FIELDS:
                self._connection_named = True  # Proxy-Connection among them: llhttp reads it
            self._fields |= kind
            self._headers.append(field.pair)
        elif kind in (CONTENT_LENGTH, TRANSFER_ENCODING):
            self._content_length, self._request_chunked, refused = framing_field(
                kind, value, self._content_length, self._request_chunked
            )
            if refused:
                self._framing_error = True
        elif kind == CONNECTION and is_plain_connection_value(value):
            self._connection_named = True  # lifted into keep_alive: llhttp reads it
        else:
            if kind == HOST:
                self._hosts += 1
            elif kind == EXPECT:
                self._expect_continue = value.lower() == b"100-continue"
            else:  # Upgrade, or a Connection naming more than keep-alive or close
                if kind == UPGRADE:
                    self._upgrade = value
                else:
                    self._connection_named = True
                self._fields |= HOP_BY_HOP_FIELDS
            self._headers.append(field.pair)
        if len(self._headers) > self._max_count:
            raise _Oversized(431, "too many request headers")

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._head_done = True
        if self._head_size + len(self._target) > self._limits.max_header_bytes:
            raise _Oversized(431, "request header section too large")
        self._head_size = 0  # from here on it counts the trailer section
        if self._framing_error:
            raise _Oversized(400, "invalid or conflicting content-length / transfer-encoding")
        hosts = self._hosts
        headers = self._headers
        content_length = self._content_length
        chunked = self._request_chunked
        line = self._line_read
        self._line_read = None
        # The request line is `method SP target SP HTTP/1.1 CRLF` at the read's start
        # exactly when these bytes are where that layout puts them (a target holds no
        # SP, so no other layout lines them up); otherwise httptools says. A GET is
        # read off the same bytes (httptools builds the method's bytes on each ask).
        target_end = len(self._target) + 1
        if (
            line is not None
            and line.startswith(_GET_SP)
            and _holds_at(line, len(_GET) + target_end, _REQUEST_LINE_END)
        ):
            method = _GET
            http_version = "1.1"
        else:
            method = parser.get_method()
            if (
                line is not None
                and _holds_at(line, len(method) + target_end, _REQUEST_LINE_END)
                and line.startswith(method)
            ):
                http_version = "1.1"
            else:
                http_version = parser.get_http_version()
        if http_version not in VERSIONS:
            raise _Oversized(400, "unsupported HTTP version")
        # RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without
        # a Host, and to any request with more than one (two hosts: two routing answers).
        if hosts > 1 or (hosts == 0 and http_version == "1.1"):
            raise _Oversized(400, "missing or repeated host")
        version = b"1.1" if http_version == "1.1" else http_version.encode()
        # Whether this connection stays open is decided per answered request (in
        # send_response_head): a pipelined request parsed later must not change it.
        if http_version == "1.1" and not self._connection_named:
            keep_alive = True  # llhttp's rule when no Connection field could say close
        else:
            keep_alive = parser.should_keep_alive()
        self._closing = not keep_alive
        upgrade = self._upgrade if self._upgrade is not None and parser.should_upgrade() else None
        expect_continue = self._expect_continue
        self._events.append(
            RequestHead(
                H1_STREAM,
                method,
                self._target,
                headers,
                version,
                keep_alive,
                content_length,
                chunked,
                expect_continue,
                upgrade,
                self._fields,
            )
        )
        if parser is self._quiet_parser and keep_alive and not content_length:
            # The quiet parser's head is the kept one: llhttp has accepted it.
            self._kept.repeat = RequestHead(
                H1_STREAM,
                method,
                self._target,
                NO_FIELDS,
                version,
                True,
                content_length,
                False,
                expect_continue,
                None,
                self._fields,
            )

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(H1_STREAM, body))

    def message_complete(self) -> None:
        """A message ends: the field parser's on_message_complete, or the framing the
        codec read for the quiet parser's."""
        self._in_message = False
        self._messages_ended += 1
        self._events.append(end_of_message(self._trailers))
