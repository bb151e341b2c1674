"""HTTP/2 codec on h2: sans-IO server and client adapters speaking the neutral events per stream.

h2 owns the frame layer and the stream state machines; this adapter owns what h2
leaves to its user: request/response validation (RFC 9113 section 8, done here in
one pass instead of h2's several), per-stream send queues that respect the peer's
flow-control windows, receive windows that open only when the runtime says the
other side took the data (backpressure), graceful GOAWAY, and flood limits (PING,
SETTINGS, RST_STREAM, CONTINUATION) answered with ENHANCE_YOUR_CALM as Envoy does.
With `h2_connection.py` (h2's connection, on its hot paths), `h2_steps.py` (its state
machines, stepped) and `h2_hpack.py`, the only modules that import h2.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.stream
from hyperframe.frame import GoAwayFrame

from proxy.core.codecs.h2_connection import Connection
from proxy.core.codecs.h2_hpack import MemoDecoder, PlainEncoder
from proxy.core.messages import (
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
)
from proxy.core.targets import is_host

# RFC 9113 section 7 error codes (ints, so the runtime need not import h2).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
ENHANCE_YOUR_CALM: Final = 0xB

_SETTINGS: Final = h2.settings.SettingCodes
# h2's event classes as C statics: `h2.events.X` in a function body is two module
# attribute lookups each time (about 4% of a gRPC call when _convert tested them so).
_DATA_RECEIVED: Final = h2.events.DataReceived
_STREAM_ENDED: Final = h2.events.StreamEnded
_WINDOW_UPDATED: Final = h2.events.WindowUpdated
_TRAILERS_RECEIVED: Final = h2.events.TrailersReceived
_STREAM_RESET: Final = h2.events.StreamReset
_PING_RECEIVED: Final = h2.events.PingReceived
_REMOTE_SETTINGS_CHANGED: Final = h2.events.RemoteSettingsChanged
_CONNECTION_TERMINATED: Final = h2.events.ConnectionTerminated
_REQUEST_RECEIVED: Final = h2.events.RequestReceived
_RESPONSE_RECEIVED: Final = h2.events.ResponseReceived
_INFORMATIONAL_RESPONSE_RECEIVED: Final = h2.events.InformationalResponseReceived
# RFC 9113 section 8.2.2: connection-specific fields make a message malformed.
_CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# A field name is a lower-case token (RFC 9110 section 5.6.2, RFC 9113 section 8.2.1).
_BAD_NAME_CHAR: Final = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]").search
# What a method may not hold (RFC 9110 section 9.1: a token, of either case), and what a
# path may not (RFC 9113 section 8.3.1 with RFC 3986: no whitespace or control bytes):
# passed on to HTTP/1, either would make the upstream read another request line.
_BAD_METHOD_CHAR: Final = re.compile(rb"[^A-Za-z0-9!#$%&'*+\-.^_`|~]").search
_BAD_PATH_CHAR: Final = re.compile(rb"[\x00-\x20\x7f]").search
# Names found valid, so that a name seen before costs one set lookup (bounded: names
# come from peers).
_GOOD_NAMES: Final[set[bytes]] = set()
_GOOD_NAMES_MAX: Final = 4096


def _bad_name(name: bytes) -> bool:
    if name in _GOOD_NAMES:
        return False
    if not name:
        return True
    if _BAD_NAME_CHAR(name) is not None:
        return True
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(name)
    return False


def _bad_value(value: bytes) -> bool:
    """Values must not carry CR, LF or NUL, nor start or end with whitespace: those are
    how an HTTP/2 request smuggles a second request into an HTTP/1 upstream. (A regex
    for this took half a microsecond a field.)"""
    if not value:
        return False
    first = value[0]
    last = value[-1]
    if first == 32 or first == 9 or last == 32 or last == 9:
        return True
    # Integers, not b"\r": CPython's `bytes in bytes` first tries the needle as an
    # integer and raises (and clears) a TypeError with a formatted message each time.
    return 13 in value or 10 in value or 0 in value


_STATUS: Final = {code: str(code).encode() for code in range(100, 600)}
# Request header lists memoised per connection once validated, and the longest memoised.
_MEMO_REQUESTS: Final = 16
_MEMO_FIELDS: Final = 32
_MEMO_BYTES: Final = 2048
_REQUEST_PSEUDO: Final = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Per-connection limits; over a flood limit the peer gets GOAWAY ENHANCE_YOUR_CALM."""

    # 100: RFC 9113's recommended minimum, and nginx's and h2's default.
    max_concurrent_streams: int = 100
    # Bytes a peer may send on one stream before we acknowledge any: the per-stream
    # memory bound (the runtime's buffer_high_water).
    stream_window: int = 256 * 1024
    # 60 KiB: Envoy's max_request_headers_kb.
    max_header_list_size: int = 60 * 1024
    # 100: Envoy's max_headers_count.
    max_header_count: int = 100
    # Flood limits, per `flood_interval` seconds. Legitimate clients PING for keepalive
    # (seconds apart) and change SETTINGS once or twice per connection.
    flood_interval: float = 1.0
    max_pings: int = 100
    max_settings: int = 100
    # Rapid reset (CVE-2023-44487): streams the client opened and reset itself.
    max_resets: int = 200


# -- events besides the neutral ones ----------------------------------------------------


@dataclass(slots=True)
class StreamReset:
    """A stream was reset: by the peer (RST_STREAM, `remote`), or by the codec itself."""

    stream_id: int
    error_code: int
    remote: bool = True


@dataclass(slots=True)
class SendDrained:
    """All queued for this stream went out (its window opened): release what was held back."""

    stream_id: int


@dataclass(slots=True)
class GoAway:
    """The connection is ending: the peer sent GOAWAY, or we did because it broke the protocol.

    `local` GOAWAYs are already in the output; write it, then close. Streams above
    `last_stream_id` were never processed by the side that sent it.
    """

    error_code: int
    last_stream_id: int
    local: bool
    reason: str


@dataclass(slots=True)
class SettingsChanged:
    """The peer's SETTINGS arrived (the first one too): its MAX_CONCURRENT_STREAMS now."""

    max_concurrent_streams: int


H2Event = Event | StreamReset | SendDrained | GoAway | SettingsChanged


class _Calm(Exception):
    """A flood limit was crossed."""


class _H2Codec:
    """What the server and client adapters share: sending with flow control, acks, GOAWAY."""

    __slots__ = (
        "closed",
        "conn",
        "flood_start",
        "limits",
        "malformed",
        "pings",
        "queued",
        "queued_end",
        "resets",
        "settings",
        "trailers_stream",
        "tx_resets",
        "write_blocked",
    )

    def __init__(self, client_side: bool, limits: H2Limits) -> None:
        # h2's own header validation and normalisation are off: this adapter validates
        # in one pass while converting, and sends lower-case headers it built itself.
        config = h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = Connection(config)
        conn.encoder = PlainEncoder()
        conn.decoder = MemoDecoder(limits.max_header_list_size)
        initial: dict[Any, int] = {
            _SETTINGS.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            _SETTINGS.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            _SETTINGS.INITIAL_WINDOW_SIZE: limits.stream_window,
        }
        if client_side:
            initial[_SETTINGS.ENABLE_PUSH] = 0
        conn.local_settings = h2.settings.Settings(client=client_side, initial_values=initial)
        conn.initiate_connection()
        if not client_side:
            # h2 turns a stream over the advertised limit into a connection error; RFC 9113
            # section 5.1.2 wants a stream error. h2 enforces twice the advertised limit
            # (the connection error is kept for gross abuse) and the runtime refuses the
            # streams in between with REFUSED_STREAM, which clients retry.
            hard_limit = deque([2 * limits.max_concurrent_streams])
            conn.local_settings._settings[_SETTINGS.MAX_CONCURRENT_STREAMS] = hard_limit
        # The connection window covers every stream's window, so one stream holding
        # its window (a slow reader) never stalls the others.
        connection_window = limits.stream_window * limits.max_concurrent_streams
        conn.increment_flow_control_window(connection_window - 65535)
        self.conn = conn
        self.limits = limits
        self.queued: dict[int, deque[memoryview]] = {}
        # Stream -> trailers to send once its queue drains (an empty list: END_STREAM only).
        self.queued_end: dict[int, Headers] = {}
        self.closed = False
        self.flood_start = 0.0
        self.pings = 0
        self.settings = 0
        self.resets = 0
        self.trailers_stream = 0
        # Counts for the runtime's stats (it takes and zeroes them; the codec has no stats).
        self.tx_resets = 0
        self.malformed = 0
        # The socket's buffer is full: queue instead of making frames (the peer's window
        # alone would let a fast reader's 16 MiB pile up in our write buffer).
        self.write_blocked = False

    # -- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def unsent(self) -> int:
        """Bytes framed and not yet taken by data_to_send."""
        return len(self.conn._data_to_send)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Queue body bytes; returns how many are still waiting for the peer's window."""
        queue = self.queued.get(stream_id)
        if queue is None:
            if data and not self.write_blocked:
                # Nothing queued on this stream: when the windows and the frame size take
                # it all, one frame goes out now (the common case, a small response).
                try:
                    if self.conn.send_data_now(stream_id, data, end_stream):
                        return 0
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    self.forget(stream_id)  # reset by the peer meanwhile: dropped
                    return 0
            queue = self.queued[stream_id] = deque()
        if data:
            queue.append(memoryview(data))
        if end_stream:
            self.queued_end[stream_id] = []
        return self._push(stream_id)

    def pause(self) -> None:
        """The socket cannot take more: stop making DATA frames."""
        self.write_blocked = True

    def resume(self) -> list[H2Event]:
        """The socket drained: push what waited; SendDrained for each stream emptied."""
        self.write_blocked = False
        out: list[H2Event] = []
        if self.queued:
            self._window_opened(0, out)
        return out

    def send_end(self, stream_id: int, trailers: Headers) -> None:
        """End the stream, with trailers if any, after whatever is still queued."""
        if stream_id not in self.queued and not self.write_blocked:
            # Nothing queued: the end goes out now.
            try:
                if trailers:
                    self.conn.send_headers(stream_id, trailers, end_stream=True)
                else:
                    self.conn.end_stream(stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                self.forget(stream_id)  # reset by the peer meanwhile: dropped
            return
        self.queued_end[stream_id] = trailers
        if stream_id not in self.queued:
            self.queued[stream_id] = deque()
        self._push(stream_id)

    def pending(self, stream_id: int) -> int:
        queue = self.queued.get(stream_id)
        return sum(len(piece) for piece in queue) if queue else 0

    def _push(self, stream_id: int) -> int:
        """Send as much of a stream's queue as the windows allow; the bytes left behind."""
        queue = self.queued[stream_id]
        if self.write_blocked:
            return sum(len(piece) for piece in queue) or 1
        conn = self.conn
        try:
            window = conn.local_flow_control_window(stream_id)
            frame_size = conn.max_outbound_frame_size
            while queue and window > 0:
                piece = queue[0]
                size = len(piece)
                if size > window or size > frame_size:
                    take = min(window, frame_size)
                    conn.send_data(stream_id, piece[:take])
                    queue[0] = piece[take:]
                    window -= take
                    continue
                queue.popleft()
                window -= size
                if not queue and stream_id in self.queued_end:
                    trailers = self.queued_end.pop(stream_id)
                    conn.send_data(stream_id, piece, end_stream=not trailers)
                    if trailers:
                        conn.send_headers(stream_id, trailers, end_stream=True)
                    del self.queued[stream_id]
                    return 0
                conn.send_data(stream_id, piece)
            if not queue:
                if stream_id in self.queued_end:
                    trailers = self.queued_end.pop(stream_id)
                    if trailers:
                        conn.send_headers(stream_id, trailers, end_stream=True)
                    else:
                        conn.end_stream(stream_id)
                del self.queued[stream_id]
                return 0
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            # The peer reset the stream (or the connection ended) meanwhile: drop it.
            self.forget(stream_id)
            return 0
        return sum(len(piece) for piece in queue)

    def _window_opened(self, stream_id: int, out: list[H2Event]) -> None:
        """A window grew: push the streams waiting on it (all of them for the connection's)."""
        if stream_id:
            if stream_id in self.queued and self._push(stream_id) == 0:
                out.append(SendDrained(stream_id))
            return
        for waiting in list(self.queued):
            if waiting in self.queued and self._push(waiting) == 0:
                out.append(SendDrained(waiting))

    def forget(self, stream_id: int) -> None:
        self.queued.pop(stream_id, None)
        self.queued_end.pop(stream_id, None)

    def release(self) -> None:
        """The connection is gone: drop h2's self-referencing dispatch table and our queues."""
        self.closed = True
        self.queued.clear()
        self.queued_end.clear()
        self.conn._frame_dispatch_table = {}

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The other side took `size` bytes of this stream's body: let the peer send more."""
        if size and not self.closed:
            self.conn.acknowledge_received_data(size, stream_id)

    def reset(self, stream_id: int, error_code: int) -> None:
        self.forget(stream_id)
        if self.closed:
            return
        self.tx_resets += 1
        # Already closed on both sides: nothing to reset.
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, error_code)

    def goaway(self, error_code: int, last_stream_id: int | None = None) -> None:
        """GOAWAY without closing h2's state, so streams below `last_stream_id` can finish.

        h2's close_connection moves its state machine to CLOSED, after which no stream
        may send anything; a graceful drain needs the frame without the transition.
        """
        frame = GoAwayFrame(0)
        frame.last_stream_id = (
            self.conn.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        )
        frame.error_code = error_code
        out: bytearray = self.conn._data_to_send
        out += frame.serialize()

    def terminate(self, error_code: int, reason: str) -> GoAway:
        """A connection error: GOAWAY with `error_code` and nothing more on this connection."""
        if not self.closed:
            self.closed = True
            self.conn.close_connection(error_code)
        return GoAway(error_code, self.conn.highest_inbound_stream_id, True, reason)

    def _failed(self, error: h2.exceptions.ProtocolError) -> GoAway:
        """h2 raised a connection error and queued its GOAWAY; floods get ENHANCE_YOUR_CALM."""
        self.closed = True
        code = int(error.error_code)
        reason = str(error) or type(error).__name__
        if "continuation" in reason.lower():
            # h2 answers CONTINUATION floods (over 64 frames) with PROTOCOL_ERROR; Envoy,
            # and this proxy, treat that as abuse: rewrite the GOAWAY h2 just queued.
            code = ENHANCE_YOUR_CALM
            pending = self.conn._data_to_send
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.conn.highest_inbound_stream_id
            frame.error_code = PROTOCOL_ERROR
            old = frame.serialize()
            if pending.endswith(old):
                frame.error_code = ENHANCE_YOUR_CALM
                pending[-len(old) :] = frame.serialize()
        return GoAway(code, self.conn.highest_inbound_stream_id, True, reason)

    def _flood(self, now: float) -> None:
        if now - self.flood_start > self.limits.flood_interval:
            self.flood_start = now
            self.pings = self.settings = self.resets = 0

    # -- input -------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[H2Event]:
        """Bytes from the peer -> events (neutral ones per stream, and the connection's)."""
        if self.closed:
            return []
        try:
            h2_events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            return [self._failed(error)]
        out: list[H2Event] = []
        try:
            self._flood(now)
            self._convert(h2_events, out)
        except _Calm as calm:
            out.append(self.terminate(ENHANCE_YOUR_CALM, str(calm)))
        return out

    def _convert(self, h2_events: list[h2.events.Event], out: list[H2Event]) -> None:
        limits = self.limits
        for event in h2_events:
            kind = type(event)
            if kind is _DATA_RECEIVED:
                event = cast("h2.events.DataReceived", event)
                data = event.data or b""
                padding = (event.flow_controlled_length or 0) - len(data)
                if padding:
                    self.conn.acknowledge_received_data(padding, event.stream_id or 0)
                out.append(Data(event.stream_id or 0, data))
            elif kind is _STREAM_ENDED:
                event = cast("h2.events.StreamEnded", event)
                stream_id = event.stream_id or 0
                if self.trailers_stream == stream_id:
                    self.trailers_stream = 0  # its EndOfMessage went out with the trailers
                else:
                    out.append(EndOfMessage(stream_id, []))
            elif kind is _WINDOW_UPDATED:
                event = cast("h2.events.WindowUpdated", event)
                if self.queued:
                    self._window_opened(event.stream_id or 0, out)
            elif kind is _TRAILERS_RECEIVED:
                event = cast("h2.events.TrailersReceived", event)
                self._trailers(event.stream_id or 0, cast(Headers, event.headers or []), out)
            elif kind is _STREAM_RESET:
                event = cast("h2.events.StreamReset", event)
                stream_id = event.stream_id or 0
                self.forget(stream_id)
                if event.remote_reset:
                    self.resets += 1
                    if self.resets > limits.max_resets:
                        raise _Calm("rapid reset: too many streams reset by the peer")
                code = int(event.error_code or 0)
                out.append(StreamReset(stream_id, code, bool(event.remote_reset)))
            elif kind is _PING_RECEIVED:
                self.pings += 1
                if self.pings > limits.max_pings:
                    raise _Calm("PING flood")
            elif kind is _REMOTE_SETTINGS_CHANGED:
                event = cast("h2.events.RemoteSettingsChanged", event)
                self.settings += 1
                if self.settings > limits.max_settings:
                    raise _Calm("SETTINGS flood")
                changed = event.changed_settings
                if _SETTINGS.INITIAL_WINDOW_SIZE in changed and self.queued:
                    self._window_opened(0, out)
                value = self.conn.remote_settings.max_concurrent_streams
                out.append(SettingsChanged(int(value)))
            elif kind is _CONNECTION_TERMINATED:
                event = cast("h2.events.ConnectionTerminated", event)
                self.closed = True
                out.append(
                    GoAway(
                        int(event.error_code or 0), event.last_stream_id or 0, False, "peer GOAWAY"
                    )
                )
            else:
                self._other(event, out)

    def _other(self, event: h2.events.Event, out: list[H2Event]) -> None:
        """Server- or client-specific events (headers)."""

    def _trailers(self, stream_id: int, headers: Headers, out: list[H2Event]) -> None:
        trailers: Headers = []
        for name, value in headers:
            if name.startswith(b":") or _bad_name(name) or _bad_value(value):
                self.malformed += 1
                self.reset(stream_id, PROTOCOL_ERROR)
                out.append(StreamReset(stream_id, PROTOCOL_ERROR, False))
                return
            trailers.append((name, value))
        self.trailers_stream = stream_id
        out.append(EndOfMessage(stream_id, trailers))


class H2ServerCodec(_H2Codec):
    """The downstream side: requests in, responses out."""

    __slots__ = ("first_frame_seen", "opening", "requests")

    def __init__(self, limits: H2Limits | None = None) -> None:
        super().__init__(False, limits or H2Limits())
        self.first_frame_seen = False
        self.opening = b""  # the connection's first bytes, until the first frame's type
        # Header list -> (method, path, fields, content-length) of a valid request.
        self.requests: dict[tuple[Any, ...], tuple[bytes, bytes, Headers, int | None]] = {}

    def receive(self, data: bytes, now: float) -> list[H2Event]:
        if not self.first_frame_seen:
            # RFC 9113 section 3.4: the preface's first frame must be SETTINGS; h2 accepts any.
            # Read across reads: a client's first frame may come split anywhere.
            opening = self.opening + data
            offset = 24 if opening.startswith(b"PRI ") else 0
            self.opening = opening
            if len(opening) >= offset + 4:
                self.first_frame_seen = True
                self.opening = b""
                if opening[offset + 3] != 0x4:
                    self.closed = True
                    self.conn.close_connection(PROTOCOL_ERROR)
                    return [GoAway(PROTOCOL_ERROR, 0, True, "preface not followed by SETTINGS")]
        return super().receive(data, now)

    def _other(self, event: h2.events.Event, out: list[H2Event]) -> None:
        if type(event) is _REQUEST_RECEIVED:
            stream_id = event.stream_id or 0
            head = self._request(
                stream_id, cast(Headers, event.headers or []), event.stream_ended is not None
            )
            if head is None:
                self.malformed += 1
                self.reset(stream_id, PROTOCOL_ERROR)
            else:
                out.append(head)

    def _request(self, stream_id: int, headers: Headers, ended: bool) -> RequestHead | None:
        """RFC 9113 section 8.3.1 checks while converting; None for a malformed request."""
        # A client repeats its header lists (h2load, health checks, a gRPC method without
        # per-call metadata): a list validated before on this connection is not re-read.
        key = tuple(headers) if len(headers) <= _MEMO_FIELDS else None
        parsed = self.requests.get(key) if key is not None else None
        if parsed is None:
            parsed = self._parse_request(headers)
            if parsed is None:
                return None
            # Bounded in bytes too: the memo keeps the decoded values alive.
            if key is not None and sum(len(n) + len(v) for n, v in key) <= _MEMO_BYTES:
                if len(self.requests) >= _MEMO_REQUESTS:
                    self.requests.clear()
                self.requests[key] = parsed
        method, path, fields, content_length = parsed
        if ended and content_length is None and method not in (b"GET", b"HEAD"):
            content_length = 0
        # A body of unknown length goes to an HTTP/1 upstream chunked.
        chunked = not ended and content_length is None
        return RequestHead(
            stream_id, method, path, list(fields), b"2", True, content_length, chunked
        )

    def _parse_request(self, headers: Headers) -> tuple[bytes, bytes, Headers, int | None] | None:
        method = scheme = path = authority = None
        fields: Headers = []
        content_length: int | None = None
        regular = False
        if len(headers) > self.limits.max_header_count + 5:
            return None
        for name, value in headers:
            if name.startswith(b":"):
                if regular or name not in _REQUEST_PSEUDO:
                    return None
                if name == b":method":
                    if method is not None:
                        return None
                    method = value
                elif name == b":path":
                    if path is not None:
                        return None
                    path = value
                elif name == b":scheme":
                    if scheme is not None:
                        return None
                    scheme = value
                elif name == b":authority":
                    if authority is not None:
                        return None
                    authority = value
                else:
                    return None  # :protocol: extended CONNECT is not advertised
                continue
            regular = True
            if _bad_name(name) or _bad_value(value) or name in _CONNECTION_SPECIFIC:
                return None
            if name == b"te":
                if value != b"trailers":
                    return None
            elif name == b"content-length":
                if not value.isdigit() or (
                    content_length is not None and int(value) != content_length
                ):
                    return None
                content_length = int(value)
                continue
            elif name == b"host" and authority is not None:
                continue  # :authority wins (RFC 9113 section 8.3.1)
            fields.append((name, value))
        if not method or _BAD_METHOD_CHAR(method) is not None:
            return None
        if method == b"CONNECT":
            if scheme is not None or path is not None or authority is None:
                return None
            path = authority
        elif (
            scheme is None
            or not path
            or _BAD_PATH_CHAR(path) is not None
            or not (path[0] == 0x2F or (path == b"*" and method == b"OPTIONS"))
        ):
            return None
        if authority is not None:
            if not is_host(authority):
                return None
            fields.insert(0, (b"host", authority))
        return method, path, fields, content_length

    def send_response(self, stream_id: int, head: ResponseHead, end_stream: bool) -> None:
        status = _STATUS.get(head.status) or str(head.status).encode()
        headers: Headers = [(b":status", status)]
        headers += head.headers
        if head.content_length is not None:
            headers.append((b"content-length", str(head.content_length).encode()))
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.forget(stream_id)

    def drain(self) -> None:
        """Graceful GOAWAY (NO_ERROR): streams opened so far finish, new ones are refused."""
        self.goaway(NO_ERROR)

    @property
    def highest_stream_id(self) -> int:
        return self.conn.highest_inbound_stream_id


class H2ClientCodec(_H2Codec):
    """The upstream side: requests out, responses in."""

    __slots__ = ()

    def __init__(self, limits: H2Limits | None = None) -> None:
        super().__init__(True, limits or H2Limits())

    def send_request(self, head: RequestHead, scheme: bytes, end_stream: bool) -> int:
        """Open a stream with this request's headers; returns its id."""
        authority = b""
        fields: Headers = []
        grpc = False
        for name, value in head.headers:
            if name == b"host":
                authority = value
            elif name not in _CONNECTION_SPECIFIC and name != b"te":
                fields.append((name, value))
                if name == b"content-type" and value.startswith(b"application/grpc"):
                    grpc = True
        headers: Headers = [(b":method", head.method), (b":scheme", scheme)]
        headers.append((b":authority", authority or b"localhost"))
        headers.append((b":path", head.target))
        if head.content_length is not None and head.method not in (b"GET", b"HEAD"):
            headers.append((b"content-length", str(head.content_length).encode()))
        headers += fields
        if grpc:
            headers.append((b"te", b"trailers"))  # gRPC servers require it (gRPC over HTTP/2 spec)
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        return stream_id

    def _other(self, event: h2.events.Event, out: list[H2Event]) -> None:
        kind = type(event)
        if kind is _RESPONSE_RECEIVED or kind is _INFORMATIONAL_RESPONSE_RECEIVED:
            event = cast(
                "h2.events.ResponseReceived | h2.events.InformationalResponseReceived", event
            )
            stream_id = event.stream_id or 0
            head = _response(stream_id, cast(Headers, event.headers or []))
            if head is None:
                self.reset(stream_id, PROTOCOL_ERROR)
                out.append(
                    ProtocolError(stream_id, 502, "upstream sent a malformed HTTP/2 response")
                )
            else:
                out.append(head)

    @property
    def max_outbound_streams(self) -> int:
        return int(self.conn.remote_settings.max_concurrent_streams)


def _response(stream_id: int, headers: Headers) -> ResponseHead | None:
    status = 0
    fields: Headers = []
    content_length: int | None = None
    for name, value in headers:
        if name.startswith(b":"):
            if name != b":status" or status or fields or not value.isdigit():
                return None
            status = int(value)
            continue
        if _bad_name(name) or _bad_value(value) or name in _CONNECTION_SPECIFIC:
            return None
        if name == b"content-length":
            if not value.isdigit():
                return None
            content_length = int(value)
            continue
        fields.append((name, value))
    if not 100 <= status <= 999:
        return None
    return ResponseHead(
        stream_id, status, fields, b"", b"2", True, content_length, content_length is None
    )
