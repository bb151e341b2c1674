#!/usr/bin/env python3
"""Worker scaling: closed-loop throughput with --concurrency 1 (one core) and 2 (two cores).

On a 2-core machine the load generator and the upstream share the cores with the proxy,
so the throughput ratio measures the whole box, not the proxy alone. So it also prints
the proxy's own CPU per request (all its processes, from /proc) for each run: when two
workers spend no more per request than one, the workers share nothing that costs (no
lock, no contention) and throughput grows with the cores the proxy is given; the
"projected" ratio is what two dedicated cores would give at the measured efficiency.
    python bench/scaling.py [--secs 6]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

UPSTREAM, PROXY, ADMIN = 18180, 18105, 18190


def wait(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in the proxy's process group (main and workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(secs: int) -> float:
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{secs}s", f"http://127.0.0.1:{PROXY}/"],
                         capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=int, default=6)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="pf-scaling-")
    conf = os.path.join(tmp, "up.conf")
    with open(conf, "w") as handle:
        handle.write(f"""worker_processes 1; daemon off; pid {tmp}/up.pid; error_log {tmp}/up.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {tmp}/b;
  proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u;
  scgi_temp_path {tmp}/s;
  server {{ listen 127.0.0.1:{UPSTREAM}; location / {{ return 200 "hello from upstream\\n"; }} }} }}
""")
    upstream = subprocess.Popen(["nginx", "-c", conf, "-e", "/dev/null"])
    results: dict[int, float] = {}
    cpu_per_request: dict[int, float] = {}
    try:
        wait(UPSTREAM)
        for workers, cpus in ((1, "1"), (2, "0,1")):
            proxy = subprocess.Popen(
                ["taskset", "-c", cpus, sys.executable, "-m", "proxy", "run", "--listen",
                 f"127.0.0.1:{PROXY}", "--upstream", f"127.0.0.1:{UPSTREAM}",
                 "--concurrency", str(workers), "--admin-port", str(ADMIN)],
                stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait(PROXY)
                wrk(2)
                before = group_cpu_seconds(proxy.pid)
                results[workers] = wrk(args.secs)
                spent = group_cpu_seconds(proxy.pid) - before
                cpu_per_request[workers] = spent / (results[workers] * args.secs) * 1e6
            finally:
                os.killpg(proxy.pid, signal.SIGTERM)
                proxy.wait(10)
    finally:
        upstream.terminate()
        upstream.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"1 worker: {results[1]:.0f} rps; 2 workers: {results[2]:.0f} rps; "
          f"ratio {results[2] / results[1]:.2f}")
    one, two = cpu_per_request[1], cpu_per_request[2]
    print(f"proxy CPU per request: 1 worker {one:.1f} us, 2 workers {two:.1f} us; "
          f"projected ratio with two dedicated cores {2 * one / two:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
