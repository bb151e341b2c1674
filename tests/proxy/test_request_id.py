"""X-Request-Id values: RFC 9562 UUIDv4 text, unique, and never shared across a fork."""

from __future__ import annotations

import os
import uuid
from collections import Counter

from proxy.runtime.worker import new_request_id


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


def test_a_forked_child_makes_its_own() -> None:
    new_request_id()  # the parent holds a batch
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, b"".join(new_request_id() for _ in range(8)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        from_child = pipe.read()
    os.waitpid(child, 0)
    mine = b"".join(new_request_id() for _ in range(8))
    assert len(from_child) == len(mine) == 8 * 36
    assert from_child != mine
