"""RFC 9113 strictness: each class of broken HTTP/2 answered with the error code the RFC names.

Frames are crafted with hyperframe and hpack, so nothing normalises them on the way.
Stream errors (RST_STREAM) leave the connection serving; connection errors end in
GOAWAY with the code and a close.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.codecs import h2 as h2_codec
from tests.h2.client import read_frames
from tests.h2.conftest import Proxy

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x1, 0x3, 0x5, 0x6
ENHANCE_YOUR_CALM = 0xB
GOOD = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/")]


class Raw:
    """A socket speaking hand-made frames."""

    def __init__(self, port: int, settings: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.encoder = hpack.Encoder()
        self.sock.sendall(PREFACE + (SettingsFrame(0).serialize() if settings else b""))

    def send(self, *frames: Frame) -> None:
        self.sock.sendall(b"".join(frame.serialize() for frame in frames))

    def headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = True
    ) -> HeadersFrame:
        frame = HeadersFrame(stream_id)
        frame.data = self.encoder.encode(headers)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def frames(
        self, timeout: float = 3.0, until: Callable[[list[Frame]], bool] | None = None
    ) -> list[Frame]:
        """Frames until GOAWAY, the close, `until`, or the timeout."""
        return read_frames(
            self.sock,
            timeout,
            lambda frames: goaway(frames) is not None or (until is not None and until(frames)),
        )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def raw(nginx_proxy: Proxy) -> Iterator[Raw]:
    connection = Raw(nginx_proxy.port)
    yield connection
    connection.close()


def goaway(frames: list[Frame]) -> int | None:
    codes = [f.error_code for f in frames if isinstance(f, GoAwayFrame)]
    return codes[-1] if codes else None


def reset(frames: list[Frame], stream_id: int) -> int | None:
    codes = [
        f.error_code for f in frames if isinstance(f, RstStreamFrame) and f.stream_id == stream_id
    ]
    return codes[0] if codes else None


def ended(frames: list[Frame], stream_id: int) -> bool:
    return any(f.stream_id == stream_id and "END_STREAM" in f.flags for f in frames)


def answered(frames: list[Frame], stream_id: int) -> bool:
    return any(isinstance(f, HeadersFrame) and f.stream_id == stream_id for f in frames)


def test_valid_request_is_served(raw: Raw) -> None:
    raw.send(raw.headers(1, GOOD))
    frames = raw.frames(until=lambda frames: ended(frames, 1))
    assert answered(frames, 1) and goaway(frames) is None


def test_preface_not_followed_by_settings(nginx_proxy: Proxy) -> None:
    connection = Raw(nginx_proxy.port, settings=False)
    try:
        connection.send(PingFrame(0))
        assert goaway(connection.frames()) == PROTOCOL_ERROR
    finally:
        connection.close()


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_a_first_settings_frame_split_across_reads_is_accepted(
    nginx_proxy: Proxy, split: int
) -> None:
    connection = Raw(nginx_proxy.port, settings=False)
    try:
        settings = SettingsFrame(0).serialize()
        connection.sock.sendall(settings[:split])
        time.sleep(0.05)  # its own read at the proxy
        connection.sock.sendall(settings[split:])
        connection.send(connection.headers(1, GOOD))
        frames = connection.frames(until=lambda frames: ended(frames, 1))
        assert answered(frames, 1) and goaway(frames) is None
    finally:
        connection.close()


def test_data_on_idle_stream(raw: Raw) -> None:
    frame = DataFrame(3)
    frame.data = b"x"
    raw.send(frame)
    assert goaway(raw.frames()) == PROTOCOL_ERROR


def test_data_on_closed_stream(raw: Raw) -> None:
    raw.send(raw.headers(1, GOOD))  # END_STREAM: half-closed (remote) at the server
    frame = DataFrame(1)
    frame.data = b"late"
    raw.send(frame)
    frames = raw.frames(until=lambda frames: reset(frames, 1) is not None)
    assert STREAM_CLOSED in (reset(frames, 1), goaway(frames))


def test_even_stream_id_from_client(raw: Raw) -> None:
    raw.send(raw.headers(2, GOOD))
    assert goaway(raw.frames()) == PROTOCOL_ERROR


MALFORMED = {
    "missing :path": [h for h in GOOD if h[0] != b":path"],
    "missing :method": [h for h in GOOD if h[0] != b":method"],
    "empty :path": [*GOOD[:3], (b":path", b"")],
    "unknown pseudo-header": [*GOOD, (b":foo", b"bar")],
    "duplicate :method": [(b":method", b"GET"), *GOOD],
    "pseudo-header after a field": [*GOOD[:3], (b"accept", b"*/*"), (b":path", b"/")],
    "uppercase field name": [*GOOD, (b"X-Upper", b"1")],
    "connection header": [*GOOD, (b"connection", b"keep-alive")],
    "transfer-encoding": [*GOOD, (b"transfer-encoding", b"chunked")],
    "te other than trailers": [*GOOD, (b"te", b"gzip")],
    "CRLF in a value": [*GOOD, (b"x-smuggle", b"a\r\nGET /evil HTTP/1.1")],
    "space in a name": [*GOOD, (b"bad name", b"1")],
    # Passed on to HTTP/1 these would change the request line the upstream reads.
    "space in :method": [(b":method", b"GET /admin"), *GOOD[1:3], (b":path", b"/p")],
    "tab in :path": [*GOOD[:3], (b":path", b"/a\tb")],
    "control byte in :path": [*GOOD[:3], (b":path", b"/a\x7fb\x01c")],
    ":path without a slash": [*GOOD[:3], (b":path", b"noslash")],
    "space in :authority": [GOOD[0], GOOD[1], (b":authority", b"a b"), GOOD[3]],
    "userinfo in :authority": [GOOD[0], GOOD[1], (b":authority", b"u@evil"), GOOD[3]],
    "empty field name": [*GOOD, (b"", b"1")],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_a_stream_error(nginx_proxy: Proxy, raw: Raw, case: str) -> None:
    before = nginx_proxy.stats()["http2_rx_messaging_error"]
    raw.send(raw.headers(1, MALFORMED[case]))
    raw.send(raw.headers(3, GOOD))  # the connection keeps serving
    frames = raw.frames(until=lambda frames: ended(frames, 3))
    assert reset(frames, 1) == PROTOCOL_ERROR, case
    assert not answered(frames, 1)
    assert answered(frames, 3) and goaway(frames) is None
    assert nginx_proxy.stats()["http2_rx_messaging_error"] == before + 1


def test_pseudo_header_in_trailers(grpc_proxy: Proxy) -> None:
    """Against a gRPC upstream, which waits for the request's end before answering."""
    raw = Raw(grpc_proxy.port)
    try:
        grpc_headers = [
            (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"),
            (b":path", b"/pilotfish.test.Echo/Unary"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]  # fmt: skip
        raw.send(raw.headers(1, grpc_headers, end_stream=False))
        raw.send(raw.headers(1, [(b":path", b"/again")]))
        frames = raw.frames(until=lambda frames: reset(frames, 1) is not None)
        assert PROTOCOL_ERROR in (reset(frames, 1), goaway(frames))
    finally:
        raw.close()


def test_connection_window_overflow(raw: Raw) -> None:
    frame = WindowUpdateFrame(0)
    frame.window_increment = 2**31 - 1  # on top of 65535: over 2^31-1
    raw.send(frame)
    assert goaway(raw.frames()) == FLOW_CONTROL_ERROR


def test_stream_window_overflow(raw: Raw) -> None:
    raw.send(raw.headers(1, [(b":method", b"GET"), *GOOD[1:3], (b":path", b"/files/big")]))
    frame = WindowUpdateFrame(1)
    frame.window_increment = 2**31 - 1
    raw.send(frame, frame)  # twice: over 2^31-1 however much of the window was used
    frames = raw.frames(until=lambda frames: reset(frames, 1) is not None)
    assert FLOW_CONTROL_ERROR in (reset(frames, 1), goaway(frames))


def test_data_beyond_the_advertised_window(grpc_proxy: Proxy) -> None:
    raw = Raw(grpc_proxy.port)  # a gRPC server reads the whole request before answering
    grpc_headers = [
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"),
        (b":path", b"/pilotfish.test.Echo/Unary"), (b"content-type", b"application/grpc"),
    ]  # fmt: skip
    raw.send(raw.headers(1, grpc_headers, end_stream=False))
    chunk = DataFrame(1)
    chunk.data = b"x" * 16384
    raw.send(*([chunk] * 40))  # 640 KiB against a 256 KiB stream window
    frames = raw.frames(until=lambda frames: reset(frames, 1) is not None)
    raw.close()
    assert FLOW_CONTROL_ERROR in (reset(frames, 1), goaway(frames))


def test_oversized_frame(raw: Raw) -> None:
    raw.send(raw.headers(1, [(b":method", b"POST"), *GOOD[1:]], end_stream=False))
    frame = DataFrame(1)
    frame.data = b"x" * 20000  # SETTINGS_MAX_FRAME_SIZE is 16384
    raw.send(frame)
    assert goaway(raw.frames()) == FRAME_SIZE_ERROR


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        (SettingsFrame.ENABLE_PUSH, 2, PROTOCOL_ERROR),
        (SettingsFrame.INITIAL_WINDOW_SIZE, 2**31, FLOW_CONTROL_ERROR),
        (SettingsFrame.MAX_FRAME_SIZE, 100, PROTOCOL_ERROR),
        (SettingsFrame.MAX_FRAME_SIZE, 2**24, PROTOCOL_ERROR),
    ],
)
def test_invalid_settings(raw: Raw, setting: int, value: int, code: int) -> None:
    raw.send(SettingsFrame(0, settings={setting: value}))
    assert goaway(raw.frames()) == code


def test_continuation_without_headers(raw: Raw) -> None:
    frame = ContinuationFrame(1)
    frame.data = raw.encoder.encode(GOOD)
    frame.flags.add("END_HEADERS")
    raw.send(frame)
    assert goaway(raw.frames()) == PROTOCOL_ERROR


def test_garbled_preface_is_not_http2(nginx_proxy: Proxy) -> None:
    """Sniffing: bytes that are not the preface are not HTTP/2 (opaque TCP or HTTP/1)."""
    sock = socket.create_connection(("127.0.0.1", nginx_proxy.port), timeout=5)
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + SettingsFrame(0).serialize())
        assert not any(isinstance(f, SettingsFrame) for f in read_frames(sock, 1.0))
    finally:
        sock.close()


# -- the field checks, against the regular expressions they replaced ---------------------

_NAME_CHARS = st.sampled_from([*b"az09-_.~!#$%&'*+^`|", *b"AZ :\r\n\x00\t\x7f\x80"])


@given(st.lists(_NAME_CHARS, max_size=12).map(bytes))
def test_field_names_checked_as_the_token_rule_says(name: bytes) -> None:
    token = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]").search
    bad = not name or token(name) is not None  # a token has one character at least
    assert h2_codec._bad_name(name) == bad
    assert h2_codec._bad_name(name) == bad  # again, memoised


@given(st.lists(st.sampled_from([*b"a ;\t\r\n\x00\x0b\x7f\xff"]), max_size=10).map(bytes))
def test_field_values_checked_as_before(value: bytes) -> None:
    assert h2_codec._bad_value(value) == bool(re.search(rb"[\r\n\x00]|^[ \t]|[ \t]$", value))


POST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/")]


@pytest.mark.parametrize("shape", ["head ends the stream", "trailers end a short body"])
def test_a_body_shorter_than_its_content_length_is_never_forwarded(
    nginx_proxy: Proxy, shape: str
) -> None:
    # RFC 9113 section 8.1.1. Passed on to HTTP/1 as `content-length: 100`, a shorter body
    # would leave the upstream reading the next request's head as its rest (H2.CL
    # smuggling), on a connection the pool then reuses.
    connection = Raw(nginx_proxy.port)
    before = nginx_proxy.stats()["upstream_rq_total"]
    try:
        head = [*POST, (b"content-length", b"100")]
        if shape == "head ends the stream":
            connection.send(connection.headers(1, head))
        else:
            data = DataFrame(1)
            data.data = b"x" * 10
            connection.send(
                connection.headers(1, head, end_stream=False),
                data,
                connection.headers(1, [(b"x-checksum", b"1")]),
            )
        assert goaway(connection.frames()) == PROTOCOL_ERROR
    finally:
        connection.close()
    assert nginx_proxy.stats()["upstream_rq_total"] == before
