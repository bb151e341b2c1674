"""manifests/: every file valid for Kubernetes 1.29-1.33, and the base builds with kustomize."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from injector import names
from injector.cli import _parser
from tests.injector.conftest import MANIFESTS
from tests.injector.k8s_schema import validate_all_versions
from tests.injector.kustomize_loader import KustomizeError, build

KUSTOMIZATIONS = [MANIFESTS, MANIFESTS / "examples" / "otel-jaeger"]
# Data files (mounted or generated into ConfigMaps), not Kubernetes objects.
DATA_FILES = {"template.yaml", "mesh.yaml", "collector-config.yaml", "kustomization.yaml"}
RESOURCE_FILES = sorted(path for path in MANIFESTS.rglob("*.yaml") if path.name not in DATA_FILES)


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """The real kustomize when the machine has it (kubectl embeds it), else the loader."""
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kustomize:
        command = [kustomize, "build", str(directory)]
    elif kubectl:
        command = [kubectl, "kustomize", str(directory)]
    else:
        return build(directory)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize(
    "path", RESOURCE_FILES, ids=[str(p.relative_to(MANIFESTS)) for p in RESOURCE_FILES]
)
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        validate_all_versions(document)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=["base", "otel-jaeger"])
def test_kustomization_builds_and_is_valid(directory: Path) -> None:
    built = kustomize_build(directory)
    loaded = build(directory)

    def key(obj: dict[str, Any]) -> tuple[str, str]:
        name = obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap":  # kustomize appends a content hash
            name = (
                name.rsplit("-", 1)[0]
                if name.count("-") and len(name.rsplit("-", 1)[1]) == 10
                else name
            )
        return obj["kind"], name

    assert sorted(map(key, built)) == sorted(map(key, loaded))
    for obj in built:
        validate_all_versions(obj)


def test_every_resource_file_is_in_a_kustomization() -> None:
    listed = set()
    for directory in KUSTOMIZATIONS:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed |= {(directory / entry).resolve() for entry in kustomization["resources"]}
    assert {p.resolve() for p in RESOURCE_FILES} <= listed


def test_loader_fails_on_missing_or_broken_resources(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [gone.yaml]\n")
    with pytest.raises(KustomizeError, match=r"gone\.yaml"):
        build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [bad.yaml]\n")
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    with pytest.raises(KustomizeError, match=r"bad\.yaml is not valid YAML"):
        build(tmp_path)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        result.setdefault(obj["kind"], []).append(obj)
    return result


@pytest.fixture(scope="module")
def base() -> dict[str, list[dict[str, Any]]]:
    return by_kind(kustomize_build(MANIFESTS))


def test_webhook_configuration_follows_the_contract(base: dict[str, list[dict[str, Any]]]) -> None:
    (config,) = base["MutatingWebhookConfiguration"]
    assert config["metadata"]["name"] == "pilotfish-sidecar-injector"
    namespace_hook, object_hook = config["webhooks"]
    for hook in (namespace_hook, object_hook):
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 10
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["failurePolicy"] in ("Fail", "Ignore")
        assert hook["clientConfig"]["service"]["path"] == "/inject"
        system = next(
            e
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name"
        )
        assert set(system["values"]) >= {"kube-system", "kube-public", "kube-node-lease"}
    assert namespace_hook["namespaceSelector"]["matchLabels"] == {
        names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED
    }
    assert namespace_hook["objectSelector"]["matchExpressions"] == [
        {"key": names.INJECT, "operator": "NotIn", "values": ["false"]}
    ]
    assert object_hook["objectSelector"]["matchLabels"] == {names.INJECT: "true"}


def test_rbac_is_least_privilege(base: dict[str, list[dict[str, Any]]]) -> None:
    (role,) = base["ClusterRole"]
    assert role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["pilotfish-sidecar-injector"],
            "verbs": ["get", "patch"],
        }
    ]
    assert "Role" not in base
    (binding,) = base["ClusterRoleBinding"]
    (account,) = base["ServiceAccount"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]


def test_deployment_is_hardened_and_wired(base: dict[str, list[dict[str, Any]]]) -> None:
    (deployment,) = base["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"][names.INJECT] == "false"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The args are ones the CLI accepts.
    assert container["args"][0] == "injector"  # the image's entrypoint is `pilotfish`
    args = _parser().parse_args(container["args"][1:])
    assert args.command == "serve" and args.webhook_config == "pilotfish-sidecar-injector"
    # The mounted ConfigMap carries the very template and mesh files the tests use.
    (config_map,) = [
        c
        for c in base["ConfigMap"]
        if c["metadata"]["name"].startswith("pilotfish-sidecar-template")
    ]
    volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert (
        config_map["data"]["template.yaml"] == (MANIFESTS / "sidecar" / "template.yaml").read_text()
    )
    assert config_map["data"]["mesh.yaml"] == (MANIFESTS / "sidecar" / "mesh.yaml").read_text()
    (pdb,) = base["PodDisruptionBudget"]
    assert pdb["spec"]["selector"] == spec["selector"]
    (service,) = base["Service"]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_containerfiles_exist_and_run_non_root() -> None:
    for name, user in (
        ("Containerfile.proxy", "USER 1337:1337"),
        ("Containerfile.injector", "USER 65532:65532"),
    ):
        text = (MANIFESTS / name).read_text()
        assert user in text
        assert 'ENTRYPOINT ["pilotfish"]' in text
