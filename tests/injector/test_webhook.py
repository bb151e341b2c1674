"""The webhook over real TLS on 127.0.0.1: patches applied with jsonpatch and validated."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from injector import names
from injector.mutate import Injector
from tests.injector.k8s_schema import validate_all_versions
from tests.injector.reviews import MANAGED_FIELDS, OWNERS, admission_review, app_pod
from tests.injector.webhook_harness import (
    RunningWebhook,
    ServiceConnection,
    running_webhook,
    write_certs,
)


@pytest.fixture(scope="module")
def webhook(
    injector: Injector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWebhook]:
    with running_webhook(injector, tmp_path_factory.mktemp("certs")) as running:
        yield running


def review_response(webhook: RunningWebhook, review: dict[str, Any]) -> dict[str, Any]:
    status, body = webhook.post(review)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response: dict[str, Any] = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def apply(review: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    patched: dict[str, Any] = jsonpatch.apply_patch(review["request"]["object"], operations)
    return patched


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_generate_name_pod_from_a_deployment_is_injected(webhook: RunningWebhook) -> None:
    pod = app_pod(
        generateName="reviews-v1-7d4b9c8f6d-",
        labels={"app": "reviews", "version": "v1", "pod-template-hash": "7d4b9c8f6d"},
        ownerReferences=[
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "controller": True,
                "name": "reviews-v1-7d4b9c8f6d",
                "uid": "1234",
            }
        ],
        managedFields=MANAGED_FIELDS,
    )
    review = admission_review(pod)
    response = review_response(webhook, review)
    patched = apply(review, response)
    operations = json.loads(base64.b64decode(response["patch"]))
    assert not any("managedFields" in op["path"] for op in operations)
    assert patched["metadata"]["managedFields"] == MANAGED_FIELDS
    assert "name" not in patched["metadata"]
    init_names = [c["name"] for c in patched["spec"]["initContainers"]]
    assert init_names == [names.INIT_CONTAINER, names.PROXY_CONTAINER]
    proxy = patched["spec"]["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"
    env = env_of(proxy)
    assert env["PILOTFISH_WORKLOAD"] == "reviews-v1"
    assert env["PILOTFISH_APP"] == "reviews"
    probers = json.loads(env[names.ENV_APP_PROBERS])
    assert probers["/app-health/reviews/readyz"] == {"httpGet": {"path": "/health", "port": 9080}}
    assert probers["/app-health/reviews/livez"] == {"tcpSocket": {"port": 9080}}
    assert probers["/app-health/reviews/startupz"] == {"grpc": {"port": 9090}}
    app = patched["spec"]["containers"][0]
    assert app["readinessProbe"]["httpGet"] == {
        "path": "/app-health/reviews/readyz",
        "port": 15020,
        "scheme": "HTTP",
    }
    status = json.loads(patched["metadata"]["annotations"][names.STATUS])
    assert list(status) == list(names.STATUS_KEYS)
    assert patched["metadata"]["annotations"]["prometheus.io/port"] == "15020"
    patched["metadata"]["name"] = "reviews-v1-7d4b9c8f6d-abcde"  # the API server names it
    validate_all_versions(patched)


@pytest.mark.parametrize(
    ("kind", "owner", "labels", "workload"), OWNERS, ids=[f"{o[0]}-{o[1]}" for o in OWNERS]
)
def test_pods_of_every_workload_kind(
    webhook: RunningWebhook, kind: str, owner: str, labels: dict[str, str], workload: str
) -> None:
    pod = app_pod(
        generateName=owner + "-",
        labels={"app": "x", **labels},
        ownerReferences=[
            {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u", "controller": True}
        ],
    )
    if kind == "Job":
        pod["spec"]["restartPolicy"] = "Never"
    review = admission_review(pod)
    patched = apply(review, review_response(webhook, review))
    proxy = next(c for c in patched["spec"]["initContainers"] if c["name"] == names.PROXY_CONTAINER)
    assert env_of(proxy)["PILOTFISH_WORKLOAD"] == workload
    patched["metadata"]["name"] = owner + "-0"
    validate_all_versions(patched)


def test_reinvocation_updates_in_place(webhook: RunningWebhook) -> None:
    review = admission_review(app_pod(name="again"))
    once = apply(review, review_response(webhook, review))
    again = admission_review(once)
    response = review_response(webhook, again)
    # Already injected and unchanged: no patch, and never a second sidecar.
    assert response["allowed"] is True
    assert "patch" not in response


@pytest.mark.parametrize(
    ("pod_changes", "namespace"),
    [
        ({"spec": {"hostNetwork": True}}, "shop"),
        ({}, "kube-system"),
        ({"metadata": {"labels": {names.INJECT: "false"}}}, "shop"),
        ({"metadata": {"annotations": {names.INJECT: "false"}}}, "shop"),
    ],
    ids=["hostNetwork", "system-namespace", "opt-out-label", "opt-out-annotation"],
)
def test_skipped_pods_are_allowed_without_patch(
    webhook: RunningWebhook, pod_changes: dict[str, Any], namespace: str
) -> None:
    pod = app_pod(name="skip-me")
    for section, values in pod_changes.items():
        pod[section].update(values)
    response = review_response(webhook, admission_review(pod, namespace=namespace))
    assert response == {"uid": response["uid"], "allowed": True}


def test_not_a_pod_or_not_create_is_allowed_without_patch(webhook: RunningWebhook) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    for review in (
        admission_review(service, kind="Service"),
        admission_review(app_pod(name="p"), operation="UPDATE"),
        admission_review(app_pod(name="p"), operation="DELETE"),
    ):
        response = review_response(webhook, review)
        assert response == {"uid": review["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (names.EXCLUDE_INBOUND_PORTS, "80,http"),
        (names.INCLUDE_OUTBOUND_PORTS, "70000"),
        (names.EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/40"),
        (names.INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.1"),
        (names.PROXY_CPU, "lots"),
        (names.PROXY_MEMORY_LIMIT, "-1Gi"),
        (names.LOG_LEVEL, "chatty"),
        (names.NATIVE_SIDECAR, "maybe"),
        (names.INTERCEPTION_MODE, "NAT"),
        (names.INTERCEPTION_MODE, "TPROXY"),
        (names.PROXY_CONFIG, "concurrency: many"),
        (names.PROXY_CONFIG, "upstream_http2_ports: [http]"),
        (names.PROXY_CONFIG, "upstreamHttp2Ports: 70000"),
        (names.STATS_HISTOGRAM_BUCKETS, "5,1"),
    ],
)
def test_invalid_annotation_denies_naming_it(
    webhook: RunningWebhook, annotation: str, value: str
) -> None:
    pod = app_pod(name="bad", annotations={annotation: value})
    response = review_response(webhook, admission_review(pod))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert annotation in response["status"]["message"]


def test_limit_below_request_is_denied(webhook: RunningWebhook) -> None:
    pod = app_pod(name="bad", annotations={names.PROXY_CPU: "2", names.PROXY_CPU_LIMIT: "1"})
    response = review_response(webhook, admission_review(pod))
    assert response["allowed"] is False
    assert names.PROXY_CPU_LIMIT in response["status"]["message"]


def test_bad_bodies(webhook: RunningWebhook) -> None:
    review = admission_review(app_pod(name="p"))
    status, body = webhook.post(json.dumps(review).encode(), content_type="text/plain")
    assert status == 415
    assert b"Content-Type" in body
    assert webhook.post(b"", content_type="application/json")[0] == 400
    status, body = webhook.post(b"{not json", content_type="application/json")
    assert (status, body.startswith(b"malformed JSON")) == (400, True)
    assert webhook.post(b"[1, 2]")[0] == 400
    assert webhook.post({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})[0] == 400
    no_object = admission_review(app_pod(name="p"))
    no_object["request"]["object"] = "pod"
    assert webhook.post(no_object)[0] == 400
    status, _ = webhook.post(b"x" * (3 * 1024 * 1024 + 10))
    assert status == 413


def test_routes_and_metrics(webhook: RunningWebhook) -> None:
    assert webhook.get("/healthz") == (200, b"ok\n")
    assert webhook.get("/readyz") == (200, b"ready\n")
    assert webhook.get("/nope")[0] == 404
    assert webhook.get("/inject")[0] == 405
    review_response(webhook, admission_review(app_pod(name="m")))
    review_response(webhook, admission_review(app_pod(name="m"), namespace="kube-system"))
    webhook.post(b"", content_type="application/json")
    status, text = webhook.get("/metrics")
    assert status == 200
    metrics = text.decode()
    for line in (
        'pilotfish_injector_requests_total{result="injected"}',
        "pilotfish_injector_injected_total",
        'pilotfish_injector_skipped_total{reason="systemNamespace"}',
        'pilotfish_injector_failed_total{reason="empty"}',
        "pilotfish_injector_review_duration_seconds_bucket",
    ):
        value = next(float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line))
        assert value >= 1, line


def test_keep_alive_serves_several_reviews_on_one_connection(webhook: RunningWebhook) -> None:
    connection = webhook.connection()
    try:
        for _ in range(3):
            review = admission_review(app_pod(name="k"))
            connection.request(
                "POST",
                "/inject",
                body=json.dumps(review),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["response"]["uid"] == review["request"]["uid"]
    finally:
        connection.close()


def test_tls_is_1_2_or_newer_and_verified(webhook: RunningWebhook, tmp_path: Path) -> None:
    connection = webhook.connection()
    connection.connect()
    assert connection.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    connection.close()
    old = webhook.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: the point
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.raises(ssl.SSLError):
        legacy = ServiceConnection(webhook.port, old)
        try:
            legacy.connect()
        finally:
            legacy.close()
    # A CA that did not sign the serving certificate is refused, as by the API server.
    other_ca = write_certs(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        connection = webhook.connection(other_ca)
        try:
            connection.connect()
        finally:
            connection.close()


def test_certificate_rotation_is_picked_up(webhook: RunningWebhook, tmp_path: Path) -> None:
    old_ca = webhook.ca_file.read_bytes()
    (tmp_path / "old-ca.crt").write_bytes(old_ca)
    new_ca = write_certs(webhook.cert_dir)  # rotate the files the server reads
    assert webhook.server.tls.maybe_reload() is True
    assert webhook.get("/healthz")[0] == 200  # verified against the new CA
    with pytest.raises(ssl.SSLCertVerificationError):
        connection = webhook.connection(tmp_path / "old-ca.crt")
        try:
            connection.connect()
        finally:
            connection.close()
    assert new_ca == webhook.ca_file
    assert webhook.server.tls.maybe_reload() is None  # unchanged since


def test_the_watcher_reloads_rotated_files(webhook: RunningWebhook) -> None:
    server = webhook.server
    before = server.metrics.cert_reloads.labels("ok")._value.get()

    async def watch_until_reloaded() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(server.watch_certificates(0.02, stop))
        write_certs(webhook.cert_dir)
        for _ in range(250):  # bounded: 5 s at most
            if server.metrics.cert_reloads.labels("ok")._value.get() > before:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await watcher

    asyncio.run_coroutine_threadsafe(watch_until_reloaded(), webhook.loop).result(10)
    assert server.metrics.cert_reloads.labels("ok")._value.get() == before + 1
    assert webhook.get("/healthz")[0] == 200


def test_a_trickling_request_is_cut_off(
    webhook: RunningWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from injector import server as server_module

    monkeypatch.setattr(server_module, "REQUEST_DEADLINE", 0.5)
    connection = webhook.connection()
    connection.connect()
    sock = connection.sock
    assert sock is not None
    sock.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    sock.settimeout(5)
    started = time.monotonic()
    assert sock.recv(100) == b""  # closed by the server, not answered
    assert time.monotonic() - started < 4
    connection.close()
