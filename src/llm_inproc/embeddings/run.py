"""``Session.embed`` and ``Session.rerank`` over any backend: checking the arguments,
streaming the texts through in chunks, normalising, and assembling the result.

One implementation for threads and asyncio (``aembed`` runs it in a worker thread and
stops it between chunks when cancelled). Texts are taken from the caller's iterable
:data:`CHUNK` at a time, so 100,000 texts never exist as tokens or token vectors all at
once: what grows is only the result (one float32 row per text).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..backends.base import EmbeddingBackend
from ..errors import InvalidInputError, SessionClosedError
from .batches import TextTooLongError
from .pooling import check_pooling, normalize
from .types import Progress, RankedDocument

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["CHUNK", "embed_texts", "rerank_documents"]

CHUNK = 256
"""Texts tokenized and handed to the backend at once (it packs them into batches)."""


def _texts(texts: object) -> tuple[Iterable[Any], int | None, bool]:
    """The texts as an iterable, how many (None: unknown), and whether one str was given."""
    if isinstance(texts, str):
        return [texts], 1, True
    if isinstance(texts, (bytes, bytearray)):
        raise InvalidInputError("texts must be str, not bytes; decode them first")
    if isinstance(texts, Sequence):
        return texts, len(texts), False
    if isinstance(texts, Iterable):
        return texts, None, False
    raise InvalidInputError(
        f"texts must be a str or an iterable of str, not {type(texts).__name__}"
    )


def _chunks(items: Iterable[Any], start: int = 0) -> Iterator[tuple[int, list[str]]]:
    it = iter(items)
    done = start
    while chunk := list(islice(it, CHUNK)):
        for i, text in enumerate(chunk):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {done + i} is a {type(text).__name__}, not a str")
        yield done, chunk
        done += len(chunk)


def embed_texts(
    backend: EmbeddingBackend,
    texts: object,
    *,
    pooling: object,
    normalize_rows: bool,
    truncate: bool,
    progress: Progress | None,
    cancelled: threading.Event | None = None,
) -> npt.NDArray[np.float32] | list[npt.NDArray[np.float32]]:
    """See :meth:`llm_inproc.Session.embed`."""
    import numpy as np

    chosen = check_pooling(pooling)
    items, total, single = _texts(texts)
    if not isinstance(truncate, bool) or not isinstance(normalize_rows, bool):
        raise InvalidInputError("normalize and truncate must be True or False")
    if progress is not None and not callable(progress):
        raise InvalidInputError("progress must be a function progress(done, total) or None")
    rows: npt.NDArray[np.float32] | None = None
    pieces: list[npt.NDArray[np.float32]] = []
    per_token: list[npt.NDArray[np.float32]] = []
    done = 0
    for start, chunk in _chunks(items):
        if cancelled is not None and cancelled.is_set():
            raise SessionClosedError("embedding was cancelled")
        try:
            got = backend.embed(chunk, chosen, truncate=truncate)
        except TextTooLongError as e:
            raise e.at(start) from None
        vectors = [normalize(r) if normalize_rows else r for r in got.rows]
        if got.pooling == "none":
            per_token += vectors
        elif total is not None:
            if rows is None:
                rows = np.empty((total, len(vectors[0])), dtype=np.float32)
            rows[start : start + len(vectors)] = vectors
        else:
            pieces.append(np.asarray(vectors, dtype=np.float32))
        done = start + len(chunk)
        if progress is not None:
            progress(done, total)
    if done == 0:
        raise InvalidInputError("no texts to embed; give at least one")
    if per_token:
        return per_token[0] if single else per_token
    result = rows if rows is not None else np.concatenate(pieces)
    return result[0] if single else result


def rerank_documents(
    backend: EmbeddingBackend, query: object, documents: object, top_n: object, truncate: bool
) -> list[RankedDocument]:
    """See :meth:`llm_inproc.Session.rerank`."""
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a str, not {type(query).__name__}")
    if isinstance(documents, str) or not isinstance(documents, Iterable):
        raise InvalidInputError("documents must be a list of str")
    docs = list(documents)
    if not docs:
        raise InvalidInputError("documents is empty; give at least one document to rank")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInputError(f"top_n must be a positive int or None, not {top_n!r}")
    scores: list[float] = []
    for _, chunk in _chunks(docs):
        scores += [float(r[0]) for r in backend.rerank(query, chunk, truncate=truncate).rows]
    ranked = sorted(
        (RankedDocument(i, s, d) for i, (s, d) in enumerate(zip(scores, docs, strict=True))),
        key=lambda r: r.score,
        reverse=True,
    )
    return ranked[: top_n if top_n is not None else len(ranked)]
