"""Running a test pod the way the injector says: its capture flags and its sidecar's env.

A manifest goes through `pilotfish inject -f -` (offline injection, the same mutation the
webhook patches in); the injected init container's `pilotfish iptables` args become the
pod's capture rules and the proxy container's command and env start its sidecar, with the
downward-API values filled in as the kubelet would. So a test exercises what a real pod
would run, not a hand-written sidecar command.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import yaml

from injector import names
from tests.e2e import netns
from tests.e2e.pods import REPO, Pod
from tests.e2e.sidecar import Sidecar

NAMESPACE = "default"


def manifest(
    name: str, ports: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A one-container Pod as a user would write it."""
    container: dict[str, Any] = {"name": "app", "image": "app:1"}
    if ports:
        container["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app": name},
            "annotations": annotations or {},
        },
        "spec": {"containers": [container]},
    }


def inject(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as `pilotfish inject -f -` returns it (the repository's template and mesh)."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "inject", "-f", "-"],
        cwd=REPO,
        input=yaml.safe_dump(pod),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    injected: dict[str, Any] = yaml.safe_load(done.stdout)
    return injected


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    found: dict[str, Any] = next(
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key, [])
        if c["name"] == name
    )
    return found


def _command(spec: dict[str, Any]) -> list[str]:
    # The image's `pilotfish` is this checkout's `python -m proxy`.
    command = [*spec.get("command", []), *spec.get("args", [])]
    assert command[0] == "pilotfish", command
    return [sys.executable, "-m", "proxy", *command[1:]]


def capture_flags(injected: dict[str, Any]) -> list[str]:
    """The init container's `pilotfish iptables` flags (what it would run in the pod)."""
    command = _command(container(injected, names.INIT_CONTAINER))
    assert command[3] == "iptables", command
    return command[4:]


def _field(injected: dict[str, Any], pod: Pod, path: str) -> str:
    """A downward-API fieldRef, answered as the kubelet would for this test pod."""
    metadata, spec = injected["metadata"], injected["spec"]
    known: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: str(metadata["name"]),
        "metadata.namespace": lambda: str(metadata.get("namespace", NAMESPACE)),
        "status.podIP": lambda: pod.ip,
        "spec.serviceAccountName": lambda: str(spec.get("serviceAccountName", "default")),
        "spec.nodeName": lambda: "e2e-node",
    }
    return known[path]()


def sidecar_env(injected: dict[str, Any], pod: Pod) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container(injected, names.PROXY_CONTAINER).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = _field(injected, pod, item["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def start_sidecar(pod: Pod, injected: dict[str, Any]) -> Sidecar:
    """The injected proxy container's command and env, run in `pod` as UID 1337; ready."""
    command = _command(container(injected, names.PROXY_CONTAINER))
    process = pod.start(*command, as_proxy=True, env=sidecar_env(injected, pod))
    sidecar = Sidecar(pod, process)
    netns.wait_until(sidecar.ready, 15, f"injected sidecar ready in {pod.name}")
    return sidecar
