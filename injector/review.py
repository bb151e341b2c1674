"""AdmissionReview in, AdmissionReview out: the webhook's decisions without any I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from injector import policy
from injector.mutate import Injector, mutate
from injector.overrides import InvalidAnnotation
from injector.patch import encode_patch, make_patch, strip_managed_fields
from injector.template import TemplateError

API_VERSION = "admission.k8s.io/v1"

# Outcomes, the `result` label of the requests metric.
INJECTED = "injected"
SKIPPED = "skipped"
IGNORED = "ignored"  # not a pod, or not a CREATE
DENIED = "denied"  # an invalid annotation or a pod that is not pod-shaped
FAILED = "failed"  # our fault (a template naming something the context lacks)
INVALID = "invalid"  # the request itself was bad: 4xx


@dataclass(frozen=True, slots=True)
class Outcome:
    http_status: int
    body: Mapping[str, Any] | str  # a review, or the reason text for a 4xx
    result: str
    reason: str = ""
    patch_operations: tuple[Mapping[str, Any], ...] = field(default=())


def _review(uid: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, **response},
    }


def pod_shape_problem(pod: Mapping[str, Any]) -> str | None:
    """What the API server would never send; checked so odd input is denied, not crashed on."""
    metadata, spec = pod.get("metadata", {}), pod.get("spec")
    if not isinstance(metadata, dict):
        return "metadata is not a mapping"
    for key in ("labels", "annotations"):
        value = metadata.get(key)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
        ):
            return f"metadata.{key} is not a mapping of strings"
    if not isinstance(spec, dict):
        return "spec is not a mapping"
    for key in ("containers", "initContainers", "volumes", "imagePullSecrets"):
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            return f"spec.{key} is not a list of mappings"
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if not isinstance(container.get("name"), str):
                return f"a container in spec.{key} has no name"
            for field_name in ("ports", "env"):
                value = container.get(field_name)
                if value is not None and (
                    not isinstance(value, list) or not all(isinstance(i, dict) for i in value)
                ):
                    return f"spec.{key}[{container['name']}].{field_name} is not a list of mappings"
    if not spec.get("containers"):
        return "spec.containers is empty"
    return None


def handle_review(body: bytes, content_type: str | None, injector: Injector) -> Outcome:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return Outcome(
            415,
            f"expected Content-Type application/json, got {content_type!r}",
            INVALID,
            "content-type",
        )
    if not body.strip():
        return Outcome(400, "empty body: expected an AdmissionReview", INVALID, "empty")
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return Outcome(400, f"malformed JSON: {exc}", INVALID, "malformed")
    if not isinstance(review, dict):
        return Outcome(400, "malformed AdmissionReview: not a JSON object", INVALID, "malformed")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        return Outcome(
            400,
            f"expected an AdmissionReview of {API_VERSION}, got "
            f"{review.get('apiVersion')!r} {review.get('kind')!r}",
            INVALID,
            "malformed",
        )
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        return Outcome(400, "malformed AdmissionReview: no request.uid", INVALID, "malformed")
    uid = request["uid"]
    kind = request.get("kind")
    resource = request.get("resource")
    is_pod = (
        isinstance(kind, dict)
        and kind.get("kind") == "Pod"
        and kind.get("group", "") == ""
        and (not isinstance(resource, dict) or resource.get("resource") == "pods")
        and not request.get("subResource")
    )
    if not is_pod:
        return Outcome(200, _review(uid, {"allowed": True}), IGNORED, "not a pod")
    if request.get("operation") != "CREATE":
        return Outcome(200, _review(uid, {"allowed": True}), IGNORED, "not a create")
    pod = request.get("object")
    if not isinstance(pod, dict):
        return Outcome(
            400, "malformed AdmissionReview: request.object is not a pod", INVALID, "malformed"
        )
    problem = pod_shape_problem(pod)
    if problem is not None:
        return Outcome(200, _deny(uid, f"pilotfish: not a valid pod: {problem}"), DENIED, "pod")
    namespace = request.get("namespace") or pod.get("metadata", {}).get("namespace") or "default"
    decision = policy.decide(pod, str(namespace), injector.mesh)
    if not decision.inject:
        return Outcome(200, _review(uid, {"allowed": True}), SKIPPED, decision.reason)
    before = strip_managed_fields(pod)
    try:
        after = mutate(before, injector)
    except InvalidAnnotation as exc:
        return Outcome(200, _deny(uid, f"pilotfish: {exc}"), DENIED, "annotation")
    except TemplateError as exc:
        return Outcome(
            200, _deny(uid, f"pilotfish: sidecar template error: {exc}", 500), FAILED, "template"
        )
    operations = make_patch(before, after)
    response: dict[str, Any] = {"allowed": True}
    if operations:
        response["patchType"] = "JSONPatch"
        response["patch"] = encode_patch(operations)
    return Outcome(200, _review(uid, response), INJECTED, decision.reason, tuple(operations))


def _deny(uid: str, message: str, code: int = 400) -> dict[str, Any]:
    return _review(uid, {"allowed": False, "status": {"code": code, "message": message}})
