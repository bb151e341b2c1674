"""Outgoing framing: both codecs write the same bytes for the same decisions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.codecs import client_codec, h1_framing, server_codec
from proxy.core.messages import H1_STREAM, RequestHead, ResponseHead
from tests.proxy.codecs.helpers import CODECS, request, response

REQUESTS = {
    "get-1.1": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "head-1.1": b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    "get-1.1-close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "get-1.0": b"GET / HTTP/1.0\r\n\r\n",
    "get-1.0-keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
}


def _parsed(codec: str, wire: bytes) -> tuple[object, RequestHead]:
    parser = server_codec(codec, None)
    head = parser.receive(wire)[0]
    assert isinstance(head, RequestHead)
    return parser, head


@pytest.mark.parametrize(
    ("name", "status", "length", "keep_alive"),
    list(itertools.product(REQUESTS, [100, 101, 200, 204, 304, 404], [None, 0, 5], [True, False])),
)
def test_response_framing_is_identical(
    name: str, status: int, length: int | None, keep_alive: bool
) -> None:
    written = []
    for codec in ("llhttp", "h11"):
        parser, head = _parsed(codec, REQUESTS[name])
        reply = response(status, [(b"server", b"t")], length, keep_alive)
        out = parser.send_response_head(reply, head)  # type: ignore[attr-defined]
        out += parser.send_data(b"abc") + parser.send_end([(b"x-t", b"1")])  # type: ignore[attr-defined]
        written.append((out, parser.keep_alive))  # type: ignore[attr-defined]
    assert written[0] == written[1]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("length", [None, 3])
def test_request_framing_is_identical(chunked: bool, length: int | None) -> None:
    written = []
    for codec in ("llhttp", "h11"):
        parser = client_codec(codec)
        head = request(b"POST", headers=[(b"host", b"a")], content_length=length, chunked=chunked)
        out = parser.send_request_head(head) + parser.send_data(b"abc") + parser.send_end([])
        written.append(out)
    assert written[0] == written[1]
    if chunked:
        assert written[0].endswith(b"3\r\nabc\r\n0\r\n\r\n")


def test_framing_decisions() -> None:
    """The decisions themselves, once (they are the same in both codecs, above)."""
    parser, head = _parsed("h11", REQUESTS["get-1.1"])
    assert b"transfer-encoding: chunked" in parser.send_response_head(response(), head)  # type: ignore[attr-defined]
    parser, head = _parsed("h11", REQUESTS["get-1.0"])
    out = parser.send_response_head(response(), head)  # type: ignore[attr-defined]
    assert b"transfer-encoding" not in out and b"connection: close" in out
    parser, head = _parsed("h11", REQUESTS["get-1.0-keep-alive"])
    out = parser.send_response_head(response(content_length=1), head)  # type: ignore[attr-defined]
    assert b"connection: close" not in out and parser.keep_alive  # type: ignore[attr-defined]
    parser, head = _parsed("h11", REQUESTS["get-1.1"])
    out = parser.send_response_head(response(content_length=1, keep_alive=False), head)  # type: ignore[attr-defined]
    assert out.endswith(b"content-length: 1\r\nconnection: close\r\n\r\n")


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 60, 400])
def test_heads_of_any_size_are_written_field_by_field(count: int) -> None:
    """Heads past the serializer's block size (h1_framing._BLOCK_BYTES) lose and repeat nothing."""
    headers = [(b"x-field-%d" % i, b"v" * (i % 97)) for i in range(count)]
    fields = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    assert h1_framing.header_block(headers) == fields
    assert h1_framing.request_head(b"PUT", b"/t", headers, 3, False) == (
        b"PUT /t HTTP/1.1\r\n" + fields + b"content-length: 3\r\n\r\n"
    )
    assert h1_framing.response_head(404, b"", headers, None, True, True) == (
        b"HTTP/1.1 404 Not Found\r\n"
        + fields
        + b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    assert h1_framing.response_head(299, b"Odd", headers, 0, False, False) == (
        b"HTTP/1.1 299 Odd\r\n" + fields + b"content-length: 0\r\n\r\n"
    )


@pytest.mark.parametrize("length", [0, 1, 12, 4095, 4096, 10**12])
def test_content_length_lines_are_right_when_remembered(length: int) -> None:
    """Small lengths' lines are kept after the first use (h1_framing._length_lines)."""
    for _ in range(2):
        assert h1_framing.request_head(b"POST", b"/", [], length, False) == (
            b"POST / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % length
        )


_HEADS = st.lists(
    st.tuples(
        st.sampled_from([200, 404, 204]),
        st.lists(
            st.sampled_from([(b"server", b"t"), (b"date", b"1"), (b"date", b"2")]), max_size=3
        ),
        st.sampled_from([None, 0, 5]),
        st.sampled_from([b"", b"Fine"]),
        st.sampled_from(list(REQUESTS.values())[:5]),  # GET/HEAD, 1.0/1.1, keep-alive or close
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(_HEADS)
def test_a_connection_frames_each_response_head_as_a_fresh_one_would(
    heads: list[tuple[int, list[tuple[bytes, bytes]], int | None, bytes, bytes]],
) -> None:
    """ResponseFraming gives back its last head's bytes when given the same again: never
    for anything that would frame differently."""
    for codec in CODECS:
        connection = server_codec(codec, None)
        for status, headers, length, reason, wire in heads:
            request = server_codec(codec, None).receive(wire)[0]
            assert isinstance(request, RequestHead)
            head = ResponseHead(H1_STREAM, status, list(headers), reason, content_length=length)
            framed = connection.send_response_head(head, request)
            fresh = server_codec(codec, None).send_response_head(head, request)
            assert framed == fresh


def test_a_head_list_changed_after_framing_does_not_change_the_next_head() -> None:
    connection = server_codec("llhttp", None)
    request = server_codec("llhttp", None).receive(REQUESTS["get-1.1"])[0]
    assert isinstance(request, RequestHead)
    headers = [(b"server", b"t")]
    first = connection.send_response_head(
        ResponseHead(H1_STREAM, 200, headers, b"", content_length=0), request
    )
    headers.append((b"x-late", b"1"))  # the first head's own list, changed afterwards
    again = connection.send_response_head(
        ResponseHead(H1_STREAM, 200, [(b"server", b"t")], b"", content_length=0), request
    )
    assert again == first
    changed = connection.send_response_head(
        ResponseHead(H1_STREAM, 200, headers, b"", content_length=0), request
    )
    assert b"x-late: 1\r\n" in changed
