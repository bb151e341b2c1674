"""An h2c-only upstream for tests (prior knowledge; HTTP/1.1 bytes close the connection).

It echoes what it received as HTTP/2, and on request refuses streams (RST_STREAM
REFUSED_STREAM, on arrival or after the whole body), sends GOAWAY below a stream, or
stalls (no answer, or headers and a little data then nothing): grpcio does none of these.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.h2.h2server import accept_each

REFUSED_STREAM = 0x7


class H2OnlyServer:
    """Threaded h2c server on loopback; the counters say what happened (read under `lock`)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        # Scripted behaviour for the next requests (each a count, used up one request each).
        self.refuse = 0  # RST_STREAM REFUSED_STREAM as soon as the headers arrive
        self.refuse_after_body = 0  # ... once the whole request body has arrived
        self.goaway = 0  # GOAWAY with a last stream id below the request, then close
        self.connections = 0
        self.streams = 0  # requests (HEADERS) received, refused ones included
        self.refused = 0
        self.answered: list[tuple[int, str, int]] = []  # (connection, path, body length)
        self.http1_closed = 0  # connections closed because they did not speak HTTP/2
        self.empty_ends: list[str] = []  # paths whose request ended on an empty DATA frame
        self.peers: list[str] = []  # each connection's client address, ip:port
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        accept_each(self.listener, lambda: self.stopped, self._connection)

    def _connection(self, sock: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            number = self.connections
            host, port = sock.getpeername()[:2]
            self.peers.append(f"{host}:{port}")
        _Connection(self, sock, number).run()

    def close(self) -> None:
        self.stopped = True
        self.listener.close()


class _Connection:
    def __init__(self, server: H2OnlyServer, sock: socket.socket, number: int) -> None:
        self.server = server
        self.sock = sock
        self.number = number
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.send_lock = threading.Lock()
        self.requests: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self) -> None:
        with self.send_lock:
            self.conn.initiate_connection()
            self.flush()
        self.sock.settimeout(30)
        with self.sock:
            while not self.server.stopped:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.send_lock:
                    try:
                        events = self.conn.receive_data(data)
                    except h2.exceptions.ProtocolError:
                        with self.server.lock:
                            self.server.http1_closed += 1
                        return
                    for event in events:
                        if not self._on(event):
                            self.flush()
                            return  # GOAWAY sent: close
                    self.flush()

    def _on(self, event: h2.events.Event) -> bool:
        server = self.server
        if isinstance(event, h2.events.RequestReceived):
            stream_id = event.stream_id
            headers = {bytes(k): bytes(v) for k, v in event.headers}
            with server.lock:
                server.streams += 1
                refuse = server.refuse > 0
                server.refuse -= refuse
                goaway = not refuse and server.goaway > 0
                server.goaway -= goaway
            if refuse:
                with server.lock:
                    server.refused += 1
                self.conn.reset_stream(stream_id, REFUSED_STREAM)
                return True
            if goaway:
                self.conn.close_connection(last_stream_id=max(stream_id - 2, 0))
                return False
            self.requests[stream_id] = (headers, bytearray())
            path = headers.get(b":path", b"")
            if path == b"/stall-after-head":
                self.conn.send_headers(stream_id, [(":status", "200")])
                self.conn.send_data(stream_id, b"first bytes\n")
            elif path.startswith(b"/trickle"):
                threading.Thread(target=self._trickle, args=(stream_id,), daemon=True).start()
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id in self.requests:
                self.requests[event.stream_id][1].extend(event.data)
                if event.stream_ended is not None and not event.data:
                    with server.lock:
                        path = self.requests[event.stream_id][0].get(b":path", b"")
                        server.empty_ends.append(path.decode("latin-1"))
        elif isinstance(event, h2.events.StreamEnded):
            request = self.requests.get(event.stream_id)
            if request is not None:
                self._answer(event.stream_id, *request)
        elif isinstance(event, h2.events.StreamReset):
            self.requests.pop(event.stream_id, None)
        return True

    def _answer(self, stream_id: int, headers: dict[bytes, bytes], body: bytearray) -> None:
        server = self.server
        path = headers.get(b":path", b"").decode()
        if path.startswith(("/stall", "/trickle")):
            return
        with server.lock:
            refuse = server.refuse_after_body > 0
            server.refuse_after_body -= refuse
            if refuse:
                server.refused += 1
            else:
                server.answered.append((self.number, path, len(body)))
        if refuse:
            self.conn.reset_stream(stream_id, REFUSED_STREAM)
            return
        text = (
            f"h2 {headers[b':method'].decode()} {path} "
            f"authority={headers.get(b':authority', b'').decode()} "
            f"te={headers.get(b'te', b'-').decode()} body={len(body)} "
            f"sha={hashlib.sha256(body).hexdigest()[:16]}\n"
        ).encode()
        response = [(":status", "200"), ("content-type", "text/plain"), ("x-upstream", "h2only")]
        if path.startswith("/cl"):
            response.append(("content-length", str(len(text))))
        self.conn.send_headers(stream_id, response)
        self.conn.send_data(stream_id, text, end_stream=True)

    def _trickle(self, stream_id: int) -> None:
        """Headers, then a small DATA frame every 0.4 s for about 3 s, then the end."""
        try:
            with self.send_lock:
                self.conn.send_headers(stream_id, [(":status", "200")])
                self.flush()
            for index in range(8):
                time.sleep(0.4)
                with self.send_lock:
                    self.conn.send_data(
                        stream_id, f"tick {index}\n".encode(), end_stream=index == 7
                    )
                    self.flush()
        except (OSError, h2.exceptions.H2Error):
            return
