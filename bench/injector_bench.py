"""Webhook latency at a fixed review rate: the injector on one core, open-loop load over TLS.

    python bench/injector_bench.py --rate 50 --duration 30 --server-cpu 1 --client-cpu 0

Starts `pilotfish injector serve` pinned with `taskset -c <server-cpu>`, then sends a typical
pod AdmissionReview (a Deployment's pod: generateName, owner reference, managedFields, two
containers with probes, Prometheus annotations) at `--rate` per second over one keep-alive
TLS connection, as the API server does. Latency is measured from each request's scheduled
send time, so a stall is charged to every request it delays (no coordinated omission).
Every loop is bounded by the request count; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVICE_NAME = "pilotfish-injector.pilotfish-system.svc"

TYPICAL_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "reviews-v2-5c9f7d8b4-",
        "namespace": "bookinfo",
        "labels": {"app": "reviews", "version": "v2", "pod-template-hash": "5c9f7d8b4"},
        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9080"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": "reviews-v2-5c9f7d8b4", "uid": "5f0c", "controller": True,
                             "blockOwnerDeletion": True}],
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                           "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
                           "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {}}}}],
    },
    "spec": {
        "serviceAccountName": "bookinfo-reviews",
        "containers": [
            {"name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v2:1.20.2",
             "ports": [{"name": "http", "containerPort": 9080}],
             "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
             "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
             "livenessProbe": {"tcpSocket": {"port": 9080}, "periodSeconds": 10},
             "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
             "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]},
            {"name": "log-agent", "image": "fluent/fluent-bit:3.1",
             "startupProbe": {"grpc": {"port": 9091}}},
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
    },
}


def review_body() -> bytes:
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo",
            "operation": "CREATE",
            "object": copy.deepcopy(TYPICAL_POD),
        },
    }).encode()


class ServiceConnection(http.client.HTTPSConnection):
    """Dials 127.0.0.1, verifies the certificate for the Service name (as the API server)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__(SERVICE_NAME, port, timeout=10, context=context)
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=SERVICE_NAME)


def exchange(sock: ssl.SSLSocket, request: bytes) -> tuple[int, bytes]:
    """One request and its response on a keep-alive TLS socket. The client is kept this
    small (no http.client) so that its own cost stays out of the measurement."""
    sock.sendall(request)
    buffer = b""
    for _ in range(64):  # bounded: a response head is far below 64 reads
        if b"\r\n\r\n" in buffer:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the injector closed the connection")
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    length = int(match.group(1)) if match else 0
    for _ in range(1024):  # bounded: 1024 reads of up to 64 KiB
        if len(body) >= length:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the injector closed the connection mid-response")
        body += chunk
    return status, body


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {SERVICE_NAME}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def server_fraction(metrics_text: str, bound: str) -> float:
    """Share of all reviews (warm-up included) the server handled within `bound` seconds."""
    name = "pilotfish_injector_review_duration_seconds"
    values = {}
    for line in metrics_text.splitlines():
        if line.startswith(f'{name}_bucket{{le="{bound}"}}') or line.startswith(f"{name}_count"):
            values[line.split()[0]] = float(line.split()[1])
    bucket = values.get(f'{name}_bucket{{le="{bound}"}}', 0.0)
    count = values.get(f"{name}_count", 0.0)
    return round(bucket / count, 4) if count else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="reviews per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load not measured")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--realtime", action="store_true",
                        help="SCHED_FIFO priority 50 for server and client (chrt, as root): the "
                        "injector then has its core to itself even on a busy machine")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for server and client (e.g. -15 as root): on a machine "
                        "shared with other work, this approximates a core of one's own")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pf-injector-bench-"))
    sys.path.insert(0, str(REPO))
    from injector import certs  # the repo's own, as the tests use

    bundle = certs.make_bundle(certs.service_dns_names("pilotfish-injector", "pilotfish-system"))
    certs.write_bundle(bundle, workdir)
    port = free_port()
    taskset = shutil.which("taskset")
    command = [sys.executable, "-m", "proxy", "injector", "serve",
               "--tls-cert", str(workdir / "tls.crt"), "--tls-key", str(workdir / "tls.key"),
               "--address", "127.0.0.1", "--port", str(port), "--log-level", "warning",
               "--template", str(REPO / "manifests/sidecar/template.yaml"),
               "--mesh-config", str(REPO / "manifests/sidecar/mesh.yaml")]
    if taskset:
        command = [taskset, "-c", str(args.server_cpu), *command]
    if args.nice:
        command = ["nice", "-n", str(args.nice), *command]
        os.nice(args.nice)
    if args.realtime:
        command = ["chrt", "-f", "50", *command]
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_cpu})
    context = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded by the deadline
            try:
                connection = ServiceConnection(port, context)
                connection.request("GET", "/readyz")
                ready = connection.getresponse()
                ready.read()
                if ready.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the injector did not start: {server.stderr}")
            time.sleep(0.1)
        interval = 1.0 / args.rate
        warmup_count = int(args.warmup * args.rate)
        total = warmup_count + int(args.duration * args.rate)
        requests = [request_bytes("POST", "/inject", review_body()) for _ in range(total)]
        connection.close()
        connection = ServiceConnection(port, context)
        connection.connect()
        sock = connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        latencies: list[float] = []
        errors = 0
        start = time.perf_counter() + 0.1
        for index in range(total):  # bounded: `total` requests
            scheduled = start + index * interval
            # Sleep to 1 ms before the send time, then spin: the client's own wake-up jitter
            # must not be charged to the injector. The spin is bounded by `scheduled`.
            delay = scheduled - time.perf_counter() - 0.001
            if delay > 0:
                time.sleep(delay)
            while time.perf_counter() < scheduled:
                pass
            status, payload = exchange(sock, requests[index])
            done = time.perf_counter()
            if status != 200 or b'"patch"' not in payload:
                errors += 1
            if index >= warmup_count:
                latencies.append((done - scheduled) * 1000)
        elapsed = time.perf_counter() - start - warmup_count * interval
        # The floor: the same client, TLS connection and rate, but GET /healthz (no review),
        # so the cost of the review itself can be told apart from the transport's.
        floor: list[float] = []
        floor_start = time.perf_counter() + 0.1
        for index in range(int(5 * args.rate)):  # bounded: 5 s of requests
            scheduled = floor_start + index * interval
            delay = scheduled - time.perf_counter() - 0.001
            if delay > 0:
                time.sleep(delay)
            while time.perf_counter() < scheduled:
                pass
            exchange(sock, request_bytes("GET", "/healthz"))
            floor.append((time.perf_counter() - scheduled) * 1000)
        floor.sort()
        metrics_text = exchange(sock, request_bytes("GET", "/metrics"))[1].decode()
        connection.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
    latencies.sort()
    summary = {
        "reviews": len(latencies),
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2),
        "healthz_p50_ms": round(percentile(floor, 0.50), 2),
        "healthz_p99_ms": round(percentile(floor, 0.99), 2),
        "patch_bytes": len(payload),
        # The server's own view (decide + mutate + patch, no network): its histogram buckets.
        "server_le_1ms": server_fraction(metrics_text, "0.001"),
        "server_le_5ms": server_fraction(metrics_text, "0.005"),
        "server_cpu": args.server_cpu if taskset else None,
        "nice": args.nice,
        "realtime": args.realtime,
    }
    print(json.dumps(summary))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
