#!/usr/bin/env python3
"""Worker scaling: closed-loop throughput with --concurrency 1 (one core) and 2 (two cores).

On a 2-core machine the load generator and the upstream share the cores with the proxy,
so the throughput ratio measures the whole box, not the proxy alone. So it also prints
the proxy's own CPU per request (all its processes, from /proc) for each run: when two
workers spend no more per request than one, the workers share nothing that costs (no
lock, no contention) and throughput grows with the cores the proxy is given; the
"projected" ratio is what two dedicated cores would give at the measured efficiency.

`--share F` measures the target itself on this machine, scaled down: every worker is
pinned to a core of its own and held to the fraction F of it by a CPU cgroup of its own
(cgroup v1 `cpu` controller, CFS quota; needs root), so one worker gets F of one core and
two workers F of each of two, and the load generator and the upstream run in what is left.
When the proxy is the limit in both runs (its workers' CPU at the cap, which the script
prints), the ratio is how throughput grows with the cores the workers are given.
    python bench/scaling.py [--secs 6] [--rounds 3] [--share 0.4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

UPSTREAM, PROXY, ADMIN = 18180, 18105, 18190
CPU_CGROUP = "/sys/fs/cgroup/cpu"  # cgroup v1, as on these machines
QUOTA_PERIOD_US = 10_000  # short, so a capped worker is held back in small slices


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


def workers_of(main_pid: int) -> list[int]:
    """The proxy's worker processes: the main process (worker 0) and the ones it forked."""
    with open(f"/proc/{main_pid}/task/{main_pid}/children") as children:
        return [main_pid, *(int(pid) for pid in children.read().split())]


def cap_workers(main_pid: int, workers: int, share: float) -> list[str]:
    """Pin worker i to CPU 1 - i and hold it to `share` of that core; the cgroups made."""
    deadline = time.monotonic() + 10
    pids = workers_of(main_pid)
    while len(pids) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = workers_of(main_pid)
    groups = []
    for index, pid in enumerate(pids):
        group = os.path.join(CPU_CGROUP, f"pilotfish-scaling-{index}")
        os.makedirs(group, exist_ok=True)
        for name, value in (
            ("cpu.cfs_period_us", QUOTA_PERIOD_US),
            ("cpu.cfs_quota_us", int(share * QUOTA_PERIOD_US)),
        ):
            with open(os.path.join(group, name), "w") as knob:
                knob.write(str(value))
        for task in os.listdir(f"/proc/{pid}/task"):  # every thread, the OTLP sender's too
            with open(os.path.join(group, "tasks"), "w") as tasks:
                tasks.write(task)
            os.sched_setaffinity(int(task), {1 - index})
        groups.append(group)
    return groups


def release(groups: list[str]) -> None:
    for group in groups:
        # A task may still be inside (the proxy exiting); the next run reuses the group.
        with contextlib.suppress(OSError):
            os.rmdir(group)


def wrk(secs: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{secs}s", f"http://127.0.0.1:{PROXY}/"],
        capture_output=True,
        text=True,
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs, interleaved")
    parser.add_argument(
        "--share",
        type=float,
        default=None,
        help="hold each worker to this fraction of its own core",
    )
    args = parser.parse_args()
    if args.share is not None and not os.access(CPU_CGROUP, os.W_OK):
        parser.error(f"--share needs a writable {CPU_CGROUP} (root, cgroup v1 cpu controller)")
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
    ratios = []
    try:
        wait(UPSTREAM)
        for _ in range(args.rounds):
            one, two = (measure(workers, args.secs, args.share) for workers in (1, 2))
            ratios.append(two.rps / one.rps)
            print(
                f"1 worker: {one.rps:.0f} rps; 2 workers: {two.rps:.0f} rps; ratio {ratios[-1]:.2f}"
            )
            if args.share is not None:
                print(
                    f"each worker used {one.share_used:.2f} (1 worker) and "
                    f"{two.share_used:.2f} (2 workers) of its core; cap {args.share}"
                )
            print(
                f"proxy CPU per request: 1 worker {one.cpu_us:.1f} us, 2 workers "
                f"{two.cpu_us:.1f} us; projected ratio with two dedicated cores "
                f"{2 * one.cpu_us / two.cpu_us:.2f}",
                flush=True,
            )
    finally:
        upstream.terminate()
        upstream.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.rounds > 1:
        print(f"median ratio over {args.rounds} rounds: {statistics.median(ratios):.2f}")
    return 0


class Run(NamedTuple):
    rps: float
    cpu_us: float  # the proxy's CPU per request, every process of it
    share_used: float  # of one core, per worker


def measure(workers: int, secs: int, share: float | None) -> Run:
    """Closed-loop throughput through `workers` workers (on CPU 1, or CPUs 0-1)."""
    proxy = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1" if workers == 1 else "0,1",
            sys.executable,
            "-m",
            "proxy",
            "run",
            "--listen",
            f"127.0.0.1:{PROXY}",
            "--upstream",
            f"127.0.0.1:{UPSTREAM}",
            "--concurrency",
            str(workers),
            "--admin-port",
            str(ADMIN),
        ],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    groups: list[str] = []
    try:
        wait(PROXY)
        if share is not None:
            groups = cap_workers(proxy.pid, workers, share)
        wrk(2)
        before = group_cpu_seconds(proxy.pid)
        rps = wrk(secs)
        spent = group_cpu_seconds(proxy.pid) - before
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(10)
        release(groups)
    return Run(rps, spent / (rps * secs) * 1e6, spent / secs / workers)


if __name__ == "__main__":
    raise SystemExit(main())
