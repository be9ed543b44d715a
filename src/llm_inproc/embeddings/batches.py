"""Which tokens go into which ``llama_decode`` when many texts are embedded: pure planning.

Texts are packed in order, whole, into batches of at most ``n_batch`` tokens and
``n_seq`` sequences, so one call evaluates many short texts (one call per text wastes most
of what a CPU matrix kernel can do per weight read). A text longer than a batch is
evaluated alone, in consecutive pieces whose KV cells carry the earlier ones: only
possible where the session pools the token vectors itself, on a causal model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import ContextOverflowError, InvalidInputError

__all__ = ["Span", "TextTooLongError", "fit", "plan_batches"]


@dataclass(frozen=True)
class Span:
    """Tokens ``start:end`` of input ``item``, evaluated in one batch."""

    item: int
    start: int
    end: int

    @property
    def first(self) -> bool:
        return self.start == 0


class TextTooLongError(ContextOverflowError):
    """One input has more tokens than fit; carries both numbers for the server's answer."""

    def __init__(self, index: int, n_tokens: int, n_ctx: int, where: str) -> None:
        super().__init__(
            f"text {index} is {n_tokens} tokens but {where} holds {n_ctx}; pass "
            f"truncate=True to embed its first {n_ctx} tokens, or split the text"
        )
        self.index, self.n_tokens, self.n_ctx, self.where = index, n_tokens, n_ctx, where

    def at(self, offset: int) -> TextTooLongError:
        """The same error for a text ``offset`` places further in the caller's list."""
        return TextTooLongError(self.index + offset, self.n_tokens, self.n_ctx, self.where)


def fit(tokens: list[int], limit: int, *, truncate: bool, index: int, where: str) -> list[int]:
    """``tokens`` of input ``index`` if they fit in ``limit`` (cut to it with ``truncate``);
    ``where`` names the limit in the error."""
    if not tokens:
        raise InvalidInputError(
            f"text {index} has no tokens (an empty text of a model that adds no BOS); "
            "drop it or give it some text"
        )
    if len(tokens) <= limit:
        return tokens
    if truncate:
        return tokens[:limit]
    raise TextTooLongError(index, len(tokens), limit, where)


def plan_batches(lengths: Sequence[int], n_batch: int, n_seq: int) -> Iterator[list[Span]]:
    """Batches of spans covering every input of ``lengths`` once, in order (see the module
    docstring); a batch whose spans all start at 0 begins with an empty KV cache."""
    if n_batch < 1 or n_seq < 1:
        raise ValueError("n_batch and n_seq must be positive")
    batch: list[Span] = []
    used = 0
    for item, n in enumerate(lengths):
        if n > n_batch:
            if batch:
                yield batch
                batch, used = [], 0
            for start in range(0, n, n_batch):
                yield [Span(item, start, min(n, start + n_batch))]
            continue
        if batch and (used + n > n_batch or len(batch) >= n_seq):
            yield batch
            batch, used = [], 0
        batch.append(Span(item, 0, n))
        used += n
    if batch:
        yield batch
