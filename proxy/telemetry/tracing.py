"""Spans for sampled requests, exported as OTLP/HTTP protobuf in batches; drops counted.

The sampling decision is ours, made per request from the caller's context and the
standard `OTEL_TRACES_SAMPLER`/`_ARG` variables (default parent-based, 1%), so that an
unsampled request (99% of them) costs nothing here. A sampled one becomes one span,
encoded when the request is over with its real start time and the ids that already
went upstream in `traceparent`, and queued (bounded) on the event loop; batches go to
the collector from a short-lived thread, so a slow or absent collector costs drops,
never loop time. `otlp.py` does the encoding and the POST without the OpenTelemetry
SDK, whose exporter stack cost about 13 MB of resident memory per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from typing import Final

from proxy import __version__
from proxy.config import env as env_names
from proxy.telemetry import otlp
from proxy.telemetry.identity import Identity
from proxy.telemetry.otlp import AttributeValue

log = logging.getLogger("pilotfish")
_random = random.random

# contracts.md "Tracing": 1% unless the caller decided.
DEFAULT_RATIO = 0.01
_TRUE = ("true", "1", "yes", "on")
# The batch processor's standard variables and the SDK's defaults for them.
_BSP = {
    "OTEL_BSP_SCHEDULE_DELAY": 5000,  # ms between exports
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,  # spans waiting; more are dropped
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,  # ms for one batch, retries included
}


class SpanKind:
    """trace.proto's span kinds the proxy emits."""

    SERVER: Final = otlp.SPAN_KIND_SERVER
    CLIENT: Final = otlp.SPAN_KIND_CLIENT


# roots_to_skip for a ratio of 0: more new traces than a worker will ever see.
_NEVER: Final = 1 << 62


def roots_to_skip(ratio: float) -> int:
    """How many new traces in a row to leave unsampled before sampling one.

    Geometric, the run of failures before a success of Bernoulli(`ratio`) trials: a
    countdown drawn from it samples each new trace with probability `ratio`,
    independently, as a draw per trace would, with one draw per sampled trace instead
    (about 190 instructions a request saved, with the default 1%).
    """
    if ratio >= 1.0:
        return 0
    if ratio <= 0.0:
        return _NEVER
    return min(int(math.log(1.0 - _random()) / math.log1p(-ratio)), _NEVER)


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


def _bsp_setting(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name, "").strip()
    try:
        value = int(raw) if raw else _BSP[name]
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, _BSP[name])
        return _BSP[name]
    return value if value > 0 else _BSP[name]


class Tracer:
    """One per worker process: encodes finished sampled spans and exports them in batches.

    A batch leaves when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans wait or
    `OTEL_BSP_SCHEDULE_DELAY` after the first of them; one export at a time, each in a
    daemon thread of its own (one every few seconds at most), so that exit never waits
    for a dead collector.
    """

    def __init__(
        self,
        identity: Identity,
        environ: Mapping[str, str],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.sampler = Sampler.from_env(environ)
        self.loop = loop
        resource = otlp.resource_attributes(
            {
                "service.name": identity.workload,
                "k8s.pod.name": identity.pod,
                "k8s.namespace.name": identity.namespace,
            },
            environ,
        )
        self.parts = otlp.request_parts(resource, "pilotfish", __version__)
        self.sampled = 0
        self.exported = 0
        self.dropped = 0  # queue full or export failed
        self.pending: list[bytes] = []
        self.exporting = False
        self._timer: asyncio.TimerHandle | None = None
        self.delay = _bsp_setting(environ, "OTEL_BSP_SCHEDULE_DELAY") / 1000.0
        self.max_queue = _bsp_setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE")
        self.batch_size = min(
            _bsp_setting(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"), self.max_queue
        )
        self.export_timeout = _bsp_setting(environ, "OTEL_BSP_EXPORT_TIMEOUT") / 1000.0
        exporter_name = environ.get(env_names.OTEL_TRACES_EXPORTER, "").strip().lower()
        # "none": context still propagates; nothing is exported.
        self.exporter = None if exporter_name == "none" else otlp.OtlpHttpExporter(environ)

    def record(
        self,
        name: str,
        kind: int,
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
        if self.exporter is None:
            return
        pending = self.pending
        if len(pending) >= self.max_queue:
            self.dropped += 1
            return
        state = _trace_state(tracestate) if tracestate else ""
        pending.append(
            otlp.encode_span(
                name,
                kind,
                trace_id,
                span_id,
                parent_span_id,
                state,
                start_ns,
                end_ns,
                attributes,
                error,
            )
        )
        if self.exporting:
            return
        if len(pending) >= self.batch_size:
            self._export()
        elif self._timer is None:
            loop = self.loop or asyncio.get_running_loop()
            self._timer = loop.call_later(self.delay, self._export)

    def _export(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        exporter = self.exporter
        if self.exporting or not self.pending or exporter is None:
            return
        batch = self.pending[: self.batch_size]
        del self.pending[: self.batch_size]
        body = otlp.encode_request(self.parts, batch)
        loop = self.loop or asyncio.get_running_loop()
        deadline = time.monotonic() + self.export_timeout
        count = len(batch)

        def send() -> None:
            delivered = exporter.export(body, deadline)
            # RuntimeError: the loop is closed, the process is exiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._exported, count, delivered)

        self.exporting = True
        threading.Thread(target=send, name="pilotfish-otlp", daemon=True).start()

    def _exported(self, count: int, delivered: bool) -> None:
        self.exporting = False
        if delivered:
            self.exported += count
        else:
            self.dropped += count
        if len(self.pending) >= self.batch_size:
            self._export()
        elif self.pending and self._timer is None:
            loop = self.loop or asyncio.get_running_loop()
            self._timer = loop.call_later(self.delay, self._export)

    def counters(self) -> dict[str, float]:
        return {
            "pilotfish_tracing_spans_sampled": self.sampled,
            "pilotfish_tracing_spans_exported": self.exported,
            "pilotfish_tracing_spans_dropped": self.dropped,
        }

    def close(self, timeout: float = 1.0) -> None:
        """Send what is queued, giving up after `timeout`: a dead collector must not hold exit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        exporter = self.exporter
        pending, self.pending = self.pending, []
        if exporter is None or not pending:
            return
        deadline = time.monotonic() + timeout
        bodies = [
            otlp.encode_request(self.parts, pending[i : i + self.batch_size])
            for i in range(0, len(pending), self.batch_size)
        ]

        def flush() -> None:
            for body in bodies:
                exporter.export(body, deadline)

        worker = threading.Thread(target=flush, name="pilotfish-trace-flush", daemon=True)
        worker.start()
        worker.join(timeout)


def _trace_state(raw: bytes) -> str:
    """The caller's tracestate as the span records it: validated and normalised by the
    OpenTelemetry API's TraceState (invalid members dropped, at most 32), as before.
    Imported here: only spans whose caller sent a tracestate need it."""
    from opentelemetry.trace import TraceState

    header: str = TraceState.from_header([raw.decode("latin-1")]).to_header()
    return header


def tracing_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get(env_names.OTEL_SDK_DISABLED, "").strip().lower() in _TRUE
