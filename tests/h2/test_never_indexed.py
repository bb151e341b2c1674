"""Secrets leave the proxy as HPACK literals never indexed (RFC 7541 section 7.1.3), both ways.

An HTTP/2 client sends credentials and a short cookie through the proxy to an h2c
upstream (tests/h2/h2server.py), which answers with set-cookie. Both ends keep the raw
bytes the proxy sent them; the test cuts them into frames and decodes the header blocks
with hpack, which reports each field's representation (`NeverIndexedHeaderTuple`) and
keeps the dynamic table the proxy's encoder built, so a secret that was indexed would be
found there.
"""

from __future__ import annotations

from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame

from tests.h2.client import RawH2
from tests.h2.h2server import SET_COOKIES, ScriptedH2Server
from tests.proxy.conftest import Proxy

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SECRETS = [
    ("authorization", "Bearer token-1"),
    ("proxy-authorization", "Basic dTpw"),
    ("cookie", "sid=short"),  # under 20 bytes: never indexed, as h2 normalises it
]


def header_blocks(data: bytes) -> list[bytes]:
    """The header blocks (HEADERS plus CONTINUATIONs) in a run of whole frames."""
    blocks: list[bytes] = []
    index = 0
    while index + 9 <= len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[index : index + 9]))
        frame.parse_body(memoryview(data[index + 9 : index + 9 + length]))
        index += 9 + length
        if isinstance(frame, HeadersFrame):
            blocks.append(bytes(frame.data))
        elif isinstance(frame, ContinuationFrame):
            blocks[-1] += bytes(frame.data)
    return blocks


def decoded(blocks: list[bytes]) -> tuple[list[hpack.HeaderTuple], hpack.Decoder]:
    decoder = hpack.Decoder()
    fields: list[hpack.HeaderTuple] = []
    for block in blocks:
        fields += decoder.decode(block, raw=True)
    return fields, decoder


def assert_never_indexed(blocks: list[bytes], expected: list[tuple[str, str]]) -> None:
    fields, decoder = decoded(blocks)
    names = {name.encode() for name, _ in expected}
    sent = [field for field in fields if field[0] in names]
    # Every request or response carried each secret, each time as a never-indexed literal.
    assert sorted((bytes(n).decode(), bytes(v).decode()) for n, v in sent) == sorted(
        expected * (len(sent) // len(expected))
    )
    assert len(sent) >= 2 * len(expected)
    assert all(isinstance(field, hpack.NeverIndexedHeaderTuple) for field in sent), sent
    # ... and none of them entered the proxy's dynamic table (which the decoder mirrors).
    table = decoder.header_table.dynamic_entries
    assert not [entry for entry in table if entry[0] in names], table


@pytest.fixture()
def upstream() -> Iterator[ScriptedH2Server]:
    server = ScriptedH2Server()
    yield server
    server.close()


def test_credentials_cookies_and_set_cookie_are_never_indexed(upstream: ScriptedH2Server) -> None:
    proxy = Proxy(upstream.port, args=["--upstream-http2-ports", str(upstream.port)])
    client = RawH2(proxy.port)
    try:
        received = bytearray()
        original = client.conn.receive_data

        def recording(data: bytes) -> list[h2.events.Event]:
            received.extend(data)
            return original(data)

        client.conn.receive_data = recording  # type: ignore[method-assign]
        # Two requests on one connection each way: a secret indexed by the first would be
        # an indexed reference in the second.
        for _ in range(2):
            stream_id = client.request("/set-cookie", headers=SECRETS)
            assert client.until(lambda sid=stream_id: sid in client.ended), "no answer"
            assert client.status(stream_id) == 200
        assert_never_indexed(header_blocks(bytes(received)), SET_COOKIES)
        with upstream.lock:
            to_upstream = bytes(upstream.received)
        assert to_upstream.startswith(PREFACE)
        assert_never_indexed(header_blocks(to_upstream[len(PREFACE) :]), SECRETS)
    finally:
        client.close()
        proxy.stop()


def test_long_cookies_may_be_indexed() -> None:
    """Only short cookies are guessable from the compressed size (h2's own rule)."""
    from proxy.core.codecs.h2_hpack import PlainEncoder

    encoder = PlainEncoder()
    cookie = (b"cookie", b"session=" + b"x" * 40)
    first = encoder.encode([cookie])
    assert encoder.header_table.dynamic_entries[0] == cookie
    second = encoder.encode([(b"cookie", b"a=1"), (b"set-cookie", b"a=1")])
    fields, _ = decoded([first, second])
    assert not isinstance(fields[0], hpack.NeverIndexedHeaderTuple)
    assert all(isinstance(field, hpack.NeverIndexedHeaderTuple) for field in fields[1:])
    assert len(encoder.header_table.dynamic_entries) == 1
