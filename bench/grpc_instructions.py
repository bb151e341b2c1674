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
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench import callgrind  # noqa: E402
from bench.grpc_sequential import lone_calls  # noqa: E402


def instructions_per_call(checkout: Path, calls: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        with lone_calls(checkout, callgrind.wrapper(Path(tmp) / "callgrind.out"), 240) as (
            sidecar,
            call,
        ):
            call(100, b"warm")
            callgrind.counted(sidecar.pid, lambda: call(calls, b"x" * 100))
        return callgrind.total_instructions(Path(tmp)) / calls


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
