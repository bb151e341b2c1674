"""The 15020 agent of a real sidecar (sidecar mode), and the pod-annotation scrape config."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.telemetry.servers import (
    Process,
    Prometheus,
    Upstream,
    free_port,
    http_get,
    need,
    raw_request,
    tmpdir,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "manifests" / "prometheus-scrape.yaml"


class SidecarMode:
    """`pilotfish run --sidecar` on free ports (a config file moves every port)."""

    def __init__(self, tmp: Path, app_port: int) -> None:
        self.ports = {name: free_port() for name in ("outbound", "inbound", "agent", "health", "prometheus", "admin")}
        config = tmp / "sidecar.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "outbound_port": self.ports["outbound"],
                    "inbound_port": self.ports["inbound"],
                    "agent_port": self.ports["agent"],
                    "health_port": self.ports["health"],
                    "prometheus_port": self.ports["prometheus"],
                    "admin": {"port": self.ports["admin"]},
                }
            )
        )
        probers = {"/app-health/web/livez": {"httpGet": {"port": app_port, "path": "/status/200"}}}
        env = {
            "OTEL_TRACES_EXPORTER": "none",
            "POD_NAME": "web-0",
            "POD_NAMESPACE": "shop",
            "PILOTFISH_WORKLOAD": "web",
            "PILOTFISH_PROMETHEUS_ANNOTATIONS": json.dumps({"scrape": "true", "port": str(app_port), "path": "/metrics"}),
            "PILOTFISH_KUBE_APP_PROBERS": json.dumps(probers),
        }
        self.process = Process(
            [*["python", "-m", "proxy", "run", "--sidecar", "--concurrency", "2", "--config"], str(config)], env, log=tmp / "sidecar.out"
        )
        wait_until(self.ready, 15, "sidecar")

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def ready(self) -> bool:
        if self.process.proc.poll() is not None:
            raise AssertionError(self.process.output())
        try:
            return http_get(self.url("agent", "/healthz/ready"))[0] == 200
        except OSError:
            return False


@pytest.fixture
def app() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def sidecar(app: Upstream) -> Iterator[SidecarMode]:
    sidecar = SidecarMode(tmpdir("pf-agent-"), app.port)
    yield sidecar
    sidecar.process.stop()


def test_merged_metrics_and_app_failure(sidecar: SidecarMode, app: Upstream) -> None:
    # Not redirected by iptables here, so the outbound listener has no route: 404 NR.
    assert raw_request(sidecar.ports["outbound"], "/") == 404
    status, body, headers = http_get(sidecar.url("agent", "/stats/prometheus"))
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "app_orders_total 7" in text
    assert 'response_code="404"' in text and 'response_flags="NR"' in text
    assert "pilotfish_downstream_rq_total" in text
    promtool = need("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    problems = [p for p in check.stderr.decode().splitlines() if p and "istio_request_duration_milliseconds" not in p]
    assert not problems, problems
    # OpenMetrics on request: the app's families converted, the whole parses.
    status, body, headers = http_get(
        sidecar.url("agent", "/stats/prometheus"), {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    parsed = text_string_to_metric_families(body.decode())  # type: ignore[no-untyped-call]
    families = {family.name: family for family in parsed}
    assert families["app_orders"].samples[0].value == 7
    assert "istio_requests" in families and "pilotfish_downstream_rq" in families
    # 15090 is the proxy alone.
    only_proxy = http_get(sidecar.url("prometheus", "/stats/prometheus"))[1].decode()
    assert "app_orders_total" not in only_proxy and "istio_requests_total" in only_proxy
    # The app goes away: the proxy's part is still served, and the failure counted.
    app.close()
    status, body, _ = http_get(sidecar.url("agent", "/stats/prometheus"))
    text = body.decode()
    assert status == 200 and "app_orders_total" not in text and "istio_requests_total" in text
    assert "pilotfish_agent_app_scrape_failures_total 1.0" in text
    assert "pilotfish_agent_app_scrapes_total 3.0" in text


def test_agent_routes(sidecar: SidecarMode) -> None:
    assert http_get(sidecar.url("agent", "/app-health/web/livez"))[0] == 200
    assert http_get(sidecar.url("agent", "/app-health/other/livez"))[0] == 404
    assert http_get(sidecar.url("agent", "/quitquitquit"))[0] == 405
    assert http_get(sidecar.url("agent", "/drain"))[0] == 405
    assert http_get(sidecar.url("agent", "/nope"))[0] == 404
    assert http_get(sidecar.url("agent", "/drain"), method="POST")[0] == 200

    def drained() -> bool:
        # Listeners drain and readiness turns 503 (the process may also exit once idle).
        if sidecar.process.proc.poll() is not None:
            return True
        try:
            return http_get(sidecar.url("agent", "/healthz/ready"))[0] == 503
        except OSError:
            return sidecar.process.proc.poll() is not None

    wait_until(drained, 10, "draining")


def test_the_prometheus_port_serves_metrics_and_nothing_else(sidecar: SidecarMode) -> None:
    # 15090 listens on every address for Prometheus: the admin API, which can fail
    # readiness or stop the sidecar, stays on 127.0.0.1:15000.
    for path, method in (("/config_dump", "GET"), ("/quitquitquit", "POST"),
                         ("/healthcheck/fail", "POST"), ("/stats", "GET")):  # fmt: skip
        assert http_get(sidecar.url("prometheus", path), method=method)[0] == 404, path
    assert http_get(sidecar.url("prometheus", "/stats/prometheus"))[0] == 200
    assert http_get(sidecar.url("admin", "/ready"))[0] == 200  # still up and ready


def test_quitquitquit_exits(sidecar: SidecarMode) -> None:
    assert http_get(sidecar.url("agent", "/quitquitquit"), method="POST")[0] == 200
    sidecar.process.proc.wait(10)


def _scrape_job() -> dict[str, Any]:
    manifest = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config = yaml.safe_load(manifest["data"]["prometheus.yml"])
    job: dict[str, Any] = config["scrape_configs"][0]
    return job


def test_scrape_config_discovers_annotated_pods(sidecar: SidecarMode) -> None:
    """The manifest's relabelling, fed the labels Kubernetes discovery would give two pods.

    Debian's Prometheus is built without Kubernetes discovery, so file discovery stands
    in for it with the same __meta_kubernetes_* labels; the relabel rules are the real ones.
    """
    tmp = tmpdir("pf-scrape-")
    job = _scrape_job()
    pod = {
        "__meta_kubernetes_pod_ip": "127.0.0.1",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_namespace": "shop",
        "__meta_kubernetes_pod_label_app": "web",
    }
    groups = [
        {
            "targets": ["127.0.0.1:80"],
            "labels": {
                **pod,
                "__meta_kubernetes_pod_name": "web-0",
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
                "__meta_kubernetes_pod_annotation_prometheus_io_port": str(sidecar.ports["agent"]),
                "__meta_kubernetes_pod_annotation_prometheus_io_path": "/stats/prometheus",
            },
        },
        {
            "targets": ["127.0.0.1:81"],
            "labels": {
                **pod,
                "__meta_kubernetes_pod_name": "quiet-0",
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "false",
            },
        },
    ]
    (tmp / "pods.json").write_text(json.dumps(groups))
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp / "pods.json")], "refresh_interval": "1s"}]
    job["scrape_interval"] = "1s"
    config = yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})
    (tmp / "checked.yml").write_text(config)
    check = subprocess.run([need("promtool"), "check", "config", str(tmp / "checked.yml")], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    prometheus = Prometheus(tmp, [], config_text=config)
    try:
        wait_until(lambda: bool(prometheus.query("up == 1")), 20, "the annotated pod scraped", step=0.25)
        up = prometheus.query("up")
        assert [(r["metric"]["pod"], r["metric"]["namespace"], r["metric"]["app"]) for r in up] == [("web-0", "shop", "web")]
        merged = prometheus.query("app_orders_total")
        assert merged and merged[0]["metric"]["pod"] == "web-0"
        assert prometheus.query("pilotfish_downstream_cx_total")
    finally:
        prometheus.stop()
