"""The peer metadata codec against the protobuf library (the oracle), and the exchange's rules."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.load import ConfigError, build
from proxy.telemetry import peer
from proxy.telemetry.identity import UNKNOWN, Identity
from proxy.telemetry.protowire import WireError, read_fields

texts = st.text(max_size=20)
flat = st.dictionaries(texts, texts, max_size=6)
nested = st.dictionaries(texts, st.one_of(texts, flat), max_size=6)


def oracle_bytes(values: dict[str, Any]) -> bytes:
    message = struct_pb2.Struct()
    message.update(values)
    return message.SerializeToString(deterministic=True)


@given(nested)
def test_protobuf_reads_our_struct_as_the_same_message(values: dict[str, Any]) -> None:
    expected = struct_pb2.Struct()
    expected.update(values)
    ours = struct_pb2.Struct()
    ours.ParseFromString(peer.encode_struct(values))
    assert ours == expected


def test_map_keys_are_in_byte_order() -> None:
    """As protobuf's C++ deterministic serializer (Envoy's, Istio's) sorts them, so one
    identity is always the same bytes. (Python's upb backend orders a key after the
    longer keys it prefixes, so the bytes are compared with C++'s order, not upb's.)"""
    raw = peer.encode_struct({"b": "", "ab": "", "a": "", "": "", "B": "", "é": ""})
    keys = [read_fields(entry)[0][2] for _, _, entry in read_fields(raw)]  # type: ignore[arg-type]
    assert keys == [b"", b"B", b"a", b"ab", b"b", "é".encode()]


@given(nested)
def test_struct_decoding_reads_what_protobuf_wrote(values: dict[str, Any]) -> None:
    assert peer.decode_struct(oracle_bytes(values)) == values


def test_values_that_are_not_strings_or_structs_are_skipped() -> None:
    raw = oracle_bytes(
        {"n": 1.5, "b": True, "z": None, "l": ["a"], "s": "x", "deep": {"a": {"b": "c"}, "d": "e"}}
    )
    # Two levels are read (the metadata and its LABELS); deeper Structs are not.
    assert peer.decode_struct(raw) == {"s": "x", "deep": {"d": "e"}}


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_valueerror(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        peer.decode_struct(data)
    # As header values, base64 or not: an identity or None, never an exception.
    for value in (base64.b64encode(data), data):
        decoded = peer.decode_value(value)
        assert decoded is None or isinstance(decoded, Identity)


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05ab",
        b"\x08",
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        b"\x0b",
        b"\x00\x01",
        b"\x0d\x01\x02",
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        read_fields(data)


def test_our_metadata_reads_back_as_our_identity() -> None:
    ours = Identity.from_env(
        {
            "POD_NAME": "reviews-v2-7d4-x",
            "POD_NAMESPACE": "shop",
            "PILOTFISH_WORKLOAD": "reviews-v2",
            "PILOTFISH_APP": "reviews",
            "PILOTFISH_VERSION": "v2",
            "PILOTFISH_CLUSTER_ID": "east",
        }
    )
    exchange = peer.PeerExchange(ours, {"INSTANCE_IP": "10.0.0.7"}, enabled=True)
    assert exchange.sends
    (id_name, node), (name, value) = exchange.ours
    assert (id_name, name) == (peer.METADATA_ID, peer.METADATA)
    assert node == b"sidecar~10.0.0.7~reviews-v2-7d4-x.shop~shop.svc.cluster.local"
    # Istio's own reader: base64 of a Struct with its field names.
    message = struct_pb2.Struct()
    message.ParseFromString(base64.b64decode(value))
    as_dict = dict(message)
    assert as_dict["WORKLOAD_NAME"] == "reviews-v2" and as_dict["NAMESPACE"] == "shop"
    assert dict(as_dict["LABELS"])["service.istio.io/canonical-name"] == "reviews"
    assert peer.decode_value(value) == ours
    assert exchange.peer(value) == ours.label_values()


def test_what_a_peer_leaves_out_is_unknown() -> None:
    value = base64.b64encode(
        oracle_bytes({"WORKLOAD_NAME": "w", "LABELS": {"app.kubernetes.io/name": "shop-ui"}})
    )
    got = peer.decode_value(value)
    assert got is not None
    assert (got.workload, got.app, got.namespace, got.canonical_revision) == (
        "w",
        "shop-ui",
        UNKNOWN,
        UNKNOWN,
    )
    # Istio writes padding; a value without it is read as well.
    assert peer.decode_value(value.rstrip(b"=")) == got


def test_oversized_values_are_not_decoded() -> None:
    value = base64.b64encode(oracle_bytes({"WORKLOAD_NAME": "w" * peer.MAX_VALUE}))
    assert peer.decode_value(value) is None


def test_take_removes_both_headers_and_keeps_the_rest() -> None:
    exchange = peer.PeerExchange(Identity(), {}, enabled=True)
    value = base64.b64encode(oracle_bytes({"WORKLOAD_NAME": "w"}))
    headers = [(b"host", b"a"), (peer.METADATA_ID, b"id"), (b"x", b"1"), (peer.METADATA, value)]
    kept, labels = exchange.take(headers)
    assert kept == [(b"host", b"a"), (b"x", b"1")]
    assert labels is not None and labels[0] == "w"
    plain = [(b"host", b"a")]
    assert exchange.take(plain) == (plain, None)
    assert exchange.take(plain)[0] is plain  # nothing copied when there is nothing to take
    # The same value again is the same labels, from the cache.
    assert exchange.take(headers)[1] is labels


def test_who_is_told() -> None:
    anonymous = peer.PeerExchange(Identity(), {}, enabled=True)
    assert not anonymous.sends  # nothing to say: our workload is unknown
    named = Identity(workload="web", pod="web-0", namespace="shop")
    assert not peer.PeerExchange(named, {}, enabled=False).sends
    exchange = peer.PeerExchange(named, {}, enabled=True)
    # 100.64.0.0/10 is the shared (carrier-grade NAT) range some clusters give pods.
    for inside in (
        "100.64.3.4",
        "10.96.0.10",
        "172.20.1.1",
        "192.168.1.1",
        "127.0.0.1",
        "198.18.0.2",
        "fd00::1",
        "::1",
    ):
        assert exchange.sends_to((inside, 80)), inside
    # Addresses outside the cluster never learn our pod's names.
    for outside in ("8.8.8.8", "2001:4860:4860::8888", "example.com"):
        assert not exchange.sends_to((outside, 443)), outside
    assert not exchange.sends_to(None)


def test_config_switch() -> None:
    assert build(environ={"PILOTFISH_PEER_METADATA": "off"}).telemetry.peer_metadata is False
    assert build(environ={}).telemetry.peer_metadata is True
    with pytest.raises(ConfigError, match=r"telemetry\.peer_metadata"):
        build(environ={"PILOTFISH_PEER_METADATA": "sometimes"})


def test_take_keeps_order_when_the_two_are_apart() -> None:
    exchange = peer.PeerExchange(Identity(), {}, enabled=True)
    value = base64.b64encode(oracle_bytes({"WORKLOAD_NAME": "w"}))
    headers = [
        (peer.METADATA, value),
        (b"a", b"1"),
        (b"b", b"2"),
        (peer.METADATA_ID, b"id"),
        (b"c", b"3"),
    ]
    kept, labels = exchange.take(headers)
    assert kept == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert all(pair is original for pair, original in zip(kept, headers[1:3], strict=False))
    assert labels is not None and labels[0] == "w"
    # One of the two alone is taken out too.
    assert exchange.take([(b"a", b"1"), (peer.METADATA_ID, b"id")]) == ([(b"a", b"1")], None)
