"""A minimal Kubernetes API client: patch our MutatingWebhookConfiguration's caBundle."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pilotfish.injector.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WEBHOOK_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"


class KubeError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class KubeConfig:
    host: str
    port: int
    token: str
    ca_file: str | None  # None: the system trust store


def in_cluster_config(
    env: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> KubeConfig:
    """The service-account token and CA mounted into every pod, as client-go reads them."""
    environ = os.environ if env is None else env
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeError("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
    try:
        token = (account_dir / "token").read_text().strip()
    except OSError as exc:
        raise KubeError(f"cannot read the service-account token: {exc.strerror}") from exc
    return KubeConfig(host=host, port=int(port), token=token, ca_file=str(account_dir / "ca.crt"))


def backoff_delays(attempts: int, base: float = 0.5, cap: float = 30.0) -> list[float]:
    """Exponential backoff without jitter (one replica patching one object): 0.5, 1, 2, ..."""
    return [min(cap, base * 2**attempt) for attempt in range(attempts - 1)]


class KubeClient:
    def __init__(self, config: KubeConfig, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=config.ca_file)

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        connection = http.client.HTTPSConnection(
            self.config.host, self.config.port, timeout=self.timeout, context=self.context
        )
        headers = {"Authorization": f"Bearer {self.config.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise KubeError(f"{method} {path}: {exc}") from exc
        finally:
            connection.close()
        if response.status >= 300:
            raise KubeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}",
                            response.status)
        return json.loads(data) if data else None


def ca_bundle_patch(webhook_config: Mapping[str, Any], ca_pem: bytes) -> list[dict[str, Any]]:
    """JSON Patch setting caBundle on every webhook; each `test` pins the webhook's name, so a
    concurrent reorder makes the patch fail (and retry) instead of patching the wrong one."""
    encoded = base64.b64encode(ca_pem).decode()
    operations: list[dict[str, Any]] = []
    for index, webhook in enumerate(webhook_config.get("webhooks") or []):
        if webhook.get("clientConfig", {}).get("caBundle") == encoded:
            continue
        operations.append({"op": "test", "path": f"/webhooks/{index}/name",
                           "value": webhook.get("name")})
        operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                           "value": encoded})
    return operations


def patch_ca_bundle(
    client: KubeClient,
    name: str,
    ca_pem: bytes,
    attempts: int = 8,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Get the config, patch what differs, retry with backoff; returns webhooks patched."""
    delays = backoff_delays(attempts)
    for attempt in range(attempts):
        try:
            current = client.request("GET", WEBHOOK_PATH.format(name=name))
            operations = ca_bundle_patch(current, ca_pem)
            if operations:
                client.request("PATCH", WEBHOOK_PATH.format(name=name), operations,
                               "application/json-patch+json")
            log.info("caBundle of %s: %d webhook(s) updated", name, len(operations) // 2)
            return len(operations) // 2
        except KubeError as exc:
            # 401/403 will not heal by waiting: RBAC is wrong. Say so at once.
            if exc.status in (401, 403) or attempt == attempts - 1:
                raise
            log.warning("patching caBundle failed (%s), retrying in %.1fs", exc, delays[attempt])
            sleep(delays[attempt])
    raise KubeError("unreachable")  # pragma: no cover
