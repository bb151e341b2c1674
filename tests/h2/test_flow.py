"""Translation to an HTTP/1.1 upstream, and flow control end to end: slow readers slow the writers."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time

import grpc

from tests.h2.client import RawH2
from tests.h2.conftest import OPTIONS, Proxy, method
from tests.h2.h2server import ScriptedH2Server

MiB = 1 << 20


def test_h2_client_to_http1_upstream(nginx_proxy: Proxy) -> None:
    client = RawH2(nginx_proxy.port)
    try:
        get = client.request("/echo?x=1")
        post = client.request("/echo", "POST", b"a" * 10_000)  # no length: chunked upstream
        assert client.until(lambda: {get, post} <= client.ended)
        assert client.status(get) == 200
        line = bytes(client.bodies[get]).decode()
        method_, target, host, te, request_id = line.split(" ")
        assert (method_, target, host) == ("GET", "/echo?x=1", "test")
        assert te == "" and request_id.strip()
        assert bytes(client.bodies[post]).startswith(b"POST /echo test")
        headers = dict(client.headers[get])
        assert b"connection" not in headers and b"keep-alive" not in headers
    finally:
        client.close()


def test_h2load_through_http1_upstream(nginx_proxy: Proxy) -> None:
    out = subprocess.run(
        ["h2load", "-c", "4", "-m", "16", "-n", "2000", f"http://127.0.0.1:{nginx_proxy.port}/"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "2000 succeeded" in out, out
    assert "status codes: 2000 2xx" in out, out


def test_one_gib_through_one_stream_keeps_rss_bounded(nginx: int) -> None:
    curl = shutil.which("curl")
    assert curl, "curl (Debian curl) is needed for the 1 GiB download"
    proxy = Proxy(nginx)
    try:
        url = f"http://127.0.0.1:{proxy.port}/"
        subprocess.run([curl, "-s", "--http2-prior-knowledge", "-o", "/dev/null", url], check=True)
        baseline = proxy.hwm_kb()
        started = time.monotonic()
        result = subprocess.run(
            [curl, "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
             url + "files/huge"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        assert result.stdout == f"200 {1 << 30}", result.stdout
        growth_mb = (proxy.hwm_kb() - baseline) / 1024
        # Windows and buffers are 256 KiB per stream; the rest is allocator slack.
        assert growth_mb < 64, f"peak RSS grew {growth_mb:.0f} MiB for 1 GiB in {elapsed:.1f}s"
    finally:
        proxy.stop()


def test_slow_reader_pauses_the_upstream(nginx_proxy: Proxy) -> None:
    client = RawH2(nginx_proxy.port, auto_ack=False)
    try:
        before = nginx_proxy.stats()["upstream_cx_rx_bytes_total"]
        stream = client.request("/files/big")  # 64 MiB; we never open our window
        assert client.until(lambda: stream in client.headers)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            client.read(0.1)
        taken = nginx_proxy.stats()["upstream_cx_rx_bytes_total"] - before
        assert len(client.bodies.get(stream, b"")) <= 65535
        assert taken < 8 * MiB, f"proxy read {taken / MiB:.1f} MiB for a reader that took 64 KiB"
    finally:
        client.close()


def test_slow_upstream_pauses_the_client() -> None:
    """An upstream that never reads: the client's sends stop once windows and buffers fill."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(10)
        with contextlib.suppress(OSError):
            # The first connection is the proxy's h2c attempt: refused by closing, so the
            # destination is served over HTTP/1.1; that second connection is never read.
            listener.accept()[0].close()
            accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    proxy = Proxy(listener.getsockname()[1])
    client = RawH2(proxy.port)
    try:
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            stream,
            [(":method", "POST"), (":scheme", "http"), (":authority", "t"), (":path", "/up")],
        )
        client.flush()
        sent = 0
        chunk = b"x" * 16384
        idle_since = time.monotonic()
        end = time.monotonic() + 10
        while sent < 128 * MiB and time.monotonic() < end and time.monotonic() - idle_since < 1.0:
            window = min(
                client.conn.local_flow_control_window(stream), client.conn.max_outbound_frame_size
            )
            if window >= len(chunk):
                client.conn.send_data(stream, chunk)
                client.flush()
                sent += len(chunk)
                idle_since = time.monotonic()
            else:
                client.read(0.05)
        # Kernel socket buffers on loopback hold a few MiB; the proxy itself ~256 KiB.
        assert sent < 32 * MiB, (
            f"client sent {sent / MiB:.0f} MiB into an upstream that reads nothing"
        )
        stats = proxy.stats()
        assert stats["downstream_rq_active"] == 1
        assert stats["upstream_cx_total"] == 2 and stats["upstream_rq_total"] == 1, stats
        assert accepted, "the proxy never opened its HTTP/1.1 connection"
    finally:
        client.close()
        proxy.stop()
        for sock in accepted:
            sock.close()
        listener.close()


def test_grpc_stream_of_256_mib_keeps_rss_bounded(grpc_server: int) -> None:
    proxy = Proxy(grpc_server)
    try:
        with grpc.insecure_channel(proxy.target, options=OPTIONS) as channel:
            stream = method(channel, "unary_stream", "ServerStream")
            assert len(list(stream(b"2x1000", timeout=5))) == 2
            baseline = proxy.hwm_kb()
            total = 0
            for message in stream(b"64x4194304", timeout=60):
                total += len(message)
            assert total == 256 * MiB
        growth_mb = (proxy.hwm_kb() - baseline) / 1024
        assert growth_mb < 64, f"peak RSS grew {growth_mb:.0f} MiB for a 256 MiB gRPC stream"
    finally:
        proxy.stop()


def test_h2_client_to_h2_only_upstream() -> None:
    """Non-gRPC HTTP/2 goes to the upstream over HTTP/2 when it speaks h2c (HTTP/1 would fail)."""
    server = ScriptedH2Server()
    proxy = Proxy(server.port)
    client = RawH2(proxy.port)
    try:
        stream = client.request("/plain", "GET")
        assert client.until(lambda: stream in client.ended)
        assert client.status(stream) == 200
        assert proxy.stats()["upstream_cx_protocol_error"] == 0
    finally:
        client.close()
        proxy.stop()
        server.close()


def test_http1_only_upstream_is_remembered(nginx: int) -> None:
    """The h2c handshake fails once; later requests go straight to HTTP/1.1."""
    proxy = Proxy(nginx)
    client = RawH2(proxy.port)
    try:
        streams = [client.request(f"/echo?{index}") for index in range(20)]
        assert client.until(lambda: set(streams) <= client.ended)
        assert all(client.status(stream) == 200 for stream in streams)
        later = client.request("/echo?later")
        assert client.until(lambda: later in client.ended) and client.status(later) == 200
        assert proxy.stats()["upstream_cx_protocol_error"] == 1
    finally:
        client.close()
        proxy.stop()


def test_ended_streams_give_the_connection_window_back() -> None:
    """Responses ending in their last DATA frame, 48 MiB over one upstream h2 connection.

    End to end only part of each response arrives with its END_STREAM, so this alone would
    not catch a leak; test_units checks the accounting exactly."""
    server = ScriptedH2Server()
    proxy = Proxy(server.port)
    client = RawH2(proxy.port)
    try:
        for _ in range(24):
            streams = [client.request("/bulk") for _ in range(8)]
            wanted = set(streams)
            assert client.until(lambda: wanted <= client.ended, timeout=10)  # noqa: B023
            for stream in streams:
                assert len(client.bodies[stream]) == 256 * 1024
                del client.bodies[stream]
    finally:
        client.close()
        proxy.stop()
        server.close()


def test_many_http1_answers_to_one_fast_http2_client_keep_rss_bounded(nginx: int) -> None:
    """Sixteen 8 MiB answers from HTTP/1 upstreams at once, to a client whose windows let
    them all through: the framed output is written as it grows, so the socket's high mark
    pauses the upstreams (before, one loop turn framed hundreds of MB: 230-465 MB peak)."""
    proxy = Proxy(nginx)
    client = RawH2(proxy.port, window=16 * MiB)
    try:
        client.conn.increment_flow_control_window(512 * MiB)
        client.flush()
        baseline = proxy.hwm_kb()
        range_8m = [("range", f"bytes=0-{8 * MiB - 1}")]
        streams = [client.request("/files/big", headers=range_8m) for _ in range(16)]
        assert client.until(lambda: all(s in client.ended for s in streams), timeout=60)
        assert all(len(client.bodies[s]) == 8 * MiB for s in streams)
        growth_mb = (proxy.hwm_kb() - baseline) / 1024
        assert growth_mb < 48, f"peak RSS grew {growth_mb:.0f} MiB for 128 MiB over one connection"
    finally:
        client.close()
        proxy.stop()
