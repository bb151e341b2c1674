"""The worker's route-timeout queue: expires in order, forgets finished exchanges at once."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from proxy.runtime.deadlines import DeadlineQueue


class Item:
    def __init__(self, name: str) -> None:
        self.name = name


def test_expires_in_order_and_forgets_removed_items() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        expired: list[str] = []
        queue = DeadlineQueue(loop, lambda item: expired.append(item.name))  # type: ignore[attr-defined]
        items = [Item(str(n)) for n in range(1000)]
        now = loop.time()
        for index, item in enumerate(items):
            queue.add(item, now + 0.05 + index * 0.0001)
        for item in items[:998]:
            queue.remove(item)  # finished before their deadline
        assert len(queue) == 2  # nothing lingers until its deadline
        await asyncio.sleep(0.3)
        assert len(queue) == 0
        return expired

    assert asyncio.run(scenario()) == ["998", "999"]


def test_deadlines_between_clock_ticks_wake_the_loop_once_each() -> None:
    """Deadlines come from time.monotonic(); uvloop's clock counts whole milliseconds."""
    loop = uvloop.new_event_loop()
    arms: list[float] = []

    class CountingLoop(asyncio.AbstractEventLoop):
        def time(self) -> float:
            return loop.time()

        def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
            arms.append(when)
            return loop.call_at(when, callback, *args)

    expired: list[str] = []
    queue = DeadlineQueue(CountingLoop(), lambda item: expired.append(item.name))  # type: ignore[attr-defined]
    try:
        start = loop.time()
        for index in range(20):
            queue.add(Item(str(index)), start + 0.005 + index * 0.002 + 0.0005)
        loop.run_until_complete(asyncio.sleep(0.1))
    finally:
        loop.close()
    assert expired == [str(index) for index in range(20)]
    # One arming per deadline at most; re-arming for the rest of a millisecond would
    # spin the loop hundreds of times.
    assert len(arms) <= 21, len(arms)
