"""Draft tokens without a draft model: what followed the last n tokens the last time they
occurred in this sequence (prompt and reply so far), as llama-server's ``ngram-simple``.

A reply that copies from its prompt (a rewrite, a code edit, a quote) repeats long runs
of it; the engine then verifies a whole run in one batch instead of one token per step.
The index is updated as tokens are accepted, so a draft costs a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NgramDrafter"]


class NgramDrafter:
    """The last position each ``n``-gram of the sequence ended at, and the sequence."""

    __slots__ = ("_last", "max_draft", "n", "tokens")

    def __init__(self, n: int, max_draft: int) -> None:
        self.n = n
        self.max_draft = max_draft
        self.tokens: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens to the sequence, indexing every n-gram that ends before the last
        token (the last n-gram is what a draft looks up, so it must point further back)."""
        seq, n, last = self.tokens, self.n, self._last
        for t in tokens:
            if len(seq) >= n:
                last[tuple(seq[-n:])] = len(seq)  # the n-gram before t; t followed it
            seq.append(t)

    def draft(self) -> list[int]:
        """Up to ``max_draft`` tokens that followed the latest earlier occurrence of the
        sequence's last ``n`` tokens; empty when they never occurred before."""
        seq, n = self.tokens, self.n
        if len(seq) < n:
            return []
        at = self._last.get(tuple(seq[-n:]))
        if at is None:
            return []
        return seq[at : min(at + self.max_draft, len(seq))]
