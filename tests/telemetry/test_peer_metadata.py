"""Istio's peer metadata exchange between real sidecars: each side's labels name the other.

client -> A (outbound, workload productpage) -> B (inbound, workload reviews) -> server,
over HTTP/1.1 and gRPC; and A against an upstream that answers as an Istio sidecar
would, its metadata written by the protobuf library itself.
"""

from __future__ import annotations

import base64
import http.server
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.telemetry.servers import (
    Sidecar,
    Upstream,
    UpstreamHandler,
    free_port,
    http_get,
    raw_request,
    tmpdir,
    wait_until,
)

PEER_HEADERS = {"x-envoy-peer-metadata", "x-envoy-peer-metadata-id"}
INBOUND = {"PILOTFISH_EXPLICIT_DIRECTION": "inbound"}
SERVICE = "pilotfish.test.Echo"


def requests_total(sidecar: Sidecar) -> list[tuple[dict[str, str], float]]:
    """istio_requests_total's samples: (labels, value)."""
    families = text_string_to_metric_families(sidecar.metrics())
    return [
        (dict(sample.labels), sample.value)
        for family in families
        if family.name == "istio_requests"
        for sample in family.samples
        if sample.name == "istio_requests_total"
    ]


def count_where(sidecar: Sidecar, **labels: str) -> float:
    return sum(
        value
        for got, value in requests_total(sidecar)
        if all(got.get(k) == v for k, v in labels.items())
    )


def istio_metadata_header() -> str:
    """An `x-envoy-peer-metadata` value as an Istio 1.2x sidecar sends it: its node
    metadata (with fields pilotfish does not read) as a protobuf Struct, base64."""
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "NAME": "ratings-v1-5f9d-x2",
            "NAMESPACE": "bookinfo",
            "WORKLOAD_NAME": "ratings-v1",
            "CLUSTER_ID": "east",
            "OWNER": "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/ratings-v1",
            "MESH_ID": "cluster.local",
            "ISTIO_VERSION": "1.24.0",
            "APP_CONTAINERS": "ratings",
            "INSTANCE_IPS": "10.1.2.3",
            "PLATFORM_METADATA": {},
            "LABELS": {
                "app": "ratings",
                "version": "v1",
                "pod-template-hash": "5f9d",
                "service.istio.io/canonical-name": "ratings",
                "service.istio.io/canonical-revision": "v1",
            },
        }
    )
    return base64.b64encode(metadata.SerializeToString(deterministic=True)).decode()


class IstioPeerHandler(UpstreamHandler):
    """Answers as a server behind an Istio sidecar does: with that sidecar's metadata."""

    def do_GET(self) -> None:
        self.server.seen.append({k.lower() for k in self.headers})  # type: ignore[attr-defined]
        node = "sidecar~10.1.2.3~ratings-v1-5f9d-x2.bookinfo~bookinfo.svc.cluster.local"
        self._answer(
            200,
            b"ratings\n",
            {"x-envoy-peer-metadata-id": node, "x-envoy-peer-metadata": istio_metadata_header()},
        )


class World:
    def __init__(self, tmp: Path) -> None:
        self.server = Upstream()
        self.b = Sidecar(
            tmp,
            "reviews",
            self.server.port,
            env={**INBOUND, "PILOTFISH_APP": "reviews", "PILOTFISH_VERSION": "v2"},
        )
        self.a = Sidecar(tmp, "productpage", self.b.port, env={"PILOTFISH_APP": "productpage"})
        self.istio = http.server.ThreadingHTTPServer(("127.0.0.1", 0), IstioPeerHandler)
        self.istio.daemon_threads = True
        self.istio.seen = []  # type: ignore[attr-defined]
        threading.Thread(target=self.istio.serve_forever, daemon=True).start()
        self.to_istio = Sidecar(tmp, "details", self.istio.server_address[1])
        self.quiet = Sidecar(tmp, "quiet", self.server.port, env={"PILOTFISH_PEER_METADATA": "off"})
        # A server sidecar whose app is down: its own 503 still says who answered.
        self.down_b = Sidecar(tmp, "ratings", free_port(), env=INBOUND)
        self.down_a = Sidecar(tmp, "checkout", self.down_b.port)

    def close(self) -> None:
        for sidecar in (self.a, self.b, self.to_istio, self.quiet, self.down_a, self.down_b):
            sidecar.stop()
        self.server.close()
        self.istio.shutdown()
        self.istio.server_close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World(tmpdir("pf-peer-"))
    yield world
    world.close()


def test_each_sidecar_labels_the_other_workload(world: World) -> None:
    for _ in range(3):
        status, _, headers = http_get(f"http://127.0.0.1:{world.a.port}/hello")
        assert status == 200
        # The exchange is between the sidecars: neither app sees its headers.
        assert not PEER_HEADERS & set(headers)
    assert all(not PEER_HEADERS & set(seen) for seen in world.server.seen)
    # A, the caller's sidecar, learnt from B's answer who served it ...
    wait_until(
        lambda: count_where(world.a, destination_workload="reviews") == 3,
        10,
        "A's destination labels",
    )
    ((labels, _),) = [(labels, value) for labels, value in requests_total(world.a)]
    assert labels["reporter"] == "source"
    assert (labels["source_workload"], labels["source_app"]) == ("productpage", "productpage")
    assert labels["destination_workload_namespace"] == "shop"
    assert (labels["destination_app"], labels["destination_version"]) == ("reviews", "v2")
    assert labels["destination_canonical_service"] == "reviews"
    assert labels["destination_principal"] == "unknown"  # no mTLS: nothing verified
    # ... and B, the server's, from A's request who called.
    wait_until(
        lambda: count_where(world.b, source_workload="productpage") == 3, 10, "B's source labels"
    )
    ((labels, _),) = [(labels, value) for labels, value in requests_total(world.b)]
    assert labels["reporter"] == "destination"
    assert (labels["source_app"], labels["source_workload_namespace"]) == ("productpage", "shop")
    assert labels["source_canonical_service"] == "productpage"
    assert (labels["destination_workload"], labels["destination_version"]) == ("reviews", "v2")


def test_an_istio_sidecars_answer_names_the_destination(world: World) -> None:
    status, body, headers = http_get(f"http://127.0.0.1:{world.to_istio.port}/ratings")
    assert status == 200 and body == b"ratings\n"
    assert not PEER_HEADERS & set(headers)  # taken out before the app sees the answer
    assert world.istio.seen[-1] >= PEER_HEADERS  # type: ignore[attr-defined]
    wait_until(
        lambda: count_where(world.to_istio, destination_workload="ratings-v1") == 1,
        10,
        "labels from Istio's metadata",
    )
    ((labels, _),) = requests_total(world.to_istio)
    assert labels["destination_workload_namespace"] == "bookinfo"
    assert (labels["destination_app"], labels["destination_version"]) == ("ratings", "v1")
    assert (labels["destination_canonical_service"], labels["destination_canonical_revision"]) == (
        "ratings",
        "v1",
    )
    assert labels["destination_cluster"] == "east"


def test_metadata_from_a_caller_that_is_not_a_peer_is_dropped(world: World) -> None:
    before = len(world.server.seen)
    # Not base64, then base64 of bytes that are no protobuf: neither names anybody.
    for value in ("!!not-base64!!", base64.b64encode(b"\x0a\xff\xff\xff").decode()):
        assert (
            raw_request(
                world.b.port,
                "/bad",
                {"x-envoy-peer-metadata": value, "x-envoy-peer-metadata-id": "x"},
            )
            == 200
        )
    assert all(not PEER_HEADERS & set(seen) for seen in world.server.seen[before:])
    wait_until(
        lambda: count_where(world.b, source_workload="unknown") == 2,
        10,
        "two requests from an unknown caller",
    )
    # Nothing is said back to a caller that did not say who it is.
    with socket.create_connection(("127.0.0.1", world.b.port), 5) as conn:
        conn.sendall(b"GET /plain HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b"x-envoy-peer-metadata" not in answer.lower()


def test_a_local_reply_names_the_server_side(world: World) -> None:
    status, _, headers = http_get(f"http://127.0.0.1:{world.down_a.port}/rate")
    assert status == 503
    assert not PEER_HEADERS & set(headers)
    # B answered 503 UF itself (its app refused); A still learnt that B's workload did.
    wait_until(
        lambda: count_where(world.down_a, response_code="503", destination_workload="ratings") >= 1,
        10,
        "labels on a 503",
    )
    wait_until(
        lambda: count_where(world.down_b, response_flags="UF", source_workload="checkout") >= 1,
        10,
        "B's UF series",
    )


def test_exchange_can_be_turned_off(world: World) -> None:
    before = len(world.server.seen)
    assert (
        raw_request(world.quiet.port, "/quiet", {"x-envoy-peer-metadata": istio_metadata_header()})
        == 200
    )
    (seen,) = world.server.seen[before:]
    # Neither ours nor the app's own copy goes upstream.
    assert not PEER_HEADERS & set(seen)


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    names = {name for name, _ in context.invocation_metadata()}
    return b"saw-peer-headers" if PEER_HEADERS & names else request


def test_grpc_through_two_sidecars(tmp_path: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = {"Unary": grpc.unary_unary_rpc_method_handler(_unary, bytes, bytes)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    b = Sidecar(tmp_path, "grpc-server", port, env=INBOUND)
    a = Sidecar(tmp_path, "grpc-client", b.port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{a.port}") as channel:
            unary = channel.unary_unary(
                f"/{SERVICE}/Unary", request_serializer=bytes, response_deserializer=bytes
            )
            answer, call = unary.with_call(b"hello", timeout=5)
            assert answer == b"hello"
            assert not PEER_HEADERS & {name for name, _ in call.initial_metadata()}
        wait_until(
            lambda: (
                count_where(a, request_protocol="grpc", destination_workload="grpc-server") == 1
            ),
            10,
            "A's grpc labels",
        )
        wait_until(
            lambda: count_where(b, request_protocol="grpc", source_workload="grpc-client") == 1,
            10,
            "B's grpc labels",
        )
    finally:
        a.stop()
        b.stop()
        server.stop(None)
