"""What the first bytes of a connection are taken for: HTTP/1 whenever they are a request line."""

from __future__ import annotations

import pytest

from proxy.core.sniff import LONGEST_LINE, Protocol, sniff

HTTP1, HTTP2, TCP, UNDECIDED = Protocol.HTTP1, Protocol.HTTP2, Protocol.TCP, Protocol.UNDECIDED


@pytest.mark.parametrize(
    ("first_bytes", "expected"),
    [
        (b"GET / HTTP/1.1\r\n", HTTP1),
        (b"POST ", HTTP1),
        (b"GE", UNDECIDED),
        # Request lines however odd: the codec answers or refuses them, never the app.
        (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1),
        (b"\r\n", UNDECIDED),
        (b"get / HTTP/1.1\r\n", HTTP1),
        (b"FROB /x HTTP/1.1\r\n", HTTP1),
        (b"G@T / http/1.1\r\n", HTTP1),
        (b"GET\t/ HTTP/1.1\n", HTTP1),
        (b"FROB /x HTT", UNDECIDED),
        (b"FROB", TCP),  # one word, not a method's start: not worth waiting on
        (b"from-1337", TCP),
        (b"FROB " + b"a" * LONGEST_LINE, HTTP1),  # too long a line: the codec's 414
        # Other text protocols' lines end without an HTTP version.
        (b"get key\r\n", TCP),
        (b"set k 0 0 5\r\nhello\r\n", TCP),
        (b"PING\r\n", TCP),
        (b"EHLO mail.example\r\n", TCP),
        (b"SSH-2.0-OpenSSH_9.2\r\n", TCP),
        (b"A" * LONGEST_LINE, TCP),
        # Binary protocols are decided at their first bytes.
        (b"*1\r\n$4\r\nPING\r\n", TCP),
        (b"\x16\x03\x01\x02\x00", TCP),
        (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", TCP),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP2),
        (b"PRI * HTTP/2", UNDECIDED),
    ],
)
def test_sniff(first_bytes: bytes, expected: Protocol) -> None:
    assert sniff(first_bytes) is expected
