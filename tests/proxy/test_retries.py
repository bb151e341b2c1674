"""Router retries (proxy.core.retry): a 503 or a failed connect is tried once more.

Against the real upstream app on loopback, through `pilotfish run`, with both codecs:
what the upstream saw, what the client got, the counters and the access log's flags.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.core import retry
from tests.proxy import upstream_app
from tests.proxy.conftest import Proxy, free_port, log_entries, raw_exchange, status_of

Server = upstream_app.Server


def body_of(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


@pytest.fixture
def logged(upstream: Server, codec: str, tmp_path: Path) -> Iterator[tuple[Proxy, Path]]:
    """A proxy that writes its access log to a file, and that file."""
    upstream.state.reset()
    log = tmp_path / "access.log"
    proxy = Proxy(upstream.port, codec, env={"PILOTFISH_ACCESS_LOG": str(log)})
    yield proxy, log
    proxy.stop()


def test_a_503_is_sent_again_whole_and_the_second_answer_reaches_the_client(
    upstream: Server, logged: tuple[Proxy, Path]
) -> None:
    proxy, log = logged
    data = raw_exchange(
        proxy.port,
        b"POST /flaky?key=a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello",
    )
    assert status_of(data) == 200 and body_of(data) == b"hello"
    seen = [r for r in upstream.state.requests if r.path == "/flaky"]
    assert len(seen) == 2
    # The same request both times: one x-request-id, one body.
    assert seen[0].header("x-request-id") == seen[1].header("x-request-id")
    stats = proxy.stats()
    assert stats["upstream_rq_retry"] == 1 and stats["upstream_rq_retry_success"] == 1
    assert stats["downstream_rq_2xx"] == 1 and stats["downstream_rq_5xx"] == 0
    (entry,) = log_entries(log)
    assert entry["response_code"] == 200 and entry["response_flags"] == "-"


def test_pipelined_requests_behind_a_retry_keep_their_order(upstream: Server, proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port,
        b"GET /flaky?key=p1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nsecond"
        b"POST /flaky?key=p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nthird",
    )
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b"second") < data.index(b"third")
    assert [r.path for r in upstream.state.requests] == [
        "/flaky", "/flaky", "/echo", "/flaky", "/flaky"
    ]  # fmt: skip
    assert proxy.stats()["upstream_rq_retry"] == 2


def test_a_chunked_body_with_trailers_is_replayed(upstream: Server, proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port,
        b"POST /flaky?key=b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n",
    )
    assert status_of(data) == 200 and b"abcdefg" in body_of(data)
    assert proxy.stats()["upstream_rq_retry"] == 1


def test_a_second_503_passes_with_urx(upstream: Server, logged: tuple[Proxy, Path]) -> None:
    proxy, log = logged
    data = raw_exchange(
        proxy.port, b"GET /status/503 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert status_of(data) == 503 and body_of(data) == b"status\n"  # the upstream's own
    assert len([r for r in upstream.state.requests if r.path == "/status/503"]) == 2
    stats = proxy.stats()
    assert stats["upstream_rq_retry"] == 1 and stats["upstream_rq_retry_limit_exceeded"] == 1
    (entry,) = log_entries(log)
    assert entry["response_code"] == 503 and entry["response_flags"] == "URX"


def test_a_failed_connect_is_tried_again_then_uf_urx(codec: str, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    proxy = Proxy(free_port(), codec, env={"PILOTFISH_ACCESS_LOG": str(log)})  # nothing there
    try:
        data = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert status_of(data) == 503 and b"connection failure" in data
        # Why, in the body too, as Envoy's local reply says it.
        assert data.endswith(b"transport failure reason: delayed connect error: Connection refused")
        stats = proxy.stats()
        assert stats["upstream_cx_connect_fail"] == 2 and stats["upstream_rq_retry"] == 1
        (entry,) = log_entries(log)
        assert entry["response_flags"] == "UF,URX"
        # Why, in Envoy's words (the same strings Istio's dashboards and runbooks match).
        refused = "delayed_connect_error:_Connection_refused"
        assert entry["upstream_transport_failure_reason"] == refused
        assert entry["response_code_details"] == (
            f"upstream_reset_before_response_started{{remote_connection_failure|{refused}}}"
        )
        assert entry["upstream_local_address"] is None  # no connection was made
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "env",
    [
        {"PILOTFISH_RETRY_ATTEMPTS": "0"},  # policy off
        # The callee's side: an inbound listener delivers once, the caller's sidecar
        # owns the retry (as in Istio), so two sidecars do not retry twice over.
        {"PILOTFISH_EXPLICIT_DIRECTION": "inbound"},
    ],
    ids=["retries-off", "callee-side"],
)
def test_no_retry_passes_the_first_503_untouched(
    upstream: Server, codec: str, env: dict[str, str]
) -> None:
    upstream.state.reset()
    proxy = Proxy(upstream.port, codec, env=env)
    try:
        data = raw_exchange(
            proxy.port, b"GET /status/503 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert status_of(data) == 503
        assert len(upstream.state.requests) == 1
        stats = proxy.stats()
        assert stats["upstream_rq_retry"] == 0 and stats["upstream_rq_retry_limit_exceeded"] == 0
    finally:
        proxy.stop()


def test_a_body_too_big_to_hold_is_not_retried(upstream: Server, proxy: Proxy) -> None:
    body = b"x" * (300 * 1024)  # over limits.buffer_high_water (256 KiB)
    data = raw_exchange(
        proxy.port,
        b"POST /status/503 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert status_of(data) == 503
    assert len(upstream.state.requests) == 1
    stats = proxy.stats()
    assert stats["upstream_rq_retry"] == 0 and stats["upstream_rq_retry_limit_exceeded"] == 0


def test_max_retries_circuit_breaker_passes_the_answer_with_uo(
    upstream: Server, codec: str, tmp_path: Path
) -> None:
    upstream.state.reset()
    log = tmp_path / "access.log"
    proxy = Proxy(
        upstream.port,
        codec,
        env={"PILOTFISH_ACCESS_LOG": str(log)},
        args=["--config", str(_config(tmp_path, "limits:\n  max_retries: 1\n"))],
    )
    results: dict[str, bytes] = {}

    def call(key: str, ms: int) -> None:
        results[key] = raw_exchange(
            proxy.port,
            f"GET /flaky?key={key}&ms={ms} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode(),
        )

    try:
        # The first request's retry holds the only slot for 1.5 s (its second answer is slow).
        first = threading.Thread(target=call, args=("slow", 1500))
        first.start()
        deadline = time.monotonic() + 5
        while proxy.stats()["upstream_rq_retry"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        call("fast", 0)
        first.join(10)
        assert status_of(results["slow"]) == 200
        assert status_of(results["fast"]) == 503
        stats = proxy.stats()
        assert stats["upstream_rq_retry"] == 1 and stats["upstream_rq_retry_overflow"] == 1
        flags = sorted(str(entry["response_flags"]) for entry in log_entries(log, 2))
        assert flags == ["-", "UO"]
    finally:
        proxy.stop()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pilotfish.yaml"
    path.write_text(text)
    return path


# -- the policy itself (pure functions) ------------------------------------------------


def test_decisions() -> None:
    assert retry.decide(0, 1, True, 0, 3) == retry.RETRY
    assert retry.decide(1, 1, True, 0, 3) == retry.LIMIT_EXCEEDED
    assert retry.decide(0, 0, True, 0, 3) == retry.NOT_RETRIABLE  # policy off
    assert retry.decide(0, 1, False, 0, 3) == retry.NOT_RETRIABLE  # cannot send it again
    assert retry.decide(0, 1, True, 3, 3) == retry.OVERFLOW


def test_retriable_answers() -> None:
    # Istio's defaults: 503, and gRPC's cancelled (1) and unavailable (14) in the head.
    for status in (100, 200, 204, 301, 404, 429, 500, 502, 504, 599):
        assert not retry.retriable(status, None), status
        assert not retry.retriable(status, b"0") and not retry.retriable(status, b"2")
        assert retry.retriable(status, b"14") and retry.retriable(status, b"1")
    assert retry.retriable(503, None) and retry.retriable(503, b"0")
    assert min(retry.RETRIABLE_STATUSES) >= 500  # retriable() skips the set below 500


def test_backoff_is_fully_jittered_exponential_and_capped() -> None:
    base, cap = 0.025, 0.25
    assert retry.backoff(0, base, cap, lambda: 0.999) == pytest.approx(0.025 * 0.999)
    assert retry.backoff(1, base, cap, lambda: 0.999) == pytest.approx(0.075 * 0.999)
    assert retry.backoff(5, base, cap, lambda: 0.999) == pytest.approx(0.25 * 0.999)
    assert retry.backoff(3, base, cap, lambda: 0.0) == 0.0
