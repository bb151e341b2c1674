"""HTTP/1.1 clients to an HTTP/2 upstream: gRPC content-type goes over the h2 pool, trailers come back chunked."""

from __future__ import annotations

import socket
import struct
import time

from tests.h2.conftest import SERVICE, Proxy


def grpc_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def http1_grpc_call(port: int, name: str, message: bytes) -> tuple[bytes, bytes]:
    """One gRPC call over HTTP/1.1: (response head, rest), read until the last chunk."""
    body = grpc_frame(message)
    request = (
        f"POST /{SERVICE}/{name} HTTP/1.1\r\nHost: grpc.test\r\nContent-Type: application/grpc\r\n"
        f"TE: trailers\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        end = time.monotonic() + 5
        while not data.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in data:
            if time.monotonic() > end:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_http1_grpc_client_reaches_h2_upstream(grpc_proxy: Proxy) -> None:
    before = grpc_proxy.stats()
    head, rest = http1_grpc_call(grpc_proxy.port, "Unary", b"over http/1.1")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    assert grpc_frame(b"over http/1.1") in rest
    assert b"grpc-status: 0" in rest.lower()  # in the chunked trailer section
    after = grpc_proxy.stats()
    assert after["downstream_cx_http1_total"] > before["downstream_cx_http1_total"]


def test_http1_grpc_error_status(grpc_proxy: Proxy) -> None:
    head, rest = http1_grpc_call(grpc_proxy.port, "Unary", b"fail:NOT_FOUND")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"grpc-status: 5" in (head + rest).lower()


def test_http1_grpc_server_streaming(grpc_proxy: Proxy) -> None:
    head, rest = http1_grpc_call(grpc_proxy.port, "ServerStream", b"20x100")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert rest.count(struct.pack(">BI", 0, 100)) == 20
    assert b"grpc-status: 0" in rest.lower()
