"""Renders summed telemetry as Prometheus text 0.0.4 or OpenMetrics 1.0 (with exemplars).

prometheus-client does the formatting (escaping, OpenMetrics' rules) from metric
families built here at scrape time; nothing of it runs per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from proxy.telemetry import metrics as M
from proxy.telemetry.metrics import Snapshot

TEXT_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"


def _le(buckets: tuple[float, ...]) -> list[str]:
    return [floatToGoString(bound) for bound in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]


# Counters each worker keeps besides the Istio series: name (no _total) -> help.
COUNTERS: dict[str, str] = {
    "pilotfish_tracing_spans_sampled": "Requests sampled for tracing",
    "pilotfish_tracing_spans_exported": "Spans the OTLP exporter delivered",
    "pilotfish_tracing_spans_dropped": "Spans dropped: batch queue full or export failed",
    "pilotfish_access_log_lines": "Access log lines written",
    "pilotfish_access_log_dropped_lines": "Access log lines dropped because the writer fell behind",
    "pilotfish_telemetry_gather_failures": "Scrapes that could not read one worker's telemetry",
    "pilotfish_agent_app_scrapes": "Scrapes of the app's own metrics by the 15020 agent",
    "pilotfish_agent_app_scrape_failures": "Failed scrapes of the app's metrics by the 15020 agent",
}

# Prefixed, unlike prometheus-client's process_*: 15020 serves ours beside the app's
# own, and an app in Python or Go exports process_* names of its own.
_PROCESS: dict[str, tuple[str, str]] = {
    "cpu_seconds_total": (
        "counter",
        "User and system CPU time of all worker processes, in seconds",
    ),
    "resident_memory_bytes": ("gauge", "Resident memory of all worker processes, in bytes"),
    "virtual_memory_bytes": ("gauge", "Virtual memory of all worker processes, in bytes"),
    "open_fds": ("gauge", "Open file descriptors of all worker processes"),
    "max_fds": ("gauge", "Maximum open file descriptors (summed over worker processes)"),
    "start_time_seconds": ("gauge", "Start time of the proxy since the Unix epoch, in seconds"),
}


def wants_openmetrics(accept: bytes) -> bool:
    return b"application/openmetrics-text" in accept


def _histogram(
    name: str,
    text: str,
    series: Mapping[tuple[str, ...], list[float]],
    sum_index: int,
    first_bucket: int,
    exemplars: Mapping[tuple[tuple[str, ...], int], tuple[str, str, float, float]] | None,
    le: list[str],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text, labels=M.HTTP_LABELS)
    for labels, values in series.items():
        buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        running = 0.0
        for slot in range(len(le)):
            running += values[first_bucket + slot]
            exemplar = exemplars.get((labels, slot)) if exemplars else None
            if exemplar is None:
                buckets.append((le[slot], running))
            else:
                trace_id, span_id, value, when = exemplar
                buckets.append(
                    (
                        le[slot],
                        running,
                        Exemplar({"trace_id": trace_id, "span_id": span_id}, value, when),
                    )
                )
        family.add_metric(labels, buckets, values[sum_index])
    return family


_PROTOCOL = M.HTTP_LABELS.index("request_protocol")

def families(snapshot: Snapshot, stats: Mapping[str, tuple[str, str, int]]) -> Iterator[Metric]:
    """Every metric family: Istio's, the proxy's own stats, telemetry counters, process."""
    requests = CounterMetricFamily(*M.REQUESTS, labels=M.HTTP_LABELS)
    for labels, values in snapshot.http.items():
        requests.add_metric(labels, values[M.COUNT])
    yield requests
    layout = M.Layout(snapshot.buckets)
    le = _le(snapshot.buckets)
    http = snapshot.http
    yield _histogram(
        *M.REQUEST_DURATION, http, M.DURATION_SUM, layout.duration, snapshot.exemplars, le
    )
    yield _histogram(*M.REQUEST_BYTES, http, M.REQUEST_BYTES_SUM, layout.request_bytes, None, le)
    yield _histogram(*M.RESPONSE_BYTES, http, M.RESPONSE_BYTES_SUM, layout.response_bytes, None, le)
    # gRPC series only (request_protocol "grpc"), as Istio's: counted by HTTP/2 downstreams.
    for (name, text), index in (
        (M.REQUEST_MESSAGES, layout.request_messages),
        (M.RESPONSE_MESSAGES, layout.response_messages),
    ):
        family = CounterMetricFamily(name, text, labels=M.HTTP_LABELS)
        for labels, values in http.items():
            if labels[_PROTOCOL] == "grpc":
                family.add_metric(labels, values[index])
        yield family
    for (name, text), index in (
        (M.TCP_SENT_BYTES, M.TCP_SENT),
        (M.TCP_RECEIVED_BYTES, M.TCP_RECEIVED),
        (M.TCP_OPENED_CONNECTIONS, M.TCP_OPENED),
        (M.TCP_CLOSED_CONNECTIONS, M.TCP_CLOSED),
    ):
        family = CounterMetricFamily(name, text, labels=M.TCP_LABELS)
        for labels, values in snapshot.tcp.items():
            family.add_metric(labels, values[index])
        yield family
    for stat, (kind, text, count) in stats.items():
        name = f"pilotfish_{stat}"
        if kind == "counter":
            yield CounterMetricFamily(name, text, value=count)
        else:
            yield GaugeMetricFamily(name, text, value=count)
    for name, text in COUNTERS.items():
        yield CounterMetricFamily(name, text, value=snapshot.counters.get(name, 0))
    per_worker = CounterMetricFamily(
        "pilotfish_worker_downstream_rq",
        "HTTP requests each worker process served (they add up to istio_requests_total)",
        labels=("worker",),
    )
    for worker, served in sorted(snapshot.per_worker.items()):
        per_worker.add_metric((worker,), served)
    yield per_worker
    yield GaugeMetricFamily(
        "pilotfish_worker_processes",
        "Worker processes that answered this scrape",
        value=snapshot.workers,
    )
    for key, (kind, text) in _PROCESS.items():
        if key in snapshot.process:
            value = snapshot.process[key]
            if kind == "counter":
                yield CounterMetricFamily(f"pilotfish_process_{key}", text, value=value)
            else:
                yield GaugeMetricFamily(f"pilotfish_process_{key}", text, value=value)


class _Collector:
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render(
    snapshot: Snapshot,
    stats: Mapping[str, tuple[str, str, int]],
    openmetrics: bool,
    extra: Iterable[Metric] = (),
) -> tuple[bytes, bytes]:
    """(body, content type) in the format the scraper asked for; `extra` families follow ours."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector([*families(snapshot, stats), *extra]))
    if openmetrics:
        body: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
        return body, OPENMETRICS_CONTENT_TYPE
    return text_format.generate_latest(registry), TEXT_CONTENT_TYPE
