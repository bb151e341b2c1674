"""gRPC end to end through the sidecar with real grpcio clients and servers (h2c both sides)."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest

from tests.h2.conftest import CANCELLED, OPTIONS, Proxy, method, start_grpc_server


def test_unary(channel: grpc.Channel) -> None:
    unary = method(channel, "unary_unary", "Unary")
    assert unary(b"hello", timeout=5) == b"hello"
    for index in range(50):
        assert unary(str(index).encode(), timeout=5) == str(index).encode()


def test_unary_metadata_and_trailers(channel: grpc.Channel) -> None:
    unary = method(channel, "unary_unary", "Unary")
    response, call = unary.with_call(b"metadata", metadata=(("x-custom", "value"),), timeout=5)
    assert b"'x-custom', 'value'" in response
    assert b"x-request-id" in response  # the proxy's header policy applied
    assert ("x-trailer", "trailer-value") in call.trailing_metadata()


def test_server_streaming(channel: grpc.Channel) -> None:
    stream = method(channel, "unary_stream", "ServerStream")
    messages = list(stream(b"100x1000", timeout=10))
    assert len(messages) == 100
    assert messages[7][:4] == (7).to_bytes(4, "big")


def test_client_streaming(channel: grpc.Channel) -> None:
    upload = method(channel, "stream_unary", "ClientStream")
    assert upload(iter([b"x" * 1000] * 200), timeout=10) == b"200 200000"


def test_bidi_streaming(channel: grpc.Channel) -> None:
    bidi = method(channel, "stream_stream", "Bidi")
    replies = list(bidi(iter([b"abc", b"hello", b"xyz" * 100]), timeout=10))
    assert replies == [b"cba", b"olleh", b"zyx" * 100]


@pytest.mark.parametrize("code", ["NOT_FOUND", "PERMISSION_DENIED", "INTERNAL", "UNAVAILABLE"])
def test_error_status(channel: grpc.Channel, code: str) -> None:
    unary = method(channel, "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as caught:
        unary(f"fail:{code}".encode(), timeout=5)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert code in caught.value.details()


def test_deadline_exceeded(channel: grpc.Channel, grpc_proxy: Proxy) -> None:
    unary = method(channel, "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as caught:
        unary(b"sleep:1.5", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert unary(b"after", timeout=5) == b"after"  # the connection carries on


def test_large_messages(channel: grpc.Channel) -> None:
    unary = method(channel, "unary_unary", "Unary")
    big = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    assert unary(big, timeout=30) == big


def test_concurrent_calls_share_connections(channel: grpc.Channel, grpc_proxy: Proxy) -> None:
    unary = method(channel, "unary_unary", "Unary")
    futures = [unary.future(str(index).encode(), timeout=10) for index in range(200)]
    assert [f.result() for f in futures] == [str(index).encode() for index in range(200)]
    stats = grpc_proxy.stats()
    assert stats["upstream_cx_active"] <= 3, stats


def test_went_through_the_proxy(channel: grpc.Channel, grpc_proxy: Proxy) -> None:
    before = grpc_proxy.stats()
    unary = method(channel, "unary_unary", "Unary")
    for _ in range(10):
        unary(b"x", timeout=5)
    after = grpc_proxy.stats()
    assert after["downstream_cx_http2_total"] >= 1
    assert after["downstream_rq_total"] - before["downstream_rq_total"] == 10
    assert after["upstream_rq_total"] - before["upstream_rq_total"] == 10
    assert after["downstream_rq_active"] == 0


def test_grpc_status_reaches_telemetry(channel: grpc.Channel, grpc_proxy: Proxy) -> None:
    unary = method(channel, "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError):
        unary(b"fail:NOT_FOUND", timeout=5)
    url = f"http://127.0.0.1:{grpc_proxy.admin_port}/stats/prometheus"
    series: list[str] = []
    end = time.monotonic() + 5
    while time.monotonic() < end:  # workers publish metrics periodically
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        series = [line for line in text.splitlines() if line.startswith("istio_requests_total{")]
        if any('grpc_response_status="5"' in line for line in series):
            break
        time.sleep(0.2)
    failed = [line for line in series if 'grpc_response_status="5"' in line]
    assert failed, series
    assert 'request_protocol="grpc"' in failed[0] and 'response_code="200"' in failed[0]


def test_pool_honours_max_concurrent_streams() -> None:
    """A server allowing 2 streams per connection: 10 concurrent calls need 5 connections."""
    server, port = start_grpc_server(options=[*OPTIONS, ("grpc.max_concurrent_streams", 2)])
    proxy = Proxy(port)
    try:
        with grpc.insecure_channel(proxy.target, options=OPTIONS) as chan:
            unary = method(chan, "unary_unary", "Unary")
            assert unary(b"warm", timeout=5) == b"warm"
            calls = [unary.future(b"sleep:0.5", timeout=10) for _ in range(10)]
            assert [call.result() for call in calls] == [b"sleep:0.5"] * 10
        stats = proxy.stats()
        assert stats["upstream_cx_total"] >= 5, stats
        assert stats["http2_rx_reset"] == 0  # nothing was refused by the server
    finally:
        proxy.stop()
        server.stop(None)


def test_upstream_without_http2_fails_fast(nginx: int) -> None:
    """gRPC to an HTTP/1.1-only upstream: UNAVAILABLE at once, not a hang."""
    proxy = Proxy(nginx)
    try:
        with grpc.insecure_channel(proxy.target, options=OPTIONS) as chan:
            unary = method(chan, "unary_unary", "Unary")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                unary(b"x", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 2
    finally:
        proxy.stop()


def test_many_responses_do_not_leak_the_connection_window(channel: grpc.Channel) -> None:
    """64 MiB of unary responses on one upstream connection, more than its 25 MiB window
    (test_units checks the per-stream accounting exactly)."""
    unary = method(channel, "unary_unary", "Unary")
    message = b"w" * (256 << 10)
    for _ in range(256):
        assert unary(message, timeout=5) == message


def test_client_cancel_reaches_the_server(channel: grpc.Channel) -> None:
    """The client resets its stream; the proxy resets the upstream one; the server sees it."""
    stream = method(channel, "unary_stream", "ServerStream")
    call = stream(b"slow:cancel-me", timeout=10)
    assert next(call) == (0).to_bytes(4, "big")
    call.cancel()
    end = time.monotonic() + 3
    while b"slow:cancel-me" not in CANCELLED and time.monotonic() < end:
        time.sleep(0.05)
    assert b"slow:cancel-me" in CANCELLED


def test_grpc_messages_are_counted_each_way(grpc_server: int) -> None:
    # istio_request_messages_total / istio_response_messages_total (contracts.md): every
    # message of client-, server- and bidi-streaming calls, however frames cut them.
    proxy = Proxy(grpc_server)
    try:
        with grpc.insecure_channel(proxy.target, options=OPTIONS) as chan:
            upload = method(chan, "stream_unary", "ClientStream")
            assert upload(iter([b"x" * 1000] * 20), timeout=10) == b"20 20000"
            assert len(list(method(chan, "unary_stream", "ServerStream")(b"50x1000", timeout=10))) == 50
            replies = list(method(chan, "stream_stream", "Bidi")(iter([b"a", b"b", b"c"]), timeout=10))
            assert len(replies) == 3
        url = f"http://127.0.0.1:{proxy.admin_port}/stats/prometheus"
        totals: dict[str, float] = {}
        end = time.monotonic() + 5
        while time.monotonic() < end and totals.get("istio_response_messages_total") != 54:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            totals = {}
            for line in text.splitlines():
                name, _, value = line.partition("{")
                if name in ("istio_request_messages_total", "istio_response_messages_total"):
                    assert 'request_protocol="grpc"' in line
                    totals[name] = totals.get(name, 0) + float(value.rpartition(" ")[2])
            time.sleep(0.1)
        # 20 + 1 + 3 messages up, 1 + 50 + 3 down.
        assert totals == {"istio_request_messages_total": 24, "istio_response_messages_total": 54}
    finally:
        proxy.stop()
