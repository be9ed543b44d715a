"""The JSON of llama-server's embedding and rerank routes, for our server and our HTTP client
alike (so the two cannot drift): ``/embedding`` (native), ``/v1/embeddings`` (OpenAI's
shape, floats or base64) and ``/rerank`` (Jina's shape, or TEI's when the request says
``texts``). Shapes follow llama-server's ``format_embeddings_response_oaicompat`` and
``format_response_rerank``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BackendError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "decode_native",
    "decode_oai",
    "native_response",
    "oai_response",
    "rerank_response",
]


def native_response(rows: Sequence[npt.NDArray[np.float32]]) -> list[dict[str, Any]]:
    """``/embedding``: per input, ``embedding`` is a list of vectors (one per token for
    pooling ``none``, else the pooled one)."""
    return [
        {"index": i, "embedding": (r.reshape(1, -1) if r.ndim == 1 else r).tolist()}
        for i, r in enumerate(rows)
    ]


def oai_response(
    model: str,
    rows: Sequence[npt.NDArray[np.float32]],
    tokens: Sequence[int],
    *,
    use_base64: bool,
) -> dict[str, Any]:
    """``/v1/embeddings``: OpenAI's list of embedding objects with ``usage``."""
    import numpy as np

    data = []
    for i, r in enumerate(rows):
        if use_base64:
            raw = np.asarray(r, dtype="<f4").tobytes()
            item = {
                "embedding": base64.b64encode(raw).decode("ascii"),
                "index": i,
                "object": "embedding",
                "encoding_format": "base64",
            }
        else:
            item = {"embedding": r.tolist(), "index": i, "object": "embedding"}
        data.append(item)
    n = int(sum(tokens))
    return {
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": n, "total_tokens": n},
        "data": data,
    }


def rerank_response(
    body: Mapping[str, Any],
    model: str,
    scores: Sequence[float],
    tokens: Sequence[int],
    documents: Sequence[str],
    *,
    tei: bool,
    top_n: int,
) -> dict[str, Any] | list[dict[str, Any]]:
    """``/rerank``: results best first, ``top_n`` of them; TEI's form (a bare list with
    ``score``, and ``text`` when ``return_text``) when the request used ``texts``."""
    label = "score" if tei else "relevance_score"
    return_text = tei and body.get("return_text") is True
    results: list[dict[str, Any]] = []
    for i, score in enumerate(scores):
        elem: dict[str, Any] = {"index": i, label: float(score)}
        if return_text:
            elem["text"] = documents[i]
        results.append(elem)
    results.sort(key=lambda e: e[label], reverse=True)
    results = results[: max(0, top_n)]
    if tei:
        return results
    n = int(sum(tokens))
    return {
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": n, "total_tokens": n},
        "results": results,
    }


def _vector(value: Any, where: str) -> npt.NDArray[np.float32]:
    import numpy as np

    if isinstance(value, str):
        try:
            return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
        except ValueError:
            raise BackendError(f"{where} sent an embedding that is not base64 floats") from None
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32)
    raise BackendError(f"{where} sent an embedding that is neither a list nor base64")


def decode_oai(data: Any, n: int, where: str) -> list[npt.NDArray[np.float32]]:
    """The vectors of an OpenAI ``/v1/embeddings`` answer for ``n`` inputs, in input order."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != n:
        raise BackendError(f"{where} did not answer {n} embeddings in OpenAI's shape")
    out: list[Any] = [None] * n
    for pos, item in enumerate(items):
        index = item.get("index", pos) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < n:
            raise BackendError(f"{where} answered an embedding without a valid index")
        out[index] = _vector(item.get("embedding"), where)
    return out


def decode_native(data: Any, n: int, where: str) -> list[npt.NDArray[np.float32]]:
    """The (tokens x dimensions) matrices of a native ``/embedding`` answer."""
    import numpy as np

    if not isinstance(data, list) or len(data) != n:
        raise BackendError(f"{where} did not answer {n} embeddings in llama-server's shape")
    out: list[Any] = [None] * n
    for pos, item in enumerate(data):
        index = item.get("index", pos) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < n:
            raise BackendError(f"{where} answered an embedding without a valid index")
        out[index] = np.asarray(item.get("embedding"), dtype=np.float32)
    return out
