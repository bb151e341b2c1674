"""The codec's direct HEADERS/DATA writing (proxy/core/codecs/h2_connection.py `Connection`) against stock
h2: the same operations give the same bytes, the same state and the same errors."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from proxy.core.codecs.h2 import H2ServerCodec
from proxy.core.codecs.h2_connection import Connection, FrameBuffer
from proxy.core.codecs.h2_hpack import PlainEncoder, length_prefix
from proxy.core.messages import RequestHead

REQUEST = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"a")]


def _config(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


def _same_outcome(
    stock: h2.connection.H2Connection,
    ours: h2.connection.H2Connection,
    action: Callable[[h2.connection.H2Connection], Any],
) -> tuple[type | None, bytes]:
    """Run `action` on both: the same exception type (or none) and the same bytes out."""
    outcomes: list[type | None] = []
    for conn in (stock, ours):
        try:
            action(conn)
            outcomes.append(None)
        except Exception as error:  # compared below
            outcomes.append(type(error))
    assert outcomes[0] == outcomes[1]
    stock_bytes = stock.data_to_send()
    assert ours.data_to_send() == stock_bytes
    return outcomes[0], stock_bytes


def _same_streams(stock: h2.connection.H2Connection, ours: h2.connection.H2Connection) -> None:
    """Every stream, its state machine and its window manager hold the same attributes
    (names and values) in both: `Connection` builds new streams and steps their machines
    itself, and an h2 upgrade that adds an attribute must show up here."""
    assert ours.streams.keys() == stock.streams.keys()
    assert ours.highest_inbound_stream_id == stock.highest_inbound_stream_id
    for stream_id, stream in stock.streams.items():
        mine = ours.streams[stream_id]
        parts = ("state_machine", "_inbound_window_manager", "config")
        assert vars(mine).keys() == vars(stream).keys()
        assert {k: v for k, v in vars(mine).items() if k not in parts} == {
            k: v for k, v in vars(stream).items() if k not in parts
        }
        assert vars(mine.state_machine) == vars(stream.state_machine)
        assert vars(mine._inbound_window_manager) == vars(stream._inbound_window_manager)


class Pair:
    """A stock h2 server and a `Connection` server fed the same client bytes."""

    def __init__(self) -> None:
        self.client = h2.connection.H2Connection(_config(True))
        self.client.initiate_connection()
        self.stock = h2.connection.H2Connection(_config(False))
        self.ours = Connection(_config(False))
        assert self.ours.fast_send
        for conn in (self.stock, self.ours):
            conn.encoder = PlainEncoder()
            conn.initiate_connection()
        self.feed(self.client.data_to_send())
        self.client.receive_data(self.stock.data_to_send())
        self.ours.data_to_send()
        self.feed(self.client.data_to_send())  # the SETTINGS ack
        self.deliver = True  # pass what the servers send on to the client

    def feed(self, data: bytes) -> None:
        stock = [type(event) for event in self.stock.receive_data(data)]
        assert [type(event) for event in self.ours.receive_data(data)] == stock

    def request(self, end_stream: bool = True) -> int:
        stream_id: int = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, REQUEST, end_stream=end_stream)
        self.feed(self.client.data_to_send())
        return stream_id

    def both(self, action: Callable[[h2.connection.H2Connection], Any]) -> type | None:
        """Run `action` on both; the same exception (or none), the same bytes, the same state."""
        outcome, stock_bytes = _same_outcome(self.stock, self.ours, action)
        assert self.ours.outbound_flow_control_window == self.stock.outbound_flow_control_window
        assert self.ours.state_machine.state == self.stock.state_machine.state
        _same_streams(self.stock, self.ours)
        closed = list(self.stock._closed_streams.items())
        assert list(self.ours._closed_streams.items()) == closed
        for stream_id, stream in self.stock.streams.items():
            mine = self.ours.streams[stream_id]
            assert mine.state_machine.state == stream.state_machine.state
            assert mine.outbound_flow_control_window == stream.outbound_flow_control_window
            assert mine.request_method == stream.request_method
        if stock_bytes and self.deliver:
            self.client.receive_data(stock_bytes)
        return outcome


@pytest.fixture
def pair() -> Pair:
    return Pair()


def test_response_headers_data_and_trailers(pair: Pair) -> None:
    a, b, c = pair.request(), pair.request(), pair.request()
    pair.both(lambda conn: conn.send_headers(a, [(b":status", b"200"), (b"x", b"1")]))
    pair.both(lambda conn: conn.send_data(a, b"hello"))
    pair.both(lambda conn: conn.send_data(a, memoryview(b"world"), end_stream=True))
    pair.both(lambda conn: conn.send_headers(b, [(b":status", b"204")], end_stream=True))
    pair.both(lambda conn: conn.send_headers(c, [(b":status", b"100")]))  # informational
    pair.both(lambda conn: conn.send_headers(c, [(b":status", b"200")]))
    pair.both(lambda conn: conn.send_data(c, b""))
    pair.both(lambda conn: conn.send_headers(c, [(b"grpc-status", b"0")], end_stream=True))
    d, e = pair.request(), pair.request()
    pair.both(lambda conn: conn.send_headers(d, [(b":status", b"200")]))
    assert pair.both(lambda conn: conn.end_stream(d)) is None
    assert pair.both(lambda conn: conn.end_stream(d)) is h2.exceptions.StreamClosedError
    assert pair.both(lambda conn: conn.end_stream(99)) is h2.exceptions.NoSuchStreamError
    pair.deliver = False  # h2 ends a stream before its HEADERS, which the client cannot take
    assert pair.both(lambda conn: conn.end_stream(e)) is None


def test_header_blocks_over_the_frame_size_take_continuation_frames(pair: Pair) -> None:
    a = pair.request()
    big = [(b":status", b"200")] + [(b"x-%d" % i, b"v" * 1000) for i in range(40)]
    pair.both(lambda conn: conn.send_headers(a, big, end_stream=True))


def test_the_same_errors(pair: Pair) -> None:
    protocol = h2.exceptions.ProtocolError
    a, b = pair.request(), pair.request()
    # END_STREAM on an informational response; trailers without END_STREAM.
    assert pair.both(lambda conn: conn.send_headers(a, [(b":status", b"103")], True)) is protocol
    assert pair.both(lambda conn: conn.send_headers(b, [(b":status", b"200")])) is None
    assert pair.both(lambda conn: conn.send_headers(b, [(b"x", b"1")])) is protocol
    c, d = pair.request(), pair.request()
    pair.deliver = False  # h2 sends DATA before HEADERS, which the client cannot take
    # DATA before HEADERS; over the frame size; after the end.
    assert pair.both(lambda conn: conn.send_data(c, b"x")) is None
    pair.both(lambda conn: conn.send_headers(d, [(b":status", b"200")]))
    too_large = h2.exceptions.FrameTooLargeError
    assert pair.both(lambda conn: conn.send_data(d, b"x" * 16385)) is too_large
    assert pair.both(lambda conn: conn.send_data(d, b"x", end_stream=True)) is None
    closed = h2.exceptions.StreamClosedError
    assert pair.both(lambda conn: conn.send_data(d, b"x")) is closed
    assert pair.both(lambda conn: conn.send_headers(d, [(b"x", b"1")], end_stream=True)) is closed
    no_such = h2.exceptions.NoSuchStreamError
    assert pair.both(lambda conn: conn.send_data(99, b"x")) is no_such  # never opened


def test_flow_control_windows(pair: Pair) -> None:
    a = pair.request()
    pair.both(lambda conn: conn.send_headers(a, [(b":status", b"200")]))
    for _ in range(3):
        pair.both(lambda conn: conn.send_data(a, b"x" * 16384))
    pair.both(lambda conn: conn.send_data(a, b"x" * 16383))  # exactly the 65535 window
    assert pair.both(lambda conn: conn.send_data(a, b"x")) is h2.exceptions.FlowControlError
    pair.both(lambda conn: conn.send_data(a, b"", end_stream=True))  # zero bytes need no window


def test_a_reset_stream(pair: Pair) -> None:
    a = pair.request(end_stream=False)
    pair.client.reset_stream(a)
    pair.feed(pair.client.data_to_send())
    pair.both(lambda conn: conn.send_headers(a, [(b":status", b"200")]))
    pair.both(lambda conn: conn.send_data(a, b"x"))


def test_acknowledged_data_as_h2_does(pair: Pair) -> None:
    """WINDOW_UPDATEs for the connection and the stream when half a window is taken, none
    for a stream that has closed, h2's errors for bad arguments and unknown streams."""

    def same_windows() -> None:
        manager = "_inbound_flow_control_window_manager"
        assert vars(getattr(pair.ours, manager)) == vars(getattr(pair.stock, manager))

    a, b = pair.request(end_stream=False), pair.request(end_stream=False)
    for stream_id in (a, a, b):  # 48 KiB of the connection's 64 KiB window
        pair.client.send_data(stream_id, b"x" * 16384)
        pair.feed(pair.client.data_to_send())
    for size in (0, 1000, 15384, 16384):
        assert pair.both(lambda conn, size=size: conn.acknowledge_received_data(size, a)) is None
        same_windows()
    pair.both(lambda conn: conn.send_headers(b, [(b":status", b"200")], end_stream=True))
    pair.client.end_stream(b)
    pair.feed(pair.client.data_to_send())  # b is closed now
    assert pair.both(lambda conn: conn.acknowledge_received_data(16384, b)) is None
    same_windows()
    assert pair.both(lambda conn: conn.acknowledge_received_data(-1, a)) is ValueError
    assert pair.both(lambda conn: conn.acknowledge_received_data(1, 0)) is ValueError
    no_such = h2.exceptions.NoSuchStreamError
    assert pair.both(lambda conn: conn.acknowledge_received_data(1, 99)) is no_such
    assert (
        pair.both(lambda conn: conn.acknowledge_received_data(1, 2)) is no_such
    )  # ours, never opened
    same_windows()


def test_string_length_prefixes_as_hpack_encodes_them() -> None:
    for length in [*range(300), 16383, 16384, 2**21, 2**28 + 5]:
        assert length_prefix(length) == bytes(hpack.hpack.encode_integer(length, 7))


class ClientPair:
    """A stock h2 client and a `Connection` client, both talking to one stock server."""

    def __init__(self, max_streams: int | None = 100) -> None:
        """`max_streams` None: the server sends no MAX_CONCURRENT_STREAMS (unlimited)."""
        self.server = h2.connection.H2Connection(_config(False))
        self.server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={}
            if max_streams is None
            else {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self.stock = h2.connection.H2Connection(_config(True))
        self.ours = Connection(_config(True))
        for conn in (self.stock, self.ours):
            conn.encoder = PlainEncoder()
            conn.initiate_connection()
        preface = self.stock.data_to_send()
        assert self.ours.data_to_send() == preface
        self.server.initiate_connection()
        self.server.receive_data(preface)
        settings = self.server.data_to_send()
        for conn in (self.stock, self.ours):
            conn.receive_data(settings)
        self.stock.data_to_send()
        self.ours.data_to_send()

    def both(self, action: Callable[[h2.connection.H2Connection], Any]) -> type | None:
        outcome, _ = _same_outcome(self.stock, self.ours, action)
        _same_streams(self.stock, self.ours)
        assert self.ours.highest_outbound_stream_id == self.stock.highest_outbound_stream_id
        for stream_id, stream in self.stock.streams.items():
            mine = self.ours.streams[stream_id]
            assert mine.state_machine.state == stream.state_machine.state
            assert mine._authority == stream._authority
            assert mine.request_method == stream.request_method
        return outcome


def test_requests_open_streams_as_h2_does() -> None:
    pair = ClientPair()
    post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    assert pair.both(lambda conn: conn.send_headers(1, REQUEST, end_stream=True)) is None
    assert pair.both(lambda conn: conn.send_headers(3, post)) is None
    assert pair.both(lambda conn: conn.send_data(3, b"body")) is None
    assert pair.both(lambda conn: conn.send_headers(3, [(b"x", b"1")], end_stream=True)) is None
    # Headers again without END_STREAM; an unused id below the highest used; an even id.
    protocol = h2.exceptions.ProtocolError
    assert pair.both(lambda conn: conn.send_headers(1, REQUEST)) is protocol
    assert pair.both(lambda conn: conn.send_headers(9, REQUEST, end_stream=True)) is None
    too_low = h2.exceptions.StreamIDTooLowError
    assert pair.both(lambda conn: conn.send_headers(7, REQUEST)) is too_low
    assert pair.both(lambda conn: conn.send_headers(12, REQUEST)) is protocol


def test_a_server_without_a_stream_limit() -> None:
    """No MAX_CONCURRENT_STREAMS from the server (grpcio's default): no limit, as in h2."""
    pair = ClientPair(max_streams=None)
    for stream_id in (1, 3, 5):
        assert pair.both(lambda conn, i=stream_id: conn.send_headers(i, REQUEST)) is None


def test_the_servers_stream_limit() -> None:
    pair = ClientPair(max_streams=2)
    assert pair.both(lambda conn: conn.send_headers(1, REQUEST)) is None
    assert pair.both(lambda conn: conn.send_headers(3, REQUEST)) is None
    too_many = h2.exceptions.TooManyStreamsError
    assert pair.both(lambda conn: conn.send_headers(5, REQUEST)) is too_many
    assert pair.both(lambda conn: conn.send_data(1, b"", end_stream=True)) is None
    assert pair.both(lambda conn: conn.reset_stream(3)) is None
    assert pair.both(lambda conn: conn.send_headers(5, REQUEST, end_stream=True)) is None


def test_memoised_request_lists_still_convert_per_stream() -> None:
    client = h2.connection.H2Connection(_config(True))
    client.initiate_connection()
    server = H2ServerCodec()
    server.receive(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    bad = [*post, (b"connection", b"close")]  # RFC 9113 section 8.2.2: malformed
    heads: list[RequestHead] = []
    resets = []
    for headers, end in ((post, True), (post, False), (post, True), (bad, True), (post, True)):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, headers, end_stream=end)
        for event in server.receive(client.data_to_send(), 0.0):
            if isinstance(event, RequestHead):
                heads.append(event)
        resets += [
            event.stream_id
            for event in client.receive_data(server.data_to_send())
            if isinstance(event, h2.events.StreamReset)
        ]
    assert [(head.content_length, head.chunked) for head in heads] == [
        (0, False),  # ended: no body
        (None, True),  # a body of unknown length follows
        (0, False),
        (0, False),
    ]
    assert resets == [7]  # the malformed one, after a memoised valid one
    heads[0].headers.append((b"x-added", b"1"))  # each head owns its fields
    assert all(head.headers == [(b"host", b"a")] for head in heads[1:])
    assert server.requests  # the valid list was memoised


def _headers_frame(stream_id: int, fields: list[tuple[bytes, bytes]], *flags: str) -> bytes:
    frame = HeadersFrame(stream_id)
    frame.data = hpack.Encoder().encode(fields)  # a fresh table: every block self-contained
    frame.flags.add("END_HEADERS")
    for flag in flags:
        frame.flags.add(flag)
    if "PRIORITY" in flags:
        frame.depends_on, frame.stream_weight, frame.exclusive = 0, 15, False
    return bytes(frame.serialize())


def _data_frame(stream_id: int, data: bytes, *flags: str, pad: int = 0) -> bytes:
    frame = DataFrame(stream_id, data)
    for flag in flags:
        frame.flags.add(flag)
    if pad:
        frame.flags.add("PADDED")
        frame.pad_length = pad
    return bytes(frame.serialize())


def _window_update(stream_id: int, increment: int) -> bytes:
    return struct.pack(">HBBBLL", 0, 4, 0x8, 0, stream_id, increment)


def _ping(data: bytes, ack: bool = False) -> bytes:
    return struct.pack(">HBBBL", 0, 8, 0x6, int(ack), 0) + data


def _events(conn: h2.connection.H2Connection, data: bytes) -> object:
    try:
        return [
            (type(event), repr(event), repr(getattr(event, "stream_ended", None)))
            for event in conn.receive_data(data)
        ]
    except Exception as error:  # compared with stock h2's
        return type(error)


@pytest.mark.parametrize(
    "frames",
    [
        [_headers_frame(1, REQUEST, "END_STREAM")],
        [_headers_frame(1, REQUEST), _headers_frame(1, [(b"x", b"1")], "END_STREAM")],
        [_headers_frame(1, REQUEST), _headers_frame(1, [(b"x", b"1")])],  # trailers, no end
        [_headers_frame(1, [*REQUEST, (b"content-length", b"x")], "END_STREAM")],
        [_headers_frame(1, [(b":status", b"100")], "END_STREAM")],
        [_headers_frame(1, [(b":status", b"103")])],
        [_headers_frame(1, REQUEST, "END_STREAM", "PRIORITY")],
        [_headers_frame(1, REQUEST, "END_STREAM"), _headers_frame(1, REQUEST, "END_STREAM")],
        [_headers_frame(3, REQUEST, "END_STREAM"), _headers_frame(1, REQUEST, "END_STREAM")],
        [_headers_frame(2, REQUEST, "END_STREAM")],  # an even id from a client
        [_headers_frame(i, REQUEST) for i in (1, 3, 5)],  # over the advertised 2 streams
        # DATA: bodies, END_STREAM, content-length kept and broken, padding, a closed or
        # unknown stream, DATA before HEADERS, and more than the window allows.
        [_headers_frame(1, REQUEST), _data_frame(1, b"abc"), _data_frame(1, b"de", "END_STREAM")],
        [
            _headers_frame(1, [*REQUEST, (b"content-length", b"3")]),
            _data_frame(1, b"abc"),
            _data_frame(1, b"", "END_STREAM"),
        ],
        [_headers_frame(1, [*REQUEST, (b"content-length", b"3")]), _data_frame(1, b"abcd")],
        [
            _headers_frame(1, [*REQUEST, (b"content-length", b"3")]),
            _data_frame(1, b"ab", "END_STREAM"),
        ],
        [_headers_frame(1, REQUEST), _data_frame(1, b"abc", "END_STREAM", pad=4)],
        [_headers_frame(1, REQUEST, "END_STREAM"), _data_frame(1, b"late")],
        [_headers_frame(1, REQUEST), _data_frame(3, b"no such stream")],
        [_data_frame(1, b"before any headers")],
        [_headers_frame(1, REQUEST), *[_data_frame(1, bytes(16384)) for _ in range(5)]],
        # WINDOW_UPDATE on the connection and on streams (open, half closed, unknown,
        # overflowing the stream's or the connection's window) and PING (and its ACK).
        [_headers_frame(1, REQUEST), _window_update(1, 100), _window_update(0, 100)],
        [_headers_frame(1, REQUEST, "END_STREAM"), _window_update(1, 7), _window_update(9, 1)],
        [_headers_frame(1, REQUEST), _window_update(1, 2**31 - 1), _window_update(1, 5)],
        [_window_update(0, 2**31 - 1)],
        [_ping(b"12345678"), _ping(b"abcdefgh", ack=True), _ping(b"\0" * 8)],
    ],
)
def test_received_frames_as_h2_does(frames: list[bytes]) -> None:
    servers = []
    for kind in (h2.connection.H2Connection, Connection):
        server = kind(_config(False))
        server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2},
        )
        server.initiate_connection()
        server.receive_data(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(SettingsFrame(0).serialize())
        )
        settings_ack = SettingsFrame(0)
        settings_ack.flags.add("ACK")
        server.receive_data(bytes(settings_ack.serialize()))
        server.data_to_send()
        servers.append(server)
    for frame in frames:
        outcome = _events(servers[0], frame)
        assert _events(servers[1], frame) == outcome, frame
        assert servers[1].data_to_send() == servers[0].data_to_send()
        _same_streams(servers[0], servers[1])
        if isinstance(outcome, type):
            break


@pytest.mark.parametrize(
    "frames",
    [
        [_headers_frame(1, [*REQUEST, (b"content-length", b"1")], "END_STREAM")],
        [
            _headers_frame(1, [*REQUEST, (b"content-length", b"5")]),
            _data_frame(1, b"ab"),
            _headers_frame(1, [(b"x", b"1")], "END_STREAM"),
        ],
    ],
    ids=["head ends the stream", "trailers end a short body"],
)
def test_a_body_shorter_than_its_content_length_is_refused_where_h2_takes_it(
    frames: list[bytes],
) -> None:
    # Where this Connection parts from h2 on purpose (RFC 9113 section 8.1.1): h2 checks
    # the length only on a DATA frame that ends the stream, and a short body passed on to
    # HTTP/1 would read the next request as its rest.
    outcomes = []
    for kind in (h2.connection.H2Connection, Connection):
        server = kind(_config(False))
        server.initiate_connection()
        server.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(SettingsFrame(0).serialize()))
        outcomes.append([_events(server, frame) for frame in frames][-1])
    stock, ours = outcomes
    assert not isinstance(stock, type)  # h2 accepts it
    assert ours is h2.exceptions.InvalidBodyLengthError


def test_received_responses_as_h2_does() -> None:
    pair = ClientPair()
    head = [(b":method", b"HEAD"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    for stream_id, request in ((1, REQUEST), (3, head), (5, REQUEST)):
        for conn in (pair.stock, pair.ours):
            conn.send_headers(stream_id, request, end_stream=True)
        requests = pair.stock.data_to_send()
        assert pair.ours.data_to_send() == requests
        pair.server.receive_data(requests)
    server = pair.server
    server.send_headers(1, [(b":status", b"100")])
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"hi")
    server.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    server.send_headers(3, [(b":status", b"200"), (b"content-length", b"10")], end_stream=True)
    data = server.data_to_send()
    server.send_headers(5, [(b":status", b"200"), (b"content-length", b"bad")])
    bad = server.data_to_send()
    outcome = _events(pair.stock, data)
    assert _events(pair.ours, data) == outcome
    _same_streams(pair.stock, pair.ours)
    assert isinstance(outcome, list) and len(outcome) == 7
    assert _events(pair.ours, bad) == _events(pair.stock, bad) == h2.exceptions.ProtocolError
    assert pair.ours.data_to_send() == pair.stock.data_to_send()


def test_closed_streams_are_forgotten_as_h2_does() -> None:
    pair = Pair()
    for conn in (pair.stock, pair.ours):
        conn._closed_streams._size_limit = 5  # h2 keeps 100; 5 makes it trim here
    for _ in range(12):
        stream_id = pair.request()  # each new stream makes h2 count, and drop closed ones
        pair.both(lambda conn, s=stream_id: conn.send_headers(s, [(b":status", b"204")], True))
    assert len(pair.ours._closed_streams) == 5


def _frame_state(frame: object) -> object:
    state = dict(vars(frame))
    flags = state.pop("flags")
    return type(frame), state, set(flags._valid_flags), set(flags._flags)


def _frames(buffer: h2.frame_buffer.FrameBuffer, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    try:
        for chunk in chunks:
            buffer.add_data(chunk)
            out += [_frame_state(frame) for frame in buffer]
    except Exception as error:  # compared with stock h2's
        out.append(type(error))
    return out


def test_frames_are_parsed_as_h2_and_hyperframe_do() -> None:
    rng = random.Random(3)
    frames = []
    for bits in range(256):  # every flag combination, known or not
        for kind in (0x0, 0x1):
            body = b"\x03abcdef" if bits & 0x8 else b"abcdef"  # PADDED: pad length 3
            if kind == 0x1 and bits & 0x20:
                body = (b"\x03" if bits & 0x8 else b"") + b"\x80\x00\x00\x03\x10" + b"abcdef"
            frames.append(struct.pack(">HBBBL", 0, len(body), kind, bits, 1 + 2 * bits) + body)
    frames.append(struct.pack(">HBBBL", 0, 2, 0x0, 0x8, 1) + b"\x05x")  # padding too long
    frames.append(struct.pack(">HBBBL", 0, 0, 0x0, 0x0, 0))  # DATA on stream 0
    # WINDOW_UPDATE and PING: every flag bit; a zero or reserved-bit increment; wrong
    # lengths; PING off stream 0; PING ACK.
    for bits in (0x0, 0x1, 0xFF):
        for stream_id in (0, 1):
            for increment in (b"\x00\x00\x00\x01", b"\x7f\xff\xff\xff", bytes(4), b"\x80\0\0\1"):
                frames.append(struct.pack(">HBBBL", 0, 4, 0x8, bits, stream_id) + increment)
            frames.append(struct.pack(">HBBBL", 0, 8, 0x6, bits, stream_id) + b"pingdata")
    frames.append(struct.pack(">HBBBL", 0, 3, 0x8, 0x0, 1) + b"\x00\x00\x01")
    frames.append(struct.pack(">HBBBL", 0, 5, 0x8, 0x0, 1) + b"\x00\x00\x00\x01\x00")
    frames.append(struct.pack(">HBBBL", 0, 7, 0x6, 0x0, 0) + b"pingdat")
    frames.append(struct.pack(">HBBBL", 0x100, 0, 0x0, 0x0, 1) + b"x" * 65536)  # over the max
    frames.append(struct.pack(">HBBBL", 0x100, 0, 0x1, 0x4, 1) + b"x" * 65536)  # HEADERS too
    for trial in range(60):
        sample = rng.sample(frames, 12)
        stream = b"".join(sample)
        cuts = sorted(rng.sample(range(1, len(stream)), 5))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        stock = h2.frame_buffer.FrameBuffer(server=False)
        ours = FrameBuffer(server=False)
        stock.max_frame_size = ours.max_frame_size = 16384
        expected = _frames(stock, chunks)
        assert _frames(ours, chunks) == expected, trial
    # Every frame above, one by one (every DATA and complete HEADERS flag combination
    # among them), through the fast paths.
    for frame in frames:
        stock = h2.frame_buffer.FrameBuffer(server=False)
        ours = FrameBuffer(server=False)
        stock.max_frame_size = ours.max_frame_size = 16384
        assert _frames(ours, [frame]) == _frames(stock, [frame])


def test_closed_stream_history_is_bounded() -> None:
    """A long-lived connection forgets all but the last MAX_CLOSED_STREAMS closed streams
    (h2's default, 65,536, grew a busy connection by megabytes), and a late RST_STREAM on a
    recently closed stream is still ignored."""
    client = h2.connection.H2Connection(_config(True))
    server = Connection(_config(False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    streams = 3 * Connection.MAX_CLOSED_STREAMS
    for _ in range(streams):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, REQUEST, end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
        client.receive_data(server.data_to_send())
    server.get_next_available_stream_id()  # h2 moves closed streams to its history here
    history: Any = server._closed_streams
    assert Connection.MAX_CLOSED_STREAMS == 1024
    assert len(history) + len(server.streams) <= Connection.MAX_CLOSED_STREAMS + 1
    late = RstStreamFrame(stream_id, error_code=8)  # CANCEL, on the stream that just closed
    assert server.receive_data(late.serialize()) == []
    assert server.state_machine.state is not h2.connection.ConnectionState.CLOSED


def test_h2_state_machine_enums_hash_in_c_and_every_transition_is_found() -> None:
    """h2's plain Enums (connection state and inputs, stream inputs) hash by identity, not
    by the Python-level Enum.__hash__ that cost about 4% of the codec, and both transition
    tables were re-keyed: every (state, input) pair h2 defines is still found under the new
    hashes, and an undefined one still fails as h2 makes it."""
    import h2.stream

    for enum_class in (
        h2.connection.ConnectionState,
        h2.connection.ConnectionInputs,
        h2.stream.StreamInputs,
    ):
        assert enum_class.__hash__ is object.__hash__
    machine_table: dict[Any, Any] = h2.connection.H2ConnectionStateMachine._transitions
    stream_table: dict[Any, Any] = h2.stream._transitions
    for table in (machine_table, stream_table):
        for key, value in list(table.items()):
            assert table[(key[0], key[1])] is value  # a fresh tuple: hashed now
    machine = h2.connection.H2ConnectionStateMachine()
    machine.process_input(h2.connection.ConnectionInputs.SEND_HEADERS)
    assert machine.state is h2.connection.ConnectionState.CLIENT_OPEN
    machine.process_input(h2.connection.ConnectionInputs.SEND_GOAWAY)
    with pytest.raises(h2.exceptions.ProtocolError):
        machine.process_input(h2.connection.ConnectionInputs.RECV_PUSH_PROMISE)


def test_events_are_made_as_h2_makes_them() -> None:
    """h2_steps' event constructors against the dataclasses' own: same class, same
    attributes in the same order (an h2 upgrade that adds a field fails here)."""
    from proxy.core.codecs import h2_steps

    pairs = [
        (h2_steps.stream_ended(3), h2.events.StreamEnded(stream_id=3)),
        (h2_steps.data_received(3), h2.events.DataReceived(stream_id=3)),
        (h2_steps.window_updated(3, 10), h2.events.WindowUpdated(stream_id=3, delta=10)),
    ]
    for cls in (h2.events.RequestReceived, h2.events.ResponseReceived, h2.events.TrailersReceived):
        pairs.append((h2_steps.headers_event(cls, 5), cls(stream_id=5)))
    for ours, stock in pairs:
        assert type(ours) is type(stock)
        assert list(vars(ours).items()) == list(vars(stock).items())
