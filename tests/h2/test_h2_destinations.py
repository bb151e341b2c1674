"""Destinations configured as HTTP/2 (`upstream_http2_ports`): HTTP/1.1 clients reach an h2c-only upstream."""

from __future__ import annotations

import hashlib
import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.config.load import ConfigError, build
from tests.h2.h2only import H2OnlyServer
from tests.proxy.conftest import ROOT, Proxy


def _get(port: int, path: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": "app.test", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def test_http1_client_to_h2_only_upstream(h2only: H2OnlyServer) -> None:
    proxy = Proxy(h2only.port, args=["--upstream-http2-ports", str(h2only.port)])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        # Several requests on one keep-alive client connection, one h2 connection upstream.
        conn.request("GET", "/hello?x=1", headers={"Host": "app.test"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        assert (
            body == f"h2 GET /hello?x=1 authority=app.test te=- body=0 sha={_sha(b'')}\n".encode()
        )
        # The upstream sent no content-length: chunked to the HTTP/1.1 client.
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.getheader("x-upstream") == "h2only"

        payload = bytes(range(256)) * 400  # 100 KiB: more than h2's initial stream window
        conn.request("POST", "/upload", body=payload, headers={"Host": "app.test"})
        response = conn.getresponse()
        assert response.read().endswith(f"body={len(payload)} sha={_sha(payload)}\n".encode())

        # A chunked request body becomes DATA frames.
        chunks = (payload[i : i + 7000] for i in range(0, len(payload), 7000))
        conn.request("PUT", "/chunked", body=chunks, headers={"Host": "app.test"},
                     encode_chunked=True)  # fmt: skip
        response = conn.getresponse()
        assert response.read().endswith(f"body={len(payload)} sha={_sha(payload)}\n".encode())

        # A small body that arrives with its head ends on its DATA frame (no empty one after).
        # One write, on a connection of its own: http.client sends head and body in two,
        # and a body read after its head was already sent upstream does end on an empty frame.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(
                b"POST /small HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
                b"Connection: close\r\n\r\nping"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert f"body=4 sha={_sha(b'ping')}\n".encode() in answer
        assert "/small" not in h2only.empty_ends

        conn.request("GET", "/cl", headers={"Host": "app.test", "Connection": "keep-alive"})
        response = conn.getresponse()
        text = response.read()
        assert response.getheader("content-length") == str(len(text))
        conn.close()

        stats = proxy.stats()
        assert h2only.connections == 1 and h2only.http1_closed == 0
        assert [path for _, path, _ in h2only.answered] == [
            "/hello?x=1",
            "/upload",
            "/chunked",
            "/small",
            "/cl",
        ]
        assert stats["downstream_cx_http1_total"] == 2  # the keep-alive one and /small's
        assert stats["upstream_cx_total"] == 1 and stats["upstream_rq_total"] == 5
        assert stats["upstream_cx_http2_total"] == 1 and stats["upstream_cx_http1_total"] == 0
        assert stats["downstream_rq_2xx"] == 5
    finally:
        proxy.stop()


def test_without_the_setting_http1_stays_http1(h2only: H2OnlyServer) -> None:
    # Another port listed: this destination is still sent HTTP/1.1, which it cannot take.
    other = 1 if h2only.port != 1 else 2
    proxy = Proxy(h2only.port, args=["--upstream-http2-ports", str(other)])
    try:
        status, _, body = _get(proxy.port, "/hello")
        # The server's SETTINGS frame is no HTTP/1.1 response: 502 UPE.
        assert status == 502 and b"invalid HTTP response" in body, body
        assert not h2only.answered
    finally:
        proxy.stop()


def test_env_and_config_file(h2only: H2OnlyServer, tmp_path: Path) -> None:
    proxy = Proxy(h2only.port, env={"PILOTFISH_UPSTREAM_HTTP2_PORTS": f"8080, {h2only.port}"})
    try:
        status, _, body = _get(proxy.port, "/from-env")
        assert status == 200 and body.startswith(b"h2 GET /from-env"), body
    finally:
        proxy.stop()
    config = tmp_path / "pilotfish.yaml"
    config.write_text(f"upstream_http2_ports: [50051, {h2only.port}]\n")
    proxy = Proxy(h2only.port, args=["--config", str(config)])
    try:
        status, _, body = _get(proxy.port, "/from-file")
        assert status == 200 and body.startswith(b"h2 GET /from-file"), body
    finally:
        proxy.stop()


def test_configured_destination_without_h2c_falls_back_to_http1(nginx: int) -> None:
    proxy = Proxy(nginx, args=["--upstream-http2-ports", str(nginx)])
    try:
        for _ in range(3):  # the first finds out; the next go straight to HTTP/1.1
            status, _, body = _get(proxy.port, "/")
            assert status == 200 and body == b"hello from upstream\n"
        stats = proxy.stats()
        assert stats["upstream_cx_protocol_error"] == 1
        # The failed handshake never counts as an HTTP/2 connection; HTTP/1.1 took over.
        assert stats["upstream_cx_http2_total"] == 0 and stats["upstream_cx_http1_total"] >= 1
    finally:
        proxy.stop()


def test_bad_values_are_refused_at_start_naming_source_and_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("upstream_http2_ports: [8080, 70000]\n")
    with pytest.raises(ConfigError) as error:
        build(str(config))
    assert (error.value.source, error.value.field) == (str(config), "upstream_http2_ports")
    assert "70000 is not a TCP port" in error.value.reason
    config.write_text("upstream_http2_ports: {grpc: 50051}\n")
    with pytest.raises(ConfigError, match="is not a list of ports"):
        build(str(config))
    with pytest.raises(ConfigError) as error:
        build(environ={"PILOTFISH_UPSTREAM_HTTP2_PORTS": "8080,http2"})
    assert error.value.source == "environment variable PILOTFISH_UPSTREAM_HTTP2_PORTS"
    assert "'http2' is not an integer" in error.value.reason
    # Defaults: none; the forms accepted.
    assert build().upstream_http2_ports == ()
    assert build(flags={"upstream_http2_ports": "9000 8080,9000"}).upstream_http2_ports == (
        8080,
        9000,
    )
    config.write_text("upstream_http2_ports: 50051\n")
    assert build(str(config)).upstream_http2_ports == (50051,)

    run = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--listen", "127.0.0.1:1", "--upstream",
         "127.0.0.1:2", "--upstream-http2-ports", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 2
    assert "command line: field 'upstream_http2_ports': 0 is not a TCP port" in run.stderr


def test_client_gone_while_waiting_for_an_h2_stream_frees_its_queue_slot(tmp_path: Path) -> None:
    """An HTTP/1.1 request waiting in the HTTP/2 pool's queue is taken out when its client
    leaves: the next request gets that slot instead of a 503 UO."""
    stalled = socket.create_server(("127.0.0.1", 0))  # accepts, never sends SETTINGS
    port = stalled.getsockname()[1]
    config = tmp_path / "pilotfish.yaml"
    config.write_text(f"upstream_http2_ports: [{port}]\nlimits:\n  max_pending_requests: 1\n")
    proxy = Proxy(port, args=["--config", str(config)])
    try:
        first = socket.create_connection(("127.0.0.1", proxy.port), 5)
        first.sendall(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n")
        time.sleep(0.3)  # queued behind the h2 handshake that never completes
        first.close()
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as second:
            second.sendall(b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n")
            second.settimeout(1.0)
            with pytest.raises(TimeoutError):
                second.recv(4096)  # still waiting for the upstream, not refused
        assert proxy.stats()["upstream_rq_pending_overflow"] == 0
    finally:
        proxy.stop()
        stalled.close()
