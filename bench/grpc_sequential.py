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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

Calls = Callable[[int, bytes], None]


@contextmanager
def lone_calls(
    checkout: Path, wrapper: list[str], timeout: float
) -> Iterator[tuple[subprocess.Popen[bytes], Calls]]:
    """A grpcio server, one pilotfish worker from `checkout` in front of it (run under
    `wrapper`: taskset, valgrind), and `calls(n, payload)`, which makes n unary calls
    through it one after another (`timeout` s each, for a sidecar and its start)."""
    server, upstream = start_grpc_server(4)
    port, admin = free_port(), free_port()
    sidecar = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "proxy", "run",
         "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}",
         "--concurrency", "1", "--admin-port", str(admin)],
        cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, timeout)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
            unary = method(channel, "unary_unary", "Unary")

            def calls(count: int, payload: bytes) -> None:
                for _ in range(count):
                    unary(payload, timeout=timeout)

            yield sidecar, calls
    finally:
        sidecar.terminate()
        sidecar.wait(60)
        server.stop(None)


def measure(checkout: Path, calls: int) -> float:
    """µs of sidecar CPU per call, the sidecar run from `checkout` on CPU 1."""
    with lone_calls(checkout, ["taskset", "-c", "1"], 20) as (sidecar, call):
        call(300, b"warm")
        before = cpu_seconds(sidecar.pid)
        call(calls, b"x" * 100)
        return (cpu_seconds(sidecar.pid) - before) / calls * 1e6


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
