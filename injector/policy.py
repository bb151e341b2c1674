"""Whether a pod gets a sidecar, and why not: a decision with a reason, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from injector import names
from injector.config import MeshConfig

# Skip reasons: a closed set, so the skipped-by-reason metric has bounded labels.
HOST_NETWORK = "hostNetwork"
SYSTEM_NAMESPACE = "systemNamespace"
OPT_OUT_LABEL = "optOutLabel"
OPT_OUT_ANNOTATION = "optOutAnnotation"
NOT_OPTED_IN = "notOptedIn"
SKIP_REASONS = (HOST_NETWORK, SYSTEM_NAMESPACE, OPT_OUT_LABEL, OPT_OUT_ANNOTATION, NOT_OPTED_IN)


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool
    reason: str  # a SKIP_REASONS member when skipped; why it is injected otherwise
    detail: str = ""


def _flag(value: Any) -> bool | None:
    if not isinstance(value, str):
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "enabled", "yes", "y"):
        return True
    if lowered in ("false", "disabled", "no", "n"):
        return False
    return None


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    mesh: MeshConfig,
    namespace_labels: Mapping[str, str] | None = None,
) -> Decision:
    """Inject or skip. `namespace_labels` is None when the caller (the webhook, whose
    namespaceSelector already matched) does not know them; then the mesh default applies."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    assert isinstance(spec, Mapping) and isinstance(metadata, Mapping)
    if spec.get("hostNetwork") is True:
        # The capture rules would rewrite the node's own nat table.
        return Decision(False, HOST_NETWORK, "the pod uses the host network")
    if namespace in mesh.system_namespaces:
        return Decision(False, SYSTEM_NAMESPACE, f"namespace {namespace} is a system namespace")
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), Mapping) else {}
    annotations = (
        metadata.get("annotations") if isinstance(metadata.get("annotations"), Mapping) else {}
    )
    assert isinstance(labels, Mapping) and isinstance(annotations, Mapping)
    # The label wins over an annotation of the same name (contracts.md).
    label = _flag(labels.get(names.INJECT))
    if label is False:
        return Decision(False, OPT_OUT_LABEL, f"label {names.INJECT}=false")
    if label is True:
        return Decision(True, "pod label opt-in")
    annotation = _flag(annotations.get(names.INJECT))
    if annotation is False:
        return Decision(False, OPT_OUT_ANNOTATION, f"annotation {names.INJECT}=false")
    if annotation is True:
        return Decision(True, "pod annotation opt-in")
    if namespace_labels is not None:
        if namespace_labels.get(names.NAMESPACE_LABEL) == names.NAMESPACE_ENABLED:
            return Decision(True, "namespace opt-in")
        return Decision(
            False, NOT_OPTED_IN,
            f"namespace {namespace} lacks {names.NAMESPACE_LABEL}={names.NAMESPACE_ENABLED}",
        )
    if mesh.default_inject:
        return Decision(True, "selected by the webhook")
    return Decision(False, NOT_OPTED_IN, "no opt-in label and defaultInject is false")
