"""HTTP/2 stream idle timeout: a quiet stream gets 408 SI (or RST_STREAM once answering), the rest go on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.h2.client import RawH2
from tests.h2.h2only import H2OnlyServer
from tests.proxy.conftest import Proxy

CANCEL = 0x8


@pytest.fixture()
def proxy(h2only: H2OnlyServer, tmp_path: Path) -> Iterator[Proxy]:
    config = tmp_path / "pilotfish.yaml"
    config.write_text("timeouts:\n  stream_idle: 1s\n")
    running = Proxy(
        h2only.port,
        args=["--config", str(config), "--access-log", str(tmp_path / "access.log")],
    )
    yield running
    running.stop()


def _log_lines(path: Path, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} access log lines")


def test_quiet_stream_gets_408_others_go_on(proxy: Proxy, tmp_path: Path) -> None:
    client = RawH2(proxy.port)
    try:
        started = time.monotonic()
        stalled = client.request("/stall")
        busy = client.request("/trickle")  # a DATA frame every 0.4 s for ~3 s: never idle
        assert client.until(lambda: stalled in client.ended, timeout=6)
        waited = time.monotonic() - started
        assert client.status(stalled) == 408 and 1.0 <= waited < 3.5, waited
        assert busy not in client.ended and not client.resets
        # The same connection serves a new stream while the busy one carries on.
        fresh = client.request("/after")
        assert client.until(lambda: fresh in client.ended and busy in client.ended, timeout=6)
        assert client.status(fresh) == 200 and client.status(busy) == 200
        assert bytes(client.bodies[busy]).count(b"tick") == 8
        assert not client.resets and client.goaway is None and not client.closed
    finally:
        client.close()
    stats = proxy.stats()
    assert stats["downstream_rq_4xx"] == 1 and stats["downstream_rq_2xx"] == 2
    entries = _log_lines(tmp_path / "access.log", 3)
    timed_out = [e for e in entries if e["response_code"] == 408]
    assert len(timed_out) == 1 and timed_out[0]["response_flags"] == "SI"
    assert timed_out[0]["response_code_details"] == "stream_idle_timeout"


def test_quiet_stream_after_response_began_is_reset(proxy: Proxy, tmp_path: Path) -> None:
    client = RawH2(proxy.port)
    try:
        stalled = client.request("/stall-after-head")
        assert client.until(lambda: stalled in client.resets, timeout=6)
        assert client.status(stalled) == 200 and bytes(client.bodies[stalled]) == b"first bytes\n"
        assert client.resets[stalled] == CANCEL and stalled not in client.ended
        fresh = client.request("/after-reset")
        assert client.until(lambda: fresh in client.ended)
        assert client.status(fresh) == 200 and client.goaway is None
    finally:
        client.close()
    entries = _log_lines(tmp_path / "access.log", 2)
    assert [e["response_flags"] for e in entries if e["path"] == "/stall-after-head"] == ["SI"]


def test_quiet_grpc_stream_gets_a_grpc_status(proxy: Proxy) -> None:
    client = RawH2(proxy.port)
    try:
        stalled = client.request(
            "/stall-grpc",
            method="POST",
            body=b"\x00\x00\x00\x00\x00",
            headers=[("content-type", "application/grpc"), ("te", "trailers")],
        )
        assert client.until(lambda: stalled in client.ended, timeout=6)
        head = dict(client.headers[stalled])
        # Trailers-only: HTTP 200 with the status Envoy maps 408 to (UNKNOWN).
        assert head[b":status"] == b"200" and head[b"grpc-status"] == b"2"
    finally:
        client.close()


def test_zero_turns_the_stream_idle_timeout_off(h2only: H2OnlyServer, tmp_path: Path) -> None:
    config = tmp_path / "off.yaml"
    config.write_text("timeouts:\n  stream_idle: 0s\n")
    running = Proxy(h2only.port, args=["--config", str(config)])
    client = RawH2(running.port)
    try:
        stalled = client.request("/stall")
        client.until(lambda: stalled in client.ended or stalled in client.resets, timeout=2.5)
        assert stalled not in client.headers and not client.resets and not client.closed
        fresh = client.request("/meanwhile")
        assert client.until(lambda: fresh in client.ended)
        assert client.status(fresh) == 200
    finally:
        client.close()
        running.stop()
