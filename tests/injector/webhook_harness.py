"""Runs the real webhook server on 127.0.0.1 in a thread, with certificates from certs.py."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from injector import certs
from injector.mutate import Injector
from injector.server import WebhookServer
from injector.tls import ReloadingServerTLS

SERVICE = "pilotfish-injector"
NAMESPACE = "pilotfish-system"
# The name the API server dials: <service>.<namespace>.svc
SERVER_NAME = f"{SERVICE}.{NAMESPACE}.svc"


class ServiceConnection(http.client.HTTPSConnection):
    """Dials 127.0.0.1 but sends SNI and checks the certificate for the Service's name."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__(SERVER_NAME, port, timeout=10, context=context)
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=SERVER_NAME)


@dataclass
class RunningWebhook:
    server: WebhookServer
    port: int
    ca_file: Path
    cert_dir: Path
    loop: asyncio.AbstractEventLoop

    def client_context(self, ca_file: Path | None = None) -> ssl.SSLContext:
        """Verifies the chain and the Service DNS name against the CA bundle, as the API
        server does with the webhook's caBundle."""
        context = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        return context

    def connection(self, ca_file: Path | None = None) -> http.client.HTTPSConnection:
        return ServiceConnection(self.port, self.client_context(ca_file))

    def post(
        self,
        body: bytes | dict[str, Any],
        content_type: str = "application/json",
        path: str = "/inject",
    ) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        connection = self.connection()
        try:
            connection.request("POST", path, body=payload, headers={"Content-Type": content_type})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, bytes]:
        connection = self.connection()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def write_certs(directory: Path) -> Path:
    bundle = certs.make_bundle(certs.service_dns_names(SERVICE, NAMESPACE), ["127.0.0.1"])
    certs.write_bundle(bundle, directory)
    return directory / "ca.crt"


@contextmanager
def running_webhook(injector: Injector, cert_dir: Path) -> Iterator[RunningWebhook]:
    ca_file = write_certs(cert_dir)
    tls = ReloadingServerTLS(cert_dir / "tls.crt", cert_dir / "tls.key")
    server = WebhookServer(injector, tls)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port_box: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        port_box.append(loop.run_until_complete(server.start("127.0.0.1", 0)))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "webhook did not start"
    try:
        yield RunningWebhook(server, port_box[0], ca_file, cert_dir, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
