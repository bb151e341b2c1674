"""Route timeouts for many exchanges on one loop timer.

Every exchange of a worker gets the same route timeout, so deadlines arrive in the
order they were set: a FIFO queue checked by a single timer does the work of one
timer per request (which costs a libuv handle to create and close each time).
Cancelling is lazy: an exchange clears its `deadline` and is skipped when reached.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol


class HasDeadline(Protocol):
    deadline: float


class DeadlineQueue:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_expired: Callable[[HasDeadline], None]
    ) -> None:
        self.loop = loop
        self.on_expired = on_expired
        self.entries: deque[tuple[float, HasDeadline]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, item: HasDeadline, deadline: float) -> None:
        item.deadline = deadline
        self.entries.append((deadline, item))
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time()
        while entries:
            deadline, item = entries[0]
            if item.deadline != deadline:
                entries.popleft()  # finished, or re-armed later: nothing to do
                continue
            if deadline > now:
                self.timer = self.loop.call_at(deadline, self._fire)
                return
            entries.popleft()
            item.deadline = 0.0
            self.on_expired(item)

    def __len__(self) -> int:
        return len(self.entries)
