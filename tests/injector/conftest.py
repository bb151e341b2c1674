"""Fixtures for the injector tests: the real template and mesh config from manifests/."""

from __future__ import annotations

from pathlib import Path

import pytest

from injector.loading import load_injector
from injector.mutate import Injector

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
TEMPLATE = MANIFESTS / "sidecar" / "template.yaml"
MESH = MANIFESTS / "sidecar" / "mesh.yaml"
# Kubernetes versions whose OpenAPI schemas every pod and manifest is validated against.
K8S_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")


@pytest.fixture(scope="session")
def injector() -> Injector:
    return load_injector(str(TEMPLATE), str(MESH), env={})
