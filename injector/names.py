"""The injection contract's label, annotation and container names (contracts.md, Injection)."""

from __future__ import annotations

NAMESPACE_LABEL = "pilotfish-injection"
NAMESPACE_ENABLED = "enabled"
INJECT = "sidecar.pilotfish.io/inject"
STATUS = "sidecar.pilotfish.io/status"

PROXY_CONTAINER = "pilotfish-proxy"
INIT_CONTAINER = "pilotfish-init"

# traffic.sidecar.pilotfish.io/* -> the capture flag each one sets.
TRAFFIC_PREFIX = "traffic.sidecar.pilotfish.io/"
INCLUDE_INBOUND_PORTS = TRAFFIC_PREFIX + "includeInboundPorts"
EXCLUDE_INBOUND_PORTS = TRAFFIC_PREFIX + "excludeInboundPorts"
INCLUDE_OUTBOUND_PORTS = TRAFFIC_PREFIX + "includeOutboundPorts"
EXCLUDE_OUTBOUND_PORTS = TRAFFIC_PREFIX + "excludeOutboundPorts"
INCLUDE_OUTBOUND_IP_RANGES = TRAFFIC_PREFIX + "includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = TRAFFIC_PREFIX + "excludeOutboundIPRanges"
EXCLUDE_INTERFACES = TRAFFIC_PREFIX + "excludeInterfaces"

SIDECAR_PREFIX = "sidecar.pilotfish.io/"
PROXY_CPU = SIDECAR_PREFIX + "proxyCPU"
PROXY_CPU_LIMIT = SIDECAR_PREFIX + "proxyCPULimit"
PROXY_MEMORY = SIDECAR_PREFIX + "proxyMemory"
PROXY_MEMORY_LIMIT = SIDECAR_PREFIX + "proxyMemoryLimit"
PROXY_IMAGE = SIDECAR_PREFIX + "proxyImage"
LOG_LEVEL = SIDECAR_PREFIX + "logLevel"
REWRITE_PROBERS = SIDECAR_PREFIX + "rewriteAppHTTPProbers"
NATIVE_SIDECAR = SIDECAR_PREFIX + "nativeSidecar"
INTERCEPTION_MODE = SIDECAR_PREFIX + "interceptionMode"
STATS_HISTOGRAM_BUCKETS = SIDECAR_PREFIX + "statsHistogramBuckets"
PROXY_CONFIG = "proxy.pilotfish.io/config"

PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"

# Env names the injector writes and the sidecar reads (proxy/admin/app_health.py).
ENV_APP_PROBERS = "PILOTFISH_KUBE_APP_PROBERS"
ENV_PROMETHEUS_ANNOTATIONS = "PILOTFISH_PROMETHEUS_ANNOTATIONS"

# The status annotation's keys, exactly these and in this order.
STATUS_KEYS = ("initContainers", "containers", "volumes", "imagePullSecrets", "revision")
