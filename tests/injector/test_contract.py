"""The injected containers' command lines are ones the sidecar's own commands accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from injector import names
from proxy.admin import hooks
from proxy.capture.flags import parse_flags
from proxy.config import env as proxy_env
from proxy.config.load import parse_duration
from proxy.runtime.main import parser as run_parser

CASES = Path(__file__).parent / "testdata" / "inject"
INJECTED = sorted(CASES.glob("*.yaml.injected"))


def pod_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    kind = document.get("kind")
    if kind == "List":
        return [spec for item in document["items"] for spec in pod_specs(item)]
    if kind == "Pod":
        return [document["spec"]]
    spec = document.get("spec", {})
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return [template["spec"]] if isinstance(template, dict) else []


def injected_containers(case: Path) -> list[dict[str, Any]]:
    found = []
    for document in yaml.safe_load_all(case.read_text()):
        for spec in pod_specs(document):
            for key in ("initContainers", "containers"):
                found += [
                    c
                    for c in spec.get(key, [])
                    if c["name"] in (names.INIT_CONTAINER, names.PROXY_CONTAINER)
                ]
    return found


@pytest.mark.parametrize("case", INJECTED, ids=[p.name.split(".")[0] for p in INJECTED])
def test_commands_parse(case: Path) -> None:
    for container in injected_containers(case):
        assert container["command"] == ["pilotfish"]
        subcommand, *args = container["args"]
        if container["name"] == names.INIT_CONTAINER:
            assert subcommand == "iptables"
            flags = parse_flags(args)
            assert not flags.dry_run and not flags.cleanup
            assert {15090, 15021, 15020} <= set(flags.exclude_inbound_ports)
        else:
            assert subcommand == "run"
            assert run_parser().parse_args(args).sidecar is True


def test_env_names_match_the_proxy() -> None:
    assert names.ENV_APP_PROBERS == proxy_env.KUBE_APP_PROBERS
    assert names.ENV_PROMETHEUS_ANNOTATIONS == proxy_env.PROMETHEUS_ANNOTATIONS
    template = (Path(__file__).resolve().parents[2] / "manifests/sidecar/template.yaml").read_text()
    for name in (
        proxy_env.POD_NAME,
        proxy_env.POD_NAMESPACE,
        proxy_env.INSTANCE_IP,
        proxy_env.SERVICE_ACCOUNT,
        proxy_env.NODE_NAME,
        proxy_env.WORKLOAD,
        proxy_env.APP,
        proxy_env.VERSION,
        proxy_env.CANONICAL_SERVICE,
        proxy_env.CANONICAL_REVISION,
        "PILOTFISH_CONCURRENCY",
        "PILOTFISH_TERMINATION_DRAIN_DURATION",
    ):
        assert f"name: {name}," in template, name
    assert "PILOTFISH_CONCURRENCY" in proxy_env.SETTINGS
    assert "PILOTFISH_TERMINATION_DRAIN_DURATION" in proxy_env.SETTINGS


@pytest.mark.parametrize("case", INJECTED, ids=[p.name.split(".")[0] for p in INJECTED])
def test_lifecycle_hooks_are_commands_the_cli_accepts(case: Path) -> None:
    """The hooks run `pilotfish wait|drain` in the proxy image; a bad flag would only show in a cluster."""
    for container in injected_containers(case):
        for hook in container.get("lifecycle", {}).values():
            command = hook["exec"]["command"]
            assert command[0] == "pilotfish" and command[1] in ("wait", "drain")
            parser = hooks.wait_parser() if command[1] == "wait" else hooks.drain_parser()
            args = parser.parse_args(command[2:])  # exits (fails the test) on a bad flag
            assert args.url.startswith("http://127.0.0.1:")
            if command[1] == "wait":
                parse_duration(args.timeout)
