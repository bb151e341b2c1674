"""HTTP/2 suite fixtures: a gRPC server (generic handlers, no codegen), the sidecar (explicit)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.h2.h2only import H2OnlyServer
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SERVICE = "pilotfish.test.Echo"


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class Proxy:
    """`pilotfish run` in explicit mode, one worker."""

    def __init__(self, upstream_port: int, access_log: str | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.upstream_port = upstream_port
        self.log = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "proxy", "run",
                "--listen", f"127.0.0.1:{self.port}",
                "--upstream", f"127.0.0.1:{upstream_port}",
                "--concurrency", "1",
                "--admin-port", str(self.admin_port),
                "--drain-duration", "3s",
                *(["--access-log", access_log] if access_log else []),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port)
        wait_port(self.admin_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.admin_port}/stats", timeout=5
        ) as response:
            text = response.read().decode()
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(":")
            try:
                out[name.strip()] = int(value.strip())
            except ValueError:
                continue
        return out

    def hwm_kb(self) -> int:
        """Peak RSS (VmHWM) of the proxy process and its children."""
        pids = [self.process.pid]
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        )
        pids += [int(pid) for pid in children.stdout.split()]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out.decode(errors="replace")


# Keys of `flaky:<key>` calls already answered UNAVAILABLE once (tests/h2/test_h2_retries.py).
FLAKY_SEEN: set[bytes] = set()


def _unary_echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    metadata = dict(context.invocation_metadata())
    if request.startswith(b"flaky:") and request not in FLAKY_SEEN:
        FLAKY_SEEN.add(request)
        context.abort(grpc.StatusCode.UNAVAILABLE, "busy the first time")
    if request.startswith(b"fail:"):
        code = getattr(grpc.StatusCode, request[5:].decode())
        context.abort(code, f"asked to fail with {code.name}")
    if request.startswith(b"sleep:"):
        time.sleep(float(request[6:]))
    if request == b"metadata":
        context.set_trailing_metadata((("x-trailer", "trailer-value"),))
        return repr(sorted(metadata.items())).encode()
    return request


# Server-streaming calls that saw their caller cancel (tests read it).
CANCELLED: list[bytes] = []


def _server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    if request.startswith(b"slow:"):
        context.add_callback(lambda: CANCELLED.append(request))
        for index in range(100):
            if not context.is_active():
                return
            time.sleep(0.05)
            yield index.to_bytes(4, "big")
        return
    count, _, size = request.partition(b"x")
    for index in range(int(count)):
        yield index.to_bytes(4, "big") * (int(size or b"1") // 4 or 1)


def _client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    total = 0
    count = 0
    for message in requests:
        total += len(message)
        count += 1
    return f"{count} {total}".encode()


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for message in requests:
        yield message[::-1]


def _identity(data: bytes) -> bytes:
    return data


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(_unary_echo, _identity, _identity),
    "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream, _identity, _identity),
    "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, _identity, _identity),
    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, _identity, _identity),
}

MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def start_grpc_server(
    workers: int = 16, address: str = "127.0.0.1:0", options: list[tuple[str, int]] = OPTIONS
) -> tuple[grpc.Server, int]:
    """A started grpcio server with the test service (`HANDLERS`), and its port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port(address)
    server.start()
    return server, port


@pytest.fixture(scope="session")
def grpc_server() -> Iterator[int]:
    server, port = start_grpc_server()
    yield port
    server.stop(None)


@pytest.fixture(scope="session")
def grpc_proxy(grpc_server: int) -> Iterator[Proxy]:
    proxy = Proxy(grpc_server)
    yield proxy
    proxy.stop()


@pytest.fixture()
def channel(grpc_proxy: Proxy) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_proxy.target, options=OPTIONS) as chan:
        yield chan


def method(chan: grpc.Channel, kind: str, name: str) -> grpc.UnaryUnaryMultiCallable:
    factory = getattr(chan, kind)
    callable_: grpc.UnaryUnaryMultiCallable = factory(
        f"/{SERVICE}/{name}", request_serializer=_identity, response_deserializer=_identity
    )
    return callable_


NGINX_CONF = """worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f;
  uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s; client_max_body_size 0;
  server {{ listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "hello from upstream\\n"; }}
    location /files/ {{ alias {tmp}/files/; }}
    location /echo {{ default_type text/plain;
      return 200 "$request_method $request_uri $http_host $http_te $http_x_request_id\\n"; }}
  }} }}
"""


@pytest.fixture(scope="session")
def nginx() -> Iterator[int]:
    """An HTTP/1.1-only upstream, as meshbench uses; /files/huge is a sparse 1 GiB file."""
    # Not under pytest's tmp (mode 0700): nginx's worker runs as nobody and must read it.
    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-h2-nginx-"))
    tmp.chmod(0o755)
    (tmp / "files").mkdir()
    with open(tmp / "files" / "huge", "wb") as huge:
        huge.truncate(1 << 30)
    with open(tmp / "files" / "big", "wb") as big:
        big.truncate(64 << 20)
    port = free_port()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
    process = subprocess.Popen(
        ["nginx", "-c", str(tmp / "nginx.conf"), "-e", "/dev/null"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    yield port
    process.terminate()
    process.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx_proxy(nginx: int) -> Iterator[Proxy]:
    proxy = Proxy(nginx)
    yield proxy
    proxy.stop()


@pytest.fixture()
def h2only() -> Iterator[H2OnlyServer]:
    """An h2c-only upstream built on the h2 package (refuses HTTP/1.1; can refuse streams)."""
    server = H2OnlyServer()
    yield server
    server.close()
