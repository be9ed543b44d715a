"""Conversations moved out of the slots into host memory, and found again by prefix.

A slot's KV cells hold one conversation. When the slot is needed for another, or when
its idle cells would tax the requests running beside it (attention spans every used
cell of the shared cache), its sequence state is copied out
(``llama_state_seq_get_data``) and kept here. A new request whose tokens share the
longest prefix with a kept state gets it restored into a free slot and evaluates only
the rest, as llama-server's ``--cache-ram`` does. Bounded in bytes; least recently used
states go first. Pure Python: the engine does the copying.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field

from .slot import common_prefix

__all__ = ["CachedPrompt", "PromptCache"]

_MIN_REUSE = 16
"""Fewer shared tokens than this are not worth a restore (re-evaluating them is as fast)."""


@dataclass(eq=False)
class CachedPrompt:
    """One conversation's KV state: the tokens it holds and llama.cpp's bytes for them."""

    tokens: list[int]
    data: Sized
    """llama.cpp's bytes (a ctypes array, not copied again)."""
    used: int = field(default=0)
    """When it was last stored or looked at (a counter: higher is more recent)."""


class PromptCache:
    """States kept within ``limit`` bytes (None: no limit), least recently used out first."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._entries: list[CachedPrompt] = []
        self._clock = itertools.count(1)
        self.bytes = 0
        """Bytes of all kept states."""
        self.n_tokens = 0
        """Tokens of all kept states."""

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[CachedPrompt]:
        """The kept states, least recently used first."""
        return sorted(self._entries, key=lambda e: e.used)

    def fits(self, size: int) -> bool:
        """Whether a state of ``size`` bytes may be kept at all."""
        return self.limit is None or size <= self.limit

    def put(self, tokens: Sequence[int], data: Sized) -> None:
        """Keep a state. One that another kept state extends adds nothing and is dropped;
        kept states it extends (earlier turns of the same conversation) are replaced."""
        if not tokens or not self.fits(len(data)):
            return
        n = len(tokens)
        for e in self._entries:
            if len(e.tokens) >= n and common_prefix(e.tokens, tokens) == n:
                e.used = next(self._clock)
                return
        for e in [e for e in self._entries if common_prefix(e.tokens, tokens) == len(e.tokens)]:
            self._drop(e)
        self._entries.append(CachedPrompt(list(tokens), data, next(self._clock)))
        self.bytes += len(data)
        self.n_tokens += n
        while self.limit is not None and self.bytes > self.limit:
            self._drop(min(self._entries, key=lambda e: e.used))

    def best(self, tokens: Sequence[int], better_than: int = 0) -> tuple[CachedPrompt, int] | None:
        """The kept state sharing the longest prefix with ``tokens``, and that length, when
        it beats ``better_than`` (what the slot already holds) by a useful margin."""
        found, most = None, max(better_than, _MIN_REUSE - 1)
        for e in self._entries:
            n = common_prefix(e.tokens, tokens)
            if n > most:
                found, most = e, n
        if found is None:
            return None
        found.used = next(self._clock)
        return found, most

    def take(self, entry: CachedPrompt) -> None:
        """The state moved back into a slot: the slot holds it now."""
        if entry in self._entries:  # (unless a put since evicted it; the caller holds it)
            self._drop(entry)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = self.n_tokens = 0

    def _drop(self, entry: CachedPrompt) -> None:
        self._entries.remove(entry)
        self.bytes -= len(entry.data)
        self.n_tokens -= len(entry.tokens)
