"""The values embedding and reranking return, besides numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Progress", "RankedDocument"]

Progress = Callable[[int, "int | None"], None]
"""Called as ``progress(done, total)`` after each chunk of texts (``total`` None when the
texts came from an iterator of unknown length)."""


@dataclass(frozen=True)
class RankedDocument:
    """One document as a reranker scored it against the query."""

    index: int
    """Its position in the documents given."""
    score: float
    """The reranker's relevance score (raw, as llama.cpp computes it: higher is more
    relevant; the scale depends on the model)."""
    document: str
    """The document itself."""
