"""Random ids (proxy.core.ids): X-Request-Id values are RFC 9562 UUIDv4 text, trace
contexts are W3C traceparents short of their flag digit; unique, never shared across a fork."""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter

from proxy.core.ids import new_request_id, new_trace_context, span_id, trace_id


def test_ids_are_uuid4_text() -> None:
    for _ in range(500):  # several batches
        value = new_request_id()
        parsed = uuid.UUID(value.decode("ascii"))
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed).encode() == value


def test_ids_are_unique_and_every_random_digit_varies() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for position in range(36):
        seen = Counter(value[position] for value in ids)
        if position in (8, 13, 18, 23):
            assert seen == {ord("-"): len(ids)}
        elif position == 14:
            assert seen == {ord("4"): len(ids)}
        elif position == 19:
            assert set(seen) == set(b"89ab")
            assert all(0.2 < count / len(ids) < 0.3 for count in seen.values())  # uniform
        else:
            assert len(seen) == 16, position  # all hex digits turn up at every position


def test_trace_contexts_are_traceparents_with_random_ids() -> None:
    contexts = [new_trace_context() for _ in range(20_000)]
    assert len(set(contexts)) == len(contexts)
    for context in contexts[:500]:
        for flag in (b"0", b"1"):
            assert re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", context + flag)
        assert trace_id(context) == context[3:35].decode() and len(trace_id(context)) == 32
        assert span_id(context) == context[36:52].decode() and len(span_id(context)) == 16
    for position in [*range(3, 35), *range(36, 52)]:
        assert len({context[position] for context in contexts}) == 16, position


def test_a_forked_child_makes_its_own() -> None:
    new_request_id()  # the parent holds a batch
    new_trace_context()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, b"".join(new_request_id() + new_trace_context() for _ in range(8)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        from_child = pipe.read()
    os.waitpid(child, 0)
    mine = b"".join(new_request_id() + new_trace_context() for _ in range(8))
    assert len(from_child) == len(mine) == 8 * (36 + 54)
    assert not {from_child[at : at + 90] for at in range(0, 720, 90)} & {
        mine[at : at + 90] for at in range(0, 720, 90)
    }
