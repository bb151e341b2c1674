"""AdmissionReview and pod builders for the webhook tests."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from injector import names


def app_pod(**metadata: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app": "reviews", "version": "v1"}, **metadata},
        "spec": {
            "serviceAccountName": "reviews",
            "containers": [
                {
                    "name": "reviews",
                    "image": "reviews:1",
                    "ports": [{"name": "http", "containerPort": 9080}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 9080}},
                    "startupProbe": {"grpc": {"port": 9090}},
                }
            ],
        },
    }
    return pod


def admission_review(
    pod: Any, namespace: str = "shop", operation: str = "CREATE", kind: str = "Pod"
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": copy.deepcopy(pod),
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


MANAGED_FIELDS = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:generateName": {}}},
    }
]

# (owner kind, owner name, pod labels, the workload name the sidecar must report)
OWNERS = [
    ("ReplicaSet", "reviews-v1-7d4b9c8f6d", {"pod-template-hash": "7d4b9c8f6d"}, "reviews-v1"),
    ("StatefulSet", "ratings-db", {}, "ratings-db"),
    ("DaemonSet", "node-exporter", {}, "node-exporter"),
    ("Job", "migrate-schema", {}, "migrate-schema"),
    ("Job", "nightly-report-29012345", {}, "nightly-report"),  # made by a CronJob
    ("ReplicaSet", "standalone-rs", {}, "standalone-rs"),
]


def proxy_env_of(pod: dict[str, Any]) -> dict[str, str]:
    """The literal env values of the pod's pilotfish-proxy container (native or classic)."""
    spec = pod["spec"]
    proxy = next(
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key, [])
        if c["name"] == names.PROXY_CONTAINER
    )
    return {item["name"]: item["value"] for item in proxy["env"] if "value" in item}
