#!/usr/bin/env python3
"""Telemetry's own CPU per request: the observer's hooks alone, in-process, on thread CPU time.

meshbench measures the whole proxy, where telemetry is a few microseconds inside ~80 and
the machine's noise is larger than that; this isolates the hooks the runtime calls per
request (`request_start` + `request_done`) with a typical request, per configuration.

Usage: python bench/telemetry_bench.py [--requests 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
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


def cost(access_log: str | None, environ: dict[str, str], requests: int) -> float:
    """Microseconds of CPU per request spent in the observer (exchange set-up subtracted)."""
    loop = asyncio.new_event_loop()
    flags = {"listen": "127.0.0.1:1", "upstream": "127.0.0.1:2", "access_log.path": access_log}
    telemetry = Telemetry(loop, build(None, {}, flags), 0, environ)
    downstream: Any = Downstream()
    request = RequestHead(1, b"GET", b"/productpage?u=1", HEADERS)

    def observed() -> None:
        ex = new_exchange(request)
        telemetry.request_start(downstream, ex)
        telemetry.request_done(downstream, ex, 1.0012)
        if telemetry.access_log is not None and len(telemetry.access_log.lines) > 256:
            telemetry.access_log.flush()  # the loop's timer does this in the proxy

    def bare() -> None:
        new_exchange(request)

    def best(function: Any) -> float:
        times = timeit.repeat(function, number=requests, repeat=5, timer=time.thread_time)
        return min(times) / requests * 1e6

    result = best(observed) - best(bare)
    telemetry.close()
    loop.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
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
        ("100% sampling (spans built, OTLP export to nowhere), JSON log", log, always),
        (
            "100% sampling decision, no exporter (OTEL_TRACES_EXPORTER=none), JSON log",
            log,
            {**always, **none},
        ),
    ]
    for name, access_log, environ in cases:
        print(f"{cost(access_log, environ, args.requests):6.2f} us/request  {name}", flush=True)


if __name__ == "__main__":
    main()
