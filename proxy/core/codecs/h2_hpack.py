"""HPACK for the HTTP/2 codec: hpack's Decoder and Encoder with a memo of whole header blocks.

A connection's header blocks repeat: a client sends the same request fields call after
call, and once the dynamic table holds them every field is a one-byte index, so the
block's bytes repeat too. Decoding such a block again gives the same fields as long as
the dynamic table has not changed since, and encoding the same field list gives the same
bytes under the same condition. The table here counts its changes (`generation`); a memo
entry is valid only for the generation it was made in, and only blocks whose coding left
the table unchanged are memoised (a block that adds to the table is not the same block
the next time). Everything else, including every error path, is hpack's own code.
The table that counts is `h2_table.py`'s. Compiled (`proxy/_compiled.py`); its classes,
subclasses of hpack's, as ordinary Python classes with C methods (`native_class=False`).
This module, `h2_table.py`, `h2_huffman.py` and `h2.py` are the only ones that import
hpack.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import hpack
import hpack.hpack
import hpack.table
from mypy_extensions import mypyc_attr

from proxy.core.codecs.h2_huffman import decode_huffman
from proxy.core.codecs.h2_table import CountingTable

# Blocks longer than this are not memoised: a connection's memo stays a few KiB, and long
# blocks (large cookies, many fields) rarely repeat byte for byte.
_MAX_BLOCK = 1024
# Distinct blocks memoised per table generation (a client with a few kinds of request).
_MAX_ENTRIES = 16
# Distinct fields memoised per table generation (the table holds about 100 at 4 KiB).
_MAX_FIELDS = 128
# Fields whose values are new on every request: never added to the dynamic table.
_PER_REQUEST = frozenset(
    (
        b"x-request-id",
        b"traceparent",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"grpc-timeout",
    )
)
# A per-request field's representation up to its value: literal without indexing, new
# name (RFC 7541 section 6.2.2), the name's length and the name.
_LITERAL_PREFIX: Final[dict[bytes, bytes]] = {
    name: b"\x00" + bytes((len(name),)) + name for name in _PER_REQUEST if len(name) < 127
}
# Fields sent as literals never indexed (RFC 7541 section 7.1.3): secrets an attacker who
# can add requests to the connection could guess byte by byte from the compressed size
# if they were in the table (CRIME), and which no intermediary may index either.
# Credentials always; cookies under `_SHORT_COOKIE` bytes, as h2's own outbound
# normalisation does (longer ones are not guessable that way); set-cookie always, as it
# carries the session secrets cookies later repeat.
_NEVER_INDEXED = frozenset((b"authorization", b"proxy-authorization", b"set-cookie"))
_SHORT_COOKIE = 20


_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(127))


def length_prefix(length: int) -> bytes:
    """hpack's encode_integer(length, 7): a string length with a 7-bit prefix (RFC 7541
    section 5.1), the Huffman bit clear."""
    if length < 127:
        return _ONE_BYTE[length]
    out = bytearray((127,))
    length -= 127
    while length >= 128:
        out.append((length & 127) + 128)
        length >>= 7
    out.append(length)
    return bytes(out)


@mypyc_attr(native_class=False)
class _QuietLog:
    """hpack logs at debug level for every header it codes (about 30 calls a request, a few
    per cent of the CPU); unless someone asked for hpack's debug logs, those calls go here."""

    @staticmethod
    def debug(*args: object, **kwargs: object) -> None:
        pass


if not logging.getLogger(hpack.hpack.__name__).isEnabledFor(logging.DEBUG):
    hpack.hpack.log = _QuietLog()  # type: ignore[assignment]
if not logging.getLogger(hpack.table.__name__).isEnabledFor(logging.DEBUG):
    hpack.table.log = _QuietLog()  # type: ignore[assignment]
# hpack's decoder calls its Huffman decoder through this module global; the compiled
# one walks the same table with the same results and errors (h2_huffman.py).
hpack.hpack.decode_huffman = decode_huffman  # type: ignore[attr-defined]


@mypyc_attr(native_class=False)
class MemoDecoder(hpack.Decoder):
    """hpack's Decoder; a block decoded before, with the table unchanged since, is not re-read."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table: CountingTable = CountingTable()
        self.max_allowed_table_size = self.header_table.maxsize
        self.memo: dict[bytes, tuple[int, list[Any]]] = {}
        self.memo_generation = 0
        # One-byte index -> its field, while the table is unchanged.
        self.indexed: dict[int, Any] = {}
        self.indexed_generation = 0

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        generation = self.header_table.generation
        if generation != self.memo_generation:
            self.memo.clear()
            self.memo_generation = generation
        memo = self.memo
        hit = memo.get(data) if raw else None
        # The list-size limit is part of the key: a block under the old limit may be over a
        # new, lower one (h2 sets it when our SETTINGS are acknowledged).
        if hit is not None and hit[0] == self.max_header_list_size:
            # The same check hpack makes at the end of every block (a shrunk maximum the
            # peer has not yet applied is an error on every block until it does).
            self._assert_valid_table_size()
            return list(hit[1])
        headers = self._decode(data) if raw else list(super().decode(data, raw))
        if (
            raw
            and self.header_table.generation == generation
            and len(data) <= _MAX_BLOCK
            and len(memo) < _MAX_ENTRIES
        ):
            memo[bytes(data)] = (self.max_header_list_size, headers)
            headers = list(headers)
        return headers

    def _decode(self, data: bytes) -> list[Any]:
        """hpack's Decoder.decode(raw=True), with one-byte indexed fields read inline.

        An indexed field under 127 (every static entry and the first 65 dynamic ones) is
        one byte; its HeaderTuple is kept until the table changes. Every other
        representation goes to hpack's own method for it, in hpack's order, with its
        errors.
        """
        table = self.header_table
        indexed = self.indexed
        if self.indexed_generation != table.generation:
            indexed.clear()
            self.indexed_generation = table.generation
        limit = self.max_header_list_size
        view = memoryview(data)
        headers: list[Any] = []
        size = 0
        index = 0
        end = len(data)
        while index < end:
            byte = data[index]
            if byte & 0x80 and byte != 0xFF:
                header = indexed.get(byte)
                if header is None:
                    # hpack's lookup: InvalidTableIndex for 0 or past the table's end.
                    header = indexed[byte] = hpack.HeaderTuple(*table.get_by_index(byte & 0x7F))
                consumed = 1
            elif byte & 0x80:
                header, consumed = self._decode_indexed(view[index:])
            elif byte & 0x40:
                header, consumed = self._decode_literal_index(view[index:])
                indexed.clear()
                self.indexed_generation = table.generation
            elif byte & 0x20:
                if headers:
                    raise hpack.HPACKDecodingError(
                        "Table size update not at the start of the block"
                    )
                consumed = self._update_encoding_context(view[index:])
                indexed.clear()
                self.indexed_generation = table.generation
                index += consumed
                continue
            else:
                header, consumed = self._decode_literal_no_index(view[index:])
            headers.append(header)
            size += 32 + len(header[0]) + len(header[1])  # RFC 7541 section 4.1
            if size > limit:
                raise hpack.OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
            index += consumed
        self._assert_valid_table_size()
        return headers


@mypyc_attr(native_class=False)
class PlainEncoder(hpack.Encoder):
    """hpack's Encoder without Huffman coding, with memos, and per-request fields kept out of
    the dynamic table.

    Huffman: hpack's encoder is pure Python, bit by bit; literals cost a few more bytes on
    the wire (HPACK allows either form, RFC 7541 section 5.2) and about a tenth of the
    header encoding time less.

    Per-request fields (`_PER_REQUEST`: request ids, trace ids, gRPC deadlines) are sent
    as literals without indexing (RFC 7541 section 6.2.2): a value that never repeats
    gains nothing from the table, and adding it would evict fields that do repeat and
    change the table on every request, which defeats both memos here and the peer's.
    With the table unchanged, a whole field list encodes to the same bytes (memoised
    per list), and each field to the same representation (memoised per field, for
    lists that differ only in their per-request fields).

    Secrets (`_NEVER_INDEXED`, short cookies) are sent never indexed: h2's outbound
    header normalisation, which would mark them, is off in this codec.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table: CountingTable = CountingTable()
        self.memo: dict[tuple[Any, ...], bytes] = {}
        self.fields: dict[tuple[bytes, bytes], bytes] = {}
        self.memo_generation = 0

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        table = self.header_table
        # A pending size change goes out at the start of the next block: hpack's own
        # encoder writes it (and that block is not memoised).
        if type(headers) is not list or table.resized:
            return super().encode(headers, huffman=False)
        for field in headers:
            # hpack's HeaderTuple subclasses (never-indexed fields) compare equal to
            # plain tuples but encode differently, and 3-tuples carry a sensitivity
            # flag: only lists of plain 2-tuples take the memos.
            if type(field) is not tuple or len(field) != 2:
                return super().encode(headers, huffman=False)
        generation = table.generation
        if generation != self.memo_generation:
            self.memo.clear()
            self.fields.clear()
            self.memo_generation = generation
        key = tuple(headers)
        block = self.memo.get(key)
        if block is not None:
            return block
        fields = self.fields
        parts: list[bytes] = []
        per_request = False
        # Field representations are valid only while the table is as it was when they
        # were made; an insertion earlier in this block shifts every index. Only `add`
        # changes the table, so the generation is read again after each call to it.
        unchanged = True
        for field in headers:
            name = field[0]
            prefix = _LITERAL_PREFIX.get(name)
            if prefix is not None:  # a per-request field
                value = field[1]
                per_request = True
                parts.append(prefix)
                parts.append(length_prefix(len(value)))
                parts.append(value)
                continue
            if unchanged:
                representation = fields.get(field)
                if representation is not None:
                    parts.append(representation)
                    continue
                representation = self.add(field, False, False)
                unchanged = table.generation == generation
                if unchanged and len(fields) < _MAX_FIELDS:
                    fields[field] = representation
            else:
                representation = self.add(field, False, False)
            parts.append(representation)
        block = b"".join(parts)
        if (
            not per_request
            and unchanged
            and len(block) <= _MAX_BLOCK
            and len(self.memo) < _MAX_ENTRIES
        ):
            self.memo[key] = block
        return block

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        # Every field hpack's Encoder codes comes here, from the memo path above and from
        # hpack's own encode() alike.
        if not sensitive:
            name = to_add[0]
            sensitive = name in _NEVER_INDEXED or (
                name == b"cookie" and len(to_add[1]) < _SHORT_COOKIE
            )
        return super().add(to_add, sensitive, huffman)
