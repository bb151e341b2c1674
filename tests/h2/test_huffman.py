"""The compiled HPACK Huffman decoder (proxy/core/codecs/h2_huffman.py) against hpack's own."""

from __future__ import annotations

import random

import hpack.hpack
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.codecs import h2_hpack  # noqa: F401 - installs the decoder in hpack
from proxy.core.codecs.h2_huffman import decode_huffman

ENCODE = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode


def outcome(decoder: object, data: bytes) -> object:
    try:
        return decoder(data)  # type: ignore[operator]
    except HPACKDecodingError as error:
        return (type(error), str(error))


def test_hpack_decodes_with_the_compiled_decoder() -> None:
    assert hpack.hpack.decode_huffman is decode_huffman


@given(st.binary(max_size=200))
def test_every_encoded_string_decodes_as_hpack_decodes_it(plain: bytes) -> None:
    encoded = ENCODE(plain)
    assert decode_huffman(encoded) == hpack_decode(encoded) == plain


@given(st.binary(max_size=64))
def test_arbitrary_bytes_give_hpack_result_or_error(data: bytes) -> None:
    assert outcome(decode_huffman, data) == outcome(hpack_decode, data)


def test_the_rfc_examples_and_the_invalid_shapes() -> None:
    # RFC 7541 appendix C.4.1: "www.example.com".
    assert decode_huffman(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert decode_huffman(b"") == b"" and decode_huffman(None) == b""
    shapes = [
        b"\xff\xff\xff\xff",  # EOS (30 ones) inside the string
        b"\x00",  # padding of zeros, not ones
        b"\x1f\xff",  # more than 7 bits of padding
        bytes.fromhex("f1e3c2e5f23a6ba0ab90f4"),  # cut short
    ]
    rng = random.Random(7)
    shapes += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))) for _ in range(500)]
    for data in shapes:
        assert outcome(decode_huffman, data) == outcome(hpack_decode, data), data
