"""The observer itself, driven with exchanges as the runtime builds them (no sockets)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config.load import build
from proxy.core.messages import RequestHead
from proxy.runtime.exchange import Exchange
from proxy.telemetry.pipeline import Telemetry


class FakeDownstream:
    listener_name = "explicit"
    destination: tuple[str, int] | None = ("10.0.0.7", 9080)
    client_address = b"10.0.0.9"
    remote_address = "10.0.0.9:51234"
    local_address = "10.0.0.8:15001"


def exchange(
    headers: list[tuple[bytes, bytes]], status: int = 200, flags: list[str] | None = None
) -> Any:
    ex: Any = Exchange.__new__(Exchange)
    ex.request = RequestHead(1, b"GET", b"/api?q=1", headers)
    ex.upstream_head = RequestHead(1, b"GET", b"/api?q=1", list(headers))
    ex.telemetry = None
    ex.flags = flags or []
    ex.status = status
    ex.start = 10.0
    ex.upstream_start = 10.001
    ex.bytes_received = 5
    ex.bytes_sent = 7
    ex.request_id = b"rid-1"
    ex.details = "via_upstream"
    ex.upstream_local = "10.0.0.8:40312"
    ex.transport_failure = None
    ex.response = None
    ex.response_trailers = []
    ex.grpc_messages = None
    return ex


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def telemetry(
    loop: asyncio.AbstractEventLoop, log: Path, fmt: str, env: dict[str, str]
) -> Telemetry:
    config = build(
        None,
        {},
        {
            "listen": "127.0.0.1:1",
            "upstream": "127.0.0.1:2",
            "access_log.path": str(log),
            "access_log.format": fmt,
        },
    )
    return Telemetry(loop, config, 0, {"OTEL_TRACES_EXPORTER": "none", **env})


def test_text_format_is_envoys_default(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    observer = telemetry(loop, tmp_path / "access.log", "text", {})
    ex = exchange(
        [(b"host", b"reviews:9080"), (b"user-agent", b"curl/8"), (b"x-forwarded-for", b"1.2.3.4")]
    )
    observer.request_start(FakeDownstream(), ex)  # type: ignore[arg-type]
    observer.request_done(FakeDownstream(), ex, 10.0123)  # type: ignore[arg-type]
    observer.close()
    line = (tmp_path / "access.log").read_text()
    pattern = (
        r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /api\?q=1 HTTP/1\.1" 200 - 5 7 12 11 '
        r'"1\.2\.3\.4" "curl/8" "rid-1" "reviews:9080" "10\.0\.0\.7:9080"\n$'
    )
    assert re.match(pattern, line), line


def test_json_escapes_and_local_replies(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    observer = telemetry(
        loop, tmp_path / "access.log", "json", {"OTEL_TRACES_SAMPLER": "always_on"}
    )
    downstream: Any = FakeDownstream()
    nasty = exchange([(b"host", b"h"), (b"user-agent", b'evil"\\\n\x01\xff agent')])
    observer.request_start(downstream, nasty)
    observer.request_done(downstream, nasty, 10.002)
    # A local reply before request_start (no route): no trace ids, still logged and counted.
    no_route = exchange([], status=404, flags=["NR"])
    no_route.request_id = b""
    no_route.details = "route_not_found"
    no_route.upstream_local = ""
    observer.request_done(downstream, no_route, 10.003)
    observer.close()
    first, second = (
        json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()
    )
    assert first["user_agent"] == 'evil"\\\n\x01\xff agent'
    assert len(first["trace_id"]) == 32 and len(first["span_id"]) == 16
    assert second["response_flags"] == "NR" and second["trace_id"] == ""
    assert second["request_id"] is None and second["authority"] is None
    assert second["response_code_details"] == "route_not_found"
    assert first["downstream_remote_address"] == second["downstream_remote_address"]
    assert first["downstream_remote_address"] == "10.0.0.9:51234"
    assert first["upstream_local_address"] == "10.0.0.8:40312"
    assert second["upstream_local_address"] is None  # answered without an upstream
    snapshot = observer.snapshot()
    codes = sorted((labels[-2], labels[-4], values[0]) for labels, values in snapshot.http.items())
    assert codes == [("200", "-", 1), ("404", "NR", 1)]
    # The sampled request left an exemplar with its trace id.
    assert [e[0] for e in snapshot.exemplars.values()] == [first["trace_id"]]


def test_trace_headers_replaced_not_duplicated(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    observer = telemetry(loop, tmp_path / "access.log", "json", {})
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ex = exchange([(b"host", b"h"), (b"traceparent", parent.encode()), (b"x-b3-sampled", b"1")])
    observer.request_start(FakeDownstream(), ex)  # type: ignore[arg-type]
    names = [name for name, _ in ex.upstream_head.headers]
    assert names.count(b"traceparent") == 1 and names.count(b"x-b3-sampled") == 1
    sent = dict(ex.upstream_head.headers)[b"traceparent"].decode()
    assert sent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and sent.endswith("-01")
    assert sent.split("-")[2] != "00f067aa0ba902b7"
    observer.close()


def test_stats_histogram_buckets_from_env(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    observer = telemetry(
        loop,
        tmp_path / "access.log",
        "json",
        {"PILOTFISH_STATS_HISTOGRAM_BUCKETS": '{"istiocustom": [2, 20]}'},
    )
    ex = exchange([(b"host", b"h")])
    observer.request_start(FakeDownstream(), ex)  # type: ignore[arg-type]
    observer.request_done(FakeDownstream(), ex, 10.012)  # type: ignore[arg-type]  # 12 ms
    observer.close()
    snapshot = observer.snapshot()
    assert snapshot.buckets == (2.0, 20.0)
    ((values),) = snapshot.http.values()
    assert values[observer.layout.duration : observer.layout.duration + 3] == [0, 1, 0]


def test_sdk_disabled_passes_context_through(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    observer = telemetry(loop, tmp_path / "access.log", "json", {"OTEL_SDK_DISABLED": "true"})
    parent = (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ex = exchange([(b"host", b"h"), parent])
    before = list(ex.upstream_head.headers)
    observer.request_start(FakeDownstream(), ex)  # type: ignore[arg-type]
    observer.request_done(FakeDownstream(), ex, 10.002)  # type: ignore[arg-type]
    observer.close()
    assert ex.upstream_head.headers == before  # forwarded as received, nothing added
    (line,) = (json.loads(text) for text in (tmp_path / "access.log").read_text().splitlines())
    assert line["trace_id"] == "" and line["span_id"] == ""
    assert not observer.snapshot().exemplars


def test_counts_and_sums_stay_exact_across_series_and_snapshots(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    # The last series' count and sums wait in native floats until another series is
    # counted or a snapshot is taken (Telemetry._flush_sums): none may be lost or doubled.
    observer = telemetry(loop, tmp_path / "access.log", "json", {})
    downstream: Any = FakeDownstream()

    def served(status: int, count: int) -> None:
        for _ in range(count):
            ex = exchange([(b"host", b"h")], status=status)
            observer.request_start(downstream, ex)
            observer.request_done(downstream, ex, 10.004)  # 4 ms each

    def totals() -> dict[str, list[float]]:
        snapshot = observer.snapshot()
        return {  # durations to the microsecond: (10.004 - 10.0) * 1000 is not exactly 4
            labels[-2]: [values[0], round(values[1], 6), values[2], values[3]]
            for labels, values in snapshot.http.items()
        }

    served(200, 3)
    served(503, 2)
    served(200, 1)
    assert totals() == {"200": [4, 16.0, 20, 28], "503": [2, 8.0, 10, 14]}
    assert totals() == {"200": [4, 16.0, 20, 28], "503": [2, 8.0, 10, 14]}  # read twice
    served(200, 2)
    served(503, 1)
    assert totals() == {"200": [6, 24.0, 30, 42], "503": [3, 12.0, 15, 21]}
    observer.close()


def test_histogram_buckets_stay_exact_across_buckets_series_and_snapshots(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    # Bucket hits of the last series wait in native counters (_BucketTally) until another
    # bucket or series is hit or a snapshot is taken: every request still lands in its
    # buckets once. A model counts the same requests directly.
    observer = telemetry(
        loop,
        tmp_path / "access.log",
        "json",
        {"PILOTFISH_STATS_HISTOGRAM_BUCKETS": '{"istiocustom": [2, 20]}'},
    )
    downstream: Any = FakeDownstream()
    layout = observer.layout
    rng = random.Random(11)
    model: dict[str, list[int]] = {}
    for step in range(400):
        status = rng.choice([200, 200, 200, 404])
        milliseconds = rng.choice([1, 1, 1, 5, 30])
        ex = exchange([(b"host", b"h")], status=status)
        ex.bytes_received = rng.choice([0, 0, 3, 5000])
        ex.bytes_sent = rng.choice([7, 7, 25])
        observer.request_start(downstream, ex)
        observer.request_done(downstream, ex, 10.0 + milliseconds / 1000)
        counts = model.setdefault(str(status), [0] * 9)
        counts[[1, 5, 30].index(milliseconds)] += 1
        counts[3 + (0 if ex.bytes_received < 2 else 1 if ex.bytes_received < 20 else 2)] += 1
        counts[6 + (0 if ex.bytes_sent < 2 else 1 if ex.bytes_sent < 20 else 2)] += 1
        if step % 97 == 0 or step == 399:
            snapshot = observer.snapshot()
            seen = {
                labels[-2]: [
                    *values[layout.duration : layout.duration + 3],
                    *values[layout.request_bytes : layout.request_bytes + 3],
                    *values[layout.response_bytes : layout.response_bytes + 3],
                ]
                for labels, values in snapshot.http.items()
            }
            assert seen == model, step
    observer.close()


@pytest.mark.parametrize("ratio", ["0", "0.25", "1"])
def test_new_traces_are_sampled_at_the_ratio_independently(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, ratio: str
) -> None:
    # The countdown (tracing.roots_to_skip) must sample as a fresh draw per trace would:
    # the share is the ratio, and a trace after a sampled one is no likelier sampled.
    random.seed(7)
    observer = telemetry(
        loop,
        tmp_path / "access.log",
        "json",
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio},
    )
    decisions = []
    for _ in range(20_000):
        ex = exchange([(b"host", b"h")])
        observer.request_start(FakeDownstream(), ex)  # type: ignore[arg-type]
        sent = dict(ex.upstream_head.headers)[b"traceparent"]
        assert sent.endswith(b"-01") == ex.telemetry.sampled
        decisions.append(ex.telemetry.sampled)
    observer.close()
    share = sum(decisions) / len(decisions)
    if ratio in ("0", "1"):
        assert share == float(ratio)
        return
    assert abs(share - 0.25) < 0.015  # about five standard deviations
    after_sampled = [b for a, b in itertools.pairwise(decisions) if a]
    assert abs(sum(after_sampled) / len(after_sampled) - 0.25) < 0.03
