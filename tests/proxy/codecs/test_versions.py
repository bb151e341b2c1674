"""The HTTP version each codec reports, however the bytes are split into reads.

The llhttp codecs read `HTTP/1.1` from the first line's bytes when they know where that
line starts, and ask httptools otherwise (h1_llhttp.py, `_REQUEST_LINE_END`). These
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
