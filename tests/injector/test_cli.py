"""The commands as a user runs them: `pilotfish injector certs|serve` and `pilotfish inject`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cryptography import x509

from injector import cli
from tests.injector.conftest import MESH, REPO, TEMPLATE
from tests.injector.reviews import admission_review, app_pod
from tests.injector.webhook_harness import ServiceConnection
from tests.ports import free_port

CASES = Path(__file__).parent / "testdata" / "inject"


def pilotfish(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_certs_writes_a_ca_and_a_serving_cert_for_the_service(tmp_path: Path) -> None:
    assert (
        cli.main(
            [
                "certs",
                "--service",
                "pilotfish-injector",
                "--namespace",
                "pilotfish-system",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pilotfish-injector.pilotfish-system.svc" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0


def test_inject_reads_stdin_and_warns_on_stderr() -> None:
    text = (CASES / "statefulset-daemonset.yaml").read_text()
    result = pilotfish(
        "inject", "-f", "-", "--template", str(TEMPLATE), "--mesh-config", str(MESH), stdin=text
    )
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["Service", "StatefulSet", "DaemonSet"]
    skipped = pilotfish("inject", "-f", str(CASES / "pod-host-network.yaml"))
    assert skipped.returncode == 0
    assert "skipping Pod/node-agent: the pod uses the host network" in skipped.stderr
    assert yaml.safe_load(skipped.stdout) == yaml.safe_load(
        (CASES / "pod-host-network.yaml").read_text()
    )


def test_inject_fails_on_a_bad_annotation_and_a_missing_file() -> None:
    bad = pilotfish("inject", "-f", str(CASES / "pod-invalid-annotation.yaml"))
    assert bad.returncode == 1
    assert "traffic.sidecar.pilotfish.io/excludeOutboundIPRanges" in bad.stderr
    missing = pilotfish("inject", "-f", "/nonexistent.yaml")
    assert missing.returncode == 1
    broken = pilotfish("inject", "-f", "-", "--mesh-config", "/nonexistent/mesh.yaml", stdin="")
    assert broken.returncode == 1
    assert "/nonexistent/mesh.yaml" in broken.stderr


def test_serve_answers_reviews_and_stops_on_sigterm(tmp_path: Path) -> None:
    assert (
        cli.main(
            [
                "certs",
                "--service",
                "pilotfish-injector",
                "--namespace",
                "pilotfish-system",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "injector",
            "serve",
            "--tls-cert",
            str(tmp_path / "tls.crt"),
            "--tls-key",
            str(tmp_path / "tls.key"),
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
            "--template",
            str(TEMPLATE),
            "--mesh-config",
            str(MESH),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        import ssl

        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        deadline = time.monotonic() + 20
        while True:  # bounded by the deadline
            try:
                connection = ServiceConnection(port, context)
                connection.request("GET", "/readyz")
                assert connection.getresponse().status == 200
                connection.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the injector did not come up"
                time.sleep(0.1)
        review = admission_review(app_pod(name="cli"))
        connection = ServiceConnection(port, context)
        connection.request(
            "POST", "/inject", body=json.dumps(review), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["response"]["patchType"] == "JSONPatch"
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "listening on 127.0.0.1" in output


def test_serve_refuses_a_bad_template(tmp_path: Path) -> None:
    bad = tmp_path / "template.yaml"
    bad.write_text((TEMPLATE.read_text()).replace("${proxy.image}", "${proxy.imaeg}", 1))
    assert cli.main(["certs", "--service", "s", "--namespace", "n", "--out", str(tmp_path)]) == 0
    result = pilotfish(
        "injector",
        "serve",
        "--tls-cert",
        str(tmp_path / "tls.crt"),
        "--tls-key",
        str(tmp_path / "tls.key"),
        "--template",
        str(bad),
        "--mesh-config",
        str(MESH),
    )
    assert result.returncode == 1
    assert "proxy.imaeg" in result.stderr and str(bad) in result.stderr


def test_inject_reports_a_pod_that_is_not_pod_shaped() -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: odd}\n"
        "spec:\n  template:\n    spec:\n      containers: oops\n"
    )
    result = pilotfish("inject", "-f", "-", stdin=text)
    assert result.returncode == 1
    assert "Deployment/odd: not a valid pod: spec.containers" in result.stderr
    assert yaml.safe_load(result.stdout)["spec"]["template"]["spec"]["containers"] == "oops"
