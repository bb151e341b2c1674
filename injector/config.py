"""The mesh-wide injection defaults (mesh.yaml from the ConfigMap), parsed and checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from injector import values


class MeshConfigError(ValueError):
    """Bad mesh config: the message names the file, the field and the reason."""


@dataclass(frozen=True, slots=True)
class Ports:
    outbound_capture: int = 15001
    inbound_capture: int = 15006
    agent: int = 15020
    health: int = 15021
    stats: int = 15090


@dataclass(frozen=True, slots=True)
class CaptureDefaults:
    include_outbound_ip_ranges: str = "*"
    exclude_outbound_ip_ranges: str = ""
    include_inbound_ports: str = "*"
    # The proxy's own ports are never captured (contracts.md, Capture).
    exclude_inbound_ports: str = "15090,15021,15020"
    include_outbound_ports: str = ""
    exclude_outbound_ports: str = ""
    exclude_interfaces: str = ""


@dataclass(frozen=True, slots=True)
class MeshConfig:
    revision: str = "default"
    # The cluster's name in the mesh: the proxies' source_cluster/destination_cluster
    # labels and peer metadata (Istio's clusterName, whose default this is too).
    cluster_name: str = "Kubernetes"
    system_namespaces: tuple[str, ...] = (
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "local-path-storage",
    )
    default_inject: bool = True
    proxy_image: str = "ghcr.io/pilotfish/proxy:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    log_level: str = "info"
    native_sidecar: bool = True
    interception_mode: str = "REDIRECT"
    rewrite_app_http_probers: bool = True
    enable_prometheus_merge: bool = True
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    ports: Ports = field(default_factory=Ports)
    capture: CaptureDefaults = field(default_factory=CaptureDefaults)
    # The contract's defaults: requests 100m / 128Mi, limits 2000m / 1024Mi.
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "2000m"
    memory_limit: str = "1024Mi"
    # Proxy settings, kept as the YAML mapping so the pod annotation can be merged over it.
    proxy_config: Mapping[str, Any] = field(
        default_factory=lambda: {
            "holdApplicationUntilProxyStarts": False,
            "concurrency": 2,
            "terminationDrainDuration": "5s",
        }
    )


class _Reader:
    """Takes typed fields out of a YAML mapping, naming file and field on error."""

    def __init__(self, source: str, data: Mapping[str, Any], prefix: str = "") -> None:
        self.source = source
        self.data = data
        self.prefix = prefix
        unknown = set(data) - set(_KNOWN.get(prefix, set()))
        if unknown:
            raise self.error(sorted(unknown)[0], "unknown field")

    def error(self, name: str, reason: str) -> MeshConfigError:
        return MeshConfigError(f"{self.source}: {self.prefix}{name}: {reason}")

    def get(self, name: str, kind: type, default: Any) -> Any:
        if name not in self.data:
            return default
        value = self.data[name]
        # bool is an int in Python; a port of `true` is still wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"expected {kind.__name__}, got {value!r}")
        return value

    def text(self, name: str, default: str) -> str:
        value = self.data.get(name, default)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error(name, f"expected a string, got {value!r}")
        return str(value)

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        if not all(isinstance(item, str) for item in value):
            raise self.error(name, "expected a list of strings")
        return tuple(value)

    def mapping(self, name: str) -> _Reader:
        return _Reader(self.source, self.get(name, dict, {}), f"{self.prefix}{name}.")


_KNOWN: dict[str, set[str]] = {
    "": {
        "revision",
        "clusterName",
        "systemNamespaces",
        "defaultInject",
        "proxyImage",
        "imagePullPolicy",
        "imagePullSecrets",
        "logLevel",
        "nativeSidecar",
        "interceptionMode",
        "rewriteAppHTTPProbers",
        "enablePrometheusMerge",
        "proxyUID",
        "proxyGID",
        "ports",
        "capture",
        "resources",
        "proxyConfig",
    },
    "ports.": {"outboundCapture", "inboundCapture", "agent", "health", "stats"},
    "capture.": {
        "includeOutboundIPRanges",
        "excludeOutboundIPRanges",
        "includeInboundPorts",
        "excludeInboundPorts",
        "includeOutboundPorts",
        "excludeOutboundPorts",
        "excludeInterfaces",
    },
    "resources.": {"requests", "limits"},
    "resources.requests.": {"cpu", "memory"},
    "resources.limits.": {"cpu", "memory"},
    "proxyConfig.": set(),  # free-form: checked by values.parse_proxy_config
}


def parse_mesh_config(data: Any, source: str = "<mesh config>") -> MeshConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MeshConfigError(f"{source}: the mesh config must be a YAML mapping")
    defaults = MeshConfig()
    top = _Reader(source, data)
    ports_in = top.mapping("ports")
    port_defaults = Ports()
    ports = Ports(
        outbound_capture=ports_in.get("outboundCapture", int, port_defaults.outbound_capture),
        inbound_capture=ports_in.get("inboundCapture", int, port_defaults.inbound_capture),
        agent=ports_in.get("agent", int, port_defaults.agent),
        health=ports_in.get("health", int, port_defaults.health),
        stats=ports_in.get("stats", int, port_defaults.stats),
    )
    for name, port in (("ports.agent", ports.agent), ("ports.health", ports.health)):
        if not 0 < port < 65536:
            raise MeshConfigError(f"{source}: {name}: {port} is not a port")
    cap_in = top.mapping("capture")
    cap_defaults = CaptureDefaults()
    capture = CaptureDefaults(
        include_outbound_ip_ranges=cap_in.text(
            "includeOutboundIPRanges", cap_defaults.include_outbound_ip_ranges
        ),
        exclude_outbound_ip_ranges=cap_in.text(
            "excludeOutboundIPRanges", cap_defaults.exclude_outbound_ip_ranges
        ),
        include_inbound_ports=cap_in.text(
            "includeInboundPorts", cap_defaults.include_inbound_ports
        ),
        exclude_inbound_ports=cap_in.text(
            "excludeInboundPorts", cap_defaults.exclude_inbound_ports
        ),
        include_outbound_ports=cap_in.text(
            "includeOutboundPorts", cap_defaults.include_outbound_ports
        ),
        exclude_outbound_ports=cap_in.text(
            "excludeOutboundPorts", cap_defaults.exclude_outbound_ports
        ),
        exclude_interfaces=cap_in.text("excludeInterfaces", cap_defaults.exclude_interfaces),
    )
    # The same validators as the pod annotations, so the defaults obey the same rules.
    checks = (
        ("includeOutboundIPRanges", capture.include_outbound_ip_ranges, values.parse_cidrs),
        ("excludeOutboundIPRanges", capture.exclude_outbound_ip_ranges, values.parse_cidrs),
        ("includeInboundPorts", capture.include_inbound_ports, values.parse_ports),
        ("excludeInboundPorts", capture.exclude_inbound_ports, values.parse_ports),
        ("includeOutboundPorts", capture.include_outbound_ports, values.parse_ports),
        ("excludeOutboundPorts", capture.exclude_outbound_ports, values.parse_ports),
        ("excludeInterfaces", capture.exclude_interfaces, values.parse_interfaces),
    )
    for name, text, check in checks:
        try:
            check(text)
        except ValueError as exc:
            raise cap_in.error(name, str(exc)) from exc
    res = top.mapping("resources")
    requests, limits = res.mapping("requests"), res.mapping("limits")
    quantities = {
        "requests.cpu": requests.text("cpu", defaults.cpu_request),
        "requests.memory": requests.text("memory", defaults.memory_request),
        "limits.cpu": limits.text("cpu", defaults.cpu_limit),
        "limits.memory": limits.text("memory", defaults.memory_limit),
    }
    for name, quantity in quantities.items():
        try:
            values.parse_quantity(quantity)
        except ValueError as exc:
            raise res.error(name, str(exc)) from exc
    proxy_config = dict(defaults.proxy_config)
    try:
        proxy_config.update(values.parse_proxy_config(top.get("proxyConfig", dict, {})))
    except ValueError as exc:
        raise top.error("proxyConfig", str(exc)) from exc
    interception_mode = top.text("interceptionMode", defaults.interception_mode)
    log_level = top.text("logLevel", defaults.log_level)
    for name, text, check in (
        ("interceptionMode", interception_mode, values.parse_interception_mode),
        ("logLevel", log_level, values.parse_log_level),
    ):
        try:
            check(text)
        except ValueError as exc:
            raise top.error(name, str(exc)) from exc
    return MeshConfig(
        revision=top.text("revision", defaults.revision),
        cluster_name=top.text("clusterName", defaults.cluster_name),
        system_namespaces=top.strings("systemNamespaces", defaults.system_namespaces),
        default_inject=top.get("defaultInject", bool, defaults.default_inject),
        proxy_image=top.text("proxyImage", defaults.proxy_image),
        image_pull_policy=top.text("imagePullPolicy", defaults.image_pull_policy),
        image_pull_secrets=top.strings("imagePullSecrets", defaults.image_pull_secrets),
        log_level=log_level,
        native_sidecar=top.get("nativeSidecar", bool, defaults.native_sidecar),
        interception_mode=interception_mode,
        rewrite_app_http_probers=top.get(
            "rewriteAppHTTPProbers", bool, defaults.rewrite_app_http_probers
        ),
        enable_prometheus_merge=top.get(
            "enablePrometheusMerge", bool, defaults.enable_prometheus_merge
        ),
        proxy_uid=top.get("proxyUID", int, defaults.proxy_uid),
        proxy_gid=top.get("proxyGID", int, defaults.proxy_gid),
        ports=ports,
        capture=capture,
        cpu_request=quantities["requests.cpu"],
        memory_request=quantities["requests.memory"],
        cpu_limit=quantities["limits.cpu"],
        memory_limit=quantities["limits.memory"],
        proxy_config=proxy_config,
    )


def load_mesh_config(path: str | Path) -> MeshConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MeshConfigError(f"{path}: cannot read the mesh config: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MeshConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_mesh_config(data, str(path))
