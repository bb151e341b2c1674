"""The HTTP/1.1 client codec on llhttp: requests framed upstream
(`h1_framing.RequestFraming`), their responses parsed, 1xx and 101 included.

A response whose head came whole in its first read is parsed by the quiet parser, its
fields and end read off the bytes; anything else, and HEAD and CONNECT exchanges, by
the field parser (`h1_llhttp`). A response that is the connection's last head again, one
llhttp accepted, with its whole body and nothing after in one read, keeping the
connection open, is answered from what was made of that head then (`_repeat_response`).
"""

from __future__ import annotations

from typing import Any, Final

import httptools

from proxy.core.codecs import h1_framing
from proxy.core.codecs.h1_fields import (
    CONNECTION,
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    UPGRADE,
    Field,
    RepeatedFields,
    framing_field,
)
from proxy.core.codecs.h1_llhttp import (
    END_OF_MESSAGE,
    HEAD_END,
    RELEASED_RESPONSE_PARSER,
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
    ResponseHead,
    Upgraded,
)

# The first bytes of a response, when its version need not be asked of httptools
# (whose get_http_version() formats a str, about 2,200 instructions).
_STATUS_LINE_START: Final = b"HTTP/1.1 "


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


class _KeptResponse:
    """The last response head `_read_head` read off the bytes and what it made of it,
    for the same head again; and once llhttp has accepted it, the response to repeat
    for it (`LlhttpClientCodec._repeat_response`): a private copy, as the event handed
    on may be changed."""

    __slots__ = ("body", "connection", "content_length", "fields", "head", "headers", "repeat")

    head: bytes
    body: int  # the body's length, as for _body_left (-1: to the close)
    headers: list[Any]
    fields: int
    content_length: int | None
    connection: bytes
    repeat: ResponseHead | None

    def __init__(self) -> None:
        self.keep(b"", 0, [], 0, None, b"")

    def keep(
        self,
        head: bytes,
        body: int,
        headers: list[Any],
        fields: int,
        content_length: int | None,
        connection: bytes,
    ) -> None:
        """A new head's facts, in place (not a new record: one a response when heads
        differ); nothing to repeat until llhttp accepts it."""
        self.head = head
        self.body = body
        self.headers = headers
        self.fields = fields
        self.content_length = content_length
        self.connection = connection
        self.repeat = None


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
        "_head_left",
        "_head_request",
        "_headers",
        "_in_body",
        "_kept",
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
        self._names = RepeatedFields()
        # Two parsers. The quiet one, made on the codec itself, has llhttp report no
        # fields: it parses the responses whose head came whole in their first read, and
        # `_read_head` takes their fields off the bytes. The field parser (made when
        # first needed) reports each field, for the rest: a head split over reads, a 1xx,
        # chunked framing (its trailers come as fields), HEAD and CONNECT exchanges.
        # Each response is parsed whole by one of them, so both are between messages
        # when the next response begins.
        # The quiet parser has no on_body either: httptools would copy every body slice
        # it reports into new bytes (a 1 MiB body is four 256 KiB copies, and the heap
        # grown and trimmed for each); `_feed_quiet` cuts the body from the reads.
        self._quiet_parser = httptools.HttpResponseParser(
            FieldCallbacks(None, None, None, self.on_headers_complete, None, None)
        )
        self._field_parser: Any = None
        self._parser = self._quiet_parser
        # What is left of the quiet parser's response (head and body) to read; -1 until
        # the connection closes (a close-delimited body). The head's length, until the
        # read that holds it has been fed.
        self._body_left = 0
        self._head_left = 0
        self._kept = _KeptResponse()
        self._events: list[Event] = []
        self._headers: list[Any] = []  # field pairs, as Field.pair
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
        # Per-head facts gathered from its fields (one pass, in _take).
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
            kept = self._kept
            repeat = kept.repeat
            if (
                repeat is not None
                and len(data) == len(kept.head) + kept.body
                and not self._split_heads
                and data.startswith(kept.head)
            ):
                return self._repeat_response(repeat, kept, data)
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

    def _repeat_response(
        self, repeat: ResponseHead, kept: _KeptResponse, data: bytes
    ) -> list[Event]:
        """The connection's last response head again, the very bytes llhttp accepted the
        last time, its body whole in this read and nothing after, the connection kept
        open: what llhttp would say of the head is what it said then, the body is the
        bytes its length says, and the quiet parser is between messages, as it would be
        after parsing them again (about 4,000 instructions saved a response). So the
        response is the one made then, with a list of fields of its own."""
        self._first_bytes = b""
        self._parser = self._quiet_parser
        self._final_head = True
        self._keep_alive = True
        head = ResponseHead(
            H1_STREAM,
            repeat.status,
            kept.headers[:],
            b"",
            repeat.http_version,
            True,
            repeat.content_length,
            False,
            repeat.fields,
        )
        body = len(kept.head)
        if body < len(data):
            events: list[Event] = [head, Data(H1_STREAM, data[body:]), END_OF_MESSAGE]
        else:
            events = [head, END_OF_MESSAGE]
        self._in_body = False
        self._complete = True
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
        callback at its end: the response ends where its Content-Length says. llhttp
        checks every byte and keeps its place; the body is cut from the reads here,
        once llhttp has accepted them, and a read that is all body is passed on as it
        came, not copied."""
        left = self._body_left
        parser = self._quiet_parser
        head = self._head_left
        self._head_left = 0  # the head is whole in the first read (`_read_head`)
        if left < 0 or len(data) < left:
            if left > 0:
                self._body_left = left - len(data)
            parser.feed_data(data)
            if len(data) > head:
                self._events.append(Data(H1_STREAM, data[head:] if head else data))
            return
        self._body_left = 0
        ours = data[:left] if len(data) > left else data
        parser.feed_data(ours)
        if left > head:
            self._events.append(Data(H1_STREAM, ours[head:] if head else ours))
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
            parser = self._field_parser = httptools.HttpResponseParser(
                FieldCallbacks(
                    self.message_begin,
                    None,
                    self.on_field,
                    self.on_headers_complete,
                    self.on_body,
                    self.message_complete,
                )
            )
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
        kept = self._kept
        if len(kept.head) and data.startswith(kept.head):
            self._headers = kept.headers[:]  # the head's list is handed on
            self._trailers = NO_FIELDS
            self._fields = kept.fields
            self._content_length = kept.content_length
            self._chunked = False
            self._framing_error = False
            self._connection = kept.connection
        else:
            if len(data) < 10 or not data.startswith(_STATUS_LINE_START) or data[9] == 49:
                return False  # another version (llhttp's to judge), or a 1xx: a head follows
            end = data.find(HEAD_END)
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
            length = self._content_length
            status = data[9:12]  # 204 and 304 have no body, whatever their Content-Length
            bodiless = status == b"204" or status == b"304"
            kept.keep(
                data[: end + 4],
                0 if bodiless else -1 if length is None else length,
                self._headers[:],
                self._fields,
                length,
                self._connection,
            )
        body = kept.body
        self._body_left = body if body < 0 else len(kept.head) + body
        self._head_left = len(kept.head)
        return True

    def release(self) -> None:
        self._failed = True
        self._parser = self._quiet_parser = self._field_parser = RELEASED_RESPONSE_PARSER
        self._events = []

    def connection_closed(self) -> list[Event]:
        if self._complete or self._failed or self._upgraded:
            return []
        self._failed = True
        if self._in_body and self._close_delimited:
            self._complete = True
            return [END_OF_MESSAGE]
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
        """A field reported by the field parser (FieldCallbacks)."""
        field = self._names.field(name, value)
        if self._in_body:  # llhttp reports the chunked trailer section here
            if field.kind in (CONTENT_LENGTH, TRANSFER_ENCODING):
                raise ValueError("framing field in trailers")  # as the server side
            if self._trailers is NO_FIELDS:
                self._trailers = []
            self._trailers.append((field.name, field.value))
        else:
            self._take(field)

    def _take(self, field: Field) -> None:
        """A head's field into its facts: what a proxy must know is picked out in one pass."""
        value = field.value
        kind = field.kind
        if kind < CONTENT_LENGTH:
            self._fields |= kind
            self._headers.append(field.pair)
        elif kind in (CONTENT_LENGTH, TRANSFER_ENCODING):
            self._content_length, self._chunked, refused = framing_field(
                kind, value, self._content_length, self._chunked
            )
            if refused:
                self._framing_error = True
        elif kind == CONNECTION and is_plain_connection_value(value):
            # Lifted into keep_alive; all of them kept for the HEAD rule (_keep_alive).
            self._connection = self._connection + b"," + value if len(self._connection) else value
        else:
            if kind in (UPGRADE, CONNECTION):
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
        if http_version not in VERSIONS:
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
        if (
            parser is self._quiet_parser
            and keep_alive
            and status >= 200
            and status != 101
            and not self._head_request
            and not self._connect_request
            and not chunked
            and self._kept.body >= 0
        ):
            # The quiet parser's head is the kept one: llhttp has accepted it.
            self._kept.repeat = ResponseHead(
                H1_STREAM,
                status,
                NO_FIELDS,
                b"",
                head.http_version,
                True,
                content_length,
                False,
                self._fields,
            )
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
        self._events.append(end_of_message(self._trailers))
