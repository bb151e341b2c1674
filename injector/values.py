"""Pure validators for annotation values: port lists, CIDRs, quantities, booleans, durations."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import yaml

from injector import http2_ports

# Kubernetes resource.Quantity: a number with an optional binary, decimal or exponent suffix.
# Negative values are refused: no resource request or limit can be negative.
_QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?\d+)?$")
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no whitespace or slash.
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")

LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
# `pilotfish iptables -m` implements REDIRECT only (contracts.md, Capture); accepting TPROXY
# here would make pods that fail in their init container instead of a clear denial.
INTERCEPTION_MODES = ("REDIRECT",)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_ports(text: str) -> str:
    """A comma-separated port list or `*`; returns it normalised (no spaces)."""
    items = _items(text)
    if items == ["*"]:
        return "*"
    for item in items:
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise ValueError(f"{item!r} is not a port (1-65535) in {text!r}")
    return ",".join(str(int(item)) for item in items)


def parse_cidrs(text: str) -> str:
    """A comma-separated CIDR list or `*`; each must carry a prefix length, as in Istio."""
    items = _items(text)
    if items == ["*"]:
        return "*"
    for item in items:
        if "/" not in item:
            raise ValueError(f"{item!r} is not a CIDR (address/prefix) in {text!r}")
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a CIDR in {text!r}") from exc
    return ",".join(items)


def parse_interfaces(text: str) -> str:
    items = _items(text)
    for item in items:
        if not _INTERFACE.match(item):
            raise ValueError(f"{item!r} is not an interface name in {text!r}")
    return ",".join(items)


def parse_quantity(text: str) -> str:
    if not _QUANTITY.match(text.strip()):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 100m, 128Mi, 1.5)")
    return text.strip()


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def parse_log_level(text: str) -> str:
    if text.strip().lower() not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.strip().lower()


def parse_interception_mode(text: str) -> str:
    if text.strip().upper() not in INTERCEPTION_MODES:
        raise ValueError(f"{text!r} is not one of {', '.join(INTERCEPTION_MODES)}")
    return text.strip().upper()


def parse_image(text: str) -> str:
    if not _IMAGE.match(text.strip()):
        raise ValueError(f"{text!r} is not an image reference")
    return text.strip()


def parse_buckets(text: str) -> str:
    """Histogram bucket bounds: positive, strictly increasing numbers, comma-separated."""
    items = _items(text)
    if not items:
        raise ValueError("no bucket bounds given")
    bounds: list[float] = []
    for item in items:
        try:
            bound = float(item)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a number in {text!r}") from exc
        if not bound > 0 or bound == float("inf") or (bounds and bound <= bounds[-1]):
            raise ValueError(f"bounds must be positive and increasing in {text!r}")
        bounds.append(bound)
    return ",".join(items)


def parse_duration(text: str) -> str:
    if not _DURATION.match(text.strip()):
        raise ValueError(f"{text!r} is not a duration (e.g. 5s, 500ms, 1m30s)")
    return text.strip()


# proxy.pilotfish.io/config keys we understand, with their checks; others pass through to the
# proxy untouched (Istio's ProxyConfig has many more, and the proxy owns their meaning).
def _check_hold(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"holdApplicationUntilProxyStarts: expected true or false, got {value!r}")
    return value


def _check_concurrency(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"concurrency: expected a whole number >= 0, got {value!r}")
    return value


def _check_drain(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"terminationDrainDuration: expected a duration, got {value!r}")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"terminationDrainDuration: {exc}") from exc


def _check_http2_ports(value: Any) -> Any:
    return list(http2_ports.parse_port_list(value))  # a list: it is JSON in the sidecar's env


_PROXY_CONFIG_CHECKS = {
    "holdApplicationUntilProxyStarts": _check_hold,
    "concurrency": _check_concurrency,
    "terminationDrainDuration": _check_drain,
    http2_ports.SETTING: _check_http2_ports,
}
# Other spellings of a key, stored under the one the proxy's config file uses.
_PROXY_CONFIG_ALIASES = {http2_ports.CAMEL_CASE: http2_ports.SETTING}


def parse_proxy_config(data: Mapping[str, Any] | str) -> dict[str, Any]:
    """The proxy.pilotfish.io/config overrides: a YAML mapping (text or already parsed)."""
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data) if data.strip() else {}
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {str(exc).splitlines()[0]}") from exc
        if data is None:
            data = {}
    if not isinstance(data, Mapping):
        raise ValueError("expected a YAML mapping such as `concurrency: 2`")
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = _PROXY_CONFIG_ALIASES.get(str(key), str(key))
        if name in result:
            raise ValueError(f"{name} is given twice (as {name} and as {key})")
        check = _PROXY_CONFIG_CHECKS.get(name)
        result[name] = check(value) if check else value
    return result
