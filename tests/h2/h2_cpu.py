"""CPU per HTTP/2 request, pilotfish against Envoy, interleaved (issue 4's second target).

Not a test (no `test_` prefix): run it by hand, from the repository root, e.g.
    flock /tmp/meshbench.lock python -m tests.h2.h2_cpu --rounds 3
Add `--baseline ../other-checkout` to run a second pilotfish (another commit, built in
place) in the same rounds, for an A/B of a change.
nginx (the upstream, HTTP/1.1) and h2load on CPU 0, each proxy on CPU 1, one worker each,
with meshbench's own configurations (/work/shared/tools/meshbench.py, or MESHBENCH).
Each round loads each proxy in turn with `h2load -c8 -m16 -n 60000` (h2c, prior
knowledge) after 5,000 warm-up requests and reads its utime + stime from /proc/PID/stat.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.h2.conftest import wait_port
from tests.h2.grpc_latency import cpu_seconds

MESHBENCH = Path(os.environ.get("MESHBENCH", "/work/shared/tools/meshbench.py"))


def load_meshbench() -> object:
    spec = importlib.util.spec_from_file_location("meshbench", MESHBENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def h2load(port: int, requests: int) -> float:
    """Requests per second of one h2load run on CPU 0."""
    out = subprocess.run(
        ["taskset", "-c", "0", "h2load", "-c8", "-m16", "-n", str(requests),
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    succeeded = re.search(r"(\d+) succeeded", out)
    if match is None or succeeded is None or int(succeeded.group(1)) != requests:
        raise SystemExit(f"h2load did not complete:\n{out}")
    return float(match.group(1))


def measure(pid: int, port: int, requests: int) -> tuple[float, float]:
    """(µs of proxy CPU per request, requests per second) over one h2load run."""
    h2load(port, 5000)
    before = cpu_seconds(pid)
    rate = h2load(port, requests)
    return (cpu_seconds(pid) - before) / requests * 1e6, rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=60000)
    parser.add_argument(
        "--baseline", metavar="CHECKOUT",
        help="also run pilotfish from this other checkout (built in place), for an A/B",
    )  # fmt: skip
    args = parser.parse_args()
    bench: object = load_meshbench()
    ports: dict[str, int] = bench.PORTS  # type: ignore[attr-defined]
    upstream_port: int = bench.UPSTREAM  # type: ignore[attr-defined]
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench.configs(tmp)  # type: ignore[attr-defined]
        try:
            processes.append(subprocess.Popen(
                ["taskset", "-c", "0", "nginx", "-c", paths["up.conf"], "-e", "/dev/null"]
            ))  # fmt: skip
            wait_port(upstream_port)
            candidates = {
                "envoy": (bench.proxy_cmd("envoy", paths, ""), ports["envoy"]),  # type: ignore[attr-defined]
                "pilotfish": (
                    [sys.executable, "-m", "proxy", "run", "--listen",
                     f"127.0.0.1:{ports['candidate']}", "--upstream",
                     f"127.0.0.1:{upstream_port}", "--concurrency", "1"],
                    ports["candidate"],
                ),
            }  # fmt: skip
            if args.baseline:
                command = list(candidates["pilotfish"][0])
                command[command.index(f"127.0.0.1:{ports['candidate']}")] = "127.0.0.1:18099"
                candidates["baseline"] = ([*command, "--admin-port", "18098"], 18099)
            pids: dict[str, int] = {}
            for name, (command, port) in candidates.items():
                process = subprocess.Popen(
                    ["taskset", "-c", "1", *command],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    cwd=args.baseline if name == "baseline" else None,
                )  # fmt: skip
                processes.append(process)
                wait_port(port, 20)
                pids[name] = process.pid
            for round_ in range(1, args.rounds + 1):
                for name, (_, port) in candidates.items():
                    cpu, rate = measure(pids[name], port, args.requests)
                    print(f"round {round_} {name:9} {cpu:6.1f} µs CPU/request  {rate:9,.0f} req/s")
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    main()
