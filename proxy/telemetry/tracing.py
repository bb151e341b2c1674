"""Spans for sampled requests through the OpenTelemetry SDK: OTLP/HTTP, batched, drops counted.

The sampling decision is ours, made per request from the caller's context and the
standard `OTEL_TRACES_SAMPLER`/`_ARG` variables (default parent-based, 1%), so that an
unsampled request (99% of them) never touches the SDK. A sampled one becomes one span,
created when the request is over with its real start time and the ids that already
went upstream in `traceparent`; the SDK's BatchSpanProcessor queues it (bounded) and
its thread exports it, so a slow or absent collector costs drops, never loop time.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from proxy import __version__
from proxy.config import env as env_names
from proxy.telemetry.identity import Identity

log = logging.getLogger("pilotfish")
_random = random.random
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)

# contracts.md "Tracing": 1% unless the caller decided.
DEFAULT_RATIO = 0.01
_TRUE = ("true", "1", "yes", "on")


class Sampler:
    """The parent's decision when there is one (parent-based), else a ratio of new traces.

    The ratio draws a random number instead of reading the trace id's low bits as
    OTel's TraceIdRatioBased does: the same odds, without turning the hex id into an
    int per request. Consistency along a trace comes from the parent-based rule.
    """

    def __init__(self, parent_based: bool, ratio: float) -> None:
        self.parent_based = parent_based
        self.ratio = min(max(ratio, 0.0), 1.0)

    def root(self) -> bool:
        return _random() < self.ratio

    def decide(self, parent_sampled: bool | None) -> bool:
        if self.parent_based and parent_sampled is not None:
            return parent_sampled
        return _random() < self.ratio

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Sampler:
        name = (
            environ.get(env_names.OTEL_TRACES_SAMPLER, "").strip().lower()
            or "parentbased_traceidratio"
        )
        raw_arg = environ.get(env_names.OTEL_TRACES_SAMPLER_ARG, "").strip()
        try:
            ratio = float(raw_arg) if raw_arg else DEFAULT_RATIO
        except ValueError:
            log.warning(
                "%s=%r is not a number; using %s",
                env_names.OTEL_TRACES_SAMPLER_ARG,
                raw_arg,
                DEFAULT_RATIO,
            )
            ratio = DEFAULT_RATIO
        table = {
            "always_on": (False, 1.0),
            "always_off": (False, 0.0),
            "traceidratio": (False, ratio),
            "parentbased_always_on": (True, 1.0),
            "parentbased_always_off": (True, 0.0),
            "parentbased_traceidratio": (True, ratio),
        }
        if name not in table:
            log.warning(
                "%s=%r is not supported; using parentbased_traceidratio",
                env_names.OTEL_TRACES_SAMPLER,
                name,
            )
            name = "parentbased_traceidratio"
        return cls(*table[name])


class _CountingExporter(SpanExporter):
    """Counts what the wrapped exporter delivered and what it failed to (those spans are lost)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the export thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting spans it drops because its queue is full."""

    dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        batch = self._batch_processor
        if len(batch._queue) >= batch._max_queue_size:
            self.dropped += 1  # the deque's maxlen pushes the oldest span out
        super().on_end(span)


class Tracer:
    """One per worker process: the SDK's batch processor and OTLP exporter, fed finished spans.

    A span is handed over as the SDK's own ReadableSpan, built directly with the ids
    already sent upstream and the request's real start and end: going through
    `Tracer.start_span` would re-validate every attribute, run a sampler we have
    already run, and cost several times more per sampled request.
    """

    def __init__(
        self, identity: Identity, environ: Mapping[str, str], exporter: SpanExporter | None = None
    ) -> None:
        self.sampler = Sampler.from_env(environ)
        attributes: dict[str, AttributeValue] = {
            "service.name": identity.workload,
            "k8s.pod.name": identity.pod,
            "k8s.namespace.name": identity.namespace,
        }
        self.resource = Resource.create(attributes)
        self.scope = InstrumentationScope("pilotfish", __version__)
        self.sampled = 0
        self.exporter: _CountingExporter | None = None
        self.processor: _CountingProcessor | None = None
        exporter_name = environ.get(env_names.OTEL_TRACES_EXPORTER, "").strip().lower()
        if exporter is None and exporter_name == "none":
            return  # context still propagates; nothing is exported
        self.exporter = _CountingExporter(exporter or OTLPSpanExporter())
        self.processor = _CountingProcessor(self.exporter)

    def record(
        self,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        parent_span_id: int,
        tracestate: bytes | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttributeValue],
        error: bool,
    ) -> None:
        """One finished, sampled span with the given ids (runs on the loop thread only)."""
        self.sampled += 1
        processor = self.processor
        if processor is None:
            return
        state = (
            trace_api.TraceState.from_header([tracestate.decode("latin-1")]) if tracestate else None
        )
        parent = (
            trace_api.SpanContext(trace_id, parent_span_id, True, _SAMPLED, state)
            if parent_span_id
            else None
        )
        span = ReadableSpan(
            name=name,
            context=trace_api.SpanContext(trace_id, span_id, False, _SAMPLED, state),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            kind=kind,
            status=_ERROR if error else _UNSET,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self.scope,
        )
        processor.on_end(span)

    def counters(self) -> dict[str, float]:
        exported = self.exporter.exported if self.exporter else 0
        failed = self.exporter.failed if self.exporter else 0
        dropped = self.processor.dropped if self.processor else 0
        return {
            "pilotfish_tracing_spans_sampled": self.sampled,
            "pilotfish_tracing_spans_exported": exported,
            "pilotfish_tracing_spans_dropped": dropped + failed,
        }

    def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued, giving up after `timeout`: a dead collector must not hold exit."""
        processor = self.processor
        if processor is None:
            return
        worker = threading.Thread(
            target=processor.shutdown, name="pilotfish-trace-flush", daemon=True
        )
        worker.start()
        worker.join(timeout)


def tracing_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get(env_names.OTEL_SDK_DISABLED, "").strip().lower() in _TRUE
