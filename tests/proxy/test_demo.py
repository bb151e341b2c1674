"""The README's first command: `pilotfish demo` runs by itself and reports what the sidecar saw."""

from __future__ import annotations

import re
import subprocess
import sys

from proxy.demo.main import TRAFFIC
from tests.proxy.conftest import ROOT


def test_demo_runs_and_reports() -> None:
    result = subprocess.run([sys.executable, "-m", "proxy", "demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"downstream_rq_total\s+{len(TRAFFIC)}\n", out)
    assert re.search(r"downstream_rq_5xx\s+10\n", out)  # every third flaky call fails
    # Two /api/busy calls get a 503 the sidecar retries: the client never sees one.
    assert re.search(r"upstream_rq_retry\s+2\n", out)
    assert re.search(r"upstream_rq_retry_success\s+2\n", out)
    assert "code=503" not in out
    assert "istio_requests_total code=500" in out
    # A client span from the caller's sidecar and a server span from the app's for every
    # request, plus a server span for each of the two attempts that were retried.
    spans = 2 * len(TRAFFIC) + 2
    assert re.search(rf"{spans} spans in {len(TRAFFIC)} traces from service demo-app, frontend", out)
    # The app's sidecar knows its caller by the workload name the caller's sidecar sent.
    assert f"frontend -> demo-app: {len(TRAFFIC) + 2} requests" in out
    assert '"response_code":200' in out  # an access log line
    assert "where to look next" in out
