"""Every environment variable the proxy reads, named in one place (linkerd's env.rs idea).

The injector writes these same names into the sidecar container; parsing takes a
mapping, never `os.environ` directly, so it is testable.
"""

from __future__ import annotations

# Config settings: env var -> dotted field in ProxyConfig (see proxy.config.load).
SETTINGS: dict[str, str] = {
    "PILOTFISH_MODE": "mode",
    "PILOTFISH_LISTEN": "listen",
    "PILOTFISH_UPSTREAM": "upstream",
    "PILOTFISH_CONCURRENCY": "concurrency",
    "PILOTFISH_CODEC": "codec",
    "PILOTFISH_ADMIN_PORT": "admin.port",
    "PILOTFISH_TERMINATION_DRAIN_DURATION": "timeouts.drain",
    "PILOTFISH_CONNECT_TIMEOUT": "timeouts.connect",
    "PILOTFISH_ROUTE_TIMEOUT": "timeouts.route",
    "PILOTFISH_RETRY_ATTEMPTS": "retries.attempts",
    "PILOTFISH_ACCESS_LOG": "access_log.path",
    "PILOTFISH_ACCESS_LOG_FORMAT": "access_log.format",
    "PILOTFISH_EXPLICIT_DIRECTION": "telemetry.explicit_direction",
    "PILOTFISH_PEER_METADATA": "telemetry.peer_metadata",
    "PILOTFISH_LOG_LEVEL": "log_level",
    "PILOTFISH_UPSTREAM_HTTP2_PORTS": "upstream_http2_ports",
}

# Written by the injector and read elsewhere, or kept for reference: the raw
# `proxy.pilotfish.io/config` YAML has already been turned into the settings above and
# the pod spec by the injector.
REVISION = "PILOTFISH_REVISION"
PROXY_CONFIG = "PILOTFISH_PROXY_CONFIG"
STATS_HISTOGRAM_BUCKETS = "PILOTFISH_STATS_HISTOGRAM_BUCKETS"

# Identity set by the injector through the downward API (contracts: "Ports and identity").
POD_NAME = "POD_NAME"
POD_NAMESPACE = "POD_NAMESPACE"
INSTANCE_IP = "INSTANCE_IP"
SERVICE_ACCOUNT = "SERVICE_ACCOUNT"
NODE_NAME = "NODE_NAME"
WORKLOAD = "PILOTFISH_WORKLOAD"
APP = "PILOTFISH_APP"
VERSION = "PILOTFISH_VERSION"
CANONICAL_SERVICE = "PILOTFISH_CANONICAL_SERVICE"
CANONICAL_REVISION = "PILOTFISH_CANONICAL_REVISION"
# The mesh's cluster name for the *_cluster metric labels (Istio's ISTIO_META_CLUSTER_ID).
CLUSTER_ID = "PILOTFISH_CLUSTER_ID"
# The app's original probes and Prometheus annotations, moved aside by the injector.
KUBE_APP_PROBERS = "PILOTFISH_KUBE_APP_PROBERS"
PROMETHEUS_ANNOTATIONS = "PILOTFISH_PROMETHEUS_ANNOTATIONS"
# The path to a YAML config file, when not given with --config.
CONFIG_FILE = "PILOTFISH_CONFIG"
# OpenTelemetry's standard variables (the SDK and exporter read the OTEL_BSP_* and
# OTEL_EXPORTER_OTLP_* families themselves); these are the ones pilotfish reads.
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
