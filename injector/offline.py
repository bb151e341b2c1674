"""`pilotfish inject -f FILE|-`: injects workloads in YAML offline, like `istioctl kube-inject`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from injector import policy
from injector.config import MeshConfigError
from injector.loading import load_injector
from injector.mutate import Injector, mutate
from injector.overrides import InvalidAnnotation
from injector.review import pod_shape_problem
from injector.template import TemplateError

# kind -> path to its pod template, for the workload kinds that create pods.
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True, slots=True)
class Notice:
    """A message for stderr about one object; `error` makes the command exit 1."""

    text: str
    error: bool = False


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    return f"{obj.get('kind', '?')}/{metadata.get('name') or metadata.get('generateName') or '?'}"


def _inject_pod_like(
    pod: dict[str, Any], namespace: str, workload: str, label: str, injector: Injector
) -> tuple[dict[str, Any] | None, Notice | None]:
    problem = pod_shape_problem(pod)
    if problem is not None:
        return None, Notice(f"not injecting {label}: not a valid pod: {problem}", error=True)
    decision = policy.decide(pod, namespace, injector.mesh)
    if not decision.inject:
        return None, Notice(f"skipping {label}: {decision.detail or decision.reason}")
    try:
        return mutate(pod, injector, workload=workload), None
    except InvalidAnnotation as exc:
        return None, Notice(f"not injecting {label}: {exc}", error=True)


def inject_object(obj: Any, injector: Injector) -> tuple[Any, list[Notice]]:
    """Returns the object injected (a new one) or unchanged, and what to tell the user."""
    if not isinstance(obj, dict):
        return obj, []
    kind = obj.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
        items = obj.get("items")
        if not isinstance(items, list):
            return obj, []
        notices: list[Notice] = []
        injected_items = []
        for item in items:
            injected, item_notices = inject_object(item, injector)
            injected_items.append(injected)
            notices.extend(item_notices)
        return {**obj, "items": injected_items}, notices
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name") or metadata.get("generateName") or "unknown").rstrip("-")
    label = _describe(obj)
    if kind == "Pod":
        injected, notice = _inject_pod_like(obj, namespace, name, label, injector)
        return (injected if injected is not None else obj), [notice] if notice else []
    path = POD_TEMPLATE_PATHS.get(str(kind))
    if path is None:
        return obj, []
    parents: list[dict[str, Any]] = [obj]
    for key in path:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return obj, [Notice(f"skipping {label}: it has no {'.'.join(path)}")]
        parents.append(child)
    template = parents[-1]
    # The pod template as a pod: policy and mutate see exactly what the webhook would.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata") or {},
           "spec": template.get("spec") or {}}
    injected, notice = _inject_pod_like(pod, namespace, name, label, injector)
    if injected is None:
        return obj, [notice] if notice else []
    new_template = {**template, "metadata": injected["metadata"], "spec": injected["spec"]}
    # Rebuild the path with copies, so the input object is never modified.
    rebuilt: Any = new_template
    for parent, key in zip(reversed(parents[:-1]), reversed(path), strict=True):
        rebuilt = {**parent, key: rebuilt}
    return rebuilt, [notice] if notice else []


def inject_documents(text: str, injector: Injector) -> tuple[list[Any], list[Notice]]:
    documents: list[Any] = []
    notices: list[Notice] = []
    for document in yaml.safe_load_all(text):
        if document is None:
            continue
        injected, document_notices = inject_object(document, injector)
        documents.append(injected)
        notices.extend(document_notices)
    return documents, notices


def dump_documents(documents: list[Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, width=100)



def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotfish inject",
        description="Inject the pilotfish sidecar into Kubernetes YAML; write it to stdout.",
    )
    parser.add_argument("-f", "--filename", required=True, help="a YAML file, or - for stdin")
    parser.add_argument("--template", help="sidecar template (default: the mounted or repo one)")
    parser.add_argument("--mesh-config", help="mesh defaults (default: the mounted or repo one)")
    args = parser.parse_args(argv)
    try:
        injector = load_injector(args.template, args.mesh_config)
    except (TemplateError, MeshConfigError) as exc:
        print(f"pilotfish inject: {exc}", file=sys.stderr)
        return 1
    try:
        if args.filename == "-":
            text = sys.stdin.read()
        else:
            with open(args.filename, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        print(f"pilotfish inject: {args.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        documents, notices = inject_documents(text, injector)
    except yaml.YAMLError as exc:
        print(f"pilotfish inject: {args.filename}: not valid YAML: {exc}", file=sys.stderr)
        return 1
    for notice in notices:
        print(f"pilotfish inject: {'error' if notice.error else 'warning'}: {notice.text}",
              file=sys.stderr)
    sys.stdout.write(dump_documents(documents))
    return 1 if any(notice.error for notice in notices) else 0
