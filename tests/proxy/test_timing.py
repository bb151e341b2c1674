"""Request durations are measured finer than the event loop's millisecond clock."""

from __future__ import annotations

import http.client
import re

from tests.proxy.conftest import Proxy
from tests.proxy.upstream_app import Server

DURATION_SUM = re.compile(
    r'^istio_request_duration_milliseconds_sum\{[^}]*response_code="200"[^}]*\} (\S+)$', re.M
)


def test_durations_keep_their_fraction_of_a_millisecond(upstream: Server) -> None:
    # uvloop's loop.time() counts whole milliseconds: durations taken from it come out
    # as whole numbers (a 3.4 ms request is 3 or 4 ms, a 0.3 ms one 0 or 1 ms).
    proxy = Proxy(upstream.port)
    try:
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        for _ in range(4):
            client.request("GET", "/slow?ms=3")
            assert client.getresponse().read() == b"slow\n"
        client.close()
        status, body = proxy.admin("/stats/prometheus")
        assert status == 200
        sums = [float(value) for value in DURATION_SUM.findall(body.decode())]
        assert len(sums) == 1, sums
        total = sums[0]
        assert 12.0 <= total < 12.0 + 4 * 100.0
        assert abs(total - round(total)) > 1e-6, f"{total} ms: whole milliseconds"
    finally:
        proxy.stop()
