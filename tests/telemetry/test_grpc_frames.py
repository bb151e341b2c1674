"""gRPC messages counted across any cut of their DATA into frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.core.grpc_frames import MessageCount


def _framed(messages: list[bytes]) -> bytes:
    return b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)


@given(
    st.lists(st.binary(max_size=40), max_size=12),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=50),
)
def test_every_complete_message_is_counted_once_however_frames_cut_them(
    messages: list[bytes], cuts: list[int]
) -> None:
    data = _framed(messages)
    counter = MessageCount()
    at, index = 0, 0
    while at < len(data):
        step = cuts[index % len(cuts)]
        counter.feed(data[at : at + step])
        at, index = at + step, index + 1
    assert counter.count == len(messages)


def test_a_message_cut_short_is_not_counted() -> None:
    counter = MessageCount()
    counter.feed(_framed([b"whole"]) + _framed([b"cut short"])[:-3])
    assert counter.count == 1
