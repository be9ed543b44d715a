"""One request's raw output, from whatever produces it to one consumer: the single stream
type of every backend, for threads and asyncio alike.

The producer (the in-process engine thread, or the HTTP backend's private event loop)
posts text pieces and then one terminal item: the request's :class:`~.base.Outcome` or
the exception that ended it. The consumer takes them with :meth:`RawStream.next_item`
from a thread, or :meth:`RawStream.anext_item` from an asyncio task on any event loop:
the stream is bound to no loop, so a request may be prepared in a worker thread and
consumed on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable

from .base import Outcome, RawItem

__all__ = ["RawStream"]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _noop() -> None:
    pass


class RawStream:
    """Pieces, then an Outcome (or an error), for one consumer; the terminal item repeats.

    Once a terminal item is posted, later posts are ignored: the first reason a request
    ended wins. ``on_cancel`` runs when the consumer cancels; ``on_abandon`` when an
    asyncio consumer's loop is gone, so nobody can read what comes next.
    """

    def __init__(
        self, on_cancel: Callable[[], None] = _noop, on_abandon: Callable[[], None] = _noop
    ) -> None:
        self.on_cancel = on_cancel
        self.on_abandon = on_abandon
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: collections.deque[RawItem | BaseException] = collections.deque()
        self._final: RawItem | BaseException | None = None
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    @property
    def closed(self) -> bool:
        """Whether the terminal item was posted."""
        return self._closed

    # -- the producer --------------------------------------------------------------------------

    def put(self, item: RawItem | BaseException) -> None:
        """Post a piece, or the terminal Outcome or exception."""
        with self._lock:
            if self._closed:
                return
            self._items.append(item)
            if isinstance(item, (Outcome, BaseException)):
                self._closed = True
                self._final = item
            self._ready.notify()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, fut = waiter
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # the consumer's loop is closed: nobody listens any more
                self.on_abandon()

    # -- the consumer --------------------------------------------------------------------------

    def _take(self) -> RawItem:
        item = self._items.popleft() if self._items else self._final
        if isinstance(item, BaseException):
            raise item
        assert item is not None
        return item

    def _has(self) -> bool:
        return bool(self._items) or self._closed

    def next_item(self, timeout: float | None) -> RawItem:
        """The next piece or the outcome, for a thread; raises the request's error, or the
        builtin ``TimeoutError`` when nothing came within ``timeout`` seconds."""
        with self._lock:
            if not self._ready.wait_for(self._has, timeout):
                raise TimeoutError
            return self._take()

    async def anext_item(self, timeout: float | None) -> RawItem:
        """:meth:`next_item` for an asyncio task, on any event loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._lock:
                if self._has():
                    return self._take()
                fut: asyncio.Future[None] = loop.create_future()
                self._waiter = (loop, fut)
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:  # distinct from the builtin on Python 3.10
                with self._lock:
                    if self._waiter is not None and self._waiter[1] is fut:
                        self._waiter = None
                raise TimeoutError from None

    def cancel(self) -> None:
        """Stop the request; an Outcome (``cancelled``) still follows."""
        if not self._closed:
            self.on_cancel()
