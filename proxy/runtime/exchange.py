"""One HTTP exchange in flight: the per-request record, and the pool's callbacks for it.

Shared by the HTTP/1 connection manager and the HTTP/2 streams; telemetry reads it
when the exchange is over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from proxy.core.grpc_frames import MessageCount
from proxy.core.messages import NO_FIELDS, Event, RequestHead, ResponseHead
from proxy.runtime import pause
from proxy.runtime.upstream import UpstreamUser

if TYPE_CHECKING:
    from proxy.runtime.downstream import DownstreamConnection
    from proxy.runtime.upstream import Upstream


# What an exchange holds of the request body or tunnel bytes while it has none: one
# shared empty list, replaced at the first piece (hold_for_upstream, hold_for_tunnel),
# not a list made and freed with every exchange; its response flags likewise (add_flag).
_NOTHING_HELD: Final[list[bytes]] = []
_NO_FLAGS: Final[list[str]] = []


@mypyc_attr(allow_interpreted_subclasses=True)  # HTTP/2's H2Exchange
class Exchange(UpstreamUser):
    """One request/response pair in flight: its upstream, and what logs and metrics need."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "details",
        "downstream",
        "finished",
        "flags",
        "grpc_messages",
        "observe_response",
        "replay",
        "replay_size",
        "request",
        "request_complete",
        "request_id",
        "response",
        "response_complete",
        "response_started",
        "response_trailers",
        "retried",
        "retries",
        "retry_active",
        "reused",
        "sent_continue",
        "start",
        "status",
        "telemetry",
        "timed",
        "trailers",
        "transport_failure",
        "tunnel_pending",
        "upgrade_requested",
        "upgraded",
        "upstream",
        "upstream_buffer",
        "upstream_buffered",
        "upstream_head",
        "upstream_local",
        "upstream_start",
    )

    def __init__(
        self, downstream: DownstreamConnection, request: RequestHead, start: float
    ) -> None:
        self.downstream = downstream
        self.request = request
        self.start = start
        self.upstream_start = 0.0
        self.request_id = b""
        self.upstream_head: RequestHead | None = None
        self.upstream: Upstream | None = None
        # Request body received before an upstream connection was ready (unframed:
        # the upstream codec frames it once it exists, so its state stays true).
        self.upstream_buffer: list[bytes] = _NOTHING_HELD
        self.trailers: list[tuple[bytes, bytes]] = NO_FIELDS  # replaced, never added to
        # CONNECT and Upgrade requests may turn the connection into a byte tunnel; what
        # the client sends after one is held until the upstream's 101 (or 2xx to
        # CONNECT) says so, since after a refusal those bytes must never reach it.
        self.upgrade_requested = request.upgrade is not None or request.method == b"CONNECT"
        self.tunnel_pending: list[bytes] = _NOTHING_HELD
        self.upstream_buffered = 0
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.finished = False
        self.sent_continue = False
        self.upgraded = False
        self.reused = False
        self.retried = False  # sent again after a stale pooled connection (once)
        # Router retries (proxy.core.retry): how many so far, whether one holds a slot of
        # the max_retries circuit breaker, and the request body kept to send again
        # (None until a body arrives; replay_size -1 once it outgrew the limit).
        self.retries = 0
        self.retry_active = False
        self.replay: list[bytes] | None = None
        self.replay_size = 0
        self.status = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.flags: list[str] = _NO_FLAGS  # Envoy response flags, in order: add_flag
        self.details = "via_upstream"
        # For the access log: this end of the upstream connection that answered (`ip:port`),
        # and why the last connect failed, in Envoy's words (upstream.transport_failure).
        self.upstream_local = ""
        self.transport_failure: str | None = None
        # The response as the upstream sent it (headers after hop-by-hop removal), and
        # its trailers: telemetry reads grpc-status and friends from them.
        self.response: ResponseHead | None = None
        self.response_trailers: list[tuple[bytes, bytes]] = NO_FIELDS
        # Per-request state a RequestObserver keeps (a span, say); None when unused.
        self.telemetry: object = None
        # The observer asked, in request_start, to see the response head before the
        # client does (RequestObserver.response_start).
        self.observe_response = False
        self.timed = False  # a route timeout is running (in the worker's deadline queue)
        # gRPC messages each way (request, response), counted as DATA passes for Istio's
        # message counters; None for everything that is not gRPC over HTTP/2.
        self.grpc_messages: tuple[MessageCount, MessageCount] | None = None

    # Sending the request upstream, the same for HTTP/1 and HTTP/2 exchanges.

    def upstream_moved(self, upstream: Upstream) -> None:
        self.upstream_local = upstream.local_address  # the access log's, for the answer

    def attach(self, upstream: Upstream, reused: bool, now: float) -> bool:
        """Take `upstream` and send it the request so far; True if that was all of it."""
        self.upstream = upstream
        self.reused = reused
        self.upstream_start = now
        self.upstream_local = upstream.local_address
        self.transport_failure = None  # an earlier attempt's: this one connected
        assert self.upstream_head is not None
        codec = upstream.codec
        head = codec.send_request_head(self.upstream_head)
        if not self.upstream_buffer and not self.request_complete:
            upstream.write(head)  # the usual case: the head first, the rest as it comes
            return False
        out = [head]
        if self.upstream_buffer:
            out += [codec.send_data(piece) for piece in self.upstream_buffer]
            self.upstream_buffer = _NOTHING_HELD
            self.upstream_buffered = 0
        if self.request_complete:
            out.append(codec.send_end(self.trailers))
        upstream.write(b"".join(out))
        return self.request_complete

    def add_flag(self, flag: str) -> None:
        """Note an Envoy response flag (proxy.core.flags) for the metrics and the log."""
        if self.flags:
            self.flags.append(flag)
        else:
            self.flags = [flag]

    def hold_for_upstream(self, data: bytes) -> None:
        """Keep a piece of request body until an upstream connection is ready (attach)."""
        if self.upstream_buffer:
            self.upstream_buffer.append(data)
        else:
            self.upstream_buffer = [data]

    def hold_for_tunnel(self, data: bytes) -> int:
        """Keep bytes sent after an Upgrade request until the upstream's answer; the
        number of bytes held."""
        if self.tunnel_pending:
            self.tunnel_pending.append(data)
        else:
            self.tunnel_pending = [data]
        return sum(map(len, self.tunnel_pending))

    def release_tunnel(self) -> bytes:
        """The bytes held for the tunnel, now it is open; none are held after."""
        held = b"".join(self.tunnel_pending)
        self.tunnel_pending = _NOTHING_HELD
        return held

    def keep_for_retry(self, data: bytes, limit: int) -> None:
        """Hold a piece of the request body, so a retry can send it again (up to `limit`)."""
        if self.replay_size < 0:
            return
        self.replay_size += len(data)
        if self.replay_size > limit:
            self.replay_size = -1  # too big to hold: this request will not be retried
            self.replay = None
            return
        if self.replay is None:
            self.replay = []
        self.replay.append(data)

    @property
    def replayable(self) -> bool:
        """Whether the whole request can be sent again: held, complete, not a tunnel."""
        return self.replay_size >= 0 and self.request_complete and not self.upgrade_requested

    def rewind(self) -> None:
        """Forget the upstream attempt: the next `attach` sends the held request again."""
        self.upstream = None
        self.upstream_buffer = list(self.replay) if self.replay else _NOTHING_HELD
        self.upstream_buffered = max(self.replay_size, 0)

    def end_request(self, trailers: list[tuple[bytes, bytes]]) -> bool:
        """The request is complete: True if its end went upstream, False if it waits there."""
        self.request_complete = True
        self.trailers = trailers  # kept: a retry sends them again
        upstream = self.upstream
        if upstream is None:
            return False
        end = upstream.codec.send_end(trailers)
        if len(end):  # nothing to send unless the request is chunked
            upstream.write(end)
        return True

    # The pool and the upstream connection call these (UpstreamUser); an exchange that
    # has already finished ignores late callbacks instead of disturbing its successor.

    def upstream_ready(self, connection: Upstream, reused: bool) -> None:
        if self.finished:
            connection.release_to_pool()
        else:
            self.downstream.on_upstream_ready(self, connection, reused)

    def upstream_failed(
        self, status: int, flag: str, details: str, transport_failure: str | None = None
    ) -> None:
        if not self.finished:
            self.transport_failure = transport_failure
            self.downstream.on_upstream_failed(self, status, flag, details)

    def upstream_events(self, events: list[Event]) -> None:
        if not self.finished:
            self.downstream.on_upstream_events(self, events)

    def upstream_lost(self, connection: Upstream) -> None:
        if not self.finished:
            self.downstream.on_upstream_lost(self, connection)

    def upstream_pause_writing(self) -> None:
        self.downstream.pause_reading(pause.UPSTREAM_FULL)

    def upstream_resume_writing(self) -> None:
        self.downstream.resume_reading(pause.UPSTREAM_FULL)
