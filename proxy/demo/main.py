"""`pilotfish demo`: a workload behind the sidecar, real traffic, and what the sidecar saw.

Starts the demo app and the sidecar (explicit mode, embedded defaults) as separate
processes, as they would be in a pod; sends a bounded burst of traffic through the
sidecar (successes, 4xx, 5xx, a slow call, an upload); prints what the client saw
and what the sidecar counted; then exits, or with --stay keeps both running.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from proxy.demo.trace_sink import TraceSink

# The burst: (method, path, body) — bounded by count, and each call by a timeout.
Call = tuple[str, str, bytes | None]
NO_BODY: bytes | None = None
TRAFFIC: list[Call] = (
    [("GET", "/", NO_BODY)] * 40
    + [("GET", "/api/items", None)] * 40
    + [("GET", f"/api/items/{n}", None) for n in range(14)] * 3
    + [("GET", "/api/flaky", None)] * 30
    + [("GET", f"/api/busy?n={n}", None) for n in range(20)]
    + [("POST", "/api/orders", json.dumps({"item": 3, "qty": 2}).encode())] * 20
    + [("GET", "/api/slow?ms=800", None)]
    + [("GET", "/does-not-exist", None)] * 5
)


def free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def call(port: int, method: str, path: str, body: bytes | None) -> tuple[str, int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"} if body else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return path, response.status, (time.monotonic() - started) * 1000


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def summarise(
    results: list[tuple[str, int, float]], admin: str, access_log: Path, sink: TraceSink
) -> str:
    codes = Counter(status for _, status, _ in results)
    latencies = sorted(ms for _, _, ms in results)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    stats = dict(line.split(": ") for line in fetch(f"{admin}/stats").splitlines())
    out = [
        "",
        "== what the client saw",
        f"  {len(results)} requests: "
        + ", ".join(f"{count} x {code}" for code, count in sorted(codes.items())),
        f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"slowest {latencies[-1]:.0f} ms (the slow call)",
        "",
        "== what the sidecar counted (GET /stats)",
    ]
    for name in (
        "downstream_rq_total",
        "downstream_rq_2xx",
        "downstream_rq_4xx",
        "downstream_rq_5xx",
        "downstream_cx_total",
        "upstream_cx_total",
        "upstream_cx_pool_reuse",
        "upstream_rq_retry",
        "upstream_rq_retry_success",
        "downstream_cx_rx_bytes_total",
        "downstream_cx_tx_bytes_total",
    ):
        out.append(f"  {name:32} {stats.get(name, '?')}")
    metrics = fetch(f"{admin}/stats/prometheus")
    istio = [line for line in metrics.splitlines() if line.startswith("istio_requests_total{")]
    if istio:
        out += ["", "== Istio-standard metrics (GET /stats/prometheus), by response code"]
        for line in istio[:8]:
            labels = line[line.index("{") + 1 : line.rindex("}")]
            fields = dict(part.split("=", 1) for part in labels.split('",') if "=" in part)
            code = fields.get("response_code", "?").strip('"')
            flags = fields.get("response_flags", "?").strip('"')
            out.append(
                f"  istio_requests_total code={code} flags={flags} -> {line.rsplit(' ', 1)[1]}"
            )
    with sink.lock:
        spans = list(sink.spans)
    if spans:
        traces = {trace for _, trace, _, _ in spans}
        services = sorted({service for service, _, _, _ in spans})
        out += [
            "",
            f"== traces (OTLP/HTTP to {sink.endpoint}, 100% sampled for the demo)",
            f"  {len(spans)} spans in {len(traces)} traces from service {', '.join(services)}",
            f"  e.g. trace {spans[-1][1]}: span '{spans[-1][3]}'",
        ]
    if access_log.exists():
        lines = access_log.read_text().splitlines()
        if lines:
            out += [
                "",
                f"== access log ({len(lines)} lines in {access_log}); the last one:",
                f"  {lines[-1]}",
            ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotfish demo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--stay", action="store_true", help="keep the app and sidecar running after the burst"
    )
    args = parser.parse_args(argv)

    app_port = free_port(18080)
    proxy_port = free_port(15080)
    admin_port = free_port(15000)
    workdir = Path(tempfile.mkdtemp(prefix="pilotfish-demo-"))
    access_log = workdir / "access.log"
    sink = TraceSink()
    env = {
        **os.environ,
        "POD_NAME": "demo-7f9c",
        "POD_NAMESPACE": "demo",
        "PILOTFISH_WORKLOAD": "demo-app",
        "PILOTFISH_APP": "demo-app",
        "PILOTFISH_VERSION": "v1",
        # The demo samples every request and exports quickly to its own receiver;
        # in a pod the defaults apply (1%, a collector at localhost:4318).
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    print(
        f"pilotfish demo: app on 127.0.0.1:{app_port}, sidecar on 127.0.0.1:{proxy_port}, "
        f"admin on 127.0.0.1:{admin_port}"
    )
    app = subprocess.Popen(
        [sys.executable, "-m", "proxy.demo.app", str(app_port)], start_new_session=True
    )
    sidecar_log = open(workdir / "sidecar.log", "w")  # noqa: SIM115 - the child writes it until the end
    sidecar = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "run",
            "--listen",
            f"127.0.0.1:{proxy_port}",
            "--upstream",
            f"127.0.0.1:{app_port}",
            "--concurrency",
            "1",
            "--admin-port",
            str(admin_port),
            "--access-log",
            str(access_log),
        ],
        env=env,
        start_new_session=True,
        stderr=sidecar_log,
    )
    try:
        wait_for(app_port)
        wait_for(admin_port)
        print(
            f"pilotfish demo: sending {len(TRAFFIC)} requests through the sidecar (8 at a time)..."
        )
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda t: call(proxy_port, *t), TRAFFIC))
        time.sleep(1.2)  # let the access log and the span batches flush
        print(summarise(results, f"http://127.0.0.1:{admin_port}", access_log, sink))
        print(f"""
== where to look next
  admin:       http://127.0.0.1:{admin_port}/  (/stats, /stats/prometheus, /config_dump, /listeners)
  try it:      curl -i http://127.0.0.1:{proxy_port}/api/items/3
  sidecar log: {workdir / "sidecar.log"}
  (these stop with the demo; `pilotfish demo --stay` keeps the app and sidecar running)""")
        if args.stay:
            print("\npilotfish demo: staying up; Ctrl-C stops it")
            while sidecar.poll() is None:
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        sink.shutdown()
        sidecar_log.close()
        for process in (sidecar, app):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (sidecar, app):
            try:
                process.wait(8)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
