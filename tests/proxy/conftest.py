"""Fixtures for proxy tests: a scriptable upstream, nginx, and the proxy itself as a process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.proxy import upstream_app

ROOT = Path(__file__).resolve().parents[2]


def wait_ready(admin_port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"proxy exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("proxy did not become ready")


class Proxy:
    """A running `pilotfish run` process in explicit mode."""

    def __init__(
        self,
        upstream_port: int,
        codec: str = "llhttp",
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.upstream_port = upstream_port
        command = [
            sys.executable,
            "-m",
            "proxy",
            "run",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--upstream",
            f"127.0.0.1:{upstream_port}",
            "--concurrency",
            str(concurrency),
            "--admin-port",
            str(self.admin_port),
            "--codec",
            codec,
            *(args or []),
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_ready(self.admin_port, self.proc)

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5) as r:
            text = r.read().decode()
        return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}

    def admin(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def peak_rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def upstream() -> Iterator[upstream_app.Server]:
    server = upstream_app.start()
    yield server
    server.shutdown()


@pytest.fixture(params=["llhttp", "h11"])
def codec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy(upstream: upstream_app.Server, codec: str) -> Iterator[Proxy]:
    upstream.state.reset()
    running = Proxy(upstream.port, codec)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def nginx() -> Iterator[int]:
    """A real nginx on loopback answering `hello from nginx` (and /big: 8 MiB)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        pytest.skip("nginx is not installed (scripts/setup.sh installs it as root)")
    tmp = Path(tempfile.mkdtemp(prefix="pf-nginx-"))
    port = free_port()
    (tmp / "big").write_bytes(os.urandom(8 << 20))
    (tmp / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 100000;
  client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f;
  uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
  server {{ listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    location /big {{ alias {tmp}/big; }} }} }}
""")
    proc = subprocess.Popen([binary, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(tmp, ignore_errors=True)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, shut: bool = False) -> bytes:
    """Send raw bytes, return everything received until the peer closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def log_entries(path: Path, count: int = 1) -> list[dict[str, object]]:
    """The access log's JSON lines once there are `count`, waiting for the 1 s flush."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists():
            entries = [json.loads(line) for line in path.read_text().splitlines()]
            if len(entries) >= count:
                return entries
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} access log lines")


def status_of(data: bytes) -> int:
    """The status code of the first response in raw bytes from the proxy."""
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert match, data[:200]
    return int(match.group(1))


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose connects hang: a listener that accepts nothing, its accept
    queue filled, so the kernel drops further SYNs (as a firewalled or dead peer does)."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
                time.sleep(0.02)
            with socket.socket() as probe:
                probe.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    probe.connect(("127.0.0.1", port))  # the queue is full: connects hang
            yield port
        finally:
            for filler in fillers:
                filler.close()
