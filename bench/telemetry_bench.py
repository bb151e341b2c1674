#!/usr/bin/env python3
"""Telemetry's own CPU per request: the observer's hooks alone, in-process, on thread CPU time.

meshbench measures the whole proxy, where telemetry is a few microseconds inside ~80 and
the machine's noise is larger than that; this isolates the hooks the runtime calls per
request (`request_start` + `request_done`) with a typical request, per configuration.

The "100% sampling, exported" row runs the event loop, as the proxy does, because the
tracer's batches leave on a thread that reports back through the loop: without a running
loop the first batch never completes and every later span only waits in the queue (then is
dropped). Its spans go to the demo's OTLP/HTTP receiver (proxy/demo/trace_sink.py) in a
child process on loopback, and the row checks that each span arrived. It gives two
figures: the loop thread's CPU (comparable with the other rows) and the whole process's,
which adds the export thread (protobuf request, HTTP POST) and the access log's writer.

Usage: python bench/telemetry_bench.py [--requests 50000] [--receiver-cpu N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.config.load import build
from proxy.core.messages import RequestHead
from proxy.runtime.exchange import Exchange
from proxy.telemetry.pipeline import Telemetry

HEADERS = [
    (b"host", b"reviews.shop:9080"),
    (b"user-agent", b"wrk"),
    (b"accept", b"*/*"),
    (b"x-forwarded-proto", b"http"),
]


class Downstream:
    listener_name = "explicit"
    destination = ("127.0.0.1", 9080)
    client_address = b"127.0.0.1"
    local_address = "127.0.0.1:15001"


def new_exchange(request: RequestHead) -> Any:
    ex: Any = Exchange.__new__(Exchange)
    ex.request = request
    ex.upstream_head = RequestHead(1, b"GET", b"/productpage", list(HEADERS))
    ex.telemetry = None
    ex.flags = []
    ex.status = 200
    ex.start = 1.0
    ex.upstream_start = 1.0005
    ex.bytes_received = 0
    ex.bytes_sent = 612
    ex.request_id = b"e3a741e1-24c1-4254-b91c-4c9f5ee1c134"
    ex.details = "via_upstream"
    ex.response = None
    ex.response_trailers = []
    return ex


def make_telemetry(
    loop: asyncio.AbstractEventLoop, access_log: str | None, environ: dict[str, str]
) -> Telemetry:
    flags = {"listen": "127.0.0.1:1", "upstream": "127.0.0.1:2", "access_log.path": access_log}
    return Telemetry(loop, build(None, {}, flags), 0, environ)


def observe(telemetry: Telemetry) -> Callable[[], None]:
    """One typical request through the hooks, as the runtime calls them."""
    downstream: Any = Downstream()
    request = RequestHead(1, b"GET", b"/productpage?u=1", HEADERS)

    def observed() -> None:
        ex = new_exchange(request)
        telemetry.request_start(downstream, ex)
        telemetry.request_done(downstream, ex, 1.0012)
        if telemetry.access_log is not None and len(telemetry.access_log.lines) > 256:
            telemetry.access_log.flush()  # the loop's timer does this in the proxy

    return observed


def best(function: Callable[[], object], requests: int) -> float:
    """Best of 5, microseconds of loop-thread CPU per call (timeit: GC off while timing)."""
    times = timeit.repeat(function, number=requests, repeat=5, timer=time.thread_time)
    return min(times) / requests * 1e6


def bare_cost(requests: int) -> float:
    """Building the exchange alone: subtracted from every row."""
    request = RequestHead(1, b"GET", b"/productpage?u=1", HEADERS)
    return best(lambda: new_exchange(request), requests)


def cost(access_log: str | None, environ: dict[str, str], requests: int, bare: float) -> float:
    """Microseconds of CPU per request spent in the observer (exchange set-up subtracted)."""
    loop = asyncio.new_event_loop()
    telemetry = make_telemetry(loop, access_log, environ)
    result = best(observe(telemetry), requests) - bare
    telemetry.close()
    loop.close()
    return result


# The demo's receiver, in a child process so that its CPU is not counted as ours.
_RECEIVER = """
import sys
from proxy.demo.trace_sink import TraceSink
sink = TraceSink()
print(sink.endpoint, flush=True)
sys.stdin.read()
with sink.lock:
    print(len(sink.spans), flush=True)
"""
_CHUNK = 100  # requests between turns of the loop
_DRAIN_LIMIT = 60.0  # seconds to wait for the last batches


class Receiver:
    """The OTLP/HTTP receiver process; `finish()` stops it and returns the spans it got."""

    def __init__(self, cpu: int | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if cpu is not None:
            os.sched_setaffinity(self.process.pid, {cpu})
        assert self.process.stdout is not None
        self.endpoint = self.process.stdout.readline().strip()
        assert self.endpoint.startswith("http://127.0.0.1:"), self.endpoint

    def finish(self) -> int:
        out, _ = self.process.communicate(timeout=30)
        return int(out.strip())


async def _drive(telemetry: Telemetry, requests: int) -> tuple[float, float]:
    """Run `requests` requests on the running loop; (thread, process) CPU seconds used."""
    tracer = telemetry.tracer
    assert tracer is not None and tracer.exporter is not None
    observed = observe(telemetry)
    room = tracer.max_queue - _CHUNK
    thread0, process0 = time.thread_time(), time.process_time()
    for _ in range(0, requests, _CHUNK):
        for _ in range(_CHUNK):
            observed()
        await asyncio.sleep(0)  # the loop's turn: finished exports, the batch timer
        # Pace to what the exporter carries, so every span is exported: a full queue drops
        # spans before they are encoded, which would make the row cheaper than real export.
        while len(tracer.pending) > room:
            await asyncio.sleep(0.0005)
    deadline = time.monotonic() + _DRAIN_LIMIT
    while (tracer.pending or tracer.exporting) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    return time.thread_time() - thread0, time.process_time() - process0


def exported_cost(
    access_log: str | None, environ: dict[str, str], requests: int, bare: float, cpu: int | None
) -> tuple[float, float, int]:
    """(loop-thread µs, whole-process µs, spans received) per request, best of 5 rounds,
    every span exported to a live OTLP/HTTP receiver."""
    receiver = Receiver(cpu)
    loop = asyncio.new_event_loop()
    # A short schedule delay: the last partial batch leaves soon after the run, not in 5 s.
    environ = {
        **environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    telemetry = make_telemetry(loop, access_log, environ)
    tracer = telemetry.tracer
    assert tracer is not None
    rounds = []
    try:
        for _ in range(5):
            gc.collect()
            gc.disable()  # as timeit does for the other rows
            try:
                rounds.append(loop.run_until_complete(_drive(telemetry, requests)))
            finally:
                gc.enable()
    finally:
        telemetry.close()
        loop.close()
        received = receiver.finish()
    expected = 5 * (requests // _CHUNK * _CHUNK)
    if not tracer.sampled == tracer.exported == received == expected or tracer.dropped:
        raise SystemExit(
            f"export incomplete: {tracer.sampled} sampled, {tracer.exported} exported, "
            f"{tracer.dropped} dropped, {received} received of {expected}"
        )
    per_request = requests // _CHUNK * _CHUNK
    thread = min(t for t, _ in rounds) / per_request * 1e6 - bare
    process = min(p for _, p in rounds) / per_request * 1e6 - bare
    return thread, process, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument(
        "--receiver-cpu", type=int, default=None, help="pin the OTLP receiver to this CPU"
    )
    args = parser.parse_args()
    log = str(Path(tempfile.mkdtemp()) / "access.log")
    none = {"OTEL_TRACES_EXPORTER": "none"}
    always = {"OTEL_TRACES_SAMPLER": "always_on"}
    cases = [
        ("default: metrics, 1% sampling, JSON access log to a file", log, {}),
        ("metrics, 1% sampling, no access log", None, {}),
        (
            "metrics only (OTEL_SDK_DISABLED=true), no access log",
            None,
            {"OTEL_SDK_DISABLED": "true"},
        ),
        (
            "100% sampling decision, no exporter (OTEL_TRACES_EXPORTER=none), JSON log",
            log,
            {**always, **none},
        ),
    ]
    bare = bare_cost(args.requests)
    for name, access_log, environ in cases:
        value = cost(access_log, environ, args.requests, bare)
        print(f"{value:6.2f} us/request  {name}", flush=True)
    thread, process, received = exported_cost(log, always, args.requests, bare, args.receiver_cpu)
    print(
        f"{thread:6.2f} us/request  100% sampling, exported to an OTLP/HTTP receiver, JSON log"
        f" (loop thread; {process:.2f} with the export and log threads;"
        f" {received} spans received)",
        flush=True,
    )


if __name__ == "__main__":
    main()
