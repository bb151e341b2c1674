"""What a codec notes about a head's fields, and the plain Connection values it lifts.

The llhttp codecs note hop-by-hop, forwarding and trace context fields while parsing
(messages.HOP_BY_HOP_FIELDS and friends) so the header policy need not scan again;
the h11 codecs note nothing (ANY_FIELDS). Checked here: the notes are exactly what a
scan of the parsed headers finds, the policy forwards the same headers with the notes
as without them, and both codecs lift `Connection: keep-alive`/`close` alike.
"""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.codecs import client_codec, server_codec
from proxy.core.headers import (
    HOP_BY_HOP,
    NOTED_FIELDS,
    PLAIN_CONNECTION_VALUES,
    TRACE_CONTEXT_FIELDS,
    forward_request_headers,
    forwardable,
    is_plain_connection_value,
    strip_hop_by_hop,
)
from proxy.core.messages import (
    ANY_FIELDS,
    FORWARDING_FIELDS,
    HOP_BY_HOP_FIELDS,
    TRACE_FIELDS,
    Headers,
    RequestHead,
    ResponseHead,
)
from proxy.telemetry import tracecontext
from tests.proxy.codecs.helpers import CODECS, request

NAMES = [
    b"connection",
    b"Connection",
    b"content-type",
    b"Content-Type",
    b"keep-alive",
    b"TE",
    b"upgrade",
    b"Proxy-Connection",
    b"X-Request-Id",
    b"x-forwarded-for",
    b"X-Forwarded-Proto",
    b"traceparent",
    b"B3",
    b"x-b3-sampled",
    b"tracestate",
    b"accept",
    b"User-Agent",
    b"x-custom",
]
VALUES = [
    b"keep-alive",
    b"close",
    b"Keep-Alive",
    b"Close",
    b"x-custom",
    b"close, x-custom",
    b"1",
    b"x-custom \t",
    b"1 ",
]
FIELD_LISTS = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8)


def scanned(headers: Headers) -> int:
    """The notes a full scan of parsed (lower-cased) headers gives."""
    bits = 0
    for name, _ in headers:
        bits |= NOTED_FIELDS.get(name, 0)
    return bits


def wire(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in fields)


def test_the_noted_names_are_the_policys_and_the_tracers() -> None:
    assert {n for n, bit in NOTED_FIELDS.items() if bit == HOP_BY_HOP_FIELDS} == HOP_BY_HOP
    assert {n for n, bit in NOTED_FIELDS.items() if bit == TRACE_FIELDS} == TRACE_CONTEXT_FIELDS
    assert TRACE_CONTEXT_FIELDS == tracecontext.TRACE_HEADERS
    forwarding = {n for n, bit in NOTED_FIELDS.items() if bit == FORWARDING_FIELDS}
    assert forwarding == {b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto"}


@settings(max_examples=300, deadline=None)
@given(FIELD_LISTS)
def test_request_notes_match_a_scan_and_change_nothing_forwarded(
    fields: list[tuple[bytes, bytes]],
) -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + wire(fields) + b"\r\n"
    heads: dict[str, RequestHead] = {}
    for codec in CODECS:
        events = server_codec(codec).receive(data)
        head = events[0]
        assert isinstance(head, RequestHead), (codec, events)
        heads[codec] = head
        assert not any(
            name == b"connection" and value in PLAIN_CONNECTION_VALUES
            for name, value in head.headers
        ), head.headers
        assert head.fields == (scanned(head.headers) if codec == "llhttp" else ANY_FIELDS)
        noted, noted_id = forward_request_headers(
            head.headers, b"192.0.2.1", b"http", fields=head.fields
        )
        scanned_all, scanned_id = forward_request_headers(
            head.headers, b"192.0.2.1", b"http", fields=ANY_FIELDS
        )
        # The same headers, but for a generated request id (a new one each call).
        assert noted == [
            (name, noted_id if name == b"x-request-id" and value == scanned_id else value)
            for name, value in scanned_all
        ]
    assert heads["llhttp"] == heads["h11"]  # `fields` aside, the same message


@settings(max_examples=300, deadline=None)
@given(FIELD_LISTS)
def test_response_notes_match_a_scan_and_change_nothing_forwarded(
    fields: list[tuple[bytes, bytes]],
) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + wire(fields) + b"Content-Length: 2\r\n\r\nok"
    heads: dict[str, ResponseHead] = {}
    for codec in CODECS:
        client = client_codec(codec)
        client.send_request_head(request())
        events = client.receive(data)
        head = events[0]
        assert isinstance(head, ResponseHead), (codec, events)
        heads[codec] = head
        noted = scanned(head.headers) if codec == "llhttp" else ANY_FIELDS
        assert head.fields == noted
        assert forwardable(head.headers, head.fields) == strip_hop_by_hop(head.headers)
    assert heads["llhttp"] == heads["h11"]


def test_plain_connection_is_lifted_into_keep_alive() -> None:
    for codec in CODECS:
        close = server_codec(codec).receive(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )[0]
        assert isinstance(close, RequestHead)
        assert close.headers == [(b"host", b"a")] and not close.keep_alive
        listed = server_codec(codec).receive(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-custom\r\n\r\n"
        )[0]
        assert isinstance(listed, RequestHead)
        assert (b"connection", b"close, x-custom") in listed.headers
        assert listed.fields & HOP_BY_HOP_FIELDS and not listed.keep_alive
        head_request = client_codec(codec)
        head_request.send_request_head(request(b"HEAD"))
        kept = head_request.receive(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")[0]
        assert isinstance(kept, ResponseHead)
        assert kept.headers == [] and kept.keep_alive  # HTTP/1.0 opted in, no body to read


@settings(max_examples=200, deadline=None)
@given(st.lists(FIELD_LISTS, min_size=2, max_size=5))
def test_a_connection_remembering_its_field_names_parses_as_a_fresh_codec(
    heads: list[list[tuple[bytes, bytes]]],
) -> None:
    # The llhttp codecs compare each field, name and value, with the previous message's
    # at the same place before looking it up (h1_fields.RepeatedFields): fields that
    # move, change case, kind or value between messages must come out as a fresh codec
    # makes them.
    server = server_codec("llhttp")
    client = client_codec("llhttp")
    for fields in heads:
        data = b"GET / HTTP/1.1\r\nHost: a\r\n" + wire(fields) + b"\r\n"
        got, expected = server.receive(data), server_codec("llhttp").receive(data)
        assert got == expected
        assert [head.fields for head in got if isinstance(head, RequestHead)] == [
            head.fields for head in expected if isinstance(head, RequestHead)
        ]
        data = b"HTTP/1.1 200 OK\r\n" + wire(fields) + b"Content-Length: 0\r\n\r\n"
        client.send_request_head(request())
        fresh = client_codec("llhttp")
        fresh.send_request_head(request())
        got, expected = client.receive(data), fresh.receive(data)
        assert got == expected
        assert [head.fields for head in got if isinstance(head, ResponseHead)] == [
            head.fields for head in expected if isinstance(head, ResponseHead)
        ]
        if not (server.keep_alive and client.reusable):
            return  # a Connection: close ends both connections


class _Heads:
    """An httptools protocol that keeps llhttp's own keep-alive answer for each head."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.keep_alive: list[bool] = []

    def on_headers_complete(self) -> None:
        self.keep_alive.append(self.parser.should_keep_alive())


@settings(max_examples=300, deadline=None)
@given(
    FIELD_LISTS,
    st.sampled_from([b"1.1", b"1.0"]),
    st.sampled_from([200, 204, 304, 404, 503]),
    st.sampled_from([b"Content-Length: 2\r\n", b"Transfer-Encoding: chunked\r\n", b""]),
)
def test_a_response_is_kept_alive_exactly_when_llhttp_says(
    fields: list[tuple[bytes, bytes]], version: bytes, status: int, framing: bytes
) -> None:
    # The llhttp client codec answers the common case (HTTP/1.1, framed, no Connection
    # field but keep-alive) without asking httptools; it must agree with llhttp's rule.
    data = b"HTTP/%s %d X\r\n%s%s\r\n" % (version, status, wire(fields), framing)
    client = client_codec("llhttp")
    client.send_request_head(request())
    heads = [event for event in client.receive(data) if isinstance(event, ResponseHead)]
    oracle = _Heads()
    oracle.parser.feed_data(data)
    assert [head.keep_alive for head in heads] == oracle.keep_alive


@pytest.mark.parametrize(
    "value", [*PLAIN_CONNECTION_VALUES, b"KEEP-ALIVE", b"close ", b"keep-alive, close", b""]
)
def test_the_plain_connection_test_is_the_declared_set(value: bytes) -> None:
    # The codecs ask is_plain_connection_value (compares, for the compiled build); the
    # set in proxy.core.headers is what it must agree with.
    assert is_plain_connection_value(value) == (value in PLAIN_CONNECTION_VALUES)
