"""A connection's repeated fields: reused pair objects, and the kept start of request heads.

The llhttp codecs hand back a field that repeats at the same position of a
connection's next message as the same (name, value) object, and a client codec keeps
the header lines its last request heads shared (h1_framing.FieldLines). Neither may
change a byte: every head written with the kept lines must equal the head written
from scratch, whatever sequence of heads a connection sends.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.codecs import h1_framing, server_codec
from proxy.core.messages import RequestHead

WIRE = b"GET /%d HTTP/1.1\r\nHost: a\r\nUser-Agent: ua \r\nX-Seq: %d\r\n\r\n"


def _heads(wire: list[bytes]) -> list[RequestHead]:
    codec = server_codec("llhttp", None)
    heads = []
    for message in wire:
        events = codec.receive(message)
        head = events[0]
        assert isinstance(head, RequestHead)
        heads.append(head)
    return heads


def test_a_field_that_repeats_is_the_same_pair_and_a_changed_one_is_new() -> None:
    first, second = _heads([WIRE % (1, 1), WIRE % (2, 2)])
    assert first.headers == [(b"host", b"a"), (b"user-agent", b"ua"), (b"x-seq", b"1")]
    assert second.headers == [(b"host", b"a"), (b"user-agent", b"ua"), (b"x-seq", b"2")]
    assert second.headers[0] is first.headers[0]
    assert second.headers[1] is first.headers[1]  # trimmed once, reused as it is
    assert second.headers[2] is not first.headers[2]
    assert first.headers[2] == (b"x-seq", b"1")  # the earlier head keeps its own value


def test_a_renamed_position_is_read_again() -> None:
    first, second = _heads(
        [b"GET / HTTP/1.1\r\nHost: a\r\nAccept: x\r\n\r\n",
         b"GET / HTTP/1.1\r\nHost: a\r\nAccept-Language: x\r\n\r\n"]
    )  # fmt: skip
    assert second.headers == [(b"host", b"a"), (b"accept-language", b"x")]
    assert second.headers[0] is first.headers[0]


fields = st.lists(
    st.tuples(
        st.sampled_from([b"host", b"accept", b"x-a", b"x-b"]), st.sampled_from([b"1", b"22"])
    ),
    max_size=7,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(fields, min_size=1, max_size=8), st.booleans())
def test_kept_lines_write_the_same_heads_as_from_scratch(
    sequence: list[list[tuple[bytes, bytes]]], share_pairs: bool
) -> None:
    lines = h1_framing.FieldLines()
    previous: list[tuple[bytes, bytes]] = []
    for headers in sequence:
        if share_pairs:  # as the llhttp codecs do: equal pairs at a position are one object
            headers = [
                previous[index] if index < len(previous) and previous[index] == pair else pair
                for index, pair in enumerate(headers)
            ]
        previous = headers
        for length in (None, 3):
            kept = h1_framing.request_head(b"GET", b"/x", headers, length, False, lines)
            plain = h1_framing.request_head(b"GET", b"/x", headers, length, False)
            assert kept == plain


def test_kept_lines_survive_a_change_to_the_sent_list() -> None:
    lines = h1_framing.FieldLines()
    headers = [(b"host", b"a"), (b"x-id", b"1")]
    h1_framing.request_head(b"GET", b"/", headers, None, False, lines)
    headers[0] = (b"host", b"b")  # the head's own list, changed after it was written
    again = [(b"host", b"a"), (b"x-id", b"2")]
    assert h1_framing.request_head(b"GET", b"/", again, None, False, lines) == (
        b"GET / HTTP/1.1\r\nhost: a\r\nx-id: 2\r\n\r\n"
    )
