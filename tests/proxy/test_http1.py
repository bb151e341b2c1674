"""HTTP/1.1 through the proxy, against a real scriptable upstream; every test runs on both codecs."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import uuid

from tests.proxy.conftest import Proxy, raw_exchange
from tests.proxy.upstream_app import Server


def request(
    proxy: Proxy,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def seen(
    proxy: Proxy,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> dict:  # type: ignore[type-arg]
    status, _, data = request(proxy, method, "/headers", body, headers)
    assert status == 200
    info = json.loads(data)
    info["map"] = {k.lower(): v for k, v in info["headers"]}
    return info  # type: ignore[no-any-return]


def test_get_and_keep_alive_reuses_one_upstream_connection(proxy: Proxy, upstream: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for _ in range(10):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello")
    conn.close()
    stats = proxy.stats()
    assert stats["downstream_rq_2xx"] == 10
    assert stats["downstream_cx_total"] == 1
    assert stats["upstream_cx_total"] == 1
    assert stats["upstream_cx_pool_reuse"] == 9
    assert upstream.state.connections == 1


def test_header_policy(proxy: Proxy) -> None:
    info = seen(
        proxy,
        {
            "Connection": "X-Private, keep-alive",
            "X-Private": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Connection": "keep-alive",
            "X-Forwarded-For": "203.0.113.9",
            "Host": "service.example:8080",
            "X-App": "kept",
        },
    )
    names = info["map"]
    for hop in ("connection", "x-private", "keep-alive", "te", "proxy-connection"):
        assert hop not in names, hop
    assert names["host"] == "service.example:8080"
    assert names["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert names["x-forwarded-proto"] == "http"
    assert names["x-app"] == "kept"
    assert uuid.UUID(names["x-request-id"]).version == 4


def test_request_id_is_kept_when_present(proxy: Proxy) -> None:
    assert seen(proxy, {"X-Request-Id": "abc-123"})["map"]["x-request-id"] == "abc-123"


def test_response_hop_by_hop_removed(proxy: Proxy) -> None:
    status, headers, body = request(proxy, "GET", "/hop")
    assert (status, body) == (200, b"hop\n")
    assert "x-secret" not in headers and "keep-alive" not in headers
    assert headers["x-kept"] == "yes"


def test_post_content_length_and_chunked(proxy: Proxy) -> None:
    assert request(proxy, "POST", "/echo", b"x" * 100_000)[2] == b"x" * 100_000
    chunks = iter([b"abc", b"defg", b"h" * 70_000])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("POST", "/echo", body=chunks, encode_chunked=True)
    assert conn.getresponse().read() == b"abcdefg" + b"h" * 70_000
    conn.close()


def test_chunked_response_with_trailers(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port, b"GET /chunked-trailers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in data.lower()
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n"


def test_pipelined_requests_answered_in_order(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port,
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"201", b"200", b"200"]
    assert (
        data.index(b"slow\n")
        < data.index(b"status\n")
        < data.index(b"body")
        < data.rindex(b"hello")
    )


def test_head_has_no_body_and_connection_continues(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port,
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    first, rest = data.split(b"\r\n\r\n", 1)
    assert b"content-length: 5" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"hello")


def test_expect_100_continue(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"12345")
        response = sock.recv(1000)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"12345")


def test_informational_1xx_forwarded(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port, b"GET /early-hints HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 103 ")
    assert b"link: </style.css>; rel=preload" in data.lower()
    assert b"HTTP/1.1 200 " in data and data.endswith(b"after hints\n")


def test_http10_client(proxy: Proxy) -> None:
    data = raw_exchange(proxy.port, b"GET /download?n=1000&chunked=1 HTTP/1.0\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()  # a 1.0 client gets a close-delimited body
    assert len(body) == 1000
    info = json.loads(
        raw_exchange(proxy.port, b"GET /headers HTTP/1.0\r\n\r\n").split(b"\r\n\r\n", 1)[1]
    )
    assert info["version"] == "HTTP/1.1"
    # an HTTP/1.1 upstream needs a Host: the destination is named when the client gave none
    assert dict((k.lower(), v) for k, v in info["headers"])["host"] == f"127.0.0.1:{proxy.upstream_port}"


def test_connection_close_is_honoured(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout=3
    )
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data.lower()


def test_upstream_close_delimited_response(proxy: Proxy) -> None:
    status, _, body = request(proxy, "GET", "/no-length")
    assert (status, body) == (200, b"until the end")


def test_upstream_connection_close_is_not_reused(proxy: Proxy, upstream: Server) -> None:
    for _ in range(3):
        assert request(proxy, "GET", "/status/200?close=1")[0] == 200
    assert proxy.stats()["upstream_cx_total"] == 3
    assert upstream.state.connections == 3


def test_websocket_upgrade_becomes_a_tunnel(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1000)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"upgrade: websocket" in head.lower()
        for message in (b"hello", b"tunnel " * 1000):
            sock.sendall(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += sock.recv(65536)
            assert echoed == message.upper()


def test_many_sequential_connections(proxy: Proxy) -> None:
    for index in range(50):
        status, _, body = request(proxy, "GET", f"/?n={index}")
        assert (status, body) == (200, b"hello")
    deadline = time.monotonic() + 2
    while proxy.stats()["downstream_cx_active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.stats()["downstream_cx_active"] == 0


def test_declined_upgrade_never_forwards_the_tunnel_bytes(proxy: Proxy, upstream: Server) -> None:
    data = raw_exchange(
        proxy.port,
        b"GET /status/400 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    assert re.match(rb"HTTP/1\.1 400 ", data) and b"connection: close" in data.lower()
    assert data.count(b"HTTP/1.1 ") == 1
    time.sleep(0.2)
    assert not [r for r in upstream.state.requests if r.path == "/smuggled"]
