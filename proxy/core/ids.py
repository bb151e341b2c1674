"""Random ids for every request, made a batch at a time: X-Request-Id and trace context.

A batch is one `os.urandom` (one getrandom() syscall) with one random byte per hex
character, each turned into a digit by its low four bits (one `translate`, about nine
instructions a digit; neither `binascii.hexlify` nor CPython's own translate, called by
name, measured cheaper); the fixed characters are set with strided copies, and an id is
one slice of the batch at a moving offset. Formatting one UUID the usual way (hex, six
slices, a format) cost about 3,900 instructions, a traceparent (slices, an f-string, an
encode) about 1,200; cutting each batch into a list of ids up front, about 900 an id;
this, about 750.

Ids made before a fork would be handed out by every child, so each child starts with
none.
"""

from __future__ import annotations

import os
from typing import Final

_BATCH: Final = 64
_DASHES: Final = b"-" * _BATCH
_ZEROS: Final = b"0" * _BATCH
_FOURS: Final = b"4" * _BATCH
_HEX_DIGIT: Final = bytes.maketrans(
    bytes(range(256)), bytes(b"0123456789abcdef"[byte & 15] for byte in range(256))
)
# RFC 9562 variant bits 10: the digit after the third dash is 8, 9, a or b.
_VARIANT_DIGIT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")

# RFC 9562 UUIDv4 text: version nibble 4, variant bits 10.
_UUID_LENGTH: Final = 36
# W3C traceparent without its last character: "00-" + 32 hex digits (trace id) + "-" +
# 16 (span id) + "-0". The last is the sampled flag, decided per request.
TRACE_CONTEXT_LENGTH: Final = 54


class _Batch:
    """Ids of one length cut from `text`, the next one starting at `at`."""

    def __init__(self) -> None:
        self.text = b""
        self.at = 0

    def spend(self) -> None:
        """Nothing left: the next id starts a new batch (after a fork, in the child)."""
        self.text = b""
        self.at = 0


_request_ids: Final = _Batch()
_contexts: Final = _Batch()

os.register_at_fork(after_in_child=_request_ids.spend)
os.register_at_fork(after_in_child=_contexts.spend)


def _hex_digits(count: int) -> bytearray:
    """`count` random lower-case hex digits."""
    return bytearray(os.urandom(count).translate(_HEX_DIGIT))


def new_request_id() -> bytes:
    """A random UUIDv4 for X-Request-Id (uuid4 makes a syscall per id)."""
    batch = _request_ids
    at = batch.at
    if at == len(batch.text):
        text = _hex_digits(_UUID_LENGTH * _BATCH)
        for dash in (8, 13, 18, 23):
            text[dash::_UUID_LENGTH] = _DASHES
        text[14::_UUID_LENGTH] = _FOURS
        text[19::_UUID_LENGTH] = bytes(text[19::_UUID_LENGTH]).translate(_VARIANT_DIGIT)
        batch.text = bytes(text)
        at = 0
    end = at + _UUID_LENGTH
    batch.at = end
    return batch.text[at:end]


def new_trace_context() -> bytes:
    """A new trace id and span id as a traceparent missing its sampled digit.

    Append b"1" (sampled) or b"0" for the header; `trace_id` and `span_id` read the
    ids back as text. A zero id is invalid (W3C), and its chance here is 2**-64.
    """
    batch = _contexts
    at = batch.at
    if at == len(batch.text):
        text = _hex_digits(TRACE_CONTEXT_LENGTH * _BATCH)
        for offset, fill in ((0, _ZEROS), (1, _ZEROS), (2, _DASHES), (35, _DASHES), (52, _DASHES)):
            text[offset::TRACE_CONTEXT_LENGTH] = fill
        text[53::TRACE_CONTEXT_LENGTH] = _ZEROS  # not sampled, unless the flag is appended
        batch.text = bytes(text)
        at = 0
    end = at + TRACE_CONTEXT_LENGTH
    batch.at = end
    return batch.text[at:end]


def trace_id(context: bytes) -> str:
    """The trace id of a traceparent (or of a new_trace_context), as 32 hex digits."""
    return context[3:35].decode("ascii")


def span_id(context: bytes) -> str:
    """The span id (parent-id field) of a traceparent, as 16 hex digits."""
    return context[36:52].decode("ascii")
