"""Refused streams (RST_STREAM REFUSED_STREAM, or above a GOAWAY's last stream id) are sent again once.

RFC 9113 section 8.7: the server did not process them, so another connection may
have them, as Envoy does; only while the request can be replayed whole.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.h2.client import RawH2
from tests.h2.h2only import H2OnlyServer
from tests.proxy.conftest import Proxy, log_entries


@pytest.fixture()
def access_log(tmp_path: Path) -> Path:
    return tmp_path / "access.log"


@pytest.fixture()
def proxy(h2only: H2OnlyServer, access_log: Path) -> Iterator[Proxy]:
    args = ["--upstream-http2-ports", str(h2only.port), "--access-log", str(access_log)]
    running = Proxy(h2only.port, args=args)
    yield running
    running.stop()


def _call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Host": "app.test"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def test_refused_stream_is_retried_once(h2only: H2OnlyServer, proxy: Proxy) -> None:
    h2only.refuse = 1
    status, body = _call(proxy.port, "GET", "/again")
    assert status == 200 and body.startswith(b"h2 GET /again"), body
    payload = b"p" * 10_000
    h2only.refuse = 1
    status, body = _call(proxy.port, "POST", "/with-body", payload)
    assert status == 200 and body.endswith(f"body=10000 sha={_sha(payload)}\n".encode()), body
    stats = proxy.stats()
    assert h2only.refused == 2 and len(h2only.answered) == 2
    assert stats["upstream_rq_retry"] == 2 and stats["http2_rx_reset"] == 2
    assert stats["downstream_rq_2xx"] == 2


def test_refused_twice_is_a_502(h2only: H2OnlyServer, proxy: Proxy) -> None:
    h2only.refuse = 2
    status, _ = _call(proxy.port, "GET", "/refused-twice")
    assert status == 502  # UR: the second refusal reaches the client
    assert h2only.refused == 2 and not h2only.answered
    assert proxy.stats()["upstream_rq_retry"] == 1
    status, _ = _call(proxy.port, "GET", "/then-fine")
    assert status == 200


def test_body_refused_after_it_was_sent_whole(h2only: H2OnlyServer, proxy: Proxy) -> None:
    # A small body is still held: sent again.
    h2only.refuse_after_body = 1
    small = b"s" * 4096
    status, body = _call(proxy.port, "PUT", "/small", small)
    assert status == 200 and body.endswith(f"sha={_sha(small)}\n".encode()), body
    assert proxy.stats()["upstream_rq_retry"] == 1
    # 1 MiB went past what the proxy keeps (limits.buffer_high_water, 256 KiB): not
    # replayable, so the refusal reaches the client and nothing is sent twice.
    h2only.refuse_after_body = 1
    status, _ = _call(proxy.port, "PUT", "/big", b"b" * (1 << 20))
    assert status == 502
    assert proxy.stats()["upstream_rq_retry"] == 1
    assert [path for _, path, _ in h2only.answered] == ["/small"]


def test_stream_above_goaway_last_stream_id_goes_to_a_new_connection(
    h2only: H2OnlyServer, proxy: Proxy, access_log: Path
) -> None:
    h2only.goaway = 1
    status, body = _call(proxy.port, "POST", "/after-goaway", b"x" * 1000)
    assert status == 200 and body.startswith(b"h2 POST /after-goaway"), body
    assert h2only.connections == 2 and h2only.answered == [(2, "/after-goaway", 1000)]
    stats = proxy.stats()
    assert stats["upstream_rq_retry"] == 1 and stats["upstream_cx_total"] == 2
    # The access log names our end of the connection that answered, not the first one.
    (entry,) = log_entries(access_log)
    assert entry["upstream_local_address"] == h2only.peers[1] != h2only.peers[0]


def test_http2_client_sees_no_refusal(h2only: H2OnlyServer, proxy: Proxy) -> None:
    client = RawH2(proxy.port)
    try:
        h2only.refuse = 1
        first = client.request("/h2-client")
        assert client.until(lambda: first in client.ended)
        h2only.goaway = 1
        second = client.request("/h2-client-goaway", method="POST", body=b"z" * 300)
        assert client.until(lambda: second in client.ended)
        assert client.status(first) == 200 and client.status(second) == 200
        assert bytes(client.bodies[second]).startswith(b"h2 POST /h2-client-goaway")
        assert not client.resets
    finally:
        client.close()
    assert proxy.stats()["upstream_rq_retry"] == 2


def test_body_still_arriving_while_the_retry_waits(h2only: H2OnlyServer, proxy: Proxy) -> None:
    first, rest = b"a" * 3000, b"b" * 5000
    h2only.refuse = 1
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"POST /streamed HTTP/1.1\r\nHost: app.test\r\nContent-Length: 8000\r\n\r\n" + first
        )
        time.sleep(0.3)  # refused by now; the rest of the body follows the retry
        sock.sendall(rest)
        data = b""
        end = time.monotonic() + 10
        while b"sha=" not in data and time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert f"body=8000 sha={_sha(first + rest)}".encode() in data
    assert h2only.refused == 1 and proxy.stats()["upstream_rq_retry"] == 1
