"""Istio's HTTP metadata exchange: which workload is at the other end of a request.

Without mTLS a sidecar cannot see who called it or who answered. Istio's sidecars tell
each other in two headers (the `istio_headers` method of istio/proxy's peer_metadata
filter), and pilotfish speaks the same words, so it labels metrics correctly beside
Istio's own proxies as well as its own:

- the client's sidecar adds `x-envoy-peer-metadata-id` (its node id) and
  `x-envoy-peer-metadata` (base64 of a protobuf `google.protobuf.Struct`) to each
  outbound request;
- the server's sidecar reads and removes them (the app never sees them), labels the
  request's `source_*` with the caller's workload, and answers with its own pair, but
  only to a caller that sent one;
- the client's sidecar reads and removes that answer: its `destination_*` labels.

The Struct holds Istio's node metadata names: NAME (the pod), NAMESPACE, WORKLOAD_NAME,
CLUSTER_ID and LABELS (app, version, service.istio.io/canonical-name and -revision).
A peer says the same thing on every request, so each distinct value is decoded once and
its label values kept (a bounded cache).

Nothing here is trusted for security: the headers are plaintext and a client may write
them. They feed labels, as in Istio without mTLS; principals stay `unknown`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from typing import Final, cast

from proxy.config import env as env_names
from proxy.core.headers import PEER_METADATA, PEER_METADATA_ID
from proxy.core.messages import Headers
from proxy.telemetry.identity import UNKNOWN, Identity
from proxy.telemetry.protowire import LENGTH_DELIMITED, WireError, field, read_fields

METADATA_ID: Final = PEER_METADATA_ID
METADATA: Final = PEER_METADATA
_ID_SIZE: Final = len(METADATA_ID)
_METADATA_SIZE: Final = len(METADATA)

# Istio's node metadata fields and workload labels (istio/proxy metadata_object.h).
_NAME = "NAME"
_NAMESPACE = "NAMESPACE"
_WORKLOAD = "WORKLOAD_NAME"
_CLUSTER = "CLUSTER_ID"
_LABELS = "LABELS"
_APP_LABELS = ("app", "app.kubernetes.io/name")
_VERSION_LABELS = ("version", "app.kubernetes.io/version")
_CANONICAL_NAME = "service.istio.io/canonical-name"
_CANONICAL_REVISION = "service.istio.io/canonical-revision"

# Value.kind numbers of struct.proto.
_STRING_VALUE = 3
_STRUCT_VALUE = 5

# A peer's value is a few hundred bytes; one far larger is not worth decoding.
MAX_VALUE: Final = 8192
# Distinct peer values remembered per worker; the cache starts over when full.
MAX_PEERS: Final = 1024

StructValue = str | Mapping[str, "StructValue"]


def encode_struct(values: Mapping[str, StructValue]) -> bytes:
    """A `google.protobuf.Struct` of strings and nested Structs, map keys sorted as a
    deterministic protobuf serializer writes them (so equal metadata is equal bytes)."""
    entries = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, str):
            encoded = field(_STRING_VALUE, value.encode("utf-8"))
        else:
            encoded = field(_STRUCT_VALUE, encode_struct(value))
        # map<string, Value> fields = 1: each entry a message {key = 1; value = 2}.
        entries.append(field(1, field(1, key.encode("utf-8")) + field(2, encoded)))
    return b"".join(entries)


def decode_struct(data: bytes, depth: int = 2) -> dict[str, StructValue]:
    """The string and Struct values of a `google.protobuf.Struct`, nested `depth` deep.

    Numbers, booleans, nulls, lists and deeper Structs are skipped (Istio's labels are
    strings); malformed bytes or keys that are not UTF-8 raise ValueError.
    """
    out: dict[str, StructValue] = {}
    for number, kind, entry in read_fields(data):
        if number != 1 or kind != LENGTH_DELIMITED:
            continue  # unknown fields are skipped, as protobuf does
        assert isinstance(entry, bytes)
        key = ""
        value: bytes = b""
        for entry_number, entry_kind, part in read_fields(entry):
            if entry_kind != LENGTH_DELIMITED or not isinstance(part, bytes):
                continue
            if entry_number == 1:
                key = part.decode("utf-8")
            elif entry_number == 2:
                value = part
        decoded: StructValue | None = None
        for value_number, value_kind, part in read_fields(value):
            if value_kind != LENGTH_DELIMITED or not isinstance(part, bytes):
                continue
            if value_number == _STRING_VALUE:
                decoded = part.decode("utf-8")
            elif value_number == _STRUCT_VALUE and depth > 1:
                decoded = decode_struct(part, depth - 1)
        if decoded is not None:
            out[key] = decoded  # a repeated key: the last wins, as for a protobuf map
    return out


def metadata_of(identity: Identity) -> dict[str, StructValue]:
    """Our node metadata as Istio's sidecars send theirs (what is unknown is left out)."""
    labels = {
        "app": identity.app,
        "version": identity.version,
        _CANONICAL_NAME: identity.canonical_service,
        _CANONICAL_REVISION: identity.canonical_revision,
    }
    metadata: dict[str, StructValue] = {
        _NAME: identity.pod,
        _NAMESPACE: identity.namespace,
        _WORKLOAD: identity.workload,
        _CLUSTER: identity.cluster,
    }
    metadata = {key: value for key, value in metadata.items() if value != UNKNOWN}
    metadata[_LABELS] = {key: value for key, value in labels.items() if value != UNKNOWN}
    return metadata


def identity_of(metadata: Mapping[str, StructValue]) -> Identity:
    """A peer's identity from its node metadata; what it did not say is `unknown`."""

    def text(values: Mapping[str, StructValue], *names: str) -> str:
        for name in names:
            value = values.get(name)
            if isinstance(value, str) and value:
                return value
        return UNKNOWN

    raw_labels = metadata.get(_LABELS)
    labels = raw_labels if isinstance(raw_labels, Mapping) else {}
    return Identity(
        pod=text(metadata, _NAME),
        namespace=text(metadata, _NAMESPACE),
        workload=text(metadata, _WORKLOAD),
        app=text(labels, *_APP_LABELS),
        version=text(labels, *_VERSION_LABELS),
        canonical_service=text(labels, _CANONICAL_NAME),
        canonical_revision=text(labels, _CANONICAL_REVISION),
        cluster=text(metadata, _CLUSTER),
    )


def node_id(identity: Identity, environ: Mapping[str, str]) -> str:
    """Istio's node id shape: `sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local`."""
    address = environ.get(env_names.INSTANCE_IP, "").strip() or UNKNOWN
    namespace = identity.namespace
    return f"sidecar~{address}~{identity.pod}.{namespace}~{namespace}.svc.cluster.local"


def decode_value(value: bytes) -> Identity | None:
    """The identity in an `x-envoy-peer-metadata` value, or None if it is not one (an
    empty value names nobody, as for Istio)."""
    if not value or len(value) > MAX_VALUE:
        return None
    try:
        # Istio writes padded base64 and reads it with or without the padding.
        raw = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
        return identity_of(decode_struct(raw))
    except (binascii.Error, WireError, UnicodeDecodeError, ValueError):
        return None


def _sendable(destination: tuple[str, int] | None) -> bool:
    """Whether a destination is inside the cluster, as far as an address can say: any
    address that is not a global one (private, shared, loopback, link-local, ...). Our
    pod's names are not sent to the internet."""
    if destination is None:
        return False
    try:
        address = ipaddress.ip_address(destination[0])
    except ValueError:
        return False  # a name, not an address: explicit-mode upstreams are addresses
    return not address.is_global


def _is_exchange_field(name: bytes) -> bool:
    size = len(name)
    return (size == _ID_SIZE and name == METADATA_ID) or (
        size == _METADATA_SIZE and name == METADATA
    )


class PeerExchange:
    """One worker's side of the exchange: our two headers, and the peers seen so far."""

    def __init__(self, identity: Identity, environ: Mapping[str, str], enabled: bool) -> None:
        # Sent only when we know who we are (the injector's env names the workload):
        # headers saying `unknown` would tell the peer nothing.
        self.sends = enabled and identity.workload != UNKNOWN
        encoded = base64.b64encode(encode_struct(metadata_of(identity)))
        self.ours: Headers = [
            (METADATA_ID, node_id(identity, environ).encode("utf-8", "replace")),
            (METADATA, encoded),
        ]
        self._peers: dict[bytes, tuple[str, ...] | None] = {}
        self._sendable: dict[tuple[str, int] | None, bool] = {}
        self._last_destination: tuple[str, int] | None = None
        self._last_sendable = False
        self._last_value = b""
        self._last_peer: tuple[str, ...] | None = None

    def sends_to(self, destination: tuple[str, int] | None) -> bool:
        if not self.sends:
            return False
        if destination is self._last_destination:
            # Requests on one connection, and in explicit mode on all, share the object.
            return self._last_sendable
        known = self._sendable.get(destination)
        if known is None:
            if len(self._sendable) >= MAX_PEERS:
                self._sendable.clear()
            known = self._sendable[destination] = _sendable(destination)
        self._last_destination = destination
        self._last_sendable = known
        return known

    def take(self, headers: Headers) -> tuple[Headers, tuple[str, ...] | None]:
        """`headers` without the exchange's two, and the label values of the peer they
        named (None when they name none): the same list when neither is there."""
        # Names by length, then by value (a set lookup per field cost about 140
        # instructions); pairs read as objects, as a typed pair would be unboxed and then
        # boxed into a new tuple for the kept list.
        items = cast("list[object]", headers)
        value: bytes | None = None
        first = -1
        last = -1
        count = 0
        for index in range(len(items)):
            name = cast("tuple[bytes, bytes]", items[index])[0]
            if _is_exchange_field(name):
                if name == METADATA:
                    value = cast("tuple[bytes, bytes]", items[index])[1]
                if first < 0:
                    first = index
                last = index
                count += 1
        if not count:
            return headers, None
        if last - first + 1 == count:  # one run: a sidecar puts the two together
            kept = items[:first] + items[last + 1 :]
        else:
            kept = [
                item
                for item in items
                if not _is_exchange_field(cast("tuple[bytes, bytes]", item)[0])
            ]
        return cast(Headers, kept), (None if value is None else self.peer(value))

    def peer(self, value: bytes) -> tuple[str, ...] | None:
        if value == self._last_value:
            # The caller of the last request again, the usual case: comparing the bytes
            # costs less than hashing a new copy of them for the dict.
            return self._last_peer
        peers = self._peers
        if value in peers:
            labels = peers[value]
        else:
            identity = decode_value(value)
            labels = None if identity is None else identity.label_values()
            if len(peers) >= MAX_PEERS:
                peers.clear()
            peers[value] = labels
        self._last_value = value
        self._last_peer = labels
        return labels
