"""Shared test helpers: codec constructors, an in-memory link, event normalisation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import ClientCodec, CodecLimits, ServerCodec
from proxy.core.messages import (
    H1_STREAM,
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
)

CODECS = ("llhttp", "h11")
PAIRS = [(client, server) for client in CODECS for server in CODECS]


def collapse(events: Iterable[Event]) -> list[Event]:
    """Consecutive Data events merged: how a body is split into reads is not semantics."""
    out: list[Event] = []
    for event in events:
        if type(event) is Data and out and type(out[-1]) is Data:
            out[-1] = Data(H1_STREAM, out[-1].data + event.data)
        elif type(event) is Data and not event.data:
            continue
        else:
            out.append(event)
    return out


def shape(events: Iterable[Event]) -> list[object]:
    """Events comparable across codecs: ProtocolError reasons are free text, statuses are not."""
    return [
        ("error", event.status) if type(event) is ProtocolError else event
        for event in collapse(events)
    ]


def errors(events: Iterable[Event]) -> list[int]:
    return [event.status for event in events if type(event) is ProtocolError]


def feed(codec: ServerCodec | ClientCodec, data: bytes, cuts: Sequence[int] = ()) -> list[Event]:
    """Feed `data` split at `cuts` (offsets), one `receive` per piece."""
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        if cut > start:
            events += codec.receive(data[start:cut])
            start = cut
    return events


def feed_bytewise(codec: ServerCodec | ClientCodec, data: bytes) -> list[Event]:
    return feed(codec, data, range(1, len(data)))


def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Headers | None = None,
    content_length: int | None = None,
    chunked: bool = False,
    upgrade: bytes | None = None,
) -> RequestHead:
    return RequestHead(
        H1_STREAM,
        method,
        target,
        [(b"host", b"example.test")] if headers is None else headers,
        content_length=content_length,
        chunked=chunked,
        upgrade=upgrade,
    )


def response(
    status: int = 200,
    headers: Headers | None = None,
    content_length: int | None = None,
    keep_alive: bool = True,
) -> ResponseHead:
    return ResponseHead(
        H1_STREAM,
        status,
        [] if headers is None else headers,
        keep_alive=keep_alive,
        content_length=content_length,
    )


class Link:
    """A client codec and a server codec joined by an in-memory byte pipe (no sockets)."""

    def __init__(self, client: str, server: str, limits: CodecLimits | None = None) -> None:
        self.client = client_codec(client)
        self.server = server_codec(server, limits)
        self.to_server: list[bytes] = []  # wire bytes, as written
        self.to_client: list[bytes] = []

    def send_request(
        self, head: RequestHead, body: Sequence[bytes] = (), trailers: Headers | None = None
    ) -> list[Event]:
        """Write a whole request from the client; return what the server codec made of it."""
        client = self.client
        wire = [client.send_request_head(head)]
        wire += [client.send_data(piece) for piece in body]
        wire.append(client.send_end(trailers or []))
        self.to_server += wire
        return self.server.receive(b"".join(wire))

    def send_response(
        self,
        head: ResponseHead,
        answering: RequestHead,
        body: Sequence[bytes] = (),
        trailers: Headers | None = None,
        end: bool = True,
    ) -> list[Event]:
        """Write a response from the server; return what the client codec made of it."""
        server = self.server
        wire = [server.send_response_head(head, answering)]
        wire += [server.send_data(piece) for piece in body]
        if end:
            wire.append(server.send_end(trailers or []))
        self.to_client += wire
        return self.client.receive(b"".join(wire))

    def exchange(
        self,
        head: RequestHead,
        reply: ResponseHead,
        request_body: Sequence[bytes] = (),
        response_body: Sequence[bytes] = (),
    ) -> tuple[list[Event], list[Event]]:
        """One request and its response; the server side answers the head it parsed."""
        at_server = self.send_request(head, request_body)
        parsed = next(event for event in at_server if type(event) is RequestHead)
        assert isinstance(parsed, RequestHead)
        return at_server, self.send_response(reply, parsed, response_body)


def body_of(events: Iterable[Event]) -> bytes:
    return b"".join(event.data for event in events if type(event) is Data)


def end_of(events: Iterable[Event]) -> EndOfMessage:
    ends = [event for event in events if type(event) is EndOfMessage]
    assert len(ends) == 1, ends
    return ends[0]
