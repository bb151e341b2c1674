"""The apps inside test pods (an HTTP server and a raw TCP echo) and clients that call them."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

from tests.e2e import netns

HTTP_PORT = 8080
ECHO_PORT = 9000
# A response body with every byte value, big enough to span many TCP segments.
BLOB = bytes(range(256)) * 1024
_TIMEOUT = 5.0


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HttpApp

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.peers.append(self.client_address[0])
        meta = {
            "pod": self.server.pod_name,
            "peer": self.client_address[0],
            "method": self.command,
            "path": self.path,
            "request_sha256": hashlib.sha256(body).hexdigest(),
            "header_names": sorted(name.lower() for name in self.headers),
        }
        payload = json.dumps(meta).encode() + b"\n" + BLOB
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on what the app saw, not on its log."""


class HttpApp(ThreadingHTTPServer):
    """The app under test: answers any request with what it saw, then BLOB."""

    daemon_threads = True

    def __init__(self, pod_name: str, port: int) -> None:
        # Bound on all addresses: captured traffic arrives at 127.0.0.1, bypassing at eth0.
        super().__init__(("0.0.0.0", port), _HttpHandler)
        self.pod_name = pod_name
        self.peers: list[str] = []


class _EchoHandler(socketserver.BaseRequestHandler):
    server: EchoApp

    def handle(self) -> None:
        self.server.peers.append(self.client_address[0])
        connection: socket.socket = self.request
        connection.settimeout(_TIMEOUT)
        for _ in range(1_000_000):  # bounded: at most ~64 GiB at 64 KiB a read
            chunk = connection.recv(65536)
            if not chunk:
                break
            connection.sendall(chunk)
        connection.shutdown(socket.SHUT_WR)


class EchoApp(socketserver.ThreadingTCPServer):
    """Raw TCP echo until the peer half-closes: a protocol nobody can parse as HTTP."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("0.0.0.0", port), _EchoHandler)
        self.peers: list[str] = []


Server = TypeVar("Server", bound=socketserver.BaseServer)


def serve_in(pod_name: str, server_factory: Callable[[], Server]) -> Server:
    """Make the server's socket inside the pod and serve it from a daemon thread."""
    with netns.entered(pod_name):
        server = server_factory()
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


def connect_from(pod_name: str, host: str, port: int) -> socket.socket:
    """A TCP connection opened by the app in `pod_name` (so it is subject to its rules)."""
    with netns.entered(pod_name):
        return socket.create_connection((host, port), timeout=_TIMEOUT)


def http_call(
    pod_name: str, host: str, port: int, path: str = "/", body: bytes | None = None
) -> tuple[int, dict[str, object], bytes]:
    """One request from the app in `pod_name`; returns status, the app's metadata, the blob."""
    connection = http.client.HTTPConnection(host, port, timeout=_TIMEOUT)
    connection.sock = connect_from(pod_name, host, port)
    try:
        connection.request("POST" if body is not None else "GET", path, body=body)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    meta_line, _, blob = payload.partition(b"\n")
    meta: dict[str, object] = json.loads(meta_line) if response.status == 200 else {}
    # What the calling app saw of the answer, beside what the called app saw of the request.
    meta["response_header_names"] = sorted(name.lower() for name in response.headers)
    return response.status, meta, blob


def http_get_text(pod_name: str, host: str, port: int, path: str) -> tuple[int, str]:
    """A plain GET from the app in `pod_name` to something that is not our test app."""
    connection = http.client.HTTPConnection(host, port, timeout=_TIMEOUT)
    connection.sock = connect_from(pod_name, host, port)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def echo(pod_name: str, host: str, port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and read the echo until the server closes."""
    with connect_from(pod_name, host, port) as connection:
        received = bytearray()

        def send() -> None:
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        for _ in range(1_000_000):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join(_TIMEOUT)
        return bytes(received)
