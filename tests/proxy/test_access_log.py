"""The access log's addresses, checked against the sockets' own ends.

Istio's JSON log names both ends of both connections: `downstream_remote_address` is
the client's ip:port, `downstream_local_address` the proxy's end of that connection,
`upstream_local_address` the proxy's end of the upstream connection that answered
(Envoy's %DOWNSTREAM_REMOTE_ADDRESS% and %UPSTREAM_LOCAL_ADDRESS%). A log line then
leads to the connection in a packet capture or in the upstream's own log, which only the
port can do. A real client socket, a real upstream that notes who connected, the proxy
in between; both codecs.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.conftest import Proxy, log_entries


class _Answer(socketserver.BaseRequestHandler):
    """Answers every request head on the connection with a 2-byte body."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        self.server.peers.append(self.client_address)  # type: ignore[attr-defined]
        pending = b""
        while data := sock.recv(65536):
            pending += data
            while b"\r\n\r\n" in pending:
                _, _, pending = pending.partition(b"\r\n\r\n")
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class PeerNotingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        super().__init__(("127.0.0.1", 0), _Answer)


@pytest.fixture
def noting() -> Iterator[PeerNotingServer]:
    server = PeerNotingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_each_line_names_both_ends_of_both_connections(
    noting: PeerNotingServer, codec: str, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = Proxy(noting.server_address[1], codec, env={"PILOTFISH_ACCESS_LOG": str(log)})
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as client:
            client_port = client.getsockname()[1]
            for path in (b"/one", b"/two"):  # one keep-alive connection each side
                client.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
                assert read_response(client).startswith(b"HTTP/1.1 200 ")
        entries = log_entries(log, 2)
    finally:
        proxy.stop()
    ((upstream_host, upstream_port),) = noting.peers  # the pool kept the one connection
    assert [entry["path"] for entry in entries] == ["/one", "/two"]
    for entry in entries:
        assert entry["downstream_remote_address"] == f"127.0.0.1:{client_port}"
        assert entry["downstream_local_address"] == f"127.0.0.1:{proxy.port}"
        assert entry["upstream_local_address"] == f"{upstream_host}:{upstream_port}"
        assert entry["upstream_host"] == f"127.0.0.1:{noting.server_address[1]}"
        assert entry["upstream_transport_failure_reason"] is None
        assert entry["x_forwarded_for"] is None  # the client sent none; the upstream got one
