"""Protections as Envoy has them: floods end in GOAWAY ENHANCE_YOUR_CALM for the abuser only.

Each abuser sends a bounded burst (1000 frames or fewer); a second client on the same
proxy is served before and after. Limits on concurrent streams, header list size and
CONTINUATION frames are checked the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.h2.client import RawH2
from tests.h2.conftest import Proxy
from tests.h2.test_strict import GOOD, PROTOCOL_ERROR, Raw, goaway, reset

ENHANCE_YOUR_CALM = 0xB
REFUSED_STREAM = 0x7
CANCEL = 0x8


@pytest.fixture()
def bystander(nginx_proxy: Proxy) -> Iterator[RawH2]:
    """A well-behaved client that must keep being served while another one misbehaves."""
    client = RawH2(nginx_proxy.port)
    stream = client.request("/")
    assert client.until(lambda: stream in client.ended) and client.status(stream) == 200
    yield client
    stream = client.request("/")
    assert client.until(lambda: stream in client.ended), "the bystander was not served"
    assert client.status(stream) == 200 and client.goaway is None
    client.close()


def abuse(port: int, *frames: object) -> tuple[int | None, Raw]:
    raw = Raw(port)
    # Closed on us mid-burst is what we want; the GOAWAY is then already in our buffer.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        raw.sock.sendall(b"".join(frame.serialize() for frame in frames))  # type: ignore[attr-defined]
    frames_back = raw.frames(timeout=5)
    return goaway(frames_back), raw


def test_ping_flood(nginx_proxy: Proxy, bystander: RawH2) -> None:
    before = nginx_proxy.stats()
    pings = [PingFrame(0, opaque_data=index.to_bytes(8, "big")) for index in range(1000)]
    code, raw = abuse(nginx_proxy.port, *pings)
    assert code == ENHANCE_YOUR_CALM
    raw.close()
    after = nginx_proxy.stats()
    assert after["http2_flood_close"] - before["http2_flood_close"] == 1
    assert after["http2_goaway_sent"] - before["http2_goaway_sent"] == 1


def test_settings_flood(nginx_proxy: Proxy, bystander: RawH2) -> None:
    code, raw = abuse(nginx_proxy.port, *[SettingsFrame(0) for _ in range(1000)])
    assert code == ENHANCE_YOUR_CALM
    raw.close()


def test_rapid_reset(nginx_proxy: Proxy, bystander: RawH2) -> None:
    encoder_conn = Raw(nginx_proxy.port)  # only for its hpack encoder state
    frames: list[object] = []
    for index in range(1000):
        stream_id = 2 * index + 1
        frames.append(encoder_conn.headers(stream_id, GOOD, end_stream=False))
        frames.append(RstStreamFrame(stream_id, error_code=CANCEL))
    encoder_conn.close()
    code, raw = abuse(nginx_proxy.port, *frames)
    assert code == ENHANCE_YOUR_CALM
    raw.close()


def test_continuation_flood(nginx_proxy: Proxy, bystander: RawH2) -> None:
    raw = Raw(nginx_proxy.port)
    first = HeadersFrame(1)
    first.data = raw.encoder.encode(GOOD)
    frames: list[object] = [first]
    for _ in range(1000):
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00" * 16  # never END_HEADERS
        frames.append(continuation)
    raw.close()
    code, abuser = abuse(nginx_proxy.port, *frames)
    assert code == ENHANCE_YOUR_CALM
    abuser.close()


def test_concurrent_stream_limit(grpc_proxy: Proxy) -> None:
    """Streams over SETTINGS_MAX_CONCURRENT_STREAMS (100) are refused, not the connection."""
    raw = Raw(grpc_proxy.port)
    try:
        post = [
            (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"),
            (b":path", b"/pilotfish.test.Echo/Unary"), (b"content-type", b"application/grpc"),
        ]  # fmt: skip
        for index in range(101):  # requests never end, and gRPC answers only after the end
            raw.send(raw.headers(2 * index + 1, post, end_stream=False))
        frames = raw.frames(timeout=3, until=lambda frames: reset(frames, 201) is not None)
        assert reset(frames, 201) == REFUSED_STREAM
        assert goaway(frames) is None
    finally:
        raw.close()


def test_header_list_too_large(nginx_proxy: Proxy, bystander: RawH2) -> None:
    """Over 60 KiB of headers (Envoy's max_request_headers_kb): refused, others unharmed."""
    raw = Raw(nginx_proxy.port)
    try:
        big = [*GOOD, *[(f"x-big-{index}".encode(), b"v" * 1500) for index in range(50)]]
        block = raw.headers(1, big).data
        pieces = [block[start : start + 16384] for start in range(0, len(block), 16384)]
        first = HeadersFrame(1, flags=["END_STREAM"])
        first.data = pieces[0]
        blocks: list[HeadersFrame | ContinuationFrame] = [first]
        for piece in pieces[1:]:
            blocks.append(ContinuationFrame(1))
            blocks[-1].data = piece
        blocks[-1].flags.add("END_HEADERS")
        raw.send(*blocks)
        frames = raw.frames(timeout=3, until=lambda frames: reset(frames, 1) is not None)
        code = goaway(frames)
        assert reset(frames, 1) is not None or code in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
        assert not any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in frames)
    finally:
        raw.close()


def test_too_many_headers(nginx_proxy: Proxy, bystander: RawH2) -> None:
    raw = Raw(nginx_proxy.port)
    try:
        many = [*GOOD, *[(f"x-h-{index}".encode(), b"1") for index in range(200)]]
        raw.send(raw.headers(1, many))
        frames = raw.frames(timeout=3, until=lambda frames: reset(frames, 1) is not None)
        assert reset(frames, 1) == PROTOCOL_ERROR
    finally:
        raw.close()
