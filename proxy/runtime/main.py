"""`pilotfish run`: parse flags, build the config, fork the workers, run until drained."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time

from proxy.config import env as env_names
from proxy.config.load import ConfigError, build
from proxy.config.model import ProxyConfig
from proxy.runtime.listeners import listener_specs
from proxy.runtime.serve import LOG_LEVEL_NUMBERS, WorkerProcess

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pilotfish run",
        description="Run the sidecar proxy. "
        "Precedence: flags > PILOTFISH_* env > --config file > defaults.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--sidecar", action="store_true", help="transparent mode: 15001 out, 15006 in"
    )
    mode.add_argument("--listen", metavar="HOST:PORT", help="explicit mode: accept here ...")
    p.add_argument("--upstream", metavar="HOST:PORT", help="... and send everything here")
    p.add_argument("--config", metavar="FILE", help="YAML config file (env PILOTFISH_CONFIG)")
    p.add_argument("--concurrency", help="worker processes (default 2, as Istio)")
    p.add_argument("--admin-port", help="admin port on 127.0.0.1 (default 15000)")
    p.add_argument("--codec", help="HTTP/1 codec: llhttp (default) or h11")
    p.add_argument("--log-level", help="trace|debug|info (default)|warning|error|critical|off")
    p.add_argument("--drain-duration", help="terminationDrainDuration (default 5s)")
    p.add_argument("--access-log", metavar="PATH|-", help="access log file, or - for stdout")
    p.add_argument("--access-log-format", help="json (default) or text")
    p.add_argument(
        "--upstream-http2-ports",
        metavar="PORT,...",
        help="destination ports that speak HTTP/2: HTTP/1.1 requests to them go over h2c",
    )
    return p


def load_config(argv: list[str], environ: dict[str, str]) -> ProxyConfig:
    args = parser().parse_args(argv)
    flags: dict[str, object] = {
        "listen": args.listen,
        "upstream": args.upstream,
        "concurrency": args.concurrency,
        "admin.port": args.admin_port,
        "codec": args.codec,
        "log_level": args.log_level,
        "timeouts.drain": args.drain_duration,
        "access_log.path": args.access_log,
        "access_log.format": args.access_log_format,
        "upstream_http2_ports": args.upstream_http2_ports,
    }
    if args.sidecar:
        flags["mode"] = "sidecar"
    elif args.listen:
        flags["mode"] = "explicit"
    return build(args.config or environ.get(env_names.CONFIG_FILE), environ, flags)


def install_event_loop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config = load_config(argv, dict(os.environ))
    except ConfigError as error:
        print(f"pilotfish: bad config: {error}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(LOG_LEVEL_NUMBERS[config.log_level])
    install_event_loop()
    busy = _taken_ports(config)
    if busy:
        print(f"pilotfish: cannot listen: {busy} already in use", file=sys.stderr)
        return 1
    # Fork before any event loop exists: each worker builds its own loop and binds its
    # own SO_REUSEPORT sockets, so the kernel spreads connections across workers.
    children: list[int] = []
    for index in range(1, config.concurrency):
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent(parent)
            code = _run(WorkerProcess(index, config))
            os._exit(code)
        children.append(pid)
    code = _run(WorkerProcess(0, config, children))
    _reap(children, deadline=time.monotonic() + config.timeouts.drain + 1.0)
    return code


def _taken_ports(config: ProxyConfig) -> str | None:
    """A listener or admin address another process holds (or given twice), or None.

    The workers bind with SO_REUSEPORT, which a second pilotfish (or any process of
    the same user) could share silently, splitting the traffic between the two. A
    plain bind first makes that a start-up error instead.
    """
    # The admin ports too (worker 0 alone binds them, after the fork): caught here, a
    # busy one is named at once instead of failing worker 0 while the others serve.
    addresses = [(spec.host, spec.port) for spec in listener_specs(config)]
    addresses.append((config.admin.host, config.admin.port))
    if config.mode == "sidecar":
        addresses += [
            ("0.0.0.0", port)
            for port in (config.health_port, config.prometheus_port, config.agent_port)
        ]
    seen: set[tuple[str, int]] = set()
    for host, port in addresses:
        if (host, port) in seen:
            return f"{host}:{port} (given twice)"
        seen.add((host, port))
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # SO_REUSEADDR: connections in TIME_WAIT from a previous run are no conflict
            # (on Linux it still refuses a port that another socket listens on).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return f"{host}:{port}"
    return None


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the main process (it would hold the listeners alone).

    Linux's PR_SET_PDEATHSIG sends us SIGTERM (a drain) when the parent dies; the
    getppid check covers a parent that died before the call.
    """
    import ctypes  # only forked workers need it: 0.3 MB the main process need not hold

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _run(process: WorkerProcess) -> int:
    try:
        return asyncio.run(process.run())
    except OSError as error:
        print(f"pilotfish: worker {process.index}: cannot listen: {error}", file=sys.stderr)
        return 1


def _reap(children: list[int], deadline: float) -> None:
    for child in children:
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            time.sleep(0.02)
        else:
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
