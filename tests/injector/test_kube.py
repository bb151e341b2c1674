"""caBundle patching against a fake API server over real HTTPS on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from injector import certs
from injector.kube import (
    KubeClient,
    KubeConfig,
    KubeError,
    backoff_delays,
    ca_bundle_patch,
    in_cluster_config,
    patch_ca_bundle,
)

WEBHOOK_NAME = "pilotfish-sidecar-injector"
PATH = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_NAME}"


class FakeApiServer:
    """Holds one MutatingWebhookConfiguration; fails the first `failures` requests with 503."""

    def __init__(self, failures: int = 0, status_on_failure: int = 503) -> None:
        self.failures = failures
        self.status_on_failure = status_on_failure
        self.requests: list[tuple[str, str, str, str]] = []
        self.object: dict[str, Any] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_NAME},
            "webhooks": [
                {"name": "namespace.sidecar.pilotfish.io", "clientConfig": {"service": {}}},
                {"name": "object.sidecar.pilotfish.io", "clientConfig": {"service": {}}},
            ],
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                fake.requests.append(
                    (
                        self.command,
                        self.path,
                        self.headers.get("Authorization", ""),
                        self.headers.get("Content-Type", "") + " " + body,
                    )
                )
                if fake.failures > 0:
                    fake.failures -= 1
                    self._answer(fake.status_on_failure, {"kind": "Status"})
                elif self.path != PATH:
                    self._answer(404, {"kind": "Status"})
                elif self.command == "GET":
                    self._answer(200, fake.object)
                else:
                    assert self.headers["Content-Type"] == "application/json-patch+json"
                    fake.object = jsonpatch.apply_patch(fake.object, json.loads(body))
                    self._answer(200, fake.object)

            do_GET = _handle
            do_PATCH = _handle

        return Handler


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, KubeClient]]:
    bundle = certs.make_bundle(["kubernetes.default.svc"], ["127.0.0.1"])
    certs.write_bundle(bundle, tmp_path)
    fake = FakeApiServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("secret-token\n")
    (account / "ca.crt").write_bytes(bundle.ca_cert)
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(httpd.server_address[1]),
    }
    try:
        yield fake, KubeClient(in_cluster_config(env, account), timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_patches_every_webhook_after_retrying(api: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = api
    fake.failures = 2
    slept: list[float] = []
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert patch_ca_bundle(client, WEBHOOK_NAME, ca, attempts=5, sleep=slept.append) == 2
    assert slept == [0.5, 1.0]
    encoded = base64.b64encode(ca).decode()
    assert [w["clientConfig"]["caBundle"] for w in fake.object["webhooks"]] == [encoded] * 2
    assert all(auth == "Bearer secret-token" for _, _, auth, _ in fake.requests)
    # Already right: a GET and no PATCH.
    count = len(fake.requests)
    assert patch_ca_bundle(client, WEBHOOK_NAME, ca, sleep=slept.append) == 0
    assert [r[0] for r in fake.requests[count:]] == ["GET"]


def test_forbidden_is_not_retried(api: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = api
    fake.failures, fake.status_on_failure = 5, 403
    slept: list[float] = []
    with pytest.raises(KubeError) as raised:
        patch_ca_bundle(client, WEBHOOK_NAME, b"ca", sleep=slept.append)
    assert raised.value.status == 403
    assert slept == []


def test_gives_up_after_the_attempts(api: tuple[FakeApiServer, KubeClient]) -> None:
    fake, client = api
    fake.failures = 10
    slept: list[float] = []
    with pytest.raises(KubeError):
        patch_ca_bundle(client, WEBHOOK_NAME, b"ca", attempts=3, sleep=slept.append)
    assert slept == [0.5, 1.0]


def test_patch_pins_names_and_backoff_is_capped() -> None:
    config = {"webhooks": [{"name": "a", "clientConfig": {}}]}
    assert ca_bundle_patch(config, b"x") == [
        {"op": "test", "path": "/webhooks/0/name", "value": "a"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "eA=="},
    ]
    assert backoff_delays(10)[-1] == 30.0


def test_in_cluster_config_needs_the_environment(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster_config({}, tmp_path)
    with pytest.raises(KubeError, match="token"):
        in_cluster_config({"KUBERNETES_SERVICE_HOST": "127.0.0.1"}, tmp_path)
    (tmp_path / "token").write_text("t")
    assert in_cluster_config({"KUBERNETES_SERVICE_HOST": "h"}, tmp_path) == KubeConfig(
        "h", 443, "t", str(tmp_path / "ca.crt")
    )
