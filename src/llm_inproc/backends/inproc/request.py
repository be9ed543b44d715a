"""One request inside the engine, and the channel its output travels to the consumer by.

The engine thread pushes pieces and the final outcome; a thread consumer blocks on
a :class:`queue.SimpleQueue`, an asyncio consumer awaits an :class:`asyncio.Queue`
fed through ``call_soon_threadsafe``. No thread is started per request.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from typing import Any

from ..base import GenerationRequest, RawItem

__all__ = ["AsyncChannel", "Request", "ThreadChannel"]

Item = RawItem | BaseException


class Request:
    """A request's state shared by the engine and its consumer."""

    __slots__ = ("arrived", "cancelled", "push", "request", "sampler", "tokens")

    def __init__(
        self,
        request: GenerationRequest,
        tokens: list[int],
        push: Callable[[Item], None],
        sampler: Any,
    ) -> None:
        self.request = request
        self.tokens = tokens
        self.push = push
        self.sampler = sampler
        """The native sampler chain; the engine frees it when the request ends."""
        self.cancelled = False
        self.arrived = time.perf_counter()


class ThreadChannel:
    """The consumer side for a thread."""

    def __init__(self, on_cancel: Callable[[Request], None]) -> None:
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._on_cancel = on_cancel
        self.request: Request | None = None

    def put(self, item: Item) -> None:
        self._queue.put(item)

    def next_item(self, timeout: float | None) -> RawItem:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        if self.request is not None:
            self._on_cancel(self.request)


class AsyncChannel:
    """The consumer side for an asyncio task on the loop that submitted it."""

    def __init__(self, on_cancel: Callable[[Request], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._on_cancel = on_cancel
        self.request: Request | None = None

    def put(self, item: Item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            if self.request is not None:
                self.request.cancelled = True

    async def next_item(self, timeout: float | None) -> RawItem:
        if timeout is None:
            item = await self._queue.get()
        else:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError from None
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        if self.request is not None:
            self._on_cancel(self.request)
