"""Tests of the injector, the manifests and the sidecar's app-health probes."""
