"""HPACK Huffman decoding (RFC 7541 section 5.2), compiled: hpack's own state machine.

hpack decodes Huffman-coded literals a nibble at a time through a state table, in
Python: two table lookups, two tuple unpackings and two flag tests per input byte. A
peer that Huffman-codes its literals (nginx and Envoy for response fields such as
`date` and `server`, curl and browsers for request fields) made that loop about a fifth
of an HTTP/2 upstream's CPU per request. This is the same walk over hpack's own table
(`hpack.huffman_table.HUFFMAN_TABLE`, split into three byte strings at import), with the
same results and the same errors, compiled (`proxy/_compiled.py`). `h2_hpack.py` puts
it in hpack's decoder; tests/h2/test_huffman.py checks it against hpack's function.
"""

from __future__ import annotations

from typing import Final

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import (
    HUFFMAN_COMPLETE,
    HUFFMAN_EMIT_SYMBOL,
    HUFFMAN_FAIL,
    HUFFMAN_TABLE,
)

# The table's columns as bytes (every state, flag set and symbol fits in one): indexing
# bytes is a C array read in the compiled build.
_STATE: Final = bytes(state for state, _, _ in HUFFMAN_TABLE)
_FLAGS: Final = bytes(flags for _, flags, _ in HUFFMAN_TABLE)
_SYMBOL: Final = bytes(symbol for _, _, symbol in HUFFMAN_TABLE)
# Final: the compiled build reads them as C statics, not module-dict lookups.
_COMPLETE: Final[int] = HUFFMAN_COMPLETE
_EMIT: Final[int] = HUFFMAN_EMIT_SYMBOL
_FAIL: Final[int] = HUFFMAN_FAIL


def decode_huffman(huffman_string: bytes | bytearray | memoryview | None) -> bytes:
    """hpack.huffman_table.decode_huffman: the decoded bytes, or HPACKDecodingError."""
    if not huffman_string:
        return b""
    data: bytes = bytes(huffman_string)
    states, all_flags, symbols = _STATE, _FLAGS, _SYMBOL
    decoded: list[int] = []  # a list of ints, not a bytearray: C appends when compiled
    state = 0
    flags = 0
    for i in range(len(data)):
        byte = data[i]
        index = (state << 4) | (byte >> 4)
        flags = all_flags[index]
        if flags & _FAIL:
            raise HPACKDecodingError("Invalid Huffman string")
        if flags & _EMIT:
            decoded.append(symbols[index])
        index = (states[index] << 4) | (byte & 0x0F)
        flags = all_flags[index]
        if flags & _FAIL:
            raise HPACKDecodingError("Invalid Huffman string")
        if flags & _EMIT:
            decoded.append(symbols[index])
        state = states[index]
    if not flags & _COMPLETE:
        raise HPACKDecodingError("Incomplete Huffman string")
    return bytes(decoded)
