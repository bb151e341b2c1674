"""An HTTP/1.1 client reaches an h2c-only app through sidecars configured by the injector.

A-app (HTTP/1.1) -> A-sidecar (15001) -> B-sidecar (15006) -> B-app (speaks only h2c).
Pod B declares its port as `h2c`, so the injector puts it in B's sidecar's
PILOTFISH_UPSTREAM_HTTP2_PORTS and B's sidecar talks HTTP/2 to its app. With the
`proxy.pilotfish.io/config` list on pod A, A's sidecar sends that call over HTTP/2 as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from injector import names
from tests.e2e import apps, injected, netns
from tests.e2e.conftest import CALL_FAILED, Pods
from tests.e2e.sidecar import Sidecar
from tests.h2.h2only import H2OnlyServer

pytestmark = netns.ROOT_ONLY


@pytest.fixture
def h2_app(pods: Pods) -> Iterator[H2OnlyServer]:
    """The h2c-only server, listening inside pod B (on 127.0.0.1, where inbound arrives)."""
    with netns.entered(pods.b.name):
        server = H2OnlyServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[Sidecar]]:
    """Sidecars a test starts; stopped after it, with their log shown if it failed."""
    sidecars: list[Sidecar] = []
    yield sidecars
    for sidecar in sidecars:
        if request.node.stash.get(CALL_FAILED, False):
            print(f"--- sidecar in {sidecar.pod.name}:\n{sidecar.process.output()}")
        sidecar.process.stop()
        sidecar.pod.processes.remove(sidecar.process)


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


@pytest.mark.parametrize("client_lists_port", [True, False], ids=["a-override", "b-port-only"])
def test_http1_client_reaches_h2c_only_app(
    pods: Pods,
    h2_app: H2OnlyServer,
    capture: Callable[..., None],
    started: list[Sidecar],
    client_lists_port: bool,
) -> None:
    port = h2_app.port
    a_annotations = (
        {names.PROXY_CONFIG: f"upstream_http2_ports: [{port}]\n"} if client_lists_port else {}
    )
    pod_a = injected.inject(injected.manifest("client", annotations=a_annotations))
    pod_b = injected.inject(
        injected.manifest("h2app", ports=[{"name": "h2c-api", "containerPort": port}])
    )
    env_a = injected.sidecar_env(pod_a, pods.a)
    env_b = injected.sidecar_env(pod_b, pods.b)
    assert env_b["PILOTFISH_UPSTREAM_HTTP2_PORTS"] == str(port)
    assert env_a.get("PILOTFISH_UPSTREAM_HTTP2_PORTS") == (str(port) if client_lists_port else None)

    capture(pods.a, *injected.capture_flags(pod_a))
    capture(pods.b, *injected.capture_flags(pod_b))
    sidecar_a = injected.start_sidecar(pods.a, pod_a)
    started.append(sidecar_a)
    sidecar_b = injected.start_sidecar(pods.b, pod_b)
    started.append(sidecar_b)
    before_a, before_b = sidecar_a.stats(), sidecar_b.stats()

    status, text = apps.http_get_text(pods.a.name, pods.b.ip, port, "/hello?via=pod")
    assert status == 200, text
    assert text.startswith(f"h2 GET /hello?via=pod authority={pods.b.ip}:{port} "), text
    # The app saw one HTTP/2 request and no HTTP/1.1 bytes.
    assert [path for _, path, _ in h2_app.answered] == ["/hello?via=pod"]
    assert h2_app.http1_closed == 0

    after_a, after_b = sidecar_a.stats(), sidecar_b.stats()
    # A's sidecar took the app's HTTP/1.1 request and sent one request upstream.
    assert _delta(after_a, before_a, "downstream_cx_http1_total") == 1
    assert _delta(after_a, before_a, "upstream_rq_total") == 1
    assert _delta(after_a, before_a, "downstream_rq_2xx") == 1
    # What reached B's sidecar says which protocol A's upstream spoke: HTTP/2 when pod A
    # listed the port, else HTTP/1.1 (and B's sidecar turned it into HTTP/2 for its app).
    b_downstream = "downstream_cx_http2_total" if client_lists_port else "downstream_cx_http1_total"
    assert _delta(after_b, before_b, b_downstream) == 1
    assert _delta(after_b, before_b, "upstream_rq_total") == 1
    assert _delta(after_b, before_b, "downstream_rq_2xx") == 1
    # No HTTP/1.1 attempt at the h2c-only app first (that would fail its handshake).
    for after, before in ((after_a, before_a), (after_b, before_b)):
        assert _delta(after, before, "upstream_cx_protocol_error") == 0
