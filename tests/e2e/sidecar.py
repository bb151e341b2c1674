"""Starting a sidecar in a pod as UID 1337, waiting for it, and reading its stats."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import netns
from tests.e2e.pods import Pod, Process

ADMIN_PORT = 15000
# The real sidecar with its defaults (two worker processes, whose stats /stats sums).
SIDECAR_COMMAND = (sys.executable, "-m", "proxy", "run", "--sidecar")


def _admin_get(pod_name: str, path: str) -> tuple[int, str]:
    with netns.entered(pod_name):
        sock = socket.create_connection(("127.0.0.1", ADMIN_PORT), timeout=2)
    connection = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=2)
    connection.sock = sock
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def parse_stats(text: str) -> dict[str, float]:
    """Envoy's plain /stats: one `name: value` a line; non-numeric values are skipped."""
    stats: dict[str, float] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        try:
            if sep:
                stats[name.strip()] = float(value.strip())
        except ValueError:
            continue
    return stats


@dataclass(frozen=True)
class Counts:
    """The counters the tests read: connections accepted, HTTP requests, opaque TCP."""

    cx: float
    rq: float
    tcp: float

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.cx - other.cx, self.rq - other.rq, self.tcp - other.tcp)


@dataclass
class Sidecar:
    """A running sidecar process in a pod, read through its admin port."""

    pod: Pod
    process: Process

    def stats(self) -> dict[str, float]:
        status, text = _admin_get(self.pod.name, "/stats")
        assert status == 200, text
        return parse_stats(text)

    def counts(self) -> Counts:
        stats = self.stats()
        return Counts(
            stats.get("downstream_cx_total", 0.0),
            stats.get("downstream_rq_total", 0.0),
            stats.get("tcp_downstream_cx_total", 0.0),
        )

    def requests_total(self) -> list[dict[str, str]]:
        """The label sets of istio_requests_total's series (Prometheus text from the admin port)."""
        status, text = _admin_get(self.pod.name, "/stats/prometheus")
        assert status == 200, text
        families = text_string_to_metric_families(text)
        return [
            dict(s.labels)
            for f in families
            if f.name == "istio_requests"
            for s in f.samples
            if s.name.endswith("_total")
        ]

    def access_log(self) -> list[dict[str, object]]:
        """The JSON access log lines the sidecar wrote to stdout (its process log)."""
        text = self.process.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith('{"@timestamp"')]

    def ready(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"sidecar in {self.pod.name} exited:\n{self.process.output()}")
        try:
            return _admin_get(self.pod.name, "/ready")[0] == 200
        except OSError:
            return False


NAMESPACE = "mesh"


def identity(pod: Pod) -> dict[str, str]:
    """The env the injector gives a sidecar through the downward API: the pod's network
    namespace stands for the pod, and its name for the workload too."""
    return {
        "POD_NAME": pod.name,
        "POD_NAMESPACE": NAMESPACE,
        "PILOTFISH_WORKLOAD": pod.name,
        "PILOTFISH_APP": pod.name,
        "INSTANCE_IP": pod.ip,
    }


def start_sidecars(*pods: Pod) -> list[Sidecar]:
    """Start one sidecar per pod (all at once, then wait for each to be ready)."""
    sidecars = [
        Sidecar(pod, pod.start(*SIDECAR_COMMAND, as_proxy=True, env=identity(pod))) for pod in pods
    ]
    for sidecar in sidecars:
        netns.wait_until(sidecar.ready, 15, f"sidecar ready in {sidecar.pod.name}")
    return sidecars
