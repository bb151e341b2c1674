"""A raw HTTP/2 client for tests: h2 for the state machine, a blocking socket, bounded waits."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import Frame


class RawH2:
    """An h2c client connection with prior knowledge; `events()` reads what arrived."""

    def __init__(self, port: int, window: int | None = None, auto_ack: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.auto_ack = auto_ack
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.conn.initiate_connection()
        self.flush()
        self.closed = False
        self.bodies: dict[int, bytearray] = {}
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.trailers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        base = [(":method", method), (":scheme", "http"), (":authority", "test"), (":path", path)]
        self.conn.send_headers(stream_id, base + (headers or []), end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    def read(self, timeout: float = 5.0) -> list[Any]:
        """One read's worth of events (empty on timeout or close)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError):
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._record(event)
        self.flush()
        return events

    def _record(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.headers[event.stream_id] = [(bytes(k), bytes(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.DataReceived):
            self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers[event.stream_id] = [(bytes(k), bytes(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def until(self, done: Any, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while not done() and not self.closed and time.monotonic() < end:
            self.read(min(1.0, max(0.01, end - time.monotonic())))
        return bool(done())

    def status(self, stream_id: int) -> int:
        return int(dict(self.headers[stream_id])[b":status"])

    def close(self) -> None:
        self.sock.close()


def read_frames(
    sock: socket.socket, timeout: float = 3.0, until: Callable[[list[Frame]], bool] | None = None
) -> list[Frame]:
    """Frames the peer sent until it closes, `until` holds, or `timeout` passes."""
    frames: list[Frame] = []
    buffer = b""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        sock.settimeout(max(0.01, end - time.monotonic()))
        if not data:
            break
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            frames.append(frame)
            buffer = buffer[9 + length :]
        if until is not None and until(frames):
            break
    return frames
