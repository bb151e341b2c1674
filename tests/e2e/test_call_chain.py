"""A-app -> A-sidecar (15001) -> B-sidecar (15006) -> B-app, through real iptables rules."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from tests.e2e import apps, netns
from tests.e2e.conftest import Mesh
from tests.e2e.sidecar import Sidecar

pytestmark = netns.ROOT_ONLY

OUTBOUND = "listener.0.0.0.0_15001.downstream_cx_total"
INBOUND = "listener.0.0.0.0_15006.downstream_cx_total"


def counts(sidecar: Sidecar) -> tuple[float, float]:
    stats = sidecar.stats()
    return stats.get(OUTBOUND, 0.0), stats.get(INBOUND, 0.0)


def test_call_goes_through_both_sidecars(mesh: Mesh, capture: Callable[..., None]) -> None:
    capture(mesh.a)
    capture(mesh.b)
    before_a, before_b = counts(mesh.sidecar_a), counts(mesh.sidecar_b)
    body = bytes(range(256)) * 300
    status, meta, blob = apps.http_call(mesh.a.name, mesh.b.ip, apps.HTTP_PORT, "/hello", body)
    assert status == 200
    assert blob == apps.BLOB
    assert meta["request_sha256"] == hashlib.sha256(body).hexdigest()
    assert meta["pod"] == mesh.b.name and meta["path"] == "/hello"
    # B's sidecar hands inbound traffic to the app from the passthrough address.
    assert meta["peer"] == "127.0.0.6"
    after_a, after_b = counts(mesh.sidecar_a), counts(mesh.sidecar_b)
    assert (after_a[0] - before_a[0], after_a[1] - before_a[1]) == (1, 0)
    assert (after_b[0] - before_b[0], after_b[1] - before_b[1]) == (0, 1)


@pytest.mark.parametrize("size", [1, 65536 * 16 + 7])
def test_raw_tcp_is_byte_exact(mesh: Mesh, capture: Callable[..., None], size: int) -> None:
    capture(mesh.a)
    capture(mesh.b)
    data = hashlib.shake_256(str(size).encode()).digest(size)
    assert apps.echo(mesh.a.name, mesh.b.ip, apps.ECHO_PORT, data) == data
