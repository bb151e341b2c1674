"""HTTP/2 route timeout: a stream whose upstream never answers gets 504 UT, the rest go on."""

from __future__ import annotations

import time
from pathlib import Path

from tests.h2.client import RawH2
from tests.h2.h2only import H2OnlyServer
from tests.proxy.conftest import Proxy


def test_unanswered_stream_gets_504_and_the_connection_goes_on(
    h2only: H2OnlyServer, tmp_path: Path
) -> None:
    config = tmp_path / "pilotfish.yaml"
    config.write_text("timeouts:\n  route: 300ms\n")
    proxy = Proxy(h2only.port, args=["--config", str(config)])
    client = RawH2(proxy.port)
    try:
        started = time.monotonic()
        stalled = client.request("/stall")
        assert client.until(lambda: stalled in client.ended, timeout=5)
        waited = time.monotonic() - started
        assert client.status(stalled) == 504 and 0.3 <= waited < 2.0, waited
        fresh = client.request("/after")
        assert client.until(lambda: fresh in client.ended)
        assert client.status(fresh) == 200
        assert not client.resets and client.goaway is None and not client.closed
        stats = proxy.stats()
    finally:
        client.close()
        proxy.stop()
    assert stats["upstream_rq_timeout"] == 1
    assert stats["downstream_rq_5xx"] == 1 and stats["downstream_rq_2xx"] == 1
