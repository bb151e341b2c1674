"""Route timeouts for many exchanges on one loop timer.

Every exchange of a worker gets the same route timeout, so deadlines fall due in
the order they were set: an insertion-ordered map checked by a single timer does
the work of one timer per request (which costs a libuv handle to create and close
each time). Finished exchanges are removed at once, so nothing lingers until its
deadline.

The map is a plain dict, which keeps insertion order: setting, testing and deleting a
key are native dict operations in the compiled build, where an OrderedDict's are
Python-level calls that also allocate and free a list node (about 1,100 instructions
a request against about 700). A delete leaves a hole at the dict's front that the
timer's look at the oldest entry steps over; the dict closes its holes whenever it
resizes, so that stays amortised O(1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Final

# uvloop's clock counts whole milliseconds and rounds a timer's delay to them, so a
# deadline less than a step ahead of `loop.time()` (deadlines are set from the finer
# time.monotonic()) would re-arm the timer for "now" again and again until the clock
# ticks: hundreds of wake-ups. A deadline within a step counts as due.
CLOCK_STEP: Final = 0.001


class DeadlineQueue:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_expired: Callable[[Hashable], None]
    ) -> None:
        self.loop = loop
        self.on_expired = on_expired
        self.entries: dict[Hashable, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, item: Hashable, deadline: float) -> None:
        self.entries[item] = deadline
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._fire)

    def remove(self, item: Hashable) -> None:
        # Two native lookups: dict.pop is a Python-level method call from compiled code.
        entries = self.entries
        if item in entries:
            del entries[item]

    def _fire(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time() + CLOCK_STEP
        while entries:
            item, deadline = next(iter(entries.items()))
            if deadline > now:
                self.timer = self.loop.call_at(deadline, self._fire)
                return
            del entries[item]
            self.on_expired(item)

    def __contains__(self, item: Hashable) -> bool:
        return item in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        """Stop the timer and forget the entries and the callback.

        The callback is often a bound method of the queue's owner, which holds the queue:
        dropping it breaks that cycle, so refcounting frees both at once.
        """
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.entries.clear()
        self.on_expired = _ignore


def _ignore(item: Hashable) -> None:
    """What a closed queue calls (nothing expires after close)."""
