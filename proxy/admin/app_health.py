"""The agent's /app-health endpoints: the app's original probes, run by the sidecar on 15020.

The injector rewrites each HTTP, TCP and gRPC probe of an app container to
`:15020/app-health/<container>/{livez,readyz,startupz}` and keeps the original in the env
`PILOTFISH_KUBE_APP_PROBERS` as JSON (`{"/app-health/web/livez": {"httpGet": {...},
"timeoutSeconds": 1}, ...}`). The kubelet cannot reach the app through the capture rules
with mTLS-only policies, so the sidecar (UID 1337, exempt from capture) probes it over
127.0.0.1 instead, with the kubelet's rules: HTTP 200-399 passes, a TCP connect passes, a
gRPC health check passes on SERVING.

`app_health_response(path)` is what the 15020 listener calls; `run_probe` does one probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events

ENV_APP_PROBERS = "PILOTFISH_KUBE_APP_PROBERS"
PATH_PREFIX = "/app-health/"
PROBE_KINDS = ("livez", "readyz", "startupz")
# The kubelet's default timeoutSeconds.
DEFAULT_TIMEOUT = 1.0
# The app is reached where inbound traffic is delivered to it (contracts.md).
DEFAULT_HOST = "127.0.0.1"
# Bounds on what a probe reads: the kubelet reads at most 10 KiB of a probe's body.
MAX_RESPONSE_HEAD = 16 * 1024
MAX_GRPC_BYTES = 64 * 1024
USER_AGENT = "kube-probe/pilotfish"
GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check"
GRPC_SERVING = 1


class ProberConfigError(ValueError):
    """PILOTFISH_KUBE_APP_PROBERS is not what the injector writes; names the entry."""


@dataclass(frozen=True, slots=True)
class HttpProbe:
    port: int
    path: str = "/"
    host: str = DEFAULT_HOST
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TcpProbe:
    port: int
    host: str = DEFAULT_HOST


@dataclass(frozen=True, slots=True)
class GrpcProbe:
    port: int
    service: str = ""
    host: str = DEFAULT_HOST


@dataclass(frozen=True, slots=True)
class Prober:
    path: str  # the agent path, /app-health/<container>/<kind>
    action: HttpProbe | TcpProbe | GrpcProbe
    timeout: float = DEFAULT_TIMEOUT


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ProberConfigError(f"{where}: port must be a number 1-65535, got {value!r}")
    return value


def _host(value: Any) -> str:
    return value if isinstance(value, str) and value else DEFAULT_HOST


def _parse_one(path: str, spec: Any) -> Prober:
    if not isinstance(spec, dict):
        raise ProberConfigError(f"{path}: expected an object, got {spec!r}")
    timeout = spec.get("timeoutSeconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ProberConfigError(f"{path}: timeoutSeconds must be positive, got {timeout!r}")
    action: HttpProbe | TcpProbe | GrpcProbe
    if isinstance(spec.get("httpGet"), dict):
        http = spec["httpGet"]
        scheme = str(http.get("scheme") or "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise ProberConfigError(f"{path}: scheme must be HTTP or HTTPS, got {scheme!r}")
        raw_headers = http.get("httpHeaders") or []
        if not isinstance(raw_headers, list) or not all(
            isinstance(h, dict) and isinstance(h.get("name"), str) for h in raw_headers
        ):
            raise ProberConfigError(f"{path}: httpHeaders must be a list of name/value")
        request_path = http.get("path") or "/"
        if not isinstance(request_path, str):
            raise ProberConfigError(f"{path}: path must be a string")
        action = HttpProbe(
            port=_port(http.get("port"), path),
            path=request_path if request_path.startswith("/") else "/" + request_path,
            host=_host(http.get("host")),
            scheme=scheme,
            headers=tuple((str(h["name"]), str(h.get("value", ""))) for h in raw_headers),
        )
    elif isinstance(spec.get("tcpSocket"), dict):
        tcp = spec["tcpSocket"]
        action = TcpProbe(port=_port(tcp.get("port"), path), host=_host(tcp.get("host")))
    elif isinstance(spec.get("grpc"), dict):
        grpc = spec["grpc"]
        service = grpc.get("service") or ""
        if not isinstance(service, str):
            raise ProberConfigError(f"{path}: grpc.service must be a string")
        action = GrpcProbe(port=_port(grpc.get("port"), path), service=service)
    else:
        raise ProberConfigError(f"{path}: no httpGet, tcpSocket or grpc")
    return Prober(path=path, action=action, timeout=float(timeout))


def parse_app_probers(raw: str | None) -> dict[str, Prober]:
    """The env value as the injector writes it; empty or unset means no probers."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ProberConfigError(f"{ENV_APP_PROBERS} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProberConfigError(f"{ENV_APP_PROBERS} must be a JSON object")
    probers: dict[str, Prober] = {}
    for path, spec in data.items():
        parts = path.split("/")
        if len(parts) != 4 or parts[:2] != ["", "app-health"] or parts[3] not in PROBE_KINDS:
            raise ProberConfigError(
                f"{path!r}: expected /app-health/<container>/{{livez,readyz,startupz}}"
            )
        probers[path] = _parse_one(path, spec)
    return probers


def probers_from_env(env: Mapping[str, str]) -> dict[str, Prober]:
    return parse_app_probers(env.get(ENV_APP_PROBERS))


# -- running probes -------------------------------------------------------------------------


async def _http_probe(probe: HttpProbe) -> tuple[bool, str]:
    context = None
    if probe.scheme == "HTTPS":
        # The kubelet does not verify an HTTPS probe's certificate; neither do we.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(probe.host, probe.port, ssl=context)
    try:
        headers = {
            "host": f"{probe.host}:{probe.port}",
            "user-agent": USER_AGENT,
            "accept": "*/*",
            "connection": "close",
        }
        for name, value in probe.headers:
            headers[name.lower()] = value  # the probe's own Host or User-Agent wins
        head = (
            f"GET {probe.path} HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        )
        writer.write(head.encode("latin-1"))
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        if len(status_line) > MAX_RESPONSE_HEAD:
            return False, "status line too long"
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return False, f"not an HTTP response: {status_line[:80]!r}"
        status = int(parts[1])
        # The kubelet's rule: 200-399 passes (a redirect it does not follow counts as success).
        return 200 <= status < 400, f"HTTP {status}"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def _tcp_probe(probe: TcpProbe) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(probe.host, probe.port)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return True, f"connected to {probe.host}:{probe.port}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_health_request(service: str) -> bytes:
    """grpc.health.v1.HealthCheckRequest{service = 1}, length-prefixed for gRPC framing."""
    encoded = service.encode()
    message = b"\x0a" + _varint(len(encoded)) + encoded if encoded else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decode_health_status(payload: bytes) -> int | None:
    """The `status` (field 1, varint) of a framed HealthCheckResponse; 0 (UNKNOWN) when
    absent, as proto3 omits defaults; None when the bytes are not such a message."""
    if len(payload) < 5 or payload[0] != 0:
        return None
    length = int.from_bytes(payload[1:5], "big")
    message = payload[5 : 5 + length]
    if len(message) != length:
        return None
    status, index = 0, 0
    while index < len(message):
        key = message[index]
        index += 1
        wire_type, field = key & 7, key >> 3
        if wire_type != 0:
            return None  # the response has only varint fields
        value, shift = 0, 0
        while index < len(message):
            byte = message[index]
            index += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if field == 1:
            status = value
    return status


async def _grpc_probe(probe: GrpcProbe) -> tuple[bool, str]:
    """grpc.health.v1 Check over h2c, with the h2 state machine (no grpcio in the sidecar)."""
    reader, writer = await asyncio.open_connection(probe.host, probe.port)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", GRPC_HEALTH_PATH),
                (":authority", f"{probe.host}:{probe.port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("user-agent", USER_AGENT),
            ],
        )
        connection.send_data(stream_id, encode_health_request(probe.service), end_stream=True)
        writer.write(connection.data_to_send())
        await writer.drain()
        body = bytearray()
        grpc_status: str | None = None
        grpc_message = ""
        received = 0
        while received <= MAX_GRPC_BYTES:  # bounded: a probe reads little
            data = await reader.read(16384)
            if not data:
                return False, "connection closed before the response ended"
            received += len(data)
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers = {
                        (k.decode() if isinstance(k, bytes) else k): (
                            v.decode() if isinstance(v, bytes) else v
                        )
                        for k, v in event.headers
                    }
                    if headers.get(":status", "200") != "200":
                        return False, f"HTTP {headers[':status']}"
                    grpc_status = headers.get("grpc-status", grpc_status)
                    grpc_message = headers.get("grpc-message", grpc_message)
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return False, "the server reset the stream"
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    if grpc_status != "0":
                        return False, f"grpc-status {grpc_status} {grpc_message}".strip()
                    status = decode_health_status(bytes(body))
                    if status is None:
                        return False, "not a HealthCheckResponse"
                    names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
                    return status == GRPC_SERVING, names.get(status, str(status))
            pending = connection.data_to_send()
            if pending:
                writer.write(pending)
                await writer.drain()
        return False, "response too large"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def run_probe(prober: Prober, timeout: float | None = None) -> tuple[bool, str]:
    """One probe, within `timeout` (default: the probe's own timeoutSeconds)."""
    limit = prober.timeout if timeout is None else timeout
    action = prober.action
    try:
        if isinstance(action, HttpProbe):
            return await asyncio.wait_for(_http_probe(action), limit)
        if isinstance(action, TcpProbe):
            return await asyncio.wait_for(_tcp_probe(action), limit)
        return await asyncio.wait_for(_grpc_probe(action), limit)
    except TimeoutError:
        return False, f"timed out after {limit:g}s"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a probe must answer, never crash the agent's listener
        return False, f"probe error: {type(exc).__name__}: {exc}"


class AppHealth:
    """The /app-health routes for one set of probers."""

    def __init__(self, probers: Mapping[str, Prober]) -> None:
        self.probers = dict(probers)

    async def response(self, path: str) -> tuple[int, bytes]:
        clean = path.split("?", 1)[0]
        prober = self.probers.get(clean)
        if prober is None:
            return 404, f"no app prober for {clean}\n".encode()
        ok, detail = await run_probe(prober)
        # 503, not 500: the kubelet reads any status outside 200-399 as a failed probe, and
        # 503 says "the app", not "the agent", is unhealthy.
        return (200 if ok else 503), (detail + "\n").encode()


_from_env: AppHealth | None = None


async def app_health_response(
    path: str, probers: Mapping[str, Prober] | None = None
) -> tuple[int, bytes]:
    """What the 15020 listener answers for /app-health/... (probers default to the env)."""
    global _from_env
    if probers is not None:
        return await AppHealth(probers).response(path)
    if _from_env is None:
        try:
            _from_env = AppHealth(probers_from_env(os.environ))
        except ProberConfigError as exc:
            return 500, f"bad {ENV_APP_PROBERS}: {exc}\n".encode()
    return await _from_env.response(path)
