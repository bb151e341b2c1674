"""gRPC unary latency through two sidecars at a fixed rate, minus the direct path (issue 4's target).

Not a test (no `test_` prefix): run it by hand, e.g.
    python -m tests.h2.grpc_latency --rate 500 --secs 10
Client -> sidecar A -> sidecar B -> grpcio server, each sidecar one worker; calls are
scheduled every 1/rate s and timed from their scheduled start (no coordinated omission).
`--envoy` also measures the same topology with two Envoys (one worker each, HTTP/2 on
both sides), to show what this machine allows.

As the referee (../shared/tools/meshbench.py) lays out a run on this 2-core machine, the
load side (here the grpcio client and server, one process) runs on CPU 0 and the
sidecars on CPU 1, each "one worker on one pinned core" as the issue's targets say;
`--no-pin` leaves all of it to the scheduler instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from tests.h2.conftest import OPTIONS, Proxy, free_port, method, start_grpc_server, wait_port

# One listener, one route, one cluster that speaks HTTP/2 (gRPC) to its upstream.
ENVOY_CONFIG = """static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: grpc
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: up, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"""


WARM_UP = 200  # sequential calls before the timed ones


class Envoy:
    """An Envoy sidecar (the envoy binary on PATH), one worker, like `Proxy`."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        config = Path(self.dir.name) / "envoy.yaml"
        config.write_text(ENVOY_CONFIG.format(port=self.port, upstream=upstream_port))
        binary = shutil.which("envoy")
        if binary is None:
            raise SystemExit("--envoy needs the envoy binary on PATH")
        self.process = subprocess.Popen(
            [binary, "-c", str(config), "--concurrency", "1", "-l", "error",
             "--disable-hot-restart"],
        )  # fmt: skip
        wait_port(self.port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.dir.cleanup()


def run(target: str, rate: int, secs: float) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        unary = method(channel, "unary_unary", "Unary")
        for _ in range(WARM_UP):
            unary(b"warm", timeout=5)
        interval = 1.0 / rate
        start = time.perf_counter()
        pending = []
        for index in range(int(rate * secs)):
            scheduled = start + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            call = unary.future(b"x" * 100, timeout=5)

            def done(_: object, scheduled: float = scheduled) -> None:
                with lock:
                    latencies.append((time.perf_counter() - scheduled) * 1000)

            call.add_done_callback(done)
            pending.append(call)
        for call in pending:
            call.result()
    return sorted(latencies)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LOAD_CPU, PROXY_CPU = 0, 1


def pin_process(pid: int, cpu: int) -> None:
    """Every thread of `pid` onto `cpu` (sched_setaffinity on a pid moves one thread only)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def through_two(
    sidecar: type[Proxy] | type[Envoy], port: int, rate: int, secs: float, pin: bool
) -> tuple[list[float], float]:
    """Latencies through two sidecars of one kind in front of the server on `port`, and
    the CPU each sidecar spent per call (µs, warm-up calls included)."""
    inbound = sidecar(port)
    try:
        outbound = sidecar(inbound.port)
        try:
            pids = (inbound.process.pid, outbound.process.pid)
            if pin:
                for pid in pids:
                    pin_process(pid, PROXY_CPU)
            before = sum(cpu_seconds(pid) for pid in pids)
            latencies = run(outbound.target, rate, secs)
            spent = sum(cpu_seconds(pid) for pid in pids) - before
            return latencies, spent / 2 / (len(latencies) + WARM_UP) * 1e6
        finally:
            outbound.stop()
    finally:
        inbound.stop()


def report(name: str, values: list[float], direct: list[float], cpu: float = 0.0) -> None:
    print(f"{name:13} p50 {pct(values, 0.5):.3f} ms  p99 {pct(values, 0.99):.3f} ms", end="")
    if values is not direct:
        print(
            f"   added p50 {pct(values, 0.5) - pct(direct, 0.5):.3f} ms"
            f"  p99 {pct(values, 0.99) - pct(direct, 0.99):.3f} ms"
            f"   CPU {cpu:.0f} µs/call per sidecar",
            end="",
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--secs", type=float, default=10)
    parser.add_argument("--envoy", action="store_true", help="also through two Envoys")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="no CPU pinning (default: load on CPU 0, sidecars on CPU 1)",
    )
    args = parser.parse_args()
    if args.pin and os.sched_getaffinity(0) != {LOAD_CPU}:
        # Before grpc starts any thread, so that all of the load side inherits CPU 0.
        os.execvp("taskset", ["taskset", "-c", str(LOAD_CPU), sys.executable, "-m",
                              "tests.h2.grpc_latency", *sys.argv[1:]])  # fmt: skip
    server, port = start_grpc_server(8)
    try:
        direct = run(f"127.0.0.1:{port}", args.rate, args.secs)
        proxied, proxied_cpu = through_two(Proxy, port, args.rate, args.secs, args.pin)
        envoys = through_two(Envoy, port, args.rate, args.secs, args.pin) if args.envoy else None
    finally:
        server.stop(None)
    layout = "load on CPU 0, sidecars on CPU 1" if args.pin else "not pinned"
    print(f"calls {len(proxied)} at {args.rate}/s for {args.secs:g}s ({layout})")
    report("direct", direct, direct)
    report("two sidecars", proxied, direct, proxied_cpu)
    if envoys is not None:
        report("two Envoys", envoys[0], direct, envoys[1])


if __name__ == "__main__":
    main()
