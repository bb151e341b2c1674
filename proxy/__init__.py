"""pilotfish: a service-mesh sidecar proxy (Envoy-style L7 data plane in Python)."""

__version__ = "0.1.0"

from proxy import _compiled  # noqa: F401  (picks the compiled or the source hot path)
