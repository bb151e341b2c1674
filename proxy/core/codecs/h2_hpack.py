"""HPACK for the HTTP/2 codec: hpack's Decoder and Encoder with a memo of whole header blocks.

A connection's header blocks repeat: a client sends the same request fields call after
call, and once the dynamic table holds them every field is a one-byte index, so the
block's bytes repeat too. Decoding such a block again gives the same fields as long as
the dynamic table has not changed since, and encoding the same field list gives the same
bytes under the same condition. The table here counts its changes (`generation`); a memo
entry is valid only for the generation it was made in, and only blocks whose coding left
the table unchanged are memoised (a block that adds to the table is not the same block
the next time). Everything else, including every error path, is hpack's own code.
This module and `h2.py` are the only ones that import hpack.
"""

from __future__ import annotations

import logging
from typing import Any

import hpack
import hpack.hpack
import hpack.table

# Blocks longer than this are not memoised: a connection's memo stays a few KiB, and long
# blocks (large cookies, many fields) rarely repeat byte for byte.
_MAX_BLOCK = 1024
# Distinct blocks memoised per table generation (a client with a few kinds of request).
_MAX_ENTRIES = 16


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


class CountingTable(hpack.table.HeaderTable):
    """hpack's dynamic table, counting every change (an insertion, eviction or resize)."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        hpack.table.HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class MemoDecoder(hpack.Decoder):
    """hpack's Decoder; a block decoded before, with the table unchanged since, is not re-read."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table: CountingTable = CountingTable()
        self.max_allowed_table_size = self.header_table.maxsize
        self.memo: dict[bytes, tuple[int, list[Any]]] = {}
        self.memo_generation = 0

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
        headers: list[Any] = super().decode(data, raw)  # type: ignore[assignment]
        if (
            raw
            and self.header_table.generation == generation
            and len(data) <= _MAX_BLOCK
            and len(memo) < _MAX_ENTRIES
        ):
            memo[bytes(data)] = (self.max_header_list_size, headers)
            headers = list(headers)
        return headers


class PlainEncoder(hpack.Encoder):
    """hpack's Encoder without Huffman coding, and a field list encoded before, with the table
    unchanged since, is not re-encoded.

    Huffman: hpack's encoder is pure Python, bit by bit; literals cost a few more bytes on
    the wire (HPACK allows either form, RFC 7541 section 5.2) and about a tenth of the
    header encoding time less.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table: CountingTable = CountingTable()
        self.memo: dict[tuple[Any, ...], bytes] = {}
        self.memo_generation = 0

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        table = self.header_table
        generation = table.generation
        if generation != self.memo_generation:
            self.memo.clear()
            self.memo_generation = generation
        memo = self.memo
        # hpack's HeaderTuple subclasses (never-indexed fields) compare equal to plain
        # tuples but encode differently: only a list of plain tuples makes a key.
        if type(headers) is list and all(type(field) is tuple for field in headers):
            key = tuple(headers)
            # A pending size change goes out at the start of the next block: that block
            # is neither served from the memo nor memoised.
            resized = table.resized
            block = memo.get(key)
            if block is not None and not resized:
                return block
            block = super().encode(headers, huffman=False)
            if (
                not resized
                and table.generation == generation
                and len(block) <= _MAX_BLOCK
                and len(memo) < _MAX_ENTRIES
            ):
                memo[key] = block
            return block
        return super().encode(headers, huffman=False)
