"""Start-up, config errors, the admin API, workers, and draining on SIGTERM without losing requests."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.proxy.conftest import ROOT, Proxy, free_port, raw_exchange, wait_ready
from tests.proxy.upstream_app import Server


def run_pilotfish(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("timeouts:\n  route: soon\n", "timeouts.route", "not a duration"),
        ("concurrency: -1\n", "concurrency", "must be at least 0"),
        ("timeouts:\n  route: .nan\n", "timeouts.route", "not a finite duration"),
        ("\xe9t\xe9: 1\n", "-", "not UTF-8 text"),
        ("codec: llhttp2\n", "codec", "not one of"),
        ("admin:\n  port: 70000\n", "admin.port", "not a TCP port"),
        ("no_such_setting: 1\n", "no_such_setting", "unknown setting"),
        ("listen: [oops\n", "-", "not valid YAML"),
    ],
)
def test_bad_config_file_names_file_field_and_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("latin-1"))  # one case is Latin-1 text, not UTF-8
    result = run_pilotfish(
        "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--config", str(path)
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and f"'{field}'" in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_env_and_flags_are_named() -> None:
    result = run_pilotfish(
        "--listen",
        "127.0.0.1:1",
        "--upstream",
        "127.0.0.1:2",
        env={"PILOTFISH_CONCURRENCY": "many"},
    )
    assert (
        result.returncode == 2
        and "PILOTFISH_CONCURRENCY" in result.stderr
        and "'concurrency'" in result.stderr
    )
    result = run_pilotfish("--listen", "127.0.0.1:99999", "--upstream", "127.0.0.1:2")
    assert (
        result.returncode == 2 and "command line" in result.stderr and "'listen'" in result.stderr
    )
    result = run_pilotfish("--listen", "127.0.0.1:1")
    assert result.returncode == 2 and "'upstream'" in result.stderr


def test_logging_reports_the_configured_level_and_changes_it(upstream: Server) -> None:
    proxy = Proxy(upstream.port, args=["--log-level", "error"])
    try:
        assert proxy.admin("/logging") == (200, b"active loggers:\n  pilotfish: error\n")
        assert proxy.admin("/logging?level=debug", "POST")[0] == 200
        assert proxy.admin("/logging")[1].endswith(b"pilotfish: debug\n")
    finally:
        proxy.stop()
    # What the POST does in each process (the others get it as SIGRTMIN + its place).
    import logging

    from proxy.runtime.main import load_config
    from proxy.runtime.serve import LOG_LEVELS, WorkerProcess

    worker = WorkerProcess(0, load_config(["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2"], {}))
    root = logging.getLogger()
    before = root.level
    try:
        for level, number in (("warning", logging.WARNING), ("debug", logging.DEBUG)):
            worker.set_log_level(level)
            assert root.level == number and level in LOG_LEVELS
    finally:
        root.setLevel(before)


def test_concurrency_0_is_a_worker_per_cpu(tmp_path: Path, upstream: Server) -> None:
    # Istio's ProxyConfig `concurrency: 0`, which the injector passes on as it is.
    proxy = Proxy(upstream.port, args=["--concurrency", "0"])
    try:
        dump = json.loads(proxy.admin("/config_dump")[1])
        assert dump["concurrency"] == len(os.sched_getaffinity(0))
    finally:
        proxy.stop()


def test_precedence_flag_over_env_over_file(tmp_path: Path, upstream: Server) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("codec: h11\nterminationDrainDuration: 7s\nconcurrency: 3\n")
    proxy = Proxy(
        upstream.port,
        codec="llhttp",
        args=["--config", str(path)],
        env={"PILOTFISH_CONCURRENCY": "1", "PILOTFISH_TERMINATION_DRAIN_DURATION": "2s"},
    )
    try:
        dump = json.loads(proxy.admin("/config_dump")[1])
        assert dump["codec"] == "llhttp"  # flag beats file
        assert (
            dump["concurrency"] == 1
        )  # flag (the fixture passes --concurrency 1) beats env and file
        assert dump["timeouts"]["drain"] == 2.0  # env beats file
    finally:
        proxy.stop()


def test_admin_endpoints(upstream: Server) -> None:
    proxy = Proxy(upstream.port)
    try:
        assert proxy.admin("/ready") == (200, b"LIVE\n")
        info = json.loads(proxy.admin("/server_info")[1])
        assert info["state"] == "LIVE" and info["mode"] == "explicit"
        listeners = json.loads(proxy.admin("/listeners")[1])["listeners"]
        assert listeners[0]["address"] == f"127.0.0.1:{proxy.port}"
        assert json.loads(proxy.admin("/config_dump")[1])["upstream"]["port"] == upstream.port
        raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        stats = json.loads(proxy.admin("/stats?format=json")[1])["stats"]
        assert {"name": "downstream_rq_2xx", "value": 1} in stats
        assert b"pilotfish_downstream_rq_total 1" in proxy.admin("/stats/prometheus")[1]
        assert proxy.admin("/stats?filter=upstream_rq_total")[1] == b"upstream_rq_total: 1\n"
        for mutation in ("/quitquitquit", "/drain_listeners", "/healthcheck/fail"):
            assert proxy.admin(mutation)[0] == 405
        assert proxy.admin("/nope")[0] == 404
        assert proxy.admin("/healthcheck/fail", "POST")[0] == 200
        assert proxy.admin("/ready")[0] == 503
        assert proxy.admin("/healthcheck/ok", "POST")[0] == 200
        assert proxy.admin("/ready")[0] == 200
        assert proxy.admin("/quitquitquit", "POST")[0] == 200
        assert proxy.proc.wait(3) == 0
    finally:
        proxy.stop()


def test_drain_listeners_stops_accepting(upstream: Server) -> None:
    proxy = Proxy(upstream.port, args=["--drain-duration", "2s"])
    try:
        assert proxy.admin("/drain_listeners", "POST")[0] == 200
        assert proxy.admin("/ready") == (503, b"DRAINING\n")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), 1).close()
        time.sleep(0.3)
        assert proxy.proc.poll() is None  # draining listeners is not exiting (as in Envoy)
        assert proxy.admin("/ready")[0] == 503
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(5) == 0  # nothing in flight: it exits without waiting the full 2 s
    finally:
        proxy.stop()


def test_two_workers_count_every_request_once(upstream: Server) -> None:
    proxy = Proxy(upstream.port, concurrency=2)
    try:
        children = subprocess.run(
            ["pgrep", "-P", str(proxy.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 1
        for _ in range(100):
            assert raw_exchange(
                proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            ).endswith(b"hello")
        stats = proxy.stats()
        assert stats["downstream_rq_total"] == 100 and stats["downstream_rq_2xx"] == 100
    finally:
        proxy.stop()


class LoadClient(threading.Thread):
    """Keep-alive requests in a loop; records what happened to every request it sent."""

    def __init__(self, port: int, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop_at = stop_at
        self.ok = 0
        self.cut = 0  # connection closed with no response byte: the proxy never took the request
        self.partial = 0  # some of a response, then a close: must stay 0
        self.refused = 0  # could not connect: never started
        self.completed_at: list[float] = []

    def run(self) -> None:
        sock: socket.socket | None = None
        while time.monotonic() < self.stop_at:
            if sock is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), 2)
                except OSError:
                    self.refused += 1
                    return
            response = b""
            try:
                sock.sendall(b"GET /slow?ms=30 HTTP/1.1\r\nHost: a\r\n\r\n")
                while not response.endswith(b"slow\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed mid-request")
                    response += chunk
            except OSError:
                # HTTP/1.1's keep-alive race: a close that crosses a new request on the
                # wire. RFC 9112 section 9.3.1 lets a client retry it; it is lost only
                # if the proxy had taken it (checked against the upstream's count below).
                if response:
                    self.partial += 1
                else:
                    self.cut += 1
                sock.close()
                sock = None
                continue
            assert re.match(rb"HTTP/1\.1 200 ", response), response
            self.ok += 1
            self.completed_at.append(time.monotonic())
            if b"connection: close" in response.lower():
                sock.close()
                sock = None
        if sock is not None:
            sock.close()


def test_sigterm_under_load_loses_nothing(upstream: Server) -> None:
    upstream.state.reset()
    proxy = Proxy(upstream.port, concurrency=2, args=["--drain-duration", "5s"])
    try:
        stop_at = time.monotonic() + 3.0
        clients = [LoadClient(proxy.port, stop_at) for _ in range(16)]
        for client in clients:
            client.start()
        time.sleep(0.8)
        sigterm_at = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(10)
        code = proxy.proc.wait(10)
        exited_after = time.monotonic() - sigterm_at
        assert code == 0
        ok = sum(c.ok for c in clients)
        forwarded = len([r for r in upstream.state.requests if r.path == "/slow"])
        # every request the proxy passed on came back to its client, whole
        assert forwarded == ok
        assert sum(c.partial for c in clients) == 0
        assert ok > 100
        # requests in flight at SIGTERM finished after it
        assert any(t > sigterm_at for c in clients for t in c.completed_at)
        # exited as soon as its clients were gone, well before the 5 s drain deadline
        assert exited_after < 4.0
    finally:
        proxy.stop()


def test_ready_says_draining_until_every_worker_has_drained(upstream: Server) -> None:
    # Worker 0 serves the admin ports; it must keep them up while the other worker still
    # finishes its requests (before, /ready was refused until the process exited).
    proxy = Proxy(upstream.port, concurrency=2, args=["--drain-duration", "5s"])
    clients = []
    try:
        for _ in range(10):  # spread over both workers by the kernel's SO_REUSEPORT hash
            sock = socket.create_connection(("127.0.0.1", proxy.port), 5)
            sock.sendall(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: a\r\n\r\n")
            clients.append(sock)
        time.sleep(0.3)
        proxy.proc.send_signal(signal.SIGTERM)
        answers = []
        while proxy.proc.poll() is None:
            try:
                answers.append(proxy.admin("/ready")[0])
            except OSError:
                if proxy.proc.poll() is None:
                    answers.append("refused")
            time.sleep(0.1)
        for sock in clients:
            response = b""
            while chunk := sock.recv(4096):
                response += chunk
            assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"slow\n")
        # 503 DRAINING throughout; the admin port closes only in the last moment before
        # the exit (at most a poll or two may fall between the two).
        served = answers[: answers.index("refused")] if "refused" in answers else answers
        assert served and set(served) == {503}, answers
        assert len(answers) - len(served) <= 2, answers
        assert proxy.proc.returncode == 0
    finally:
        for sock in clients:
            sock.close()
        proxy.stop()


def test_sigterm_with_idle_keepalive_connection_exits_early(upstream: Server) -> None:
    proxy = Proxy(upstream.port, args=["--drain-duration", "5s"])
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(1000).endswith(b"hello")
            started = time.monotonic()
            proxy.proc.send_signal(signal.SIGTERM)
            assert sock.recv(1000) == b""  # the idle connection is closed by the drain
            assert proxy.proc.wait(5) == 0
            assert time.monotonic() - started < 2.0
    finally:
        proxy.stop()


@pytest.mark.parametrize("how", ["SIGTERM", "/drain_listeners"])
def test_a_request_sent_just_after_the_drain_began_is_answered(upstream: Server, how: str) -> None:
    # A kept-alive connection that was busy a moment ago is not closed under its client:
    # its next request is answered, with `Connection: close`.
    proxy = Proxy(upstream.port, args=["--drain-duration", "5s"])
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(1000).endswith(b"hello")
            if how == "SIGTERM":
                proxy.proc.send_signal(signal.SIGTERM)
            else:
                assert proxy.admin(how, "POST")[0] == 200
            time.sleep(0.01)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            response = b""
            while chunk := sock.recv(1000):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"hello")
        assert b"connection: close" in response.lower()
        if how == "SIGTERM":
            assert proxy.proc.wait(5) == 0
    finally:
        proxy.stop()


def test_explicit_mode_port_in_use_fails_clearly(upstream: Server) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_pilotfish(
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            f"127.0.0.1:{upstream.port}",
            "--concurrency",
            "1",
            "--admin-port",
            str(free_port()),
        )
    assert (
        result.returncode != 0
        and "cannot listen" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_busy_admin_port_is_named_before_any_worker_serves(upstream: Server) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        started = time.monotonic()
        result = run_pilotfish("--listen", f"127.0.0.1:{free_port()}", "--upstream",
                               f"127.0.0.1:{upstream.port}", "--concurrency", "2",
                               "--admin-port", str(busy))  # fmt: skip
    assert result.returncode == 1
    assert f"127.0.0.1:{busy} already in use" in result.stderr
    assert time.monotonic() - started < 5  # not after a drain of the workers that started


def test_second_instance_on_the_same_port_refuses_to_start(upstream: Server) -> None:
    """SO_REUSEPORT would let two proxies share a port silently; the second must fail."""
    proxy = Proxy(upstream.port)
    try:
        result = run_pilotfish("--listen", f"127.0.0.1:{proxy.port}", "--upstream", f"127.0.0.1:{upstream.port}",
                               "--concurrency", "1", "--admin-port", str(free_port()))
        assert result.returncode == 1 and "already in use" in result.stderr
        assert proxy.proc.poll() is None
    finally:
        proxy.stop()
    # once it has gone, the same port is free again at once (TIME_WAIT is no conflict)
    result = subprocess.Popen([sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{proxy.port}",
                               "--upstream", f"127.0.0.1:{upstream.port}", "--concurrency", "1",
                               "--admin-port", str(proxy.admin_port)], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_ready(proxy.admin_port, result)
    finally:
        result.send_signal(signal.SIGINT)
        result.wait(5)


def test_the_heap_thresholds_are_set_where_the_c_library_is_glibc() -> None:
    """proxy.runtime.heap: on glibc mallopt takes both thresholds (elsewhere it is a no-op)."""
    from proxy.runtime import heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: nothing to tune")
    assert heap.tune() is True
