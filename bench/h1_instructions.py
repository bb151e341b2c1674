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
    python3 bench/h1_instructions.py --keep /tmp/cg            # and keep the dump to annotate
    python3 bench/h1_instructions.py --varied                  # every request head different

Every request the referee's load sends is the same, which is the best case for the
llhttp codecs' reading of repeated heads (docs/proxy.md); `--varied` gives each request
its own target and a header of its own (a cookie-like value), as real clients do.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench import callgrind  # noqa: E402
from proxy.telemetry import peer  # noqa: E402
from proxy.telemetry.identity import Identity  # noqa: E402
from tests.h2.conftest import wait_port  # noqa: E402
from tests.ports import free_port  # noqa: E402

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


# The env the injector gives a sidecar in a pod (--in-pod): with a workload name the
# sidecar takes part in the peer metadata exchange (docs/telemetry.md).
POD_ENV = {
    "POD_NAME": "productpage-v1-6b7f-x",
    "POD_NAMESPACE": "bookinfo",
    "PILOTFISH_WORKLOAD": "productpage-v1",
    "PILOTFISH_APP": "productpage",
    "PILOTFISH_VERSION": "v1",
    "INSTANCE_IP": "10.1.0.7",
}


# --from-peer: what a caller's sidecar in another pod adds to every request.
CALLER = {
    "POD_NAME": "frontend-5d8b-q",
    "POD_NAMESPACE": "bookinfo",
    "PILOTFISH_WORKLOAD": "frontend",
}


def caller_headers() -> dict[str, str]:
    exchange = peer.PeerExchange(Identity.from_env(CALLER), {"INSTANCE_IP": "10.1.0.9"}, True)
    return {name.decode(): value.decode() for name, value in exchange.ours}


def instructions_per_request(
    checkout: Path,
    upstream: int,
    requests: int,
    keep: Path | None = None,
    varied: bool = False,
    role: str = "",
) -> float:
    """`role`: "" (no identity env), "caller" (--in-pod: the sidecar sends its metadata
    upstream) or "server" (--from-peer: inbound, each request carries a caller's)."""
    listen, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = callgrind.sidecar(
            Path(tmp) / "callgrind.out", checkout, listen, upstream, admin,
            env={**(POD_ENV if role else {}),
                 **({"PILOTFISH_EXPLICIT_DIRECTION": "inbound"} if role == "server" else {})},
        )  # fmt: skip
        try:
            wait_port(listen, 240)
            clients = [http.client.HTTPConnection("127.0.0.1", listen) for _ in range(CONNECTIONS)]

            extra = caller_headers() if role == "server" else {}

            def send(count: int) -> None:
                for index in range(count):
                    client = clients[index % CONNECTIONS]
                    if varied:
                        headers = {"User-Agent": USER_AGENT, "Cookie": f"session={index * 7919}"}
                        client.request(
                            "GET", f"/items/{index}?page={index % 13}", headers=headers | extra
                        )
                    else:
                        client.request("GET", "/", headers={"User-Agent": USER_AGENT} | extra)
                    response = client.getresponse()
                    if response.read() != b"hello world\n" or response.status != 200:
                        raise RuntimeError(f"unexpected answer {response.status}")

            send(200)
            callgrind.counted(sidecar.pid, lambda: send(requests))
            for client in clients:
                client.close()
        finally:
            sidecar.terminate()
            sidecar.wait(60)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for dump in Path(tmp).glob("callgrind.out*"):
                shutil.copy(dump, keep / dump.name)
        return callgrind.total_instructions(Path(tmp)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--ab", metavar="CHECKOUT", help="also measure this other checkout")
    parser.add_argument(
        "--keep", metavar="DIR", type=Path,
        help="copy this checkout's callgrind dumps here (for callgrind_annotate)",
    )  # fmt: skip
    parser.add_argument(
        "--varied", action="store_true", help="a different target and cookie on every request"
    )
    roles = parser.add_mutually_exclusive_group()
    roles.add_argument(
        "--in-pod", action="store_const", const="caller", dest="role", default="",
        help="give the sidecar a pod's identity env, so it sends peer metadata upstream",
    )  # fmt: skip
    roles.add_argument(
        "--from-peer", action="store_const", const="server", dest="role",
        help="an inbound sidecar in a pod, every request carrying a caller's peer metadata",
    )  # fmt: skip
    args = parser.parse_args()
    checkouts = [HERE] + ([Path(args.ab).resolve()] if args.ab else [])
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
        upstream = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            wait_port(port, 10)
            counts = []
            for checkout in checkouts:
                keep = args.keep if checkout == HERE else None
                counts.append(
                    instructions_per_request(
                        checkout, port, args.requests, keep, args.varied, args.role
                    )
                )
                print(f"{checkout}: {counts[-1]:,.0f} instructions per request", flush=True)
        finally:
            upstream.terminate()
            upstream.wait(10)
    if len(counts) == 2:
        print(f"{checkouts[0]} is {counts[0] / counts[1]:.3f} x {checkouts[1]}")


if __name__ == "__main__":
    main()
