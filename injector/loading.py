"""Finds and loads the template and mesh config: flag, then env, then the mount, then the repo."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from injector.config import load_mesh_config
from injector.mutate import Injector, mutate
from injector.template import load_template

# Where the Deployment mounts the `pilotfish-sidecar-template` ConfigMap.
MOUNT_DIR = Path("/etc/pilotfish/inject")
# In a source checkout the real files live in manifests/, next to the package.
REPO_DIR = Path(__file__).resolve().parent.parent / "manifests" / "sidecar"
TEMPLATE_FILE = "template.yaml"
MESH_FILE = "mesh.yaml"
ENV_TEMPLATE = "PILOTFISH_INJECT_TEMPLATE"
ENV_MESH = "PILOTFISH_MESH_CONFIG"


def find_file(explicit: str | None, env_name: str, file_name: str, env: Mapping[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    if env.get(env_name):
        return Path(env[env_name])
    for directory in (MOUNT_DIR, REPO_DIR):
        if (directory / file_name).is_file():
            return directory / file_name
    return MOUNT_DIR / file_name  # does not exist: the load names it in its error


def load_injector(
    template: str | None = None,
    mesh_config: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Injector:
    """Raises TemplateError or MeshConfigError naming the file and the reason."""
    environ = os.environ if env is None else env
    injector = Injector(
        mesh=load_mesh_config(find_file(mesh_config, ENV_MESH, MESH_FILE, environ)),
        template=load_template(find_file(template, ENV_TEMPLATE, TEMPLATE_FILE, environ)),
    )
    # Render once now: a template naming something the context lacks fails at start-up,
    # with the file and the name, instead of on the first pod.
    mutate(_SAMPLE_POD, injector)
    return injector


_SAMPLE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "sample", "namespace": "default", "labels": {"app": "sample"}},
    "spec": {
        "containers": [
            {"name": "app", "image": "app", "readinessProbe": {"tcpSocket": {"port": 80}}}
        ]
    },
}
