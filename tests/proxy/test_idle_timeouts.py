"""Idle timeouts set to 0 are off, as Envoy's idle_timeout: 0s is (downstream and pooled
upstream connections alike); the default ones close what stays quiet."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from tests.proxy.conftest import Proxy
from tests.proxy.upstream_app import Server


def _get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/", headers={"Host": "idle.test"})
    response = conn.getresponse()
    response.read()
    return response.status


def test_zero_idle_timeouts_keep_quiet_connections_open(upstream: Server, tmp_path: Path) -> None:
    config = tmp_path / "pilotfish.yaml"
    config.write_text("timeouts:\n  downstream_idle: 0s\n  upstream_idle: 0s\n")
    proxy = Proxy(upstream.port, args=["--config", str(config)])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        assert _get(conn) == 200
        time.sleep(2.5)  # two of the once-a-second idle sweeps
        assert _get(conn) == 200  # the same client connection, the same pooled upstream one
        conn.close()
        stats = proxy.stats()
        assert stats["downstream_cx_total"] == 1 and stats["downstream_cx_idle_timeout"] == 0
        assert stats["upstream_cx_total"] == 1 and stats["upstream_cx_idle_timeout"] == 0
    finally:
        proxy.stop()


def test_short_idle_timeouts_close_quiet_connections(upstream: Server, tmp_path: Path) -> None:
    config = tmp_path / "pilotfish.yaml"
    config.write_text("timeouts:\n  downstream_idle: 1s\n  upstream_idle: 1s\n")
    proxy = Proxy(upstream.port, args=["--config", str(config)])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        assert _get(conn) == 200
        time.sleep(3.0)
        stats = proxy.stats()
        assert stats["downstream_cx_idle_timeout"] == 1
        assert stats["upstream_cx_idle_timeout"] == 1
        conn.close()
    finally:
        proxy.stop()
