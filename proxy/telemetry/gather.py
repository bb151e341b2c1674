"""Collects every worker's telemetry snapshot at scrape time, over abstract unix sockets.

Each worker process but the first listens on `@pilotfish-telemetry-<main pid>-<index>`
and answers every connection with its snapshot as JSON, then closes. Worker 0 (which
serves the admin ports) connects to each at scrape time and adds the answers to its
own. So each request is counted by exactly the worker that served it and summed once,
and nothing crosses processes per request. Abstract names (Linux) need no files on a
read-only root filesystem and vanish with the process.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import cast

from proxy.telemetry.metrics import Snapshot

# A busy worker answers between two events of its loop; this bounds a stuck one.
GATHER_TIMEOUT = 2.0
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


def socket_name(main_pid: int, index: int) -> str:
    return f"\0pilotfish-telemetry-{main_pid}-{index}"


class _Answer(asyncio.Protocol):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        transport.write(json.dumps(self.snapshot().to_json()).encode())
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # nothing is expected from the asker


async def publish(
    main_pid: int, index: int, snapshot: Callable[[], Snapshot]
) -> asyncio.AbstractServer:
    """Serve this worker's snapshot to worker 0."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_name(main_pid, index))
    listener.listen(8)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: _Answer(snapshot), sock=listener)


async def _ask(main_pid: int, index: int) -> Snapshot:
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.setblocking(False)
    try:
        peer.connect(socket_name(main_pid, index))
    except OSError:
        peer.close()
        raise
    reader, writer = await asyncio.open_unix_connection(sock=peer, limit=MAX_SNAPSHOT_BYTES)
    try:
        data = await reader.read(-1)
    finally:
        writer.close()
    return Snapshot.from_json(json.loads(data))


async def gather(main_pid: int, workers: int, own: Snapshot) -> tuple[Snapshot, int]:
    """The sum over all workers, and how many could not be read."""
    total = Snapshot()
    total.add(own)
    failures = 0
    if workers > 1:
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(_ask(main_pid, index), GATHER_TIMEOUT)
                for index in range(1, workers)
            ),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, Snapshot):
                total.add(answer)
            else:
                failures += 1
    return total, failures
