"""Who waits for a slot: a bounded first-come first-served queue (pure Python)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Generic, TypeVar

from ...errors import BusyError

__all__ = ["Admission"]

T = TypeVar("T")


class Admission(Generic[T]):
    """Requests waiting for a free slot, in arrival order, at most ``max_pending`` of them.

    Not thread-safe by itself: the engine calls it under its own lock.
    """

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._waiting: collections.deque[T] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def __iter__(self) -> Iterator[T]:
        return iter(self._waiting)

    def push(self, item: T, *, free_slots: int) -> None:
        """Queue ``item``; refuse with :class:`BusyError` when it would have to wait and
        ``max_pending`` requests already do."""
        # Those queued ahead take the free slots first; whoever is left over waits.
        if len(self._waiting) >= free_slots + self.max_pending:
            raise BusyError(
                f"the session is busy and {len(self._waiting) - free_slots} requests already wait "
                f"(max_pending={self.max_pending}); retry later or raise Options.max_pending"
            )
        self._waiting.append(item)

    def pop(self) -> T | None:
        """The longest-waiting item, or None."""
        return self._waiting.popleft() if self._waiting else None

    def remove(self, item: T) -> bool:
        """Take ``item`` out (it was cancelled before it got a slot)."""
        try:
            self._waiting.remove(item)
        except ValueError:
            return False
        return True

    def drain(self) -> list[T]:
        """Everything still waiting, emptied (the session is closing)."""
        items = list(self._waiting)
        self._waiting.clear()
        return items
