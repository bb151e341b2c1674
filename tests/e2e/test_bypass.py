"""Exclusions bypass the sidecars, include lists capture only what they list, no loops."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tests.e2e import apps, netns
from tests.e2e.conftest import Mesh

pytestmark = netns.ROOT_ONLY

A_IP, B_IP, B_OTHER_IP = "198.18.0.1", "198.18.0.2", "198.18.0.3"
HTTP, ECHO = apps.HTTP_PORT, apps.ECHO_PORT
DEFAULT_INBOUND_EXCLUDES = "15090,15021,15020"

# (case, flags for pod A, flags for pod B, [(B address, port, A captures?, B captures?)])
CASES = [
    (
        "excluded inbound port",
        [],
        ["-d", f"{DEFAULT_INBOUND_EXCLUDES},{ECHO}"],
        [(B_IP, ECHO, True, False), (B_IP, HTTP, True, True)],
    ),
    (
        "excluded outbound port",
        ["-o", str(ECHO)],
        [],
        [(B_IP, ECHO, False, True), (B_IP, HTTP, True, True)],
    ),
    (
        "excluded cidr",
        ["-x", f"{B_IP}/32"],
        [],
        [(B_IP, HTTP, False, True), (B_OTHER_IP, HTTP, True, True)],
    ),
    (
        "included cidr",
        ["-i", f"{B_OTHER_IP}/32"],
        [],
        [(B_OTHER_IP, HTTP, True, True), (B_IP, HTTP, False, True)],
    ),
    (
        "included inbound ports",
        [],
        ["-b", str(HTTP)],
        [(B_IP, HTTP, True, True), (B_IP, ECHO, True, False)],
    ),
    (
        "included outbound ports",
        ["-i", "", "-q", str(ECHO)],
        [],
        [(B_IP, ECHO, True, True), (B_IP, HTTP, False, True)],
    ),
    (
        "excluded interface",
        ["-c", "eth0"],
        ["-c", "eth0"],
        [(B_IP, HTTP, False, False), (B_IP, ECHO, False, False)],
    ),
]


def call(mesh: Mesh, address: str, port: int) -> str:
    """Call B's app from A's app; returns the peer address B's app saw."""
    if port == ECHO:
        before = len(mesh.echo_b.peers)
        assert apps.echo(mesh.a.name, address, port, b"ping\x00\xff") == b"ping\x00\xff"
        return mesh.echo_b.peers[before]
    status, meta, blob = apps.http_call(mesh.a.name, address, port, "/bypass")
    assert status == 200 and blob == apps.BLOB
    return str(meta["peer"])


@pytest.mark.parametrize(("case", "a_flags", "b_flags", "calls"), CASES, ids=[c[0] for c in CASES])
def test_capture_follows_the_lists(
    mesh: Mesh,
    capture: Callable[..., None],
    case: str,
    a_flags: list[str],
    b_flags: list[str],
    calls: list[tuple[str, int, bool, bool]],
) -> None:
    capture(mesh.a, *a_flags)
    capture(mesh.b, *b_flags)
    for address, port, a_captures, b_captures in calls:
        before_a, before_b = mesh.sidecar_a.counts(), mesh.sidecar_b.counts()
        peer = call(mesh, address, port)
        after_a, after_b = mesh.sidecar_a.counts(), mesh.sidecar_b.counts()
        where = f"{case}: call to {address}:{port}"
        # A's sidecar only ever sees A's outbound calls and B's only B's inbound ones; a
        # call is an HTTP request on 8080 and an opaque TCP connection on 9000.
        delta_a, delta_b = after_a - before_a, after_b - before_b
        seen_a, seen_b = (delta_a.rq, delta_b.rq) if port == HTTP else (delta_a.tcp, delta_b.tcp)
        assert seen_a == int(a_captures), f"{where}: A-sidecar outbound {delta_a}"
        assert seen_b == int(b_captures), f"{where}: B-sidecar inbound {delta_b}"
        # B's app sees the passthrough address only when B's sidecar delivered the call.
        assert (peer == "127.0.0.6") == b_captures, f"{where}: peer {peer}"
        assert peer in ("127.0.0.6", A_IP), where


def test_app_calling_its_own_pod_ip(mesh: Mesh, capture: Callable[..., None]) -> None:
    capture(mesh.a)
    before = mesh.sidecar_a.counts()
    status, meta, blob = apps.http_call(mesh.a.name, A_IP, HTTP, "/self")
    assert status == 200 and blob == apps.BLOB
    assert meta["pod"] == mesh.a.name and meta["peer"] == A_IP
    # Over lo and not the proxy's UID: neither outbound nor inbound capture touches it.
    assert mesh.sidecar_a.counts() == before


ECHO_AS_PROXY = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    s.sendall(b"from-1337"); s.shutdown(socket.SHUT_WR)
    print(s.recv(100).decode())
"""


def test_proxy_uid_traffic_is_not_captured_again(mesh: Mesh, capture: Callable[..., None]) -> None:
    capture(mesh.a)
    capture(mesh.b)
    before_a, before_b = mesh.sidecar_a.counts(), mesh.sidecar_b.counts()
    done = mesh.a.run_as_proxy(sys.executable, "-c", ECHO_AS_PROXY, B_IP, str(ECHO))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from-1337"
    after_a, after_b = mesh.sidecar_a.counts(), mesh.sidecar_b.counts()
    # A connection owned by UID 1337 in pod A skips A's capture (else the sidecar's own
    # upstream calls would loop back into it); B still captures it on the way in.
    assert after_a == before_a
    assert (after_b - before_b).tcp == 1


def test_sidecar_health_port_is_reached_directly(mesh: Mesh, capture: Callable[..., None]) -> None:
    # 15021 is in the default inbound exclusions: a kubelet-style probe from outside the
    # pod must reach B's sidecar health listener itself, not be redirected to 15006.
    capture(mesh.a)
    capture(mesh.b)
    status, body = apps.http_get_text(mesh.a.name, B_IP, 15021, "/healthz/ready")
    assert (status, body.strip()) == (200, "LIVE")


GET_AS_PROXY = """
import http.client, sys
connection = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
connection.request("GET", "/hairpin")
response = connection.getresponse()
print(response.status, len(response.read()))
"""


def test_proxy_calling_its_own_pod_ip_goes_to_inbound(
    mesh: Mesh, capture: Callable[..., None]
) -> None:
    # The VIP hairpin: when the sidecar's outbound side sends an app's call to this very
    # pod, the UID 1337 connection over lo is sent to inbound capture (15006), so the app
    # gets it from the passthrough address like any inbound call.
    capture(mesh.a)
    before = mesh.sidecar_a.counts()
    peers = len(mesh.http_a.peers)
    done = mesh.a.run_as_proxy(sys.executable, "-c", GET_AS_PROXY, A_IP, str(HTTP))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "200"
    assert mesh.http_a.peers[peers:] == ["127.0.0.6"]
    assert (mesh.sidecar_a.counts() - before).rq == 1
