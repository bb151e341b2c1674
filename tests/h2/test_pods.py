"""gRPC in the pod harness: A-app -> A-sidecar (15001) -> B-sidecar (15006) -> B-app, h2c all the way."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from tests.e2e import netns
from tests.e2e.conftest import Mesh, capture, mesh, pods  # noqa: F401 - fixtures

pytestmark = netns.ROOT_ONLY
GRPC_PORT = 9090


def test_grpc_through_both_sidecars(mesh: Mesh, capture: Callable[..., None]) -> None:  # noqa: F811
    server = mesh.b.start(sys.executable, "-m", "tests.h2.grpc_app", "serve", str(GRPC_PORT))
    try:
        capture(mesh.a)
        capture(mesh.b)
        before_a, before_b = mesh.sidecar_a.stats(), mesh.sidecar_b.stats()
        out = mesh.a.exec(
            sys.executable, "-m", "tests.h2.grpc_app", "call", mesh.b.ip, str(GRPC_PORT)
        )
        result = json.loads(out.strip().splitlines()[-1])
        assert result["unary"] == "hello"
        assert "x-request-id" in str(result["metadata"])
        assert result["stream_count"] == 50
        assert result["large_ok"] is True
        assert result["error"] == "NOT_FOUND"
        after_a, after_b = mesh.sidecar_a.stats(), mesh.sidecar_b.stats()
        for before, after in ((before_a, after_a), (before_b, after_b)):
            assert after["downstream_cx_http2_total"] > before.get("downstream_cx_http2_total", 0)
            # 1 warm-up or more, then metadata, stream, large, error: each an HTTP/2 stream.
            assert after["downstream_rq_total"] - before["downstream_rq_total"] >= 5
            assert after["upstream_rq_total"] - before["upstream_rq_total"] >= 5
    finally:
        server.stop()
        mesh.b.processes.remove(server)
