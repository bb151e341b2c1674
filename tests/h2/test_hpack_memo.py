"""The HPACK memo (proxy/core/codecs/h2_hpack.py) against hpack's own coder, step by step."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple

from proxy.core.codecs.h2_hpack import MemoDecoder, PlainEncoder

Fields = list[tuple[bytes, bytes]]


def _lists(seed: int, count: int) -> list[Fields]:
    """Header lists that repeat (memo hits), vary (table insertions) and grow (evictions)."""
    rng = random.Random(seed)
    shapes: list[Fields] = [
        [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"a")],
        [(b":status", b"200"), (b"server", b"nginx"), (b"content-type", b"text/plain")],
        [(b":method", b"POST"), (b":path", b"/svc/M"), (b"content-type", b"application/grpc")],
    ]
    out: list[Fields] = []
    for _ in range(count):
        fields = list(rng.choice(shapes))
        roll = rng.random()
        if roll < 0.3:
            fields.append((b"x-id", str(rng.randrange(40)).encode()))
        elif roll < 0.4:
            fields.append((b"x-big", b"v" * rng.randrange(50, 300)))
        out.append(fields)
    return out


def _raw(headers: object) -> Fields:
    return [(bytes(name), bytes(value)) for name, value in headers]  # type: ignore[attr-defined]


@pytest.mark.parametrize("table_size", [4096, 256, 64])
def test_decoding_matches_hpack_while_the_table_changes(table_size: int) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size  # small tables evict all the time
    plain = hpack.Decoder()
    memo = MemoDecoder(65536)
    hits = 0
    for step, fields in enumerate(_lists(table_size, 600)):
        if step == 300:
            encoder.header_table_size = table_size // 2  # a size update mid-connection
        block = encoder.encode(fields, huffman=step % 2 == 0)
        was_memoised = block in memo.memo
        expected = _raw(plain.decode(block, raw=True))
        assert _raw(memo.decode(block, raw=True)) == expected, step
        hits += was_memoised
    assert hits > 5  # the memo was used, not only filled


def test_the_same_bytes_after_a_table_change_decode_to_the_new_entry() -> None:
    memo = MemoDecoder(65536)
    # Literal with incremental indexing, new name: x: 1 lands at index 62.
    assert _raw(memo.decode(b"\x40\x01x\x011", raw=True)) == [(b"x", b"1")]
    assert _raw(memo.decode(b"\xbe", raw=True)) == [(b"x", b"1")]
    assert b"\xbe" in memo.memo
    memo.decode(b"\x40\x01x\x012", raw=True)  # x: 2 is now index 62
    assert _raw(memo.decode(b"\xbe", raw=True)) == [(b"x", b"2")]
    # A size update to 0 empties the table: index 62 no longer exists.
    memo.decode(b"\x20", raw=True)
    with pytest.raises(hpack.HPACKError):
        memo.decode(b"\xbe", raw=True)


def test_a_memoised_block_still_meets_a_lowered_list_size_limit() -> None:
    memo = MemoDecoder(65536)
    block = b"\x40\x01x\x40" + b"v" * 64
    memo.decode(block, raw=True)
    memo.decode(b"\xbe", raw=True)
    assert b"\xbe" in memo.memo
    memo.max_header_list_size = 50  # h2 lowers it when our SETTINGS are acknowledged
    with pytest.raises(hpack.OversizedHeaderListError):
        memo.decode(b"\xbe", raw=True)


def test_a_memoised_block_still_fails_a_shrunk_table_maximum() -> None:
    memo = MemoDecoder(65536)
    memo.decode(b"\x40\x01x\x011", raw=True)
    memo.decode(b"\xbe", raw=True)
    memo.max_allowed_table_size = 100  # we shrank it; the peer has not said so yet
    with pytest.raises(hpack.InvalidTableSizeError):
        memo.decode(b"\xbe", raw=True)


def test_callers_may_change_the_returned_list() -> None:
    memo = MemoDecoder(65536)
    memo.decode(b"\x82\x84", raw=True)
    first = memo.decode(b"\x82\x84", raw=True)
    first.append(HeaderTuple(b"extra", b"1"))
    assert _raw(memo.decode(b"\x82\x84", raw=True)) == [(b":method", b"GET"), (b":path", b"/")]


@pytest.mark.parametrize("table_size", [4096, 256, 64])
def test_encoding_is_byte_for_byte_hpacks_without_huffman(table_size: int) -> None:
    ours = PlainEncoder()
    theirs = hpack.Encoder()
    decoder = hpack.Decoder()
    ours.header_table_size = theirs.header_table_size = table_size
    hits = 0
    for step, fields in enumerate(_lists(table_size + 1, 600)):
        if step in (200, 400):
            # The peer's SETTINGS_HEADER_TABLE_SIZE changed: the next block starts with
            # a size update, memoised or not.
            size = table_size // 2 if step == 200 else table_size
            ours.header_table_size = theirs.header_table_size = size
        was_memoised = tuple(fields) in ours.memo
        block = ours.encode(list(fields))
        assert block == theirs.encode(list(fields), huffman=False), step
        assert _raw(decoder.decode(block, raw=True)) == fields
        hits += was_memoised and step not in (200, 400)
    assert hits > 5


def test_never_indexed_fields_are_not_served_from_the_memo() -> None:
    ours = PlainEncoder()
    theirs = hpack.Encoder()
    for fields in (
        [(b"authorization", b"secret"), (b"x", b"1")],
        [(b"authorization", b"secret"), (b"x", b"1")],  # table unchanged now: memoised
        [NeverIndexedHeaderTuple(b"authorization", b"secret"), (b"x", b"1")],
        [NeverIndexedHeaderTuple(b"authorization", b"other"), (b"x", b"1")],
    ):
        # What hpack sends once h2's outbound normalisation has marked the secret.
        stock = [NeverIndexedHeaderTuple(*fields[0]), fields[1]]
        assert ours.encode(list(fields)) == theirs.encode(stock, huffman=False)
    assert len(ours.memo) == 1
    sensitive = ours.encode([NeverIndexedHeaderTuple(b"authorization", b"other")])
    assert sensitive[0] & 0xF0 == 0x10  # literal never indexed (RFC 7541 section 6.2.3)


def test_per_request_fields_stay_out_of_the_table() -> None:
    ours = PlainEncoder()
    decoder = hpack.Decoder()
    base = [(b":method", b"POST"), (b":path", b"/svc/M"), (b"content-type", b"application/grpc")]
    blocks = set()
    for call in range(50):
        fields = [
            *base,
            (b"x-request-id", b"%032x" % call),
            (b"grpc-timeout", b"%dm" % (5000 - call)),
            (b"traceparent", b"00-%032x-%016x-01" % (call, call)),
            (b"x-call", b"%d" % (call % 3)),  # repeats: indexed after its first time
        ]
        block = ours.encode(list(fields))
        blocks.add(block)
        assert _raw(decoder.decode(block, raw=True)) == fields
        # Only the repeating fields ever entered the table (both sides agree on it).
        assert {name for name, _ in decoder.header_table.dynamic_entries} <= {
            b"content-type",
            b":path",
            b"x-call",
        }
        assert list(decoder.header_table.dynamic_entries) == list(ours.header_table.dynamic_entries)
    assert len(blocks) == 50
    assert ours.fields  # the repeating fields' representations were memoised


def _outcome(decoder: hpack.Decoder, block: bytes) -> object:
    try:
        return _raw(decoder.decode(block, raw=True))
    except Exception as error:  # compared with hpack's own
        return type(error)


def test_malformed_and_random_blocks_fail_as_in_hpack() -> None:
    rng = random.Random(7)
    blocks = [
        b"\x80",  # index 0
        b"\xbe",  # past the table's end
        b"\x82\x20",  # size update after a field
        b"\x40\x05ab",  # truncated literal
        b"\x3f\xe1\x7f",  # size update above the maximum
        b"\xff" * 12,  # an integer too long
        b"\x00\x01x\x85\xff\xff\xff\xff\xff",  # bad Huffman
    ]
    for _ in range(3000):
        prefix = bytes(
            rng.choice((0x82, 0x84, 0x86, 0xBE, 0xBF, 0x40, 0x00, 0x20)) for _ in range(2)
        )
        blocks.append(prefix + bytes(rng.randrange(256) for _ in range(rng.randrange(12))))
    plain = hpack.Decoder(200)
    memo = MemoDecoder(200)
    for block in blocks:
        assert _outcome(memo, block) == _outcome(plain, block), block
        assert memo.header_table.dynamic_entries == plain.header_table.dynamic_entries
