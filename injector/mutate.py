"""The pure pod transform: pod in, injected pod out, shaped by the template and mesh config."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from injector import http2_ports, names
from injector.config import MeshConfig
from injector.overrides import PodSettings, read_settings
from injector.template import SidecarTemplate, plain_copy

PROBE_KINDS = (
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
)
PROBE_ACTIONS = ("httpGet", "tcpSocket", "grpc")
# A CronJob names its Jobs `<cronjob>-<scheduled time in minutes>` (8+ digits since 1990).
_CRONJOB_JOB = re.compile(r"^(.+)-\d{8,}$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Injector:
    """What a render needs besides the pod: loaded once at start-up."""

    mesh: MeshConfig
    template: SidecarTemplate


def _json(value: Any) -> str:
    # Sorted and compact: the same pod always gets byte-identical env, so re-injection and
    # the goldens are stable.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if not isinstance(value, list):
        value = []
        parent[key] = value
    return value


def workload_name(pod: Mapping[str, Any]) -> str:
    """The owning workload's name, from the controller owner reference (contracts.md)."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    owners = [ref for ref in metadata.get("ownerReferences") or [] if isinstance(ref, dict)]
    controller = next(
        (ref for ref in owners if ref.get("controller")), owners[0] if owners else None
    )
    if controller is not None and isinstance(controller.get("name"), str):
        kind, name = controller.get("kind"), str(controller["name"])
        template_hash = labels.get("pod-template-hash")
        if (
            kind == "ReplicaSet"
            and isinstance(template_hash, str)
            and name.endswith("-" + template_hash)
        ):
            return name[: -len(template_hash) - 1]  # the Deployment's ReplicaSet
        if kind == "Job":
            match = _CRONJOB_JOB.match(name)
            return match.group(1) if match else name
        return name
    if isinstance(metadata.get("name"), str) and metadata["name"]:
        return str(metadata["name"])
    generate = metadata.get("generateName")
    if isinstance(generate, str) and generate.rstrip("-"):
        return generate.rstrip("-")
    return "unknown"


def _resolve_port(port: Any, container: Mapping[str, Any]) -> int | None:
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            if isinstance(declared, dict) and declared.get("name") == port:
                number = declared.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def _rewrite_probes(
    containers: list[Any], agent_probe: Callable[[str], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Point HTTP, TCP and gRPC probes at the agent; return the originals by agent path."""
    probers: dict[str, dict[str, Any]] = {}
    for container in containers:
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            continue
        for field, suffix in PROBE_KINDS:
            probe = container.get(field)
            if not isinstance(probe, dict):
                continue
            action = next(
                (kind for kind in PROBE_ACTIONS if isinstance(probe.get(kind), dict)), None
            )
            if action is None:
                continue  # exec probes run inside the app container: nothing to rewrite
            original = dict(probe[action])
            port = _resolve_port(original.get("port"), container)
            if port is None:
                continue  # the kubelet would fail it too; leave it as written
            original["port"] = port
            path = f"/app-health/{container['name']}/{suffix}"
            prober: dict[str, Any] = {action: original}
            if isinstance(probe.get("timeoutSeconds"), int):
                prober["timeoutSeconds"] = probe["timeoutSeconds"]
            probers[path] = prober
            rewritten = {key: value for key, value in probe.items() if key not in PROBE_ACTIONS}
            rewritten.update(agent_probe(path))
            container[field] = rewritten
    return probers


def _restore_probes(containers: list[Any], probers: Mapping[str, Any]) -> None:
    for container in containers:
        if not isinstance(container, dict):
            continue
        for field, suffix in PROBE_KINDS:
            probe = container.get(field)
            prober = probers.get(f"/app-health/{container.get('name')}/{suffix}")
            if not isinstance(probe, dict) or not isinstance(prober, dict):
                continue
            action = next((kind for kind in PROBE_ACTIONS if kind in prober), None)
            if action is None:
                continue
            restored = {key: value for key, value in probe.items() if key not in PROBE_ACTIONS}
            restored[action] = prober[action]
            container[field] = restored


def _env_value(container: Mapping[str, Any], name: str) -> str | None:
    for item in container.get("env") or []:
        if (
            isinstance(item, dict)
            and item.get("name") == name
            and isinstance(item.get("value"), str)
        ):
            return str(item["value"])
    return None


def _uninject(pod: dict[str, Any], status: Mapping[str, Any], merged: Mapping[str, Any]) -> None:
    """Undo a previous injection so the pod is injected again in place (reinvocation)."""
    spec = _dict(pod, "spec")
    annotations = _dict(_dict(pod, "metadata"), "annotations")

    def listed(key: str) -> set[str]:
        value = status.get(key)
        return {str(item) for item in value} if isinstance(value, list) else set()

    injected = listed("initContainers") | listed("containers")
    proxy = next(
        (
            item
            for key in ("initContainers", "containers")
            for item in spec.get(key) or []
            if isinstance(item, dict) and item.get("name") == names.PROXY_CONTAINER
        ),
        None,
    )
    if proxy is not None:
        probers_json = _env_value(proxy, names.ENV_APP_PROBERS)
        try:
            probers = json.loads(probers_json) if probers_json else {}
        except ValueError:
            probers = {}  # damaged env: keep the probes as they are
        if isinstance(probers, dict):
            _restore_probes(spec.get("containers") or [], probers)
        if merged and all(annotations.get(key) == value for key, value in merged.items()):
            for key in (
                *merged,
                names.PROMETHEUS_SCRAPE,
                names.PROMETHEUS_PORT,
                names.PROMETHEUS_PATH,
            ):
                annotations.pop(key, None)
            moved = _env_value(proxy, names.ENV_PROMETHEUS_ANNOTATIONS)
            try:
                original = json.loads(moved) if moved else {}
            except ValueError:
                original = {}
            if isinstance(original, dict):
                for key, value in original.items():
                    annotations[f"prometheus.io/{key}"] = str(value)
    for key, wanted in (
        ("initContainers", injected),
        ("containers", injected),
        ("volumes", listed("volumes")),
    ):
        if isinstance(spec.get(key), list):
            spec[key] = [
                item
                for item in spec[key]
                if not (isinstance(item, dict) and item.get("name") in wanted)
            ]
    if isinstance(spec.get("imagePullSecrets"), list):
        pulls = listed("imagePullSecrets")
        spec["imagePullSecrets"] = [
            item
            for item in spec["imagePullSecrets"]
            if not (isinstance(item, dict) and item.get("name") in pulls)
        ]
    for key in ("initContainers", "containers", "volumes", "imagePullSecrets"):
        if spec.get(key) == [] and key != "containers":
            del spec[key]


def _prometheus_merge(annotations: dict[str, Any], merged: Mapping[str, Any]) -> str | None:
    """Move the app's scrape annotations into env; point Prometheus at the agent instead."""
    if str(annotations.get(names.PROMETHEUS_SCRAPE, "")).lower() == "false":
        return None
    original = {
        key.split("/", 1)[1]: str(annotations[key])
        for key in (names.PROMETHEUS_SCRAPE, names.PROMETHEUS_PORT, names.PROMETHEUS_PATH)
        if key in annotations
    }
    annotations.update(merged)
    return _json(original) if original else None


def _ports_context(mesh: MeshConfig) -> dict[str, int]:
    return {
        "outboundCapture": mesh.ports.outbound_capture,
        "inboundCapture": mesh.ports.inbound_capture,
        "agent": mesh.ports.agent,
        "health": mesh.ports.health,
        "stats": mesh.ports.stats,
    }


def _label(labels: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = labels.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def render_context(
    pod: Mapping[str, Any],
    injector: Injector,
    settings: PodSettings,
    workload: str,
    probers: str | None,
    prometheus: str | None,
) -> dict[str, Any]:
    """Everything the template may name; see the header of manifests/sidecar/template.yaml."""
    mesh = injector.mesh
    labels = (pod.get("metadata") or {}).get("labels") or {}
    app = _label(labels, "app.kubernetes.io/name", "app")
    version = _label(labels, "app.kubernetes.io/version", "version")
    containers = (pod.get("spec") or {}).get("containers") or []
    first_app = next(
        (
            c.get("name")
            for c in containers
            if isinstance(c, dict) and c.get("name") != names.PROXY_CONTAINER
        ),
        None,
    )
    return {
        "revision": mesh.revision,
        "clusterName": mesh.cluster_name,
        "proxy": {
            "image": settings.proxy_image,
            "imagePullPolicy": mesh.image_pull_policy,
            "uid": mesh.proxy_uid,
            "gid": mesh.proxy_gid,
            "logLevel": settings.log_level,
            "native": settings.native_sidecar,
            "holdApplication": settings.hold_application and not settings.native_sidecar,
            "concurrency": settings.proxy_config.get("concurrency", 2),
            "terminationDrainDuration": settings.proxy_config.get("terminationDrainDuration", "5s"),
            "config": _json(dict(settings.proxy_config_overrides))
            if settings.proxy_config_overrides
            else None,
            "statsHistogramBuckets": settings.stats_histogram_buckets,
            "upstreamHttp2Ports": http2_ports.sidecar_http2_ports(pod, settings.proxy_config),
            "resources": {kind: dict(values) for kind, values in settings.resources.items()},
        },
        "ports": _ports_context(mesh),
        "capture": {
            "interceptionMode": settings.interception_mode,
            "includeOutboundIPRanges": settings.include_outbound_ip_ranges,
            "excludeOutboundIPRanges": settings.exclude_outbound_ip_ranges,
            "includeInboundPorts": settings.include_inbound_ports,
            "excludeInboundPorts": settings.exclude_inbound_ports,
            "includeOutboundPorts": settings.include_outbound_ports,
            "excludeOutboundPorts": settings.exclude_outbound_ports,
            "excludeInterfaces": settings.exclude_interfaces,
        },
        "workload": {
            "name": workload,
            "app": app or "",
            "version": version or "",
            "canonicalService": _label(labels, "service.pilotfish.io/canonical-name")
            or app
            or workload,
            "canonicalRevision": _label(labels, "service.pilotfish.io/canonical-revision")
            or version
            or "latest",
            "firstAppContainer": first_app,
        },
        "probers": probers,
        "prometheusAnnotations": prometheus,
    }


def mutate(
    pod: Mapping[str, Any], injector: Injector, *, workload: str | None = None
) -> dict[str, Any]:
    """Return the injected copy of `pod`; raises InvalidAnnotation for a bad annotation.

    A pod that was injected before (it has the status annotation) is un-injected first and
    injected again, so `mutate(mutate(pod)) == mutate(pod)` and no pod gets two sidecars.
    """
    result: dict[str, Any] = plain_copy(dict(pod))
    ports = {"ports": _ports_context(injector.mesh)}
    merged = (
        injector.template.render_part("prometheusMerge", ports)
        if injector.mesh.enable_prometheus_merge
        else {}
    )
    metadata = _dict(result, "metadata")
    spec = _dict(result, "spec")
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict) and isinstance(annotations.get(names.STATUS), str):
        try:
            previous = json.loads(annotations[names.STATUS])
        except ValueError:
            previous = {}
        _uninject(result, previous if isinstance(previous, dict) else {}, merged)
    annotations = _dict(metadata, "annotations")
    settings = read_settings(annotations, injector.mesh)
    mesh = injector.mesh
    # Containers with our names but no (or a damaged) status annotation, e.g. added by hand:
    # replaced, never duplicated (a duplicate name would make the API server reject the pod).
    ours = {names.PROXY_CONTAINER, names.INIT_CONTAINER}
    for key in ("initContainers", "containers"):
        if isinstance(spec.get(key), list):
            spec[key] = [
                c for c in spec[key] if not (isinstance(c, dict) and c.get("name") in ours)
            ]
    containers = _list(spec, "containers")
    probers = (
        _rewrite_probes(
            containers,
            lambda path: injector.template.render_part(
                "appProbe", {**ports, "probe": {"path": path}}
            ),
        )
        if settings.rewrite_probers
        else {}
    )
    prometheus = _prometheus_merge(annotations, merged) if merged else None
    context = render_context(
        result,
        injector,
        settings,
        workload or workload_name(result),
        _json(probers) if probers else None,
        prometheus,
    )
    rendered = injector.template.render(context)
    init, proxy = rendered["initContainer"], rendered["proxyContainer"]
    existing_init = list(spec.get("initContainers") or [])
    if settings.native_sidecar:
        # Capture first, then the proxy: the app's own init containers already run meshed.
        spec["initContainers"] = [init, proxy, *existing_init]
        status_init, status_containers = [init["name"], proxy["name"]], []
    else:
        # Classic: no proxy runs during init, so capture goes last, after the app's own init
        # containers, which keep plain networking (Istio captures them, and they break).
        spec["initContainers"] = [*existing_init, init]
        spec["containers"] = [proxy, *containers]
        status_init, status_containers = [init["name"]], [proxy["name"]]
    volumes = rendered.get("volumes") or []
    if volumes:
        volume_names = {volume.get("name") for volume in volumes}
        kept = [
            v
            for v in spec.get("volumes") or []
            if not (isinstance(v, dict) and v.get("name") in volume_names)
        ]
        spec["volumes"] = [*kept, *volumes]
    pull_secrets = [
        name
        for name in mesh.image_pull_secrets
        if not any(
            isinstance(s, dict) and s.get("name") == name
            for s in spec.get("imagePullSecrets") or []
        )
    ]
    if pull_secrets:
        _list(spec, "imagePullSecrets").extend({"name": name} for name in pull_secrets)
    labels = _dict(metadata, "labels")
    for key, value in (rendered.get("labels") or {}).items():
        # A workload name can be longer than a label value may be; such a label is left out
        # rather than have the API server reject the pod.
        if isinstance(value, str) and _LABEL_VALUE.match(value):
            labels.setdefault(key, value)
    for key, value in (rendered.get("annotations") or {}).items():
        annotations.setdefault(key, value)
    status = {
        "initContainers": status_init,
        "containers": status_containers,
        "volumes": [volume["name"] for volume in volumes],
        "imagePullSecrets": pull_secrets,
        "revision": mesh.revision,
    }
    assert tuple(status) == names.STATUS_KEYS  # the contract's keys, in its order
    annotations[names.STATUS] = _json_status(status)
    return result


def _json_status(status: Mapping[str, Any]) -> str:
    # Key order is the contract's, not sorted.
    return json.dumps(dict(status), separators=(",", ":"))
