"""Instructions per lone gRPC call in one sidecar, counted by valgrind's callgrind.

CPU time per call (bench/grpc_sequential.py) moves by a third between runs on these
shared machines, which buries a 5% change. The instruction count of the same calls
does not (repeat runs agree within 0.2%): it is the A/B measure for small changes on
the gRPC path. It is not a latency: cache misses and the kernel's share do not show.

A grpcio server, one pilotfish worker under callgrind (instrumentation switched on
after 100 warm-up calls), a grpcio client making calls one after another; the count
covers the sidecar's user-space instructions for `--calls` calls.

Needs valgrind (`apt-get install valgrind`).

    python3 bench/grpc_instructions.py                         # this checkout
    python3 bench/grpc_instructions.py --ab ../other-checkout  # and another, built in place
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

import grpc  # noqa: E402

from tests.h2.conftest import (  # noqa: E402
    OPTIONS,
    free_port,
    method,
    start_grpc_server,
    wait_port,
)


def _control(*args: object) -> None:
    subprocess.run(["callgrind_control", *map(str, args)], check=True, capture_output=True)


def instructions_per_call(checkout: Path, calls: int) -> float:
    server, upstream = start_grpc_server(4)
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        sidecar = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, "-m", "proxy", "run",
             "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}",
             "--concurrency", "1", "--admin-port", str(admin)],
            cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port, 240)
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
                unary = method(channel, "unary_unary", "Unary")
                for _ in range(100):
                    unary(b"warm", timeout=30)
                control = ["callgrind_control"]
                subprocess.run(
                    [*control, "-i", "on", str(sidecar.pid)], check=True, capture_output=True
                )
                for _ in range(calls):
                    unary(b"x" * 100, timeout=30)
                subprocess.run(
                    [*control, "-i", "off", str(sidecar.pid)], check=True, capture_output=True
                )
                subprocess.run([*control, "-d", str(sidecar.pid)], check=True, capture_output=True)
        finally:
            sidecar.terminate()
            sidecar.wait(60)
            server.stop(None)
        total = 0
        for dump in Path(tmp).glob("callgrind.out*"):
            for line in dump.read_text().splitlines():
                if line.startswith(("totals:", "summary:")):
                    total = max(total, int(line.split()[1]))
    return total / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--ab", metavar="CHECKOUT", help="also measure this other checkout")
    args = parser.parse_args()
    checkouts = [HERE] + ([Path(args.ab).resolve()] if args.ab else [])
    counts = []
    for checkout in checkouts:
        counts.append(instructions_per_call(checkout, args.calls))
        print(f"{checkout}: {counts[-1]:,.0f} instructions per call", flush=True)
    if len(counts) == 2:
        print(f"{checkouts[0]} is {counts[0] / counts[1]:.3f} x {checkouts[1]}")


if __name__ == "__main__":
    main()
