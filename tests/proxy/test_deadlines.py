"""The worker's route-timeout queue: expires in order, forgets finished exchanges at once."""

from __future__ import annotations

import asyncio

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
