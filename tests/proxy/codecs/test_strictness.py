"""Smuggling shapes and size limits: both codecs refuse them, with the same status."""

from __future__ import annotations

import time

import pytest

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import CodecLimits
from proxy.core.messages import EndOfMessage, ProtocolError, RequestHead, ResponseHead
from tests.proxy.codecs.helpers import CODECS, errors, feed_bytewise, request

HOST = b"Host: a\r\n"
POST = b"POST / HTTP/1.1\r\n" + HOST
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

# Requests a proxy must refuse (RFC 9112 sections 2.2, 5, 6, 7; RFC 9110 section 5.5):
# each is a way for two parsers to disagree on where a message ends or what it says.
BAD_REQUESTS: dict[str, bytes] = {
    "cl-and-te": POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "duplicate-equal-cl": POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting-cl": POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list": POST + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl-plus-sign": POST + b"Content-Length: +3\r\n\r\nabc",
    "cl-negative": POST + b"Content-Length: -1\r\n\r\n",
    "cl-hex": POST + b"Content-Length: 0x3\r\n\r\nabc",
    "cl-inner-space": POST + b"Content-Length: 1 2\r\n\r\n",
    "cl-empty": POST + b"Content-Length: \r\n\r\n",
    "cl-overflow": POST + b"Content-Length: 18446744073709551616\r\n\r\n",
    "te-gzip": POST + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te-gzip-chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-chunked-gzip": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-chunked-twice": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-header-twice": POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-vertical-tab": POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "chunk-size-suffix": CHUNKED + b"3x\r\nabc\r\n0\r\n\r\n",
    "chunk-size-negative": CHUNKED + b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-leading-space": CHUNKED + b" 3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-trailing-space": CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n",
    "chunk-size-space-before-ext": CHUNKED + b"3 ;a=b\r\nabc\r\n0\r\n\r\n",
    "chunk-size-empty": CHUNKED + b"\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"10000000000000000\r\n",
    "chunk-size-bare-lf": CHUNKED + b"3\nabc\r\n0\r\n\r\n",
    "chunk-data-too-long": CHUNKED + b"1\r\nab\r\n0\r\n\r\n",
    "chunk-data-bare-lf": CHUNKED + b"3\r\nabc\n0\r\n\r\n",
    "chunk-ext-bare-cr": CHUNKED + b"3;a\rb\r\nabc\r\n0\r\n\r\n",
    "chunk-ext-empty": CHUNKED + b"3;\r\nabc\r\n0\r\n\r\n",
    "trailer-cl": CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n",
    "trailer-te": CHUNKED + b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "trailer-obs-fold": CHUNKED + b"0\r\nx-t: a\r\n b\r\n\r\n",
    "trailer-bare-lf": CHUNKED + b"0\r\nx-t: a\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\n\tb\r\n\r\n",
    "obs-fold-first": b"GET / HTTP/1.1\r\n x: a\r\n" + HOST + b"\r\n",
    "obs-fold-cl": POST + b"Content-Length:\r\n 3\r\n\r\nabc",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\rb\r\n\r\n",
    "bare-cr-line-end": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\r\n\r\n",
    "bare-lf-request-line": b"GET / HTTP/1.1\n" + HOST + b"\r\n",
    "bare-lf-headers": b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    "bare-lf-head-end": b"GET / HTTP/1.1\r\nHost: a\n\n",
    "space-before-colon": b"GET / HTTP/1.1\r\n" + HOST + b"X : a\r\n\r\n",
    "space-before-colon-cl": POST + b"Content-Length : 3\r\n\r\nabc",
    "tab-before-colon-te": POST + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\n" + HOST + b"X a\r\n\r\n",
    "empty-name": b"GET / HTTP/1.1\r\n" + HOST + b": a\r\n\r\n",
    "name-non-token": b"GET / HTTP/1.1\r\n" + HOST + b"X\x80: a\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n",
    "control-in-value": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x01b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x7fb\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "version-1.2": b"GET / HTTP/1.2\r\n" + HOST + b"\r\n",
    "version-2.0": b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
    "version-0.9": b"GET / HTTP/0.9\r\n\r\n",
    "version-lowercase": b"GET / http/1.1\r\n" + HOST + b"\r\n",
    "unknown-method": b"FOO / HTTP/1.1\r\n" + HOST + b"\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\n" + HOST + b"\r\n",
    "target-not-origin-form": b"GET a HTTP/1.1\r\n" + HOST + b"\r\n",
    "target-non-ascii": b"GET /\x80 HTTP/1.1\r\n" + HOST + b"\r\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "leading-space": b" GET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    # After a request that closes the connection, another request is smuggled data.
    "data-after-close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\n"
    + HOST,
    "data-after-http10": b"GET / HTTP/1.0\r\n\r\nGET /x HTTP/1.0\r\n\r\n",
}


def _complete_requests(events: list[object]) -> int:
    return sum(type(event) is EndOfMessage for event in events)


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_refused_with_400(name: str) -> None:
    wire = BAD_REQUESTS[name]
    outcomes = {}
    for codec in CODECS:
        events = server_codec(codec, None).receive(wire)
        assert errors(events) == [400], (codec, events)
        assert type(events[-1]) is ProtocolError
        # Only the innocent first request of a close/1.0 pair completes.
        outcomes[codec] = _complete_requests(events)  # type: ignore[arg-type]
        after = server_codec(codec, None)
        after.receive(wire)
        assert after.receive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []  # the codec is dead
    assert outcomes["llhttp"] == outcomes["h11"]


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
@pytest.mark.parametrize("codec", CODECS)
def test_bad_request_refused_when_fed_bytewise(name: str, codec: str) -> None:
    events = feed_bytewise(server_codec(codec, None), BAD_REQUESTS[name])
    assert errors(events) == [400], events


# Shapes that look odd but are valid, and both must accept.
GOOD_REQUESTS: dict[str, bytes] = {
    "leading-crlf": b"\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "cl-leading-zeros": POST + b"Content-Length: 003\r\n\r\nabc",
    "cl-ows": POST + b"Content-Length: \t3 \r\n\r\nabc",
    "te-case-and-ows": POST + b"Transfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n",
    "chunk-ext": CHUNKED + b'3;a=b;c;d="x y\\""\r\nabc\r\n0\r\n\r\n',
    "chunk-size-upper-hex": CHUNKED + b"A\r\n0123456789\r\n0\r\n\r\n",
    "chunk-size-max": CHUNKED + b"ffffffffffffffff\r\n",
    "empty-value": b"GET / HTTP/1.1\r\n" + HOST + b"X-Empty:\r\n\r\n",
    "obs-text-value": b"GET / HTTP/1.1\r\n" + HOST + b"X: caf\xc3\xa9\r\n\r\n",
    "absolute-form": b"GET http://a.test/p?q HTTP/1.1\r\n" + HOST + b"\r\n",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n",
    "http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
    "crlf-after-close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\r\n",
}


@pytest.mark.parametrize("name", list(GOOD_REQUESTS))
def test_odd_but_valid_requests_accepted_alike(name: str) -> None:
    wire = GOOD_REQUESTS[name]
    seen = []
    for codec in CODECS:
        events = feed_bytewise(server_codec(codec, None), wire)
        assert errors(events) == [], (codec, events)
        assert type(events[0]) is RequestHead
        seen.append(events[0])
    assert seen[0] == seen[1]


def test_header_values_are_trimmed_alike() -> None:
    wire = b"GET / HTTP/1.1\r\nHost:  a.test \t\r\nX:\tb  c\t\r\n\r\n"
    for codec in CODECS:
        head = server_codec(codec, None).receive(wire)[0]
        assert isinstance(head, RequestHead)
        assert head.headers == [(b"host", b"a.test"), (b"x", b"b  c")]


SMALL = CodecLimits(max_header_bytes=1024, max_target_bytes=256, max_header_count=10)


def _limit_cases() -> dict[str, tuple[list[bytes], int]]:
    """Each case as the reads it arrives in, and the status both codecs must answer."""
    many = b"".join(b"X-%d: v\r\n" % i for i in range(11))
    return {
        "target-414": ([b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + HOST + b"\r\n"], 414),
        "target-414-unfinished": ([b"GET /" + b"a" * 300], 414),
        "header-bytes-431": (
            [b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"v" * 1100 + b"\r\n\r\n"],
            431,
        ),
        # llhttp counts an unfinished head from the read after the one that began it
        # (see test_divergences), so this one arrives in two reads.
        "header-bytes-431-unfinished": (
            [b"GET / HTTP/1.1\r\n" + HOST + b"X: ", b"v" * 1400],
            431,
        ),
        "header-count-431": ([b"GET / HTTP/1.1\r\n" + HOST + many + b"\r\n"], 431),
        "trailer-count-431": ([CHUNKED + b"0\r\n" + many + b"\r\n"], 431),
    }


@pytest.mark.parametrize("name", list(_limit_cases()))
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("bytewise", [False, True], ids=["reads", "bytewise"])
def test_limits(name: str, codec: str, bytewise: bool) -> None:
    reads, status = _limit_cases()[name]
    parser = server_codec(codec, SMALL)
    if bytewise:
        events = feed_bytewise(parser, b"".join(reads))
    else:
        events = [event for piece in reads for event in parser.receive(piece)]
    assert errors(events) == [status], events
    assert parser.receive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []  # the codec is dead


@pytest.mark.parametrize("codec", CODECS)
def test_within_limits_accepted(codec: str) -> None:
    ten = b"".join(b"X-%d: v\r\n" % i for i in range(9))
    wire = b"GET /" + b"a" * 250 + b" HTTP/1.1\r\n" + HOST + ten + b"\r\n"
    events = server_codec(codec, SMALL).receive(wire)
    assert errors(events) == [] and type(events[-1]) is EndOfMessage


RESPONSE_OK = b"HTTP/1.1 200 OK\r\n"

# Responses a proxy must refuse rather than relay: 502, and the connection is not reused.
BAD_RESPONSES: dict[str, bytes] = {
    "cl-and-te": RESPONSE_OK + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate-equal-cl": RESPONSE_OK + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting-cl": RESPONSE_OK + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list": RESPONSE_OK + b"Content-Length: 3,3\r\n\r\nabc",
    "te-gzip": RESPONSE_OK + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te-gzip-chunked": RESPONSE_OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "chunk-size-suffix": RESPONSE_OK + b"Transfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": RESPONSE_OK + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
    # RFC 9110 section 6.5.1: framing belongs to the head (found by the fuzz test).
    "trailer-te": RESPONSE_OK
    + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "trailer-cl": RESPONSE_OK + b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
    "obs-fold": RESPONSE_OK + b"X: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "bare-cr": RESPONSE_OK + b"X: a\rb\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "space-before-colon": RESPONSE_OK + b"Content-Length : 0\r\n\r\n",
    "status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
    "status-4-digits": b"HTTP/1.1 2000 Odd\r\nContent-Length: 0\r\n\r\n",
    "version-2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "unproposed-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    "two-responses": RESPONSE_OK + b"Content-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    "bytes-after-response": RESPONSE_OK + b"Content-Length: 2\r\n\r\nokjunk",
}


@pytest.mark.parametrize("name", list(BAD_RESPONSES))
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_bad_response_refused_with_502(name: str, codec: str, bytewise: bool) -> None:
    parser = client_codec(codec)
    parser.send_request_head(request())
    wire = BAD_RESPONSES[name]
    events = feed_bytewise(parser, wire) if bytewise else parser.receive(wire)
    assert errors(events) == [502], events
    assert not parser.reusable
    assert parser.connection_closed() == []
    assert parser.receive(b"HTTP/1.1 200 OK\r\n\r\n") == []


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_after_head_response_refused(codec: str) -> None:
    parser = client_codec(codec)
    parser.send_request_head(request(b"HEAD"))
    events = parser.receive(RESPONSE_OK + b"Content-Length: 3\r\n\r\nabc")
    assert [type(event) for event in events] == [ResponseHead, EndOfMessage, ProtocolError]
    assert errors(events) == [502]
    assert not parser.reusable


@pytest.mark.parametrize("codec", CODECS)
def test_head_response_split_anywhere(codec: str) -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\n" + RESPONSE_OK + b"Content-Length: 3\r\n\r\n"
    for cut in range(1, len(wire)):
        parser = client_codec(codec)
        parser.send_request_head(request(b"HEAD"))
        events = parser.receive(wire[:cut]) + parser.receive(wire[cut:])
        assert [getattr(event, "status", None) for event in events] == [100, 200, None], cut
        assert type(events[-1]) is EndOfMessage and parser.reusable
        parser.send_request_head(request())
        events = parser.receive(RESPONSE_OK + b"Content-Length: 1\r\n\r\nx")
        assert type(events[-1]) is EndOfMessage


@pytest.mark.parametrize("codec", CODECS)
def test_trickled_head_is_not_quadratic(codec: str) -> None:
    """A ~60 KiB head in 10-byte reads: each read is checked once, not the whole head
    again (that was 16 s for the h11 codec before its guard scanned incrementally)."""
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 600) for i in range(95))
    wire = b"GET / HTTP/1.1\r\n" + HOST + fields + b"\r\n"
    parser = server_codec(codec, None)
    started = time.perf_counter()
    events = [
        event for at in range(0, len(wire), 10) for event in parser.receive(wire[at : at + 10])
    ]
    assert time.perf_counter() - started < 3.0
    assert type(events[-1]) is EndOfMessage and errors(events) == []


@pytest.mark.parametrize("codec", CODECS)
def test_large_read_before_a_small_unfinished_head_is_not_431(codec: str) -> None:
    """A read may hold a large upload (or many pipelined requests) and the start of the
    next head: only that head counts against the head limit, not the whole read."""
    body = b"x" * 200_000
    upload = POST + b"Content-Length: %d\r\n\r\n" % len(body) + body
    pipelined = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3000))
    for before in (upload, pipelined):
        parser = server_codec(codec, None)
        events = parser.receive(before + b"GET /next HTTP/1.1\r\nHo")
        assert errors(events) == [], codec
        events = parser.receive(b"st: a\r\n\r\n")
        assert [type(event) for event in events] == [RequestHead, EndOfMessage]
