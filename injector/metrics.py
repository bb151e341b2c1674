"""The injector's own metrics, declared once in one registry (no lookups by name later)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from injector import policy, review

# Milliseconds matter here: the target is 5 ms p99, and the API server gives up at 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0)
RESULTS = (review.INJECTED, review.SKIPPED, review.IGNORED, review.DENIED, review.FAILED,
           review.INVALID)
FAILURE_REASONS = ("content-type", "empty", "malformed", "too-large", "template", "internal")
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class InjectorMetrics:
    registry: CollectorRegistry
    requests: Counter
    injected: Counter
    skipped: Counter
    denied: Counter
    failed: Counter
    latency: Histogram
    cert_reloads: Counter

    def record(self, outcome: review.Outcome, seconds: float) -> None:
        self.requests.labels(outcome.result).inc()
        self.latency.observe(seconds)
        if outcome.result == review.INJECTED:
            self.injected.inc()
        elif outcome.result == review.SKIPPED:
            self.skipped.labels(outcome.reason).inc()
        elif outcome.result == review.DENIED:
            self.denied.labels(outcome.reason).inc()
        elif outcome.result in (review.FAILED, review.INVALID):
            self.failed.labels(outcome.reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def make_metrics() -> InjectorMetrics:
    registry = CollectorRegistry()
    metrics = InjectorMetrics(
        registry=registry,
        requests=Counter("pilotfish_injector_requests", "AdmissionReviews answered, by result",
                         ["result"], registry=registry),
        injected=Counter("pilotfish_injector_injected", "Pods given a sidecar",
                         registry=registry),
        skipped=Counter("pilotfish_injector_skipped", "Pods left alone, by reason", ["reason"],
                        registry=registry),
        denied=Counter("pilotfish_injector_denied", "Pods refused (bad annotation or shape)",
                       ["reason"], registry=registry),
        failed=Counter("pilotfish_injector_failed", "Reviews that failed, by reason",
                       ["reason"], registry=registry),
        latency=Histogram("pilotfish_injector_review_duration_seconds",
                          "Time to decide and patch one review", buckets=LATENCY_BUCKETS,
                          registry=registry),
        cert_reloads=Counter("pilotfish_injector_cert_reloads", "TLS pair reloads, by result",
                             ["result"], registry=registry),
    )
    # Create every label child now, so each series is exported at 0 from the start.
    for result in RESULTS:
        metrics.requests.labels(result)
    for reason in policy.SKIP_REASONS:
        metrics.skipped.labels(reason)
    for reason in ("annotation", "pod"):
        metrics.denied.labels(reason)
    for reason in FAILURE_REASONS:
        metrics.failed.labels(reason)
    for result in ("ok", "error"):
        metrics.cert_reloads.labels(result)
    return metrics
