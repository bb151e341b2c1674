"""pilotfish: a service-mesh sidecar proxy (Envoy-style L7 data plane in Python)."""

__version__ = "0.1.0"

from proxy import _compiled

_compiled.choose()  # the compiled hot path, or its source when that build is stale
