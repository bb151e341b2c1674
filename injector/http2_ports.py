"""Which destination ports the sidecar sends HTTP/2 to (its `upstream_http2_ports` setting).

Two sources, merged: the app's own container ports whose names say HTTP/2 the way Istio's
protocol selection reads a port name (`<protocol>[-<suffix>]`), and the list the pod (or
mesh.yaml) gives in `proxy.pilotfish.io/config` as `upstream_http2_ports`. The sidecar has no
Kubernetes API, so the injector is where the pod's port names can be read at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from injector import names

# The proxy's setting, as its config file spells it, and the camelCase spelling the other
# proxy.pilotfish.io/config keys use (holdApplicationUntilProxyStarts, ...).
SETTING = "upstream_http2_ports"
CAMEL_CASE = "upstreamHttp2Ports"

# Port-name protocols that mean HTTP/2 upstream at the sidecar: Istio's `http2` and `grpc`
# (`grpc-web` is `grpc-` plus a suffix here, and Istio sends it upstream as HTTP/2 too), and
# `h2c`, which Istio reads only as the Service appProtocol `kubernetes.io/h2c`; container
# ports have no appProtocol, so the name is the one place a pod can say it.
HTTP2_PROTOCOLS = frozenset({"http2", "grpc", "h2c"})


def names_http2(port_name: str) -> bool:
    """True for `grpc`, `grpc-*`, `http2`, `http2-*`, `h2c`, `h2c-*` (any case, as Istio)."""
    protocol = port_name.split("-", 1)[0].lower()
    return protocol in HTTP2_PROTOCOLS


def _app_containers(spec: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """The pod's long-running containers: its containers and its own native sidecars."""
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            yield container
    for container in spec.get("initContainers") or []:
        # A plain init container has exited before any traffic reaches the pod.
        if isinstance(container, dict) and container.get("restartPolicy") == "Always":
            yield container


def declared_http2_ports(pod: Mapping[str, Any]) -> tuple[int, ...]:
    """The TCP container ports (not ours) whose names say HTTP/2, sorted and unique."""
    spec = pod.get("spec") or {}
    found: set[int] = set()
    for container in _app_containers(spec if isinstance(spec, dict) else {}):
        if container.get("name") in (names.PROXY_CONTAINER, names.INIT_CONTAINER):
            continue
        for port in container.get("ports") or []:
            if not isinstance(port, dict):
                continue
            name, number = port.get("name"), port.get("containerPort")
            if (
                isinstance(name, str)
                and names_http2(name)
                and isinstance(number, int)
                and not isinstance(number, bool)
                and 0 < number < 65536
                and port.get("protocol", "TCP") == "TCP"  # UDP and SCTP are not proxied
            ):
                found.add(number)
    return tuple(sorted(found))


def parse_port_list(value: Any) -> tuple[int, ...]:
    """The override's value: a YAML list of ports, a comma-separated string or one port.

    The same forms the proxy's config file accepts (proxy/config/load.py, parse_ports);
    checked here so a bad value denies the pod instead of crash-looping its sidecar.
    """
    if isinstance(value, str):
        items: list[Any] = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif value is None:
        items = []
    else:
        raise ValueError(
            f"{SETTING}: expected a list of ports such as [50051, 8443], got {value!r}"
        )
    ports: set[int] = set()
    for item in items:
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item < 65536:
            raise ValueError(f"{SETTING}: {item!r} is not a port (1-65535)")
        ports.add(item)
    return tuple(sorted(ports))


def sidecar_http2_ports(pod: Mapping[str, Any], proxy_config: Mapping[str, Any]) -> str | None:
    """The env value PILOTFISH_UPSTREAM_HTTP2_PORTS: both sources merged; None when empty."""
    explicit = proxy_config.get(SETTING) or ()
    merged = sorted({*declared_http2_ports(pod), *explicit})
    return ",".join(map(str, merged)) or None
