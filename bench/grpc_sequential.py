"""CPU per gRPC unary call through one sidecar, calls one at a time, for A/B runs.

A lone call is the case issue 4's latency target is about (500 calls/s barely overlap),
and it costs a sidecar far more CPU than a pipelined request: every frame arrives in
its own read. This runs a grpcio server, one pilotfish worker pinned to CPU 1 in front
of it, and a grpcio client making calls one after another; it reports the sidecar's
utime + stime per call (after 300 warm-up calls). With --ab, it alternates with another
checkout (built in place) to compare two builds on the same noisy machine.

    python3 bench/grpc_sequential.py                        # this checkout
    python3 bench/grpc_sequential.py --ab ../other --pairs 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

import grpc  # noqa: E402

from bench.ab import alternate  # noqa: E402
from tests.h2.conftest import (  # noqa: E402
    OPTIONS,
    free_port,
    method,
    start_grpc_server,
    wait_port,
)
from tests.h2.grpc_latency import cpu_seconds  # noqa: E402


def measure(checkout: Path, calls: int) -> float:
    """µs of sidecar CPU per call, the sidecar run from `checkout`."""
    server, upstream = start_grpc_server(4)
    port, admin = free_port(), free_port()
    sidecar = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "proxy", "run",
         "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}",
         "--concurrency", "1", "--admin-port", str(admin)],
        cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, 20)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
            unary = method(channel, "unary_unary", "Unary")
            for _ in range(300):
                unary(b"warm", timeout=5)
            before = cpu_seconds(sidecar.pid)
            for _ in range(calls):
                unary(b"x" * 100, timeout=5)
            return (cpu_seconds(sidecar.pid) - before) / calls * 1e6
    finally:
        sidecar.terminate()
        sidecar.wait(10)
        server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ab", metavar="CHECKOUT", help="alternate with this other checkout")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    if args.ab:
        alternate(HERE, Path(args.ab).resolve(), args.pairs,
                  lambda checkout: measure(checkout, args.calls), "µs CPU per call")  # fmt: skip
    else:
        print(f"{HERE}: {measure(HERE, args.calls):.0f} µs CPU per call")


if __name__ == "__main__":
    main()
