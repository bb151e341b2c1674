"""Bad input and failing upstreams: the right status, the right flag, a counter, never a traceback."""

from __future__ import annotations

import concurrent.futures
import http.client
import socket
import time
from pathlib import Path

import pytest

from tests.proxy.conftest import (
    Proxy,
    free_port,
    log_entries,
    raw_exchange,
    status_of,
    unanswered_port,
)
from tests.proxy.upstream_app import Server

SMUGGLING = {
    "cl-and-te": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate-cl": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\rtwo\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "te-not-chunked": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "negative-cl": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "garbage-line": b"GET / HTTP/1.1\r\nHost: a\r\n\x01\x02: x\r\n\r\n",
}


@pytest.mark.parametrize("shape", sorted(SMUGGLING))
def test_smuggling_shapes_rejected_and_never_forwarded(
    proxy: Proxy, upstream: Server, shape: str
) -> None:
    data = raw_exchange(proxy.port, SMUGGLING[shape] + b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(data) == 400
    assert b"connection: close" in data.lower()
    assert data.count(b"HTTP/1.1 ") == 1  # closed: the trailing request is not served
    assert not [r for r in upstream.state.requests if r.path in ("/echo", "/after")]
    stats = proxy.stats()
    assert stats["downstream_cx_protocol_error"] == 1 and stats["downstream_rq_4xx"] == 1


def test_oversized_headers_431_and_uri_414(proxy: Proxy) -> None:
    assert (
        status_of(
            raw_exchange(
                proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"
            )
        )
        == 431
    )
    many = b"".join(b"X-%d: v\r\n" % i for i in range(150))
    assert (
        status_of(raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n"))
        == 431
    )
    assert (
        status_of(
            raw_exchange(proxy.port, b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        )
        == 414
    )


def test_not_http_after_http_start_is_400(proxy: Proxy) -> None:
    assert status_of(raw_exchange(proxy.port, b"GET / HTTP/1.1\r\n\x00\x00\x00\r\n\r\n")) == 400


def test_upstream_connect_failure_503_uf(upstream: Server, codec: str) -> None:
    proxy = Proxy(free_port(), codec)  # nothing listens there
    try:
        data = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert status_of(data) == 503
        assert b"connection failure" in data
        stats = proxy.stats()
        # Tried twice: the default retry policy sends a failed connect once more.
        assert stats["upstream_cx_connect_fail"] == 2 and stats["downstream_rq_5xx"] == 1
    finally:
        proxy.stop()


def test_upstream_timeout_504_ut(upstream: Server, codec: str) -> None:
    proxy = Proxy(upstream.port, codec, env={"PILOTFISH_ROUTE_TIMEOUT": "300ms"})
    try:
        started = time.monotonic()
        data = raw_exchange(proxy.port, b"GET /slow?ms=2000 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status_of(data) == 504 and b"upstream request timeout" in data
        assert time.monotonic() - started < 1.5
        assert proxy.stats()["upstream_rq_timeout"] == 1
        # the connection that timed out is not reused for the next request
        assert (
            status_of(
                raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            )
            == 200
        )
    finally:
        proxy.stop()


def test_upstream_closes_mid_response_cuts_downstream(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/close-mid")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead):
        response.read()  # the proxy must not pretend the body was complete
    assert proxy.stats()["upstream_cx_destroy_remote_with_active_rq"] == 1


def test_a_cut_after_the_head_is_logged_as_after_the_response_started(
    upstream: Server, codec: str, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = Proxy(upstream.port, codec, env={"PILOTFISH_ACCESS_LOG": str(log)})
    try:
        data = raw_exchange(proxy.port, b"GET /close-mid HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status_of(data) == 200
        (entry,) = log_entries(log)
    finally:
        proxy.stop()
    assert entry["response_flags"] == "UC"
    assert entry["response_code_details"] == (
        "upstream_reset_after_response_started{connection_termination}"  # Envoy's words
    )


def test_upstream_closes_before_response_503_uc(proxy: Proxy) -> None:
    data = raw_exchange(proxy.port, b"GET /close-before HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(data) == 503 and b"connection termination" in data


def test_upstream_garbage_502(proxy: Proxy) -> None:
    data = raw_exchange(proxy.port, b"GET /garbage HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(data) == 502
    assert proxy.stats()["upstream_cx_protocol_error"] == 1


def test_error_statuses_pass_through_unchanged(proxy: Proxy) -> None:
    for code in (404, 429, 500, 503):
        data = raw_exchange(
            proxy.port, b"GET /status/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % code
        )
        assert status_of(data) == code and data.endswith(b"status\n")
    stats = proxy.stats()
    assert stats["downstream_rq_4xx"] == 2 and stats["downstream_rq_5xx"] == 2


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pilotfish.yaml"
    path.write_text(text)
    return str(path)


def _slow_requests(port: int, count: int) -> list[int]:
    def one(_: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/slow?ms=300")
        status = conn.getresponse().status
        conn.close()
        return status

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_per_destination_connection_cap_queues(upstream: Server, tmp_path: Path) -> None:
    upstream.state.reset()
    # Other tests' proxies may still hold pooled connections to this upstream: count
    # only what this proxy adds to them.
    already_open = upstream.state.active
    config = _config(tmp_path, "limits:\n  max_upstream_connections: 2\n")
    proxy = Proxy(upstream.port, args=["--config", config])
    try:
        assert _slow_requests(proxy.port, 6) == [200] * 6
        assert upstream.state.max_active - already_open <= 2
        assert proxy.stats()["upstream_cx_total"] == 2
    finally:
        proxy.stop()


def test_pending_overflow_503_uo(upstream: Server, tmp_path: Path) -> None:
    config = _config(
        tmp_path, "limits:\n  max_upstream_connections: 1\n  max_pending_requests: 1\n"
    )
    proxy = Proxy(upstream.port, args=["--config", config])
    try:
        statuses = _slow_requests(proxy.port, 5)
        assert statuses.count(200) >= 2 and 503 in statuses
        assert proxy.stats()["upstream_rq_pending_overflow"] == statuses.count(503)
    finally:
        proxy.stop()


def test_client_disconnect_mid_request_is_counted(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
        sock.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.1)
    time.sleep(0.5)
    stats = proxy.stats()
    assert stats["downstream_rq_rx_reset"] == 1 and stats["downstream_rq_active"] == 0


def test_stream_idle_timeout_408_si(upstream: Server, tmp_path: Path) -> None:
    config = _config(tmp_path, "timeouts:\n  stream_idle: 300ms\n")
    proxy = Proxy(upstream.port, args=["--config", config])
    try:
        started = time.monotonic()
        # a body that never finishes arriving: the stream goes quiet
        data = raw_exchange(
            proxy.port,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
            timeout=5,
        )
        assert status_of(data) == 408 and b"connection: close" in data.lower()
        assert time.monotonic() - started < 3
        assert proxy.stats()["downstream_rq_4xx"] == 1
    finally:
        proxy.stop()


def test_upstream_connect_timeout_503_uf(tmp_path: Path) -> None:
    """A connect that is never answered ends at timeouts.connect: 503 UF with Envoy's
    reason, counted as a connect timeout (and retried once, as a connect failure is)."""
    log = tmp_path / "access.log"
    config = _config(tmp_path, "timeouts:\n  connect: 300ms\n")
    with unanswered_port() as port:
        proxy = Proxy(port, args=["--config", config], env={"PILOTFISH_ACCESS_LOG": str(log)})
        try:
            started = time.monotonic()
            data = raw_exchange(
                proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            took = time.monotonic() - started
            stats = proxy.stats()
            (entry,) = log_entries(log)
        finally:
            proxy.stop()
    assert status_of(data) == 503 and b"connection timeout" in data, data
    assert 0.5 < took < 2.5  # two tries of 300 ms, with the retry's backoff between
    assert stats["upstream_cx_connect_timeout"] == 2 and stats["upstream_cx_connect_fail"] == 2
    assert entry["response_flags"] == "UF,URX"
    assert entry["response_code_details"] == (
        "upstream_reset_before_response_started{connection_timeout}"
    )
