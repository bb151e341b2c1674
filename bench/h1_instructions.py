"""Instructions per HTTP/1 request in one sidecar, counted by valgrind's callgrind.

The A/B measure for small changes on the HTTP/1 path (as bench/grpc_instructions.py is
for gRPC): CPU time per request moves by a third between runs on these shared machines,
the instruction count of the same requests by under 1%. It is not a latency: cache
misses and the kernel's share do not show (`bench/cpu_at_rate.py` measures those).

nginx answers `GET /` with a 12-byte body; one pilotfish worker relays to it under
callgrind, instrumentation switched on after 200 warm-up requests; the client sends
`--requests` requests over four keep-alive connections, one after another. The count
covers the sidecar's user-space instructions (parsing both heads, the header policy,
the pool, telemetry with its default 1% sampling, uvloop).

Needs valgrind and nginx (`apt-get install valgrind nginx`).

    python3 bench/h1_instructions.py                         # this checkout
    python3 bench/h1_instructions.py --ab ../other-checkout  # and another, built in place
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
NGINX_CONF = """worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp};
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello world\\n"; }} }}
}}
"""
CONNECTIONS = 4
USER_AGENT = "h2load nghttp2/1.52.0"  # what the referee's fixed-rate load sends


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def _control(*args: object) -> None:
    subprocess.run(["callgrind_control", *map(str, args)], check=True, capture_output=True)


def instructions_per_request(checkout: Path, upstream: int, requests: int) -> float:
    listen, admin = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        sidecar = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{listen}",
             "--upstream", f"127.0.0.1:{upstream}", "--concurrency", "1",
             "--admin-port", str(admin)],
            cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_port(listen, 240)
            clients = [http.client.HTTPConnection("127.0.0.1", listen) for _ in range(CONNECTIONS)]

            def send(count: int) -> None:
                for index in range(count):
                    client = clients[index % CONNECTIONS]
                    client.request("GET", "/", headers={"User-Agent": USER_AGENT})
                    response = client.getresponse()
                    if response.read() != b"hello world\n" or response.status != 200:
                        raise RuntimeError(f"unexpected answer {response.status}")

            send(200)
            _control("-i", "on", sidecar.pid)
            send(requests)
            _control("-i", "off", sidecar.pid)
            _control("-d", sidecar.pid)
            for client in clients:
                client.close()
        finally:
            sidecar.terminate()
            sidecar.wait(60)
        total = 0
        for dump in Path(tmp).glob("callgrind.out*"):
            for line in dump.read_text().splitlines():
                if line.startswith(("totals:", "summary:")):
                    total = max(total, int(line.split()[1]))
    return total / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--ab", metavar="CHECKOUT", help="also measure this other checkout")
    args = parser.parse_args()
    checkouts = [HERE] + ([Path(args.ab).resolve()] if args.ab else [])
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
        upstream = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            _wait_port(port, 10)
            counts = []
            for checkout in checkouts:
                counts.append(instructions_per_request(checkout, port, args.requests))
                print(f"{checkout}: {counts[-1]:,.0f} instructions per request", flush=True)
        finally:
            upstream.terminate()
            upstream.wait(10)
    if len(counts) == 2:
        print(f"{checkouts[0]} is {counts[0] / counts[1]:.3f} x {checkouts[1]}")


if __name__ == "__main__":
    main()
