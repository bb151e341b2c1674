"""Peak resident memory of one pilotfish worker under the referee's kinds of load.

Starts `pilotfish run --listen 127.0.0.1:PORT --upstream UPSTREAM --concurrency 1` pinned
to CPU 1, then prints VmRSS/VmHWM and the thread count at start and after each load
(pinned to CPU 0): wrk -c64, h2load --h1 at a fixed rate, h2load over HTTP/2 (h2c). With
--smaps, where the resident memory lives at the end (heap, anonymous, each library).

    python bench/memory.py [--port 18205] [--upstream 127.0.0.1:18180] [--secs 5] [--smaps]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict


def status(pid: int) -> str:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = (value.split() or [""])[0]
    return (
        f"VmRSS {int(fields['VmRSS']) / 1024:5.1f} MB  VmHWM {int(fields['VmHWM']) / 1024:5.1f} MB"
        f"  threads {fields['Threads']}"
    )


def smaps(pid: int) -> list[tuple[int, str]]:
    sizes: dict[str, int] = defaultdict(int)
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                name = parts[5] if len(parts) > 5 else "[anonymous]"
            elif parts[0] == "Rss:":
                sizes[name] += int(parts[1])
    return sorted(((kb, path) for path, kb in sizes.items()), reverse=True)


def wait_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def load(command: list[str]) -> str:
    out = subprocess.run(["taskset", "-c", "0", *command], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "Requests/sec" in line or line.startswith("finished in"):
            return line.strip()
    return "(no summary)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=18205)
    ap.add_argument("--upstream", default="127.0.0.1:18180")
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--smaps", action="store_true")
    a = ap.parse_args()
    url = f"http://127.0.0.1:{a.port}/"
    proxy = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            sys.executable,
            "-m",
            "proxy",
            "run",
            "--listen",
            f"127.0.0.1:{a.port}",
            "--upstream",
            a.upstream,
            "--concurrency",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_port(a.port):
            print("the proxy did not listen", file=sys.stderr)
            return 1
        time.sleep(0.5)
        print(f"{'start':28} {status(proxy.pid)}")
        secs = str(a.secs)
        loads = [
            ("wrk -c64", ["wrk", "-t1", "-c64", f"-d{secs}s", url]),
            ("h2load --h1 1000/s", ["h2load", "--h1", "-c10", "--rps", "100", "-D", secs, url]),
            ("h2load h2c -c8 -m16", ["h2load", "-c8", "-m16", "-D", secs, url]),
        ]
        for name, command in loads:
            summary = load(command)
            print(f"{'after ' + name:28} {status(proxy.pid)}   ({summary})")
        if a.smaps:
            for kb, path in smaps(proxy.pid)[:15]:
                print(f"{kb / 1024:7.1f} MB  {path}")
    finally:
        proxy.send_signal(signal.SIGINT)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proxy.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
