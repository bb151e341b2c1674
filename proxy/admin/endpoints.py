"""Admin (15000) and health (15021) endpoints, Envoy's paths and answers.

Mutations are POST only (GET on them is 405), as in Envoy's admin API.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy import __version__
from proxy.admin.server import Reply
from proxy.config.model import ProxyConfig
from proxy.core.messages import RequestHead
from proxy.telemetry.stats import kinds as stat_kinds

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


class ServerState:
    """Readiness as the admin reports it: PRE_INITIALIZING, LIVE, DRAINING."""

    def __init__(self) -> None:
        self.state = "PRE_INITIALIZING"
        self.health_failed = False
        self.started = time.time()

    @property
    def ready(self) -> bool:
        return self.state == "LIVE" and not self.health_failed


class AdminEndpoints:
    def __init__(
        self,
        config: ProxyConfig,
        stats_totals: Callable[[], Awaitable[dict[str, int]]],
        state: ServerState,
        listeners: list[dict[str, str]],
        drain: Callable[[], None],
        quit_now: Callable[[], None],
        extra_metrics: Callable[[], bytes] | None = None,
        metrics_page: Callable[[RequestHead], Awaitable[tuple[bytes, bytes]]] | None = None,
    ) -> None:
        self.config = config
        # Every worker's stats summed, asked for at each read (proxy.telemetry.stats).
        self.stats_totals = stats_totals
        self.state = state
        self.listeners = listeners
        self.drain = drain
        self.quit_now = quit_now
        self.extra_metrics = extra_metrics
        # Telemetry's /stats/prometheus (all workers, Istio metrics, OpenMetrics): replaces ours.
        self.metrics_page = metrics_page
        self.log_level = config.log_level
        # Puts a level in effect in every worker (WorkerProcess.set_log_level).
        self.set_log_level: Callable[[str], None] | None = None
        self.routes: dict[
            str, tuple[str, Callable[[dict[str, list[str]]], Reply | Awaitable[Reply]]]
        ] = {
            "/": ("GET", self.index),
            "/ready": ("GET", self.ready),
            "/healthz/ready": ("GET", self.ready),
            "/server_info": ("GET", self.server_info),
            "/stats": ("GET", self.stats),
            "/stats/prometheus": ("GET", self.prometheus),
            "/listeners": ("GET", self.listeners_info),
            "/clusters": ("GET", self.clusters),
            "/config_dump": ("GET", self.config_dump),
            "/logging": ("POST", self.logging),
            "/quitquitquit": ("POST", self.quitquitquit),
            "/drain_listeners": ("POST", self.drain_listeners),
            "/healthcheck/fail": ("POST", self.healthcheck_fail),
            "/healthcheck/ok": ("POST", self.healthcheck_ok),
        }

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], request: RequestHead
    ) -> Reply | Awaitable[Reply]:
        wants_telemetry = self.metrics_page is not None and method in ("GET", "HEAD")
        if path == "/stats/prometheus" and wants_telemetry:
            return self.telemetry_metrics(request)
        route = self.routes.get(path)
        if route is None:
            return Reply(404, b"not found; GET / lists the endpoints\n")
        wanted, handler = route
        if path == "/logging" and method == "GET":
            return Reply(200, f"active loggers:\n  pilotfish: {self.log_level}\n".encode())
        if method != wanted and not (wanted == "GET" and method == "HEAD"):
            return Reply(
                405, f"{path} needs {wanted}\n".encode(), headers=((b"allow", wanted.encode()),)
            )
        return handler(query)

    def health_only(
        self, method: str, path: str, query: dict[str, list[str]], r: RequestHead
    ) -> Reply:
        """15021: the sidecar's own readiness probe and nothing else."""
        if path == "/healthz/ready":
            return self.ready(query)
        return Reply(404, b"not found\n")

    def metrics_only(
        self, method: str, path: str, query: dict[str, list[str]], request: RequestHead
    ) -> Reply | Awaitable[Reply]:
        """15090, on every address for Prometheus: the metrics and nothing else (the
        rest of the admin API, mutations included, stays on 127.0.0.1:15000)."""
        if path == "/stats/prometheus":
            return self.handle(method, path, query, request)
        return Reply(404, b"not found: this port serves /stats/prometheus only\n")

    def index(self, _: dict[str, list[str]]) -> Reply:
        lines = [f"{method:5} {path}" for path, (method, _h) in self.routes.items()]
        return Reply(200, ("\n".join(lines) + "\n").encode())

    def ready(self, _: dict[str, list[str]]) -> Reply:
        state = self.state.state if not self.state.health_failed else "DRAINING"
        return Reply(200 if self.state.ready else 503, f"{state}\n".encode())

    def server_info(self, _: dict[str, list[str]]) -> Reply:
        info = {
            "version": __version__,
            "state": self.state.state,
            "uptime_seconds": int(time.time() - self.state.started),
            "pid": os.getpid(),
            "concurrency": self.config.concurrency,
            "mode": self.config.mode,
            "codec": self.config.codec,
        }
        return Reply(200, json.dumps(info, indent=1).encode() + b"\n", JSON)

    async def stats(self, query: dict[str, list[str]]) -> Reply:
        totals = await self.stats_totals()
        pattern = query.get("filter", [None])[0]
        if pattern:
            try:
                regex = re.compile(pattern)
            except re.error as error:
                return Reply(400, f"bad filter: {error}\n".encode())
            totals = {k: v for k, v in totals.items() if regex.search(k)}
        if query.get("format", [""])[0] == "json":
            body = json.dumps({"stats": [{"name": k, "value": v} for k, v in totals.items()]})
            return Reply(200, body.encode(), JSON)
        return Reply(200, "".join(f"{k}: {v}\n" for k, v in totals.items()).encode())

    async def prometheus(self, _: dict[str, list[str]]) -> Reply:
        kinds = stat_kinds()
        lines: list[str] = []
        for name, value in (await self.stats_totals()).items():
            kind, text = kinds[name]
            metric = f"pilotfish_{name}"
            if kind == "counter" and not metric.endswith("_total"):
                metric += "_total"
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric} {value}"]
        body = ("\n".join(lines) + "\n").encode()
        if self.extra_metrics is not None:
            body += self.extra_metrics()
        return Reply(200, body, PROMETHEUS)

    async def telemetry_metrics(self, request: RequestHead) -> Reply:
        assert self.metrics_page is not None
        body, content_type = await self.metrics_page(request)
        return Reply(200, body, content_type)

    def listeners_info(self, _: dict[str, list[str]]) -> Reply:
        return Reply(
            200, json.dumps({"listeners": self.listeners}, indent=1).encode() + b"\n", JSON
        )

    def clusters(self, _: dict[str, list[str]]) -> Reply:
        if self.config.mode == "explicit":
            text = f"upstream::{self.config.upstream}::cx_active::see /stats\n"
        else:
            text = (
                "PassthroughCluster::original destination (outbound)\n"
                "inbound|127.0.0.1::original port (inbound)\n"
            )
        return Reply(200, text.encode())

    def config_dump(self, _: dict[str, list[str]]) -> Reply:
        dump: dict[str, Any] = dataclasses.asdict(self.config)
        return Reply(200, json.dumps(dump, indent=1, default=str).encode() + b"\n", JSON)

    def logging(self, query: dict[str, list[str]]) -> Reply:
        level = query.get("level", [None])[0]
        if level not in ("trace", "debug", "info", "warning", "error", "critical", "off"):
            return Reply(
                400, b"usage: POST /logging?level=<trace|debug|info|warning|error|critical|off>\n"
            )
        self.log_level = level
        if self.set_log_level is not None:
            self.set_log_level(level)
        return Reply(200, f"active loggers:\n  pilotfish: {level}\n".encode())

    def quitquitquit(self, _: dict[str, list[str]]) -> Reply:
        self.quit_now()
        return Reply(200, b"OK\n")

    def drain_listeners(self, _: dict[str, list[str]]) -> Reply:
        self.drain()
        return Reply(200, b"OK\n")

    def healthcheck_fail(self, _: dict[str, list[str]]) -> Reply:
        self.state.health_failed = True
        return Reply(200, b"OK\n")

    def healthcheck_ok(self, _: dict[str, list[str]]) -> Reply:
        self.state.health_failed = False
        return Reply(200, b"OK\n")
