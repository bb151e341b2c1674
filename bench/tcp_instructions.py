"""Instructions per relayed TCP message and per relayed TCP connection, counted by callgrind.

The A/B measure for small changes on the opaque TCP path, as bench/h1_instructions.py is
for HTTP/1 (CPU time moves by a third between runs here, instruction counts by under 1%).
A redis-server upstream, one pilotfish worker under callgrind (instrumentation switched
on after a warm-up), and a client that either

  * sends `--messages` PINGs over four kept connections, one at a time (per message: one
    read and one write each way), or
  * opens `--connections` connections one after another, each sending one PING, reading
    the PONG and closing (per connection: accept, sniff, connect, relay, both closes).

Needs valgrind and redis-server (`apt-get install valgrind redis-server`).

    python3 bench/tcp_instructions.py                         # this checkout
    python3 bench/tcp_instructions.py --ab ../other-checkout  # and another, built in place
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench import callgrind  # noqa: E402
from bench.tcp_relay import PING, read_pong  # noqa: E402
from tests.h2.conftest import wait_port  # noqa: E402
from tests.ports import free_port  # noqa: E402


def _ping(sock: socket.socket) -> None:
    sock.sendall(PING)
    read_pong(sock)


def _messages(port: int) -> Callable[[int], None]:
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]

    def send(count: int) -> None:
        for index in range(count):
            _ping(connections[index % len(connections)])

    return send


def _connections(port: int) -> Callable[[int], None]:
    def send(count: int) -> None:
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                _ping(sock)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(64)  # the relay's close

    return send


def instructions(checkout: Path, upstream: int, count: int, per_connection: bool) -> float:
    listen, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = callgrind.sidecar(Path(tmp) / "callgrind.out", checkout, listen, upstream, admin)
        try:
            wait_port(listen, 240)
            send = _connections(listen) if per_connection else _messages(listen)
            send(max(100, count // 10))
            time.sleep(0.5)  # the warm-up's closes, before counting starts

            def measured() -> None:
                send(count)
                time.sleep(0.5)  # and the measured ones' closes, before counting stops

            callgrind.counted(sidecar.pid, measured)
        finally:
            sidecar.terminate()
            sidecar.wait(60)
        return callgrind.total_instructions(Path(tmp)) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--ab", metavar="CHECKOUT", help="also measure this other checkout")
    args = parser.parse_args()
    checkouts = [HERE] + ([Path(args.ab).resolve()] if args.ab else [])
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        redis = subprocess.Popen(["redis-server", *options], stdout=subprocess.DEVNULL)
        try:
            wait_port(port, 10)
            for checkout in checkouts:
                message = instructions(checkout, port, args.messages, False)
                connection = instructions(checkout, port, args.connections, True)
                print(
                    f"{checkout}: {message:,.0f} instructions per PING and PONG relayed, "
                    f"{connection:,.0f} per relayed connection",
                    flush=True,
                )
        finally:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    main()
