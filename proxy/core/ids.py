"""Random ids for every request, made a batch at a time: X-Request-Id and trace context.

A batch is one `os.urandom` (one getrandom() syscall) with one random byte per hex
character, each turned into a digit by its low four bits (one `translate`); the fixed
characters are set with strided copies, and an id is one slice of the batch. Formatting
one UUID the usual way (hex, six slices, a format) cost about 3,900 instructions, a
traceparent (slices, an f-string, an encode) about 1,200.

Ids made before a fork would be handed out by every child, so each child starts with
none.
"""

from __future__ import annotations

import os
from typing import Final

_BATCH: Final = 64
_HEX_DIGIT: Final = bytes.maketrans(
    bytes(range(256)), bytes(b"0123456789abcdef"[byte & 15] for byte in range(256))
)
_VARIANT_DIGIT: Final = bytes.maketrans(
    bytes(range(256)), bytes(b"89ab"[byte & 3] for byte in range(256))
)
_DASHES: Final = b"-" * _BATCH
_ZEROS: Final = b"0" * _BATCH
_FOURS: Final = b"4" * _BATCH

# RFC 9562 UUIDv4 text: version nibble 4, variant bits 10.
_UUID_LENGTH: Final = 36
_ready_request_ids: Final[list[bytes]] = []

# W3C traceparent without its last character: "00-" + 32 hex digits (trace id) + "-" +
# 16 (span id) + "-0". The last is the sampled flag, decided per request.
TRACE_CONTEXT_LENGTH: Final = 54
_ready_contexts: Final[list[bytes]] = []

os.register_at_fork(after_in_child=_ready_request_ids.clear)
os.register_at_fork(after_in_child=_ready_contexts.clear)


def new_request_id() -> bytes:
    """A random UUIDv4 for X-Request-Id (uuid4 makes a syscall per id)."""
    if not _ready_request_ids:
        random_bytes = os.urandom(_UUID_LENGTH * _BATCH)
        text = bytearray(random_bytes.translate(_HEX_DIGIT))
        for dash in (8, 13, 18, 23):
            text[dash::_UUID_LENGTH] = _DASHES
        text[14::_UUID_LENGTH] = _FOURS
        text[19::_UUID_LENGTH] = random_bytes[19::_UUID_LENGTH].translate(_VARIANT_DIGIT)
        _ready_request_ids.extend(_cut(bytes(text), _UUID_LENGTH))
    return _ready_request_ids.pop()


def new_trace_context() -> bytes:
    """A new trace id and span id as a traceparent missing its sampled digit.

    Append b"1" (sampled) or b"0" for the header; `trace_id` and `span_id` read the
    ids back as text. A zero id is invalid (W3C), and its chance here is 2**-64.
    """
    if not _ready_contexts:
        text = bytearray(os.urandom(TRACE_CONTEXT_LENGTH * _BATCH).translate(_HEX_DIGIT))
        for at, fill in ((0, _ZEROS), (1, _ZEROS), (2, _DASHES), (35, _DASHES), (52, _DASHES)):
            text[at::TRACE_CONTEXT_LENGTH] = fill
        text[53::TRACE_CONTEXT_LENGTH] = _ZEROS  # not sampled, unless the flag is appended
        _ready_contexts.extend(_cut(bytes(text), TRACE_CONTEXT_LENGTH))
    return _ready_contexts.pop()


def trace_id(context: bytes) -> str:
    """The trace id of a traceparent (or of a new_trace_context), as 32 hex digits."""
    return context[3:35].decode("ascii")


def span_id(context: bytes) -> str:
    """The span id (parent-id field) of a traceparent, as 16 hex digits."""
    return context[36:52].decode("ascii")


def _cut(batch: bytes, length: int) -> list[bytes]:
    # range(_BATCH) compiles to a native loop; a range with a variable step does not.
    return [batch[index * length : (index + 1) * length] for index in range(_BATCH)]
