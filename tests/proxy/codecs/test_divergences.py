"""Every known difference between the llhttp and h11 codecs, pinned with an example.

If a codec changes so that an entry no longer holds, its test fails: drop the entry
(one divergence fewer) or update the reason. The fuzz tests allow exactly the
decision divergences named in `test_fuzz.DIVERGENCES`; the other entries here are
differences of timing or size that the fuzzer's small inputs do not reach.
"""

from __future__ import annotations

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import CodecLimits
from proxy.core.messages import Data, EndOfMessage, RequestHead
from tests.proxy.codecs.helpers import errors, request
from tests.proxy.codecs.test_fuzz import DIVERGENCES, known_divergence, servers_agree

CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

# One input per decision divergence: (wire, llhttp's errors, h11's errors).
EXAMPLES: dict[str, tuple[bytes, list[int], list[int]]] = {
    "request-line-spaces": (b"GET  /  HTTP/1.1\r\nHost: a\r\n\r\n", [], [400]),
    "chunk-size-over-20-digits": (
        CHUNKED + b"000000000000000000000000001\r\nx\r\n0\r\n\r\n",
        [],
        [400],
    ),
}


def test_every_listed_divergence_has_an_example() -> None:
    assert set(EXAMPLES) == set(DIVERGENCES)
    for reason in DIVERGENCES.values():
        assert len(reason) > 40  # a reason, not a label


def test_each_example_diverges_as_documented_and_is_recognised() -> None:
    for name, (wire, llhttp_errors, h11_errors) in EXAMPLES.items():
        assert errors(server_codec("llhttp", None).receive(wire)) == llhttp_errors, name
        assert errors(server_codec("h11", None).receive(wire)) == h11_errors, name
        assert not servers_agree(wire)
        assert known_divergence(servers_agree, wire) == name


def test_unlisted_disagreement_is_not_explained() -> None:
    # A disagreement the normalisers cannot remove stays unexplained (the fuzz fails).
    assert known_divergence(lambda data: False, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is None


def test_both_bound_an_unfinished_head_within_the_read() -> None:
    """Formerly a divergence: the llhttp adapter now counts an unfinished head's bytes
    after feeding each read, so, like h11's, it refuses it in the read that overflows."""
    limits = CodecLimits(max_header_bytes=1024, max_target_bytes=256, max_header_count=10)
    wire = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1400
    assert errors(server_codec("llhttp", limits).receive(wire)) == [431]
    assert errors(server_codec("h11", limits).receive(wire)) == [431]


def test_timing_events_before_an_error_inside_one_read() -> None:
    """llhttp reports a bad message's body bytes up to the fault; the h11 adapter checks
    a read's framing before h11 sees it, so the same read yields only the error. The
    message is refused either way; the fuzz compares completed messages only."""
    wire = CHUNKED + b"3\r\nabc\r\n3x\r\n"
    llhttp = server_codec("llhttp", None).receive(wire)
    h11 = server_codec("h11", None).receive(wire)
    assert [type(event) for event in llhttp[:2]] == [RequestHead, Data]
    assert errors(llhttp) == errors(h11) == [400]
    assert not any(type(event) is EndOfMessage for event in llhttp + h11)


def test_size_h11_adapter_bounds_what_llhttp_does_not() -> None:
    """The h11 adapter buffers unfinished lines itself, so it bounds them: a chunk line
    over 64 KiB and an upstream head over 1 MiB, as they arrive. llhttp streams chunk
    extensions and response heads without a bound; it bounds a trailer section by size
    only once each field has ended."""
    long_extension = CHUNKED + b"1;a=" + b"b" * (65 * 1024) + b"\r\nx\r\n0\r\n\r\n"
    assert errors(server_codec("llhttp", None).receive(long_extension)) == []
    assert errors(server_codec("h11", None).receive(long_extension)) == [400]
    # A trailer section over max_header_bytes: both refuse it now (llhttp once the
    # field ends, since httptools joins an unfinished value out of our sight).
    long_trailer = CHUNKED + b"0\r\nx-t: " + b"v" * (70 * 1024) + b"\r\n\r\n"
    assert errors(server_codec("llhttp", None).receive(long_trailer)) == [431]
    assert errors(server_codec("h11", None).receive(long_trailer)) == [431]
    big_head = b"HTTP/1.1 200 OK\r\nX: " + b"v" * (1024 * 1024 + 1) + b"\r\n\r\n"
    for codec, expected in (("llhttp", []), ("h11", [502])):
        parser = client_codec(codec)
        parser.send_request_head(request())
        assert errors(parser.receive(big_head)) == expected, codec


def test_both_read_proxy_connection_as_connection() -> None:
    """Formerly a divergence: llhttp reads the legacy Proxy-Connection as Connection;
    the h11 adapter now does too, so both close after `Proxy-Connection: close`."""
    for codec in ("llhttp", "h11"):
        head = server_codec(codec, None).receive(
            b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n"
        )[0]
        assert isinstance(head, RequestHead) and not head.keep_alive, codec
