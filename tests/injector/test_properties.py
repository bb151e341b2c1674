"""Hypothesis: generated pods and AdmissionReviews never crash the webhook or get a 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from injector import names
from injector.mutate import Injector, mutate
from injector.server import WebhookServer
from injector.tls import ReloadingServerTLS
from tests.injector.k8s_schema import validate_all_versions
from tests.injector.reviews import admission_review
from tests.injector.webhook_harness import RunningWebhook, running_webhook, write_certs

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

dns_label = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")
port = st.integers(min_value=1, max_value=65535)
json_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
any_json = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ANNOTATIONS = [
    names.INCLUDE_INBOUND_PORTS,
    names.EXCLUDE_INBOUND_PORTS,
    names.INCLUDE_OUTBOUND_PORTS,
    names.EXCLUDE_OUTBOUND_PORTS,
    names.INCLUDE_OUTBOUND_IP_RANGES,
    names.EXCLUDE_OUTBOUND_IP_RANGES,
    names.EXCLUDE_INTERFACES,
    names.PROXY_CPU,
    names.PROXY_CPU_LIMIT,
    names.PROXY_MEMORY,
    names.PROXY_MEMORY_LIMIT,
    names.PROXY_IMAGE,
    names.LOG_LEVEL,
    names.REWRITE_PROBERS,
    names.NATIVE_SIDECAR,
    names.INTERCEPTION_MODE,
    names.STATS_HISTOGRAM_BUCKETS,
    names.PROXY_CONFIG,
    names.INJECT,
    "prometheus.io/scrape",
    "prometheus.io/port",
    "prometheus.io/path",
]
annotation_value = st.sampled_from(
    [
        "*",
        "",
        "80,443",
        "10.0.0.0/8",
        "fd00::/8",
        "100m",
        "2",
        "256Mi",
        "true",
        "false",
        "debug",
        "REDIRECT",
        "1,5,10",
        "concurrency: 3",
        "holdApplicationUntilProxyStarts: true",
        "upstream_http2_ports: [50051, 8443]",
        "upstreamHttp2Ports: 9090",
        "eth1",
        "/metrics",
        "9102",
    ]
) | st.text(max_size=12)


@st.composite
def probe(draw: st.DrawFn, port_names: list[str]) -> dict[str, Any]:
    target: Any = draw(st.sampled_from(port_names) if port_names and draw(st.booleans()) else port)
    action = draw(
        st.sampled_from(
            [
                {"httpGet": {"path": "/" + draw(dns_label), "port": target}},
                {"tcpSocket": {"port": target}},
                {"grpc": {"port": draw(port)}},
                {"exec": {"command": ["true"]}},
            ]
        )
    )
    return {**action, "periodSeconds": draw(st.integers(1, 30))}


@st.composite
def container(draw: st.DrawFn, name: str) -> dict[str, Any]:
    # Some names say HTTP/2 (grpc, http2-*, h2c), which puts their ports in the sidecar's env.
    port_name = st.sampled_from(["grpc", "http2-web", "h2c", "http"]) | dns_label.filter(
        lambda s: len(s) <= 15
    )
    port_names = draw(st.lists(port_name, max_size=2, unique=True))
    result: dict[str, Any] = {"name": name, "image": "app:1"}
    if port_names:
        numbers = draw(
            st.lists(port, min_size=len(port_names), max_size=len(port_names), unique=True)
        )
        result["ports"] = [
            {"name": n, "containerPort": p} for n, p in zip(port_names, numbers, strict=True)
        ]
    for field in ("livenessProbe", "readinessProbe", "startupProbe"):
        if draw(st.booleans()):
            result[field] = draw(probe(port_names))
    return result


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    container_names = draw(st.lists(dns_label, min_size=1, max_size=3, unique=True))
    init_names = draw(
        st.lists(dns_label.filter(lambda n: n not in container_names), max_size=2, unique=True)
    )
    metadata: dict[str, Any] = {"name": draw(dns_label)}
    metadata["labels"] = draw(
        st.dictionaries(st.sampled_from(["app", "version", names.INJECT]), dns_label, max_size=3)
    )
    metadata["annotations"] = draw(
        st.dictionaries(st.sampled_from(ANNOTATIONS), annotation_value, max_size=4)
    )
    spec: dict[str, Any] = {"containers": [draw(container(n)) for n in container_names]}
    if init_names:
        spec["initContainers"] = [{"name": n, "image": "init:1"} for n in init_names]
    if draw(st.booleans()):
        spec["hostNetwork"] = draw(st.booleans())
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@pytest.fixture(scope="module")
def server(injector: Injector, tmp_path_factory: pytest.TempPathFactory) -> WebhookServer:
    directory = tmp_path_factory.mktemp("certs")
    write_certs(directory)
    return WebhookServer(injector, ReloadingServerTLS(directory / "tls.crt", directory / "tls.key"))


@SETTINGS
@given(pod=pods(), namespace=st.sampled_from(["shop", "kube-system", "default"]))
def test_generated_pods_get_a_valid_answer(
    server: WebhookServer, pod: dict[str, Any], namespace: str
) -> None:
    review = admission_review(pod, namespace=namespace)
    reply = server.route(
        "POST", "/inject", {"content-type": "application/json"}, json.dumps(review).encode()
    )
    assert reply.status == 200
    response = json.loads(reply.body)["response"]
    assert response["uid"] == review["request"]["uid"]
    if not response["allowed"]:
        assert response["status"]["code"] == 400, response
        assert "invalid annotation" in response["status"]["message"]
        return
    if "patch" not in response:
        return
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    assert patched == mutate(pod, server.injector)  # the patch is exactly the mutation
    assert mutate(patched, server.injector) == patched  # idempotent
    proxies = [
        c
        for key in ("initContainers", "containers")
        for c in patched["spec"].get(key, [])
        if c["name"] == names.PROXY_CONTAINER
    ]
    assert len(proxies) == 1
    validate_all_versions(patched)


@SETTINGS
@given(body=any_json)
def test_arbitrary_json_never_gets_a_5xx(server: WebhookServer, body: Any) -> None:
    for candidate in (
        body,
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body},
        admission_review(body),
    ):
        reply = server.route(
            "POST", "/inject", {"content-type": "application/json"}, json.dumps(candidate).encode()
        )
        assert reply.status < 500


@SETTINGS
@given(
    pod=pods(),
    mangle=st.sampled_from(
        ["metadata", "spec", "containers", "labels", "env", "ports", "probe", "status"]
    ),
    junk=any_json,
)
def test_mangled_pods_never_get_a_5xx(
    server: WebhookServer, pod: dict[str, Any], mangle: str, junk: Any
) -> None:
    first = pod["spec"]["containers"][0]
    if mangle in ("metadata", "spec"):
        pod[mangle] = junk
    elif mangle == "containers":
        pod["spec"]["containers"] = junk
    elif mangle == "labels":
        pod["metadata"]["labels"] = junk
    elif mangle == "status":
        pod["metadata"]["annotations"][names.STATUS] = json.dumps(junk)
    elif mangle == "probe":
        first["readinessProbe"] = junk
    else:
        first[mangle] = junk
    reply = server.route(
        "POST",
        "/inject",
        {"content-type": "application/json"},
        json.dumps(admission_review(pod)).encode(),
    )
    assert reply.status == 200
    response = json.loads(reply.body)["response"]
    assert response.get("status", {}).get("code", 200) < 500, response


@SETTINGS
@given(
    body=st.binary(max_size=200),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/json; charset=utf-8"]
    ),
)
def test_arbitrary_bytes_never_get_a_5xx(
    server: WebhookServer, body: bytes, content_type: str
) -> None:
    reply = server.route("POST", "/inject", {"content-type": content_type}, body)
    assert reply.status in (200, 400, 415)


@pytest.fixture(scope="module")
def live_webhook(
    injector: Injector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWebhook]:
    with running_webhook(injector, tmp_path_factory.mktemp("live")) as running:
        yield running


@settings(max_examples=25, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        any_json.map(lambda value: json.dumps(value).encode()),
        pods().map(lambda pod: json.dumps(admission_review(pod)).encode()),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/json; x=y"]),
)
def test_over_tls_nothing_gets_a_5xx(
    live_webhook: RunningWebhook, body: bytes, content_type: str
) -> None:
    status, _ = live_webhook.post(body, content_type=content_type)
    assert status in (200, 400, 415)
    assert live_webhook.get("/healthz")[0] == 200
