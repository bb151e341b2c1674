"""A small stand-in for `kustomize build`: resources, configMapGenerator and namespace.

Used when no kustomize or kubectl binary is on the machine, and always as a second check:
it fails on a missing or unparsable resource, as kustomize does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CustomResourceDefinition",
    "PriorityClass",
}


class KustomizeError(ValueError):
    pass


def build(directory: Path, depth: int = 0) -> list[dict[str, Any]]:
    if depth > 10:
        raise KustomizeError(f"{directory}: kustomizations nest too deep")
    path = directory / "kustomization.yaml"
    try:
        kustomization = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{path}: {exc}") from exc
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources") or []:
        target = directory / entry
        if target.is_dir():
            objects.extend(build(target, depth + 1))
            continue
        try:
            documents = [d for d in yaml.safe_load_all(target.read_text()) if d is not None]
        except OSError as exc:
            raise KustomizeError(f"{path}: resource {entry}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise KustomizeError(f"{path}: resource {entry} is not valid YAML: {exc}") from exc
        for document in documents:
            if not isinstance(document, dict) or "kind" not in document:
                raise KustomizeError(f"{path}: resource {entry} has a document without kind")
        objects.extend(documents)
    for generator in kustomization.get("configMapGenerator") or []:
        data = {}
        for file_name in generator.get("files") or []:
            try:
                data[Path(file_name).name] = (directory / file_name).read_text()
            except OSError as exc:
                raise KustomizeError(
                    f"{path}: configMapGenerator file {file_name}: {exc.strerror}"
                ) from exc
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    return objects
