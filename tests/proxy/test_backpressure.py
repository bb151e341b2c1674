"""Streaming with backpressure: 1 GiB each way keeps the proxy's memory bounded; slow readers stall writers."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

from tests.proxy.conftest import Proxy
from tests.proxy.upstream_app import Server

GIB = 1 << 30
# Peak RSS allowed for the proxy process while 1 GiB streams through it: the
# interpreter and libraries take about 30 MB; buffers are capped at 256 KiB a side.
RSS_LIMIT_KB = 90 * 1024


def _pattern() -> bytes:
    return bytes(range(256)) * 256  # 64 KiB, the same as the upstream's download body


def test_upload_1gib_chunked_is_streamed(proxy: Proxy) -> None:
    block = b"u" * (1 << 20)
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", proxy.port), 30) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(GIB // len(block)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
            digest.update(block)
        sock.sendall(b"0\r\n\r\n")
        response = b""
        while not response.endswith(digest.hexdigest().encode()):
            chunk = sock.recv(4096)
            assert chunk, response
            response += chunk
    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(f"{GIB} {digest.hexdigest()}".encode())
    assert proxy.peak_rss_kb() < RSS_LIMIT_KB


def test_download_1gib_is_streamed(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), 30) as sock:
        sock.sendall(b"GET /download?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % GIB)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, body_start = head.split(b"\r\n\r\n", 1)
        assert b"content-length: %d" % GIB in head.lower()
        received = len(body_start)
        view = bytearray(1 << 20)
        while received < GIB:
            n = sock.recv_into(view)
            assert n, "download cut short"
            received += n
    assert received == GIB
    assert proxy.peak_rss_kb() < RSS_LIMIT_KB


def test_slow_reader_pauses_the_upstream(proxy: Proxy, upstream: Server) -> None:
    total = 256 << 20
    with socket.create_connection(("127.0.0.1", proxy.port), 30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /download?n=%d&chunked=1 HTTP/1.1\r\nHost: a\r\n\r\n" % total)
        time.sleep(1.0)  # read nothing: the upstream must be held back by the proxy
        sent_while_stalled = upstream.state.sent_bytes
        assert sent_while_stalled < 16 << 20, sent_while_stalled
        # now read everything; the body arrives complete (chunk framing passed through)
        data = bytearray()
        done = threading.Event()

        def read_all() -> None:
            while not data.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data.extend(chunk)
            done.set()

        reader = threading.Thread(target=read_all)
        reader.start()
        assert done.wait(60)
    body = memoryview(bytes(data))[bytes(data).index(b"\r\n\r\n") + 4 :]
    payload_size, position, first = 0, 0, b""
    while True:  # walk the chunk framing by offsets (slicing copies would be quadratic)
        line_end = bytes(body[position : position + 20]).index(b"\r\n")
        size = int(bytes(body[position : position + line_end]), 16)
        position += line_end + 2
        if size == 0:
            break
        first = first or bytes(body[position : position + min(size, 1 << 16)])
        payload_size += size
        position += size + 2
    assert payload_size == total
    assert first == _pattern()[: len(first)]
    assert proxy.peak_rss_kb() < RSS_LIMIT_KB


def test_a_connection_paused_as_its_answer_ended_reads_again_in_the_pool(upstream: Server) -> None:
    # A 20 MB answer arrives whole (llhttp gathers its head) and is written at once to a
    # client that is not reading yet: the write buffer passes its high mark, reading from
    # the upstream pauses, and the exchange ends in the same moment. The connection goes
    # back to the pool; the next request on it must be read, not wait for its timeout.
    upstream.state.reset()
    proxy = Proxy(upstream.port, "llhttp")  # h11 caps a response head at 1 MiB (502)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
            sock.sendall(b"GET /big-head?fields=20&kb=1000 HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(1.0)
            answer = b""
            while not answer.endswith(b"ok"):
                chunk = sock.recv(1 << 20)
                assert chunk, "closed before the end of the answer"
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            started = time.monotonic()
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"hello")
        assert time.monotonic() - started < 2.0
        assert proxy.stats()["upstream_cx_total"] == 1  # the same, pooled connection
    finally:
        proxy.stop()
