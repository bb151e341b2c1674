"""client -> sidecar A (outbound) -> sidecar B (inbound) -> server, traced into a real OTLP receiver."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.telemetry.servers import (
    OtlpReceiver,
    Sidecar,
    Upstream,
    raw_request,
    tmpdir,
    wait_until,
)

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


class Chain:
    def __init__(self, tmp: Path) -> None:
        self.receiver = OtlpReceiver()
        self.server = Upstream()
        otlp = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.receiver.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        # Default sampler (parent-based, 1%): spans appear because the caller sampled.
        self.b = Sidecar(tmp, "reviews", self.server.port, env={**otlp, "PILOTFISH_EXPLICIT_DIRECTION": "inbound"})
        self.a = Sidecar(tmp, "productpage", self.b.port, env=otlp)

    def close(self) -> None:
        self.a.stop()
        self.b.stop()
        self.server.close()
        self.receiver.close()

    def spans_of(self, trace_id: str, count: int) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [s for s in self.receiver.spans if s["trace_id"] == trace_id]

        wait_until(lambda: len(found()) >= count, 15, f"{count} spans of trace {trace_id}", step=0.1)
        return found()


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    chain = Chain(tmpdir("pf-trace-"))
    yield chain
    chain.close()


def _check_chain(chain: Chain, trace_id: str, caller_span: str, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spans = chain.spans_of(trace_id, 2)
    assert len(spans) == 2, spans
    (client,) = [s for s in spans if s["resource"]["service.name"] == "productpage"]
    (server,) = [s for s in spans if s["resource"]["service.name"] == "reviews"]
    assert client["kind"] == SPAN_KIND_CLIENT and server["kind"] == SPAN_KIND_SERVER
    assert client["parent_span_id"] == caller_span
    assert server["parent_span_id"] == client["span_id"]
    assert client["resource"]["k8s.pod.name"] == "productpage-0"
    assert server["resource"]["k8s.namespace.name"] == "shop"
    for span in (client, server):
        assert span["name"] == "GET"
        assert span["attributes"]["http.request.method"] == "GET"
        assert span["attributes"]["http.response.status_code"] == 200
        assert span["attributes"]["http.request.header.x-request-id"] == [request_id]
        assert span["start"] <= span["end"]  # uvloop's clock ticks in milliseconds
    assert client["attributes"]["url.full"].endswith("/hello?x=1")
    assert server["attributes"]["url.path"] == "/hello" and server["attributes"]["url.query"] == "x=1"
    # The client span holds the server span, within the millisecond ticks of the two clocks
    # and the wall-clock offset each sidecar takes once at start (a busy 2-core machine can
    # deschedule a process between the two clock reads: 3 ms was seen to flake in CI).
    slack = 10_000_000
    assert client["start"] <= server["start"] + slack and server["end"] <= client["end"] + slack
    # The access logs: each sidecar's line carries the trace and its own span.
    for sidecar, span in ((chain.a, client), (chain.b, server)):

        def line(sidecar: Sidecar = sidecar) -> list[dict[str, Any]]:
            return [entry for entry in sidecar.log_lines() if entry["trace_id"] == trace_id]

        wait_until(lambda: bool(line()), 5, "the access log line", step=0.1)
        (entry,) = line()
        assert entry["span_id"] == span["span_id"]
        assert entry["request_id"] == request_id
        assert entry["response_code"] == 200 and entry["path"] == "/hello?x=1"
    return client, server


def test_w3c_caller(chain: Chain) -> None:
    trace_id, caller_span, request_id = secrets.token_hex(16), secrets.token_hex(8), "w3c-req-1"
    headers = {"traceparent": f"00-{trace_id}-{caller_span}-01", "tracestate": "vendor=x", "x-request-id": request_id}
    assert raw_request(chain.a.port, "/hello?x=1", headers) == 200
    _, server = _check_chain(chain, trace_id, caller_span, request_id)
    seen = chain.server.seen[-1]
    assert seen["traceparent"] == f"00-{trace_id}-{server['span_id']}-01"
    assert seen["tracestate"] == "vendor=x"
    assert seen["x-request-id"] == request_id
    assert "x-b3-traceid" not in seen


def test_b3_multi_caller(chain: Chain) -> None:
    trace_id, caller_span, request_id = secrets.token_hex(16), secrets.token_hex(8), "b3-req-1"
    headers = {"x-b3-traceid": trace_id, "x-b3-spanid": caller_span, "x-b3-sampled": "1", "x-request-id": request_id}
    assert raw_request(chain.a.port, "/hello?x=1", headers) == 200
    client, server = _check_chain(chain, trace_id, caller_span, request_id)
    seen = chain.server.seen[-1]
    assert seen["x-b3-traceid"] == trace_id and seen["x-b3-spanid"] == server["span_id"]
    assert seen["x-b3-parentspanid"] == client["span_id"] and seen["x-b3-sampled"] == "1"
    assert seen["traceparent"] == f"00-{trace_id}-{server['span_id']}-01"


def test_b3_single_header_64_bit_trace_id(chain: Chain) -> None:
    short, caller_span = secrets.token_hex(8), secrets.token_hex(8)
    trace_id = "0" * 16 + short  # widened to 128 bits, as Zipkin does
    assert raw_request(chain.a.port, "/hello?x=1", {"b3": f"{short}-{caller_span}-1", "x-request-id": "b3s"}) == 200
    _, server = _check_chain(chain, trace_id, caller_span, "b3s")
    assert chain.server.seen[-1]["b3"].startswith(f"{trace_id}-{server['span_id']}-1")


def test_unsampled_caller_is_respected_and_context_still_flows(chain: Chain) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{trace_id}-{caller_span}-00"}
    assert raw_request(chain.a.port, "/hello", headers) == 200
    seen = chain.server.seen[-1]
    assert seen["traceparent"].startswith(f"00-{trace_id}-") and seen["traceparent"].endswith("-00")
    # A sampled request sent after it is exported; the unsampled one never is.
    sampled = secrets.token_hex(16)
    raw_request(chain.a.port, "/hello", {"traceparent": f"00-{sampled}-{caller_span}-01"})
    chain.spans_of(sampled, 2)
    assert not [s for s in chain.receiver.spans if s["trace_id"] == trace_id]
    # Without any context, the 1% default mostly says no, but the ids go upstream anyway.
    raw_request(chain.a.port, "/hello")
    assert chain.server.seen[-1]["traceparent"].startswith("00-")
    assert chain.server.seen[-1]["x-request-id"]


def test_error_span_and_access_log_fields(chain: Chain) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    # 500, not 503: a 503 would be retried by the caller's sidecar (test_retries covers that).
    assert raw_request(chain.a.port, "/status/500", {"traceparent": f"00-{trace_id}-{caller_span}-01"}) == 500
    spans = chain.spans_of(trace_id, 2)
    assert all(s["status"] == STATUS_ERROR and s["attributes"]["error.type"] == "500" for s in spans)
    contract = {
        "start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
        "response_code_details", "connection_termination_details", "bytes_received", "bytes_sent",
        "duration", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
        "upstream_host", "upstream_cluster", "upstream_local_address", "downstream_local_address",
        "downstream_remote_address", "requested_server_name", "upstream_transport_failure_reason",
        "@timestamp", "trace_id", "span_id",
    }  # fmt: skip
    for sidecar in (chain.a, chain.b):
        wait_until(lambda: any(e["trace_id"] == trace_id for e in sidecar.log_lines()), 5, "log line")  # noqa: B023
        lines = sidecar.log_lines()
        assert lines
        for entry in lines:
            assert set(entry) == contract, set(entry) ^ contract
        (entry,) = [e for e in lines if e["trace_id"] == trace_id]
        assert entry["response_code"] == 500 and entry["response_flags"] == "-"
        assert entry["protocol"] == "HTTP/1.1" and entry["method"] == "GET"
        assert entry["@timestamp"].endswith("Z") and entry["duration"] >= 0
    # B's log shows the hop from A: X-Forwarded-For and the upstream it called.
    (entry,) = [e for e in chain.b.log_lines() if e["trace_id"] == trace_id]
    assert entry["x_forwarded_for"] == "127.0.0.1"
    assert entry["upstream_host"] == f"127.0.0.1:{chain.server.port}"
    assert entry["upstream_cluster"].startswith("inbound|")


def test_collector_down_keeps_serving_and_counts_drops(tmp_path: Path) -> None:
    server = Upstream()
    closed = OtlpReceiver()
    closed.close()  # a port nothing listens on any more
    sidecar = Sidecar(
        tmp_path,
        "lonely",
        server.port,
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed.port}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "OTEL_BSP_MAX_QUEUE_SIZE": "16",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
        concurrency=1,
    )
    try:
        for _ in range(120):
            assert raw_request(sidecar.port, "/hello") == 200

        def dropped() -> float:
            for line in sidecar.metrics().splitlines():
                if line.startswith("pilotfish_tracing_spans_dropped_total "):
                    return float(line.split()[1])
            return 0.0

        wait_until(lambda: dropped() >= 100, 15, "dropped spans counted", step=0.2)
        assert "pilotfish_tracing_spans_sampled_total 120.0" in sidecar.metrics()
    finally:
        sidecar.stop()
        server.close()
