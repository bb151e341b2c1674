"""This pod's identity for metric labels and trace resources, read from the injector's env."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.config import env as env_names

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Identity:
    pod: str = UNKNOWN
    namespace: str = UNKNOWN
    workload: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"
    # Without mTLS there is no verified peer identity; Istio reports "unknown" then too.
    principal: str = UNKNOWN
    cluster: str = UNKNOWN

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Identity:
        def get(name: str, default: str = UNKNOWN) -> str:
            value = environ.get(name, "").strip()
            return value or default

        pod = get(env_names.POD_NAME)
        # The injector sets the owner's name; the pod name is its own fallback (contracts.md).
        workload = get(env_names.WORKLOAD, pod)
        app = get(env_names.APP)
        return cls(
            pod=pod,
            namespace=get(env_names.POD_NAMESPACE),
            workload=workload,
            app=app,
            version=get(env_names.VERSION),
            # Istio's canonical service falls back to the app label, then the workload.
            canonical_service=get(env_names.CANONICAL_SERVICE, app if app != UNKNOWN else workload),
            canonical_revision=get(env_names.CANONICAL_REVISION, "latest"),
            cluster=get(env_names.CLUSTER_ID),
        )

    def label_values(self) -> tuple[str, ...]:
        """The values of one side's eight metric labels (`source_*` or `destination_*`
        but the service ones), in Istio's order: workload, namespace, principal, app,
        version, canonical service, canonical revision, cluster."""
        return (
            self.workload,
            self.namespace,
            self.principal,
            self.app,
            self.version,
            self.canonical_service,
            self.canonical_revision,
            self.cluster,
        )
