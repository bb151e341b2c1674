"""The hand-written OTLP/HTTP exporter: its protobuf, decoded by opentelemetry-proto, and its POSTs."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxy.telemetry import otlp
from proxy.telemetry.identity import Identity
from proxy.telemetry.tracing import Tracer


def _decode(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def test_span_decodes_with_opentelemetry_proto() -> None:
    values = {
        "http.request.method": "GET",
        "http.response.status_code": 503,
        "big": 2**40,
        "negative": -5,
        "ratio": 0.25,
        "flag": True,
        "off": False,
        "ids": ["a", "ü"],
        "empty": "",
        "long": "x" * 300,
        "edge": "y" * 125,
        "unicode": "ünïcødé",
    }
    span = otlp.encode_span(
        "GET",
        otlp.SPAN_KIND_CLIENT,
        2**127 + 5,
        2**63 + 7,
        99,
        "a=1,b=2",
        10**18,
        10**18 + 5,
        values,
        True,
    )
    parts = otlp.request_parts(
        {"service.name": "reviews", "k8s.pod.name": "r-0"}, "pilotfish", "9.9"
    )
    request = _decode(otlp.encode_request(parts, [span, span]))
    (resource_spans,) = request.resource_spans
    assert {a.key: a.value.string_value for a in resource_spans.resource.attributes} == {
        "service.name": "reviews",
        "k8s.pod.name": "r-0",
    }
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("pilotfish", "9.9")
    assert len(scope_spans.spans) == 2
    decoded = scope_spans.spans[0]
    assert decoded.trace_id == (2**127 + 5).to_bytes(16, "big")
    assert decoded.span_id == (2**63 + 7).to_bytes(8, "big")
    assert decoded.parent_span_id == (99).to_bytes(8, "big")
    assert decoded.trace_state == "a=1,b=2"
    assert decoded.name == "GET" and decoded.kind == 3
    assert (decoded.start_time_unix_nano, decoded.end_time_unix_nano) == (10**18, 10**18 + 5)
    assert {a.key: _value(a.value) for a in decoded.attributes} == values
    assert decoded.status.code == 2
    assert decoded.flags == 0x300  # the parent is remote, as the SDK's encoder says


def test_root_span_without_error() -> None:
    span = otlp.encode_span("POST", otlp.SPAN_KIND_SERVER, 1, 2, 0, "", 5, 6, {}, False)
    decoded = _decode(otlp.encode_request(otlp.request_parts({}, "p", "1"), [span])).resource_spans[
        0
    ]
    (only,) = decoded.scope_spans[0].spans
    assert only.parent_span_id == b"" and only.trace_state == "" and only.status.code == 0
    assert only.kind == 2 and only.flags == 0x100


def test_resource_merges_env_as_the_sdk_does() -> None:
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "team=shop,service.name=x,bad,k%20=v%2C1",
        "OTEL_SERVICE_NAME": "svc",
    }
    merged = otlp.resource_attributes({"k8s.pod.name": "p"}, env)
    assert merged["team"] == "shop" and merged["k "] == "v,1"
    assert merged["service.name"] == "svc" and merged["k8s.pod.name"] == "p"
    assert merged["telemetry.sdk.language"] == "python"
    assert otlp.resource_attributes({"service.name": "ours"}, env)["service.name"] == "ours"


class _Collector:
    """A real OTLP/HTTP endpoint on loopback that answers `statuses` in turn, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = statuses.pop(0) if statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_export_posts_protobuf_with_headers_gzip_and_retry() -> None:
    collector = _Collector([503])
    try:
        exporter = otlp.OtlpHttpExporter(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}/base/",
                "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s%3Dcret,other=1",
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            }
        )
        body = otlp.encode_request(otlp.request_parts({}, "p", "1"), [])
        assert exporter.export(body, time.monotonic() + 5)  # 503 first, then 200 after 1 s
        assert len(collector.requests) == 2
        path, headers, sent = collector.requests[-1]
        assert path == "/base/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["content-encoding"] == "gzip" and headers["x-api-key"] == "s=cret"
        assert gzip.decompress(sent) == body
        # A refusal that is not retryable fails at once; so does a dead endpoint at its deadline.
        collector_400 = _Collector([400])
        try:
            traces = f"http://127.0.0.1:{collector_400.port}/v1/traces"
            assert not otlp.OtlpHttpExporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces}).export(
                body, time.monotonic() + 5
            )
        finally:
            collector_400.close()
    finally:
        collector.close()
    dead = otlp.OtlpHttpExporter(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}"}
    )
    started = time.monotonic()
    assert not dead.export(b"", started + 0.5)
    assert time.monotonic() - started < 2


def test_tracer_queue_bound_and_close_flushes() -> None:
    collector = _Collector([])
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_BSP_MAX_QUEUE_SIZE": "3",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
        }
        tracer = Tracer(Identity.from_env({}), env)
        tracer.exporting = True  # as if an export were in flight: spans only queue
        for n in range(5):
            tracer.record("GET", otlp.SPAN_KIND_SERVER, 1, n + 1, 0, b"k=v, ,x=y", 1, 2, {}, False)
        assert tracer.counters()["pilotfish_tracing_spans_sampled"] == 5
        assert tracer.counters()["pilotfish_tracing_spans_dropped"] == 2
        tracer.close()
        ((_, _, body),) = collector.requests
        spans = _decode(body).resource_spans[0].scope_spans[0].spans
        assert [s.span_id for s in spans] == [n.to_bytes(8, "big") for n in (1, 2, 3)]
        assert spans[0].trace_state == "k=v,x=y"
    finally:
        collector.close()
