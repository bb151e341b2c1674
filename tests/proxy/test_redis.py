"""A real TCP protocol through the relay: redis-server behind pilotfish, as a pod's Redis
client would reach it through its sidecar (not HTTP, so passed through as opaque TCP)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.h2.conftest import wait_port
from tests.ports import free_port
from tests.proxy.conftest import Proxy
from tests.proxy.test_tcp import tcp_bytes, tcp_connections


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            yield port
        finally:
            server.terminate()
            server.wait(10)


@pytest.fixture
def proxy(redis_port: int) -> Iterator[Proxy]:
    running = Proxy(redis_port)
    yield running
    running.stop()


def command(*words: bytes) -> bytes:
    """A command as RESP (the Redis serialization protocol): an array of bulk strings."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


class Replies:
    """Reads RESP replies off a socket, however the bytes are cut up on the way."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise AssertionError("the connection closed mid-reply")
        self.buffer += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return line.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self._fill()
            value, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
            return value
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise AssertionError(f"not RESP: {line[:80]!r}")


def connect(proxy: Proxy) -> tuple[socket.socket, Replies]:
    sock = socket.create_connection(("127.0.0.1", proxy.port), 10)
    return sock, Replies(sock)


def test_a_large_value_goes_and_comes_back_byte_exact(proxy: Proxy) -> None:
    value = os.urandom(4 << 20)
    sock, replies = connect(proxy)
    with sock:
        sock.sendall(command(b"SET", b"big", value))
        assert replies.read() == "+OK"
        sock.sendall(command(b"GET", b"big"))
        assert replies.read() == value
        sock.sendall(command(b"STRLEN", b"big"))
        assert replies.read() == len(value)


def test_pipelined_commands_are_answered_in_order(proxy: Proxy) -> None:
    sock, replies = connect(proxy)
    with sock:
        sock.sendall(command(b"DEL", b"counter"))
        replies.read()
        sock.sendall(b"".join(command(b"INCR", b"counter") for _ in range(2000)))
        assert [replies.read() for _ in range(2000)] == list(range(1, 2001))


def test_a_subscriber_gets_what_the_server_pushes(proxy: Proxy) -> None:
    """Pub/sub: the server writes to a connection whose client sends nothing more, so
    the relay must pass bytes from upstream without waiting for the client."""
    subscriber, pushed = connect(proxy)
    publisher, answers = connect(proxy)
    with subscriber, publisher:
        subscriber.sendall(command(b"SUBSCRIBE", b"news"))
        assert pushed.read() == [b"subscribe", b"news", 1]
        for number in range(3):
            publisher.sendall(command(b"PUBLISH", b"news", b"item %d" % number))
            assert answers.read() == 1  # one subscriber got it
        assert [pushed.read() for _ in range(3)] == [
            [b"message", b"news", b"item %d" % number] for number in range(3)
        ]


def test_redis_benchmark_through_the_relay_is_counted(proxy: Proxy) -> None:
    """redis-benchmark (a C client, 8 connections, a new connection per request for one
    test) through the relay: no errors, and every connection opened is closed and counted."""
    benchmark = shutil.which("redis-benchmark")
    if benchmark is None:
        pytest.skip("redis-benchmark is not installed (scripts/setup.sh installs it)")
    base = [benchmark, "-p", str(proxy.port), "-c", "8", "-q", "--csv"]
    kept = subprocess.run([*base, "-n", "4000", "-t", "set,get,lpush,lpop"], timeout=60)
    fresh = subprocess.run([*base, "-n", "400", "-t", "ping_mbulk", "-k", "0"], timeout=60)
    assert kept.returncode == 0 and fresh.returncode == 0
    deadline = time.monotonic() + 5
    while True:  # the last connections' closes are counted as the proxy sees them
        counted = tcp_connections(proxy)
        opened = counted[("istio_tcp_connections_opened_total", "-")]
        closed = counted.get(("istio_tcp_connections_closed_total", "-"), 0)
        if opened == closed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # 8 kept for each of the four tests (and the benchmark's own probe), 400 fresh ones.
    assert opened >= 4 * 8 + 400 and closed == opened
    sizes = tcp_bytes(proxy)
    # Every request is at least a dozen bytes each way (`*1\r\n$4\r\nPING\r\n`, `+PONG\r\n`).
    assert sizes["istio_tcp_received_bytes_total"] > 16_400 * 12
    assert sizes["istio_tcp_sent_bytes_total"] > 16_400 * 5
