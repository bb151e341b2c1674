"""Runs one worker process: its listeners, its share of the traffic, and (worker 0) the admin ports.

Lifecycle, as in Istio: LIVE once listeners are up; SIGTERM (or POST
/drain_listeners) drains: readiness turns 503, listeners stop accepting, keep-alive
responses carry `Connection: close`, in-flight requests finish, and the worker exits
as soon as no connection is open or when the drain duration runs out. SIGINT (and
POST /quitquitquit) exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Final

from proxy.admin import server as admin_server
from proxy.admin.endpoints import AdminEndpoints, ServerState
from proxy.config.model import ProxyConfig
from proxy.runtime import heap
from proxy.runtime.downstream import DownstreamConnection
from proxy.runtime.listeners import ListenerSpec, listener_specs
from proxy.runtime.worker import Worker
from proxy.telemetry.pipeline import Telemetry
from proxy.telemetry.stats import new_stats

log = logging.getLogger("pilotfish")

# How often idle connections are looked for; while draining, much more often, so the
# worker exits soon after its last client goes quiet.
SWEEP_INTERVAL = 1.0
DRAIN_SWEEP_INTERVAL = 0.05
# While draining, a keep-alive connection quiet for this long is closed; a busier one
# gets `Connection: close` on its next response instead (no race with a request in flight).
DRAIN_IDLE_GRACE = 0.1
BACKLOG = 4096
# The main process tells its workers to drain their listeners (without exiting) with this.
DRAIN_LISTENERS_SIGNAL = signal.SIGUSR1
# Envoy's level names, mapped onto Python's. POST /logging reaches the other workers as
# SIGRTMIN + the level's place here.
LOG_LEVEL_NUMBERS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
LOG_LEVELS: Final = tuple(LOG_LEVEL_NUMBERS)
# Net allocations between young-generation collections (CPython's default is 700). After
# gc.freeze() a young collection is cheap; what it finds is mostly one small cycle per
# closed HTTP/1 connection (codec <-> parser callbacks). Measured with gc.callbacks under
# wrk -c64: keep-alive load collects about as rarely at 5,000 as at 50,000 (GC CPU
# under 0.1 us/request either way), while with a new connection per request 50,000 let
# the cycles pile up to +6 MB of peak RSS (34.9 MB vs 29.5 MB at 5,000, 28.8 at 700).
GC_YOUNG_THRESHOLD = 5_000


class WorkerProcess:
    def __init__(
        self,
        index: int,
        config: ProxyConfig,
        children: list[int] | None = None,
    ) -> None:
        self.index = index
        self.config = config
        self.stats = new_stats()  # this worker's own; worker 0 sums them when read
        self.children = children or []
        self.state = ServerState()
        self.servers: list[asyncio.Server] = []
        self.admin_servers: list[asyncio.Server] = []
        self.exit_code = 0
        self.exiting = False
        # Draining: this worker's own connections are done (worker 0 then waits for its
        # children, keeping the admin ports up: /ready says DRAINING until the end).
        self.own_drained = False
        self.drain_deadline: asyncio.TimerHandle | None = None
        self.stopped: asyncio.Event | None = None
        self.worker: Worker | None = None
        self.sweeper: asyncio.Task[None] | None = None
        self.on_stop: list[Callable[[], None]] = []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        # Telemetry is built here, after the fork: its threads and timers are per process.
        self.telemetry = Telemetry(loop, self.config, self.index, os.environ, self.stats)
        self.on_stop.append(self.telemetry.close)
        await self.telemetry.start()
        self.worker = worker = Worker(loop, self.config, self.stats, self.telemetry, self.index)
        specs = listener_specs(self.config)
        for spec in specs:
            self.servers.append(await self._listen(spec))
            if spec.host == "0.0.0.0":
                # Capture listeners take IPv6 too where the pod has it (ip6tables
                # redirects there); a pod without IPv6 simply has no such socket.
                with contextlib.suppress(OSError):
                    self.servers.append(await self._listen(spec, "::"))
        if self.index == 0:
            await self._start_admin(specs)
        loop.add_signal_handler(signal.SIGTERM, self.drain)
        loop.add_signal_handler(DRAIN_LISTENERS_SIGNAL, self.drain_listeners)
        for offset, level in enumerate(LOG_LEVELS):
            loop.add_signal_handler(signal.SIGRTMIN + offset, self._take_log_level, level)
        loop.add_signal_handler(signal.SIGINT, self.quit_now)
        self.state.state = "LIVE"
        # Everything built so far lives as long as the process: move it out of the
        # collector's sight, and collect the young generation less often. The hot path
        # makes few reference cycles, and with the defaults the cycle collector cost
        # about a tenth of all CPU per request.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        heap.tune()  # streamed bodies: no heap trimmed and regrown on every read
        if self.index == 0:
            where = ", ".join(f"{s.name} {s.host}:{s.port}" for s in specs)
            log.info(
                "pilotfish %s: LIVE (%s; admin %s)", self.config.mode, where, self.config.admin
            )
        self.sweeper = loop.create_task(self._sweep())
        await self.stopped.wait()
        worker.flush()
        self.sweeper.cancel()
        for server in self.servers + self.admin_servers:
            server.close()
        for callback in self.on_stop:
            callback()
        del worker
        return self.exit_code

    async def _listen(self, spec: ListenerSpec, host: str | None = None) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        worker = self.worker
        assert worker is not None
        resolve, name = spec.resolve, spec.name
        address = host or spec.host
        sock = admin_server.bound_socket(address, spec.port, reuse_port=True)
        if sock is None:
            return await loop.create_server(
                lambda: DownstreamConnection(worker, resolve, name),
                address,
                spec.port,
                reuse_port=True,
                backlog=BACKLOG,
            )
        return await loop.create_server(
            lambda: DownstreamConnection(worker, resolve, name), sock=sock, backlog=BACKLOG
        )

    async def _start_admin(self, specs: list[ListenerSpec]) -> None:
        config = self.config
        listeners = [
            {"name": s.name, "address": f"{s.host}:{s.port}", "direction": s.direction}
            for s in specs
        ]
        self.admin = AdminEndpoints(
            config,
            self.telemetry.stats_totals,
            self.state,
            listeners,
            self.drain_listeners,
            self.quit_now,
            metrics_page=self.telemetry.metrics_page,
        )
        self.admin.set_log_level = self.set_log_level
        self.admin_servers.append(
            await admin_server.serve(config.admin.host, config.admin.port, self.admin.handle)
        )
        if config.mode == "sidecar":
            self.admin_servers.append(
                await admin_server.serve("0.0.0.0", config.health_port, self.admin.health_only)
            )
            self.admin_servers.append(
                await admin_server.serve("0.0.0.0", config.prometheus_port, self.admin.metrics_only)
            )
            # Imported only in sidecar mode: the 15020 agent brings prometheus_client's
            # parser and an HTTP/2 health prober, several MB of resident memory.
            from proxy.admin.agent import Agent

            agent = Agent(self.admin, self.telemetry, os.environ)
            self.admin_servers.append(
                await admin_server.serve("0.0.0.0", config.agent_port, agent.handle)
            )

    async def _sweep(self) -> None:
        worker = self.worker
        assert worker is not None
        # 0 turns it off, as Envoy's idle_timeout: 0s does.
        idle_limit = self.config.timeouts.downstream_idle or float("inf")
        while True:
            await asyncio.sleep(DRAIN_SWEEP_INTERVAL if worker.draining else SWEEP_INTERVAL)
            # The clock requests and pooled connections are timed on (not uvloop's, in ms).
            now = time.monotonic()
            limit = DRAIN_IDLE_GRACE if worker.draining else idle_limit
            # 0 turns it off, as Envoy's stream_idle_timeout: 0s does (long-lived streams).
            stream_idle = self.config.timeouts.stream_idle or float("inf")
            observer = worker.observer
            for connection in list(worker.connections):
                relay = connection.relay
                if relay is not None and observer is not None:
                    observer.tcp_progress(relay)  # an open relay's bytes count as they go
                if connection.idle_for(now) > limit:
                    if worker.draining:
                        connection.drain()
                    else:
                        connection.idle_timeout()
                elif connection.stream_idle_for(now) > stream_idle:
                    connection.stream_idle_timeout()
                elif connection.h2 is not None:
                    connection.h2.sweep_idle_streams(now, stream_idle)
            worker.pool.sweep(now)
            worker.check_drained()
            if self.children:
                # Polled, not SIGCHLD: uvloop keeps that signal for its own use.
                self._child_exited()

    def drain(self) -> None:
        """SIGTERM: stop accepting, finish what is in flight, then exit."""
        self.drain_listeners()
        if self.exiting:
            return
        self.exiting = True
        for child in self.children:
            _signal(child, signal.SIGTERM)
        worker = self.worker
        assert worker is not None
        self.drain_deadline = asyncio.get_running_loop().call_later(
            self.config.timeouts.drain, self._stop
        )

        def drained(_: object) -> None:
            self.own_drained = True
            self._stop_when_all_drained()

        worker.drained.add_done_callback(drained)

    def _stop_when_all_drained(self) -> None:
        """Exit once this worker and every child have drained (or at the deadline)."""
        if self.own_drained and not self.children:
            if self.drain_deadline is not None:
                self.drain_deadline.cancel()
            self._stop()

    def drain_listeners(self) -> None:
        """Envoy's /drain_listeners: stop accepting and close kept-alive connections, stay up."""
        worker = self.worker
        if worker is None or worker.draining:
            return
        self.state.state = "DRAINING"
        for child in self.children:
            _signal(child, DRAIN_LISTENERS_SIGNAL)
        for server in self.servers:
            server.close()
        worker.start_drain()
        if self.sweeper is not None:
            # Sweep at the draining pace from now on, not after the second-long sleep in
            # progress: quiet keep-alive connections close within DRAIN_IDLE_GRACE or so.
            self.sweeper.cancel()
            self.sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def set_log_level(self, level: str) -> None:
        """POST /logging: the level in this process, and in each worker by a signal."""
        self._take_log_level(level)
        for child in self.children:
            _signal(child, signal.SIGRTMIN + LOG_LEVELS.index(level))

    @staticmethod
    def _take_log_level(level: str) -> None:
        logging.getLogger().setLevel(LOG_LEVEL_NUMBERS[level])

    def quit_now(self) -> None:
        for child in self.children:
            _signal(child, signal.SIGINT)
        self._stop()

    def _stop(self) -> None:
        if self.stopped is not None:
            self.stopped.set()

    def _child_exited(self) -> None:
        for child in list(self.children):
            try:
                pid, status = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                pid, status = child, 0
            if pid == 0:
                continue
            self.children.remove(child)
            if self.exiting:
                self._stop_when_all_drained()
            elif self.state.state == "LIVE":
                # A worker died on its own: fail fast so Kubernetes restarts the whole
                # sidecar, rather than running on with a share of traffic unserved.
                print(
                    f"pilotfish: worker pid {child} exited unexpectedly ({status}); shutting down",
                    file=sys.stderr,
                )
                self.exit_code = 1
                self.drain()


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
