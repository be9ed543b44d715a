"""The I/O under the HTTP backend: one private event loop, and mailboxes between it and callers.

Every request of an HTTP backend runs as one task on a private asyncio loop in a daemon
thread, over one ``httpx2.AsyncClient`` (one connection pool, closed in one place). A
task posts what it reads to a :class:`Mailbox` that a thread (``next_item``) or an
asyncio task on any loop (``anext_item``) takes from: the reading loop is written once,
for threads and asyncio alike. Cancelling a task closes its HTTP response, which is how
the server learns to stop generating.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import SessionClosedError

__all__ = ["EventLoopThread", "Mailbox"]

T = TypeVar("T")


class EventLoopThread:
    """An asyncio loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:
            coro.close()
            raise SessionClosedError("the session is closed; create a new Session") from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def soon(self, callback: Any, *args: Any) -> bool:
        """Schedule ``callback(*args)`` on the loop; False once the loop is closed."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    def stop(self) -> None:
        if self.soon(self.loop.stop):
            self._thread.join(10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Mailbox:
    """Items from the loop's task to one consumer; the last (terminal) item repeats.

    A terminal item is an exception to raise or the request's outcome; once one is
    posted, later posts are ignored (the first reason a request ended wins).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: collections.deque[object] = collections.deque()
        self._final: object = None
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: object, *, terminal: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._items.append(item)
            if terminal:
                self._closed = True
                self._final = item
            self._ready.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, fut = waiter
            with contextlib.suppress(RuntimeError):  # the consumer's loop is gone
                loop.call_soon_threadsafe(_wake, fut)

    def _take(self) -> object:
        if self._items:
            return self._items.popleft()
        return self._final

    def _has(self) -> bool:
        return bool(self._items) or self._closed

    def get(self, timeout: float | None) -> object:
        """The next item; builtin ``TimeoutError`` when none came within ``timeout`` s."""
        with self._lock:
            if not self._ready.wait_for(self._has, timeout):
                raise TimeoutError
            return self._take()

    async def aget(self, timeout: float | None) -> object:
        """:meth:`get` for an asyncio task on any loop."""
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
                raise TimeoutError from None
