"""The JSON Patch (RFC 6902) that turns the pod as sent into the injected pod."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import jsonpatch


def strip_managed_fields(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy without metadata.managedFields: server-side apply bookkeeping is
    large, never ours to change, and would only make the diff slower."""
    result = dict(pod)
    metadata = result.get("metadata")
    if isinstance(metadata, Mapping) and "managedFields" in metadata:
        result["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return result


def make_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    operations: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    return operations


def encode_patch(operations: list[dict[str, Any]]) -> str:
    """Base64 of the JSON text, as AdmissionReview's `response.patch` carries it."""
    return base64.b64encode(json.dumps(operations, separators=(",", ":")).encode()).decode()
