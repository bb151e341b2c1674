#!/usr/bin/env python3
"""Opaque TCP through pilotfish and through Envoy's tcp_proxy, side by side in one run.

A sidecar passes everything that is not HTTP through as TCP: Redis, Postgres, MySQL,
Kafka. The referee (../shared/tools/meshbench.py) measures HTTP only, so this does for
TCP what it does for HTTP, the same way: the proxy under test pinned to CPU 1, the load
and the upstream to CPU 0, the direct path, Envoy (`envoy.filters.network.tcp_proxy`, one
worker) and pilotfish (`--concurrency 1`, default config) measured in one run.

    python3 bench/tcp_relay.py [--secs 6] [--rate 1000] [--bulk-mib 512] [--only envoy,pilotfish]

For each, three loads:
  * redis: closed-loop throughput of `redis-benchmark -c 64 -t get` against a real
    redis-server (one request and answer at a time per connection, 64 connections);
  * rate: a fixed 1000 PINGs/s on ten connections that send in step every 10 ms, as the
    referee's h2load does for HTTP: CPU microseconds per request of the proxy (utime +
    stime from /proc) and the latency it adds at p50 and p99 over the direct path;
  * bulk: --bulk-mib MiB up and then down one connection through the proxy to a sink and
    source on CPU 0: MiB/s and the proxy's CPU milliseconds per MiB;
and the proxy's peak RSS (VmHWM) at the end. Ratios are to Envoy in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from tests.h2.conftest import wait_port  # noqa: E402

LOAD_CPU, PROXY_CPU = "0", "1"
REDIS, SINK, SOURCE = 18380, 18381, 18382  # the upstreams, on CPU 0
PORTS = {"direct": 0, "envoy": 18390, "pilotfish": 18392}
ADMIN = {"envoy": 18391, "pilotfish": 18393}
PING, PONG = b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"
CHUNK = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secs", type=float, default=6.0, help="fixed-rate run length")
    parser.add_argument("--rate", type=int, default=1000, help="requests/s in the fixed-rate run")
    parser.add_argument("--requests", type=int, default=200_000, help="redis-benchmark -n")
    parser.add_argument("--connections", type=int, default=20_000, help="churn: connections")
    parser.add_argument("--bulk-mib", type=int, default=512, help="MiB each way in the bulk run")
    parser.add_argument("--only", default="envoy,pilotfish", help="proxies to measure")
    parser.add_argument("--loads", default="redis,churn,rate,bulk", help="which loads to run")
    args = parser.parse_args()
    for tool in ("redis-server", "redis-benchmark", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"tcp_relay: {tool} is not installed (bash scripts/setup.sh installs it)")
    now = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    print(f"# {now} {os.cpu_count()} cores, {_cpu_model()}")
    names = ["direct", *args.only.split(",")]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, _upstreams(tmp):
        for name in names:
            results[name] = _measure(name, tmp, args)
            print(name, " ".join(f"{k}={v:.4g}" for k, v in results[name].items()), flush=True)
    _summary(results)
    return 0


def _measure(name: str, tmp: str, args: argparse.Namespace) -> dict[str, float]:
    row: dict[str, float] = {}
    loads = args.loads.split(",")
    with _proxy(name, tmp, REDIS) as (port, pid):
        if "redis" in loads:
            row["redis_rps"] = _redis_benchmark(port, args.requests)
        if "churn" in loads:
            user0, system0 = _user_and_system(pid)
            row["churn_cps"] = _redis_benchmark(port, args.connections, "ping_mbulk", "-k", "0")
            user1, system1 = _user_and_system(pid)
            if pid:
                per_connection = 1e6 / args.connections
                row["churn_cpu_us_per_cx"] = (user1 - user0 + system1 - system0) * per_connection
                row["churn_user_us"] = (user1 - user0) * per_connection
                row["churn_sys_us"] = (system1 - system0) * per_connection
        if "rate" in loads:
            user0, system0 = _user_and_system(pid)
            latencies = _fixed_rate(port, args.rate, args.secs)
            user1, system1 = _user_and_system(pid)
            row["p50_ms"] = _percentile(latencies, 0.50)
            row["p99_ms"] = _percentile(latencies, 0.99)
            if pid:
                per_request = 1e6 / len(latencies)
                row["cpu_us_per_rq"] = (user1 - user0 + system1 - system0) * per_request
                row["user_us"] = (user1 - user0) * per_request
                row["sys_us"] = (system1 - system0) * per_request
        if pid:
            row["rss_mb"] = _peak_rss_kb(pid) / 1024
    if "bulk" not in loads:
        return row
    with _proxy(name, tmp, SINK) as (port, pid):
        cpu0 = _cpu_seconds(pid)
        row["up_mib_s"] = _bulk_up(port, args.bulk_mib)
        if pid:
            row["up_cpu_ms_per_mib"] = (_cpu_seconds(pid) - cpu0) * 1e3 / args.bulk_mib
    with _proxy(name, tmp, SOURCE) as (port, pid):
        cpu0 = _cpu_seconds(pid)
        row["down_mib_s"] = _bulk_down(port, args.bulk_mib)
        if pid:
            row["down_cpu_ms_per_mib"] = (_cpu_seconds(pid) - cpu0) * 1e3 / args.bulk_mib
            row["bulk_rss_mb"] = _peak_rss_kb(pid) / 1024
    return row


def _summary(results: dict[str, dict[str, float]]) -> None:
    direct, envoy = results["direct"], results.get("envoy")
    for name, row in results.items():
        if name == "direct":
            continue
        line = f"{name}:"
        if "p50_ms" in row:
            added50 = row["p50_ms"] - direct["p50_ms"]
            added99 = row["p99_ms"] - direct["p99_ms"]
            line += f" added p50 {added50:.3f} ms, p99 {added99:.3f} ms;"
        if envoy is not None and name != "envoy":
            line += " to Envoy: " + ", ".join(
                f"{key} {row[key] / envoy[key]:.2f}x"
                for key in (
                    "redis_rps",
                    "churn_cps",
                    "churn_cpu_us_per_cx",
                    "cpu_us_per_rq",
                    "rss_mb",
                    "up_mib_s",
                    "up_cpu_ms_per_mib",
                    "down_mib_s",
                    "down_cpu_ms_per_mib",
                    "bulk_rss_mb",
                )
                if envoy.get(key) and key in row
            )
        print(line)


# -- the proxies -------------------------------------------------------------------------


@contextmanager
def _proxy(name: str, tmp: str, upstream: int) -> Iterator[tuple[int, int]]:
    """Start `name` pinned to the proxy's CPU, relaying to `upstream`; yield (port, pid)."""
    if name == "direct":
        yield upstream, 0
        return
    port = PORTS[name]
    if name == "envoy":
        config = os.path.join(tmp, f"envoy-{upstream}.yaml")
        with open(config, "w") as out:
            out.write(_envoy_config(port, upstream))
        command = [shutil.which("envoy") or "envoy", "-c", config, "--concurrency", "1"]
        command += ["-l", "error", "--disable-hot-restart", "--base-id", str(upstream)]
    else:
        command = [sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{port}"]
        command += ["--upstream", f"127.0.0.1:{upstream}", "--concurrency", "1"]
        command += ["--admin-port", str(ADMIN[name])]
    process = subprocess.Popen(
        ["taskset", "-c", PROXY_CPU, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=HERE,
    )
    try:
        wait_port(port)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _envoy_config(port: int, upstream: int) -> str:
    return f"""static_resources:
  listeners:
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: up
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {ADMIN["envoy"]}}}}}
"""


# -- the upstreams -----------------------------------------------------------------------


@contextmanager
def _upstreams(tmp: str) -> Iterator[None]:
    """redis-server, a sink that reads and drops, a source that writes --bulk-mib MiB."""
    options = ["--port", str(REDIS), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "redis-server", *options, "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this process is the load from here on
    servers = [_serve(SINK, _sink), _serve(SOURCE, _source)]
    try:
        wait_port(REDIS)
        yield
    finally:
        for server in servers:
            server.close()
        redis.terminate()
        redis.wait()


def _serve(port: int, handle: Callable[[socket.socket], None]) -> socket.socket:
    server = socket.create_server(("127.0.0.1", port), backlog=64)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed at the end of the run
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def _sink(conn: socket.socket) -> None:
    buffer = bytearray(CHUNK)
    total = 0
    with conn:
        while received := conn.recv_into(buffer):
            total += received
        conn.sendall(str(total).encode())  # after the client's half-close: all arrived


def _source(conn: socket.socket) -> None:
    with conn:
        request = conn.recv(64)  # how many MiB to send
        if not request.isdigit():
            return  # a readiness probe
        data = bytes(CHUNK)
        for _ in range(int(request)):
            conn.sendall(data)


# -- the loads ---------------------------------------------------------------------------


def _redis_benchmark(port: int, requests: int, test: str = "get", *extra: str) -> float:
    """Requests/s of one redis-benchmark test (with `-k 0`, a new connection for each)."""
    load = ["redis-benchmark", "-p", str(port), "-c", "64", "-n", str(requests), "-t", test]
    out = subprocess.run(
        [*load, *extra, "--csv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r'^"[A-Z_]+","([\d.]+)"', out, re.MULTILINE)
    if match is None:
        raise SystemExit(f"redis-benchmark gave no rate:\n{out}")
    return float(match.group(1))


def _fixed_rate(port: int, rate: int, secs: float) -> list[float]:
    """PINGs at `rate`/s on ten connections sending in step; each answer's latency in ms."""
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    for conn in connections:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    period = len(connections) / rate
    latencies: list[float] = []
    clock = time.perf_counter
    try:
        _ping_all(connections, [])  # warm the path
        start = clock()
        for tick in range(int(secs / period)):
            delay = start + tick * period - clock()
            if delay > 0:
                time.sleep(delay)
            _ping_all(connections, latencies)
    finally:
        for conn in connections:
            conn.close()
    return latencies


def _ping_all(connections: list[socket.socket], latencies: list[float]) -> None:
    clock = time.perf_counter
    sent = []
    for conn in connections:
        sent.append(clock())
        conn.sendall(PING)
    for conn, at in zip(connections, sent, strict=True):
        read_pong(conn)
        latencies.append((clock() - at) * 1000)


def read_pong(conn: socket.socket) -> None:
    """Read one PONG from `conn`, or stop the run saying what came instead."""
    answer = b""
    while len(answer) < len(PONG):
        chunk = conn.recv(64)
        if not chunk:
            raise SystemExit("the connection closed before its PONG")
        answer += chunk
    if answer != PONG:
        raise SystemExit(f"expected PONG, got {answer!r}")


def _bulk_up(port: int, mib: int) -> float:
    data = bytes(CHUNK)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.perf_counter()
        for _ in range(mib):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(64):
            answer += chunk
        elapsed = time.perf_counter() - start
    if int(answer or b"0") != mib * CHUNK:
        raise SystemExit(f"the sink counted {answer!r} bytes, not {mib * CHUNK}")
    return mib / elapsed


def _bulk_down(port: int, mib: int) -> float:
    buffer = bytearray(CHUNK)
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.perf_counter()
        conn.sendall(str(mib).encode())
        while received := conn.recv_into(buffer):
            total += received
        elapsed = time.perf_counter() - start
    if total != mib * CHUNK:
        raise SystemExit(f"received {total} bytes, not {mib * CHUNK}")
    return mib / elapsed


# -- measuring ---------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(child) for child in out.split()]
    return [pid] + [grandchild for child in children for grandchild in _tree(child)]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its descendants, as the referee reads them."""
    return sum(_user_and_system(pid))


def _user_and_system(pid: int) -> tuple[float, float]:
    user = system = 0
    for member in _tree(pid) if pid else []:
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def _peak_rss_kb(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
    return total


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
