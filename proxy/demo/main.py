"""`pilotfish demo`: a workload behind the sidecar, real traffic, and what the sidecar saw.

Starts the demo app and two sidecars (explicit mode, embedded defaults) as separate
processes, as they would be in two pods: the caller's ("frontend") and the app's
("demo-app"). Sends a bounded burst of traffic through both (successes, 4xx, 5xx, a
slow call, an upload); prints what the client saw, what the caller's sidecar counted,
the traces of both, and who called whom by the workload names the sidecars exchanged;
then exits, or with --stay keeps them running.
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


def requests_total(admin: str) -> list[tuple[dict[str, str], str]]:
    """istio_requests_total's series from a sidecar's admin port: (labels, value)."""
    series = []
    for line in fetch(f"{admin}/stats/prometheus").splitlines():
        if line.startswith("istio_requests_total{"):
            labels = line[line.index("{") + 1 : line.rindex("}")]
            pairs = (part.split("=", 1) for part in labels.split('",') if "=" in part)
            fields = {name: value.strip('"') for name, value in pairs}
            series.append((fields, line.rsplit(" ", 1)[1]))
    return series


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
    istio = requests_total(admin)
    if istio:
        out += ["", "== Istio-standard metrics (GET /stats/prometheus), by response code"]
        for fields, value in istio[:8]:
            code = fields.get("response_code", "?")
            flags = fields.get("response_flags", "?")
            out.append(f"  istio_requests_total code={code} flags={flags} -> {value}")
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


# The two workloads of the demo, as the injector would name them: the caller has no app
# here (the demo's own client stands in for it), the server runs proxy/demo/app.py.
FRONTEND = {
    "POD_NAME": "frontend-5d8b",
    "POD_NAMESPACE": "demo",
    "PILOTFISH_WORKLOAD": "frontend",
    "PILOTFISH_APP": "frontend",
    "PILOTFISH_VERSION": "v1",
}
DEMO_APP = {
    "POD_NAME": "demo-app-7f9c",
    "POD_NAMESPACE": "demo",
    "PILOTFISH_WORKLOAD": "demo-app",
    "PILOTFISH_APP": "demo-app",
    "PILOTFISH_VERSION": "v1",
    # The server's sidecar: inbound telemetry (reporter="destination", server spans).
    "PILOTFISH_EXPLICIT_DIRECTION": "inbound",
}


def start_sidecar(
    listen: int, upstream: int, admin: int, access_log: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("w") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "run",
             "--listen", f"127.0.0.1:{listen}", "--upstream", f"127.0.0.1:{upstream}",
             "--concurrency", "1", "--admin-port", str(admin), "--access-log", str(access_log)],
            env=env, start_new_session=True, stderr=sink,
        )  # fmt: skip


def who_called_whom(admin: str) -> list[str]:
    """The server sidecar's view, by the workload names the two sidecars exchanged."""
    pairs: Counter[tuple[str, str]] = Counter()
    for fields, value in requests_total(admin):
        source = fields.get("source_workload", "?")
        destination = fields.get("destination_workload", "?")
        pairs[(source, destination)] += int(float(value))
    return [
        f"  {source} -> {destination}: {count} requests"
        for (source, destination), count in sorted(pairs.items())
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotfish demo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--stay", action="store_true", help="keep the app and sidecars running after the burst"
    )
    args = parser.parse_args(argv)

    app_port = free_port(18080)
    proxy_port = free_port(15080)
    admin_port = free_port(15000)
    inbound_port = free_port(15081)
    inbound_admin_port = free_port(15010)
    workdir = Path(tempfile.mkdtemp(prefix="pilotfish-demo-"))
    access_log = workdir / "access.log"
    sink = TraceSink()
    common = {
        **os.environ,
        # The demo samples every request and exports quickly to its own receiver;
        # in a pod the defaults apply (1%, a collector at localhost:4318).
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    print(
        f"pilotfish demo: client -> frontend's sidecar (127.0.0.1:{proxy_port}, admin "
        f"{admin_port}) -> demo-app's sidecar (127.0.0.1:{inbound_port}, admin "
        f"{inbound_admin_port}) -> app (127.0.0.1:{app_port})"
    )
    app = subprocess.Popen(
        [sys.executable, "-m", "proxy.demo.app", str(app_port)], start_new_session=True
    )
    server_side = start_sidecar(
        inbound_port, app_port, inbound_admin_port, workdir / "inbound-access.log",
        {**common, **DEMO_APP}, workdir / "inbound-sidecar.log",
    )  # fmt: skip
    sidecar = start_sidecar(
        proxy_port, inbound_port, admin_port, access_log, {**common, **FRONTEND},
        workdir / "sidecar.log",
    )  # fmt: skip
    try:
        for port in (app_port, inbound_admin_port, admin_port):
            wait_for(port)
        print(
            f"pilotfish demo: sending {len(TRAFFIC)} requests through the sidecars (8 at a time)..."
        )
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda t: call(proxy_port, *t), TRAFFIC))
        time.sleep(1.2)  # let the access log and the span batches flush
        print(summarise(results, f"http://127.0.0.1:{admin_port}", access_log, sink))
        print(
            "\n== who called whom (demo-app's sidecar, by the peer metadata the sidecars exchanged)"
        )
        print("\n".join(who_called_whom(f"http://127.0.0.1:{inbound_admin_port}")))
        print(f"""
== where to look next
  admin:       http://127.0.0.1:{admin_port}/  (/stats, /stats/prometheus, /config_dump, /listeners)
               http://127.0.0.1:{inbound_admin_port}/  (demo-app's sidecar)
  try it:      curl -i http://127.0.0.1:{proxy_port}/api/items/3
  sidecar log: {workdir / "sidecar.log"}
  (these stop with the demo; `pilotfish demo --stay` keeps the app and sidecars running)""")
        if args.stay:
            print("\npilotfish demo: staying up; Ctrl-C stops it")
            while sidecar.poll() is None and server_side.poll() is None:
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        sink.shutdown()
        processes = (sidecar, server_side, app)
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(8)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
