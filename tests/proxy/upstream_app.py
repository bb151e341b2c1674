"""A scriptable HTTP/1.1 upstream for the proxy tests: each path is one behaviour.

Written on raw sockets (no HTTP library) so it is independent of both proxy codecs,
and so it can misbehave on purpose: close mid-body, send garbage, switch protocols.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
import time
from urllib.parse import parse_qs, urlsplit


class Request:
    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        url = urlsplit(target)
        self.path = url.path
        self.query = {k: v[0] for k, v in parse_qs(url.query).items()}

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class Conn:
    """Buffered reads on one accepted socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buffer += data
        return bool(data)

    def read_until(self, marker: bytes) -> bytes | None:
        while marker not in self.buffer:
            if not self.fill():
                return None
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self.fill():
                raise ConnectionError("eof in body")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def body_pieces(self, request: Request):  # type: ignore[no-untyped-def]
        if (request.header("transfer-encoding") or "").lower() == "chunked":
            while True:
                size_line = self.read_until(b"\r\n")
                assert size_line is not None
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n") not in (b"", None):
                        pass
                    return
                yield self.read_exact(size)
                self.read_exact(2)
        else:
            remaining = int(request.header("content-length") or 0)
            while remaining:
                if not self.buffer and not self.fill():
                    raise ConnectionError("eof in body")
                piece = self.buffer[:remaining]
                self.buffer = self.buffer[len(piece) :]
                remaining -= len(piece)
                yield piece


class State:
    """What the upstream saw, for assertions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.sent_bytes = 0
        self.flaky: dict[str, int] = {}  # /flaky: answers given per key

    def reset(self) -> None:
        with self.lock:
            self.flaky.clear()
            self.requests.clear()
            self.connections = 0
            self.max_active = 0
            self.sent_bytes = 0


def _response(
    status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        state = self.server.state
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock)
        with state.lock:
            state.connections += 1
            state.active += 1
            state.max_active = max(state.max_active, state.active)
        try:
            while True:
                head = conn.read_until(b"\r\n\r\n")
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
                request = Request(method, target, version, headers)  # type: ignore[arg-type]
                with state.lock:
                    state.requests.append(request)
                if not self.respond(conn, request):
                    return
        except (ConnectionError, OSError):
            return
        finally:
            with state.lock:
                state.active -= 1

    def send(self, conn: Conn, data: bytes) -> None:
        conn.sock.sendall(data)
        with self.server.state.lock:
            self.server.state.sent_bytes += len(data)

    def respond(self, conn: Conn, request: Request) -> bool:
        path, query, sock = request.path, request.query, conn.sock
        if path == "/headers":
            body = b"".join(conn.body_pieces(request))
            info = {
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": request.headers,
                "body": body.decode("latin-1"),
            }
            self.send(
                conn,
                _response(200, json.dumps(info).encode(), [("Content-Type", "application/json")]),
            )
        elif path == "/echo":
            body = b"".join(conn.body_pieces(request))
            self.send(conn, _response(200, body))
        elif path == "/upload":
            digest, total = hashlib.sha256(), 0
            for piece in conn.body_pieces(request):
                digest.update(piece)
                total += len(piece)
            self.send(conn, _response(200, f"{total} {digest.hexdigest()}".encode()))
        elif path == "/download":
            total = int(query.get("n", "0"))
            chunk = bytes(range(256)) * 256  # 64 KiB
            if query.get("chunked"):
                self.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                self.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
            sent = 0
            while sent < total:
                piece = chunk[: min(len(chunk), total - sent)]
                self.send(
                    conn, b"%x\r\n%s\r\n" % (len(piece), piece) if query.get("chunked") else piece
                )
                sent += len(piece)
            if query.get("chunked"):
                self.send(conn, b"0\r\n\r\n")
        elif path == "/slow":
            list(conn.body_pieces(request))
            time.sleep(int(query.get("ms", "100")) / 1000)
            self.send(conn, _response(200, b"slow\n"))
        elif path.startswith("/status/"):
            list(conn.body_pieces(request))
            extra = [("Connection", "close")] if query.get("close") else []
            self.send(conn, _response(int(path.split("/")[2]), b"status\n", extra))
            return not query.get("close")
        elif path == "/flaky":
            # 503 to the first `fail` requests with this `key`, then 200 echoing the body
            # (after `ms` milliseconds): what a retry policy is for.
            body = b"".join(conn.body_pieces(request))
            with self.server.state.lock:
                seen = self.server.state.flaky.get(query["key"], 0)
                self.server.state.flaky[query["key"]] = seen + 1
            if seen < int(query.get("fail", "1")):
                self.send(conn, _response(503, b"flaky\n"))
            else:
                time.sleep(int(query.get("ms", "0")) / 1000)
                self.send(conn, _response(200, body))
        elif path == "/close-mid":
            self.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            return False
        elif path == "/close-before":
            return False
        elif path == "/garbage":
            self.send(conn, b"NOT HTTP AT ALL\r\n\r\n")
            return False
        elif path == "/chunked-trailers":
            self.send(
                conn,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n",
            )
        elif path == "/early-hints":
            self.send(conn, b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self.send(conn, _response(200, b"after hints\n"))
        elif path == "/big-head":
            # One answer larger than the proxy's write buffer before its body starts:
            # written to the client in one go, it pauses the upstream as it completes.
            value = "v" * int(query.get("kb", "600")) * 1024
            fields = [(f"X-Big-{n}", value) for n in range(int(query.get("fields", "10")))]
            self.send(conn, _response(200, b"ok", fields))
        elif path == "/no-length":
            self.send(conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            return False
        elif path == "/hop":
            self.send(
                conn,
                _response(
                    200,
                    b"hop\n",
                    [
                        ("Connection", "X-Secret, keep-alive"),
                        ("X-Secret", "1"),
                        ("Keep-Alive", "timeout=5"),
                        ("X-Kept", "yes"),
                    ],
                ),
            )
        elif path == "/ws":
            if (request.header("upgrade") or "").lower() != "websocket":
                self.send(conn, _response(400, b"upgrade required\n"))
                return True
            self.send(
                conn,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            if conn.buffer:
                self.send(conn, conn.buffer)
                conn.buffer = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    return False
                self.send(conn, data.upper())
        else:
            list(conn.body_pieces(request))
            if request.method == "HEAD":
                self.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            else:
                self.send(conn, _response(200, b"hello"))
        return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self) -> None:
        self.state = State()
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def start() -> Server:
    server = Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
