"""End to end against a real cluster with the injector installed (`-m cluster`, KUBECONFIG).

Deselected by default (pyproject's addopts); .github/workflows/kind-e2e.yaml installs the
injector into kind and runs these. Pods go through the real API server: its TLS dial to the
webhook with our caBundle, the namespace and object selectors, and the JSON Patch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from injector import names

pytestmark = pytest.mark.cluster

PAUSE = "registry.k8s.io/pause:3.10"


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    if not os.environ.get("KUBECONFIG") or shutil.which("kubectl") is None:
        pytest.fail("the cluster tests need KUBECONFIG and kubectl (run them with -m cluster)")
    kubectl("get", "mutatingwebhookconfiguration", "pilotfish-sidecar-injector")


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"pf-e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    labelled = getattr(request, "param", True)
    if labelled:
        kubectl("label", "namespace", name, f"{names.NAMESPACE_LABEL}={names.NAMESPACE_ENABLED}")
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def pod_manifest(
    name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels or {"app": name},
            "annotations": annotations or {},
        },
        "spec": {
            "containers": [
                {"name": "app", "image": PAUSE, "readinessProbe": {"tcpSocket": {"port": 8080}}}
            ]
        },
    }


def create(
    namespace: str, obj: dict[str, Any], dry_run: bool = True
) -> subprocess.CompletedProcess[str]:
    args = ["-n", namespace, "create", "-f", "-", "-o", "json"]
    if dry_run:
        args.append("--dry-run=server")  # runs the admission webhooks, stores nothing
    return kubectl(*args, stdin=json.dumps(obj), check=False)


def container_names(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for key in ("initContainers", "containers") for c in pod["spec"].get(key, [])]


def test_labelled_namespace_injects(namespace: str) -> None:
    result = create(namespace, pod_manifest("web"))
    assert result.returncode == 0, result.stderr
    pod = json.loads(result.stdout)
    assert names.PROXY_CONTAINER in container_names(pod)
    assert names.INIT_CONTAINER in container_names(pod)
    status = json.loads(pod["metadata"]["annotations"][names.STATUS])
    assert list(status) == list(names.STATUS_KEYS)
    app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    assert app["readinessProbe"]["httpGet"]["path"] == "/app-health/app/readyz"


def test_opt_out_label_is_honoured(namespace: str) -> None:
    result = create(namespace, pod_manifest("plain", labels={names.INJECT: "false"}))
    assert result.returncode == 0, result.stderr
    assert names.PROXY_CONTAINER not in container_names(json.loads(result.stdout))


@pytest.mark.parametrize("namespace", [False], indirect=True)
def test_unlabelled_namespace_needs_the_pod_label(namespace: str) -> None:
    plain = json.loads(create(namespace, pod_manifest("plain")).stdout)
    assert names.PROXY_CONTAINER not in container_names(plain)
    opted = json.loads(
        create(namespace, pod_manifest("opted", labels={names.INJECT: "true"})).stdout
    )
    assert names.PROXY_CONTAINER in container_names(opted)


def test_invalid_annotation_is_denied_with_its_name(namespace: str) -> None:
    bad = pod_manifest("bad", annotations={names.EXCLUDE_INBOUND_PORTS: "eighty"})
    result = create(namespace, bad)
    assert result.returncode != 0
    assert names.EXCLUDE_INBOUND_PORTS in result.stderr


def test_deployment_pods_are_injected(namespace: str) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reviews"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reviews"}},
            "template": {
                "metadata": {"labels": {"app": "reviews"}},
                "spec": {"containers": [{"name": "app", "image": PAUSE}]},
            },
        },
    }
    result = create(namespace, deployment, dry_run=False)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 90
    while True:  # bounded by the deadline: the ReplicaSet creates the pod
        pods = json.loads(
            kubectl("-n", namespace, "get", "pods", "-l", "app=reviews", "-o", "json").stdout
        )["items"]
        if pods:
            break
        assert time.monotonic() < deadline, "no pod was created"
        time.sleep(1)
    pod = pods[0]
    assert names.PROXY_CONTAINER in container_names(pod)
    proxy = next(c for c in pod["spec"]["initContainers"] if c["name"] == names.PROXY_CONTAINER)
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["PILOTFISH_WORKLOAD"] == "reviews"
