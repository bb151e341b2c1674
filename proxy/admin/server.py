"""A small HTTP/1.1 server for the admin and health ports, on the same llhttp codec as the proxy.

Handlers are plain functions `(method, path, query) -> Reply`; this module only moves
bytes. Admin traffic is rare, so clarity wins over speed here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qs, urlsplit

from proxy.core.codecs.h1_llhttp_server import LlhttpServerCodec
from proxy.core.messages import H1_STREAM, EndOfMessage, ProtocolError, RequestHead, ResponseHead


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())


Handler = Callable[[str, str, dict[str, list[str]], RequestHead], "Reply | Awaitable[Reply]"]


class AdminConnection(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.codec = LlhttpServerCodec()
        self.transport: asyncio.Transport | None = None
        self.request: RequestHead | None = None
        self.queue: list[RequestHead] = []
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.codec.receive(data):
            if isinstance(event, RequestHead):
                self.request = event
            elif isinstance(event, EndOfMessage) and self.request is not None:
                self.queue.append(self.request)
                self.request = None
            elif isinstance(event, ProtocolError):
                self._send(
                    RequestHead(1, b"GET", b"/", []),
                    Reply(event.status, b"bad request\n"),
                    close=True,
                )
                return
        if self.queue and not self.busy:
            asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        self.busy = True
        try:
            while self.queue and self.transport is not None:
                request = self.queue.pop(0)
                url = urlsplit(request.target.decode("latin-1"))
                try:
                    result = self.handler(
                        request.method.decode(), url.path, parse_qs(url.query), request
                    )
                    reply = await result if isinstance(result, Awaitable) else result
                except Exception as error:  # an admin bug must not kill the proxy
                    reply = Reply(500, f"admin handler failed: {error!r}\n".encode())
                self._send(request, reply, close=not request.keep_alive)
        finally:
            self.busy = False

    def _send(self, request: RequestHead, reply: Reply, close: bool) -> None:
        if self.transport is None:
            return
        headers = [(b"content-type", reply.content_type), *reply.headers]
        body = b"" if request.method == b"HEAD" else reply.body
        head = ResponseHead(
            H1_STREAM, reply.status, headers, b"", b"1.1", not close, len(reply.body)
        )
        self.transport.write(
            self.codec.send_response_head(head, request)
            + self.codec.send_data(body)
            + self.codec.send_end([])
        )
        if close or not self.codec.keep_alive:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def bound_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket | None:
    """A TCP socket bound to a numeric `host`, set up as create_server would; None for a name.

    Given a host, uvloop's create_server resolves it with getaddrinfo on libuv's thread
    pool, which starts four threads that then idle for the life of the process. Every
    address pilotfish listens on is numeric, so the socket is made here instead.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # As create_server: "::" takes IPv6 only; 0.0.0.0 has its own socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(host: str, port: int, handler: Handler, reuse_port: bool = False) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    sock = bound_socket(host, port, reuse_port)
    if sock is None:
        return await loop.create_server(
            lambda: AdminConnection(handler), host, port, reuse_port=reuse_port
        )
    return await loop.create_server(lambda: AdminConnection(handler), sock=sock)
