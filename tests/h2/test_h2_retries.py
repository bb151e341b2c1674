"""The retry policy for HTTP/2 clients: gRPC `unavailable`, 503 answers, failed connects.

Real grpcio server and client, the real HTTP/1 upstream app, h2 clients on sockets,
`pilotfish run` in explicit mode (the caller's side, where retries belong).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from tests.h2.client import RawH2
from tests.h2.conftest import OPTIONS, Proxy, free_port, method
from tests.proxy import upstream_app


@pytest.fixture
def fresh_proxy(grpc_server: int) -> Proxy:
    return Proxy(grpc_server)


def test_grpc_unavailable_is_retried_and_the_caller_gets_the_answer(fresh_proxy: Proxy) -> None:
    try:
        with grpc.insecure_channel(fresh_proxy.target, options=OPTIONS) as channel:
            unary = method(channel, "unary_unary", "Unary")
            assert unary(b"flaky:first", timeout=5) == b"flaky:first"
        stats = fresh_proxy.stats()
        assert stats["upstream_rq_retry"] == 1 and stats["upstream_rq_retry_success"] == 1
    finally:
        fresh_proxy.stop()


def test_grpc_unavailable_twice_reaches_the_caller(fresh_proxy: Proxy) -> None:
    try:
        with grpc.insecure_channel(fresh_proxy.target, options=OPTIONS) as channel:
            unary = method(channel, "unary_unary", "Unary")
            with pytest.raises(grpc.RpcError) as error:
                unary(b"fail:UNAVAILABLE", timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            # Other statuses are the application's answer: passed on at once.
            with pytest.raises(grpc.RpcError) as error:
                unary(b"fail:NOT_FOUND", timeout=5)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        stats = fresh_proxy.stats()
        assert stats["upstream_rq_retry"] == 1 and stats["upstream_rq_retry_limit_exceeded"] == 1
    finally:
        fresh_proxy.stop()


def test_h2_client_503_is_retried_with_its_body() -> None:
    upstream = upstream_app.start()
    proxy = Proxy(upstream.port)
    client = RawH2(proxy.port)
    try:
        stream = client.request("/flaky?key=h2", "POST", b"hello h2")
        assert client.until(lambda: stream in client.ended)
        assert client.status(stream) == 200 and bytes(client.bodies[stream]) == b"hello h2"
        assert len([r for r in upstream.state.requests if r.path == "/flaky"]) == 2
        stats = proxy.stats()
        assert stats["upstream_rq_retry"] == 1 and stats["upstream_rq_retry_success"] == 1
    finally:
        client.close()
        proxy.stop()
        upstream.shutdown()


def test_h2_client_failed_connect_is_tried_twice_then_uf_urx(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    proxy = Proxy(free_port(), access_log=str(log))  # nothing listens there
    client = RawH2(proxy.port)
    try:
        stream = client.request("/")
        assert client.until(lambda: stream in client.ended)
        assert client.status(stream) == 503
        stats = proxy.stats()
        assert stats["upstream_cx_connect_fail"] == 2 and stats["upstream_rq_retry"] == 1
        assert stats["upstream_rq_retry_limit_exceeded"] == 1
        deadline = time.monotonic() + 5  # the access log is flushed once a second
        while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
        assert entry["response_code"] == 503 and entry["response_flags"] == "UF,URX"
    finally:
        client.close()
        proxy.stop()
