"""Protocol sniffing and opaque TCP passthrough: non-HTTP bytes arrive byte-exact, both ways."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from injector import certs
from tests.proxy.conftest import Proxy, free_port, log_entries, unanswered_port


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        self.server.peers.append(self.client_address)  # type: ignore[attr-defined]
        if self.server.greet:  # type: ignore[attr-defined]
            sock.sendall(b"220 server speaks first\r\n")
        while data := sock.recv(65536):
            sock.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, greet: bool) -> None:
        self.greet = greet
        self.peers: list[tuple[str, int]] = []
        super().__init__(("127.0.0.1", 0), _Echo)


@pytest.fixture(params=[False, True], ids=["client-first", "server-first"])
def echo(request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    server = EchoServer(bool(request.param))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_binary_protocol_passes_byte_exact(echo: EchoServer) -> None:
    proxy = Proxy(echo.server_address[1])
    try:
        payload = os.urandom(3 << 20)
        with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
            received = b""
            if echo.greet:
                # The client waits for the greeting: the proxy must stop sniffing and relay.
                while b"\r\n" not in received:
                    received += sock.recv(100)
                assert received == b"220 server speaks first\r\n"
                received = b""
            sender = threading.Thread(target=sock.sendall, args=(b"\x16\x03\x01" + payload,))
            sender.start()
            while len(received) < len(payload) + 3:
                received += sock.recv(1 << 20)
            sender.join()
        assert received == b"\x16\x03\x01" + payload
        time.sleep(0.2)
        stats = proxy.stats()
        assert stats["downstream_cx_tcp_total"] == 1
        assert stats["tcp_downstream_cx_rx_bytes_total"] == len(payload) + 3
        greeting = len(b"220 server speaks first\r\n") if echo.greet else 0
        assert stats["tcp_downstream_cx_tx_bytes_total"] == len(payload) + 3 + greeting
    finally:
        proxy.stop()


def test_half_close_is_passed_through(echo: EchoServer, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    proxy = Proxy(echo.server_address[1], env={"PILOTFISH_ACCESS_LOG": str(log)})
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(b"\x00binary then FIN")
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(1000):
                received += chunk
        expected = (b"220 server speaks first\r\n" if echo.greet else b"") + b"\x00binary then FIN"
        assert received == expected
        (entry,) = log_entries(log)
    finally:
        proxy.stop()
    # The relayed connection's line names both ends of both connections, as an HTTP one.
    ((upstream_host, upstream_port),) = echo.peers
    assert entry["response_flags"] == "-" and entry["protocol"] is None
    assert entry["bytes_received"] == len(b"\x00binary then FIN")
    assert entry["downstream_remote_address"] == f"127.0.0.1:{client_port}"
    assert entry["upstream_local_address"] == f"{upstream_host}:{upstream_port}"
    assert entry["upstream_transport_failure_reason"] is None


def tcp_connections(proxy: Proxy) -> dict[tuple[str, str], float]:
    """istio_tcp_connections_{opened,closed}_total by response flags, from the admin port."""
    status, metrics = proxy.admin("/stats/prometheus")
    assert status == 200
    return {
        (sample.name, sample.labels["response_flags"]): sample.value
        for family in text_string_to_metric_families(metrics.decode())
        for sample in family.samples
        if sample.name.startswith("istio_tcp_connections_")
    }


def tcp_bytes(proxy: Proxy) -> dict[str, float]:
    """istio_tcp_{received,sent}_bytes_total over all series, from the admin port."""
    status, metrics = proxy.admin("/stats/prometheus")
    assert status == 200
    totals = {"istio_tcp_received_bytes_total": 0.0, "istio_tcp_sent_bytes_total": 0.0}
    for family in text_string_to_metric_families(metrics.decode()):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


def test_an_open_relays_bytes_are_counted_before_it_closes(echo: EchoServer) -> None:
    """As Istio reports a long-lived connection's bytes periodically: a database
    connection open for hours shows its traffic on the dashboards while it is open, and
    closing it adds only what was not counted yet."""
    proxy = Proxy(echo.server_address[1])
    greeting = len(b"220 server speaks first\r\n") if echo.greet else 0
    payload = b"\x00" + os.urandom(1 << 20)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.sendall(payload)
            received = 0
            while received < greeting + len(payload):
                received += len(sock.recv(1 << 20))
            deadline = time.monotonic() + 5
            while True:  # the worker's sweep counts it within a second or two
                open_counts = tcp_bytes(proxy)
                if open_counts["istio_tcp_sent_bytes_total"] >= received:
                    break
                assert time.monotonic() < deadline, open_counts
                time.sleep(0.2)
            sock.sendall(b"bye")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(100):
                pass
        deadline = time.monotonic() + 5
        while tcp_connections(proxy).get(("istio_tcp_connections_closed_total", "-"), 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        closed_counts = tcp_bytes(proxy)
    finally:
        proxy.stop()
    assert open_counts == {
        "istio_tcp_received_bytes_total": len(payload),
        "istio_tcp_sent_bytes_total": received,
    }
    assert closed_counts == {
        "istio_tcp_received_bytes_total": len(payload) + 3,
        "istio_tcp_sent_bytes_total": received + 3,
    }


def test_a_relay_whose_upstream_refuses_is_logged_uf_with_the_reason(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    proxy = Proxy(free_port(), env={"PILOTFISH_ACCESS_LOG": str(log)})  # nothing listens
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.sendall(b"\x00not http")
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed: nothing to relay to
        (entry,) = log_entries(log)
        assert proxy.stats()["upstream_cx_connect_fail"] == 1
        counted = tcp_connections(proxy)
    finally:
        proxy.stop()
    # Istio's way: opened under "-", closed under the flags the connection ended with.
    assert counted[("istio_tcp_connections_opened_total", "-")] == 1
    assert counted[("istio_tcp_connections_closed_total", "UF")] == 1
    assert counted.get(("istio_tcp_connections_closed_total", "-"), 0) == 0
    assert entry["response_flags"] == "UF"
    assert entry["upstream_transport_failure_reason"] == "delayed_connect_error:_Connection_refused"
    assert entry["upstream_local_address"] is None


def test_a_relay_whose_connect_times_out_is_logged_uf(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    config = tmp_path / "pilotfish.yaml"
    config.write_text("timeouts:\n  connect: 300ms\n")
    with unanswered_port() as port:
        proxy = Proxy(port, args=["--config", str(config)], env={"PILOTFISH_ACCESS_LOG": str(log)})
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
                started = time.monotonic()
                sock.sendall(b"\x00not http")
                sock.settimeout(5)
                assert sock.recv(100) == b""  # closed once the connect gave up
                took = time.monotonic() - started
            (entry,) = log_entries(log)
            stats = proxy.stats()
        finally:
            proxy.stop()
    assert 0.25 < took < 2
    assert stats["upstream_cx_connect_timeout"] == 1 and stats["upstream_cx_connect_fail"] == 1
    assert entry["response_flags"] == "UF"
    # A timeout has no transport failure to report (as in Envoy's log).
    assert entry["upstream_transport_failure_reason"] is None
    assert entry["bytes_received"] == 9


def test_a_relay_with_no_bytes_either_way_is_closed_after_the_idle_timeout(
    tmp_path: Path,
) -> None:
    """Envoy's tcp_proxy idle_timeout (1 h by default; here 1 s): a relay that carries
    nothing either way is closed, one that keeps talking stays open."""
    server = EchoServer(greet=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "pilotfish.yaml"
    config.write_text("timeouts:\n  downstream_idle: 1s\n")
    proxy = Proxy(server.server_address[1], args=["--config", str(config)])
    try:
        quiet = socket.create_connection(("127.0.0.1", proxy.port), 5)
        talking = socket.create_connection(("127.0.0.1", proxy.port), 5)
        with quiet, talking:
            for sock in (quiet, talking):
                sock.sendall(b"\x00hello")
                assert sock.recv(100) == b"\x00hello"
            started = time.monotonic()
            quiet.setblocking(False)
            closed_after = None
            while time.monotonic() - started < 4.5:
                talking.sendall(b"\x01")  # a byte every 300 ms, echoed back
                assert talking.recv(10) == b"\x01"
                if closed_after is None:
                    with contextlib.suppress(BlockingIOError):
                        assert quiet.recv(10) == b""
                        closed_after = time.monotonic() - started
                time.sleep(0.3)
        stats = proxy.stats()
    finally:
        proxy.stop()
        server.shutdown()
    assert closed_after is not None and 1.0 <= closed_after < 3.5
    assert stats["tcp_idle_timeout"] == 1 and stats["downstream_cx_idle_timeout"] == 1


def test_http2_preface_is_counted(echo: EchoServer) -> None:
    """Until HTTP/2 is served, the preface is at least recognised and counted (not relayed as TCP)."""
    proxy = Proxy(echo.server_address[1])
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            sock.settimeout(2)
            with contextlib.suppress(OSError):
                sock.recv(100)
        time.sleep(0.2)
        stats = proxy.stats()
        assert stats["downstream_cx_http2_total"] == 1 and stats["downstream_cx_tcp_total"] == 0
    finally:
        proxy.stop()


class _TlsEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        context: ssl.SSLContext = self.server.context  # type: ignore[attr-defined]
        with context.wrap_socket(self.request, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data)


def test_a_tls_connection_is_logged_with_the_name_its_client_asked_for(tmp_path: Path) -> None:
    """Envoy's tls_inspector for Istio: the relay reads the ClientHello's server name as the
    bytes pass (proxy.core.tls_hello) and logs it; the handshake itself is untouched, so
    the client still verifies the real server's certificate end to end."""
    bundle = certs.make_bundle(["shop.example.com"])
    paths = certs.write_bundle(bundle, tmp_path / "certs")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(paths["tls.crt"], paths["tls.key"])
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TlsEcho)
    server.daemon_threads = True
    server.context = server_context  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "access.log"
    proxy = Proxy(server.server_address[1], env={"PILOTFISH_ACCESS_LOG": str(log)})
    try:
        client_context = ssl.create_default_context(cafile=str(paths["ca.crt"]))
        with (
            socket.create_connection(("127.0.0.1", proxy.port), 5) as sock,
            client_context.wrap_socket(sock, server_hostname="shop.example.com") as tls,
        ):
            tls.sendall(b"ping over tls")
            assert tls.recv(100) == b"ping over tls"
            # Counted as opened while it is open, not only once it closes.
            open_now = tcp_connections(proxy)
            assert open_now[("istio_tcp_connections_opened_total", "-")] == 1
            assert open_now.get(("istio_tcp_connections_closed_total", "-"), 0) == 0
        (entry,) = log_entries(log)
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()
    assert entry["requested_server_name"] == "shop.example.com"
    assert entry["response_flags"] == "-" and entry["protocol"] is None


def test_bytes_sent_before_a_fin_while_sniffing_are_relayed_then_the_half_close() -> None:
    server = EchoServer(False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = Proxy(server.server_address[1])
    try:
        for first in (b"GE", b"PRI", b"P"):  # could still become HTTP when the FIN came
            with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
                sock.sendall(first)
                sock.shutdown(socket.SHUT_WR)
                echoed = b""
                while chunk := sock.recv(100):
                    echoed += chunk
            assert echoed == first
        assert proxy.stats()["downstream_cx_tcp_total"] == 3
    finally:
        proxy.stop()
        server.shutdown()
