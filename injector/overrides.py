"""Per-pod settings: the mesh defaults with the pod's annotations validated and applied."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from injector import names, values
from injector.config import MeshConfig


class InvalidAnnotation(ValueError):
    """An annotation with a bad value: the pod is denied with this message."""

    def __init__(self, annotation: str, reason: str) -> None:
        super().__init__(f"invalid annotation {annotation}: {reason}")
        self.annotation = annotation
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PodSettings:
    proxy_image: str
    log_level: str
    native_sidecar: bool
    interception_mode: str
    rewrite_probers: bool
    stats_histogram_buckets: str | None
    resources: Mapping[str, Mapping[str, str]]
    proxy_config: Mapping[str, Any]
    proxy_config_overrides: Mapping[str, Any]  # only what the pod set, passed to the proxy
    include_outbound_ip_ranges: str
    exclude_outbound_ip_ranges: str
    include_inbound_ports: str
    exclude_inbound_ports: str
    include_outbound_ports: str
    exclude_outbound_ports: str
    exclude_interfaces: str

    @property
    def hold_application(self) -> bool:
        return bool(self.proxy_config.get("holdApplicationUntilProxyStarts", False))


_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "": 1,
}


def quantity_value(text: str) -> float:
    """A validated quantity as a number, to compare a request with its limit."""
    match = re.match(r"^\+?([\d.]+)([eE][+-]?\d+)?(\D*)$", text.strip())
    if match is None:  # pragma: no cover - callers validate first
        raise ValueError(text)
    number = float(match.group(1) + (match.group(2) or ""))
    return number * _SUFFIX.get(match.group(3), 1)


def _read(
    annotations: Mapping[str, Any], name: str, parse: Callable[[str], Any], default: Any
) -> Any:
    raw = annotations.get(name)
    if raw is None:
        return default
    if not isinstance(raw, str):
        raise InvalidAnnotation(name, f"expected a string, got {raw!r}")
    try:
        return parse(raw)
    except ValueError as exc:
        raise InvalidAnnotation(name, str(exc)) from exc


def _merge_ports(default: str, extra: str) -> str:
    """Union of two port lists, defaults first; the proxy's own ports stay excluded."""
    seen: list[str] = []
    for item in (default + "," + extra).split(","):
        if item and item not in seen:
            seen.append(item)
    return ",".join(seen)


def read_settings(annotations: Mapping[str, Any], mesh: MeshConfig) -> PodSettings:
    """Raises InvalidAnnotation naming the first annotation whose value is wrong."""
    cap = mesh.capture
    resources = {
        "requests": {
            "cpu": _read(annotations, names.PROXY_CPU, values.parse_quantity, None),
            "memory": _read(annotations, names.PROXY_MEMORY, values.parse_quantity, None),
        },
        "limits": {
            "cpu": _read(annotations, names.PROXY_CPU_LIMIT, values.parse_quantity, None),
            "memory": _read(annotations, names.PROXY_MEMORY_LIMIT, values.parse_quantity, None),
        },
    }
    defaults = {
        ("requests", "cpu"): mesh.cpu_request,
        ("requests", "memory"): mesh.memory_request,
        ("limits", "cpu"): mesh.cpu_limit,
        ("limits", "memory"): mesh.memory_limit,
    }
    limit_names = {"cpu": names.PROXY_CPU_LIMIT, "memory": names.PROXY_MEMORY_LIMIT}
    for resource in ("cpu", "memory"):
        request, limit = resources["requests"][resource], resources["limits"][resource]
        effective_request = request or defaults[("requests", resource)]
        effective_limit = limit or defaults[("limits", resource)]
        if quantity_value(effective_request) > quantity_value(effective_limit):
            if limit is not None:
                raise InvalidAnnotation(
                    limit_names[resource],
                    f"limit {limit} is below the request {effective_request}",
                )
            # Only the request was raised: lift the default limit with it, as a pod whose
            # request exceeds its limit is rejected by the API server.
            effective_limit = effective_request
        resources["requests"][resource] = effective_request
        resources["limits"][resource] = effective_limit
    overrides = _read(annotations, names.PROXY_CONFIG, values.parse_proxy_config, {})
    proxy_config = {**mesh.proxy_config, **overrides}
    buckets = _read(annotations, names.STATS_HISTOGRAM_BUCKETS, values.parse_buckets, None)
    return PodSettings(
        proxy_image=_read(annotations, names.PROXY_IMAGE, values.parse_image, mesh.proxy_image),
        log_level=_read(annotations, names.LOG_LEVEL, values.parse_log_level, mesh.log_level),
        native_sidecar=_read(
            annotations, names.NATIVE_SIDECAR, values.parse_bool, mesh.native_sidecar
        ),
        interception_mode=_read(
            annotations,
            names.INTERCEPTION_MODE,
            values.parse_interception_mode,
            mesh.interception_mode,
        ),
        rewrite_probers=_read(
            annotations, names.REWRITE_PROBERS, values.parse_bool, mesh.rewrite_app_http_probers
        ),
        stats_histogram_buckets=buckets,
        resources=resources,
        proxy_config=proxy_config,
        proxy_config_overrides=overrides,
        include_outbound_ip_ranges=_read(
            annotations,
            names.INCLUDE_OUTBOUND_IP_RANGES,
            values.parse_cidrs,
            cap.include_outbound_ip_ranges,
        ),
        exclude_outbound_ip_ranges=_read(
            annotations,
            names.EXCLUDE_OUTBOUND_IP_RANGES,
            values.parse_cidrs,
            cap.exclude_outbound_ip_ranges,
        ),
        include_inbound_ports=_read(
            annotations, names.INCLUDE_INBOUND_PORTS, values.parse_ports, cap.include_inbound_ports
        ),
        exclude_inbound_ports=_merge_ports(
            values.parse_ports(cap.exclude_inbound_ports),
            _read(annotations, names.EXCLUDE_INBOUND_PORTS, values.parse_ports, ""),
        ),
        include_outbound_ports=_read(
            annotations,
            names.INCLUDE_OUTBOUND_PORTS,
            values.parse_ports,
            cap.include_outbound_ports,
        ),
        exclude_outbound_ports=_read(
            annotations,
            names.EXCLUDE_OUTBOUND_PORTS,
            values.parse_ports,
            cap.exclude_outbound_ports,
        ),
        exclude_interfaces=_read(
            annotations, names.EXCLUDE_INTERFACES, values.parse_interfaces, cap.exclude_interfaces
        ),
    )
