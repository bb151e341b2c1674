"""A scripted HTTP/2 upstream for tests: answers by path, including with RST_STREAM (grpcio never resets).

It keeps every byte it received (`received`), for tests that read the proxy's frames.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events

INTERNAL_ERROR = 0x2


def accept_each(
    listener: socket.socket, stopped: Callable[[], bool], handle: Callable[[socket.socket], None]
) -> None:
    """Accept connections until `stopped()`, each handled by `handle` on a thread of its own."""
    listener.settimeout(0.2)
    while not stopped():
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


# What /set-cookie answers with.
SET_COOKIES = [("set-cookie", "sid=a1b2c3; HttpOnly"), ("set-cookie", "k=v")]


class ScriptedH2Server:
    """h2c server on a thread: /reset-before resets at once, /reset-after after headers and
    data, /bulk sends 256 KiB, /set-cookie answers with SET_COOKIES and no body."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stopped = False
        self.received = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        accept_each(self.listener, lambda: self.stopped, self._connection)

    def _connection(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sock.settimeout(10)
        with sock:
            while not self.stopped:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    self.received += data
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self._answer(conn, event)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                sock.sendall(conn.data_to_send())

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        path = dict(event.headers).get(b":path", b"")
        if path.endswith(b"/reset-before"):
            conn.reset_stream(stream_id, INTERNAL_ERROR)
            return
        if path.endswith(b"/set-cookie"):
            conn.send_headers(stream_id, [(":status", "200"), *SET_COOKIES], end_stream=True)
            return
        if path.endswith(b"/bulk"):
            # 256 KiB, END_STREAM on the last DATA frame, no trailers; h2 raises (and the
            # connection dies) if the proxy has not given the window back.
            conn.send_headers(stream_id, [(":status", "200")])
            for index in range(16):
                conn.send_data(stream_id, b"b" * 16384, end_stream=index == 15)
            return
        headers = [(":status", "200"), ("content-type", "application/grpc")]
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, b"\x00\x00\x00\x00\x02hi")
        if path.endswith(b"/reset-after"):
            conn.reset_stream(stream_id, INTERNAL_ERROR)
            return
        conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)

    def close(self) -> None:
        self.stopped = True
        self.listener.close()
