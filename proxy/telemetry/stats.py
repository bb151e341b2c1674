"""The proxy's own stats in Envoy's vocabulary, declared once, summed across worker processes.

Every counter and gauge is declared here at start-up (Envoy's ALL_*_STATS idea) and
gets a fixed index. Each worker counts into its own plain list (`new_stats()`); the hot
path does `stats[INDEX] = stats[INDEX] + 1` (no locks, no lookups by name, nothing
shared), spelled out because mypyc compiles `stats[INDEX] += 1` on a list item to a
generic PyNumber_InPlaceAdd on boxed ints (about 270 instructions; the spelled-out
form is a native integer add, about 100). The admin
(worker 0) sums every worker's list when it is read, over the same gather as the
Prometheus metrics (`proxy.telemetry.gather`), so a read counts everything that finished
before it.

Why not a table in shared memory, which the admin could read without asking: each
increment of a memoryview of int64 unpacks and packs a C integer, about 600
instructions, and an HTTP/1 request makes ten of them (7% of its CPU).
"""

from __future__ import annotations

from typing import Final

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
    # HTTP/2, in Envoy's http2.* words (both directions: downstream and upstream codecs).
    ("downstream_cx_http2_active", "gauge", "Downstream HTTP/2 connections open"),
    ("http2_rx_reset", "counter", "HTTP/2 streams reset by the peer (RST_STREAM received)"),
    ("http2_tx_reset", "counter", "HTTP/2 streams reset by the proxy (RST_STREAM sent)"),
    ("http2_goaway_sent", "counter", "HTTP/2 GOAWAY frames sent (drain or connection error)"),
    ("http2_rx_messaging_error", "counter", "HTTP/2 requests refused as malformed (RFC 9113)"),
    ("http2_flood_close", "counter", "HTTP/2 connections closed with ENHANCE_YOUR_CALM (floods)"),
)

NAMES = tuple(name for name, _, _ in DECLARED)
INDEX = {name: index for index, name in enumerate(NAMES)}

# Indices as literal constants: the compiled hot path builds them into its code (as
# `INDEX[...]` lookups, each use was a module attribute read, about 250 instructions).
# Each line names its stat; tests/telemetry/test_stats_indices.py checks them against
# DECLARED.
DOWNSTREAM_CX_TOTAL: Final = 0  # downstream_cx_total
DOWNSTREAM_CX_ACTIVE: Final = 1  # downstream_cx_active
DOWNSTREAM_CX_HTTP1_TOTAL: Final = 2  # downstream_cx_http1_total
DOWNSTREAM_CX_HTTP2_TOTAL: Final = 3  # downstream_cx_http2_total
DOWNSTREAM_CX_TCP_TOTAL: Final = 4  # downstream_cx_tcp_total
DOWNSTREAM_CX_PROTOCOL_ERROR: Final = 5  # downstream_cx_protocol_error
DOWNSTREAM_CX_DRAIN_CLOSE: Final = 6  # downstream_cx_drain_close
DOWNSTREAM_CX_IDLE_TIMEOUT: Final = 7  # downstream_cx_idle_timeout
DOWNSTREAM_RQ_TOTAL: Final = 8  # downstream_rq_total
DOWNSTREAM_RQ_ACTIVE: Final = 9  # downstream_rq_active
DOWNSTREAM_RQ_1XX: Final = 10  # downstream_rq_1xx (2xx..5xx follow in order)
DOWNSTREAM_RQ_RX_RESET: Final = 15  # downstream_rq_rx_reset
DOWNSTREAM_CX_RX_BYTES: Final = 16  # downstream_cx_rx_bytes_total
DOWNSTREAM_CX_TX_BYTES: Final = 17  # downstream_cx_tx_bytes_total
UPSTREAM_CX_TOTAL: Final = 18  # upstream_cx_total
UPSTREAM_CX_HTTP1_TOTAL: Final = 19  # upstream_cx_http1_total
UPSTREAM_CX_HTTP2_TOTAL: Final = 20  # upstream_cx_http2_total
UPSTREAM_CX_ACTIVE: Final = 21  # upstream_cx_active
UPSTREAM_CX_CONNECT_FAIL: Final = 22  # upstream_cx_connect_fail
UPSTREAM_CX_CONNECT_TIMEOUT: Final = 23  # upstream_cx_connect_timeout
UPSTREAM_CX_IDLE_TIMEOUT: Final = 24  # upstream_cx_idle_timeout
UPSTREAM_CX_DESTROY_REMOTE_WITH_ACTIVE_RQ: Final = 25  # upstream_cx_destroy_remote_with_active_rq
UPSTREAM_CX_PROTOCOL_ERROR: Final = 26  # upstream_cx_protocol_error
UPSTREAM_CX_POOL_REUSE: Final = 27  # upstream_cx_pool_reuse
UPSTREAM_RQ_TOTAL: Final = 28  # upstream_rq_total
UPSTREAM_RQ_TIMEOUT: Final = 29  # upstream_rq_timeout
UPSTREAM_RQ_PENDING_OVERFLOW: Final = 30  # upstream_rq_pending_overflow
UPSTREAM_RQ_RETRY: Final = 31  # upstream_rq_retry
UPSTREAM_RQ_RETRY_SUCCESS: Final = 32  # upstream_rq_retry_success
UPSTREAM_RQ_RETRY_OVERFLOW: Final = 33  # upstream_rq_retry_overflow
UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED: Final = 34  # upstream_rq_retry_limit_exceeded
UPSTREAM_CX_RX_BYTES: Final = 35  # upstream_cx_rx_bytes_total
UPSTREAM_CX_TX_BYTES: Final = 36  # upstream_cx_tx_bytes_total
TCP_DOWNSTREAM_CX_TOTAL: Final = 37  # tcp_downstream_cx_total
TCP_RX_BYTES: Final = 38  # tcp_downstream_cx_rx_bytes_total
TCP_TX_BYTES: Final = 39  # tcp_downstream_cx_tx_bytes_total
DOWNSTREAM_CX_HTTP2_ACTIVE: Final = 40  # downstream_cx_http2_active
HTTP2_RX_RESET: Final = 41  # http2_rx_reset
HTTP2_TX_RESET: Final = 42  # http2_tx_reset
HTTP2_GOAWAY_SENT: Final = 43  # http2_goaway_sent
HTTP2_RX_MESSAGING_ERROR: Final = 44  # http2_rx_messaging_error
HTTP2_FLOOD_CLOSE: Final = 45  # http2_flood_close


def new_stats() -> list[int]:
    """One worker's counters and gauges, all zero, indexed by the constants above."""
    return [0] * len(NAMES)


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
