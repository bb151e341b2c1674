"""The proxy's own stats in Envoy's vocabulary, declared once, summed across worker processes.

Every counter and gauge is declared here at start-up (Envoy's ALL_*_STATS idea). Each
worker counts into its own `Stats` (`new_stats()`), one native attribute per stat: the
hot path does `stats.upstream_rq_total += 1` (no locks, no lookups by name, nothing
shared). The admin (worker 0) sums every worker's `values()` when it is read, over the
same gather as the Prometheus metrics (`proxy.telemetry.gather`), so a read counts
everything that finished before it.

Why not a table in shared memory, which the admin could read without asking: each
increment of a memoryview of int64 unpacks and packs a C integer, about 600
instructions, and an HTTP/1 request makes ten of them (7% of its CPU). A plain list of
ints cost about 160 an increment (the boxed int taken out, added to, put back).
"""

from __future__ import annotations

# (name, kind, help). Gauges are per-worker values that sum to the process total.
DECLARED: tuple[tuple[str, str, str], ...] = (
    ("downstream_cx_total", "counter", "Downstream connections accepted"),
    ("downstream_cx_active", "gauge", "Downstream connections open"),
    ("downstream_cx_http1_total", "counter", "Downstream connections that spoke HTTP/1"),
    ("downstream_cx_http2_total", "counter", "Downstream connections that sent the HTTP/2 preface"),
    ("downstream_cx_tcp_total", "counter", "Downstream connections passed through as opaque TCP"),
    (
        "downstream_cx_protocol_error",
        "counter",
        "Downstream connections closed for a protocol error",
    ),
    ("downstream_cx_drain_close", "counter", "Downstream connections closed because of draining"),
    ("downstream_cx_idle_timeout", "counter", "Downstream connections closed for idleness"),
    ("downstream_rq_total", "counter", "Downstream requests"),
    ("downstream_rq_active", "gauge", "Downstream requests in flight"),
    ("downstream_rq_1xx", "counter", "Responses with a 1xx status"),
    ("downstream_rq_2xx", "counter", "Responses with a 2xx status"),
    ("downstream_rq_3xx", "counter", "Responses with a 3xx status"),
    ("downstream_rq_4xx", "counter", "Responses with a 4xx status"),
    ("downstream_rq_5xx", "counter", "Responses with a 5xx status"),
    (
        "downstream_rq_rx_reset",
        "counter",
        "Requests whose client went away before the response ended",
    ),
    ("downstream_cx_rx_bytes_total", "counter", "Bytes received from downstream"),
    ("downstream_cx_tx_bytes_total", "counter", "Bytes sent to downstream"),
    ("upstream_cx_total", "counter", "Upstream connections opened"),
    ("upstream_cx_http1_total", "counter", "Upstream connections opened for HTTP/1.1"),
    ("upstream_cx_http2_total", "counter", "Upstream connections that completed h2c's handshake"),
    ("upstream_cx_active", "gauge", "Upstream connections open"),
    ("upstream_cx_connect_fail", "counter", "Upstream connection attempts that failed"),
    ("upstream_cx_connect_timeout", "counter", "Upstream connection attempts that timed out"),
    ("upstream_cx_idle_timeout", "counter", "Pooled upstream connections closed for idleness"),
    ("upstream_cx_destroy_remote_with_active_rq", "counter", "Upstream closed mid-request"),
    ("upstream_cx_protocol_error", "counter", "Upstream responses that broke the protocol"),
    ("upstream_cx_pool_reuse", "counter", "Requests sent on a pooled keep-alive connection"),
    ("upstream_rq_total", "counter", "Requests sent upstream"),
    ("upstream_rq_timeout", "counter", "Requests that hit the route timeout"),
    ("upstream_rq_pending_overflow", "counter", "Requests refused by the circuit breaker"),
    ("upstream_rq_retry", "counter", "Requests sent again (stale, refused, retry policy)"),
    ("upstream_rq_retry_success", "counter", "Retried requests answered for good"),
    ("upstream_rq_retry_overflow", "counter", "Retries refused by the max_retries circuit breaker"),
    ("upstream_rq_retry_limit_exceeded", "counter", "Requests out of retries"),
    ("upstream_cx_rx_bytes_total", "counter", "Bytes received from upstream"),
    ("upstream_cx_tx_bytes_total", "counter", "Bytes sent to upstream"),
    ("tcp_downstream_cx_total", "counter", "Opaque TCP connections relayed"),
    ("tcp_downstream_cx_rx_bytes_total", "counter", "Opaque TCP bytes from downstream"),
    ("tcp_downstream_cx_tx_bytes_total", "counter", "Opaque TCP bytes to downstream"),
    ("tcp_idle_timeout", "counter", "Opaque TCP relays closed after no bytes either way"),
    # HTTP/2, in Envoy's http2.* words (both directions: downstream and upstream codecs).
    ("downstream_cx_http2_active", "gauge", "Downstream HTTP/2 connections open"),
    ("http2_rx_reset", "counter", "HTTP/2 streams reset by the peer (RST_STREAM received)"),
    ("http2_tx_reset", "counter", "HTTP/2 streams reset by the proxy (RST_STREAM sent)"),
    ("http2_goaway_sent", "counter", "HTTP/2 GOAWAY frames sent (drain or connection error)"),
    ("http2_rx_messaging_error", "counter", "HTTP/2 requests refused as malformed (RFC 9113)"),
    ("http2_flood_close", "counter", "HTTP/2 connections closed with ENHANCE_YOUR_CALM (floods)"),
)

NAMES = tuple(name for name, _, _ in DECLARED)


class Stats:
    """One worker's counters and gauges, all zero to start, one attribute per DECLARED name.

    Native attributes in the compiled build: `stats.upstream_rq_total += 1` is an
    integer add in place (a list item was a boxed int taken out and put back, about
    160 instructions, ten times a request). tests/telemetry/test_stats_attributes.py checks
    the attributes against DECLARED.
    """

    downstream_cx_total: int = 0
    downstream_cx_active: int = 0
    downstream_cx_http1_total: int = 0
    downstream_cx_http2_total: int = 0
    downstream_cx_tcp_total: int = 0
    downstream_cx_protocol_error: int = 0
    downstream_cx_drain_close: int = 0
    downstream_cx_idle_timeout: int = 0
    downstream_rq_total: int = 0
    downstream_rq_active: int = 0
    downstream_rq_1xx: int = 0
    downstream_rq_2xx: int = 0
    downstream_rq_3xx: int = 0
    downstream_rq_4xx: int = 0
    downstream_rq_5xx: int = 0
    downstream_rq_rx_reset: int = 0
    downstream_cx_rx_bytes_total: int = 0
    downstream_cx_tx_bytes_total: int = 0
    upstream_cx_total: int = 0
    upstream_cx_http1_total: int = 0
    upstream_cx_http2_total: int = 0
    upstream_cx_active: int = 0
    upstream_cx_connect_fail: int = 0
    upstream_cx_connect_timeout: int = 0
    upstream_cx_idle_timeout: int = 0
    upstream_cx_destroy_remote_with_active_rq: int = 0
    upstream_cx_protocol_error: int = 0
    upstream_cx_pool_reuse: int = 0
    upstream_rq_total: int = 0
    upstream_rq_timeout: int = 0
    upstream_rq_pending_overflow: int = 0
    upstream_rq_retry: int = 0
    upstream_rq_retry_success: int = 0
    upstream_rq_retry_overflow: int = 0
    upstream_rq_retry_limit_exceeded: int = 0
    upstream_cx_rx_bytes_total: int = 0
    upstream_cx_tx_bytes_total: int = 0
    tcp_downstream_cx_total: int = 0
    tcp_downstream_cx_rx_bytes_total: int = 0
    tcp_downstream_cx_tx_bytes_total: int = 0
    tcp_idle_timeout: int = 0
    downstream_cx_http2_active: int = 0
    http2_rx_reset: int = 0
    http2_tx_reset: int = 0
    http2_goaway_sent: int = 0
    http2_rx_messaging_error: int = 0
    http2_flood_close: int = 0

    def count_status(self, status: int) -> None:
        """downstream_rq_1xx .. downstream_rq_5xx for a status in 100..599."""
        if status < 200:
            self.downstream_rq_1xx += 1
        elif status < 300:
            self.downstream_rq_2xx += 1
        elif status < 400:
            self.downstream_rq_3xx += 1
        elif status < 500:
            self.downstream_rq_4xx += 1
        else:
            self.downstream_rq_5xx += 1

    def values(self) -> list[int]:
        """Every value, in DECLARED order (read at a scrape, not per request)."""
        return [getattr(self, name) for name in NAMES]


def new_stats() -> Stats:
    """One worker's counters and gauges, all zero."""
    return Stats()


def named(values: list[int]) -> dict[str, int]:
    """Stat name -> value, in declaration order."""
    return dict(zip(NAMES, values, strict=True))


def kinds() -> dict[str, tuple[str, str]]:
    """Stat name -> (counter or gauge, help text)."""
    return {name: (kind, text) for name, kind, text in DECLARED}


def described(values: list[int]) -> dict[str, tuple[str, str, int]]:
    """Stat name -> (counter or gauge, help text, value), as the exposition renders them."""
    return {
        name: (kind, text, value)
        for (name, kind, text), value in zip(DECLARED, values, strict=True)
    }
