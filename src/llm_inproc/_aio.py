"""Run a blocking iterator in a worker thread and consume it from asyncio.

The sync and async prompt paths share one implementation: the async one is
the sync iterator driven from a thread, with cancellation forwarded through
a :class:`threading.Event` so that cancelling the task stops generation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

__all__ = ["iterate_in_thread"]

T = TypeVar("T")

_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def iterate_in_thread(make: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
    """Yield what ``make(cancel)`` yields, produced in a thread; set ``cancel`` on exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody listens any more
            cancel.set()

    def work() -> None:
        try:
            it = make(cancel)
            try:
                for item in it:
                    put(item)
                    if cancel.is_set():
                        break
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            put(_DONE)
        except BaseException as e:  # handed over to the awaiting task
            put(_Failure(e))

    thread = threading.Thread(target=work, name="llm-inproc-worker", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        cancel.set()
