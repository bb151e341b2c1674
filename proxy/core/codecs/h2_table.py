"""The HPACK dynamic table that counts its changes, for `h2_hpack.py`'s memos.

Kept apart from `h2_hpack.py` because it overrides a property setter (hpack's
`maxsize`), which the compiled build (`proxy/_compiled.py`) cannot make for a subclass
of an interpreted class; this module stays interpreted, and its methods run only when
the table changes.
"""

from __future__ import annotations

import hpack.table


class CountingTable(hpack.table.HeaderTable):
    """hpack's dynamic table, counting every change (an insertion, eviction or resize)."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        hpack.table.HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]
