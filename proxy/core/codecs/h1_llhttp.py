"""HTTP/1.1 codec on llhttp (through httptools): the default, and the cheapest per request.

llhttp parses in C and calls back per element; this adapter turns those callbacks
into the neutral events of `proxy.core.messages` and frames outgoing messages with
`h1_framing`. It is the only module that imports httptools.
"""

from __future__ import annotations

from typing import Any, Final

import httptools

from proxy.core.codecs import h1_framing
from proxy.core.codecs.base import CodecLimits
from proxy.core.headers import NOTED_FIELDS, is_plain_connection_value
from proxy.core.messages import (
    H1_STREAM,
    HOP_BY_HOP_FIELDS,
    NO_FIELDS,
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


# llhttp also parses HTTP/0.9 and HTTP/2.0 start lines; neither can be relayed as HTTP/1.
_VERSIONS: Final = ("1.1", "1.0")
# httptools' get_http_version() formats a str ("{}.{}".format, about 2,200 instructions,
# twice a proxied request). When a message's first line is known to start at the start
# of a read, the version is read from those bytes instead; anything else asks httptools.
_REQUEST_LINE_END: Final = b" HTTP/1.1\r\n"
_GET: Final = b"GET"
_GET_SP: Final = b"GET "
_STATUS_LINE_START: Final = b"HTTP/1.1 "
_HEAD_END: Final = b"\r\n\r\n"
_HTTP_11: Final = b" HTTP/1.1"
_HTTP_10: Final = b" HTTP/1.0"


def _holds_at(data: bytes, offset: int, expected: bytes) -> bool:
    """`data.startswith(expected, offset)`: compiled, a slice and a compare, where the
    two-argument startswith is a Python-level method call (about 500 instructions)."""
    return data[offset : offset + len(expected)] == expected


def _keep_alive(version: str, headers: Headers, connection: bytes) -> bool:
    """llhttp's keep-alive rule for a message that does not need EOF to end.

    `connection` is the plain Connection values the codec lifted out of `headers`,
    comma-joined.
    """
    tokens = [token.lower() for token in connection.split(b",")]
    for name, value in headers:
        if name == b"connection":
            tokens += [token.strip(b" \t").lower() for token in value.split(b",")]
    return b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens


def _keeps_alive(connection: bytes) -> bool:
    """Whether the plain Connection values lifted from an HTTP/1.1 response leave it
    kept alive: none, or keep-alive (compared, not hashed into a set: the value is new
    bytes on every response)."""
    return not connection or connection == b"keep-alive" or connection == b"Keep-Alive"


def _check_switch(proposed: bool, request_headers: Headers, headers: Headers) -> None:
    """Refuse a 101 unless the request proposed an upgrade and the response names one.

    Only a request carrying Upgrade can be switched, else the tunnel would carry what
    the client sends next as raw bytes; and RFC 9110 section 7.8 makes a 101 send
    Upgrade with `Connection: upgrade` (without it llhttp stops with a bare error).
    """
    if not (proposed or any(name == b"upgrade" for name, _ in request_headers)):
        raise ValueError("101 to a request that proposed no upgrade")
    if not any(name == b"upgrade" for name, _ in headers) or b"upgrade" not in [
        token.strip(b" \t").lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    ]:
        raise ValueError("101 without Upgrade and Connection: upgrade")


# What the codecs do with a field, by lower-cased name: the noted kinds are the bits of
# messages.HOP_BY_HOP_FIELDS and friends (appended, and noted in the head's `fields`);
# the kinds from _CONTENT_LENGTH up are acted on while parsing.
_PLAIN: Final = 0
_CONTENT_LENGTH: Final = 8
_TRANSFER_ENCODING: Final = 9
_HOST: Final = 10
_EXPECT: Final = 11
_UPGRADE: Final = 12
_CONNECTION: Final = 13
_KINDS: Final[dict[bytes, int]] = {
    **NOTED_FIELDS,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"host": _HOST,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
    b"connection": _CONNECTION,
}

# Header names as llhttp reports them -> (lower-cased, kind), worked out once: most
# peers send the same few names on every message, so a repeat costs one dict lookup.
_FIELDS: Final[dict[bytes, tuple[bytes, int]]] = {}
_FIELDS_MAX: Final = 1024  # bounded: a client inventing names cannot grow it without end


def _field(name: bytes) -> tuple[bytes, int]:
    known = _FIELDS.get(name)
    if known is None:
        lowered = name.lower()
        known = (lowered, _KINDS.get(lowered, _PLAIN))
        if len(_FIELDS) < _FIELDS_MAX:
            _FIELDS[name] = known
    return known


_FIELDS_REMEMBERED: Final = 64  # per connection; later fields of a long head go by _field


class _Field:
    """A field as llhttp reported it, and what the codecs make of it.

    `pair` is (`name`, `value`) as the one tuple object the head's list holds: typed
    `object` so the compiled code hands it on as it is (a `tuple[bytes, bytes]` value
    is unboxed by mypyc and boxed into a new tuple wherever it is stored).
    """

    __slots__ = ("kind", "line", "name", "pair", "sent_name", "sent_value", "value")

    def __init__(self, sent_name: bytes, sent_value: bytes, line: bytes = b"") -> None:
        self.line = line  # the whole field line, when read off the bytes (_RepeatedFields.line)
        self.sent_name = sent_name
        self.sent_value = sent_value
        self.name, self.kind = _field(sent_name)
        self.value = _trim(sent_value)
        self.pair: object = (self.name, self.value)


class _RepeatedFields:
    """The fields of a connection's previous message, by position.

    Most peers send the same fields in the same order on every message of a
    connection, so the name and value at each position are first compared with the
    ones before them there (a memcmp each) before `_field` hashes the name: about 150
    instructions a field instead of 500. A field that repeats exactly is handed back
    as the same pair object, which saves making and freeing a tuple and lets a head
    built from it find its repeated start by identity (h1_framing.FieldLines).
    """

    __slots__ = ("_entries", "_position")

    def __init__(self) -> None:
        self._entries: list[_Field] = []
        self._position = 0

    def begin(self) -> None:
        """A new message: its first field is compared with the last message's first."""
        self._position = 0

    def field(self, name: bytes, value: bytes) -> _Field:
        """The field at the next position (read at once: the next message reuses it)."""
        position = self._position
        self._position = position + 1
        entries = self._entries
        if position < len(entries):
            entry = entries[position]
            if entry.sent_name == name:
                if entry.sent_value != value:
                    entry.line = b""  # no longer the line it was read from
                    entry.sent_value = value
                    entry.value = _trim(value)
                    entry.pair = (entry.name, entry.value)
                return entry
        return self._keep(position, _Field(name, value))

    def line(self, line: bytes) -> _Field | None:
        """The field at the next position from its whole line (`name:value`, without the
        CRLF), as read straight off a head; None for a line with no name and colon,
        which llhttp refuses. A line equal to the one at this position before is the
        same entry: one compare for the whole field."""
        position = self._position
        self._position = position + 1
        entries = self._entries
        if position < len(entries):
            entry = entries[position]
            if entry.line == line:
                return entry
        # Compiled loops over a name and the OWS after it: `find` and `lstrip` are
        # Python-level calls (about 700 instructions each).
        size = len(line)
        colon = 0
        while colon < size and line[colon] != 58:
            colon += 1
        if colon == 0 or colon == size:
            return None
        begin = colon + 1
        while begin < size and (line[begin] == 32 or line[begin] == 9):
            begin += 1  # llhttp reports the value without its leading OWS
        return self._keep(position, _Field(line[:colon], line[begin:], line))

    def _keep(self, position: int, entry: _Field) -> _Field:
        """`entry` as the one at `position`, for the next message to compare with."""
        entries = self._entries
        if position < len(entries):
            entries[position] = entry
        elif position < _FIELDS_REMEMBERED:
            entries.append(entry)
        return entry


def _framing_field(
    kind: int, value: bytes, length: int | None, chunked: bool
) -> tuple[int | None, bool, bool]:
    """A Content-Length or Transfer-Encoding field taken into the message's framing.

    Returns (length, chunked, refused). Refused: a length that is not a number or
    differs from a repeat's, or a coding other than one plain `chunked` (llhttp lets
    `gzip, chunked` by, and re-framing the body would drop the coding). llhttp has
    refused a length with anything but digits around optional whitespace, and _trim
    took the trailing whitespace off, so the digits are read in a compiled loop
    (strip and isdigit were Python-level method calls, about 700 instructions).
    """
    if kind == _TRANSFER_ENCODING:
        return length, True, chunked or value.strip().lower() != b"chunked"
    declared = 0 if len(value) else -1
    for index in range(len(value)):
        digit = value[index] - 48
        if not 0 <= digit <= 9:
            declared = -1
            break
        declared = declared * 10 + digit
    if declared < 0 or (length is not None and length != declared):
        return length, chunked, True
    return declared, chunked, False


def _trim(value: bytes) -> bytes:
    """The value without trailing SP/HTAB (RFC 9110 section 5.5), which llhttp keeps.

    Checks the last byte first: values rarely end in whitespace, and the check is
    cheaper than calling `rstrip`. The length, not the truth of `value`: mypyc tests a
    bytes object's truth with a generic call.
    """
    size = len(value)
    if size and value[size - 1] in (32, 9):
        return value.rstrip(b" \t")
    return value


# The end of a message without trailers (nearly every one), made once: events are read,
# never changed, so one object serves every message (about 240 instructions to make
# and free one, twice a request).
_END: Final = EndOfMessage(H1_STREAM, NO_FIELDS)


def _end(trailers: Headers) -> EndOfMessage:
    return _END if trailers is NO_FIELDS else EndOfMessage(H1_STREAM, trailers)


class _NoCallbacks:
    """The protocol of the parsers a released codec holds (below): it has no callbacks."""


class _FieldCallbacks:
    """The protocol a codec's field parser is made on: the codec's callbacks, with its
    `on_field` as `on_header`.

    httptools looks each callback up once, when a parser is made, and has llhttp report
    header fields only to a protocol with an `on_header` (about 900 instructions a field
    between llhttp, httptools and the codec). The codecs have none, so a parser made on
    the codec itself reports no fields: it serves the messages whose fields were read off
    the bytes, this one the others. Nor does a codec have `on_message_begin`,
    `on_message_complete` or `on_url` (about 300 instructions each): for the messages it
    reads off the bytes it knows where they begin and end, and the target.
    """

    __slots__ = (
        "on_body",
        "on_header",
        "on_headers_complete",
        "on_message_begin",
        "on_message_complete",
        "on_url",
    )

    def __init__(self, codec: LlhttpServerCodec | LlhttpClientCodec) -> None:
        self.on_body: object = codec.on_body
        self.on_header: object = codec.on_field
        self.on_headers_complete: object = codec.on_headers_complete
        self.on_message_begin: object = codec.message_begin
        self.on_message_complete: object = codec.message_complete
        # A response parser asks for on_status instead, which the client codec skips.
        self.on_url: object = codec.url if isinstance(codec, LlhttpServerCodec) else None


# A codec's parser holds the codec's bound callbacks, so the pair is a reference cycle
# that only the cycle collector frees, and an old connection's pair sits in the oldest
# generation until a full collection. On release a codec swaps its parser for one of
# these, which refer to nothing, and the pair is freed by reference counting at once.
_RELEASED_REQUEST_PARSER: Final = httptools.HttpRequestParser(_NoCallbacks())
_RELEASED_RESPONSE_PARSER: Final = httptools.HttpResponseParser(_NoCallbacks())


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
        "_head_size",
        "_headers",
        "_hosts",
        "_in_message",
        "_kept_connection_named",
        "_kept_content_length",
        "_kept_expect_continue",
        "_kept_fields",
        "_kept_head",
        "_kept_head_size",
        "_kept_headers",
        "_kept_hosts",
        "_kept_target",
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
        # Per-message facts gathered while headers arrive (one pass, in on_header).
        self._head_size = 0
        self._hosts = 0
        self._content_length: int | None = None
        self._framing_error = False
        self._expect_continue = False
        self._upgrade: bytes | None = None
        self._fields = 0
        self._connection_named = False  # Connection or Proxy-Connection: ask llhttp
        self._names = _RepeatedFields()
        # Two parsers, as the client codec's: the quiet one (made on the codec, no field
        # callbacks) parses each request whose head is whole in the read it begins in,
        # its fields read off the bytes (`_read_request_head`); the field parser (made
        # when first needed) parses from the first request that is not (a head split over
        # reads, chunked framing with its trailers, Upgrade and CONNECT) to the end of the
        # read. A read is cut where each request ends, so the quiet parser is never
        # handed a request it has not had read for it.
        self._quiet_parser = httptools.HttpRequestParser(self)
        self._field_parser: Any = None
        self._parser = self._quiet_parser  # the one holding the message in progress
        self._body_left = 0  # what is left of the quiet parser's request body
        # The last request closes the connection: llhttp refuses anything after it, so
        # the parser that read it reads on (a fresh one would take it as a new request).
        self._closing = False
        # The last request head `_read_request_fields` read, its target, and what it made
        # of its fields.
        self._kept_head = b""
        self._kept_target = b""
        self._kept_headers: list[Any] = []
        self._kept_head_size = 0
        self._kept_hosts = 0
        self._kept_content_length: int | None = None
        self._kept_expect_continue = False
        self._kept_fields = 0
        self._kept_connection_named = False
        self._events: list[Event] = []
        self._headers: list[Any] = []  # field pairs, as _Field.pair
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
            end = self._read_request_head(data, start)
            if end < 0:
                self._parser = self._fields_parser()
                self._feed(self._parser, data[start:] if start else data, True)
                return
            self._parser = quiet
            if end >= size:  # the usual: the request ends with the read, or its body goes on
                self._body_left = end - size
                self._feed_quiet_head(data[start:] if start else data)
                if end == size:
                    self.message_complete()
                return
            self._feed_quiet_head(data[start:end])
            self.message_complete()
            if self._closing:
                self._feed(quiet, data[end:], True)  # for llhttp to refuse
                return
            start = end

    def _feed_quiet_head(self, data: bytes) -> None:
        """A request `_read_request_head` read, from its first byte, to the quiet parser,
        which calls no callback at its start: the message begins here."""
        self._line_read = data
        self._in_message = True
        self._target = self._kept_target
        self._head_done = False
        self._head_bytes = 0
        self._feed(self._quiet_parser, data, False)

    def _feed_quiet_body(self, data: bytes) -> None:
        """More of the quiet parser's request body: the request ends where its
        Content-Length says (the quiet parser calls no callback there); what follows
        begins the next."""
        left = self._body_left
        parser = self._quiet_parser
        if len(data) < left:
            self._body_left = left - len(data)
            self._feed(parser, data, False)
            return
        self._body_left = 0
        self._feed(parser, data[:left] if len(data) > left else data, False)
        self.message_complete()
        if len(data) > left:
            if self._closing:
                self._feed(parser, data[left:], True)  # for llhttp to refuse
            else:
                self._feed_messages(data, left)

    def _fields_parser(self) -> Any:
        parser = self._field_parser
        if parser is None:
            parser = self._field_parser = httptools.HttpRequestParser(_FieldCallbacks(self))
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
        kept = self._kept_head
        if start == 0 and len(kept) and data.startswith(kept):
            self._restore_fields()  # the last request's head again, request line and all
            end = len(kept)
        else:
            end = self._read_request_fields(data, start)
            if end < 0:
                return -1
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
        if start == 0 and data.endswith(_HEAD_END):
            lines = data[: len(data) - 4].split(b"\r\n")
            head_end = -2
            for index in range(len(lines)):
                size = len(lines[index])
                if not size:  # the head ended before (pipelined requests, or a body)
                    lines = lines[:index]
                    break
                head_end += size + 2
        else:
            head_end = data.find(_HEAD_END, start) if start else data.find(_HEAD_END)
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
        self._kept_head = data[start:end]
        self._kept_target = target
        self._kept_headers = self._headers[:]
        self._kept_head_size = self._head_size
        self._kept_hosts = self._hosts
        self._kept_content_length = self._content_length
        self._kept_expect_continue = self._expect_continue
        self._kept_fields = self._fields
        self._kept_connection_named = self._connection_named
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

    def _restore_fields(self) -> None:
        """The facts of the fields `_read_request_fields` read last, again."""
        self._headers = self._kept_headers[:]  # the head's list is handed on
        self._trailers = NO_FIELDS
        self._head_size = self._kept_head_size
        self._hosts = self._kept_hosts
        self._content_length = self._kept_content_length
        self._request_chunked = False
        self._framing_error = False
        self._expect_continue = self._kept_expect_continue
        self._upgrade = None
        self._fields = self._kept_fields
        self._connection_named = self._kept_connection_named

    def release(self) -> None:
        self._failed = True  # nothing is parsed after this
        self._parser = self._quiet_parser = self._field_parser = _RELEASED_REQUEST_PARSER
        self._events = []

    def _fail(self, status: int, reason: str) -> list[Event]:
        self._failed = True
        self._keep_alive = False
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
        """A field reported by the field parser (_FieldCallbacks)."""
        # llhttp has already refused CR, LF and NUL in values and whitespace before
        # the colon.
        field = self._names.field(name, value)
        if self._head_done:  # llhttp reports the chunked trailer section here
            name = field.name
            value = field.value
            if field.kind in (_CONTENT_LENGTH, _TRANSFER_ENCODING):
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

    def _take(self, field: _Field) -> None:
        """A head's field into its facts: what a proxy must know is picked out in one pass."""
        value = field.value
        kind = field.kind
        self._head_size += len(field.name) + len(value) + 4
        if kind < _CONTENT_LENGTH:
            if kind == HOP_BY_HOP_FIELDS:
                self._connection_named = True  # Proxy-Connection among them: llhttp reads it
            self._fields |= kind
            self._headers.append(field.pair)
        elif kind in (_CONTENT_LENGTH, _TRANSFER_ENCODING):
            self._content_length, self._request_chunked, refused = _framing_field(
                kind, value, self._content_length, self._request_chunked
            )
            if refused:
                self._framing_error = True
        elif kind == _CONNECTION and is_plain_connection_value(value):
            self._connection_named = True  # lifted into keep_alive: llhttp reads it
        else:
            if kind == _HOST:
                self._hosts += 1
            elif kind == _EXPECT:
                self._expect_continue = value.lower() == b"100-continue"
            else:  # Upgrade, or a Connection naming more than keep-alive or close
                if kind == _UPGRADE:
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
        if http_version not in _VERSIONS:
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

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(H1_STREAM, body))

    def message_complete(self) -> None:
        """A message ends: the field parser's on_message_complete, or the framing the
        codec read for the quiet parser's."""
        self._in_message = False
        self._messages_ended += 1
        self._events.append(_end(self._trailers))


class LlhttpClientCodec(h1_framing.RequestFraming):
    """Client side: frames a request upstream, parses the response (1xx and 101 included)."""

    __slots__ = (
        "_body_left",
        "_carry",
        "_chunked",
        "_close_delimited",
        "_connect_request",
        "_connection",
        "_content_length",
        "_events",
        "_field_parser",
        "_fields",
        "_final_head",
        "_first_bytes",
        "_framing_error",
        "_head_request",
        "_headers",
        "_in_body",
        "_kept_body",
        "_kept_connection",
        "_kept_content_length",
        "_kept_fields",
        "_kept_head",
        "_kept_headers",
        "_names",
        "_parser",
        "_quiet_parser",
        "_request_headers",
        "_split_heads",
        "_trailers",
        "_upgrade_proposed",
    )

    def __init__(self) -> None:
        super().__init__()
        self._names = _RepeatedFields()
        # Two parsers. The quiet one, made on the codec itself, has llhttp report no
        # fields: it parses the responses whose head came whole in their first read, and
        # `_read_head` takes their fields off the bytes. The field parser (made when
        # first needed) reports each field, for the rest: a head split over reads, a 1xx,
        # chunked framing (its trailers come as fields), HEAD and CONNECT exchanges.
        # Each response is parsed whole by one of them, so both are between messages
        # when the next response begins.
        self._quiet_parser = httptools.HttpResponseParser(self)
        self._field_parser: Any = None
        self._parser = self._quiet_parser
        # What is left of the quiet parser's response (head and body) to read; -1 until
        # the connection closes (a close-delimited body).
        self._body_left = 0
        # The last head `_read_head` read, and what it made of it.
        self._kept_head = b""
        self._kept_headers: list[Any] = []
        self._kept_fields = 0
        self._kept_content_length: int | None = None
        self._kept_connection = b""
        self._kept_body = 0  # the kept head's body length, as for _body_left
        self._events: list[Event] = []
        self._headers: list[Any] = []  # field pairs, as _Field.pair
        self._trailers: Headers = NO_FIELDS
        self._head_request = False
        self._connect_request = False
        self._upgrade_proposed = False
        self._request_headers: Headers = []
        # HEAD and CONNECT exchanges feed the parser one head at a time (`_feed_heads`).
        self._split_heads = False
        self._final_head = False
        self._carry = b""
        self._in_body = False
        self._close_delimited = False
        # Per-head facts gathered while its fields arrive (one pass, in on_header).
        self._fields = 0
        self._content_length: int | None = None
        self._chunked = False
        self._framing_error = False
        self._connection = b""  # plain Connection values lifted out of the headers, joined
        # The first bytes of the response to the request outstanding (None until they
        # come, b"" once a head was read): see _STATUS_LINE_START.
        self._first_bytes: bytes | None = None

    # -- framing -------------------------------------------------------------------

    def send_request_head(self, head: RequestHead) -> bytes:
        self._begin_request(head)
        method = head.method
        self._head_request = method == b"HEAD"
        self._connect_request = method == b"CONNECT"
        self._split_heads = self._head_request or self._connect_request
        self._final_head = False
        self._carry = b""
        self._upgrade_proposed = head.upgrade is not None
        self._request_headers = head.headers
        self._first_bytes = None
        return h1_framing.request_head(
            method, head.target, head.headers, head.content_length, head.chunked, self._field_lines
        )

    # -- parsing -------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._upgraded:
            return [Data(H1_STREAM, data)] if data else []
        if self._first_bytes is None:
            self._first_bytes = data
            if self._split_heads or not self._read_head(data):
                self._parser = self._fields_parser()
            else:
                self._parser = self._quiet_parser
        try:
            if self._split_heads:
                self._feed_heads(data)
            elif self._parser is self._quiet_parser:
                self._feed_quiet(data)
            else:
                self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded = True
            self._events.append(Upgraded(H1_STREAM, data[upgrade.args[0] :]))
        except httptools.HttpParserError as error:
            self._failed = True
            cause = (
                error.__context__ if isinstance(error, httptools.HttpParserCallbackError) else None
            )
            self._events.append(ProtocolError(H1_STREAM, 502, f"upstream: {cause or error}"))
        events = self._events
        self._events = []
        return events

    def _feed_heads(self, data: bytes) -> None:
        """Feed up to each head's end, so the parser never reads past the final head.

        llhttp cannot be told that a response to HEAD has no body whatever its
        Content-Length says, nor that a 2xx to CONNECT ends HTTP on the connection,
        and httptools reports no offsets. llhttp needs CRLF CRLF to end a head, so
        cutting the input after every CRLF CRLF lets the adapter take back the bytes
        after the final head. Only HEAD and CONNECT exchanges come here.
        """
        while data:
            joined = self._carry + data
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                self._parser.feed_data(data)
                self._carry = joined[-3:]
                return
            cut = end + 4 - len(self._carry)
            segment, data = data[:cut], data[cut:]
            self._carry = b""
            try:
                self._parser.feed_data(segment)
            except httptools.HttpParserUpgrade as upgrade:
                self._upgraded = True
                self._events.append(Upgraded(H1_STREAM, segment[upgrade.args[0] :] + data))
                return
            if self._final_head:
                self._split_heads = False
                if self._connect_request and self._upgraded:
                    self._events.append(Upgraded(H1_STREAM, data))
                elif data:
                    self._parser.feed_data(data)
                return

    def _feed_quiet(self, data: bytes) -> None:
        """Part of a response `_read_head` read to the quiet parser, which calls no
        callback at its end: the response ends where its Content-Length says."""
        left = self._body_left
        parser = self._quiet_parser
        if left < 0 or len(data) < left:
            if left > 0:
                self._body_left = left - len(data)
            parser.feed_data(data)
            return
        self._body_left = 0
        parser.feed_data(data[:left] if len(data) > left else data)
        if self._in_body:
            self._finish()
        if len(data) > left:
            # Bytes after the response: the field parser says what they are (a response
            # with no request outstanding is refused, empty lines between are not).
            self._parser = self._fields_parser()
            self._parser.feed_data(data[left:])

    def _fields_parser(self) -> Any:
        parser = self._field_parser
        if parser is None:
            parser = self._field_parser = httptools.HttpResponseParser(_FieldCallbacks(self))
        return parser

    def _read_head(self, data: bytes) -> bool:
        """Take the fields of a response head that came whole in `data` straight off the
        bytes, for the quiet parser; False leaves the response to the field parser.

        llhttp still parses and checks every byte (the quiet parser is fed `data`), and
        nothing read here is used unless it accepts the head, so the split can be plain:
        a head llhttp accepts is CRLF-ended lines of `name:OWS value OWS` with no CR or
        LF inside, and its first CRLF CRLF is its end. A head equal to the connection's
        last one (most are; nginx's changes with its Date, once a second) is found by
        one compare, no search (a `find` is about 900 instructions), and gives the same
        facts without a line read.
        """
        kept = self._kept_head
        if len(kept) and data.startswith(kept):
            body = self._kept_body
            self._headers = self._kept_headers[:]  # the head's list is handed on
            self._trailers = NO_FIELDS
            self._fields = self._kept_fields
            self._content_length = self._kept_content_length
            self._chunked = False
            self._framing_error = False
            self._connection = self._kept_connection
        else:
            if len(data) < 10 or not data.startswith(_STATUS_LINE_START) or data[9] == 49:
                return False  # another version (llhttp's to judge), or a 1xx: a head follows
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return False
            self._begin_head()
            names = self._names
            lines = data[:end].split(b"\r\n")
            for index in range(1, len(lines)):
                field = names.line(lines[index])
                if field is None:
                    return False
                self._take(field)
            if self._chunked or self._framing_error:
                return False  # trailers may follow: the field parser reports them
            kept = self._kept_head = data[: end + 4]
            length = self._content_length
            status = data[9:12]  # 204 and 304 have no body, whatever their Content-Length
            bodiless = status == b"204" or status == b"304"
            body = 0 if bodiless else -1 if length is None else length
            self._kept_body = body
            self._kept_headers = self._headers[:]
            self._kept_fields = self._fields
            self._kept_content_length = self._content_length
            self._kept_connection = self._connection
        self._body_left = body if body < 0 else len(kept) + body
        return True

    def release(self) -> None:
        self._failed = True
        self._parser = self._quiet_parser = self._field_parser = _RELEASED_RESPONSE_PARSER
        self._events = []

    def connection_closed(self) -> list[Event]:
        if self._complete or self._failed or self._upgraded:
            return []
        self._failed = True
        if self._in_body and self._close_delimited:
            self._complete = True
            return [_END]
        return [ProtocolError(H1_STREAM, 502, "upstream connection closed before response end")]

    def message_begin(self) -> None:
        """A message begins in the field parser (its on_message_begin)."""
        if self._complete:
            # No request is outstanding: an unsolicited response (or trailing bytes
            # after a HEAD response) would be matched to the next request.
            raise ValueError("response with no request outstanding")
        self._begin_head()

    def _begin_head(self) -> None:
        self._names.begin()
        self._headers = []
        self._trailers = NO_FIELDS
        self._fields = 0
        self._content_length = None
        self._chunked = False
        self._framing_error = False
        self._connection = b""

    def on_field(self, name: bytes, value: bytes) -> None:
        """A field reported by the field parser (_FieldCallbacks)."""
        field = self._names.field(name, value)
        if self._in_body:  # llhttp reports the chunked trailer section here
            if field.kind in (_CONTENT_LENGTH, _TRANSFER_ENCODING):
                raise ValueError("framing field in trailers")  # as the server side
            if self._trailers is NO_FIELDS:
                self._trailers = []
            self._trailers.append((field.name, field.value))
        else:
            self._take(field)

    def _take(self, field: _Field) -> None:
        """A head's field into its facts: what a proxy must know is picked out in one pass."""
        value = field.value
        kind = field.kind
        if kind < _CONTENT_LENGTH:
            self._fields |= kind
            self._headers.append(field.pair)
        elif kind in (_CONTENT_LENGTH, _TRANSFER_ENCODING):
            self._content_length, self._chunked, refused = _framing_field(
                kind, value, self._content_length, self._chunked
            )
            if refused:
                self._framing_error = True
        elif kind == _CONNECTION and is_plain_connection_value(value):
            # Lifted into keep_alive; all of them kept for the HEAD rule (_keep_alive).
            self._connection = self._connection + b"," + value if len(self._connection) else value
        else:
            if kind in (_UPGRADE, _CONNECTION):
                self._fields |= HOP_BY_HOP_FIELDS
            self._headers.append(field.pair)

    def on_headers_complete(self) -> None:
        parser = self._parser
        # Typed, so the comparisons below are native (httptools' result is Any to mypyc).
        status: int = parser.get_status_code()
        # A response is parsed from the first byte that came after its request (one
        # request is outstanding at a time), so the first head's version is in those.
        first = self._first_bytes
        self._first_bytes = b""  # a final head after a 1xx asks httptools
        if first is not None and first.startswith(_STATUS_LINE_START):
            http_version = "1.1"
        else:
            http_version = parser.get_http_version()
        if http_version not in _VERSIONS:
            raise ValueError("unsupported HTTP version")
        if not 100 <= status <= 599:
            raise ValueError("status code out of range")
        headers = self._headers
        content_length = self._content_length
        chunked = self._chunked
        if self._framing_error:
            raise ValueError("invalid or conflicting content-length / transfer-encoding")
        if status == 101:
            _check_switch(self._upgrade_proposed, self._request_headers, headers)
        if (
            http_version == "1.1"
            and (content_length is not None or chunked)
            and status >= 200
            and not self._fields & HOP_BY_HOP_FIELDS
            and _keeps_alive(self._connection)
        ):
            keep_alive = True  # llhttp's rule when no Connection field could say close
        else:
            keep_alive = parser.should_keep_alive()
        if self._head_request and content_length is None and not chunked and status >= 200:
            # llhttp does not know the request was HEAD, so it thinks this response
            # is read to EOF and cannot be kept alive; it has no body at all.
            keep_alive = _keep_alive(http_version, headers, self._connection)
        head = ResponseHead(
            H1_STREAM,
            status,
            headers,
            b"",
            b"1.1" if http_version == "1.1" else http_version.encode(),
            keep_alive,
            content_length,
            chunked,
            self._fields,
        )
        self._events.append(head)
        if status < 200:
            return
        self._final_head = True
        self._keep_alive = keep_alive
        if self._connect_request and status < 300:
            self._upgraded = True  # `_feed_heads` hands over what follows
            return
        if self._head_request or status in (204, 304):
            # No body, whatever Content-Length says: finish here. A HEAD response's
            # parser would wait for that body, so the next exchange gets a fresh one.
            self._finish()
            if self._head_request:
                self._field_parser = None
                self._parser = self._fields_parser()
            return
        self._in_body = True
        self._close_delimited = content_length is None and not chunked

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(H1_STREAM, body))

    def message_complete(self) -> None:
        """The field parser's on_message_complete."""
        if self._in_body:
            self._finish()

    def _finish(self) -> None:
        self._in_body = False
        self._complete = True
        self._events.append(_end(self._trailers))
