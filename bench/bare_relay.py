"""The floor: an HTTP/1.1 relay on the same stack as pilotfish (uvloop + llhttp), no features.

Not a proxy anyone should run: no header policy, no pool limits, no timeouts, no
telemetry, no error handling, one pipelined request at a time per connection. It
exists so the referee can measure what the stack itself costs per request on this
machine, next to Envoy and pilotfish in the same run:

    python3 ../shared/tools/meshbench.py --only direct,envoy \\
      --candidate 'python3 bench/bare_relay.py --listen 127.0.0.1:{port} --upstream {upstream}'

What pilotfish spends above this floor is what its features cost (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream; hands each whole response back."""

    def __init__(self, downstream: Downstream) -> None:
        self.downstream = downstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pieces: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        response, self.pieces = b"".join(self.pieces), []
        self.downstream.respond(response, self)


class Downstream(asyncio.Protocol):
    """One client connection: parse each request, send its bytes upstream unchanged."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_address = upstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pieces: list[bytes] = []
        self.idle: list[Upstream] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        name.lower()  # the least a proxy does with each header: look at its name

    def on_message_complete(self) -> None:
        request, self.pieces = b"".join(self.pieces), []
        if self.idle:
            upstream = self.idle.pop()
            assert upstream.transport is not None
            upstream.transport.write(request)
        else:
            asyncio.get_running_loop().create_task(self.connect(request))

    async def connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: Upstream(self), *self.upstream_address)
        transport.write(request)

    def respond(self, response: bytes, upstream: Upstream) -> None:
        if self.transport is not None:
            self.transport.write(response)
        self.idle.append(upstream)


async def serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(upstream), *listen)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--upstream", type=address, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
