"""Builds a ProxyConfig from defaults, a YAML file, PILOTFISH_* env vars and flags.

Precedence, lowest to highest: built-in defaults < config file < environment < flags.
Every value is checked here, at start-up; a bad one raises `ConfigError` naming the
source (file, env var or flag), the field and the reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from proxy.config import env as env_names
from proxy.config.model import (
    AccessLogConfig,
    Address,
    Limits,
    ProxyConfig,
    Retries,
    TelemetryConfig,
    Timeouts,
)


class ConfigError(Exception):
    """A setting that cannot be used: where it came from, which field, and why."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: field '{field}': {reason}")
        self.source = source
        self.field = field
        self.reason = reason


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """'5s', '100ms', '1m', '1h' or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 100ms")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 5s, 100ms, 1m or 1h")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{value!r} is not true or false")


def parse_port(value: Any) -> int:
    port = parse_int(value)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port (1-65535)")
    return port


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None


def parse_count(value: Any) -> int:
    number = parse_int(value)
    if number < 0:
        raise ValueError(f"{number} must not be negative")
    return number


def parse_positive(value: Any) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError(f"{number} must be at least 1")
    return number


def parse_concurrency(value: Any) -> int:
    """Worker processes; 0 means one per CPU the proxy may run on (Istio's ProxyConfig
    `concurrency: 0`, which the injector passes through)."""
    workers = parse_int(value)
    if workers < 0:
        raise ValueError(f"{workers} must be at least 0 (0: one worker per CPU)")
    return workers or len(os.sched_getaffinity(0))


def parse_address(value: Any) -> Address:
    """host:port, [v6]:port, or :port (all addresses)."""
    text = str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not host:port")
    host = host or "0.0.0.0"
    if not host.replace(".", "").replace("-", "").replace(":", "").isalnum():
        raise ValueError(f"{host!r} is not a host name or IP address")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(
                f"{host!r} is not an IP address (names other than localhost are not resolved)"
            ) from None
        host = "127.0.0.1"
    return Address(host, parse_port(port))


def parse_ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def parse_ports(value: Any) -> tuple[int, ...]:
    """A list of ports (YAML) or a comma-separated string (env, flag); empty: none."""
    if isinstance(value, str):
        items: list[Any] = [part for part in value.replace(" ", ",").split(",") if part]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif value is None:
        items = []
    else:
        raise ValueError(f"{value!r} is not a list of ports such as [8080, 50051]")
    return tuple(sorted({parse_port(item) for item in items}))


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def optional_path(value: Any) -> str | None:
    text = str(value).strip()
    return None if text.lower() in ("", "off", "none", "false") else text


# Every settable field: dotted name -> parser. The YAML file uses the same names.
FIELDS: dict[str, Callable[[Any], Any]] = {
    "mode": one_of("sidecar", "explicit"),
    "listen": parse_address,
    "upstream": parse_address,
    "concurrency": parse_concurrency,
    "codec": one_of("llhttp", "h11"),
    "log_level": one_of("trace", "debug", "info", "warning", "error", "critical", "off"),
    "admin.host": parse_ip,
    "admin.port": parse_port,
    "outbound_port": parse_port,
    "inbound_port": parse_port,
    "agent_port": parse_port,
    "health_port": parse_port,
    "prometheus_port": parse_port,
    "inbound_source": parse_ip,
    "upstream_http2_ports": parse_ports,
    **{f"timeouts.{f.name}": parse_duration for f in dataclasses.fields(Timeouts)},
    **{f"limits.{f.name}": parse_positive for f in dataclasses.fields(Limits)},
    "retries.attempts": parse_count,
    "retries.backoff_base": parse_duration,
    "retries.backoff_max": parse_duration,
    "access_log.path": optional_path,
    "access_log.format": one_of("json", "text"),
    "telemetry.explicit_direction": one_of("outbound", "inbound"),
    "telemetry.peer_metadata": parse_bool,
}

# YAML also accepts Istio's spelling for the drain duration.
ALIASES = {"terminationDrainDuration": "timeouts.drain"}


def _flatten(tree: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = ALIASES.get(str(key), f"{prefix}{key}")
        if isinstance(value, Mapping) and name not in FIELDS:
            if not any(f.startswith(name + ".") for f in FIELDS):
                raise ConfigError(source, name, "unknown setting")
            flat.update(_flatten(value, source, name + "."))
        elif name in FIELDS:
            flat[name] = value
        else:
            raise ConfigError(source, name, "unknown setting")
    return flat


def read_file(path: str) -> dict[str, Any]:
    """The file's settings, flattened to dotted names (not yet parsed)."""
    # Imported here: most sidecars run on env and flags alone, and PyYAML costs about
    # 1.2 MB of resident memory in every worker.
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            tree = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(path, "-", f"cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(path, "-", f"not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(path, "-", f"not UTF-8 text: {error}") from None
    if tree is None:
        return {}
    if not isinstance(tree, Mapping):
        raise ConfigError(path, "-", "top level must be a mapping of settings")
    return _flatten(tree, path)


def read_env(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    return {
        field: (f"environment variable {name}", environ[name])
        for name, field in env_names.SETTINGS.items()
        if name in environ
    }


def build(
    file_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ProxyConfig:
    """Merge the layers (flags > env > file > defaults), parse every value, check the whole."""
    layered: dict[str, tuple[str, Any]] = {}
    if file_path:
        layered.update({k: (file_path, v) for k, v in read_file(file_path).items()})
    layered.update(read_env(environ or {}))
    layered.update({k: ("command line", v) for k, v in (flags or {}).items() if v is not None})

    parsed: dict[str, Any] = {}
    for name, (source, raw) in layered.items():
        try:
            parsed[name] = FIELDS[name](raw)
        except ValueError as error:
            raise ConfigError(source, name, str(error)) from None

    def section(prefix: str, cls: Any) -> Any:
        values = {k.split(".", 1)[1]: v for k, v in parsed.items() if k.startswith(prefix + ".")}
        return cls(**values)

    top = {k: v for k, v in parsed.items() if "." not in k}
    admin = ProxyConfig().admin
    admin = Address(parsed.get("admin.host", admin.host), parsed.get("admin.port", admin.port))
    if "listen" in top and "mode" not in top:
        top["mode"] = "explicit"
    if top.get("mode", ProxyConfig().mode) == "sidecar" and "access_log.path" not in parsed:
        # The contract: a sidecar logs every request to stdout, where the container
        # runtime's log files feed Fluentd/Elasticsearch. Explicit mode (local use,
        # demos, benchmarks) logs only when asked.
        parsed["access_log.path"] = "-"
    config = ProxyConfig(
        **top,
        admin=admin,
        timeouts=section("timeouts", Timeouts),
        limits=section("limits", Limits),
        retries=section("retries", Retries),
        access_log=section("access_log", AccessLogConfig),
        telemetry=section("telemetry", TelemetryConfig),
        source=file_path or "<defaults>",
    )
    _check(config, {k: s for k, (s, _) in layered.items()})
    return config


def _check(config: ProxyConfig, sources: Mapping[str, str]) -> None:
    """Rules between fields."""

    def where(name: str) -> str:
        return sources.get(name, config.source)

    if config.mode == "explicit":
        if config.listen is None:
            raise ConfigError(where("mode"), "listen", "explicit mode needs --listen host:port")
        if config.upstream is None:
            raise ConfigError(
                where("listen"), "upstream", "explicit mode needs --upstream host:port"
            )
    elif config.listen is not None or config.upstream is not None:
        raise ConfigError(
            where("listen"), "listen", "listen/upstream are for explicit mode, not --sidecar"
        )
    if config.timeouts.connect <= 0 or config.timeouts.route <= 0:
        raise ConfigError(
            where("timeouts.connect"), "timeouts", "connect and route timeouts must be > 0"
        )
