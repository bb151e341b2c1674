"""The proxy's configuration contract: every setting, its type and its default (with why).

A `ProxyConfig` is built once at start-up by `proxy.config.load` and never changes;
the runtime reads it, nothing writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from proxy.core.addresses import address_text

Mode = Literal["sidecar", "explicit"]
CodecName = Literal["llhttp", "h11"]
LogFormat = Literal["json", "text"]
Direction = Literal["outbound", "inbound"]


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return address_text(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Defaults are Envoy's (and Istio's where Istio overrides Envoy)."""

    # 10 s: Istio's default cluster connect_timeout.
    connect: float = 10.0
    # 15 s: Envoy's route timeout, from the end of the request to the end of the response.
    route: float = 15.0
    # 1 h: Envoy's HTTP connection manager idle_timeout for downstream connections; 0: off.
    downstream_idle: float = 3600.0
    # 1 h: Envoy's cluster idle_timeout for pooled upstream connections; 0: off.
    upstream_idle: float = 3600.0
    # 5 min: Envoy's stream_idle_timeout (no bytes either way on an open stream); 0: off.
    stream_idle: float = 300.0
    # 5 s: Istio's terminationDrainDuration.
    drain: float = 5.0
    # A client that sends nothing for this long is treated as server-first opaque TCP
    # (MySQL, SMTP greet first); Istio's protocol detection waited 100 ms.
    sniff: float = 0.1


@dataclass(frozen=True, slots=True)
class Limits:
    """Circuit breakers and codec limits, per worker and destination."""

    # 1024: Envoy's circuit-breaker defaults for max_connections and max_pending_requests.
    max_upstream_connections: int = 1024
    max_pending_requests: int = 1024
    # 60 KiB: Envoy's max_request_headers_kb.
    max_request_headers_bytes: int = 60 * 1024
    # 8 KiB: nginx's large_client_header_buffers line size.
    max_request_target_bytes: int = 8 * 1024
    # 100: Envoy's max_headers_count.
    max_request_headers_count: int = 100
    # 3: Envoy's max_retries circuit breaker (retries running at once, per destination).
    max_retries: int = 3
    # Bytes buffered per direction before the reading side is paused (Envoy's 1 MiB
    # per_connection_buffer_limit_bytes, smaller because Python objects cost more).
    buffer_high_water: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class Retries:
    """Router retries of connect failures and 503 answers (proxy.core.retry); contracts'
    defaults: one retry, fully jittered back-off from 25 ms, at most 250 ms."""

    # 0 turns retries off.
    attempts: int = 1
    backoff_base: float = 0.025
    backoff_max: float = 0.25


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    # None: off; "-": stdout. `build` makes it "-" in sidecar mode unless set.
    path: str | None = None
    format: LogFormat = "json"


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    # Which side of a call an explicit-mode listener reports as: "outbound" (the
    # client's proxy: reporter="source", client spans) or "inbound" (the server's).
    explicit_direction: Direction = "outbound"
    # Istio's peer metadata exchange (proxy.telemetry.peer): our workload's names go in
    # two headers to in-cluster destinations, and the peer's fill the other side's labels.
    peer_metadata: bool = True


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    mode: Mode = "sidecar"
    # explicit mode: one listener, every request to one upstream.
    listen: Address | None = None
    upstream: Address | None = None
    # 2: Istio's default proxy concurrency.
    concurrency: int = 2
    codec: CodecName = "llhttp"
    # The proxy's own log (stderr); request logs are the access log's business.
    log_level: str = "info"
    admin: Address = field(default_factory=lambda: Address("127.0.0.1", 15000))
    # sidecar-mode ports, as in the contract (Istio's numbers).
    outbound_port: int = 15001
    inbound_port: int = 15006
    agent_port: int = 15020
    health_port: int = 15021
    prometheus_port: int = 15090
    # Inbound traffic reaches the app from this address, which capture exempts.
    inbound_source: str = "127.0.0.6"
    # Destination ports whose protocol is HTTP/2 (Istio infers it from Service port names
    # `http2-*`/`grpc-*` or `appProtocol: http2|grpc`; the sidecar has no Kubernetes API, so
    # it is told). HTTP/1.1 requests to these ports go upstream over HTTP/2 (h2c). The port
    # is the original destination's (outbound), the app's (inbound) or --upstream's
    # (explicit). Empty: HTTP/2 upstream only for HTTP/2 clients and gRPC, as without it.
    upstream_http2_ports: tuple[int, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    retries: Retries = field(default_factory=Retries)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    # Where the file came from, for messages; not a setting.
    source: str = "<defaults>"
