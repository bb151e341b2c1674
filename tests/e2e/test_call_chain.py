"""A-app -> A-sidecar (15001) -> B-sidecar (15006) -> B-app, through real iptables rules."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from tests.e2e import apps, netns
from tests.e2e.conftest import Mesh
from tests.e2e.sidecar import Counts

pytestmark = netns.ROOT_ONLY


def test_call_goes_through_both_sidecars(mesh: Mesh, capture: Callable[..., None]) -> None:
    capture(mesh.a)
    capture(mesh.b)
    before_a, before_b = mesh.sidecar_a.counts(), mesh.sidecar_b.counts()
    body = bytes(range(256)) * 300
    status, meta, blob = apps.http_call(mesh.a.name, mesh.b.ip, apps.HTTP_PORT, "/hello", body)
    assert status == 200
    assert blob == apps.BLOB
    assert meta["request_sha256"] == hashlib.sha256(body).hexdigest()
    assert meta["pod"] == mesh.b.name and meta["path"] == "/hello"
    # B's sidecar hands inbound traffic to the app from the passthrough address.
    assert meta["peer"] == "127.0.0.6"
    # One connection and one request in each sidecar: A's outbound, B's inbound. A's own
    # upstream connection to B was not captured again by A (that would count twice here).
    assert mesh.sidecar_a.counts() - before_a == Counts(cx=1, rq=1, tcp=0)
    assert mesh.sidecar_b.counts() - before_b == Counts(cx=1, rq=1, tcp=0)
    # Each sidecar's access log line, as Istio's reads: our end of the client's connection
    # is the address the client dialled (the capture's original destination, not 15001 or
    # 15006); B's upstream leaves from the inbound passthrough address.
    dialled = f"{mesh.b.ip}:{apps.HTTP_PORT}"
    for sidecar in (mesh.sidecar_a, mesh.sidecar_b):
        netns.wait_until(lambda s=sidecar: bool(s.access_log()), 5, "an access log line")  # type: ignore[misc]
    line_a, line_b = mesh.sidecar_a.access_log()[-1], mesh.sidecar_b.access_log()[-1]
    assert line_a["downstream_local_address"] == dialled
    assert line_b["downstream_local_address"] == dialled
    assert line_a["upstream_host"] == dialled
    assert line_b["upstream_host"] == f"127.0.0.1:{apps.HTTP_PORT}"
    assert str(line_b["downstream_remote_address"]).startswith(f"{mesh.a.ip}:")
    assert str(line_b["upstream_local_address"]).startswith("127.0.0.6:")
    assert str(line_a["upstream_local_address"]).startswith(f"{mesh.a.ip}:")
    # Each sidecar's metrics name the workload at the other end (Istio's peer metadata
    # exchange), and neither app saw the exchange's headers.
    peer_headers = {"x-envoy-peer-metadata", "x-envoy-peer-metadata-id"}
    assert not peer_headers & set(meta["header_names"])  # type: ignore[arg-type]
    assert not peer_headers & set(meta["response_header_names"])  # type: ignore[arg-type]
    (series_a,) = mesh.sidecar_a.requests_total()
    (series_b,) = mesh.sidecar_b.requests_total()
    assert (series_a["reporter"], series_a["source_workload"]) == ("source", mesh.a.name)
    assert (series_a["destination_workload"], series_a["destination_app"]) == (
        mesh.b.name,
        mesh.b.name,
    )
    assert (series_b["reporter"], series_b["destination_workload"]) == ("destination", mesh.b.name)
    assert (series_b["source_workload"], series_b["source_workload_namespace"]) == (
        mesh.a.name,
        "mesh",
    )


@pytest.mark.parametrize("size", [1, 65536 * 16 + 7])
def test_raw_tcp_is_byte_exact(mesh: Mesh, capture: Callable[..., None], size: int) -> None:
    capture(mesh.a)
    capture(mesh.b)
    before_a, before_b = mesh.sidecar_a.counts(), mesh.sidecar_b.counts()
    data = hashlib.shake_256(str(size).encode()).digest(size)
    assert apps.echo(mesh.a.name, mesh.b.ip, apps.ECHO_PORT, data) == data
    assert mesh.echo_b.peers[-1] == "127.0.0.6"
    assert mesh.sidecar_a.counts() - before_a == Counts(cx=1, rq=0, tcp=1)
    assert mesh.sidecar_b.counts() - before_b == Counts(cx=1, rq=0, tcp=1)
