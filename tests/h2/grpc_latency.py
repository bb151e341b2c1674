"""gRPC unary latency through two sidecars at a fixed rate, minus the direct path (issue 4's target).

Not a test (no `test_` prefix): run it by hand, e.g.
    python -m tests.h2.grpc_latency --rate 500 --secs 10
Client -> sidecar A -> sidecar B -> grpcio server, each sidecar one worker; calls are
scheduled every 1/rate s and timed from their scheduled start (no coordinated omission).
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent import futures

import grpc

from tests.h2.conftest import HANDLERS, OPTIONS, SERVICE, Proxy, method


def run(target: str, rate: int, secs: float) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        unary = method(channel, "unary_unary", "Unary")
        for _ in range(200):
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--secs", type=float, default=10)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    inbound = Proxy(port)
    outbound = Proxy(inbound.port)
    try:
        direct = run(f"127.0.0.1:{port}", args.rate, args.secs)
        proxied = run(outbound.target, args.rate, args.secs)
    finally:
        outbound.stop()
        inbound.stop()
        server.stop(None)
    print(f"calls {len(proxied)} at {args.rate}/s for {args.secs:g}s")
    for name, values in (("direct", direct), ("two sidecars", proxied)):
        print(f"{name:13} p50 {pct(values, 0.5):.3f} ms  p99 {pct(values, 0.99):.3f} ms")
    print(
        f"added         p50 {pct(proxied, 0.5) - pct(direct, 0.5):.3f} ms  "
        f"p99 {pct(proxied, 0.99) - pct(direct, 0.99):.3f} ms"
    )


if __name__ == "__main__":
    main()
