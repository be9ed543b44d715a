"""Embedding and reranking through a server: the request bodies, and the answers read back
into :class:`~llm_inproc.backends.base.Vectors` (shapes from :mod:`llm_inproc.embeddings.wire`).

Pooled vectors come from ``/v1/embeddings`` in base64 (a quarter of the bytes of JSON
floats, and no float parsing), asked unnormalised (``embd_normalize: -1``) so that the
Session normalises in one place for every backend; pooling ``none`` comes from
``/embedding``, the only route that returns token vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...embeddings.wire import decode_native, decode_oai
from ...errors import InvalidInputError
from ..base import Vectors

__all__ = ["remote_embed", "remote_rerank"]

Post = Callable[[str, Any], Any]
"""POST a JSON body to a path; the decoded JSON answer (errors raised as ours)."""


def remote_embed(
    post: Post,
    where: str,
    inputs: Sequence[str | Sequence[int]],
    pooling: str | None,
    count: Callable[[str], int] | None = None,
) -> Vectors:
    """``count``: a text's tokens as the server reads it (its ``/tokenize``), to tell token
    vectors from a pooled row where ``pooling="none"`` is asked."""
    if pooling not in (None, "none"):
        raise InvalidInputError(
            f"pooling={pooling!r}: a server pools as it was started (llama-server "
            "--pooling); leave pooling out, or restart the server with --pooling "
            f"{pooling}"
        )
    items = [x if isinstance(x, str) else list(x) for x in inputs]
    if pooling == "none":
        data = post("/embedding", {"content": items, "embd_normalize": -1})
        rows = decode_native(data, len(items), where + "/embedding")
        _check_token_rows(rows, items, count, where)
        return Vectors(rows, [len(r) for r in rows], "none")
    body = {"input": items, "encoding_format": "base64", "embd_normalize": -1}
    data = post("/v1/embeddings", body)
    rows = decode_oai(data, len(items), where + "/v1/embeddings")
    usage = data.get("usage") if isinstance(data, dict) else None
    total = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
    # The server counts tokens for the whole request only; spread it for the record.
    share = [int(total) // len(items)] * len(items)
    return Vectors(rows, share, "server")


def _check_token_rows(
    rows: Sequence[Any],
    items: Sequence[str | list[int]],
    count: Callable[[str], int] | None,
    where: str,
) -> None:
    """A server started with a pooling answers ``/embedding`` with one pooled row per text,
    shaped like a one-token text's token vectors: a single row for a longer text gives it
    away."""
    for row, item in zip(rows, items, strict=True):
        if len(row) != 1:
            continue
        n = len(item) if isinstance(item, list) else count(item) if count is not None else 1
        if n > 1:
            raise InvalidInputError(
                f"pooling='none' needs token vectors, but the server at {where} pools them "
                "(it was started with a pooling); restart it with --pooling none, or leave "
                "pooling out for its pooled vectors"
            )


def remote_rerank(post: Post, where: str, query: str, documents: Sequence[str]) -> Vectors:
    import numpy as np

    body = {"query": query, "documents": list(documents), "top_n": len(documents)}
    data = post("/rerank", body)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        from ...errors import BackendError

        raise BackendError(f"{where}/rerank did not answer results in llama-server's shape")
    scores = [0.0] * len(documents)
    for r in results:
        if isinstance(r, dict) and isinstance(r.get("index"), int):
            score = r.get("relevance_score", r.get("score"))
            scores[r["index"]] = float(score) if isinstance(score, (int, float)) else 0.0
    rows = [np.asarray([s], dtype=np.float32) for s in scores]
    return Vectors(rows, [0] * len(documents), "rank")
