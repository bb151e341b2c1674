"""The agent port (15020): readiness, merged proxy + app metrics, app probes, quit and drain.

Istio's pilot-agent serves these on 15020; so do we, from worker 0. The pod's
`prometheus.io/*` annotations point at `/stats/prometheus` here (the injector moved the
app's own port and path into `PILOTFISH_PROMETHEUS_ANNOTATIONS`), so one scrape gets
the proxy's metrics followed by the app's. When the app's endpoint fails, the
proxy's part is still served and the failure is counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from proxy.admin.app_health import PATH_PREFIX, app_health_response
from proxy.admin.endpoints import AdminEndpoints
from proxy.admin.server import Reply
from proxy.config import env as env_names
from proxy.core.codecs import client_codec
from proxy.core.messages import Data, EndOfMessage, ProtocolError, RequestHead, ResponseHead
from proxy.telemetry.exposition import TEXT_CONTENT_TYPE, render, wants_openmetrics
from proxy.telemetry.pipeline import Telemetry
from proxy.telemetry.stats import described

log = logging.getLogger("pilotfish")

# The app is reached where inbound traffic is delivered to it (contracts.md).
APP_HOST = "127.0.0.1"
# Prometheus' default scrape_timeout is 10 s; the app's part must come back well inside it.
APP_SCRAPE_TIMEOUT = 5.0
# An app's exposition past this size is refused rather than buffered.
MAX_APP_METRICS_BYTES = 32 * 1024 * 1024
# We ask the app for the classic text format: it merges with ours by concatenation.
APP_ACCEPT = b"text/plain;version=0.0.4;q=1,*/*;q=0.1"


class AppScrapeError(Exception):
    pass


def app_target(environ: Mapping[str, str]) -> tuple[int, str] | None:
    """(port, path) from the injector's JSON, or None when the app has no metrics to merge."""
    raw = environ.get(env_names.PROMETHEUS_ANNOTATIONS, "").strip()
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        log.warning("%s is not JSON; app metrics are not merged", env_names.PROMETHEUS_ANNOTATIONS)
        return None
    if not isinstance(data, dict) or str(data.get("scrape", "true")).lower() == "false":
        return None
    try:
        port = int(str(data.get("port", "")).strip())
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    path = str(data.get("path") or "/metrics")
    return port, path if path.startswith("/") else "/" + path


async def fetch_app_metrics(port: int, path: str) -> bytes:
    """GET the app's exposition over loopback with the proxy's own HTTP/1 codec."""
    reader, writer = await asyncio.open_connection(APP_HOST, port)
    try:
        codec = client_codec("llhttp")
        head = RequestHead(
            1,
            b"GET",
            path.encode("latin-1"),
            [
                (b"host", f"{APP_HOST}:{port}".encode()),
                (b"accept", APP_ACCEPT),
                (b"user-agent", b"pilotfish-agent"),
                (b"connection", b"close"),
            ],
        )
        writer.write(codec.send_request_head(head) + codec.send_end([]))
        status = 0
        body: list[bytes] = []
        size = 0
        while True:
            data = await reader.read(65536)
            events = codec.receive(data) if data else codec.connection_closed()
            for event in events:
                if isinstance(event, ResponseHead):
                    status = event.status
                elif isinstance(event, Data):
                    size += len(event.data)
                    if size > MAX_APP_METRICS_BYTES:
                        raise AppScrapeError("app metrics too large")
                    body.append(event.data)
                elif isinstance(event, EndOfMessage):
                    if status != 200:
                        raise AppScrapeError(f"app answered HTTP {status}")
                    return b"".join(body)
                elif isinstance(event, ProtocolError):
                    raise AppScrapeError(f"app broke HTTP: {event.reason}")
            if not data:
                raise AppScrapeError("app closed the connection before the response ended")
    finally:
        writer.close()


def merge(proxy: bytes, app: bytes) -> bytes:
    """Ours first, then the app's; an OpenMetrics `# EOF` would end the document early."""
    lines = app.rstrip(b"\n")
    if lines.endswith(b"# EOF"):
        lines = lines[: -len(b"# EOF")].rstrip(b"\n")
    if not lines:
        return proxy
    return proxy.rstrip(b"\n") + b"\n" + lines + b"\n"


class Agent:
    """The 15020 handler; worker 0 runs it in sidecar mode."""

    def __init__(
        self, admin: AdminEndpoints, telemetry: Telemetry, environ: Mapping[str, str]
    ) -> None:
        self.admin = admin
        self.telemetry = telemetry
        self.app = app_target(environ)

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], request: RequestHead
    ) -> Reply | Awaitable[Reply]:
        if path == "/healthz/ready":
            return self._only(method, "GET", lambda: self.admin.ready(query))
        if path == "/stats/prometheus":
            if method not in ("GET", "HEAD"):
                return Reply(405, b"/stats/prometheus needs GET\n", headers=((b"allow", b"GET"),))
            accept = b",".join(value for name, value in request.headers if name == b"accept")
            return self.merged_metrics(wants_openmetrics(accept))
        if path.startswith(PATH_PREFIX):
            if method not in ("GET", "HEAD"):
                return Reply(405, b"probes need GET\n", headers=((b"allow", b"GET"),))
            return self.app_health(path)
        if path == "/quitquitquit":
            return self._only(method, "POST", self._quit)
        if path == "/drain":
            return self._only(method, "POST", self._drain)
        return Reply(404, b"not found\n")

    @staticmethod
    def _only(method: str, wanted: str, answer: Any) -> Reply:
        if method == wanted or (wanted == "GET" and method == "HEAD"):
            reply: Reply = answer()
            return reply
        return Reply(405, f"needs {wanted}\n".encode(), headers=((b"allow", wanted.encode()),))

    def _quit(self) -> Reply:
        # Answer first: the loop stops right after this reply is written.
        asyncio.get_running_loop().call_soon(self.admin.quit_now)
        return Reply(200, b"OK\n")

    def _drain(self) -> Reply:
        self.admin.drain()
        return Reply(200, b"OK\n")

    async def app_health(self, path: str) -> Reply:
        status, body = await app_health_response(path)
        return Reply(status, body)

    async def merged_metrics(self, openmetrics: bool = False) -> Reply:
        """Ours then the app's. In OpenMetrics (exemplars included) when the scraper asks
        and the app's text parses; otherwise both texts one after the other."""
        app = b""
        if self.app is not None:
            port, path = self.app
            self.telemetry.count("pilotfish_agent_app_scrapes")
            try:
                app = await asyncio.wait_for(fetch_app_metrics(port, path), APP_SCRAPE_TIMEOUT)
            except (OSError, TimeoutError, AppScrapeError) as error:
                self.telemetry.count("pilotfish_agent_app_scrape_failures")
                reason = error or "timeout"
                log.warning("app metrics from 127.0.0.1:%d%s failed: %s", port, path, reason)
        snapshot = await self.telemetry.gathered()
        stats = described(snapshot.stats)
        if openmetrics:
            try:
                parsed = list(text_string_to_metric_families(app.decode("utf-8")))
                body, content_type = render(snapshot, stats, openmetrics=True, extra=parsed)
                return Reply(200, body, content_type)
            except (ValueError, UnicodeDecodeError) as error:
                log.warning("app metrics do not convert to OpenMetrics (%s); serving text", error)
        proxy, _ = render(snapshot, stats, openmetrics=False)
        return Reply(200, merge(proxy, app), TEXT_CONTENT_TYPE)
