"""A real Prometheus scrapes two real sidecars (2 workers each) under a known mix of requests."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from proxy.telemetry.metrics import BUCKETS, HTTP_LABELS, TCP_LABELS
from tests.telemetry.servers import (
    Prometheus,
    Sidecar,
    Upstream,
    need,
    raw_request,
    start_nginx,
    tmpdir,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "grafana-dashboard.json"

# The mix: (sidecar, path, how many) -> expected (response_code, response_flags).
MIX = [
    ("nginx", "/", 23, ("200", "-")),
    ("nginx", "/missing", 7, ("404", "-")),
    # A caller-side (outbound) sidecar retries a 503 once; still 503: flag URX.
    ("nginx", "/broken", 5, ("503", "URX")),
    ("python", "/slow", 2, ("504", "UT")),
    ("python", "/reset", 3, ("503", "UC")),
    ("python", "/status/201", 4, ("201", "-")),
]
TCP_PAYLOAD = b"\x16\x03\x01 not http at all\r\n\r\n"


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nginx, nginx_port = start_nginx(tmp)
        self.upstream = Upstream()
        self.sidecars = {
            "nginx": Sidecar(
                tmp,
                "productpage",
                nginx_port,
                env={"OTEL_TRACES_SAMPLER": "always_on", "PILOTFISH_APP": "productpage"},
            ),
            "python": Sidecar(
                tmp,
                "reviews",
                self.upstream.port,
                env={"PILOTFISH_ROUTE_TIMEOUT": "0.5s", "PILOTFISH_EXPLICIT_DIRECTION": "inbound"},
            ),
        }
        self.prometheus = Prometheus(
            tmp, [("productpage", self.sidecars["nginx"].admin), ("reviews", self.sidecars["python"].admin)]
        )

    def close(self) -> None:
        self.prometheus.stop()
        for sidecar in self.sidecars.values():
            sidecar.stop()
        self.nginx.stop()
        self.upstream.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World(tmpdir("pf-prom-"))
    try:
        for sidecar, path, count, _ in MIX:
            for _ in range(count):
                raw_request(world.sidecars[sidecar].port, path)
        with socket.create_connection(("127.0.0.1", world.sidecars["nginx"].port)) as tcp:
            tcp.sendall(TCP_PAYLOAD)
            tcp.settimeout(5)
            while tcp.recv(65536):
                pass
        yield world
    finally:
        world.close()


def expected() -> dict[tuple[str, str, str], int]:
    job = {"nginx": "productpage", "python": "reviews"}
    counts: dict[tuple[str, str, str], int] = {}
    for sidecar, _, count, (code, flags) in MIX:
        key = (job[sidecar], code, flags)
        counts[key] = counts.get(key, 0) + count
    return counts


def test_promql_counts_exactly_what_was_sent(world: World) -> None:
    want = expected()

    def got() -> dict[tuple[str, str, str], int]:
        rows = world.prometheus.query("sum by (job, response_code, response_flags) (istio_requests_total)")
        return {
            (r["metric"]["job"], r["metric"]["response_code"], r["metric"]["response_flags"]): int(float(r["value"][1]))
            for r in rows
        }

    wait_until(lambda: got() == want, 20, f"Prometheus to report {want}", step=0.25)
    # Both workers of each sidecar answered the scrapes (the counts above are their sum).
    workers = world.prometheus.query("pilotfish_worker_processes")
    assert {r["metric"]["job"]: r["value"][1] for r in workers} == {"productpage": "2", "reviews": "2"}
    # Each sidecar's two workers both served part of it (connections are spread by the
    # kernel), and their shares add up to the total above.
    shares = world.prometheus.query("pilotfish_worker_downstream_rq_total")
    by_job: dict[str, list[float]] = {}
    for row in shares:
        by_job.setdefault(row["metric"]["job"], []).append(float(row["value"][1]))
    for job, counts in by_job.items():
        assert len(counts) == 2 and all(count > 0 for count in counts), (job, counts)
        assert sum(counts) == sum(v for (j, _, _), v in want.items() if j == job)
    # The histogram counted every request once too.
    total = world.prometheus.query("sum(istio_request_duration_milliseconds_count)")
    assert int(float(total[0]["value"][1])) == sum(want.values())


def test_labels_reporter_and_identity(world: World) -> None:
    wait_until(lambda: bool(world.prometheus.query("istio_requests_total{job='reviews'}")), 20, "series")
    outbound = world.prometheus.query("istio_requests_total{job='productpage'}")[0]["metric"]
    inbound = world.prometheus.query("istio_requests_total{job='reviews'}")[0]["metric"]
    for series in (outbound, inbound):
        assert set(HTTP_LABELS) <= set(series), set(HTTP_LABELS) - set(series)
    assert outbound["reporter"] == "source"
    assert outbound["source_workload"] == "productpage"
    assert outbound["source_workload_namespace"] == "shop"
    assert outbound["source_app"] == "productpage"
    assert outbound["destination_workload"] == "unknown"
    assert outbound["request_protocol"] == "http"
    assert inbound["reporter"] == "destination"
    assert inbound["destination_workload"] == "reviews"
    assert inbound["source_workload"] == "unknown"
    assert inbound["connection_security_policy"] == "none"
    assert inbound["destination_service"] == "127.0.0.1"
    tcp = world.prometheus.query("istio_tcp_received_bytes_total{job='productpage'}")
    assert tcp and int(float(tcp[0]["value"][1])) == len(TCP_PAYLOAD)
    assert set(TCP_LABELS) <= set(tcp[0]["metric"])
    assert tcp[0]["metric"]["request_protocol"] == "tcp"
    opened = world.prometheus.query("sum(istio_tcp_connections_closed_total{job='productpage'})")
    assert int(float(opened[0]["value"][1])) == 1


def test_buckets_are_the_contract(world: World) -> None:
    text = world.sidecars["nginx"].metrics()
    bounds = {float(le) for le in re.findall(r'istio_request_duration_milliseconds_bucket\{.*?le="([^"]+)"', text)}
    assert bounds == {*map(float, BUCKETS), float("inf")}


def test_promtool_check_metrics(world: World) -> None:
    promtool = need("promtool")
    for sidecar in world.sidecars.values():
        text = sidecar.metrics()
        result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        problems = [line for line in result.stderr.decode().splitlines() + result.stdout.decode().splitlines() if line]
        # The one lint promtool has about the contract itself: Istio's metric name is in
        # milliseconds, and promtool prefers base units. Anything else is ours to fix.
        unexpected = [p for p in problems if "istio_request_duration_milliseconds" not in p]
        assert not unexpected, problems


def test_openmetrics_with_exemplars_parses(world: World) -> None:
    text = world.sidecars["nginx"].metrics(openmetrics=True)
    assert text.endswith("# EOF\n")
    parsed = text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}
    assert "istio_requests" in families and "istio_request_duration_milliseconds" in families
    exemplars = [s.exemplar for s in families["istio_request_duration_milliseconds"].samples if s.exemplar]
    assert exemplars, "sampled requests leave exemplars on the duration histogram"
    trace_ids = {e.labels["trace_id"] for e in exemplars}
    logged = {line["trace_id"] for line in world.sidecars["nginx"].log_lines() if line["trace_id"]}
    assert trace_ids <= logged
    # Prometheus stored them too (exemplar storage is on in the test server).
    def stored() -> list[Any]:
        result: list[Any] = world.prometheus.api(
            "query_exemplars", query="istio_request_duration_milliseconds_bucket", start="0", end="9999999999"
        )
        return result

    wait_until(lambda: bool(stored()), 20, "exemplars in Prometheus", step=0.25)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str) and node["expr"].strip():
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels", []))
    return found


def test_every_dashboard_query_returns_data(world: World) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 8
    wait_until(
        lambda: len(world.prometheus.query("istio_requests_total[1m]")) > 0
        and all(len(v["values"]) >= 3 for v in world.prometheus.query("istio_requests_total[1m]")),
        20,
        "a few scrapes",
        step=0.25,
    )
    empty = []
    for expr in queries:
        concrete = (
            expr.replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$namespace", ".*")
            .replace("$workload", ".*")
            .replace("$destination", ".*")
            .replace("$reporter", ".*")
        )
        assert "$" not in concrete, concrete
        if not world.prometheus.query(concrete):
            empty.append(concrete)
    assert not empty, empty
