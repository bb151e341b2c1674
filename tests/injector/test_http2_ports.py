"""HTTP/2 destinations from the pod: named app ports and the proxy.pilotfish.io/config list."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from injector import names, values
from injector.config import MeshConfigError, parse_mesh_config
from injector.http2_ports import declared_http2_ports, names_http2
from injector.mutate import Injector, mutate
from injector.overrides import InvalidAnnotation
from injector.server import WebhookServer
from injector.tls import ReloadingServerTLS
from proxy.config import env as proxy_env
from proxy.config.load import build
from tests.injector.conftest import REPO
from tests.injector.reviews import admission_review, app_pod, proxy_env_of
from tests.injector.webhook_harness import write_certs

CASES = Path(__file__).parent / "testdata" / "inject"
ENV = "PILOTFISH_UPSTREAM_HTTP2_PORTS"


def pod_with_ports(*ports: dict[str, Any], config: str | None = None) -> dict[str, Any]:
    pod = app_pod(name="h2", annotations={names.PROXY_CONFIG: config} if config else {})
    pod["spec"]["containers"][0]["ports"] = list(ports)
    return pod


@pytest.mark.parametrize(
    "name", ["grpc", "grpc-api", "grpc-web", "http2", "http2-web", "h2c", "h2c-x", "GRPC-Api"]
)
def test_port_names_that_say_http2(name: str) -> None:
    assert names_http2(name)


@pytest.mark.parametrize(
    "name", ["http", "http-2", "httpx2", "grpcx", "h2", "https", "tcp-grpc", "web-grpc", ""]
)
def test_port_names_that_do_not(name: str) -> None:
    assert not names_http2(name)


def test_declared_ports_skip_udp_unnamed_plain_init_and_our_own() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {"name": "once", "ports": [{"name": "grpc", "containerPort": 7000}]},
                {
                    "name": "native",
                    "restartPolicy": "Always",
                    "ports": [{"name": "h2c", "containerPort": 4318}],
                },
                {
                    "name": names.PROXY_CONTAINER,
                    "restartPolicy": "Always",
                    "ports": [{"name": "grpc-pf", "containerPort": 15020}],
                },
            ],
            "containers": [
                {
                    "name": "app",
                    "ports": [
                        {"name": "grpc", "containerPort": 50051},
                        {"name": "grpc-dup", "containerPort": 50051},
                        {"name": "grpc-dns", "containerPort": 53, "protocol": "UDP"},
                        {"containerPort": 8081},
                        {"name": "http2", "containerPort": "8082"},  # not a number: skipped
                        {"name": "http2-x", "containerPort": 8443, "protocol": "TCP"},
                    ],
                }
            ],
        }
    }
    assert declared_http2_ports(pod) == (4318, 8443, 50051)


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        ("upstream_http2_ports: [50051, 8443]", [8443, 50051]),
        ("upstream_http2_ports: '8443, 50051,8443'", [8443, 50051]),
        ("upstream_http2_ports: 50051", [50051]),
        ("upstream_http2_ports: []", []),
        ("upstreamHttp2Ports: [9090]", [9090]),
        ("upstreamHttp2Ports: '9090'", [9090]),
    ],
)
def test_override_spellings_and_forms(text: str, ports: list[int]) -> None:
    assert values.parse_proxy_config(text) == {"upstream_http2_ports": ports}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("upstream_http2_ports: [http]", "'http' is not a port"),
        ("upstream_http2_ports: [0]", "0 is not a port"),
        ("upstream_http2_ports: '8080,70000'", "70000"),
        ("upstream_http2_ports: true", "expected a list of ports"),
        ("upstream_http2_ports: {a: 1}", "expected a list of ports"),
        ("upstream_http2_ports: [true]", "True is not a port"),
        ("upstream_http2_ports: [1]\nupstreamHttp2Ports: [2]", "given twice"),
    ],
)
def test_bad_override_denies_the_pod(injector: Injector, text: str, reason: str) -> None:
    with pytest.raises(InvalidAnnotation, match=reason) as denied:
        mutate(pod_with_ports(config=text), injector)
    assert denied.value.annotation == names.PROXY_CONFIG
    assert "upstream_http2_ports" in str(denied.value)


def test_named_ports_and_override_merge_into_the_sidecar_env(injector: Injector) -> None:
    pod = pod_with_ports(
        {"name": "grpc", "containerPort": 50051},
        {"name": "http", "containerPort": 9080},
        config="upstreamHttp2Ports: [50051, 7070]",
    )
    env = proxy_env_of(mutate(pod, injector))
    assert env[ENV] == "7070,50051"
    # The value is one the proxy's own config loader takes, from the env name it reads.
    assert proxy_env.SETTINGS[ENV] == "upstream_http2_ports"
    assert build(environ={ENV: env[ENV]}).upstream_http2_ports == (7070, 50051)


def test_no_http2_port_no_env(injector: Injector) -> None:
    env = proxy_env_of(mutate(pod_with_ports({"name": "http", "containerPort": 9080}), injector))
    assert ENV not in env


def test_mesh_default_and_pod_override(injector: Injector) -> None:
    mesh = parse_mesh_config({"proxyConfig": {"upstream_http2_ports": [8443]}})
    assert mesh.proxy_config["upstream_http2_ports"] == [8443]
    meshed = Injector(mesh, injector.template)
    plain = pod_with_ports({"name": "grpc", "containerPort": 50051})
    assert proxy_env_of(mutate(plain, meshed))[ENV] == "8443,50051"
    # The pod's list replaces the mesh's, like every other proxy.pilotfish.io/config key.
    overridden = pod_with_ports(config="upstream_http2_ports: [7070]")
    assert proxy_env_of(mutate(overridden, meshed))[ENV] == "7070"
    with pytest.raises(MeshConfigError, match="proxyConfig: upstream_http2_ports"):
        parse_mesh_config({"proxyConfig": {"upstream_http2_ports": ["x"]}})


def test_reinjection_follows_the_pod_and_is_idempotent(injector: Injector) -> None:
    once = mutate(pod_with_ports({"name": "http", "containerPort": 8080}), injector)
    assert ENV not in proxy_env_of(once)
    assert mutate(once, injector) == once
    # Another webhook renamed the port before reinvocation: the env follows the pod.
    once["spec"]["containers"][0]["ports"][0]["name"] = "h2c"
    again = mutate(once, injector)
    assert proxy_env_of(again)[ENV] == "8080"
    assert mutate(again, injector) == again
    proxies = [c for c in again["spec"]["initContainers"] if c["name"] == names.PROXY_CONTAINER]
    assert len(proxies) == 1


def test_offline_inject_gives_what_the_webhook_patches(tmp_path: Path, injector: Injector) -> None:
    case = CASES / "pod-http2-ports.yaml"
    offline = subprocess.run(
        [sys.executable, "-m", "proxy", "inject", "-f", str(case)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert offline.returncode == 0, offline.stderr
    injected = yaml.safe_load(offline.stdout)
    assert proxy_env_of(injected)[ENV] == "4318,8081,8443,9443,50051"

    write_certs(tmp_path)
    server = WebhookServer(injector, ReloadingServerTLS(tmp_path / "tls.crt", tmp_path / "tls.key"))
    pod = yaml.safe_load(case.read_text())
    review = admission_review(pod, namespace=pod["metadata"]["namespace"])
    reply = server.route(
        "POST", "/inject", {"content-type": "application/json"}, json.dumps(review).encode()
    )
    response = json.loads(reply.body)["response"]
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    assert patched == injected

