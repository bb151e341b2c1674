"""Stream and connection lifecycle: upstream resets mapped downstream, GOAWAY on drain, PING and SETTINGS."""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import h2.events
import hpack
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame

from tests.h2.client import RawH2, read_frames
from tests.h2.conftest import SERVICE, Proxy
from tests.h2.h2server import INTERNAL_ERROR, ScriptedH2Server
from tests.h2.test_strict import Raw, ended

GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


def grpc_body(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Path]]:
    server = ScriptedH2Server()
    log = tmp_path_factory.mktemp("log") / "access.log"
    proxy = Proxy(server.port, access_log=str(log))
    yield proxy, log
    proxy.stop()
    server.close()


def log_lines(log: Path) -> list[dict[str, object]]:
    time.sleep(0.2)
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_upstream_reset_before_headers_is_a_502_ur(scripted: tuple[Proxy, Path]) -> None:
    proxy, log = scripted
    client = RawH2(proxy.port)
    try:
        stream = client.request("/svc/reset-before", "POST", grpc_body(b"x"), GRPC)
        assert client.until(lambda: stream in client.ended or stream in client.resets)
        # gRPC callers get the gRPC form of Envoy's 502: trailers-only, UNAVAILABLE.
        headers = dict(client.headers[stream])
        assert headers[b":status"] == b"200" and headers[b"grpc-status"] == b"14"
        entries = [e for e in log_lines(log) if e.get("path") == "/svc/reset-before"]
        assert entries and "UR" in str(entries[-1]["response_flags"]), entries
    finally:
        client.close()


def test_upstream_reset_after_headers_resets_downstream(scripted: tuple[Proxy, Path]) -> None:
    proxy, _log = scripted
    client = RawH2(proxy.port)
    try:
        stream = client.request("/svc/reset-after", "POST", grpc_body(b"x"), GRPC)
        assert client.until(lambda: stream in client.resets)
        assert client.status(stream) == 200  # the headers had gone out
        assert client.resets[stream] == INTERNAL_ERROR
        ok = client.request("/svc/ok", "POST", grpc_body(b"x"), GRPC)  # connection unharmed
        assert client.until(lambda: ok in client.ended)
        assert (b"grpc-status", b"0") in client.trailers[ok]
    finally:
        client.close()


def test_ping_answered_and_settings_acknowledged(scripted: tuple[Proxy, Path]) -> None:
    proxy, _ = scripted
    client = RawH2(proxy.port)
    try:
        seen: list[object] = []
        client.conn.ping(b"pilotfsh")
        client.flush()
        end = time.monotonic() + 5
        while time.monotonic() < end and not (
            any(isinstance(e, h2.events.PingAckReceived) for e in seen)
            and any(isinstance(e, h2.events.SettingsAcknowledged) for e in seen)
        ):
            seen += client.read(0.5)
        ack = [e for e in seen if isinstance(e, h2.events.PingAckReceived)]
        assert ack and ack[0].ping_data == b"pilotfsh"
        assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in seen)
    finally:
        client.close()


def test_drain_sends_goaway_and_lets_streams_finish(grpc_server: int) -> None:
    """SIGTERM: GOAWAY(NO_ERROR, last stream) at once, the stream in flight still completes."""
    proxy = Proxy(grpc_server)
    raw = Raw(proxy.port)  # raw frames: h2's own client cannot finish streams after GOAWAY
    try:
        headers = [
            (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"),
            (b":path", f"/{SERVICE}/Unary".encode()), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]  # fmt: skip
        body = DataFrame(1, data=grpc_body(b"sleep:1.0"), flags=["END_STREAM"])
        raw.send(raw.headers(1, headers, end_stream=False), body)
        time.sleep(0.3)  # in flight upstream
        proxy.process.send_signal(signal.SIGTERM)
        frames = read_frames(raw.sock, 5, lambda frames: ended(frames, 1))
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[0].error_code == 0 and goaways[0].last_stream_id == 1
        assert frames.index(goaways[0]) < frames.index(next(f for f in frames if ended([f], 1)))
        decoder = hpack.Decoder()  # every header block, in order, for the HPACK state
        blocks = [
            [(bytes(name), bytes(value)) for name, value in decoder.decode(f.data, raw=True)]
            for f in frames
            if isinstance(f, HeadersFrame)
        ]
        assert (b"grpc-status", b"0") in blocks[-1], blocks
        data = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert data == grpc_body(b"sleep:1.0")
        assert proxy.process.wait(10) == 0
    finally:
        raw.close()
        proxy.stop()


def test_http1_client_upstream_reset_is_a_502_ur(scripted: tuple[Proxy, Path]) -> None:
    """An HTTP/1.1 gRPC caller whose HTTP/2 upstream resets the stream before answering."""
    proxy, log = scripted
    body = grpc_body(b"x")
    request = (
        b"POST /svc/reset-before HTTP/1.1\r\nHost: t\r\nContent-Type: application/grpc\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(request)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 502"), answer
    entries = [e for e in log_lines(log) if e.get("protocol") == "HTTP/1.1"]
    assert entries and "UR" in str(entries[-1]["response_flags"]), entries
