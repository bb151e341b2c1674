"""The demo workload: a small HTTP API that the sidecar sits in front of.

`python -m proxy.demo.app PORT` serves:
  GET  /                  a greeting
  GET  /api/items         a JSON list
  GET  /api/items/<n>     one item, or 404 for n > 9
  POST /api/orders        echoes the order with 201
  GET  /api/flaky         500 every third call
  GET  /api/busy?n=K      503 the first time it sees a request when K is a multiple of 10;
                          the sidecar sends it again (same x-request-id) and gets a 200
  GET  /api/slow?ms=N     answers after N milliseconds (default 800)
  GET  /metrics           the app's own Prometheus metrics (for the merged scrape)
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit


class DemoApp:
    def __init__(self) -> None:
        self.calls = 0
        self.flaky_calls = 0
        self.busy_seen: set[str] = set()  # x-request-ids of /api/busy calls answered 503

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (x.partition(":") for x in lines[1:] if x)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self.route(
                    method, target, body, headers.get("x-request-id", "")
                )
                data = json.dumps(payload).encode() + b"\n"
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s"
                    % (status, b"OK" if status < 400 else b"Error", len(data), data)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def route(
        self, method: str, target: str, body: bytes, request_id: str
    ) -> tuple[int, object]:
        self.calls += 1
        url = urlsplit(target)
        path = url.path
        if path == "/":
            return 200, {"hello": "from the demo app behind pilotfish"}
        if path == "/api/items":
            return 200, [{"id": n, "name": f"item-{n}"} for n in range(10)]
        if path.startswith("/api/items/"):
            item = path.rsplit("/", 1)[1]
            if item.isdigit() and int(item) < 10:
                return 200, {"id": int(item), "name": f"item-{item}"}
            return 404, {"error": f"no item {item}"}
        if path == "/api/orders" and method == "POST":
            return 201, {"order": json.loads(body or b"{}"), "status": "accepted"}
        if path == "/api/flaky":
            self.flaky_calls += 1
            if self.flaky_calls % 3 == 0:
                return 500, {"error": "flaky backend failed"}
            return 200, {"ok": True}
        if path == "/api/busy":
            busy = int(parse_qs(url.query).get("n", ["1"])[0]) % 10 == 0
            if busy and request_id not in self.busy_seen:
                self.busy_seen.add(request_id)
                return 503, {"error": "busy, try again"}
            return 200, {"ok": True}
        if path == "/api/slow":
            delay = int(parse_qs(url.query).get("ms", ["800"])[0])
            await asyncio.sleep(delay / 1000)
            return 200, {"slept_ms": delay}
        if path == "/metrics":
            return 200, {"demo_app_calls_total": self.calls}
        return 404, {"error": "not found"}


async def serve(port: int) -> None:
    app = DemoApp()
    server = await asyncio.start_server(app.handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
