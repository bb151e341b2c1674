"""Protocol Buffers wire format, the little of it the telemetry writes and reads by hand.

Two messages cross the wire without the protobuf runtime (about 13 MB of resident memory
a worker with its generated classes): OTLP trace exports (`otlp.py`, written) and the
peer metadata Istio's sidecars exchange in headers (`peer.py`, written and read). The
encoding is https://protobuf.dev/programming-guides/encoding/: fields are (number, wire
type) tags followed by a varint, a fixed-width value or a length-prefixed payload.
"""

from __future__ import annotations

from typing import Final

# Wire types.
VARINT: Final = 0
FIXED64: Final = 1
LENGTH_DELIMITED: Final = 2
FIXED32: Final = 5

# Varints of 0..127 are one byte: prebuilt, as most tags and lengths here are small.
SMALL: Final = [bytes((n,)) for n in range(0x80)]


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    if value < 0x80:
        return SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): string, bytes or embedded message."""
    size = len(payload)
    return varint(number << 3 | 2) + (SMALL[size] if size < 0x80 else varint(size)) + payload


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    shift = 0
    end = len(data)
    while at < end:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise WireError("varint longer than ten bytes")
    raise WireError("message ends inside a varint")


def read_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Every field of one message, in order: (number, wire type, value).

    A varint's value is an int, a length-delimited one its payload; fixed-width values
    come as their raw bytes. Groups (wire types 3 and 4, deprecated) and anything
    truncated raise WireError, as a real decoder refuses them.
    """
    out: list[tuple[int, int, int | bytes]] = []
    at = 0
    end = len(data)
    while at < end:
        tag, at = _read_varint(data, at)
        number = tag >> 3
        kind = tag & 7
        if number == 0:
            raise WireError("field number 0")
        if kind == VARINT:
            value, at = _read_varint(data, at)
            out.append((number, kind, value))
        elif kind == LENGTH_DELIMITED:
            size, at = _read_varint(data, at)
            if at + size > end:
                raise WireError("a length-delimited field runs past the message")
            out.append((number, kind, data[at : at + size]))
            at += size
        elif kind in (FIXED64, FIXED32):
            width = 8 if kind == FIXED64 else 4
            if at + width > end:
                raise WireError("a fixed-width field runs past the message")
            out.append((number, kind, data[at : at + width]))
            at += width
        else:
            raise WireError(f"wire type {kind} is not supported")
    return out
