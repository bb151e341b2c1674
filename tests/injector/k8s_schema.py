"""Validates objects against the Kubernetes OpenAPI schemas shipped in kubernetes-validate."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from tests.injector.conftest import K8S_VERSIONS


def validate_all_versions(obj: dict[str, Any]) -> None:
    """Strict: unknown fields fail too. Raises with the version and the reason."""
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} invalid for "
                f"Kubernetes {version}: {exc.message} at {list(exc.path)}"
            ) from exc
