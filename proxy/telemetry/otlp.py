"""OTLP/HTTP trace export without the SDK: spans encoded to protobuf by hand, POSTed by a thread.

The OpenTelemetry SDK's OTLP exporter brings protobuf, the generated OTLP classes and
requests (with urllib3, idna, charset codecs): about 13 MB of resident memory in every
worker, for the 1% of requests that are sampled. The wire format of a trace export is
small and stable (opentelemetry-proto's `trace/v1/trace.proto`, `common/v1`,
`resource/v1`, `collector/trace/v1`), so it is written here directly; the tests decode
it with opentelemetry-proto. The standard exporter variables are honoured:
`OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`,
`_CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`.
"""

from __future__ import annotations

import socket
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit

from proxy.telemetry.protowire import SMALL as _SMALL
from proxy.telemetry.protowire import field as _field
from proxy.telemetry.protowire import varint as _varint

AttributeValue = (
    str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
)

# Span.SpanKind and Status.StatusCode of trace.proto.
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2
# SpanFlags: the flags say whether the parent is remote (it always is for a proxy's span).
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
DEFAULT_TIMEOUT = 10.0
# Status codes worth another attempt (the OTLP/HTTP spec's retryable ones).
_RETRYABLE = frozenset((429, 502, 503, 504))
_MAX_RESPONSE = 64 * 1024

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


def _any_value(value: object) -> bytes:
    # bool before int: True is an int too.
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, list | tuple):
        return _field(5, b"".join([_field(1, _any_value(item)) for item in value]))
    return _field(1, str(value).encode("utf-8", "replace"))


# Encoded `key` fields of KeyValue, by attribute name: a span's keys come from a short list.
_KEYS: dict[str, bytes] = {}


def attributes(number: int, values: Mapping[str, object]) -> bytes:
    """Repeated KeyValue field `number` (Span.attributes is 9, Resource.attributes 1)."""
    keys = _KEYS
    small = _SMALL
    tag = _varint(number << 3 | 2)
    out = []
    for key, value in values.items():
        encoded = keys.get(key)
        if encoded is None:
            encoded = _field(1, key.encode("utf-8", "replace"))
            if len(keys) < 1024:
                keys[key] = encoded
        if type(value) is str and len(value) < 0x70:  # the common case, inlined
            text = value.encode("utf-8", "replace")
            size = len(text)
            if size < 0x7D:
                pair = encoded + b"\x12" + small[size + 2] + b"\x0a" + small[size] + text
                size = len(pair)
                out.append(tag + (small[size] if size < 0x80 else _varint(size)) + pair)
                continue
        out.append(_field(number, encoded + _field(2, _any_value(value))))
    return b"".join(out)


def encode_span(
    name: str,
    kind: int,
    trace_id: int,
    span_id: int,
    parent_span_id: int,
    tracestate: str,
    start_ns: int,
    end_ns: int,
    values: Mapping[str, object],
    error: bool,
) -> bytes:
    """One `Span` message (trace.proto), as the SDK's encoder writes it."""
    parts = [b"\x0a\x10" + trace_id.to_bytes(16, "big"), b"\x12\x08" + span_id.to_bytes(8, "big")]
    if tracestate:
        parts.append(_field(3, tracestate.encode("latin-1")))
    if parent_span_id:
        parts.append(b"\x22\x08" + parent_span_id.to_bytes(8, "big"))
    parts.append(_field(5, name.encode("utf-8", "replace")))
    parts.append(b"\x30" + _varint(kind))
    parts.append(b"\x39" + _pack_fixed64(start_ns))
    parts.append(b"\x41" + _pack_fixed64(end_ns))
    parts.append(attributes(9, values))
    if error:
        parts.append(_field(15, b"\x18" + _varint(STATUS_ERROR)))
    flags = _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if parent_span_id else 0)
    parts.append(b"\x85\x01" + _pack_fixed32(flags))  # field 16, fixed32
    return b"".join(parts)


def request_parts(
    resource: Mapping[str, object], scope_name: str, scope_version: str
) -> tuple[bytes, bytes]:
    """The parts every export repeats: the Resource field and the InstrumentationScope field."""
    scope = _field(1, scope_name.encode()) + _field(2, scope_version.encode())
    return _field(1, attributes(1, resource)), _field(1, scope)


def encode_request(parts: tuple[bytes, bytes], spans: Sequence[bytes]) -> bytes:
    """An ExportTraceServiceRequest with one resource, one scope and these encoded spans."""
    resource, scope = parts
    scope_spans = scope + b"".join(_field(2, span) for span in spans)
    return _field(1, resource + _field(2, scope_spans))


def _pairs(raw: str) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoding, as OTEL_EXPORTER_OTLP_HEADERS and
    OTEL_RESOURCE_ATTRIBUTES are written; malformed members are skipped."""
    out: dict[str, str] = {}
    for member in raw.split(","):
        key, sep, value = member.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


def resource_attributes(ours: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The resource, merged as the SDK's Resource.create does: SDK identity, then
    OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME, then the proxy's own names."""
    from proxy import __version__

    merged = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "pilotfish",
        "telemetry.sdk.version": __version__,
    }
    merged.update(_pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    service = environ.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        merged["service.name"] = service
    merged.update(ours)
    return merged


def _setting(environ: Mapping[str, str], name: str) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>, else ""."""
    value = environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}", "").strip()
    return value or environ.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip()


class OtlpHttpExporter:
    """POSTs encoded ExportTraceServiceRequests; blocking, so it runs off the event loop."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not endpoint:
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
            endpoint = base.rstrip("/") + TRACES_PATH
        url = urlsplit(endpoint)
        self.endpoint = endpoint
        self.tls = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.tls else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        netloc = url.netloc.rpartition("@")[2]
        try:
            self.timeout = float(_setting(environ, "TIMEOUT") or DEFAULT_TIMEOUT)
        except ValueError:
            self.timeout = DEFAULT_TIMEOUT
        compression = _setting(environ, "COMPRESSION").lower()
        self.compression = compression if compression in ("gzip", "deflate") else ""
        headers = {
            "Host": netloc,
            "Content-Type": "application/x-protobuf",
            "User-Agent": "pilotfish-otlp",
            "Connection": "close",
        }
        if self.compression:
            headers["Content-Encoding"] = self.compression
        headers.update(_pairs(_setting(environ, "HEADERS")))
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.certificate = _setting(environ, "CERTIFICATE") or None
        self.client_certificate = _setting(environ, "CLIENT_CERTIFICATE") or None
        self.client_key = _setting(environ, "CLIENT_KEY") or None

    def export(self, body: bytes, deadline: float) -> bool:
        """True when the collector took the batch; retried with backoff while time remains."""
        if self.compression == "gzip":
            packer = zlib.compressobj(wbits=31)  # gzip container
            body = packer.compress(body) + packer.flush()
        elif self.compression == "deflate":
            body = zlib.compress(body)
        delay = 1.0
        while True:
            status = self._post(body, max(0.1, min(self.timeout, deadline - time.monotonic())))
            if 200 <= status < 300:
                return True
            retryable = status == 0 or status in _RETRYABLE
            if not retryable or time.monotonic() + delay >= deadline:
                return False
            time.sleep(delay)
            delay *= 2

    def _post(self, body: bytes, timeout: float) -> int:
        """The response's status code, 0 when there was none (refused, reset, timed out)."""
        try:
            with socket.create_connection((self.host, self.port), timeout) as raw:
                sock = self._secure(raw) if self.tls else raw
                head = (
                    f"POST {self.path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n"
                )
                sock.sendall(head.encode("latin-1") + body)
                received = b""
                while b"\r\n" not in received and len(received) < _MAX_RESPONSE:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                status_line = received.partition(b"\r\n")[0].split()
                if len(status_line) < 2 or not status_line[1].isdigit():
                    return 0
                return int(status_line[1])
        except OSError:  # ssl.SSLError is an OSError too
            return 0

    def _secure(self, raw: socket.socket) -> socket.socket:
        import ssl  # already loaded by asyncio; imported here for the https case only

        context = ssl.create_default_context(cafile=self.certificate)
        if self.client_certificate:
            context.load_cert_chain(self.client_certificate, self.client_key)
        return context.wrap_socket(raw, server_hostname=self.host)
