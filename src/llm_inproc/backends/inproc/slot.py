"""A slot: one sequence id in the shared context, the tokens its KV cells hold, and the
request it is serving. Choosing a slot for a new request is a pure function."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

from ...sampling import TokenProb
from .request import Request

__all__ = ["Slot", "choose_slot", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Slot:
    """Sequence ``seq`` of the context and the state of the request it serves, if any."""

    __slots__ = (
        "budget",
        "cached",
        "decoder",
        "evaluated",
        "first_at",
        "last_used",
        "n_gen",
        "next_token",
        "pending",
        "probs",
        "prompt_started",
        "req",
        "reused",
        "sampler",
        "seq",
    )

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.cached: list[int] = []
        """Tokens whose KV cells this sequence holds, in position order."""
        self.last_used = 0.0
        self.req: Request | None = None
        self.sampler: Any = None
        self.pending: list[int] = []
        """Prompt tokens still to evaluate."""
        self.next_token = -1
        """The sampled token to evaluate next step (-1 while the prompt is evaluated)."""
        self.n_gen = 0
        self.budget = 0
        self.reused = 0
        self.evaluated = 0
        self.prompt_started = 0.0
        self.first_at = 0.0
        self.decoder: codecs.IncrementalDecoder | None = None
        self.probs: list[TokenProb] | None = None

    @property
    def busy(self) -> bool:
        return self.req is not None


def choose_slot(free: Sequence[Slot], tokens: Sequence[int]) -> Slot:
    """The free slot whose cache shares the longest prefix with ``tokens``.

    With no useful prefix anywhere, the least recently used slot, so that the caches
    of recent conversations stay for their next turn.
    """
    best = max(free, key=lambda s: (common_prefix(s.cached, tokens), -s.last_used))
    if common_prefix(best.cached, tokens) == 0:
        best = min(free, key=lambda s: s.last_used)
    return best
