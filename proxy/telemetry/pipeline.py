"""The RequestObserver the runtime calls: Istio metrics, trace context and spans, access log.

Per request this costs a few microseconds by design: the request's Host and
Content-Type, the last series found again by comparing its parts, native float sums,
three bucket increments (one bucket search, two table reads), and (when the access log
is on) one hand-formatted line appended to a list. Trace ids are slices of
a batch of random hex digits (`proxy.core.ids`); only a sampled request is encoded as a
span (`otlp.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final

from proxy.config import env as env_names
from proxy.config.model import ProxyConfig
from proxy.core import ids
from proxy.core.headers import header_value
from proxy.core.messages import PEER_FIELDS, TRACE_FIELDS, Headers, RequestHead, ResponseHead
from proxy.telemetry import gather as gathering
from proxy.telemetry import metrics as M
from proxy.telemetry import stats as proxy_stats
from proxy.telemetry import tracecontext as tc
from proxy.telemetry.accesslog import FLUSH_INTERVAL, AccessLogWriter, UtcClock, json_string
from proxy.telemetry.identity import UNKNOWN, Identity
from proxy.telemetry.metrics import Snapshot
from proxy.telemetry.otlp import AttributeValue
from proxy.telemetry.peer import PeerExchange
from proxy.telemetry.process import process_stats
from proxy.telemetry.tracing import SpanKind, Tracer, roots_to_skip, tracing_disabled

if TYPE_CHECKING:
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.tcp_proxy import TcpRelay
    from proxy.telemetry.observer import ConnectionFacts

logger = logging.getLogger("pilotfish")


_FIRST_TRIED: Final = 3
# Body sizes below this find their bucket in Telemetry.size_slots.
_SIZE_SLOTS: Final = 4096


def histogram_slot(bounds: tuple[float, ...], value: float) -> int:
    """bisect_left(bounds, value), compiled: the bucket a value counts in. Once a
    request for the duration (body sizes below _SIZE_SLOTS read Telemetry.size_slots,
    made with it); the C bisect's call and argument parsing cost more than the search.

    Most values land in the first few buckets (empty bodies, sub-millisecond
    durations), so those are tried in order before the binary search.
    """
    high = len(bounds)
    low = 0
    while low < _FIRST_TRIED and low < high:
        if value <= bounds[low]:
            return low
        low += 1
    while low < high:
        middle = (low + high) >> 1
        if bounds[middle] < value:
            low = middle + 1
        else:
            high = middle
    return low


_TRACE_HEADERS: Final = tc.TRACE_HEADERS
_TRACEPARENT: Final = tc.TRACEPARENT  # a static in the compiled build, not a module lookup
_GRPC: Final = b"application/grpc"
_HOST: Final = b"host"
_CONTENT_TYPE: Final = b"content-type"
_quote: Final = json_string
_quote_str: Final = encode_basestring_ascii
# Quoted field values remembered for reuse; cleared when it grows past this.
_MAX_QUOTED: Final = 4096
# Istio's JSON access log fields (contracts.md "Access log") plus @timestamp and the trace.
# @timestamp is the request's start, as Istio's EFK examples map start_time.
_JSON_LINE: Final = (
    '{"@timestamp":"%s","start_time":"%s","route_name":"default","method":%s,"path":%s,'
    '"protocol":"HTTP/%s","response_code":%d,"response_flags":"%s","response_code_details":%s,'
    '"connection_termination_details":null,"bytes_received":%d,"bytes_sent":%d,"duration":%d,'
    '"upstream_service_time":%s,"x_forwarded_for":%s,"user_agent":%s,"request_id":%s,'
    '"authority":%s,%s,"upstream_local_address":%s,"downstream_remote_address":"%s",'
    '"requested_server_name":null,"upstream_transport_failure_reason":%s,'
    '"trace_id":"%s","span_id":"%s"}\n'
)
_WHO_SENDS: Final = {"virtualOutbound": True, "virtualInbound": False}


class RequestState:
    """What request_start learned, kept on `exchange.telemetry` until request_done."""

    __slots__ = (
        "awaits_peer",
        "content_type",
        "context",
        "host",
        "parent_span_id",
        "peer",
        "sampled",
        "tracestate",
    )

    def __init__(
        self,
        host: bytes | None,
        content_type: bytes | None,
        context: bytes,
        parent_span_id: str,
        sampled: bool,
        tracestate: bytes | None,
    ) -> None:
        self.host = host  # the request's Host: the series' and the span's authority
        self.content_type = content_type  # says whether it is gRPC
        # Our traceparent without its sampled digit (proxy.core.ids); b"" when not tracing.
        self.context = context
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self.tracestate = tracestate
        # The other workload's label values, when it said who it is (proxy.telemetry.peer),
        # and whether its answer may still say it (outbound: the destination's response).
        self.peer: tuple[str, ...] | None = None
        self.awaits_peer = False

    @property
    def trace_id(self) -> str:
        """Lower-case hex; "" when tracing is off."""
        return ids.trace_id(self.context) if self.context else ""

    @property
    def span_id(self) -> str:
        return ids.span_id(self.context) if self.context else ""


def _host_and_content_type(headers: Headers) -> tuple[bytes | None, bytes | None]:
    """A request's Host and Content-Type (the last of each, as a dict of them would hold)."""
    host = None
    content_type = None
    for name, value in headers:
        if name == _HOST:
            host = value
        elif name == _CONTENT_TYPE:
            content_type = value
    return host, content_type


class _BucketTally:
    """Hits of one bucket of one histogram of the last series, added up natively.

    A list item is a boxed float taken out and put back (about 130 instructions a hit);
    consecutive requests mostly land in the same buckets, so the hits are counted here
    and folded into the series' values when another bucket is hit or another series
    counted, and before every snapshot (Telemetry._flush_sums).
    """

    __slots__ = ("at", "hits")

    def __init__(self) -> None:
        self.at = 0  # index into the last series' values
        self.hits = 0

    def count(self, values: list[float], at: int) -> None:
        if at == self.at:
            self.hits += 1
            return
        self.flush(values)
        self.at = at
        self.hits = 1

    def flush(self, values: list[float]) -> None:
        """Fold the hits into `values` (the series they were counted for)."""
        if self.hits:
            at = self.at
            values[at] = values[at] + self.hits
            self.hits = 0


class Telemetry:
    """One per worker process (built after the fork)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ProxyConfig,
        index: int,
        environ: Mapping[str, str],
        stats: proxy_stats.Stats | None = None,
        main_pid: int | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.index = index
        # This worker's own stats (proxy.telemetry.stats), counted by the runtime.
        self.stats = stats if stats is not None else proxy_stats.new_stats()
        self.main_pid = (
            main_pid if main_pid is not None else (os.getpid() if index == 0 else os.getppid())
        )
        self.identity = Identity.from_env(environ)
        self.labels = M.LabelMaker(self.identity)
        self.peers = PeerExchange(self.identity, environ, config.telemetry.peer_metadata)
        explicit_outbound = config.telemetry.explicit_direction == "outbound"
        self.outbound = dict(_WHO_SENDS, explicit=explicit_outbound)
        # The contract's boundaries, or the pod's statsHistogramBuckets annotation.
        raw_buckets = environ.get(env_names.STATS_HISTOGRAM_BUCKETS)
        custom = M.parse_buckets(raw_buckets)
        if raw_buckets and custom is None:
            logger.warning(
                "%s=%r is not usable; using the default buckets",
                env_names.STATS_HISTOGRAM_BUCKETS,
                raw_buckets,
            )
        self.layout = layout = M.Layout(custom or M.BUCKETS)
        self.buckets = layout.buckets
        # The same bounds as floats for histogram_slot (the contract's list has ints,
        # which its float comparisons would convert on every probe).
        self.bounds = tuple(float(bound) for bound in layout.buckets)
        self.request_bytes_at = layout.request_bytes
        self.response_bytes_at = layout.response_bytes
        # The bucket of each small body size, worked out once: sizes are whole numbers,
        # and a list item costs less than the bucket search (two a request).
        self.size_slots = [histogram_slot(self.bounds, size) for size in range(_SIZE_SLOTS)]
        self.http: dict[tuple[Any, ...], list[float]] = {}
        # The series request_done counted in last (series are never removed), and the
        # parts of its key (status -1: none yet).
        self.last_key: tuple[Any, ...] = ()
        self.last_values: list[float] = []
        self.last_listener = ""
        self.last_host: bytes | None = None
        self.last_status = -1
        self.last_flags = ""
        self.last_grpc_status: str | None = None
        self.last_peer: tuple[str, ...] | None = None
        # Counted for the last series but not yet in its values (see request_done).
        self.pending_count = 0.0
        self.pending_duration = 0.0
        self.pending_received = 0.0
        self.pending_sent = 0.0
        self.duration_hits = _BucketTally()
        self.request_size_hits = _BucketTally()
        self.response_size_hits = _BucketTally()
        self.http_labels: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self.tcp: dict[tuple[Any, ...], list[float]] = {}
        self.tcp_labels: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self.exemplars: dict[tuple[tuple[Any, ...], int], tuple[str, str, float, float]] = {}
        self.counters: dict[str, float] = {}
        if tracer is None and not tracing_disabled(environ):
            tracer = Tracer(self.identity, environ, loop)
        self.tracer = tracer
        # A new trace (no parent) is sampled at this ratio.
        self.root_ratio = tracer.sampler.ratio if tracer is not None else 0.0
        self.unsampled_roots_left = roots_to_skip(self.root_ratio)  # before the next sampled one
        path = config.access_log.path
        self.access_log = AccessLogWriter(path) if path else None
        self.json_log = config.access_log.format == "json"
        self.clock = UtcClock()
        self._connection_fields: dict[tuple[Any, ...], str] = {}
        self._quoted: dict[bytes | str | None, str] = {None: "null"}
        self._last_start = -1.0
        self._last_timestamp = ""
        self.started = time.time()
        # Exchanges are timed on time.monotonic(), not loop.time(): uvloop's clock counts
        # whole milliseconds, which would round every sub-millisecond request to 0 or 1 ms.
        # Wall time = monotonic time + offset (re-read on each tick).
        self.wall_offset = time.time() - time.monotonic()
        self._tick_handle: asyncio.TimerHandle | None = loop.call_later(FLUSH_INTERVAL, self._tick)
        self._publisher: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Workers other than the first publish their snapshot for worker 0's scrapes."""
        if self.index > 0:
            try:
                self._publisher = await gathering.publish(self.main_pid, self.index, self.snapshot)
            except OSError as error:
                # Serving traffic matters more than being counted: scrapes will count this
                # worker as a gather failure instead.
                logger.warning("worker %d cannot publish its telemetry: %s", self.index, error)

    def _tick(self) -> None:
        self.wall_offset = time.time() - time.monotonic()
        if self.access_log is not None:
            self.access_log.flush()
        self._tick_handle = self.loop.call_later(FLUSH_INTERVAL, self._tick)

    def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self._publisher is not None:
            self._publisher.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.tracer is not None:
            self.tracer.close()

    # -- per request (the hot path) -----------------------------------------------------

    def request_start(self, downstream: ConnectionFacts, exchange: Exchange) -> None:
        self._trace_start(exchange)
        if exchange.request.fields & PEER_FIELDS or self.peers.sends:
            self._peer_start(downstream, exchange)

    def _trace_start(self, exchange: Exchange) -> None:
        request = exchange.request
        host, content_type = _host_and_content_type(request.headers)
        tracer = self.tracer
        if tracer is None:
            exchange.telemetry = RequestState(host, content_type, b"", "", False, None)
            return
        context = ids.new_trace_context()
        head = exchange.upstream_head
        if not request.fields & TRACE_FIELDS or not any(
            name in _TRACE_HEADERS for name, _ in request.headers
        ):
            skip = self.unsampled_roots_left
            if skip:
                self.unsampled_roots_left = skip - 1
                sampled = False
            else:
                self.unsampled_roots_left = roots_to_skip(self.root_ratio)
                sampled = self.root_ratio > 0.0
            exchange.telemetry = RequestState(host, content_type, context, "", sampled, None)
            if head is not None:
                head.headers.append((_TRACEPARENT, context + (b"1" if sampled else b"0")))
            return
        headers = dict(request.headers)
        parent = tc.extract(headers)
        parent_span_id = ""
        tracestate = None
        if parent is None:
            sampled = tracer.sampler.root()
        else:
            if parent.trace_id:  # the caller's trace, our span id
                context = b"00-" + parent.trace_id.encode("ascii") + context[35:]
            parent_span_id = parent.span_id
            sampled = tracer.sampler.decide(parent.sampled)
            if parent.style == tc.STYLE_W3C:
                tracestate = headers.get(tc.TRACESTATE)
        style = tc.b3_style(headers)
        exchange.telemetry = state = RequestState(
            host, content_type, context, parent_span_id, sampled, tracestate
        )
        if head is not None:
            # The caller's context is replaced by ours: the same trace, our span as parent.
            head.headers = [pair for pair in head.headers if pair[0] not in _TRACE_HEADERS]
            head.headers += tc.inject(
                state.trace_id, state.span_id, parent_span_id, sampled, style, tracestate
            )

    def _peer_start(self, downstream: ConnectionFacts, exchange: Exchange) -> None:
        """Istio's metadata exchange on the request: inbound, read (and remove) who the
        caller is; outbound, say who we are and ask to read the answer."""
        state = exchange.telemetry
        head = exchange.upstream_head
        if type(state) is not RequestState or head is None:
            return
        peers = self.peers
        outbound = self.outbound.get(downstream.listener_name, True)
        if exchange.request.fields & PEER_FIELDS:
            # Never handed on: inbound they are the caller's, for us; outbound an app's
            # own would pass for ours.
            head.headers, peer = peers.take(head.headers)
            if not outbound and peer is not None:
                state.peer = peer
                exchange.observe_response = peers.sends  # answer with ours
        if outbound and peers.sends_to(downstream.destination):
            # First: the same pair objects on every request then join the run of lines
            # the HTTP/1 codec reuses (h1_framing.FieldLines); after the request id, which
            # changes every time, they would be formatted anew.
            head.headers = peers.ours + head.headers
            state.awaits_peer = True
            exchange.observe_response = True

    def response_start(self, exchange: Exchange, head: ResponseHead) -> None:
        """Istio's metadata exchange on the response: outbound, read (and remove) who
        answered; inbound, tell the caller who we are."""
        state = exchange.telemetry
        if type(state) is not RequestState:
            return
        peers = self.peers
        if head.fields & PEER_FIELDS:
            head.headers, peer = peers.take(head.headers)
            if state.awaits_peer:
                state.peer = peer
        if not state.awaits_peer:
            head.headers = head.headers + peers.ours

    def request_done(
        self,
        downstream: ConnectionFacts,
        exchange: Exchange,
        now: float,
        listener: str | None = None,
    ) -> None:
        """`listener`: `downstream.listener_name`, when the caller can read it natively (a
        read through the ConnectionFacts Protocol is a Python-level getattr)."""
        state = exchange.telemetry
        if type(state) is RequestState:
            host = state.host
            content_type = state.content_type
            peer = state.peer
        else:  # answered before request_start (no route, unparsable request)
            state = None
            host, content_type = _host_and_content_type(exchange.request.headers)
            peer = None
        flag_list = exchange.flags
        flags = ",".join(flag_list) if flag_list else "-"
        status = exchange.status
        grpc_status = None
        if content_type is not None and content_type.startswith(_GRPC):
            grpc_status = self._grpc_status(exchange)
        if listener is None:
            listener = downstream.listener_name
        if (
            status == self.last_status
            and flags == self.last_flags
            and host == self.last_host
            and listener == self.last_listener
            and grpc_status == self.last_grpc_status
            and peer is self.last_peer
        ):
            # The series the previous request counted in, found by comparing its parts
            # (native compares, mostly of the same objects) before any key is built.
            key = self.last_key
            values = self.last_values
        else:
            self._flush_sums()  # into the series they were counted for
            key = (listener, host, status, flags, grpc_status, peer)
            found = self.http.get(key)
            if found is None:
                key, values = self._new_http_series(key, downstream)
            else:
                values = found
            self.last_key = key
            self.last_values = values
            self.last_listener = listener
            self.last_host = host
            self.last_status = status
            self.last_flags = flags
            self.last_grpc_status = grpc_status
            self.last_peer = peer
        elapsed_ms = (now - exchange.start) * 1000.0
        received = exchange.bytes_received
        sent = exchange.bytes_sent
        # The last series' count and sums add up in native floats (a list item is a boxed
        # float taken out and put back, about 115 instructions), folded into its values
        # when another series is counted and before every snapshot (_flush_sums).
        self.pending_count += 1.0
        self.pending_duration += elapsed_ms
        self.pending_received += received
        self.pending_sent += sent
        buckets = self.bounds
        slot = histogram_slot(buckets, elapsed_ms)
        self.duration_hits.count(values, 4 + slot)
        slots = self.size_slots
        self.request_size_hits.count(
            values,
            self.request_bytes_at
            + (slots[received] if received < _SIZE_SLOTS else histogram_slot(buckets, received)),
        )
        self.response_size_hits.count(
            values,
            self.response_bytes_at
            + (slots[sent] if sent < _SIZE_SLOTS else histogram_slot(buckets, sent)),
        )
        messages = exchange.grpc_messages
        if messages is not None:
            layout = self.layout
            values[layout.request_messages] += messages[0].count
            values[layout.response_messages] += messages[1].count
        if state is not None and state.sampled:
            self._record_span(downstream, exchange, state, now, key, slot, elapsed_ms)
        log = self.access_log
        if log is not None:
            headers = dict(exchange.request.headers)
            if self.json_log:
                log.add(self._json_line(downstream, exchange, headers, state, now, flags))
            else:
                log.add(self._text_line(downstream, exchange, headers, now, flags))

    def _flush_sums(self) -> None:
        """Fold the last series' pending count, sums and bucket hits into its values."""
        if self.pending_count:
            values = self.last_values
            self.duration_hits.flush(values)
            self.request_size_hits.flush(values)
            self.response_size_hits.flush(values)
            values[M.COUNT] = values[M.COUNT] + self.pending_count
            values[M.DURATION_SUM] = values[M.DURATION_SUM] + self.pending_duration
            values[M.REQUEST_BYTES_SUM] = values[M.REQUEST_BYTES_SUM] + self.pending_received
            values[M.RESPONSE_BYTES_SUM] = values[M.RESPONSE_BYTES_SUM] + self.pending_sent
            self.pending_count = 0.0
            self.pending_duration = 0.0
            self.pending_received = 0.0
            self.pending_sent = 0.0

    def tcp_start(self, relay: TcpRelay) -> None:
        values = self._tcp_values(relay, "-")  # nothing has gone wrong yet
        values[M.TCP_OPENED] = values[M.TCP_OPENED] + 1

    def tcp_progress(self, relay: TcpRelay) -> None:
        sent = relay.sent - relay.reported_sent
        received = relay.received - relay.reported_received
        if sent or received:
            self._count_tcp_bytes(self._tcp_values(relay, relay.flags), relay, sent, received)

    def tcp_done(self, relay: TcpRelay, now: float) -> None:
        # As Istio's: a connection opened under `-` closes under the flags it ended
        # with (`UF` when its upstream refused), so failed relays show on the dashboards.
        values = self._tcp_values(relay, relay.flags)
        values[M.TCP_CLOSED] = values[M.TCP_CLOSED] + 1
        sent = relay.sent - relay.reported_sent
        received = relay.received - relay.reported_received
        self._count_tcp_bytes(values, relay, sent, received)
        log = self.access_log
        if log is not None:
            log.add(self._tcp_line(relay, now))

    @staticmethod
    def _count_tcp_bytes(values: list[float], relay: TcpRelay, sent: int, received: int) -> None:
        """Bytes not counted yet (`tcp_progress` counts an open relay's as they go)."""
        values[M.TCP_SENT] = values[M.TCP_SENT] + sent
        values[M.TCP_RECEIVED] = values[M.TCP_RECEIVED] + received
        relay.reported_sent = relay.sent
        relay.reported_received = relay.received

    def _tcp_values(self, relay: TcpRelay, flags: str) -> list[float]:
        downstream = relay.downstream
        destination = downstream.destination
        key = (downstream.listener_name, destination, flags)
        values = self.tcp.get(key)
        if values is None:
            values = self.tcp[key] = M.empty_tcp()
            host = destination[0] if destination else ""
            self.tcp_labels[key] = self.labels.peer_labels(
                self.outbound.get(downstream.listener_name, True), host, "tcp", flags
            )
        return values

    # -- the slower paths ------------------------------------------------------------------

    def _new_http_series(
        self, key: tuple[Any, ...], downstream: ConnectionFacts
    ) -> tuple[tuple[Any, ...], list[float]]:
        listener, raw_host, status, flags, grpc_status, peer_seen = key
        peer: tuple[str, ...] | None = peer_seen
        if len(self.http) >= M.MAX_SERIES:
            # Past the bound, the client-chosen parts (Host, peer metadata) no longer count.
            peer = None
            key = (listener, b"\0overflow", status, flags, grpc_status, peer)
            values = self.http.get(key)
            if values is not None:
                return key, values
            host = ""
        elif raw_host:
            host = M.split_host(raw_host.decode("latin-1"))
        else:
            destination = downstream.destination
            host = destination[0] if destination else ""
        labels = self.labels.peer_labels(
            self.outbound.get(listener, True),
            host,
            "grpc" if grpc_status is not None else "http",
            flags,
            peer,
        )
        values = self.http[key] = self.layout.empty()
        self.http_labels[key] = (
            *labels,
            str(status) if status else "0",
            grpc_status if grpc_status is not None else UNKNOWN,
        )
        return key, values

    @staticmethod
    def _grpc_status(exchange: Exchange) -> str:
        for name, value in exchange.response_trailers:
            if name == b"grpc-status":
                return value.decode("latin-1")
        response = exchange.response
        if response is not None:
            for name, value in response.headers:
                if name == b"grpc-status":  # trailers-only responses
                    return value.decode("latin-1")
        return UNKNOWN

    def _record_span(
        self,
        downstream: ConnectionFacts,
        exchange: Exchange,
        state: RequestState,
        now: float,
        key: tuple[Any, ...],
        slot: int,
        elapsed_ms: float,
    ) -> None:
        tracer = self.tracer
        assert tracer is not None
        offset = self.wall_offset
        end_unix = now + offset
        self.exemplars[(key, slot)] = (state.trace_id, state.span_id, elapsed_ms, end_unix)
        request = exchange.request
        method = request.method.decode("latin-1")
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        authority = (state.host or b"").decode("latin-1")
        host, _, port = (
            authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
        )
        outbound = self.outbound.get(downstream.listener_name, True)
        status = exchange.status
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "server.address": host or authority,
            "network.protocol.version": request.http_version.decode("latin-1"),
            "http.request.header.x-request-id": [exchange.request_id.decode("latin-1")],
        }
        if port.isdigit():
            attributes["server.port"] = int(port)
        if status:
            attributes["http.response.status_code"] = status
        user_agent = header_value(request.headers, b"user-agent")
        if user_agent is not None:
            attributes["user_agent.original"] = user_agent.decode("latin-1")
        if exchange.flags:
            attributes["pilotfish.response_flags"] = ",".join(exchange.flags)
        destination = downstream.destination
        if outbound:
            kind = SpanKind.CLIENT
            attributes["url.full"] = f"http://{authority}{target}"
            if destination is not None:
                attributes["network.peer.address"] = destination[0]
                attributes["network.peer.port"] = destination[1]
            error = status == 0 or status >= 400
        else:
            kind = SpanKind.SERVER
            attributes["url.path"] = path
            attributes["url.scheme"] = "http"
            if query:
                attributes["url.query"] = query
            attributes["client.address"] = downstream.client_address.decode("latin-1")
            error = status == 0 or status >= 500
        if error:
            attributes["error.type"] = (
                str(status) if status else (",".join(exchange.flags) or "_OTHER")
            )
        tracer.record(
            method,
            kind,
            int(state.trace_id, 16),
            int(state.span_id, 16),
            int(state.parent_span_id, 16) if state.parent_span_id else 0,
            state.tracestate,
            int((exchange.start + offset) * 1e9),
            int(end_unix * 1e9),
            attributes,
            error,
        )

    def _json_line(
        self,
        downstream: ConnectionFacts,
        exchange: Exchange,
        headers: dict[bytes, bytes],
        state: RequestState | None,
        now: float,
        flags: str,
    ) -> str:
        # One %-format over a fixed template. Fields that repeat (method, path, user
        # agent, authority) are JSON-quoted once and then found in a dict; the fields a
        # connection always has the same are formatted once per connection shape
        # (listener, destination, local address). The client's ip:port, different on
        # every connection, goes in as it is: an address needs no escaping.
        connection = (downstream.listener_name, downstream.destination, downstream.local_address)
        tail = self._connection_fields.get(connection)
        if tail is None:
            tail = self._connection_json(downstream)
        quoted = self._quoted
        request = exchange.request
        method = request.method
        target = request.target
        user_agent = headers.get(b"user-agent")
        forwarded_for = headers.get(b"x-forwarded-for")
        authority = headers.get(_HOST)
        start = exchange.start
        if start != self._last_start:
            self._last_start = start
            self._last_timestamp = self.clock.format(start + self.wall_offset)
        timestamp = self._last_timestamp
        upstream_start = exchange.upstream_start
        details = exchange.details
        request_id = exchange.request_id
        upstream_local = exchange.upstream_local
        failure = exchange.transport_failure
        return _JSON_LINE % (
            timestamp,
            timestamp,
            quoted.get(method) or self._quote_new(method),
            quoted.get(target) or self._quote_new(target),
            request.http_version.decode("latin-1"),
            exchange.status,
            flags,
            quoted.get(details) or self._quote_new(details),
            exchange.bytes_received,
            exchange.bytes_sent,
            int((now - start) * 1000),
            int((now - upstream_start) * 1000) if upstream_start else "null",
            quoted.get(forwarded_for) or self._quote_new(forwarded_for),
            quoted.get(user_agent) or self._quote_new(user_agent),
            _quote_str(request_id.decode("latin-1")) if request_id else "null",
            quoted.get(authority) or self._quote_new(authority),
            tail,
            f'"{upstream_local}"' if upstream_local else "null",  # ip:port, nothing to escape
            downstream.remote_address,
            quoted.get(failure) or self._quote_new(failure),
            state.trace_id if state is not None else "",
            state.span_id if state is not None else "",
        )

    def _quote_new(self, value: bytes | str | None) -> str:
        quoted = self._quoted
        if len(quoted) >= _MAX_QUOTED:
            quoted.clear()  # paths with ids in them do not repeat: start over
            quoted[None] = "null"
        text = _quote(value)
        quoted[value] = text
        return text

    def _connection_json(self, downstream: ConnectionFacts) -> str:
        destination = downstream.destination
        if destination is not None:
            outbound = self.outbound.get(downstream.listener_name, True)
            direction = "outbound" if outbound else "inbound"
            upstream_host = f'"{destination[0]}:{destination[1]}"'
            cluster = f'"{direction}|{destination[1]}||"'
        else:
            upstream_host = cluster = "null"
        tail = (
            f'"upstream_host":{upstream_host},"upstream_cluster":{cluster},'
            f'"downstream_local_address":{_quote(downstream.local_address or None)}'
        )
        if len(self._connection_fields) < 4096:  # clients come and go; keep it bounded
            self._connection_fields[
                (downstream.listener_name, downstream.destination, downstream.local_address)
            ] = tail
        return tail

    def _text_line(
        self,
        downstream: ConnectionFacts,
        exchange: Exchange,
        headers: dict[bytes, bytes],
        now: float,
        flags: str,
    ) -> str:
        """Envoy's default format (its docs, "Default format string")."""
        request = exchange.request
        upstream_start = exchange.upstream_start
        destination = downstream.destination

        def field(value: bytes | None) -> str:
            return value.decode("latin-1") if value else "-"

        return (
            f"[{self.clock.format(exchange.start + self.wall_offset)}] "
            f'"{field(request.method)} {field(request.target)} HTTP/{field(request.http_version)}" '
            f"{exchange.status} {flags} {exchange.bytes_received} {exchange.bytes_sent} "
            f"{int((now - exchange.start) * 1000)} "
            f"{int((now - upstream_start) * 1000) if upstream_start else '-'} "
            f'"{field(headers.get(b"x-forwarded-for"))}" "{field(headers.get(b"user-agent"))}" '
            f'"{field(exchange.request_id)}" "{field(headers.get(_HOST))}" '
            f'"{f"{destination[0]}:{destination[1]}" if destination else "-"}"\n'
        )

    def _tcp_line(self, relay: TcpRelay, now: float) -> str:
        downstream = relay.downstream
        destination = downstream.destination
        upstream = f"{destination[0]}:{destination[1]}" if destination else None
        start = self.clock.format(relay.start + self.wall_offset)
        duration = int((now - relay.start) * 1000)
        if not self.json_log:
            return (
                f'[{start}] "- - -" 0 {relay.flags} {relay.received} {relay.sent} {duration} - '
                f'"-" "-" "-" "-" "{upstream or "-"}"\n'
            )
        return (
            f'{{"@timestamp":"{self.clock.format(now + self.wall_offset)}","start_time":"{start}",'
            f'"route_name":null,"method":null,"path":null,"protocol":null,"response_code":0,'
            f'"response_flags":"{relay.flags}","response_code_details":null,'
            f'"connection_termination_details":null,'
            f'"bytes_received":{relay.received},"bytes_sent":{relay.sent},"duration":{duration},'
            f'"upstream_service_time":null,"x_forwarded_for":null,"user_agent":null,"request_id":null,'
            f'"authority":null,"upstream_host":{_quote(upstream)},"upstream_cluster":null,'
            f'"upstream_local_address":{_quote(relay.upstream_local or None)},'
            f'"downstream_local_address":{_quote(downstream.local_address or None)},'
            f'"downstream_remote_address":{_quote(downstream.remote_address)},'
            f'"requested_server_name":{_quote(relay.server_name)},'
            f'"upstream_transport_failure_reason":{_quote(relay.transport_failure)},'
            f'"trace_id":null,"span_id":null}}\n'
        )

    # -- scrape time -----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This worker's counts keyed by full label values (several keys may share labels)."""
        self._flush_sums()
        snapshot = Snapshot()
        snapshot.workers = 1
        snapshot.buckets = self.buckets
        snapshot.per_worker = {
            str(self.index): sum(values[M.COUNT] for values in self.http.values())
        }
        for source, labels_of, target in (
            (self.http, self.http_labels, snapshot.http),
            (self.tcp, self.tcp_labels, snapshot.tcp),
        ):
            for key, values in source.items():
                labels = labels_of[key]
                known = target.get(labels)
                if known is None:
                    target[labels] = list(values)
                else:
                    for index, value in enumerate(values):
                        known[index] += value
        for (key, slot), exemplar in self.exemplars.items():
            labels = self.http_labels[key]
            mine = snapshot.exemplars.get((labels, slot))
            if mine is None or mine[3] < exemplar[3]:
                snapshot.exemplars[(labels, slot)] = exemplar
        counters = dict(self.counters)
        if self.tracer is not None:
            counters.update(self.tracer.counters())
        if self.access_log is not None:
            counters["pilotfish_access_log_lines"] = self.access_log.written
            counters["pilotfish_access_log_dropped_lines"] = self.access_log.dropped
        snapshot.counters = counters
        snapshot.process = process_stats(self.started)
        snapshot.stats = self.stats.values()
        return snapshot

    def count(self, name: str, value: float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + value

    async def gathered(self) -> Snapshot:
        """Every worker's counts, summed (worker 0 only)."""
        total, failures = await gathering.gather(
            self.main_pid, self.config.concurrency, self.snapshot()
        )
        if failures:
            self.count("pilotfish_telemetry_gather_failures", failures)
            total.counters["pilotfish_telemetry_gather_failures"] = (
                total.counters.get("pilotfish_telemetry_gather_failures", 0) + failures
            )
        return total

    async def stats_totals(self) -> dict[str, int]:
        """The proxy's own stats summed over every worker, by name (worker 0 only)."""
        return proxy_stats.named((await self.gathered()).stats)

    async def metrics_page(self, request: RequestHead) -> tuple[bytes, bytes]:
        """/stats/prometheus: (body, content type), OpenMetrics when the Accept header asks."""
        # Imported at the first scrape: prometheus_client is about 4 MB of resident
        # memory, and the hot path counts into plain lists, not its metric objects.
        from proxy.telemetry.exposition import render, wants_openmetrics

        accept = b",".join(value for name, value in request.headers if name == b"accept")
        snapshot = await self.gathered()
        own = proxy_stats.described(snapshot.stats)
        return render(snapshot, own, wants_openmetrics(accept))
