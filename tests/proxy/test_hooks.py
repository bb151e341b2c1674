"""`pilotfish wait` and `pilotfish drain`, the sidecar's lifecycle hooks, against a real proxy."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.proxy.conftest import ROOT, Proxy, free_port
from tests.proxy.upstream_app import Server


def pilotfish(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def test_wait_returns_once_ready_and_gives_up_with_a_reason(upstream: Server) -> None:
    proxy = Proxy(upstream.port)
    try:
        assert pilotfish("wait", "--url", f"http://127.0.0.1:{proxy.admin_port}/ready").returncode == 0
        proxy.admin("/healthcheck/fail", "POST")
        started = time.monotonic()
        result = pilotfish("wait", "--url", f"http://127.0.0.1:{proxy.admin_port}/ready",
                           "--timeout", "1s", "--period", "100ms")
        assert result.returncode == 1 and "HTTP 503" in result.stderr
        assert time.monotonic() - started < 5
    finally:
        proxy.stop()
    result = pilotfish("wait", "--url", f"http://127.0.0.1:{free_port()}/ready", "--timeout", "300ms")
    assert result.returncode == 1 and "not ready after 300ms" in result.stderr


def test_drain_starts_draining(upstream: Server) -> None:
    proxy = Proxy(upstream.port)
    try:
        result = pilotfish("drain", "--url", f"http://127.0.0.1:{proxy.admin_port}/drain_listeners")
        assert result.returncode == 0, result.stderr
        assert proxy.admin("/ready") == (503, b"DRAINING\n")
    finally:
        proxy.stop()
    # a proxy that is already gone is nothing to drain: the hook must not fail the pod's stop
    assert pilotfish("drain", "--url", f"http://127.0.0.1:{free_port()}/drain").returncode == 0
