"""The h2 upstream connection against an in-memory h2 server: window accounting, stream limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from proxy.config.model import ProxyConfig
from proxy.core.messages import EndOfMessage, Event, RequestHead
from proxy.runtime.h2_upstream import H2UpstreamConnection, H2UpstreamPool
from proxy.runtime.upstream import UpstreamUser
from proxy.telemetry.stats import new_stats


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default  # no socket: no addresses

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class User(UpstreamUser):
    """An exchange stand-in: sends one request, releases its stream at the end."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stream: Any = None

    def upstream_ready(self, connection: Any, reused: bool) -> None:
        self.stream = connection
        head = RequestHead(0, b"GET", b"/", [(b"host", b"t")], b"1.1", True, None, False)
        connection.send_request_head(head)
        connection.send_end([])

    def upstream_failed(self, status: int, flag: str, details: str) -> None:
        raise AssertionError(details)

    def upstream_events(self, events: list[Event]) -> None:
        self.events += events
        if type(events[-1]) is EndOfMessage:
            self.stream.pool.release(self.stream)

    def upstream_lost(self, connection: Any) -> None:
        raise AssertionError("lost")

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass


@pytest.fixture()
def link() -> Iterator[tuple[H2UpstreamPool, H2UpstreamConnection, h2.connection.H2Connection]]:
    loop = asyncio.new_event_loop()
    pool = H2UpstreamPool(loop, ProxyConfig(), new_stats())
    connection = H2UpstreamConnection(pool, ("127.0.0.1", 1))
    connection.connection_made(Transport())  # type: ignore[arg-type]
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    pool.connecting[connection.destination] = 1
    yield pool, connection, server
    loop.close()


def pump(pool: H2UpstreamPool, connection: H2UpstreamConnection, server: Any) -> list[Any]:
    """Move bytes both ways until quiet; the server's events."""
    events: list[Any] = []
    transport: Transport = connection.transport  # type: ignore[assignment]
    for _ in range(20):
        pool.flusher.run()
        sent = bytes(transport.out)
        transport.out.clear()
        if sent:
            events += server.receive_data(sent)
        back = server.data_to_send()
        if back:
            connection.data_received(back)
        if not sent and not back:
            break
    return events


def test_ended_streams_return_the_connection_window(link: Any) -> None:
    """Responses ending in their last DATA frame, all in one read: 15 MiB against a 25 MiB
    connection window that h2 reopens after half of it was acknowledged."""
    pool, connection, server = link
    pump(pool, connection, server)  # SETTINGS both ways: the connection is ready
    initial = server.outbound_flow_control_window
    for _ in range(60):
        user = User()
        pool.acquire(connection.destination, user, None)
        events = pump(pool, connection, server)
        stream_id = next(e for e in events if isinstance(e, h2.events.RequestReceived)).stream_id
        server.send_headers(stream_id, [(":status", "200")])
        for index in range(16):  # 256 KiB, END_STREAM on the last frame
            server.send_data(stream_id, b"x" * 16384, end_stream=index == 15)
        pump(pool, connection, server)
        assert type(user.events[-1]) is EndOfMessage
    consumed = initial - server.outbound_flow_control_window
    assert consumed < 12 * 1024 * 1024, f"{consumed} bytes of window never given back"


def test_streams_wait_for_the_servers_settings(link: Any) -> None:
    pool, connection, server = link
    users = [User() for _ in range(3)]
    pool.acquire(connection.destination, users[0], None)
    assert users[0].stream is None  # no SETTINGS from the server yet
    pump(pool, connection, server)
    assert users[0].stream is not None
