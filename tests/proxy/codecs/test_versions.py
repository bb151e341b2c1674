"""The HTTP version each codec reports, however the bytes are split into reads.

The llhttp codecs read `HTTP/1.1` from the first line's bytes when they know where that
line starts, and ask httptools otherwise (h1_llhttp_server.py, `_REQUEST_LINE_END`). These
tests feed messages whose versions differ, pipelined, behind bodies that look like
request lines, after empty lines and cut at every offset, and check every version
against what was sent, for both codecs.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.codecs import client_codec, server_codec
from proxy.core.messages import RequestHead, ResponseHead
from tests.proxy.codecs.helpers import CODECS, feed, request


def _request(
    version: bytes, target: bytes = b"/", body: bytes = b"", method: bytes = b"POST"
) -> bytes:
    # An HTTP/1.0 request asks to keep the connection, so that later ones are parsed.
    host = b"Host: a\r\n" if version == b"1.1" else b"Connection: keep-alive\r\n"
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    return b"%s %s HTTP/%s\r\n%s%s\r\n%s" % (method, target, version, host, length, body)


def _versions(codec_name: str, wire: bytes, cuts: list[int]) -> list[bytes]:
    events = feed(server_codec(codec_name), wire, cuts)
    return [event.http_version for event in events if isinstance(event, RequestHead)]


@pytest.mark.parametrize("codec", CODECS)
def test_pipelined_requests_keep_their_own_versions(codec: str) -> None:
    wire = _request(b"1.1") + _request(b"1.0") + _request(b"1.1") + _request(b"1.0")
    assert _versions(codec, wire, []) == [b"1.1", b"1.0", b"1.1", b"1.0"]


@pytest.mark.parametrize("codec", CODECS)
def test_a_body_that_looks_like_a_request_line(codec: str) -> None:
    # The body ends in the read that starts the HTTP/1.0 request, and reads as the
    # HTTP/1.1 request line that request's layout would put there.
    body = b"POST / HTTP/1.1\r\n"
    first = _request(b"1.1", body=body)
    wire = first + _request(b"1.0")
    for cut in range(len(first) - len(body), len(first)):
        assert _versions(codec, wire, [cut]) == [b"1.1", b"1.0"], cut


def test_empty_lines_before_a_request() -> None:
    # llhttp skips them; the line then does not start the read.
    assert _versions("llhttp", b"\r\n" + _request(b"1.0"), []) == [b"1.0"]
    assert _versions("llhttp", _request(b"1.1") + b"\r\n" + _request(b"1.0"), []) == [
        b"1.1",
        b"1.0",
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_every_cut_of_two_requests(codec: str) -> None:
    wire = _request(b"1.0", b"/a") + _request(b"1.1", b"/a")
    for cut in range(1, len(wire)):
        assert _versions(codec, wire, [cut]) == [b"1.0", b"1.1"], cut


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"1.0", b"1.1"]),
            st.sampled_from([b"/", b"/a", b"/x?q=1"]),
            st.sampled_from(
                [b"", b"x", b"POST / HTTP/1.1\r\n", b" HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n"]
            ),
            st.sampled_from([b"GET", b"POST", b"PUT"]),
        ),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.integers(min_value=1, max_value=400), max_size=6),
    st.sampled_from(CODECS),
)
def test_versions_whatever_the_reads(
    messages: list[tuple[bytes, bytes, bytes, bytes]], cuts: list[int], codec: str
) -> None:
    # The method too (a GET and its version are read off the line's bytes), and
    # keep-alive (decided without llhttp when no Connection field could say close).
    wire = b"".join(_request(*message) for message in messages)
    events = feed(server_codec(codec), wire, [cut for cut in cuts if cut < len(wire)])
    heads = [event for event in events if isinstance(event, RequestHead)]
    assert [(head.method, head.http_version, head.keep_alive) for head in heads] == [
        (method, version, True) for version, _, _, method in messages
    ]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("wire", "versions"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [b"1.1"]),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", [b"1.0"]),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
         [b"1.1", b"1.0"]),
    ],
)  # fmt: skip
def test_response_versions(codec: str, wire: bytes, versions: list[bytes]) -> None:
    for cut in range(len(wire)):
        client = client_codec(codec)
        client.send_request_head(request())
        events = feed(client, wire, [cut] if cut else [])
        assert [e.http_version for e in events if isinstance(e, ResponseHead)] == versions, cut


@pytest.mark.parametrize("codec", CODECS)
def test_response_versions_on_a_reused_connection(codec: str) -> None:
    client = client_codec(codec)
    for version in (b"1.1", b"1.0", b"1.1"):
        client.send_request_head(request())
        reason = b"HTTP/%s 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
        events = client.receive(reason % version)
        assert [e.http_version for e in events if isinstance(e, ResponseHead)] == [version]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"1.0", b"1.1"]),
            st.sampled_from([200, 204, 301, 404, 503]),
            st.sampled_from([b"Content-Length: 2\r\n", b"Transfer-Encoding: chunked\r\n"]),
            st.lists(
                st.sampled_from([b"Connection: keep-alive\r\n", b"Connection: Close\r\n"]),
                max_size=2,
            ).map(b"".join),
            st.booleans(),  # a 100 Continue first
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(min_value=1, max_value=200), max_size=4),
)
def test_response_status_and_keep_alive_whatever_the_reads(
    responses: list[tuple[bytes, int, bytes, bytes, bool]], cuts: list[int]
) -> None:
    # The llhttp client codec reads a first head's status off its line and decides
    # keep-alive itself for a delimited HTTP/1.1 body without Connection fields; the
    # h11 codec, its oracle, must agree on every head, however the reads fall.
    for version, status, framing, connection, interim in responses:
        body = (
            b"" if status == 204 else (b"2\r\nok\r\n0\r\n\r\n" if b"chunked" in framing else b"ok")
        )
        framing = b"" if status == 204 else framing
        wire = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
        wire += b"HTTP/%s %d X\r\n%s%s\r\n%s" % (version, status, framing, connection, body)
        heads = {}
        for codec in CODECS:
            client = client_codec(codec)
            client.send_request_head(request())
            events = feed(client, wire, [cut for cut in cuts if cut < len(wire)])
            heads[codec] = [
                (e.status, e.http_version, e.keep_alive)
                for e in events
                if isinstance(e, ResponseHead)
            ]
        assert heads["llhttp"] == heads["h11"]
        assert [status for status, _, _ in heads["llhttp"]] == [100] * interim + [status]


@pytest.mark.parametrize("codec", CODECS)
def test_a_head_response_with_two_connection_fields(codec: str) -> None:
    # A response to HEAD has no body whatever it declares; whether the connection stays
    # open is llhttp's rule over every Connection field (the codec lifts plain ones).
    for version, fields, kept in (
        (b"1.1", b"Connection: keep-alive\r\nConnection: close\r\n", False),
        (b"1.1", b"Connection: close\r\nConnection: keep-alive\r\n", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
        (b"1.0", b"Connection: close\r\n", False),
    ):
        client = client_codec(codec)
        client.send_request_head(request(b"HEAD"))
        head = client.receive(b"HTTP/" + version + b" 200 OK\r\n" + fields + b"\r\n")[0]
        assert isinstance(head, ResponseHead) and head.keep_alive is kept, (fields, kept)
