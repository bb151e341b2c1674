"""Istio's request and TCP metrics: declared once, accumulated per worker in plain lists.

The hot path never touches prometheus-client (its multiprocess mode locks and writes
an mmap per increment). Each worker keeps a dict from a cheap key (listener, host,
status, flags, gRPC status) to a list of numbers; labels are derived once per key.
At scrape time each worker turns its dict into a snapshot keyed by the full label
values, worker 0 adds the snapshots up and `exposition` renders the sum.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from proxy.telemetry import stats as S
from proxy.telemetry.identity import UNKNOWN, Identity

# contracts.md "Metrics": the bucket boundaries, ms for durations and bytes for sizes.
BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
SLOTS = len(BUCKETS) + 1  # the last slot counts what is above every boundary (+Inf only)

# Layout of one HTTP series' list of numbers (non-cumulative buckets).
COUNT = 0
DURATION_SUM = 1
REQUEST_BYTES_SUM = 2
RESPONSE_BYTES_SUM = 3
DURATION_BUCKETS = 4
REQUEST_BYTES_BUCKETS = DURATION_BUCKETS + SLOTS
RESPONSE_BYTES_BUCKETS = REQUEST_BYTES_BUCKETS + SLOTS
# gRPC messages each way (istio_request_messages, istio_response_messages): counted in
# gRPC series only, zero in the rest.
REQUEST_MESSAGES_AT = RESPONSE_BYTES_BUCKETS + SLOTS
RESPONSE_MESSAGES_AT = REQUEST_MESSAGES_AT + 1
HTTP_WIDTH = RESPONSE_MESSAGES_AT + 1

# Layout of one TCP series.
TCP_OPENED = 0
TCP_CLOSED = 1
TCP_SENT = 2
TCP_RECEIVED = 3
TCP_WIDTH = 4

# contracts.md "Metrics": the label set, in Istio's order.
PEER_LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
HTTP_LABELS = (*PEER_LABELS, "response_code", "grpc_response_status")
TCP_LABELS = PEER_LABELS

# A Host header is chosen by the client: past this many series per worker, new hosts
# are reported as "unknown" rather than letting label cardinality grow without bound.
MAX_SERIES = 5000

# (name without _total, help) as Istio documents them.
REQUESTS = ("istio_requests", "Counter incremented for every request handled by the proxy")
REQUEST_DURATION = ("istio_request_duration_milliseconds", "Duration of requests in milliseconds")
REQUEST_BYTES = ("istio_request_bytes", "Sizes of HTTP request bodies in bytes")
RESPONSE_BYTES = ("istio_response_bytes", "Sizes of HTTP response bodies in bytes")
REQUEST_MESSAGES = (
    "istio_request_messages",
    "gRPC messages sent by the client (HTTP/2 streams only)",
)
RESPONSE_MESSAGES = (
    "istio_response_messages",
    "gRPC messages sent by the server (HTTP/2 streams only)",
)
TCP_SENT_BYTES = ("istio_tcp_sent_bytes", "Bytes sent in response on a TCP connection")
TCP_RECEIVED_BYTES = ("istio_tcp_received_bytes", "Bytes received in request on a TCP connection")
TCP_OPENED_CONNECTIONS = ("istio_tcp_connections_opened", "TCP connections opened")
TCP_CLOSED_CONNECTIONS = ("istio_tcp_connections_closed", "TCP connections closed")


def split_host(authority: str) -> str:
    """The host of a Host/authority value: no port, no IPv6 brackets, lower case."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    if authority.count(":") == 1:
        return authority.partition(":")[0]
    return authority


def service_parts(host: str, own_namespace: str) -> tuple[str, str, str]:
    """(destination_service, destination_service_name, destination_service_namespace).

    `reviews.shop.svc.cluster.local` and `reviews.shop` name service `reviews` in `shop`;
    a bare `reviews` resolves in our own namespace, as Kubernetes DNS does. An address
    or an outside name is its own service, namespace unknown.
    """
    if not host:
        return UNKNOWN, UNKNOWN, UNKNOWN
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host, host, UNKNOWN
    labels = host.split(".")
    if len(labels) == 1:
        return host, host, own_namespace
    if len(labels) == 2 or labels[2] == "svc":
        return host, labels[0], labels[1]
    return host, host, UNKNOWN


class LabelMaker:
    """Label values: ours on one side, the peer's on the other (`unknown` unless the peer
    told us who it is, proxy.telemetry.peer)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._ours = identity.label_values()
        self._unknown_peer = (UNKNOWN,) * len(self._ours)

    def peer_labels(
        self,
        outbound: bool,
        host: str,
        protocol: str,
        flags: str,
        peer: tuple[str, ...] | None = None,
    ) -> tuple[str, ...]:
        service, name, namespace = service_parts(host, self.identity.namespace)
        other = self._unknown_peer if peer is None else peer
        if outbound:
            source, destination = self._ours, other
            reporter, security = "source", UNKNOWN
        else:
            source, destination = other, self._ours
            reporter, security = "destination", "none"  # plaintext: no mTLS here
        return (
            reporter,
            *source,
            *destination[:5],
            service,
            name,
            namespace,
            *destination[5:],
            protocol,
            flags,
            security,
        )


def empty_http() -> list[float]:
    return [0] * HTTP_WIDTH


class Layout:
    """Where the numbers of an HTTP series live, for one set of bucket boundaries."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.slots = len(buckets) + 1
        self.duration = DURATION_BUCKETS
        self.request_bytes = DURATION_BUCKETS + self.slots
        self.response_bytes = DURATION_BUCKETS + 2 * self.slots
        self.request_messages = DURATION_BUCKETS + 3 * self.slots
        self.response_messages = self.request_messages + 1
        self.width = self.response_messages + 1

    def empty(self) -> list[float]:
        return [0] * self.width


def parse_buckets(raw: str | None) -> tuple[float, ...] | None:
    """Istio's `sidecar.istio.io/statsHistogramBuckets` value, as the injector passes it on:
    `{"istiocustom": [1, 5, 10, ...]}` sets the boundaries of the istio_* histograms.
    None when unset or unusable (the contract's buckets then apply)."""
    if not raw or not raw.strip():
        return None
    try:
        data = json.loads(raw)
        bounds = data["istiocustom"]
        values = tuple(sorted({float(b) for b in bounds}))
    except (ValueError, TypeError, KeyError):
        return None
    if not values or any(not 0 < b < float("inf") for b in values):
        return None
    return values


def empty_tcp() -> list[float]:
    return [0] * TCP_WIDTH


class Snapshot:
    """Everything one or more workers counted, keyed by full label values; adds up."""

    def __init__(self) -> None:
        self.http: dict[tuple[str, ...], list[float]] = {}
        self.tcp: dict[tuple[str, ...], list[float]] = {}
        # (labels, duration bucket) -> (trace_id, span_id, value ms, unix time)
        self.exemplars: dict[tuple[tuple[str, ...], int], tuple[str, str, float, float]] = {}
        self.counters: dict[str, float] = {}
        self.process: dict[str, float] = {}
        self.workers = 0
        # Requests each worker process counted, by worker index (Envoy's per-worker stats).
        self.per_worker: dict[str, float] = {}
        # Every worker of a proxy reads the same env, so all snapshots share boundaries.
        self.buckets: tuple[float, ...] = BUCKETS
        # The proxy's own stats (proxy.telemetry.stats), summed like everything else.
        self.stats: list[int] = [0] * len(S.NAMES)

    def add(self, other: Snapshot) -> None:
        for table, mine in ((other.http, self.http), (other.tcp, self.tcp)):
            for labels, values in table.items():
                current = mine.get(labels)
                if current is None:
                    mine[labels] = list(values)
                else:
                    for index, value in enumerate(values):
                        current[index] += value
        for key, exemplar in other.exemplars.items():
            known = self.exemplars.get(key)
            if known is None or known[3] < exemplar[3]:
                self.exemplars[key] = exemplar
        for name, value in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        for name, value in other.process.items():
            if name == "start_time_seconds":
                known_start = self.process.get(name)
                self.process[name] = value if known_start is None else min(known_start, value)
            else:
                self.process[name] = self.process.get(name, 0) + value
        self.workers += other.workers
        for worker, count in other.per_worker.items():
            self.per_worker[worker] = self.per_worker.get(worker, 0) + count
        self.buckets = other.buckets
        self.stats = [mine + theirs for mine, theirs in zip(self.stats, other.stats, strict=True)]

    def to_json(self) -> dict[str, Any]:
        return {
            "http": [[list(k), v] for k, v in self.http.items()],
            "tcp": [[list(k), v] for k, v in self.tcp.items()],
            "exemplars": [[list(k[0]), k[1], *v] for k, v in self.exemplars.items()],
            "counters": self.counters,
            "process": self.process,
            "workers": self.workers,
            "buckets": list(self.buckets),
            "per_worker": self.per_worker,
            "stats": self.stats,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        snapshot = cls()
        snapshot.http = {tuple(k): list(v) for k, v in data["http"]}
        snapshot.tcp = {tuple(k): list(v) for k, v in data["tcp"]}
        snapshot.exemplars = {
            (tuple(labels), int(bucket)): (str(trace), str(span), float(value), float(when))
            for labels, bucket, trace, span, value, when in data["exemplars"]
        }
        snapshot.counters = {str(k): float(v) for k, v in data["counters"].items()}
        snapshot.process = {str(k): float(v) for k, v in data["process"].items()}
        snapshot.workers = int(data["workers"])
        snapshot.per_worker = {str(k): float(v) for k, v in data.get("per_worker", {}).items()}
        snapshot.buckets = tuple(float(b) for b in data.get("buckets", BUCKETS))
        snapshot.stats = [int(value) for value in data["stats"]]
        return snapshot
