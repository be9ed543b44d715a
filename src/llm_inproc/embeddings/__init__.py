"""Embeddings and reranking: pooling, batching, the HTTP shapes, and the loop behind
``Session.embed`` / ``Session.rerank`` (the backends do the evaluating)."""

from __future__ import annotations

from .pooling import Pooling
from .types import Progress, RankedDocument

__all__ = ["Pooling", "Progress", "RankedDocument"]
