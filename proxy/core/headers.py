"""Header policy at the proxy hop: hop-by-hop removal, X-Forwarded-*, X-Request-Id.

Pure functions over neutral header lists; the request id generator is passed in.
"""

from __future__ import annotations

from typing import Final, cast

from proxy.core.ids import new_request_id
from proxy.core.messages import (
    ANY_FIELDS,
    FORWARDING_FIELDS,
    HOP_BY_HOP_FIELDS,
    PEER_FIELDS,
    TRACE_FIELDS,
    Headers,
)

# RFC 9110 section 7.6.1 (plus the legacy Proxy-Connection): meaningful for one hop
# only, so never forwarded. Transfer-Encoding is re-derived by the outgoing codec.
HOP_BY_HOP: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade")
)


# The trace context fields the telemetry reads and rewrites (W3C and B3).
TRACE_CONTEXT_FIELDS: Final = frozenset(
    (
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
    )
)
_FORWARDING: Final = (b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto")
# The fields Istio's sidecars tell each other who they are in (proxy.telemetry.peer).
PEER_METADATA_ID: Final = b"x-envoy-peer-metadata-id"
PEER_METADATA: Final = b"x-envoy-peer-metadata"
PEER_METADATA_FIELDS: Final = frozenset((PEER_METADATA_ID, PEER_METADATA))

# The fields a codec notes while parsing (messages.HOP_BY_HOP_FIELDS and friends), by name.
NOTED_FIELDS: Final[dict[bytes, int]] = {
    **dict.fromkeys(HOP_BY_HOP, HOP_BY_HOP_FIELDS),
    **dict.fromkeys(_FORWARDING, FORWARDING_FIELDS),
    **dict.fromkeys(TRACE_CONTEXT_FIELDS, TRACE_FIELDS),
    **dict.fromkeys(PEER_METADATA_FIELDS, PEER_FIELDS),
}

# Connection options that are not field names (RFC 9112 section 9.6, 9110 section 7.8).
_CONNECTION_OPTIONS: Final = frozenset((b"upgrade", b"close", b"keep-alive"))
# Fields a `Connection` header may not make hop-by-hop: an HTTP/1.1 request needs its
# Host (RFC 9112 section 3.2), and a sender could otherwise strip it on the way.
_NEVER_LISTED: Final = _CONNECTION_OPTIONS | {b"host"}
# Whole Connection values that name no field, as servers usually send them (the HTTP/1
# codecs lift these into `keep_alive`, see messages.RequestHead).
PLAIN_CONNECTION_VALUES: Final = frozenset((b"keep-alive", b"close", b"Keep-Alive", b"Close"))


def is_plain_connection_value(value: bytes) -> bool:
    """`value in PLAIN_CONNECTION_VALUES`, by comparisons: compiled, about 40
    instructions where the set lookup took about 250. Every codec asks this, so the set
    stays the declaration and this the one test of it."""
    return (
        value == b"keep-alive" or value == b"close" or value == b"Keep-Alive" or value == b"Close"
    )


def _connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def strip_hop_by_hop(headers: Headers, keep_upgrade: bool = False) -> Headers:
    """Headers without hop-by-hop fields, including any that `Connection` names.

    With `keep_upgrade` (an Upgrade request or a 101 answer) `Upgrade` and
    `Connection: upgrade` pass, since the handshake must reach the other side.
    One pass in the usual cases: nothing hop-by-hop, or a plain `Connection:
    keep-alive` (nginx's on every response) that names no field.
    """
    kept: Headers = []
    upgrades: Headers = []
    listed: set[bytes] | None = None
    for pair in headers:
        name = pair[0]
        if name not in HOP_BY_HOP:
            kept.append(pair)
        elif name == b"connection":
            value = pair[1]
            if not is_plain_connection_value(value):
                tokens = _connection_tokens(value) - _NEVER_LISTED
                if tokens:
                    listed = tokens if listed is None else listed | tokens
        elif keep_upgrade and name == b"upgrade":
            upgrades.append(pair)
    if keep_upgrade:
        kept += upgrades
    if listed is not None:
        kept = [pair for pair in kept if pair[0] not in listed]
    if keep_upgrade:
        kept.append((b"connection", b"upgrade"))
    return kept


def forwardable(headers: Headers, fields: int, keep_upgrade: bool = False) -> Headers:
    """strip_hop_by_hop, or `headers` itself when the codec noted no hop-by-hop field."""
    if fields & HOP_BY_HOP_FIELDS or keep_upgrade:
        return strip_hop_by_hop(headers, keep_upgrade)
    return headers


class _ForwardedFields:
    """The X-Forwarded-For and X-Forwarded-Proto fields added last, while they repeat.

    Every request of a client (and, in a sidecar, most clients: the workload on
    loopback) gets the same two, so the pairs are made once and handed on as the same
    objects: typed `object`, as a `tuple[bytes, bytes]` would be unboxed by mypyc and
    boxed into a new tuple wherever it is stored.
    """

    __slots__ = ("client_address", "for_field", "proto_field", "scheme")

    def __init__(self) -> None:
        self.client_address = b""
        self.scheme = b""
        self.for_field: object = (b"x-forwarded-for", b"")
        self.proto_field: object = (b"x-forwarded-proto", b"")

    def made_for(self, client_address: bytes, scheme: bytes) -> _ForwardedFields:
        if client_address != self.client_address:
            self.client_address = client_address
            self.for_field = (b"x-forwarded-for", client_address)
        if scheme != self.scheme:
            self.scheme = scheme
            self.proto_field = (b"x-forwarded-proto", scheme)
        return self


_FORWARDED_FIELDS: Final = _ForwardedFields()


def forward_request_headers(
    headers: Headers,
    client_address: bytes,
    scheme: bytes,
    upgrade: bool = False,
    fields: int = ANY_FIELDS,
) -> tuple[Headers, bytes]:
    """Request headers as sent upstream, and the request id they carry.

    X-Forwarded-For gets the client's address appended (RFC 7239's older cousin, as
    Envoy does); X-Forwarded-Proto is set when absent; X-Request-Id is kept when the
    caller sent one (so it survives every hop) and generated otherwise
    (proxy.core.ids). `fields` is what the codec noted (messages.HOP_BY_HOP_FIELDS...):
    what it rules out is not looked for.
    """
    forwarded = forwardable(headers, fields, upgrade)
    if not fields & FORWARDING_FIELDS:
        request_id = new_request_id()
        same = _FORWARDED_FIELDS.made_for(client_address, scheme)
        added: list[object] = [same.for_field, same.proto_field, (b"x-request-id", request_id)]
        if forwarded is headers:  # the request keeps its own list
            return headers + cast(Headers, added), request_id
        forwarded += cast(Headers, added)
        return forwarded, request_id
    if forwarded is headers:
        forwarded = list(headers)  # the request keeps its own list; this one grows
    request_id = b""
    xff_index = -1
    has_proto = False
    id_index = -1
    stray_ids = False
    for index, (name, value) in enumerate(forwarded):
        if name == b"x-request-id":
            if request_id or not value:
                stray_ids = True  # an empty one, or a second: only the first is kept
            else:
                request_id = value
                id_index = index
        elif name == b"x-forwarded-for":
            xff_index = index
        elif name == b"x-forwarded-proto":
            has_proto = True
    if xff_index >= 0:
        forwarded[xff_index] = (
            b"x-forwarded-for",
            forwarded[xff_index][1] + b", " + client_address,
        )
    else:
        forwarded.append((b"x-forwarded-for", client_address))
    if not has_proto:
        forwarded.append((b"x-forwarded-proto", scheme))
    if stray_ids:
        forwarded = [
            pair
            for index, pair in enumerate(forwarded)
            if index == id_index or pair[0] != b"x-request-id"
        ]
        if request_id:
            return forwarded, request_id
    if not request_id:
        request_id = new_request_id()
        forwarded.append((b"x-request-id", request_id))
    return forwarded, request_id


def header_value(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
