"""One request inside the engine: what it asks, its tokens, its sampler, and where its
output goes (``push``: the request's :class:`~..stream.RawStream`, read by a thread or an
asyncio task). No thread is started per request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from ..base import GenerationRequest, RawItem

__all__ = ["Request"]

Item = RawItem | BaseException

_TASKS = itertools.count()


class Request:
    """A request's state shared by the engine and its consumer."""

    __slots__ = ("arrived", "cancelled", "push", "request", "sampler", "task", "tokens")

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
        self.task = next(_TASKS)
        """This request's number, counted from 0 per process (llama-server's ``id_task``)."""

    def abandon(self) -> None:
        """Nobody can read this request's output any more: stop at the next step."""
        self.cancelled = True
