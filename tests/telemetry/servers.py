"""Real processes and small servers for the telemetry tests: nginx, Prometheus, pilotfish, OTLP."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(binary: str) -> str:
    """The path of a required binary; a skip locally, a failure under CI (conftest)."""
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if found is None:
        pytest.skip(f"{binary} is not installed (Debian package needed)")
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def http_get(url: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, error.read(), {k.lower(): v for k, v in error.headers.items()}


def raw_request(port: int, path: str, headers: Mapping[str, str] | None = None) -> int:
    """One request on its own connection (so SO_REUSEPORT spreads them over workers)."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), 10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


class Process:
    """A child process we started, stopped by its own pid."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None, log: Path | None = None) -> None:
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self._out = out
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self._out, "close"):
            self._out.close()
        return self.proc.returncode


NGINX_CONF = """
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = / {{ return 200 "ok\\n"; }}
    location = /missing {{ return 404; }}
    location = /broken {{ return 503; }}
  }}
}}
"""


def start_nginx(tmp: Path) -> tuple[Process, int]:
    binary = need("nginx")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    process = Process([binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)], log=tmp / "nginx.out")
    wait_until(lambda: port_open(port), 10, "nginx")
    return process, port


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """/status/N answers N, /slow sleeps, /reset closes without answering, else 200 + headers."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})  # type: ignore[attr-defined]
        if self.path.startswith("/status/"):
            self._answer(int(self.path.rsplit("/", 1)[1]), b"status\n")
        elif self.path == "/slow":
            time.sleep(1.5)
            self._answer(200, b"slow\n")
        elif self.path == "/reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/metrics":
            self._answer(200, b"# HELP app_orders_total Orders.\n# TYPE app_orders_total counter\napp_orders_total 7\n")
        else:
            self._answer(200, json.dumps(dict(self.headers.items())).encode())

    def _answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Upstream:
    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
        self.server.daemon_threads = True
        self.server.seen = []  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[dict[str, str]]:
        return self.server.seen  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Sidecar:
    """`pilotfish run` in a child process (explicit mode unless `args` say otherwise)."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        upstream: int | None,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        concurrency: int = 2,
        admin_port: int | None = None,
    ) -> None:
        self.port = free_port()
        self.admin = admin_port or free_port()
        self.access_log = tmp / f"{name}-access.log"
        command = [sys.executable, "-m", "proxy", "run", "--concurrency", str(concurrency), "--admin-port", str(self.admin)]
        command += ["--access-log", str(self.access_log)]
        if upstream is not None:
            command += ["--listen", f"127.0.0.1:{self.port}", "--upstream", f"127.0.0.1:{upstream}"]
        command += args or []
        base_env = {"OTEL_TRACES_EXPORTER": "none", "PILOTFISH_WORKLOAD": name, "POD_NAME": f"{name}-0", "POD_NAMESPACE": "shop"}
        self.process = Process(command, {**base_env, **(env or {})}, log=tmp / f"{name}.out")
        wait_until(self.ready, 15, f"sidecar {name}")

    def ready(self) -> bool:
        if self.process.proc.poll() is not None:
            raise AssertionError(f"sidecar exited: {self.process.output()}")
        try:
            return http_get(f"http://127.0.0.1:{self.admin}/ready")[0] == 200
        except OSError:
            return False

    def metrics(self, openmetrics: bool = False) -> str:
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        status, body, _ = http_get(f"http://127.0.0.1:{self.admin}/stats/prometheus", accept)
        assert status == 200
        return body.decode()

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]

    def stop(self) -> int:
        return self.process.stop()


class Prometheus:
    def __init__(self, tmp: Path, targets: list[tuple[str, int]], config_text: str = "") -> None:
        binary = need("prometheus")
        self.port = free_port()
        jobs = "".join(
            f"""
  - job_name: {job}
    metrics_path: /stats/prometheus
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]"""
            for job, port in targets
        )
        config = tmp / "prometheus.yml"
        config.write_text(
            config_text or f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:{jobs}\n"
        )
        self.process = Process(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            log=tmp / "prometheus.out",
        )
        wait_until(self.up, 20, "prometheus")

    def up(self) -> bool:
        if self.process.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.process.output()}")
        try:
            return http_get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body, _ = http_get(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}")
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", data
        return data["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=promql)["result"]
        return result

    def stop(self) -> None:
        self.process.stop()


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback, decoding with opentelemetry-proto."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        spans: list[dict[str, Any]] = []
        self.spans = spans

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            spans.append(
                                {
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_span_id": span.parent_span_id.hex(),
                                    "name": span.name,
                                    "kind": span.kind,
                                    "attributes": {a.key: _any_value(a.value) for a in span.attributes},
                                    "status": span.status.code,
                                    "resource": resource,
                                    "start": span.start_time_unix_nano,
                                    "end": span.end_time_unix_nano,
                                }
                            )
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
