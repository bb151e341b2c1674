"""The HTTP/1.1 codecs on llhttp (through httptools): the default, and the cheapest per request.

llhttp parses in C and calls back per element; the codecs turn those callbacks into
the neutral events of `proxy.core.messages` and frame outgoing messages with
`h1_framing`. The server codec (`h1_llhttp_server`) and the client codec
(`h1_llhttp_client`) share what is here: the protocol their field parsers are made
on, the parsers a released codec holds, one end of message for every message without
trailers, the versions relayed. Each codec holds two parsers: a quiet one, made on the
codec, for the messages whose head came whole in one read (the codec reads their
fields off the bytes), and a field parser for the rest (docs/proxy.md, "Fields read
off the bytes"). These three modules are the only ones that import httptools.
"""

from __future__ import annotations

from typing import Final

import httptools

from proxy.core.messages import H1_STREAM, NO_FIELDS, EndOfMessage, Headers

# llhttp also parses HTTP/0.9 and HTTP/2.0 start lines; neither can be relayed as HTTP/1.
VERSIONS: Final = ("1.1", "1.0")
HEAD_END: Final = b"\r\n\r\n"


# The end of a message without trailers (nearly every one), made once: events are read,
# never changed, so one object serves every message (about 240 instructions to make
# and free one, twice a request).
END_OF_MESSAGE: Final = EndOfMessage(H1_STREAM, NO_FIELDS)


def end_of_message(trailers: Headers) -> EndOfMessage:
    return END_OF_MESSAGE if trailers is NO_FIELDS else EndOfMessage(H1_STREAM, trailers)


class NoCallbacks:
    """The protocol of the parsers a released codec holds (below): it has no callbacks."""


class FieldCallbacks:
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

    def __init__(
        self,
        message_begin: object,
        url: object,
        field: object,
        headers_complete: object,
        body: object,
        message_complete: object,
    ) -> None:
        self.on_message_begin = message_begin
        self.on_url = url  # None for a response parser, which asks for on_status instead
        self.on_header = field
        self.on_headers_complete = headers_complete
        self.on_body = body
        self.on_message_complete = message_complete


# A codec's parser holds the codec's bound callbacks, so the pair is a reference cycle
# that only the cycle collector frees, and an old connection's pair sits in the oldest
# generation until a full collection. On release a codec swaps its parser for one of
# these, which refer to nothing, and the pair is freed by reference counting at once.
RELEASED_REQUEST_PARSER: Final = httptools.HttpRequestParser(NoCallbacks())
RELEASED_RESPONSE_PARSER: Final = httptools.HttpResponseParser(NoCallbacks())
