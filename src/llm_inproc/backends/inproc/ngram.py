"""Draft tokens without a draft model: what followed the last n tokens the last time they
occurred in this sequence (prompt and reply so far), as llama-server's ``ngram-simple``.

A reply that copies from its prompt (a rewrite, a code edit, a quote) repeats long runs
of it; the engine then verifies a whole run in one batch instead of one token per step.
The index is updated as tokens are accepted, so a draft costs a few dictionary lookups.

Where llama-server looks up only the last ``n`` tokens, we back off to ``n/2`` and ``n/4``
(at least 3) when the longer n-gram never occurred. A rewrite that fixes a typo leaves the
fixed token in its last ``n`` tokens for ``n`` steps, none of which could draft; backing off,
drafting resumes three tokens after the fix. A shorter match is weaker evidence, so it
drafts at most twice its length.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NgramDrafter"]

_SHORTEST = 3
"""The shortest n-gram backed off to: a 1- or 2-gram recurs by chance too often."""


def _levels(n: int) -> tuple[int, ...]:
    """The n-gram sizes looked up, longest first: n, n/2, n/4, … down to ``_SHORTEST``."""
    out = [n]
    while out[-1] // 2 >= _SHORTEST:
        out.append(out[-1] // 2)
    return tuple(out)


class NgramDrafter:
    """Per n-gram size, the last position each n-gram of the sequence ended at; and the
    sequence."""

    __slots__ = ("_index", "max_draft", "n", "tokens")

    def __init__(self, n: int, max_draft: int) -> None:
        self.n = n
        self.max_draft = max_draft
        self.tokens: list[int] = []
        self._index: tuple[tuple[int, dict[tuple[int, ...], int]], ...] = tuple(
            (k, {}) for k in _levels(n)
        )

    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens to the sequence, indexing every n-gram that ends before the last
        token (the last n-gram is what a draft looks up, so it must point further back)."""
        seq, index = self.tokens, self._index
        for t in tokens:
            end = len(seq)
            for k, last in index:
                if end >= k:
                    last[tuple(seq[end - k :])] = end  # the k-gram before t; t followed it
            seq.append(t)

    def draft(self, limit: int | None = None) -> list[int]:
        """Up to ``max_draft`` (and ``limit``) tokens that followed the latest earlier
        occurrence of the sequence's last ``n`` tokens (or, failing that, of a shorter
        tail); empty when none occurred before."""
        seq = self.tokens
        most = self.max_draft if limit is None else min(limit, self.max_draft)
        if most <= 0:
            return []
        for k, last in self._index:
            if len(seq) < k:
                continue
            at = last.get(tuple(seq[-k:]))
            if at is not None:
                size = most if k == self.n else min(most, 2 * k)
                return seq[at : min(at + size, len(seq))]
        return []
